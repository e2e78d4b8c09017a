//! One test suite, run against every backend: the contract of [`Storage`].

use bytes::Bytes;
use sotto_proto::{Blob, Bucket, MailboxId, SlotId};

use super::{
    Account, FetchRange, FjallStorage, IssuerState, MemoryStorage, Registration, Seq, SledStorage,
    SlotRecord, Storage,
};

fn mailbox(n: u8) -> MailboxId {
    MailboxId::from_bytes([n; 32])
}

fn blob(bucket: Bucket, fill: u8) -> Blob {
    Blob::new(Bytes::from(vec![fill; bucket.size()])).unwrap()
}

fn all(after: u64) -> FetchRange {
    FetchRange {
        after,
        upto: u64::MAX,
        limit: usize::MAX,
        max_bytes: usize::MAX,
    }
}

fn appends_come_back_in_fifo_order(store: &dyn Storage) {
    let mut seqs = Vec::new();
    for i in 0..50u8 {
        seqs.push(
            store
                .append(&mailbox(1), &blob(Bucket::K1, i), 0, 1_000)
                .unwrap(),
        );
        // Interleave another mailbox: its blobs must never show up in ours.
        store
            .append(&mailbox(2), &blob(Bucket::K4, i), 0, 1_000)
            .unwrap();
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs strictly increase"
    );
    let page = store.fetch(&mailbox(1), all(0)).unwrap();
    assert!(!page.more);
    let fills: Vec<u8> = page.blobs.iter().map(|b| b.blob.as_bytes()[0]).collect();
    assert_eq!(fills, (0..50).collect::<Vec<u8>>());
    assert_eq!(page.blobs.iter().map(|b| b.seq).collect::<Vec<_>>(), seqs);
}

fn fetch_respects_cursor_watermark_limit_and_bytes(store: &dyn Storage) {
    let seqs: Vec<u64> = (0..10u8)
        .map(|i| {
            store
                .append(&mailbox(1), &blob(Bucket::K1, i), 0, 1_000)
                .unwrap()
        })
        .collect();
    let after_third = store.fetch(&mailbox(1), all(seqs[2])).unwrap();
    assert_eq!(after_third.blobs.len(), 7);
    assert_eq!(after_third.blobs[0].seq, seqs[3]);

    let below_watermark = store
        .fetch(
            &mailbox(1),
            FetchRange {
                upto: seqs[4],
                ..all(0)
            },
        )
        .unwrap();
    assert_eq!(below_watermark.blobs.len(), 5);
    assert!(
        !below_watermark.more,
        "nothing durable remains past the watermark"
    );

    let limited = store
        .fetch(&mailbox(1), FetchRange { limit: 3, ..all(0) })
        .unwrap();
    assert_eq!(limited.blobs.len(), 3);
    assert!(limited.more);

    let by_bytes = store
        .fetch(
            &mailbox(1),
            FetchRange {
                max_bytes: 2500,
                ..all(0)
            },
        )
        .unwrap();
    assert_eq!(by_bytes.blobs.len(), 2);
    assert!(by_bytes.more);

    let tiny = store
        .fetch(
            &mailbox(1),
            FetchRange {
                max_bytes: 1,
                ..all(0)
            },
        )
        .unwrap();
    assert_eq!(tiny.blobs.len(), 1, "a page always holds at least one blob");
}

fn delete_only_touches_the_named_mailbox(store: &dyn Storage) {
    let mine = store
        .append(&mailbox(1), &blob(Bucket::K1, 1), 0, 1_000)
        .unwrap();
    store
        .append(&mailbox(2), &blob(Bucket::K1, 2), 0, 1_000)
        .unwrap();
    let theirs = store
        .append(&mailbox(2), &blob(Bucket::K1, 3), 0, 1_000)
        .unwrap();
    // IDs are per mailbox: naming another mailbox's ID that mine does not
    // hold deletes nothing, in either.
    assert_ne!(theirs, mine);
    assert_eq!(store.delete(&mailbox(1), &[theirs]).unwrap(), 0);
    assert_eq!(store.fetch(&mailbox(2), all(0)).unwrap().blobs.len(), 2);
    assert_eq!(
        store.delete(&mailbox(1), &[mine, mine, 999_999]).unwrap(),
        1
    );
    assert!(store.fetch(&mailbox(1), all(0)).unwrap().blobs.is_empty());
    assert_eq!(store.mailbox_usage(&mailbox(1)).count, 0);
}

fn accounting_tracks_appends_and_deletes(store: &dyn Storage) {
    let a = store
        .append(&mailbox(1), &blob(Bucket::K1, 0), 0, 1_000)
        .unwrap();
    store
        .append(&mailbox(1), &blob(Bucket::K16, 0), 0, 1_000)
        .unwrap();
    store
        .append(&mailbox(2), &blob(Bucket::K4, 0), 0, 1_000)
        .unwrap();
    let usage = store.mailbox_usage(&mailbox(1));
    assert_eq!((usage.count, usage.bytes), (2, 1024 + 16384));
    assert_eq!(store.total_bytes(), 1024 + 16384 + 4096);
    assert_eq!(store.mailbox_count(), 2);
    store.delete(&mailbox(1), &[a]).unwrap();
    assert_eq!(store.mailbox_usage(&mailbox(1)).bytes, 16384);
    assert_eq!(store.total_bytes(), 16384 + 4096);
}

fn purge_removes_exactly_the_expired(store: &dyn Storage) {
    store
        .append(&mailbox(1), &blob(Bucket::K1, 1), 0, 100)
        .unwrap();
    store
        .append(&mailbox(1), &blob(Bucket::K1, 2), 0, 200)
        .unwrap();
    let acked = store
        .append(&mailbox(2), &blob(Bucket::K1, 3), 0, 150)
        .unwrap();
    store.delete(&mailbox(2), &[acked]).unwrap();
    assert_eq!(store.purge_expired(99, 100).unwrap(), 0);
    assert_eq!(store.purge_expired(150, 100).unwrap(), 1);
    let left = store.fetch(&mailbox(1), all(0)).unwrap();
    assert_eq!(left.blobs.len(), 1);
    assert_eq!(left.blobs[0].blob.as_bytes()[0], 2);
    assert_eq!(store.purge_expired(10_000, 100).unwrap(), 1);
    assert_eq!(store.total_bytes(), 0);
}

