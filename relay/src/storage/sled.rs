//! The default backend: an embedded sled database in the relay's data dir.
//!
//! Trees and key layouts (all integers big-endian, so byte order is numeric
//! order and range scans are cheap):
//!
//! | tree     | key                                | value                          |
//! |----------|------------------------------------|--------------------------------|
//! | `blobs`  | mailbox(32) ‖ seq(8) (a chunk's first blob ID) | expires_at(8) ‖ 0x01 ‖ (seq(8) ‖ len(4) ‖ blob)+ |
//! | `expiry` | expires_at(8) ‖ mailbox(32) ‖ seq(8) (one per chunk) | empty                |
//! | `slots`  | slot_id(32)                        | version(8) ‖ owner(32) ‖ value |
//! | `issuer` | `b"state"`                         | seed(32) ‖ generation(4) ‖ [admin_key(32)] |
//! | `registrations` | token_hash(32)              | expires_at(8) ‖ [account_key(32)] |
//! | `accounts` | account_key(32)                  | token_hash(32) ‖ revoked(1) ‖ device_registrations(4) ‖ [revocation_hash(32)] |
//! | `revocations` | revocation_hash(32)           | account_key(32)                |
//! | `issued` | period(8) ‖ account_key(32)        | count(4)                       |
//! | `spent`  | key_id(8) ‖ SHA-256(input)(32)     | empty                          |
//!
//! The token trees hold nothing that links issuance to redemption: counts
//! are per period, spent tokens carry no time and no connection data, and
//! a registration's expiry is rounded up to the token period. Nor anything
//! that links a member's devices: a registration token a device minted for
//! another is stored exactly like one the admin minted, and the minting
//! account keeps only a count. Accounts written before device
//! registrations existed are `token_hash(32) ‖ revoked(1)` and still read.
//!
//! Nothing else is stored: no token, connection or address next to a blob
//! (DESIGN §2), and expiry times arrive already rounded to the minute.
//!
//! A blob's `seq` is its ID within its mailbox (`super::ids`: the put
//! minute, then a count of that mailbox's puts in the minute), so keys show
//! no order of puts across mailboxes and no time finer than the minute.
//!
//! An append only takes an ID, counts the blob and queues it in memory; the
//! queued blobs go into sled together at the next flush, just before the
//! fsync, on the thread that flushes (the relay's group-commit flusher). So
//! the tokio workers that call `append` never wait for a B-tree insert, and
//! the appends of one group commit are inserted in one pass (mailbox by
//! mailbox, in no particular order). A read that could see a queued blob (a
//! fetch or delete of its mailbox reaching its ID, a purge, an audit)
//! inserts the queue first, so the trait behaves as if every append were
//! inserted at once. Nothing queued was acknowledged: the relay acks a put
//! only after the flush that inserted it, and reads only up to each
//! mailbox's durable bound (`crate::commit`).
//!
//! Blobs are stored in *chunks*: the blobs of one mailbox with the same put
//! minute and expiry share one `blobs` value and one `expiry` entry (up to
//! 7 KiB of blobs, or one larger blob). A blob joins its mailbox's newest
//! chunk if that is of its minute and expiry and has room, whichever flush
//! it comes with, so how blobs are grouped depends only on the mailbox's
//! own puts (their minute, expiry and sizes) and acks: never on flush
//! timing or other mailboxes (issue 18 item 10; chunks cut per flush showed
//! which blobs arrived within milliseconds of each other). sled's CPU cost
//! is mostly per operation (a B-tree descent, a node copy, a log
//! reservation, a split every few inserts), so under load a chunk costs
//! about what one blob did: a new chunk is one insert, a blob joining one is
//! a read and a compare-and-swap of the grown value. The chunks of a
//! mailbox never overlap in ID, so a fetch reads them in key order. A
//! delete or purge rewrites a chunk without the removed blobs (a
//! compare-and-swap, so concurrent acks, the purge and joining appends
//! cannot lose each other's changes) or removes it once empty. Values
//! written before chunks (one blob, `expires_at(8) ‖ blob`) still read as
//! one-blob chunks.
//!
//! The expiry entry is inserted before its chunk, so a crash between the two
//! leaves at worst an index entry without blobs (harmless to the purge),
//! never a blob that would outlive its TTL.
//!
//! An ack that empties a chunk removes the chunk's expiry entry right after
//! it (before the flush that makes the ack durable, so before the reply):
//! the `expiry` tree holds an entry per stored chunk, none for acked ones.
//! An entry left dangling (a crash between the two removals, or a database
//! written before this rule) is dropped by the purge when its time comes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use sotto_proto::{Blob, Bucket, MailboxId, SlotId};
use zeroize::Zeroizing;

use super::accounting::Accounting;
use super::at_rest::{AtRestKeys, KeyId, key_id_of, sealed_key_id};
use super::ids::BlobIds;
use super::{
    Account, FetchPage, FetchRange, IssuerState, Registration, Seq, SlotRecord, Storage,
    StoreError, StoredBlob, Usage,
};
use crate::audit::{AuditCounts, AuditMailbox};

const BLOB_KEY_LEN: usize = 32 + 8;
const EXPIRY_KEY_LEN: usize = 8 + 32 + 8;

/// sled-backed storage.
pub struct SledStorage {
    db: sled::Db,
    blobs: sled::Tree,
    expiry: sled::Tree,
    slots: sled::Tree,
    accounting: Accounting,
    ids: BlobIds,
    keys: AtRestKeys,
    tokens: TokenTrees,
    queue: AppendQueue,
    disk: DiskSync,
}

/// What sled's flush leaves out. On Linux it ends with `sync_file_range`,
/// which neither persists the grown size of its log file nor flushes the
/// disk's write cache, and it never syncs the files it writes large node
/// pages to (`blobs/`). So a put acknowledged after a flush alone survives
/// a killed process but not necessarily a power cut. After each flush the
/// relay `fdatasync`s the log and every node file written since the last
/// flush, and the directory that names them.
struct DiskSync {
    dir: std::path::PathBuf,
    log: std::fs::File,
    /// Node files up to this name (sled names them by log sequence number)
    /// are synced.
    synced_upto: Mutex<u64>,
}

