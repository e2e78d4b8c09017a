//! The LSM backend (`storage.engine = "fjall"`): an embedded fjall database
//! in `DATA_DIR/fjall` (issue 23 items 3 and 4).
//!
//! One keyspace per sled tree, with the same names and, for everything but
//! the blobs, the same keys and values (see `super::sled`). Blobs are not
//! chunked: each blob is its own record,
//!
//! | keyspace | key                                  | value                              |
//! |----------|--------------------------------------|------------------------------------|
//! | `blobs`  | mailbox(32) ‖ seq(8)                 | expires_at(8) ‖ sealed blob        |
//! | `expiry` | expires_at(8) ‖ mailbox(32) ‖ seq(8) | empty                              |
//!
//! so an ack is one point read (for the expiry and length) and one write
//! batch holding two tombstones, the blob's and its expiry entry's, never
//! the rewrite of a chunk that sled's layout needs (issue 23 item 3). The
//! sealed blob is `key_id(4) ‖ nonce(24) ‖ seq(8) ‖ len(4) ‖ blob ‖ tag(16)`
//! under the day key of its ID, with the blob's own ID in the associated
//! data (`super::at_rest`), exactly a one-blob sled chunk.
//!
//! Keys are what sled's are: the mailbox, a per-mailbox ID (the put minute
//! and a count within the mailbox, `super::ids`) and an expiry rounded to
//! the minute; so nothing shows an order of puts across mailboxes or a
//! time below the minute (issue 18 item 10). An LSM tree keeps every
//! write in its journal and tables until compaction drops it, deletions
//! included, which is why every blob is sealed under a day key that is
//! destroyed once nothing sealed under it is stored (issue 18 item 12).
//!
//! Durability: writes go to fjall's journal buffer only
//! (`manual_journal_persist`), and [`Storage::flush`] persists the journal
//! with `fdatasync` (`PersistMode::SyncData`; fjall preallocates its
//! journal files and syncs the directory when it creates one, so the data
//! sync covers what a crash or power cut would lose). An append is queued
//! in memory and written, in one batch with every other append of the same
//! group commit, by the flush that makes it durable; a write batch is
//! atomic in the journal, so a blob and its expiry entry, or an ack's two
//! tombstones, are never recovered apart.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use sotto_proto::{Blob, MailboxId, SlotId};
use zeroize::Zeroizing;

use super::accounting::Accounting;
use super::at_rest::{AtRestKeys, KeyId, key_id_of, sealed_key_id};
use super::ids::BlobIds;
use super::{
    Account, FetchPage, FetchRange, IssuerState, Registration, Seq, SlotRecord, Storage,
    StoreError, StoredBlob, Usage,
};

const BLOB_KEY_LEN: usize = 32 + 8;
const EXPIRY_KEY_LEN: usize = 8 + 32 + 8;
const ISSUER_KEY: &[u8] = b"state";

/// The directory of the fjall database, inside the data directory.
pub const FJALL_DIR: &str = "fjall";

/// fjall-backed storage.
pub struct FjallStorage {
    db: Database,
    blobs: Keyspace,
    expiry: Keyspace,
    slots: Keyspace,
    issuer: Keyspace,
    registrations: Keyspace,
    accounts: Keyspace,
    revocations: Keyspace,
    issued: Keyspace,
    spent: Keyspace,
    accounting: Accounting,
    ids: BlobIds,
    keys: AtRestKeys,
    /// Appends counted and given an ID, written at the next flush.
    queued: Mutex<Vec<Queued>>,
    /// Held while a drained queue is written, and by the key retire pass
    /// (no blob is sealed under a key being destroyed).
    inserting: Mutex<()>,
    /// Held by every read-then-remove of blobs (acks, the purge), so two
    /// of them never count one blob's removal twice.
    removing: Mutex<()>,
    /// Held by read-then-write sequences of the token keyspaces that must
    /// be atomic (spending a token).
    tokens: Mutex<()>,
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

fn corrupt(tree: &'static str, what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree,
        what: what.into(),
    }
}

fn be64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
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

fn parse_blob_key(key: &[u8]) -> Result<(MailboxId, Seq), StoreError> {
    if key.len() != BLOB_KEY_LEN {
        return Err(corrupt("blobs", format!("key of {} bytes", key.len())));
    }
    let mailbox = MailboxId::from_slice(&key[..32]).map_err(|e| corrupt("blobs", e.to_string()))?;
    let seq = be64(&key[32..]).ok_or_else(|| corrupt("blobs", "short key"))?;
    Ok((mailbox, seq))
}