fn purge_honours_its_limit(store: &dyn Storage) {
    for i in 0..10 {
        store
            .append(&mailbox(1), &blob(Bucket::K1, i), 0, 5)
            .unwrap();
    }
    assert_eq!(store.purge_expired(5, 4).unwrap(), 4);
    assert_eq!(store.mailbox_usage(&mailbox(1)).count, 6);
}

fn purge_limit_counts_blobs_not_acked_entries(store: &dyn Storage) {
    let acked: Vec<Seq> = (0..5)
        .map(|i| {
            store
                .append(&mailbox(1), &blob(Bucket::K1, i), 0, 1)
                .unwrap()
        })
        .collect();
    assert_eq!(store.delete(&mailbox(1), &acked).unwrap(), 5);
    for i in 0..5 {
        store
            .append(&mailbox(1), &blob(Bucket::K1, i), 0, 2)
            .unwrap();
    }
    assert_eq!(store.purge_expired(10, 3).unwrap(), 3);
    assert_eq!(store.mailbox_usage(&mailbox(1)).count, 2);
    assert_eq!(store.purge_expired(10, 100).unwrap(), 2);
    assert_eq!(store.purge_expired(10, 100).unwrap(), 0);
    assert_eq!(store.total_bytes(), 0);
}

fn slots_store_and_replace(store: &dyn Storage) {
    let id = SlotId::from_bytes([7; 32]);
    assert_eq!(store.slot_get(&id).unwrap(), None);
    let first = SlotRecord {
        version: 1,
        owner: [1; 32],
        value: Bytes::from(vec![1; 1024]),
    };
    store.slot_put(&id, &first).unwrap();
    assert_eq!(store.slot_get(&id).unwrap(), Some(first));
    let second = SlotRecord {
        version: 2,
        owner: [1; 32],
        value: Bytes::from(vec![2; 4096]),
    };
    store.slot_put(&id, &second).unwrap();
    assert_eq!(store.slot_get(&id).unwrap(), Some(second));
    assert_eq!(store.total_bytes(), 4096);
}

fn issuer_state_round_trips(store: &dyn Storage) {
    assert!(store.issuer_state().unwrap().is_none());
    let mut state = IssuerState {
        seed: [7; 32],
        generation: 0,
        admin_key: None,
    };
    store.set_issuer_state(&state).unwrap();
    assert!(store.issuer_state().unwrap() == Some(state.clone()));
    state.generation = 3;
    state.admin_key = Some([9; 32]);
    store.set_issuer_state(&state).unwrap();
    assert!(store.issuer_state().unwrap() == Some(state));
}

fn registration_creates_one_account(store: &dyn Storage) {
    store
        .put_registrations(&[([1; 32], 600), ([2; 32], 1200)])
        .unwrap();
    assert_eq!(
        store.registration(&[1; 32]).unwrap(),
        Some(Registration {
            expires_at: 600,
            account: None
        })
    );
    assert_eq!(store.registration(&[3; 32]).unwrap(), None);
    store.register_account(&[1; 32], &[10; 32], None).unwrap();
    assert_eq!(
        store.registration(&[1; 32]).unwrap().unwrap().account,
        Some([10; 32])
    );
    assert_eq!(
        store.account(&[10; 32]).unwrap(),
        Some(Account {
            registration: [1; 32],
            revoked: false,
            device_registrations: 0,
            revocation: None,
        })
    );
    assert!(store.register_account(&[3; 32], &[11; 32], None).is_err());
    assert_eq!(store.account(&[11; 32]).unwrap(), None);
    store.revoke_account(&[10; 32]).unwrap();
    assert!(store.account(&[10; 32]).unwrap().unwrap().revoked);
    // Revoking an unknown account changes nothing.
    store.revoke_account(&[12; 32]).unwrap();
    assert_eq!(store.account(&[12; 32]).unwrap(), None);
}

fn expired_unused_registrations_are_dropped_and_used_ones_kept(store: &dyn Storage) {
    store
        .put_registrations(&[([1; 32], 600), ([2; 32], 600), ([3; 32], 1200)])
        .unwrap();
    store.register_account(&[1; 32], &[10; 32], None).unwrap();
    assert_eq!(store.drop_unused_registrations(599).unwrap(), 0);
    assert_eq!(store.drop_unused_registrations(600).unwrap(), 1);
    assert_eq!(
        store.registration(&[2; 32]).unwrap(),
        None,
        "expired unused"
    );
    assert!(
        store.registration(&[1; 32]).unwrap().is_some(),
        "used: names the account"
    );
    assert!(
        store.registration(&[3; 32]).unwrap().is_some(),
        "not yet expired"
    );
    assert_eq!(store.drop_unused_registrations(600).unwrap(), 0);
}