impl DiskSync {
    fn open(dir: &Path) -> Result<Self, StoreError> {
        let log = std::fs::File::open(dir.join("db"))?;
        let sync = Self {
            dir: dir.to_owned(),
            log,
            synced_upto: Mutex::new(0),
        };
        // Whatever a previous run left unsynced, and the directory entries
        // of a database created just now.
        sync.sync()?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(sync)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.log.sync_data()?;
        let node_dir = self.dir.join("blobs");
        let Ok(entries) = std::fs::read_dir(&node_dir) else {
            return Ok(());
        };
        let mut synced_upto = self
            .synced_upto
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut newest = *synced_upto;
        for entry in entries {
            let entry = entry?;
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok())
            else {
                continue;
            };
            if lsn > *synced_upto {
                // sled deletes node files it no longer needs on its own
                // background threads, so one listed a moment ago may be
                // gone: nothing refers to it any more, so there is nothing
                // to sync. (Treating that as a failed flush refused
                // ordinary concurrent puts of large blobs as `Internal`.)
                match std::fs::File::open(entry.path()) {
                    Ok(file) => file.sync_data()?,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error.into()),
                }
                newest = newest.max(lsn);
            }
        }
        if newest > *synced_upto {
            std::fs::File::open(&node_dir)?.sync_all()?;
            *synced_upto = newest;
        }
        Ok(())
    }
}

/// Appends counted and given a seq but not yet inserted into sled.
#[derive(Default)]
struct AppendQueue {
    /// Queued appends, in seq order.
    queued: Mutex<Vec<Queued>>,
    /// Held while a drained batch is inserted (so inserts stay in order);
    /// guards each mailbox's newest chunk, which later appends of the same
    /// minute and expiry join.
    inserting: Mutex<HashMap<MailboxId, (Seq, u64)>>,
}

struct Queued {
    mailbox: MailboxId,
    seq: Seq,
    expires_at: u64,
    blob: Blob,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are a plain Vec and (); a panic while holding the
    // lock leaves them consistent, so poisoning is ignored.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The anonymous-access trees (see the module table).
struct TokenTrees {
    issuer: sled::Tree,
    registrations: sled::Tree,
    accounts: sled::Tree,
    revocations: sled::Tree,
    issued: sled::Tree,
    spent: sled::Tree,
}

impl TokenTrees {
    fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            issuer: db.open_tree("issuer")?,
            registrations: db.open_tree("registrations")?,
            accounts: db.open_tree("accounts")?,
            revocations: db.open_tree("revocations")?,
            issued: db.open_tree("issued")?,
            spent: db.open_tree("spent")?,
        })
    }
}

const ISSUER_KEY: &[u8] = b"state";

fn key32(bytes: &[u8], tree: &'static str) -> Result<[u8; 32], StoreError> {
    bytes
        .get(..32)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt(tree, "short 32-byte field"))
}

pub(super) fn parse_issuer(value: &[u8]) -> Result<IssuerState, StoreError> {
    let seed = key32(value, "issuer")?;
    let generation = value
        .get(32..36)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| corrupt("issuer", "short generation"))?;
    let admin_key = match value.len() {
        36 => None,
        68 => Some(key32(&value[36..], "issuer")?),
        n => return Err(corrupt("issuer", format!("value of {n} bytes"))),
    };
    Ok(IssuerState {
        seed,
        generation,
        admin_key,
    })
}

pub(super) fn parse_registration(value: &[u8]) -> Result<Registration, StoreError> {
    let expires_at = be64(value).ok_or_else(|| corrupt("registrations", "short value"))?;
    let account = match value.len() {
        8 => None,
        40 => Some(key32(&value[8..], "registrations")?),
        n => return Err(corrupt("registrations", format!("value of {n} bytes"))),
    };
    Ok(Registration {
        expires_at,
        account,
    })
}

pub(super) fn registration_value(registration: &Registration) -> Vec<u8> {
    let mut value = registration.expires_at.to_be_bytes().to_vec();
    if let Some(account) = &registration.account {
        value.extend_from_slice(account);
    }
    value
}

/// Bytes of an account written before device registrations existed.
const OLD_ACCOUNT_LEN: usize = 33;
/// Bytes of an account without a revocation hash.
const ACCOUNT_LEN: usize = OLD_ACCOUNT_LEN + 4;

pub(super) fn parse_account(value: &[u8]) -> Result<Account, StoreError> {
    let wrong = || corrupt("accounts", format!("value of {} bytes", value.len()));
    if value.len() != OLD_ACCOUNT_LEN
        && value.len() != ACCOUNT_LEN
        && value.len() != ACCOUNT_LEN + 32
    {
        return Err(wrong());
    }
    let device_registrations = match value.get(OLD_ACCOUNT_LEN..ACCOUNT_LEN) {
        Some(count) => u32::from_be_bytes(count.try_into().map_err(|_| wrong())?),
        None => 0,
    };
    let revocation = match value.get(ACCOUNT_LEN..) {
        Some(hash) if !hash.is_empty() => Some(key32(hash, "accounts")?),
        _ => None,
    };
    Ok(Account {
        registration: key32(value, "accounts")?,
        revoked: value[32] != 0,
        device_registrations,
        revocation,
    })
}

pub(super) fn account_value(account: &Account) -> Vec<u8> {
    let mut value = Vec::with_capacity(ACCOUNT_LEN + 32);
    value.extend_from_slice(&account.registration);
    value.push(u8::from(account.revoked));
    value.extend_from_slice(&account.device_registrations.to_be_bytes());
    if let Some(revocation) = &account.revocation {
        value.extend_from_slice(revocation);
    }
    value
}

fn period_key(period: u64, account_key: &[u8; 32]) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&period.to_be_bytes());
    key[8..].copy_from_slice(account_key);
    key
}

/// Removes every key of `tree` below `bound` (8-byte big-endian prefix).
fn drop_below(tree: &sled::Tree, bound: u64) -> Result<usize, StoreError> {
    let end = bound.to_be_bytes();
    let mut batch = sled::Batch::default();
    let mut dropped = 0;
    for entry in tree.range(..end.as_slice()) {
        let (key, _) = entry?;
        batch.remove(key);
        dropped += 1;
    }
    tree.apply_batch(batch)?;
    Ok(dropped)
}