/// The plaintext sealed for one blob: `seq(8) ‖ len(4) ‖ blob`, a one-blob
/// chunk body as sled seals it.
fn entry(seq: Seq, blob: &Blob) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(Vec::with_capacity(12 + blob.len()));
    body.extend_from_slice(&seq.to_be_bytes());
    // Blobs are at most 64 KiB (one bucket), so the length fits.
    body.extend_from_slice(&(blob.len() as u32).to_be_bytes());
    body.extend_from_slice(blob.as_bytes());
    body
}

/// The expiry a stored blob value starts with.
fn expiry_of(value: &[u8]) -> Result<u64, StoreError> {
    be64(value).ok_or_else(|| corrupt("blobs", "value shorter than its header"))
}

/// Opens a stored blob value of `mailbox` under `seq`: its expiry, the key
/// that sealed it, and the blob.
fn open_value(
    keys: &AtRestKeys,
    mailbox: &MailboxId,
    seq: Seq,
    value: &[u8],
) -> Result<(u64, KeyId, Blob), StoreError> {
    let expires_at = expiry_of(value)?;
    let (key_id, body) = keys.open(mailbox, seq, expires_at, &value[8..])?;
    let stored_seq = be64(&body).ok_or_else(|| corrupt("blobs", "short entry"))?;
    if stored_seq != seq {
        return Err(corrupt("blobs", "a blob stored under another ID"));
    }
    let len = body
        .get(8..12)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| corrupt("blobs", "short entry"))?;
    if body.len() != 12 + len {
        return Err(corrupt("blobs", "entry length does not match"));
    }
    let blob =
        Blob::new(Bytes::from(body).slice(12..)).map_err(|e| corrupt("blobs", e.to_string()))?;
    Ok((expires_at, key_id, blob))
}

/// Bytes of the blob a stored value holds, from its length alone: the
/// expiry, the seal's overhead and the entry header are fixed.
fn blob_len_of(value: &[u8]) -> usize {
    value
        .len()
        .saturating_sub(8 + super::at_rest::SEAL_OVERHEAD + 12)
}

fn period_key(period: u64, account_key: &[u8; 32]) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&period.to_be_bytes());
    key[8..].copy_from_slice(account_key);
    key
}