fn revocation_hashes_find_their_account_and_counts_persist(store: &dyn Storage) {
    store
        .put_registrations(&[([1; 32], 600), ([2; 32], 600)])
        .unwrap();
    store
        .register_account(&[1; 32], &[10; 32], Some(&[50; 32]))
        .unwrap();
    store.register_account(&[2; 32], &[11; 32], None).unwrap();
    assert_eq!(
        store.account_by_revocation(&[50; 32]).unwrap(),
        Some([10; 32])
    );
    assert_eq!(store.account_by_revocation(&[51; 32]).unwrap(), None);
    let account = store.account(&[10; 32]).unwrap().unwrap();
    assert_eq!(account.revocation, Some([50; 32]));
    assert_eq!(account.device_registrations, 0);

    store.set_device_registrations(&[10; 32], 3).unwrap();
    store.revoke_account(&[10; 32]).unwrap();
    let account = store.account(&[10; 32]).unwrap().unwrap();
    assert_eq!(
        account,
        Account {
            registration: [1; 32],
            revoked: true,
            device_registrations: 3,
            revocation: Some([50; 32]),
        },
        "revoking keeps the count and the hash"
    );
    assert_eq!(
        store
            .account(&[11; 32])
            .unwrap()
            .unwrap()
            .device_registrations,
        0,
        "counts are per account"
    );
    // Setting the count of an unknown account creates nothing.
    store.set_device_registrations(&[12; 32], 1).unwrap();
    assert_eq!(store.account(&[12; 32]).unwrap(), None);
}

fn issuance_counts_are_per_account_and_period(store: &dyn Storage) {
    assert_eq!(store.issued(&[1; 32], 5).unwrap(), 0);
    store.set_issued(&[1; 32], 5, 100).unwrap();
    store.set_issued(&[1; 32], 6, 7).unwrap();
    store.set_issued(&[2; 32], 5, 3).unwrap();
    assert_eq!(store.issued(&[1; 32], 5).unwrap(), 100);
    assert_eq!(store.issued(&[1; 32], 6).unwrap(), 7);
    assert_eq!(store.issued(&[2; 32], 5).unwrap(), 3);
    assert_eq!(store.drop_issued_before(6).unwrap(), 2);
    assert_eq!(store.issued(&[1; 32], 5).unwrap(), 0);
    assert_eq!(store.issued(&[1; 32], 6).unwrap(), 7);
}

fn a_token_is_spent_once_and_dropped_with_its_key(store: &dyn Storage) {
    assert!(store.spend_token(10, &[1; 32]).unwrap());
    assert!(!store.spend_token(10, &[1; 32]).unwrap(), "spent twice");
    assert!(
        store.spend_token(11, &[1; 32]).unwrap(),
        "another key's set"
    );
    assert!(store.spend_token(12, &[2; 32]).unwrap());
    assert_eq!(store.drop_spent_before(12).unwrap(), 2);
    assert!(!store.spend_token(12, &[2; 32]).unwrap(), "kept");
    assert!(
        store.spend_token(10, &[1; 32]).unwrap(),
        "dropped with key 10"
    );
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[test] fn $case() { super::$case(&super::MemoryStorage::new()); })*
        }
        mod sled {
            $(#[test] fn $case() {
                let dir = tempfile::tempdir().unwrap();
                super::$case(&super::SledStorage::open(dir.path()).unwrap());
            })*
        }
        mod fjall {
            $(#[test] fn $case() {
                let dir = tempfile::tempdir().unwrap();
                super::$case(&super::FjallStorage::open(dir.path()).unwrap());
            })*
        }
    };
}

conformance!(
    appends_come_back_in_fifo_order,
    fetch_respects_cursor_watermark_limit_and_bytes,
    delete_only_touches_the_named_mailbox,
    accounting_tracks_appends_and_deletes,
    purge_removes_exactly_the_expired,
    purge_honours_its_limit,
    purge_limit_counts_blobs_not_acked_entries,
    slots_store_and_replace,
    issuer_state_round_trips,
    registration_creates_one_account,
    revocation_hashes_find_their_account_and_counts_persist,
    expired_unused_registrations_are_dropped_and_used_ones_kept,
    issuance_counts_are_per_account_and_period,
    a_token_is_spent_once_and_dropped_with_its_key,
);

/// Issue 18 item 9: an ack removes the expiry index entry (expiry ‖
/// mailbox ‖ seq) of what it deletes at once, not when the TTL ends. The
/// entry of a chunk an ack leaves blobs in stays: they still expire.
#[test]
fn sled_acks_remove_the_expiry_entries_of_what_they_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(dir.path()).unwrap();
    // With three expiries, mailbox 1's three blobs are three chunks with
    // an entry each; mailbox 2's two blobs share one.
    let mut mine = Vec::new();
    for i in 0..3u8 {
        mine.push(
            store
                .append(
                    &mailbox(1),
                    &blob(Bucket::K1, i),
                    0,
                    100 + 60 * u64::from(i),
                )
                .unwrap(),
        );
        store.flush().unwrap();
    }
    let theirs: Vec<Seq> = (0..2)
        .map(|i| {
            store
                .append(&mailbox(2), &blob(Bucket::K1, i), 0, 100)
                .unwrap()
        })
        .collect();
    store.flush().unwrap();
    assert_eq!(store.expiry_entries(), 4);

    assert_eq!(store.delete(&mailbox(1), &mine[..2]).unwrap(), 2);
    // Half of mailbox 2's chunk: its entry must stay for the other half.
    assert_eq!(store.delete(&mailbox(2), &theirs[..1]).unwrap(), 1);
    let indexed = |store: &SledStorage| -> Vec<(MailboxId, Seq)> {
        store
            .expiry_keys()
            .iter()
            .map(|key| {
                assert_eq!(key.len(), 48, "expires_at(8) ‖ mailbox(32) ‖ seq(8)");
                let mailbox = MailboxId::from_slice(&key[8..40]).unwrap();
                (mailbox, u64::from_be_bytes(key[40..].try_into().unwrap()))
            })
            .collect()
    };
    let mut got = indexed(&store);
    got.sort();
    let mut want = vec![(mailbox(1), mine[2]), (mailbox(2), theirs[0])];
    want.sort();
    assert_eq!(got, want, "the acked chunks' entries are gone");

    assert_eq!(store.delete(&mailbox(2), &theirs[1..]).unwrap(), 1);
    assert_eq!(indexed(&store), vec![(mailbox(1), mine[2])]);
    // Gone from disk too, not only from the tree in memory.
    drop(store);
    let store = SledStorage::open(dir.path()).unwrap();
    assert_eq!(indexed(&store), vec![(mailbox(1), mine[2])]);
    assert_eq!(store.purge_expired(220, 100).unwrap(), 1);
    assert_eq!(store.expiry_entries(), 0);
}