fn blob_key(mailbox: &MailboxId, seq: Seq) -> [u8; BLOB_KEY_LEN] {
    let mut key = [0u8; BLOB_KEY_LEN];
    key[..32].copy_from_slice(mailbox.as_bytes());
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn expiry_key(expires_at: u64, mailbox: &MailboxId, seq: Seq) -> [u8; EXPIRY_KEY_LEN] {
    let mut key = [0u8; EXPIRY_KEY_LEN];
    key[..8].copy_from_slice(&expires_at.to_be_bytes());
    key[8..40].copy_from_slice(mailbox.as_bytes());
    key[40..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Opens sled, waiting up to two seconds for its file lock: a database
/// closed a moment ago in this process (a relay restarting in place) can
/// release the lock slightly after its last handle is dropped. A lock held
/// by another live process still fails.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let opened = sled::Config::new()
            .path(dir)
            // Durability comes from the relay's own group-committed flushes;
            // sled's periodic background flush only adds fsyncs.
            .flush_every_ms(None)
            .open();
        match opened {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

fn be64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

fn corrupt(tree: &'static str, what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree,
        what: what.into(),
    }
}

fn parse_blob_key(key: &[u8]) -> Result<(MailboxId, Seq), StoreError> {
    if key.len() != BLOB_KEY_LEN {
        return Err(corrupt("blobs", format!("key of {} bytes", key.len())));
    }
    let mailbox = MailboxId::from_slice(&key[..32]).map_err(|e| corrupt("blobs", e.to_string()))?;
    let seq = be64(&key[32..]).ok_or_else(|| corrupt("blobs", "short key"))?;
    Ok((mailbox, seq))
}

/// Format byte after `expires_at` in a chunk value. A value written before
/// chunks holds one blob right after `expires_at`, so its length is 8 plus a
/// bucket size (even); a chunk's is 9 plus a sum of (12 + bucket size)
/// (odd), so the two never mix up.
const CHUNK_FORMAT: u8 = 1;
/// Format byte of a sealed chunk: `expires_at(8) ‖ 0x02 ‖ key_id(4) ‖
/// nonce(24) ‖ sealed entries ‖ tag(16)` (`at_rest`). Its length is odd
/// too (45 plus entries of 12 plus a bucket size).
const SEALED_FORMAT: u8 = 2;
/// Most blob bytes in one chunk (a chunk always takes its first blob).
/// sled splits a leaf above 16 entries and writes a node page larger than
/// a quarter segment (about 128 KiB) to a file of its own instead of its
/// log; 17 chunks of at most 7 KiB of blobs (7 of 1 KiB, 7,261 bytes with
/// headers) stay under that, so chunking 1 and 4 KiB blobs never moves
/// their leaves out of the log. (A leaf of 16 or 64 KiB blobs was over it
/// before chunks and still is.) Small chunks also keep cheap the rewrite of
/// a chunk that an ack names only part of.
const CHUNK_MAX_BYTES: usize = 7 * 1024;

/// The blobs of one chunk, oldest first, their common expiry and the key
/// the chunk is sealed under (none for formats before sealing).
struct Chunk {
    expires_at: u64,
    key_id: Option<KeyId>,
    blobs: Vec<StoredBlob>,
}

/// Decodes an unsealed chunk stored under `key_seq` (formats before
/// sealing; see [`SledStorage::decode`]). The blobs share the value's buffer.
fn parse_chunk(key_seq: Seq, value: &sled::IVec) -> Result<Chunk, StoreError> {
    let expires_at =
        be64(value).ok_or_else(|| corrupt("blobs", "value shorter than its header"))?;
    let whole = Bytes::from_owner(value.clone());
    if Bucket::of_len(value.len() - 8).is_some() {
        // Written before chunks: one blob, whose seq is the key's.
        return Ok(Chunk {
            expires_at,
            key_id: None,
            blobs: vec![StoredBlob {
                seq: key_seq,
                blob: Blob::new(whole.slice(8..)).map_err(|e| corrupt("blobs", e.to_string()))?,
            }],
        });
    }
    if value.get(8) != Some(&CHUNK_FORMAT) {
        return Err(corrupt("blobs", "unknown value format"));
    }
    Ok(Chunk {
        expires_at,
        key_id: None,
        blobs: parse_entries(key_seq, whole.slice(9..))?,
    })
}

/// Decodes a chunk's entries, `(seq(8) ‖ len(4) ‖ blob)+`, in seq order.
fn parse_entries(key_seq: Seq, body: Bytes) -> Result<Vec<StoredBlob>, StoreError> {
    let mut blobs: Vec<StoredBlob> = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let header = body
            .get(at..at + 12)
            .ok_or_else(|| corrupt("blobs", "truncated chunk entry"))?;
        let seq = be64(header).ok_or_else(|| corrupt("blobs", "short seq"))?;
        let len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as usize;
        let start = at + 12;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= body.len())
            .ok_or_else(|| corrupt("blobs", "chunk entry longer than its chunk"))?;
        let in_order = blobs.last().map_or(seq >= key_seq, |last| seq > last.seq);
        if !in_order {
            return Err(corrupt("blobs", "chunk entries out of seq order"));
        }
        blobs.push(StoredBlob {
            seq,
            blob: Blob::new(body.slice(start..end)).map_err(|e| corrupt("blobs", e.to_string()))?,
        });
        at = end;
    }
    if blobs.is_empty() {
        return Err(corrupt("blobs", "empty chunk"));
    }
    Ok(blobs)
}

/// A chunk's entries, `(seq(8) ‖ len(4) ‖ blob)+`: what is sealed.
fn entries<'a>(blobs: impl IntoIterator<Item = (Seq, &'a Blob)>) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(Vec::with_capacity(12 + 1024));
    for (seq, blob) in blobs {
        body.extend_from_slice(&seq.to_be_bytes());
        // Blobs are at most 64 KiB (one bucket), so the length fits.
        body.extend_from_slice(&(blob.len() as u32).to_be_bytes());
        body.extend_from_slice(blob.as_bytes());
    }
    body
}

/// An unsealed chunk value (the format before sealing; only rewrites of
/// such chunks still write it).
fn chunk_value<'a>(expires_at: u64, blobs: impl IntoIterator<Item = (Seq, &'a Blob)>) -> Vec<u8> {
    let mut value = Vec::with_capacity(9 + 12 + 1024);
    value.extend_from_slice(&expires_at.to_be_bytes());
    value.push(CHUNK_FORMAT);
    value.extend_from_slice(&entries(blobs));
    value
}

pub(super) fn parse_slot(value: &[u8]) -> Result<SlotRecord, StoreError> {
    if value.len() < 40 {
        return Err(corrupt("slots", "value shorter than its header"));
    }
    let version = be64(value).ok_or_else(|| corrupt("slots", "short version"))?;
    let mut owner = [0u8; 32];
    owner.copy_from_slice(&value[8..40]);
    Ok(SlotRecord {
        version,
        owner,
        value: Bytes::copy_from_slice(&value[40..]),
    })
}

/// Decodes the chunk of `mailbox` stored under `key_seq`, opening it if it
/// is sealed.
fn decode_with(
    keys: &AtRestKeys,
    mailbox: &MailboxId,
    key_seq: Seq,
    value: &sled::IVec,
) -> Result<Chunk, StoreError> {
    if value.get(8) != Some(&SEALED_FORMAT) {
        return parse_chunk(key_seq, value);
    }
    let expires_at =
        be64(value).ok_or_else(|| corrupt("blobs", "value shorter than its header"))?;
    let (key_id, body) = keys.open(mailbox, key_seq, expires_at, &value[9..])?;
    Ok(Chunk {
        expires_at,
        key_id: Some(key_id),
        blobs: parse_entries(key_seq, Bytes::from(body))?,
    })
}