impl FjallStorage {
    /// Opens (or creates) the database in `dir` and rebuilds the usage
    /// counters and blob IDs from what is stored.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = open_db(dir)?;
        let keyspace = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        let blobs = keyspace("blobs")?;
        let expiry = keyspace("expiry")?;
        let slots = keyspace("slots")?;
        let issuer = keyspace("issuer")?;
        let registrations = keyspace("registrations")?;
        let accounts = keyspace("accounts")?;
        let revocations = keyspace("revocations")?;
        let issued = keyspace("issued")?;
        let spent = keyspace("spent")?;
        let accounting = Accounting::default();
        let ids = BlobIds::default();
        let keys = AtRestKeys::load(dir)?;
        for entry in blobs.iter() {
            let (key, value) = entry.into_inner()?;
            let (mailbox, seq) = parse_blob_key(&key)?;
            ids.seen(&mailbox, seq);
            if let Some(id) = value.get(8..).and_then(sealed_key_id) {
                // Counted even if it does not open: its key must stay.
                keys.counted(id);
            }
            accounting.added(&mailbox, blob_len_of(&value));
        }
        for entry in slots.iter() {
            let value = entry.value()?;
            accounting.slot_replaced(0, value.len().saturating_sub(40));
        }
        Ok(Self {
            db,
            blobs,
            expiry,
            slots,
            issuer,
            registrations,
            accounts,
            revocations,
            issued,
            spent,
            accounting,
            ids,
            keys,
            queued: Mutex::new(Vec::new()),
            inserting: Mutex::new(()),
            removing: Mutex::new(()),
            tokens: Mutex::new(()),
        })
    }

    /// Writes every queued append, with its expiry entry, in one batch.
    fn insert_queued(&self) -> Result<(), StoreError> {
        let _inserting = lock(&self.inserting);
        let queue = std::mem::take(&mut *lock(&self.queued));
        if queue.is_empty() {
            return Ok(());
        }
        let result = (|| {
            let mut batch = self.db.batch();
            for queued in &queue {
                let sealed = self.keys.seal_new(
                    key_id_of(queued.seq),
                    &queued.mailbox,
                    queued.seq,
                    queued.expires_at,
                    &entry(queued.seq, &queued.blob),
                )?;
                let mut value = Vec::with_capacity(8 + sealed.len());
                value.extend_from_slice(&queued.expires_at.to_be_bytes());
                value.extend_from_slice(&sealed);
                batch.insert(
                    &self.expiry,
                    expiry_key(queued.expires_at, &queued.mailbox, queued.seq).as_slice(),
                    [].as_slice(),
                );
                batch.insert(
                    &self.blobs,
                    blob_key(&queued.mailbox, queued.seq).as_slice(),
                    value,
                );
            }
            batch.commit()?;
            Ok(())
        })();
        if let Err(error) = result {
            // Requeued ahead of anything queued since; a retry writes the
            // same keys again, which replaces them. (Keys counted for the
            // failed seals only keep a day key a little longer.)
            let mut queued = lock(&self.queued);
            let newer = std::mem::take(&mut *queued);
            queued.extend(queue);
            queued.extend(newer);
            return Err(error);
        }
        Ok(())
    }

    /// Writes the queue first if an append to `mailbox` with an ID up to
    /// `upto` is still queued.
    fn insert_queued_for(&self, mailbox: &MailboxId, upto: Seq) -> Result<(), StoreError> {
        let queued = lock(&self.queued)
            .iter()
            .any(|queued| queued.mailbox == *mailbox && queued.seq <= upto);
        if queued {
            self.insert_queued()?;
        }
        Ok(())
    }

    /// Removes the stored blob `seq` of `mailbox` (the caller holds
    /// `removing`), with its expiry entry in the same batch; false if it
    /// was not stored.
    fn remove_blob(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        mailbox: &MailboxId,
        seq: Seq,
        removed: &mut Vec<(usize, Option<KeyId>)>,
    ) -> Result<bool, StoreError> {
        let key = blob_key(mailbox, seq);
        let Some(value) = self.blobs.get(key)? else {
            return Ok(false);
        };
        let expires_at = expiry_of(&value)?;
        batch.remove(&self.blobs, key.as_slice());
        batch.remove(
            &self.expiry,
            expiry_key(expires_at, mailbox, seq).as_slice(),
        );
        removed.push((blob_len_of(&value), value.get(8..).and_then(sealed_key_id)));
        Ok(true)
    }

    /// Counts the removals of a committed batch.
    fn removed(&self, mailbox: &MailboxId, removed: &[(usize, Option<KeyId>)]) {
        for (len, key_id) in removed {
            self.accounting.removed(mailbox, *len);
            if let Some(id) = key_id {
                self.keys.uncounted(*id);
            }
        }
    }

    /// Bytes the database occupies on disk (for the stats log).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.disk_space()?)
    }

    /// Index entries in the `expiry` keyspace.
    #[cfg(test)]
    pub(super) fn expiry_keys(&self) -> Vec<Vec<u8>> {
        self.insert_queued().expect("test: insert the queue");
        self.expiry
            .iter()
            .map(|entry| {
                entry
                    .key()
                    .expect("test: read the expiry keyspace")
                    .to_vec()
            })
            .collect()
    }

    /// The raw keys and value lengths of the `blobs` keyspace.
    #[cfg(test)]
    pub(super) fn blob_records(&self) -> Vec<(Vec<u8>, usize)> {
        self.insert_queued().expect("test: insert the queue");
        self.blobs
            .iter()
            .map(|entry| {
                let (key, value) = entry.into_inner().expect("test: read the blobs");
                (key.to_vec(), value.len())
            })
            .collect()
    }

    /// Copies of the at-rest keys held now.
    #[cfg(test)]
    pub(super) fn at_rest_key_bytes(&self) -> Vec<(KeyId, [u8; 32])> {
        self.keys.key_bytes()
    }
}