/// Per tree (by name): each key with its value's length, sorted.
type RawScan = Vec<(Vec<u8>, Vec<(Vec<u8>, usize)>)>;

/// What a raw scan of every sled tree in `dir` shows.
fn raw_scan(dir: &std::path::Path) -> RawScan {
    let db = ::sled::open(dir).unwrap();
    let mut trees = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        let mut entries: Vec<(Vec<u8>, usize)> = tree
            .iter()
            .map(|entry| {
                let (key, value) = entry.unwrap();
                (key.to_vec(), value.len())
            })
            .collect();
        entries.sort();
        trees.push((name.to_vec(), entries));
    }
    trees.sort();
    trees
}

/// Issue 18 item 10: a seized database must show neither the order of
/// puts across mailboxes (a relay-wide counter did) nor any time finer than
/// the minute (blobs of one flush shared a chunk). The same puts per
/// mailbox, made once interleaved across mailboxes at different seconds
/// with flushes in between and once mailbox after mailbox at another
/// second with one flush, leave byte-for-byte the same keys and value
/// lengths in every tree.
#[test]
fn sled_stored_keys_show_no_order_across_mailboxes_and_no_time_below_the_minute() {
    const MINUTE: u64 = 1_800_000_000; // a minute boundary
    const EXPIRES: u64 = MINUTE + 3_660; // a one-hour TTL from within it
    let counts = [(1u8, 3usize), (2, 2), (3, 4)];
    let interleaved = tempfile::tempdir().unwrap();
    {
        let store = SledStorage::open(interleaved.path()).unwrap();
        let mut second = 1;
        for round in 0..4 {
            for (m, count) in counts {
                if round < count {
                    store
                        .append(
                            &mailbox(m),
                            &blob(Bucket::K1, round as u8),
                            MINUTE + second,
                            EXPIRES,
                        )
                        .unwrap();
                    second += 5;
                    if (round + m as usize).is_multiple_of(2) {
                        store.flush().unwrap();
                    }
                }
            }
        }
        store.flush().unwrap();
    }
    let apart = tempfile::tempdir().unwrap();
    {
        let store = SledStorage::open(apart.path()).unwrap();
        for (m, count) in counts.into_iter().rev() {
            for round in 0..count {
                store
                    .append(
                        &mailbox(m),
                        &blob(Bucket::K1, round as u8),
                        MINUTE + 59,
                        EXPIRES,
                    )
                    .unwrap();
            }
        }
        store.flush().unwrap();
    }
    let seized = raw_scan(interleaved.path());
    assert_eq!(seized, raw_scan(apart.path()));
    // And the mailboxes' first IDs coincide: no relay-wide counter.
    let blobs = &seized.iter().find(|(name, _)| name == b"blobs").unwrap().1;
    let firsts: std::collections::BTreeSet<&[u8]> =
        blobs.iter().map(|(key, _)| &key[32..]).collect();
    assert_eq!(firsts.len(), 1, "one chunk per mailbox, all keyed alike");
}

/// A 1 KiB blob of random bytes, and a 64-byte run of it to look for.
fn marked_blob() -> (Blob, Vec<u8>) {
    let mut bytes = vec![0u8; Bucket::K1.size()];
    getrandom::fill(&mut bytes).unwrap();
    let run = bytes[100..164].to_vec();
    (Blob::new(Bytes::from(bytes)).unwrap(), run)
}