/// The put minute an ID carries (see `ids`).
fn minute_of(seq: Seq) -> u64 {
    seq >> 20
}

/// A chunk being filled by `insert_chunks`.
struct Building {
    /// The chunk's key: its first blob's ID.
    key_seq: Seq,
    expires_at: u64,
    /// The stored value it extends, and the IDs that value holds.
    stored: Option<(sled::IVec, Vec<Seq>)>,
    /// Blob bytes in it, stored and added.
    bytes: usize,
    /// Blobs to add, in ID order.
    added: Vec<(Seq, Blob)>,
}

impl Building {
    /// Whether a blob with this ID, expiry and length joins this chunk.
    fn takes(&self, seq: Seq, expires_at: u64, len: usize) -> bool {
        self.expires_at == expires_at
            && minute_of(self.key_seq) == minute_of(seq)
            && (self.holds(seq) || self.bytes + len <= CHUNK_MAX_BYTES)
    }

    /// Whether the stored value already holds this ID.
    fn holds(&self, seq: Seq) -> bool {
        self.stored
            .as_ref()
            .is_some_and(|(_, seqs)| seqs.binary_search(&seq).is_ok())
    }
}

impl SledStorage {
    /// Opens (or creates) the database in `dir` and rebuilds the usage
    /// counters from what is stored.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = open_db(dir)?;
        let blobs = db.open_tree("blobs")?;
        let expiry = db.open_tree("expiry")?;
        let slots = db.open_tree("slots")?;
        let tokens = TokenTrees::open(&db)?;
        let accounting = Accounting::default();
        let ids = BlobIds::default();
        let keys = AtRestKeys::load(dir)?;
        for entry in blobs.iter() {
            let (key, value) = entry?;
            let (mailbox, key_seq) = parse_blob_key(&key)?;
            ids.seen(&mailbox, key_seq);
            if value.get(8) == Some(&SEALED_FORMAT)
                && let Some(id) = value.get(9..).and_then(sealed_key_id)
            {
                // Counted even if it does not open: its key must stay.
                keys.counted(id);
            }
            // A damaged value must not keep the relay (or the audit, which
            // counts it) from starting; fetching it reports the damage.
            let chunk = match decode_with(&keys, &mailbox, key_seq, &value) {
                Ok(chunk) => chunk,
                Err(error) => {
                    tracing::warn!(%error, "unreadable blobs record; not counted");
                    continue;
                }
            };
            for stored in chunk.blobs {
                ids.seen(&mailbox, stored.seq);
                accounting.added(&mailbox, stored.blob.len());
            }
        }
        for entry in slots.iter() {
            let (_, value) = entry?;
            accounting.slot_replaced(0, value.len().saturating_sub(40));
        }
        Ok(Self {
            db,
            blobs,
            expiry,
            slots,
            accounting,
            ids,
            keys,
            tokens,
            queue: AppendQueue::default(),
            disk: DiskSync::open(dir)?,
        })
    }

    /// Inserts every queued append into sled, in seq order.
    fn insert_queued(&self) -> Result<(), StoreError> {
        let mut newest = lock(&self.queue.inserting);
        let batch = std::mem::take(&mut *lock(&self.queue.queued));
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.insert_chunks(&batch, &mut newest) {
            // Requeue the whole batch ahead of anything queued since, so the
            // next flush retries it in order. Blobs already inserted are
            // skipped then (their chunk already holds their ID).
            let mut queued = lock(&self.queue.queued);
            let newer = std::mem::take(&mut *queued);
            queued.extend(batch);
            queued.extend(newer);
            return Err(error);
        }
        Ok(())
    }

    /// Inserts the queue first if an append to `mailbox` with an ID up to
    /// `upto` is still queued. (The relay reads only up to a mailbox's
    /// durable bound, which nothing queued is below.)
    fn insert_queued_for(&self, mailbox: &MailboxId, upto: Seq) -> Result<(), StoreError> {
        let queued = lock(&self.queue.queued)
            .iter()
            .any(|queued| queued.mailbox == *mailbox && queued.seq <= upto);
        if queued {
            self.insert_queued()?;
        }
        Ok(())
    }

    /// Puts `batch` (in append order) into chunks: per mailbox, the blobs
    /// of one put minute and one expiry join that mailbox's newest chunk
    /// while it has room (`CHUNK_MAX_BYTES`), whichever flush they came
    /// with. So how blobs are grouped depends only on the mailbox's own
    /// puts, their minute and sizes, never on the timing of flushes or on
    /// other mailboxes (issue 18 item 10). `newest` maps each mailbox to
    /// its newest chunk (first ID, expiry) of the current minute.
    fn insert_chunks(
        &self,
        batch: &[Queued],
        newest: &mut HashMap<MailboxId, (Seq, u64)>,
    ) -> Result<(), StoreError> {
        let mut by_mailbox: HashMap<MailboxId, Vec<&Queued>> = HashMap::new();
        for queued in batch {
            by_mailbox.entry(queued.mailbox).or_default().push(queued);
        }
        for (mailbox, appends) in by_mailbox {
            let mut building: Option<Building> = None;
            for queued in appends {
                let joins = building
                    .as_ref()
                    .is_some_and(|b| b.takes(queued.seq, queued.expires_at, queued.blob.len()));
                if !joins {
                    if let Some(done) = building.take() {
                        let written = self.write_chunk(&mailbox, done)?;
                        newest.insert(mailbox, written);
                    }
                    building = Some(self.open_chunk(&mailbox, queued, newest)?);
                }
                if let Some(b) = building.as_mut() {
                    if b.holds(queued.seq) {
                        continue; // inserted by an earlier, failed attempt
                    }
                    b.bytes += queued.blob.len();
                    b.added.push((queued.seq, queued.blob.clone()));
                }
            }
            if let Some(done) = building {
                let written = self.write_chunk(&mailbox, done)?;
                newest.insert(mailbox, written);
            }
        }
        // Later appends are of this minute or a later one: older chunks
        // are never joined again.
        if let Some(minute) = batch.iter().map(|q| minute_of(q.seq)).max() {
            newest.retain(|_, (key_seq, _)| minute_of(*key_seq) >= minute);
        }
        Ok(())
    }

    /// Decodes the chunk of `mailbox` stored under `key_seq`.
    fn decode(
        &self,
        mailbox: &MailboxId,
        key_seq: Seq,
        value: &sled::IVec,
    ) -> Result<Chunk, StoreError> {
        decode_with(&self.keys, mailbox, key_seq, value)
    }

    /// A sealed chunk value: under `key` (an existing chunk's), or for a
    /// new chunk (`None`, the insert path only) under the key of its first
    /// blob's day, which is created if need be and counts the chunk.
    fn seal<'a>(
        &self,
        mailbox: &MailboxId,
        key_seq: Seq,
        expires_at: u64,
        key: Option<KeyId>,
        blobs: impl IntoIterator<Item = (Seq, &'a Blob)>,
    ) -> Result<Vec<u8>, StoreError> {
        let body = entries(blobs);
        let sealed = match key {
            Some(id) => self.keys.seal(id, mailbox, key_seq, expires_at, &body)?,
            None => self
                .keys
                .seal_new(key_id_of(key_seq), mailbox, key_seq, expires_at, &body)?,
        };
        let mut value = Vec::with_capacity(9 + sealed.len());
        value.extend_from_slice(&expires_at.to_be_bytes());
        value.push(SEALED_FORMAT);
        value.extend_from_slice(&sealed);
        Ok(value)
    }

    /// The chunk `queued` goes into: its mailbox's newest chunk if that is
    /// of the same minute and expiry and has room, else a new one.
    fn open_chunk(
        &self,
        mailbox: &MailboxId,
        queued: &Queued,
        newest: &HashMap<MailboxId, (Seq, u64)>,
    ) -> Result<Building, StoreError> {
        let fresh = Building {
            key_seq: queued.seq,
            expires_at: queued.expires_at,
            stored: None,
            bytes: 0,
            added: Vec::new(),
        };
        let Some(&(key_seq, expires_at)) = newest.get(mailbox) else {
            return Ok(fresh);
        };
        if expires_at != queued.expires_at || minute_of(key_seq) != minute_of(queued.seq) {
            return Ok(fresh);
        }
        let Some(value) = self.blobs.get(blob_key(mailbox, key_seq))? else {
            return Ok(fresh); // acked in the meantime
        };
        let chunk = self.decode(mailbox, key_seq, &value)?;
        let building = Building {
            key_seq,
            expires_at,
            bytes: chunk.blobs.iter().map(|b| b.blob.len()).sum(),
            stored: Some((value, chunk.blobs.iter().map(|b| b.seq).collect())),
            added: Vec::new(),
        };
        if building.holds(queued.seq) || building.bytes + queued.blob.len() <= CHUNK_MAX_BYTES {
            Ok(building)
        } else {
            Ok(fresh)
        }
    }

    /// Writes a chunk: a new one with its expiry entry (the entry first),
    /// or the stored one rewritten with the added blobs by compare-and-swap
    /// (an ack or the purge may change it meanwhile). Returns the key (first
    /// ID) and expiry of the chunk it wrote: the mailbox's newest.
    fn write_chunk(
        &self,
        mailbox: &MailboxId,
        building: Building,
    ) -> Result<(Seq, u64), StoreError> {
        let written = (building.key_seq, building.expires_at);
        if building.added.is_empty() {
            return Ok(written);
        }
        let key = blob_key(mailbox, building.key_seq);
        let added = building.added.iter().map(|(seq, blob)| (*seq, blob));
        let Some((mut current, _)) = building.stored else {
            let value = self.seal(mailbox, building.key_seq, building.expires_at, None, added)?;
            self.expiry.insert(
                expiry_key(building.expires_at, mailbox, building.key_seq),
                &[],
            )?;
            self.blobs.insert(key, value)?;
            return Ok(written);
        };
        loop {
            let chunk = self.decode(mailbox, building.key_seq, &current)?;
            let value = self.seal(
                mailbox,
                building.key_seq,
                building.expires_at,
                chunk.key_id,
                chunk
                    .blobs
                    .iter()
                    .map(|b| (b.seq, &b.blob))
                    .chain(building.added.iter().map(|(seq, blob)| (*seq, blob))),
            )?;
            match self
                .blobs
                .compare_and_swap(key, Some(&current), Some(value))?
            {
                Ok(()) => return Ok(written),
                Err(changed) => match changed.current {
                    Some(now) => current = now,
                    // Every blob of it was acked: the added ones start a
                    // new chunk under their first ID.
                    None => {
                        let first = building.added[0].0;
                        let value =
                            self.seal(mailbox, first, building.expires_at, None, added.clone())?;
                        self.expiry
                            .insert(expiry_key(building.expires_at, mailbox, first), &[])?;
                        self.blobs.insert(blob_key(mailbox, first), value)?;
                        return Ok((first, building.expires_at));
                    }
                },
            }
        }
    }

    /// The chunk of `mailbox` that holds `seq` if any blob does: the one
    /// with the greatest first seq at or below it.
    fn chunk_at_or_before(
        &self,
        mailbox: &MailboxId,
        seq: Seq,
    ) -> Result<Option<(Seq, sled::IVec)>, StoreError> {
        // Acks name blobs in order, so a named seq is often a chunk's first:
        // a point read then finds it, without sled's costlier reverse scan.
        if let Some(value) = self.blobs.get(blob_key(mailbox, seq))? {
            return Ok(Some((seq, value)));
        }
        let Some(entry) = self
            .blobs
            .range(blob_key(mailbox, 0)..=blob_key(mailbox, seq))
            .next_back()
        else {
            return Ok(None);
        };
        let (key, value) = entry?;
        let (_, key_seq) = parse_blob_key(&key)?;
        Ok(Some((key_seq, value)))
    }

    /// Removes the blobs that `doomed` picks (by blob and position) from the
    /// chunk stored under `key_seq`, whose value was read as `value`; the
    /// chunk goes when it empties. Returns how many blobs it removed.
    fn remove_from_chunk(
        &self,
        mailbox: &MailboxId,
        key_seq: Seq,
        mut value: sled::IVec,
        doomed: impl Fn(&StoredBlob, usize) -> bool,
    ) -> Result<usize, StoreError> {
        let key = blob_key(mailbox, key_seq);
        loop {
            let chunk = self.decode(mailbox, key_seq, &value)?;
            let (gone, kept): (Vec<_>, Vec<_>) = chunk
                .blobs
                .into_iter()
                .enumerate()
                .partition(|(i, stored)| doomed(stored, *i));
            if gone.is_empty() {
                return Ok(0);
            }
            let rest = kept.iter().map(|(_, stored)| (stored.seq, &stored.blob));
            let new = match (kept.is_empty(), chunk.key_id) {
                (true, _) => None,
                // Resealed under its own key, with a fresh nonce.
                (false, Some(id)) => {
                    Some(self.seal(mailbox, key_seq, chunk.expires_at, Some(id), rest)?)
                }
                (false, None) => Some(chunk_value(chunk.expires_at, rest)),
            };
            let emptied = new.is_none();
            match self.blobs.compare_and_swap(key, Some(&value), new)? {
                Ok(()) => {
                    if emptied {
                        // Its index entry goes with it (issue 18 item 9): an
                        // entry left to the purge named the mailbox and the
                        // put minute for the rest of the TTL. Both are
                        // made durable by the same flush before any reply.
                        self.expiry
                            .remove(expiry_key(chunk.expires_at, mailbox, key_seq))?;
                        if let Some(id) = chunk.key_id {
                            self.keys.uncounted(id);
                        }
                    }
                    for (_, stored) in &gone {
                        self.accounting.removed(mailbox, stored.blob.len());
                    }
                    return Ok(gone.len());
                }
                // Another delete or the purge changed the chunk first.
                Err(changed) => match changed.current {
                    Some(current) => value = current,
                    None => return Ok(0),
                },
            }
        }
    }

    /// Bytes the database occupies on disk (for the audit and the stats log).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Reads every record and summarises it for `sotto-relay audit`: sizes
    /// and counts only, never contents. Read-only: it iterates and never
    /// inserts, removes or flushes.
    ///
    /// Records that do not parse are counted in `AuditCounts::corrupt`
    /// rather than failing the scan: an auditor wants to see them.
    pub fn audit_scan(&self) -> Result<AuditCounts, StoreError> {
        self.insert_queued()?;
        let mut counts = AuditCounts {
            trees: self
                .db
                .tree_names()
                .iter()
                .map(|name| String::from_utf8_lossy(name).into_owned())
                .collect(),
            ..AuditCounts::default()
        };
        counts.trees.sort();
        let mut last_mailbox: Option<[u8; 32]> = None;
        for entry in self.blobs.iter() {
            let (key, value) = entry?;
            let Ok((mailbox, key_seq)) = parse_blob_key(&key) else {
                counts.corrupt += 1;
                continue;
            };
            let Ok(Chunk {
                expires_at, blobs, ..
            }) = self.decode(&mailbox, key_seq, &value)
            else {
                counts.corrupt += 1;
                continue;
            };
            // Keys sort by mailbox first, so each mailbox is one run.
            if last_mailbox != Some(*mailbox.as_bytes()) {
                last_mailbox = Some(*mailbox.as_bytes());
                counts.mailboxes.push(AuditMailbox::default());
            }
            if let Some(current) = counts.mailboxes.last_mut() {
                current.prefix.copy_from_slice(&mailbox.as_bytes()[..4]);
                current.blobs += blobs.len() as u64;
                current.bytes += blobs.iter().map(|b| b.blob.len() as u64).sum::<u64>();
            }
            for stored in &blobs {
                counts.blob_sizes.add(stored.blob.len() as u64);
            }
            if expires_at % 60 != 0 {
                counts.unaligned_expiry += 1;
            }
            counts.oldest_expiry = Some(
                counts
                    .oldest_expiry
                    .map_or(expires_at, |t| t.min(expires_at)),
            );
            counts.newest_expiry = Some(
                counts
                    .newest_expiry
                    .map_or(expires_at, |t| t.max(expires_at)),
            );
        }
        for entry in self.expiry.iter() {
            let (key, _) = entry?;
            counts.expiry_entries += 1;
            if key.len() != EXPIRY_KEY_LEN {
                counts.corrupt += 1;
                continue;
            }
            // An index entry whose chunk is gone (acked, or a crash between
            // the two inserts) is harmless; the purge removes it.
            if !self.blobs.contains_key(&key[8..])? {
                counts.dangling_expiry += 1;
            }
        }
        for entry in self.slots.iter() {
            let (_, value) = entry?;
            match parse_slot(&value) {
                Ok(slot) => counts.slot_sizes.add(slot.value.len() as u64),
                Err(_) => counts.corrupt += 1,
            }
        }
        counts.default_tree_entries = self.db.len() as u64;
        Ok(counts)
    }

    // Backup and restore (`crate::backup`). A backup holds the blobs
    // opened (the relay's at-rest keys stay out of it) and every other
    // tree's records as they are; a restore re-inserts them, sealing the
    // blobs under the new data dir's own day keys.

    /// The trees a backup copies record by record (everything but the
    /// blobs, which it copies opened, and the expiry index, which a
    /// restore rebuilds from the blobs).
    pub(crate) const RECORD_TREES: [&'static str; 7] = [
        "issuer",
        "registrations",
        "accounts",
        "revocations",
        "slots",
        "issued",
        "spent",
    ];

    /// One of [`Self::RECORD_TREES`] by name.
    pub(crate) fn record_tree(&self, name: &str) -> Option<&sled::Tree> {
        match name {
            "issuer" => Some(&self.tokens.issuer),
            "registrations" => Some(&self.tokens.registrations),
            "accounts" => Some(&self.tokens.accounts),
            "revocations" => Some(&self.tokens.revocations),
            "slots" => Some(&self.slots),
            "issued" => Some(&self.tokens.issued),
            "spent" => Some(&self.tokens.spent),
            _ => None,
        }
    }

    /// Calls `f` with every stored blob (mailbox, ID, expiry, blob), in
    /// key order, opening sealed chunks. Only inserted blobs are seen:
    /// appends still queued were not acknowledged. Each chunk is read
    /// whole at one moment, so a blob is never seen in part.
    pub(crate) fn for_each_blob<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(&MailboxId, Seq, u64, &Blob) -> Result<(), E>,
    ) -> Result<(), E> {
        for entry in self.blobs.iter() {
            let (key, value) = entry.map_err(StoreError::from)?;
            let (mailbox, key_seq) = parse_blob_key(&key)?;
            let chunk = self.decode(&mailbox, key_seq, &value)?;
            for stored in &chunk.blobs {
                f(&mailbox, stored.seq, chunk.expires_at, &stored.blob)?;
            }
        }
        Ok(())
    }

    /// Queues a blob under its original ID (a restore); the next
    /// [`Storage::flush`] inserts it into its chunk, sealed under the key
    /// of its day, with its expiry entry.
    pub(crate) fn import_blob(&self, mailbox: &MailboxId, seq: Seq, expires_at: u64, blob: &Blob) {
        self.ids.seen(mailbox, seq);
        self.accounting.added(mailbox, blob.len());
        lock(&self.queue.queued).push(Queued {
            mailbox: *mailbox,
            seq,
            expires_at,
            blob: blob.clone(),
        });
    }

    /// Index entries in the `expiry` tree, dangling ones included.
    #[cfg(test)]
    pub(super) fn synced_node_files_upto(&self) -> u64 {
        *self
            .disk
            .synced_upto
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    pub(super) fn expiry_entries(&self) -> usize {
        self.insert_queued().expect("test: insert the queue");
        self.expiry.len()
    }

    /// Copies of the at-rest keys held now.
    #[cfg(test)]
    pub(super) fn at_rest_key_bytes(&self) -> Vec<(KeyId, [u8; 32])> {
        self.keys.key_bytes()
    }

    /// The raw keys of the `expiry` tree.
    #[cfg(test)]
    pub(super) fn expiry_keys(&self) -> Vec<Vec<u8>> {
        self.insert_queued().expect("test: insert the queue");
        self.expiry
            .iter()
            .map(|entry| entry.expect("test: read the expiry tree").0.to_vec())
            .collect()
    }
}