/// Opens fjall, waiting up to two seconds for its lock: a database closed a
/// moment ago in this process (a relay restarting in place) can release it
/// slightly after its last handle is dropped.
fn open_db(dir: &Path) -> Result<Database, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let opened = Database::builder(dir)
            // Durability comes from the relay's group-committed flushes.
            .manual_journal_persist(true)
            .open();
        match opened {
            Err(fjall::Error::Locked) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

impl Drop for FjallStorage {
    fn drop(&mut self) {
        // Queued appends go with the close, as they would have had they
        // been written at once; fjall persists its journal when dropped.
        if let Err(error) = self.insert_queued() {
            tracing::error!(%error, "could not write queued blobs at close");
        }
    }
}

/// Removes every key of `keyspace` below `bound` (8-byte big-endian prefix).
fn drop_below(db: &Database, keyspace: &Keyspace, bound: u64) -> Result<usize, StoreError> {
    let end = bound.to_be_bytes();
    let mut batch = db.batch();
    let mut dropped = 0;
    for entry in keyspace.range(..end.as_slice()) {
        batch.remove(keyspace, entry.key()?);
        dropped += 1;
    }
    batch.commit()?;
    Ok(dropped)
}

impl Storage for FjallStorage {
    fn append(
        &self,
        mailbox: &MailboxId,
        blob: &Blob,
        now: u64,
        expires_at: u64,
    ) -> Result<Seq, StoreError> {
        let seq = self.ids.next(mailbox, now);
        self.accounting.added(mailbox, blob.len());
        lock(&self.queued).push(Queued {
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
        let mut bytes = 0usize;
        for entry in self.blobs.range(start..=end) {
            let (key, value) = entry.into_inner()?;
            let (_, seq) = parse_blob_key(&key)?;
            let len = blob_len_of(&value);
            if page.blobs.len() >= range.limit
                || (!page.blobs.is_empty() && bytes + len > range.max_bytes)
            {
                page.more = true;
                return Ok(page);
            }
            let (_, _, blob) = open_value(&self.keys, mailbox, seq, &value)?;
            bytes += blob.len();
            page.blobs.push(StoredBlob { seq, blob });
        }
        Ok(page)
    }

    fn delete(&self, mailbox: &MailboxId, seqs: &[Seq]) -> Result<u32, StoreError> {
        let mut seqs = seqs.to_vec();
        seqs.sort_unstable();
        seqs.dedup();
        self.insert_queued_for(mailbox, seqs.last().copied().unwrap_or(0))?;
        let _removing = lock(&self.removing);
        let mut batch = self.db.batch();
        let mut removed = Vec::new();
        for seq in seqs {
            self.remove_blob(&mut batch, mailbox, seq, &mut removed)?;
        }
        if removed.is_empty() {
            return Ok(0);
        }
        batch.commit()?;
        self.removed(mailbox, &removed);
        Ok(u32::try_from(removed.len()).unwrap_or(u32::MAX))
    }

    fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        self.insert_queued()?;
        let mut purged = 0;
        {
            let _removing = lock(&self.removing);
            let end = now.saturating_add(1).to_be_bytes();
            let mut batch = self.db.batch();
            let mut removed: Vec<(MailboxId, (usize, Option<KeyId>))> = Vec::new();
            for entry in self.expiry.range(..end.as_slice()) {
                if purged >= limit {
                    break;
                }
                let key = entry.key()?;
                if key.len() != EXPIRY_KEY_LEN {
                    return Err(corrupt("expiry", format!("key of {} bytes", key.len())));
                }
                let mailbox = MailboxId::from_slice(&key[8..40])
                    .map_err(|e| corrupt("expiry", e.to_string()))?;
                let seq = be64(&key[40..]).ok_or_else(|| corrupt("expiry", "short key"))?;
                let mut one = Vec::new();
                if self.remove_blob(&mut batch, &mailbox, seq, &mut one)? {
                    purged += 1;
                    removed.extend(one.into_iter().map(|r| (mailbox, r)));
                } else {
                    // An entry without its blob (none is left by acks).
                    batch.remove(&self.expiry, key);
                }
            }
            batch.commit()?;
            for (mailbox, one) in &removed {
                self.removed(mailbox, std::slice::from_ref(one));
            }
        }
        // Destroy the at-rest keys of past days that seal nothing any more.
        let _inserting = lock(&self.inserting);
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
            .map(|value| super::sled::parse_slot(&value))
            .transpose()
    }

    fn slot_put(&self, id: &SlotId, record: &SlotRecord) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(40 + record.value.len());
        value.extend_from_slice(&record.version.to_be_bytes());
        value.extend_from_slice(&record.owner);
        value.extend_from_slice(&record.value);
        let _tokens = lock(&self.tokens);
        let old = self.slots.get(id.as_bytes())?;
        self.slots.insert(id.as_bytes().as_slice(), value)?;
        let old_len = old.map_or(0, |v| v.len().saturating_sub(40));
        self.accounting.slot_replaced(old_len, record.value.len());
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.insert_queued()?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    fn issuer_state(&self) -> Result<Option<IssuerState>, StoreError> {
        self.issuer
            .get(ISSUER_KEY)?
            .map(|value| super::sled::parse_issuer(&value))
            .transpose()
    }

    fn set_issuer_state(&self, state: &IssuerState) -> Result<(), StoreError> {
        let mut value = Zeroizing::new(Vec::with_capacity(68));
        value.extend_from_slice(&state.seed);
        value.extend_from_slice(&state.generation.to_be_bytes());
        if let Some(admin) = &state.admin_key {
            value.extend_from_slice(admin);
        }
        self.issuer.insert(ISSUER_KEY, value.as_slice())?;
        Ok(())
    }

    fn put_registrations(&self, tokens: &[([u8; 32], u64)]) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        for (hash, expires_at) in tokens {
            batch.insert(
                &self.registrations,
                hash.as_slice(),
                expires_at.to_be_bytes().as_slice(),
            );
        }
        batch.commit()?;
        Ok(())
    }

    fn drop_unused_registrations(&self, now: u64) -> Result<usize, StoreError> {
        let mut batch = self.db.batch();
        let mut dropped = 0;
        for entry in self.registrations.iter() {
            let (key, value) = entry.into_inner()?;
            let registration = super::sled::parse_registration(&value)?;
            if registration.account.is_none() && registration.expires_at <= now {
                batch.remove(&self.registrations, key);
                dropped += 1;
            }
        }
        batch.commit()?;
        Ok(dropped)
    }

    fn registration(&self, hash: &[u8; 32]) -> Result<Option<Registration>, StoreError> {
        self.registrations
            .get(hash)?
            .map(|value| super::sled::parse_registration(&value))
            .transpose()
    }

    fn register_account(
        &self,
        hash: &[u8; 32],
        account_key: &[u8; 32],
        revocation: Option<&[u8; 32]>,
    ) -> Result<(), StoreError> {
        let _tokens = lock(&self.tokens);
        let Some(value) = self.registrations.get(hash)? else {
            return Err(corrupt(
                "registrations",
                "registering with an unknown token",
            ));
        };
        let mut registration = super::sled::parse_registration(&value)?;
        registration.account = Some(*account_key);
        let account = super::sled::account_value(&Account::new(*hash, revocation.copied()));
        // One batch: the three records are recovered together or not at all.
        let mut batch = self.db.batch();
        batch.insert(
            &self.registrations,
            hash.as_slice(),
            super::sled::registration_value(&registration),
        );
        batch.insert(&self.accounts, account_key.as_slice(), account);
        if let Some(revocation) = revocation {
            batch.insert(
                &self.revocations,
                revocation.as_slice(),
                account_key.as_slice(),
            );
        }
        batch.commit()?;
        Ok(())
    }

    fn account_by_revocation(&self, hash: &[u8; 32]) -> Result<Option<[u8; 32]>, StoreError> {
        self.revocations
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
        let _tokens = lock(&self.tokens);
        if let Some(mut account) = self.account(account_key)? {
            account.device_registrations = count;
            self.accounts
                .insert(account_key.as_slice(), super::sled::account_value(&account))?;
        }
        Ok(())
    }

    fn account(&self, account_key: &[u8; 32]) -> Result<Option<Account>, StoreError> {
        self.accounts
            .get(account_key)?
            .map(|value| super::sled::parse_account(&value))
            .transpose()
    }

    fn revoke_account(&self, account_key: &[u8; 32]) -> Result<(), StoreError> {
        let _tokens = lock(&self.tokens);
        if let Some(mut account) = self.account(account_key)? {
            account.revoked = true;
            self.accounts
                .insert(account_key.as_slice(), super::sled::account_value(&account))?;
        }
        Ok(())
    }

    fn issued(&self, account_key: &[u8; 32], period: u64) -> Result<u32, StoreError> {
        match self.issued.get(period_key(period, account_key))? {
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
        self.issued.insert(
            period_key(period, account_key).as_slice(),
            count.to_be_bytes().as_slice(),
        )?;
        Ok(())
    }

    fn drop_issued_before(&self, period: u64) -> Result<usize, StoreError> {
        drop_below(&self.db, &self.issued, period)
    }

    fn spend_token(&self, key_id: u64, input_hash: &[u8; 32]) -> Result<bool, StoreError> {
        let mut key = [0u8; 40];
        key[..8].copy_from_slice(&key_id.to_be_bytes());
        key[8..].copy_from_slice(input_hash);
        let _tokens = lock(&self.tokens);
        if self.spent.contains_key(key)? {
            return Ok(false);
        }
        self.spent.insert(key.as_slice(), [].as_slice())?;
        Ok(true)
    }

    fn drop_spent_before(&self, key_id: u64) -> Result<usize, StoreError> {
        drop_below(&self.db, &self.spent, key_id)
    }
}