/// Every file under `dir`, recursively, with its bytes.
fn every_file(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(every_file(&path));
        } else {
            files.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    files
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const DAY: u64 = 86_400;

/// Issue 18 item 12: sled's log keeps the bytes of deleted records, so
/// blobs are sealed at rest under a day key that is destroyed once nothing
/// sealed under it is stored. After acks and a key rotation, a raw scan of
/// the whole data directory finds no 64-byte run of an acked blob, and the
/// retired key's bytes are nowhere, the key file included; a blob of the
/// new day stays readable.
#[test]
fn sled_acked_blobs_leave_nothing_readable_once_their_day_key_is_destroyed() {
    let t0 = 20_000 * DAY + 600;
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(dir.path()).unwrap();
    let mut acked = Vec::new();
    let mut runs = Vec::new();
    for i in 0..5 {
        let (blob, run) = marked_blob();
        acked.push(store.append(&mailbox(1), &blob, t0 + i, t0 + DAY).unwrap());
        runs.push(run);
        store.flush().unwrap();
    }
    let first_day = store.at_rest_key_bytes();
    assert_eq!(first_day.len(), 1, "one key for the day");
    assert_eq!(store.delete(&mailbox(1), &acked).unwrap(), 5);
    store.flush().unwrap();

    // The next day: a new key seals the new blob; the purge pass destroys
    // the old one, which seals nothing any more.
    let (kept, kept_run) = marked_blob();
    let kept_seq = store
        .append(&mailbox(2), &kept, t0 + DAY, t0 + 8 * DAY)
        .unwrap();
    store.flush().unwrap();
    assert_eq!(store.purge_expired(t0 + DAY, 100).unwrap(), 0);
    let keys = store.at_rest_key_bytes();
    assert_eq!(keys.len(), 1);
    assert_ne!(keys[0], first_day[0], "the first day's key is gone");
    drop(store);

    let files = every_file(dir.path());
    assert!(files.iter().any(|(path, _)| path.ends_with("at-rest-keys")));
    for (path, bytes) in &files {
        for run in &runs {
            assert!(!holds(bytes, run), "an acked blob's bytes in {path:?}");
        }
        assert!(!holds(bytes, &kept_run), "a live blob unsealed in {path:?}");
        assert!(
            !holds(bytes, &first_day[0].1),
            "the retired key in {path:?}"
        );
    }
    let store = SledStorage::open(dir.path()).unwrap();
    let page = store.fetch(&mailbox(2), all(0)).unwrap();
    assert_eq!(page.blobs.len(), 1);
    assert_eq!(page.blobs[0].seq, kept_seq);
    assert_eq!(page.blobs[0].blob, kept);
}

/// Blobs sealed before a restart open after it; their key outlives days
/// while they are stored, and goes at the first purge pass after the last
/// of them expired.
#[test]
fn sled_sealed_blobs_outlive_a_restart_and_keep_their_key_while_stored() {
    let t0 = 20_000 * DAY + 600;
    let dir = tempfile::tempdir().unwrap();
    let blobs: Vec<Blob> = (0..3).map(|_| marked_blob().0).collect();
    let seqs: Vec<Seq> = {
        let store = SledStorage::open(dir.path()).unwrap();
        let seqs = blobs
            .iter()
            .map(|blob| store.append(&mailbox(1), blob, t0, t0 + 7 * DAY).unwrap())
            .collect();
        store.flush().unwrap();
        seqs
    };
    let store = SledStorage::open(dir.path()).unwrap();
    let got: Vec<(Seq, Blob)> = store
        .fetch(&mailbox(1), all(0))
        .unwrap()
        .blobs
        .into_iter()
        .map(|b| (b.seq, b.blob))
        .collect();
    assert_eq!(
        got,
        seqs.iter().copied().zip(blobs.clone()).collect::<Vec<_>>()
    );
    // Days later, still stored: the key stays. An ack reseals the rest.
    assert_eq!(store.purge_expired(t0 + 2 * DAY, 100).unwrap(), 0);
    assert_eq!(store.at_rest_key_bytes().len(), 1);
    assert_eq!(store.delete(&mailbox(1), &seqs[..1]).unwrap(), 1);
    store.flush().unwrap();
    drop(store);
    let store = SledStorage::open(dir.path()).unwrap();
    let left: Vec<Blob> = store
        .fetch(&mailbox(1), all(0))
        .unwrap()
        .blobs
        .into_iter()
        .map(|b| b.blob)
        .collect();
    assert_eq!(left, blobs[1..].to_vec());
    assert_eq!(store.purge_expired(t0 + 7 * DAY, 100).unwrap(), 2);
    assert!(
        store.at_rest_key_bytes().is_empty(),
        "nothing sealed under it"
    );
}

#[test]
fn sled_chunks_share_an_entry_and_shrink_blob_by_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(dir.path()).unwrap();
    // Appended together: mailbox 1 gets one chunk of 1..=4 and, with
    // another expiry, a second one; mailbox 2 its own.
    let seqs: Vec<Seq> = (0..4)
        .map(|i| {
            store
                .append(&mailbox(1), &blob(Bucket::K1, i), 0, 100)
                .unwrap()
        })
        .collect();
    store
        .append(&mailbox(2), &blob(Bucket::K4, 9), 0, 100)
        .unwrap();
    let later = store
        .append(&mailbox(1), &blob(Bucket::K16, 5), 0, 200)
        .unwrap();
    store.flush().unwrap();
    assert_eq!(store.expiry_entries(), 3);

    // A fetch may start in the middle of a chunk and stop in the next.
    let page = store.fetch(&mailbox(1), all(seqs[1])).unwrap();
    let got: Vec<Seq> = page.blobs.iter().map(|b| b.seq).collect();
    assert_eq!(got, vec![seqs[2], seqs[3], later]);
    assert_eq!(page.blobs[2].blob.as_bytes()[0], 5);

    // Deleting from the middle keeps the rest; IDs it never had are
    // ignored.
    assert_eq!(
        store
            .delete(&mailbox(1), &[seqs[1], seqs[2], later + 1])
            .unwrap(),
        2
    );
    let got: Vec<Seq> = store
        .fetch(&mailbox(1), all(0))
        .unwrap()
        .blobs
        .iter()
        .map(|b| b.seq)
        .collect();
    assert_eq!(got, vec![seqs[0], seqs[3], later]);
    assert_eq!(store.mailbox_usage(&mailbox(1)).count, 3);
    assert_eq!(
        store.delete(&mailbox(1), &[seqs[1]]).unwrap(),
        0,
        "already gone"
    );

    // The purge takes what its limit allows and keeps the entry of a chunk
    // it cut short.
    assert_eq!(store.purge_expired(100, 1).unwrap(), 1);
    assert_eq!(store.expiry_entries(), 3);
    assert_eq!(store.purge_expired(100, 10).unwrap(), 2);
    assert_eq!(store.expiry_entries(), 1);
    assert_eq!(store.mailbox_usage(&mailbox(1)).count, 1);
    assert_eq!(store.total_bytes(), 16384);
}

fn seqs_of(store: &dyn Storage, mailbox: &MailboxId) -> Vec<Seq> {
    store
        .fetch(mailbox, all(0))
        .unwrap()
        .blobs
        .iter()
        .map(|b| b.seq)
        .collect()
}