impl Drop for SledStorage {
    fn drop(&mut self) {
        // sled flushes when its last handle goes; queued appends go with it,
        // as they would have had they been inserted at once.
        if let Err(error) = self.insert_queued() {
            tracing::error!(%error, "could not insert queued blobs at close");
        }
    }
}

impl Storage for SledStorage {
    fn append(
        &self,
        mailbox: &MailboxId,
        blob: &Blob,
        now: u64,
        expires_at: u64,
    ) -> Result<Seq, StoreError> {
        // Per mailbox and minute (see `ids`); never reused in the mailbox.
        let seq = self.ids.next(mailbox, now);
        // Counted now, so quota checks see it before it is inserted.
        self.accounting.added(mailbox, blob.len());
        lock(&self.queue.queued).push(Queued {
            mailbox: *mailbox,
            seq,
            expires_at,
            blob: blob.clone(),
        });
        Ok(seq)
    }

    fn fetch(&self, mailbox: &MailboxId, range: FetchRange) -> Result<FetchPage, StoreError> {
        let mut page = FetchPage::default();
        if range.after >= range.upto || range.limit == 0 {
            return Ok(page);
        }
        self.insert_queued_for(mailbox, range.upto)?;
        let start = blob_key(mailbox, range.after.saturating_add(1));
        let end = blob_key(mailbox, range.upto);
        // The chunk holding `after + 1` may begin before it.
        let before = self.blobs.range(blob_key(mailbox, 0)..start).next_back();
        let mut bytes = 0usize;
        for entry in before.into_iter().chain(self.blobs.range(start..=end)) {
            let (key, value) = entry?;
            let (_, key_seq) = parse_blob_key(&key)?;
            for stored in self.decode(mailbox, key_seq, &value)?.blobs {
                if stored.seq <= range.after {
                    continue;
                }
                // Later chunks of the mailbox hold only later seqs.
                if stored.seq > range.upto {
                    return Ok(page);
                }
                let len = stored.blob.len();
                if page.blobs.len() >= range.limit
                    || (!page.blobs.is_empty() && bytes + len > range.max_bytes)
                {
                    page.more = true;
                    return Ok(page);
                }
                bytes += len;
                page.blobs.push(stored);
            }
        }
        Ok(page)
    }