#[test]
fn sled_sparse_and_mid_chunk_acks_delete_exactly_the_named_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(dir.path()).unwrap();
    // 60 one-blob chunks (an expiry each), then one chunk of three.
    let mut seqs: Vec<Seq> = (0..60u8)
        .map(|i| {
            let seq = store
                .append(
                    &mailbox(1),
                    &blob(Bucket::K1, i),
                    0,
                    100 + 60 * u64::from(i),
                )
                .unwrap();
            store.flush().unwrap();
            seq
        })
        .collect();
    for i in 0..3u8 {
        seqs.push(
            store
                .append(&mailbox(1), &blob(Bucket::K1, 60 + i), 0, 100 + 3_600)
                .unwrap(),
        );
    }
    store.flush().unwrap();

    // Far apart: more chunks between them than an ack's scan steps over.
    assert_eq!(
        store
            .delete(&mailbox(1), &[seqs[0], seqs[30], seqs[59]])
            .unwrap(),
        3
    );
    // Starting in the middle of the last chunk, past the last blob too.
    assert_eq!(
        store
            .delete(&mailbox(1), &[seqs[61], seqs[62], seqs[62] + 5])
            .unwrap(),
        2
    );
    // A run of neighbours, some already gone.
    let run: Vec<Seq> = seqs[25..35].to_vec();
    assert_eq!(store.delete(&mailbox(1), &run).unwrap(), 9);
    let mut left = seqs.clone();
    left.retain(|seq| {
        ![seqs[0], seqs[30], seqs[59], seqs[61], seqs[62]].contains(seq) && !run.contains(seq)
    });
    assert_eq!(seqs_of(&store, &mailbox(1)), left);
    assert_eq!(store.mailbox_usage(&mailbox(1)).count, left.len() as u64);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]

    /// Whatever the chunking (flushes and expiries cut chunks) and whatever
    /// an ack names (runs, sparse seqs, seqs never stored, other mailboxes'
    /// seqs, appends not yet flushed), a delete removes exactly the named
    /// blobs of its mailbox and counts them.
    #[test]
    fn sled_deletes_match_a_model(
        appends in proptest::collection::vec((0u8..3, proptest::bool::ANY, 0u64..2), 1..100),
        acks in proptest::collection::vec(
            (0u8..3, proptest::collection::vec(0usize..110, 0..30), proptest::bool::ANY),
            1..10,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStorage::open(dir.path()).unwrap();
        let mut model: std::collections::BTreeMap<u8, std::collections::BTreeSet<Seq>> =
            Default::default();
        let mut appended = Vec::new();
        for (i, (owner, flush, expiry)) in appends.iter().enumerate() {
            let seq = store
                .append(&mailbox(*owner), &blob(Bucket::K1, i as u8), 0, 100 + expiry)
                .unwrap();
            model.entry(*owner).or_default().insert(seq);
            appended.push(seq);
            if *flush {
                store.flush().unwrap();
            }
        }
        let top = appended.iter().copied().max().unwrap_or(0);
        for (owner, picks, flush) in &acks {
            let named: Vec<Seq> = picks
                .iter()
                .map(|&i| appended.get(i).copied().unwrap_or(top + i as u64))
                .collect();
            let mine = model.entry(*owner).or_default();
            let expected = named
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|seq| mine.remove(seq))
                .count();
            proptest::prop_assert_eq!(
                store.delete(&mailbox(*owner), &named).unwrap() as usize,
                expected
            );
            if *flush {
                store.flush().unwrap();
            }
            for (owner, seqs) in &model {
                proptest::prop_assert_eq!(
                    seqs_of(&store, &mailbox(*owner)),
                    seqs.iter().copied().collect::<Vec<_>>()
                );
                proptest::prop_assert_eq!(
                    store.mailbox_usage(&mailbox(*owner)).count,
                    seqs.len() as u64
                );
            }
        }
    }
}

#[test]
fn sled_reads_blobs_stored_one_per_value() {
    // The layout before chunks: blobs key -> expires_at ‖ blob.
    let dir = tempfile::tempdir().unwrap();
    {
        let db = ::sled::open(dir.path()).unwrap();
        let tree = db.open_tree("blobs").unwrap();
        for seq in [3u64, 4] {
            let mut key = mailbox(1).as_bytes().to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            let mut value = 100u64.to_be_bytes().to_vec();
            value.extend_from_slice(blob(Bucket::K1, seq as u8).as_bytes());
            tree.insert(key, value).unwrap();
        }
        db.flush().unwrap();
    }
    let store = SledStorage::open(dir.path()).unwrap();
    let next = store
        .append(&mailbox(1), &blob(Bucket::K1, 5), 0, 100)
        .unwrap();
    assert!(next > 4, "IDs continue after the stored ones");
    assert_eq!(store.mailbox_usage(&mailbox(1)).count, 3);
    assert_eq!(store.delete(&mailbox(1), &[next]).unwrap(), 1);
    assert_eq!(store.mailbox_usage(&mailbox(1)).count, 2);
    let page = store.fetch(&mailbox(1), all(0)).unwrap();
    assert_eq!(page.blobs.len(), 2);
    assert_eq!(page.blobs[1].blob.as_bytes()[0], 4);
    assert_eq!(store.delete(&mailbox(1), &[3]).unwrap(), 1);
    assert_eq!(store.fetch(&mailbox(1), all(0)).unwrap().blobs.len(), 1);
}

#[test]
fn sled_opens_past_a_damaged_blobs_value_and_the_audit_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = ::sled::open(dir.path()).unwrap();
        let tree = db.open_tree("blobs").unwrap();
        let mut key = mailbox(1).as_bytes().to_vec();
        key.extend_from_slice(&7u64.to_be_bytes());
        // expires_at, the chunk format byte, then a truncated entry.
        let mut value = 100u64.to_be_bytes().to_vec();
        value.extend_from_slice(&[1, 0, 0, 0]);
        tree.insert(key, value).unwrap();
        db.flush().unwrap();
    }
    let store = SledStorage::open(dir.path()).unwrap();
    let next = store
        .append(&mailbox(1), &blob(Bucket::K1, 5), 0, 100)
        .unwrap();
    assert!(next > 7, "its seq is never handed out again");
    assert_eq!(store.delete(&mailbox(1), &[next]).unwrap(), 1);
    assert_eq!(store.mailbox_usage(&mailbox(1)).count, 0);
    assert!(store.fetch(&mailbox(1), all(0)).is_err());
    assert_eq!(store.audit_scan().unwrap().corrupt, 1);
}

fn reopen_keeps_blobs_slots_accounting_and_seq_order<S: Storage>(
    open: impl Fn(&std::path::Path) -> S,
) {
    let dir = tempfile::tempdir().unwrap();
    let before;
    {
        let store = open(dir.path());
        before = store
            .append(&mailbox(1), &blob(Bucket::K4, 9), 0, 1_000)
            .unwrap();
        store
            .slot_put(
                &SlotId::from_bytes([3; 32]),
                &SlotRecord {
                    version: 4,
                    owner: [5; 32],
                    value: Bytes::from(vec![6; 1024]),
                },
            )
            .unwrap();
        store.flush().unwrap();
    }
    let store = open(dir.path());
    let page = store.fetch(&mailbox(1), all(0)).unwrap();
    assert_eq!(page.blobs.len(), 1);
    assert_eq!(page.blobs[0].seq, before);
    assert_eq!(store.mailbox_usage(&mailbox(1)).bytes, 4096);
    assert_eq!(store.total_bytes(), 4096 + 1024);
    let slot = store
        .slot_get(&SlotId::from_bytes([3; 32]))
        .unwrap()
        .unwrap();
    assert_eq!(slot.version, 4);
    let after = store
        .append(&mailbox(1), &blob(Bucket::K1, 1), 0, 1_000)
        .unwrap();
    assert!(after > before, "seqs keep increasing across a reopen");
}

#[test]
fn sled_reopen_keeps_blobs_slots_accounting_and_seq_order() {
    reopen_keeps_blobs_slots_accounting_and_seq_order(|dir| SledStorage::open(dir).unwrap());
}

#[test]
fn fjall_reopen_keeps_blobs_slots_accounting_and_seq_order() {
    reopen_keeps_blobs_slots_accounting_and_seq_order(|dir| FjallStorage::open(dir).unwrap());
}

fn reopen_keeps_token_state<S: Storage>(open: impl Fn(&std::path::Path) -> S) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .set_issuer_state(&IssuerState {
                seed: [1; 32],
                generation: 2,
                admin_key: Some([3; 32]),
            })
            .unwrap();
        store.put_registrations(&[([4; 32], 60)]).unwrap();
        store
            .register_account(&[4; 32], &[5; 32], Some(&[8; 32]))
            .unwrap();
        store.set_device_registrations(&[5; 32], 2).unwrap();
        assert!(store.spend_token(6, &[7; 32]).unwrap());
        store.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.issuer_state().unwrap().unwrap().generation, 2);
    assert_eq!(
        store
            .account(&[5; 32])
            .unwrap()
            .unwrap()
            .device_registrations,
        2
    );
    assert_eq!(
        store.account_by_revocation(&[8; 32]).unwrap(),
        Some([5; 32])
    );
    assert!(!store.spend_token(6, &[7; 32]).unwrap(), "still spent");
}

#[test]
fn sled_reopen_keeps_token_state() {
    reopen_keeps_token_state(|dir| SledStorage::open(dir).unwrap());
}

#[test]
fn fjall_reopen_keeps_token_state() {
    reopen_keeps_token_state(|dir| FjallStorage::open(dir).unwrap());
}

/// Accounts written before device registrations existed (33 bytes: token
/// hash and revoked flag) still read, and gain the new fields when written.
#[test]
fn sled_reads_accounts_stored_before_device_registrations() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = ::sled::open(dir.path()).unwrap();
        let mut old = vec![4u8; 32];
        old.push(1);
        db.open_tree("accounts")
            .unwrap()
            .insert([5u8; 32], old)
            .unwrap();
        db.flush().unwrap();
    }
    let store = SledStorage::open(dir.path()).unwrap();
    let account = store.account(&[5; 32]).unwrap().unwrap();
    assert_eq!(
        account,
        Account {
            registration: [4; 32],
            revoked: true,
            device_registrations: 0,
            revocation: None,
        }
    );
    store.set_device_registrations(&[5; 32], 1).unwrap();
    assert_eq!(
        store
            .account(&[5; 32])
            .unwrap()
            .unwrap()
            .device_registrations,
        1
    );
}

/// sled writes large node pages (a leaf of 64 KiB blobs) to files of their
/// own that its flush never syncs: the relay's flush syncs each of them.
#[test]
fn sled_flush_syncs_the_node_files_sled_writes_outside_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(dir.path()).unwrap();
    // sled logs single updates until a leaf has ten, then rewrites it whole.
    for i in 0..24u8 {
        store
            .append(&mailbox(1), &blob(Bucket::K64, i), 0, 100)
            .unwrap();
        store.flush().unwrap();
    }
    let newest = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse::<u64>().ok())
        .max()
        .expect("a rewritten leaf of 64 KiB blobs is written to a node file");
    assert_eq!(store.synced_node_files_upto(), newest);
}