    fn delete(&self, mailbox: &MailboxId, seqs: &[Seq]) -> Result<u32, StoreError> {
        let mut seqs = seqs.to_vec();
        seqs.sort_unstable();
        seqs.dedup();
        self.insert_queued_for(mailbox, seqs.last().copied().unwrap_or(0))?;
        let mut deleted = 0;
        let mut rest = seqs.as_slice();
        while let Some(&seq) = rest.first() {
            let Some((key_seq, value)) = self.chunk_at_or_before(mailbox, seq)? else {
                rest = &rest[1..];
                continue;
            };
            let last = self
                .decode(mailbox, key_seq, &value)?
                .blobs
                .last()
                .map_or(key_seq, |stored| stored.seq);
            // The named seqs this chunk may hold; at least `seq`, so the
            // loop always moves on.
            let (mine, later) = rest.split_at(rest.partition_point(|&s| s <= last).max(1));
            deleted += self.remove_from_chunk(mailbox, key_seq, value, |stored, _| {
                mine.binary_search(&stored.seq).is_ok()
            })?;
            rest = later;
        }
        Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
    }

    fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        self.insert_queued()?;
        let mut purged = 0;
        let end = (now.saturating_add(1)).to_be_bytes();
        // `limit` counts blobs, not index entries: dangling entries left by
        // acks are dropped on the way without using up the batch.
        for entry in self.expiry.range(..end.as_slice()) {
            if purged >= limit {
                break;
            }
            let (key, _) = entry?;
            if key.len() != EXPIRY_KEY_LEN {
                return Err(corrupt("expiry", format!("key of {} bytes", key.len())));
            }
            let mailbox =
                MailboxId::from_slice(&key[8..40]).map_err(|e| corrupt("expiry", e.to_string()))?;
            let key_seq = be64(&key[40..]).ok_or_else(|| corrupt("expiry", "short key"))?;
            let chunk_key = blob_key(&mailbox, key_seq);
            if let Some(value) = self.blobs.get(chunk_key)? {
                let room = limit - purged;
                purged += self.remove_from_chunk(&mailbox, key_seq, value, |_, i| i < room)?;
            }
            // Keep the entry of a chunk the limit cut short.
            if !self.blobs.contains_key(chunk_key)? {
                self.expiry.remove(&key)?;
            }
        }
        // Destroy the at-rest keys of past days that seal nothing any more
        // (no new chunk is sealed meanwhile: inserts hold this lock).
        let _inserting = lock(&self.queue.inserting);
        let today = KeyId::try_from(now / 86_400).unwrap_or(KeyId::MAX);
        let retired = self.keys.retire(today)?;
        if retired > 0 {
            tracing::info!(retired, "at-rest keys destroyed");
        }
        Ok(purged)
    }

    fn mailbox_usage(&self, mailbox: &MailboxId) -> Usage {
        self.accounting.usage(mailbox)
    }

    fn total_bytes(&self) -> u64 {
        self.accounting.total_bytes()
    }

    fn mailbox_count(&self) -> usize {
        self.accounting.mailbox_count()
    }

    fn blob_count(&self) -> Option<u64> {
        Some(self.accounting.blob_count())
    }

    fn slot_get(&self, id: &SlotId) -> Result<Option<SlotRecord>, StoreError> {
        self.slots
            .get(id.as_bytes())?
            .map(|value| parse_slot(&value))
            .transpose()
    }

    fn slot_put(&self, id: &SlotId, record: &SlotRecord) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(40 + record.value.len());
        value.extend_from_slice(&record.version.to_be_bytes());
        value.extend_from_slice(&record.owner);
        value.extend_from_slice(&record.value);
        let old = self.slots.insert(id.as_bytes(), value)?;
        let old_len = old.map_or(0, |v| v.len().saturating_sub(40));
        self.accounting.slot_replaced(old_len, record.value.len());
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.insert_queued()?;
        self.db.flush()?;
        self.disk.sync()
    }

    fn issuer_state(&self) -> Result<Option<IssuerState>, StoreError> {
        self.tokens
            .issuer
            .get(ISSUER_KEY)?
            .map(|value| parse_issuer(&value))
            .transpose()
    }

    fn set_issuer_state(&self, state: &IssuerState) -> Result<(), StoreError> {
        let mut value = zeroize::Zeroizing::new(Vec::with_capacity(68));
        value.extend_from_slice(&state.seed);
        value.extend_from_slice(&state.generation.to_be_bytes());
        if let Some(admin) = &state.admin_key {
            value.extend_from_slice(admin);
        }
        self.tokens.issuer.insert(ISSUER_KEY, value.as_slice())?;
        Ok(())
    }

    fn put_registrations(&self, tokens: &[([u8; 32], u64)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (hash, expires_at) in tokens {
            batch.insert(hash.as_slice(), expires_at.to_be_bytes().as_slice());
        }
        self.tokens.registrations.apply_batch(batch)?;
        Ok(())
    }

    fn drop_unused_registrations(&self, now: u64) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut dropped = 0;
        for entry in self.tokens.registrations.iter() {
            let (key, value) = entry?;
            let registration = parse_registration(&value)?;
            if registration.account.is_none() && registration.expires_at <= now {
                batch.remove(key);
                dropped += 1;
            }
        }
        self.tokens.registrations.apply_batch(batch)?;
        Ok(dropped)
    }

    fn registration(&self, hash: &[u8; 32]) -> Result<Option<Registration>, StoreError> {
        self.tokens
            .registrations
            .get(hash)?
            .map(|value| parse_registration(&value))
            .transpose()
    }

    fn register_account(
        &self,
        hash: &[u8; 32],
        account_key: &[u8; 32],
        revocation: Option<&[u8; 32]>,
    ) -> Result<(), StoreError> {
        use sled::Transactional;
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        let account = account_value(&Account::new(*hash, revocation.copied()));
        (
            &self.tokens.registrations,
            &self.tokens.accounts,
            &self.tokens.revocations,
        )
            .transaction(|(registrations, accounts, revocations)| {
                let Some(value) = registrations.get(hash)? else {
                    return Err(ConflictableTransactionError::Abort(corrupt(
                        "registrations",
                        "registering with an unknown token",
                    )));
                };
                let mut registration =
                    parse_registration(&value).map_err(ConflictableTransactionError::Abort)?;
                registration.account = Some(*account_key);
                registrations.insert(hash.as_slice(), registration_value(&registration))?;
                accounts.insert(account_key.as_slice(), account.as_slice())?;
                if let Some(revocation) = revocation {
                    revocations.insert(revocation.as_slice(), account_key.as_slice())?;
                }
                Ok(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::Db(e),
            })
    }

    fn account(&self, account_key: &[u8; 32]) -> Result<Option<Account>, StoreError> {
        self.tokens
            .accounts
            .get(account_key)?
            .map(|value| parse_account(&value))
            .transpose()
    }

    fn revoke_account(&self, account_key: &[u8; 32]) -> Result<(), StoreError> {
        if let Some(mut account) = self.account(account_key)? {
            account.revoked = true;
            self.tokens
                .accounts
                .insert(account_key.as_slice(), account_value(&account))?;
        }
        Ok(())
    }

    fn account_by_revocation(&self, hash: &[u8; 32]) -> Result<Option<[u8; 32]>, StoreError> {
        self.tokens
            .revocations
            .get(hash)?
            .map(|value| {
                value
                    .as_ref()
                    .try_into()
                    .map_err(|_| corrupt("revocations", "account key is not 32 bytes"))
            })
            .transpose()
    }

    fn set_device_registrations(
        &self,
        account_key: &[u8; 32],
        count: u32,
    ) -> Result<(), StoreError> {
        if let Some(mut account) = self.account(account_key)? {
            account.device_registrations = count;
            self.tokens
                .accounts
                .insert(account_key.as_slice(), account_value(&account))?;
        }
        Ok(())
    }

    fn issued(&self, account_key: &[u8; 32], period: u64) -> Result<u32, StoreError> {
        match self.tokens.issued.get(period_key(period, account_key))? {
            None => Ok(0),
            Some(value) => value
                .as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| corrupt("issued", "count is not 4 bytes")),
        }
    }

    fn set_issued(
        &self,
        account_key: &[u8; 32],
        period: u64,
        count: u32,
    ) -> Result<(), StoreError> {
        self.tokens.issued.insert(
            period_key(period, account_key),
            count.to_be_bytes().as_slice(),
        )?;
        Ok(())
    }

    fn drop_issued_before(&self, period: u64) -> Result<usize, StoreError> {
        drop_below(&self.tokens.issued, period)
    }

    fn spend_token(&self, key_id: u64, input_hash: &[u8; 32]) -> Result<bool, StoreError> {
        let mut key = [0u8; 40];
        key[..8].copy_from_slice(&key_id.to_be_bytes());
        key[8..].copy_from_slice(input_hash);
        let swapped = self
            .tokens
            .spent
            .compare_and_swap(key, None::<&[u8]>, Some(&[] as &[u8]))?;
        Ok(swapped.is_ok())
    }

    fn drop_spent_before(&self, key_id: u64) -> Result<usize, StoreError> {
        drop_below(&self.tokens.spent, key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sled removes node files on its own threads, between the sync
    /// listing `blobs/` and opening each file; the sync must not fail then
    /// (it made a flush fail, and every put it covered was refused).
    #[test]
    fn a_node_file_removed_while_the_sync_runs_is_not_an_error() {
        let dir = tempfile::tempdir().expect("test: temp dir");
        std::fs::write(dir.path().join("db"), b"").expect("test: log file");
        let node_dir = dir.path().join("blobs");
        std::fs::create_dir(&node_dir).expect("test: node dir");
        let sync = DiskSync::open(dir.path()).expect("test: open");
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let done = done.clone();
            let node_dir = node_dir.clone();
            std::thread::spawn(move || {
                // Node files come and go as sled rewrites nodes; keep a
                // few alive so every listing finds some.
                let mut lsn = 1u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::fs::write(node_dir.join(lsn.to_string()), b"node").expect("test: write");
                    if lsn > 4 {
                        let _ = std::fs::remove_file(node_dir.join((lsn - 4).to_string()));
                    }
                    lsn += 1;
                }
            })
        };
        let mut failures = 0;
        for _ in 0..500 {
            if let Err(error) = sync.sync() {
                failures += 1;
                eprintln!("sync failed: {error}");
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().expect("test: churn thread");
        assert_eq!(failures, 0, "syncs failed over files sled had removed");
    }
}