/// Issue 23 item 3: in the fjall layout every blob is its own record, so
/// an ack removes exactly its blobs and their expiry entries (issue 18 item
/// 9), in one batch, and nothing else is rewritten; after a reopen the
/// entries are still gone.
#[test]
fn fjall_acks_remove_each_blob_and_its_expiry_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStorage::open(dir.path()).unwrap();
    let mine: Vec<Seq> = (0..3u8)
        .map(|i| {
            store
                .append(
                    &mailbox(1),
                    &blob(Bucket::K1, i),
                    0,
                    100 + 60 * u64::from(i),
                )
                .unwrap()
        })
        .collect();
    let theirs: Vec<Seq> = (0..2)
        .map(|i| {
            store
                .append(&mailbox(2), &blob(Bucket::K1, i), 0, 100)
                .unwrap()
        })
        .collect();
    store.flush().unwrap();
    assert_eq!(store.expiry_keys().len(), 5, "one entry per blob");
    let records_before = store.blob_records();

    assert_eq!(store.delete(&mailbox(1), &mine[..2]).unwrap(), 2);
    assert_eq!(store.delete(&mailbox(2), &theirs[..1]).unwrap(), 1);
    store.flush().unwrap();
    let indexed = |store: &FjallStorage| -> Vec<(MailboxId, Seq)> {
        let mut got: Vec<(MailboxId, Seq)> = store
            .expiry_keys()
            .iter()
            .map(|key| {
                assert_eq!(key.len(), 48, "expires_at(8) ‖ mailbox(32) ‖ seq(8)");
                let mailbox = MailboxId::from_slice(&key[8..40]).unwrap();
                (mailbox, u64::from_be_bytes(key[40..].try_into().unwrap()))
            })
            .collect();
        got.sort();
        got
    };
    let mut want = vec![(mailbox(1), mine[2]), (mailbox(2), theirs[1])];
    want.sort();
    assert_eq!(indexed(&store), want, "the acked blobs' entries are gone");
    // The blobs left are the very records written before: not rewritten.
    let left = store.blob_records();
    assert_eq!(left.len(), 2);
    for record in &left {
        assert!(records_before.contains(record));
    }
    drop(store);
    let store = FjallStorage::open(dir.path()).unwrap();
    assert_eq!(indexed(&store), want, "gone after a reopen too");
    assert_eq!(store.mailbox_usage(&mailbox(1)).count, 1);
    assert_eq!(store.purge_expired(220, 100).unwrap(), 2);
    assert!(store.expiry_keys().is_empty());
    assert_eq!(store.mailbox_count(), 0);
}

/// Issue 18 item 10 for the fjall layout: the same puts per mailbox, made
/// once interleaved across mailboxes at different seconds with flushes in
/// between and once mailbox after mailbox at another second of the same
/// minute with one flush, leave the same keys and value lengths.
#[test]
fn fjall_stored_keys_show_no_order_across_mailboxes_and_no_time_below_the_minute() {
    const MINUTE: u64 = 1_800_000_000;
    const EXPIRES: u64 = MINUTE + 3_660;
    let counts = [(1u8, 3usize), (2, 2), (3, 4)];
    let scan = |store: &FjallStorage| {
        let mut blobs = store.blob_records();
        blobs.sort();
        let mut expiry = store.expiry_keys();
        expiry.sort();
        (blobs, expiry)
    };
    let interleaved = tempfile::tempdir().unwrap();
    let seized = {
        let store = FjallStorage::open(interleaved.path()).unwrap();
        let mut second = 1;
        for round in 0..4 {
            for (m, count) in counts {
                if round < count {
                    store
                        .append(
                            &mailbox(m),
                            &blob(Bucket::K1, round as u8),
                            MINUTE + second,
                            EXPIRES,
                        )
                        .unwrap();
                    second += 5;
                    if (round + m as usize).is_multiple_of(2) {
                        store.flush().unwrap();
                    }
                }
            }
        }
        store.flush().unwrap();
        scan(&store)
    };
    let apart = tempfile::tempdir().unwrap();
    let other = {
        let store = FjallStorage::open(apart.path()).unwrap();
        for (m, count) in counts.into_iter().rev() {
            for round in 0..count {
                store
                    .append(
                        &mailbox(m),
                        &blob(Bucket::K1, round as u8),
                        MINUTE + 59,
                        EXPIRES,
                    )
                    .unwrap();
            }
        }
        store.flush().unwrap();
        scan(&store)
    };
    assert_eq!(seized, other);
    let firsts: std::collections::BTreeSet<&[u8]> =
        seized.0.iter().map(|(key, _)| &key[32..]).collect();
    assert_eq!(
        firsts.len(),
        4,
        "IDs 1..=4 of the minute, the same in every mailbox"
    );
}

/// Issue 18 item 12 for the fjall layout: an LSM tree keeps deleted
/// records in its journal and tables, so blobs are sealed under day keys.
/// After acks and a key rotation, no 64-byte run of an acked blob, and no
/// byte run of the retired key, is anywhere in the directory; a blob of
/// the new day still reads after a reopen.
#[test]
fn fjall_acked_blobs_leave_nothing_readable_once_their_day_key_is_destroyed() {
    let t0 = 20_000 * DAY + 600;
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStorage::open(dir.path()).unwrap();
    let mut acked = Vec::new();
    let mut runs = Vec::new();
    for i in 0..5 {
        let (blob, run) = marked_blob();
        acked.push(store.append(&mailbox(1), &blob, t0 + i, t0 + DAY).unwrap());
        runs.push(run);
        store.flush().unwrap();
    }
    let first_day = store.at_rest_key_bytes();
    assert_eq!(first_day.len(), 1, "one key for the day");
    assert_eq!(store.delete(&mailbox(1), &acked).unwrap(), 5);
    store.flush().unwrap();
    let (kept, kept_run) = marked_blob();
    let kept_seq = store
        .append(&mailbox(2), &kept, t0 + DAY, t0 + 8 * DAY)
        .unwrap();
    store.flush().unwrap();
    assert_eq!(store.purge_expired(t0 + DAY, 100).unwrap(), 0);
    let keys = store.at_rest_key_bytes();
    assert_eq!(keys.len(), 1);
    assert_ne!(keys[0], first_day[0], "the first day's key is gone");
    drop(store);

    let files = every_file(dir.path());
    assert!(files.iter().any(|(path, _)| path.ends_with("at-rest-keys")));
    for (path, bytes) in &files {
        for run in &runs {
            assert!(!holds(bytes, run), "an acked blob's bytes in {path:?}");
        }
        assert!(!holds(bytes, &kept_run), "a live blob unsealed in {path:?}");
        assert!(
            !holds(bytes, &first_day[0].1),
            "the retired key in {path:?}"
        );
    }
    let store = FjallStorage::open(dir.path()).unwrap();
    let page = store.fetch(&mailbox(2), all(0)).unwrap();
    assert_eq!(page.blobs.len(), 1);
    assert_eq!(page.blobs[0].seq, kept_seq);
    assert_eq!(page.blobs[0].blob, kept);
}
