//! The default backend: an embedded sled database in the relay's data dir.
//!
//! Trees and key layouts (all integers big-endian, so byte order is numeric
//! order and range scans are cheap):
//!
//! | tree     | key                                | value                          |
//! |----------|------------------------------------|--------------------------------|
//! | `blobs`  | mailbox(32) ‖ seq(8)               | expires_at(8) ‖ blob           |
//! | `expiry` | expires_at(8) ‖ mailbox(32) ‖ seq(8) | empty                        |
//! | `slots`  | slot_id(32)                        | version(8) ‖ owner(32) ‖ value |
//! | `issuer` | `b"state"`                         | seed(32) ‖ generation(4) ‖ [admin_key(32)] |
//! | `registrations` | token_hash(32)              | expires_at(8) ‖ [account_key(32)] |
//! | `accounts` | account_key(32)                  | token_hash(32) ‖ revoked(1)    |
//! | `issued` | period(8) ‖ account_key(32)        | count(4)                       |
//! | `spent`  | key_id(8) ‖ SHA-256(input)(32)     | empty                          |
//!
//! The token trees hold nothing that links issuance to redemption: counts
//! are per period, spent tokens carry no time and no connection data, and
//! a registration's expiry is rounded up to the token period.
//!
//! Nothing else is stored: no token, connection or address next to a blob
//! (DESIGN §2), and expiry times arrive already rounded to the minute.
//!
//! An append writes the expiry entry before the blob, so a crash between the
//! two leaves at worst an index entry without a blob (harmless to the purge),
//! never a blob that would outlive its TTL.

use std::path::Path;

use bytes::Bytes;
use sotto_proto::{Blob, MailboxId, SlotId};

use super::accounting::Accounting;
use super::{
    Account, FetchPage, FetchRange, IssuerState, Registration, Seq, SlotRecord, Storage,
    StoreError, StoredBlob, Usage,
};

const BLOB_KEY_LEN: usize = 32 + 8;
const EXPIRY_KEY_LEN: usize = 8 + 32 + 8;

/// sled-backed storage.
pub struct SledStorage {
    db: sled::Db,
    blobs: sled::Tree,
    expiry: sled::Tree,
    slots: sled::Tree,
    accounting: Accounting,
    tokens: TokenTrees,
}

/// The anonymous-access trees (see the module table).
struct TokenTrees {
    issuer: sled::Tree,
    registrations: sled::Tree,
    accounts: sled::Tree,
    issued: sled::Tree,
    spent: sled::Tree,
}

impl TokenTrees {
    fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            issuer: db.open_tree("issuer")?,
            registrations: db.open_tree("registrations")?,
            accounts: db.open_tree("accounts")?,
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

fn parse_issuer(value: &[u8]) -> Result<IssuerState, StoreError> {
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

fn parse_registration(value: &[u8]) -> Result<Registration, StoreError> {
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

fn registration_value(registration: &Registration) -> Vec<u8> {
    let mut value = registration.expires_at.to_be_bytes().to_vec();
    if let Some(account) = &registration.account {
        value.extend_from_slice(account);
    }
    value
}

fn parse_account(value: &[u8]) -> Result<Account, StoreError> {
    if value.len() != 33 {
        return Err(corrupt(
            "accounts",
            format!("value of {} bytes", value.len()),
        ));
    }
    Ok(Account {
        registration: key32(value, "accounts")?,
        revoked: value[32] != 0,
    })
}

fn account_value(account: &Account) -> Vec<u8> {
    let mut value = account.registration.to_vec();
    value.push(u8::from(account.revoked));
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

/// Splits a stored blob value into its expiry and the blob.
fn parse_blob_value(value: &[u8]) -> Result<(u64, Blob), StoreError> {
    let expires_at =
        be64(value).ok_or_else(|| corrupt("blobs", "value shorter than its header"))?;
    let blob = Blob::new(Bytes::copy_from_slice(&value[8..]))
        .map_err(|e| corrupt("blobs", e.to_string()))?;
    Ok((expires_at, blob))
}

fn parse_slot(value: &[u8]) -> Result<SlotRecord, StoreError> {
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

impl SledStorage {
    /// Opens (or creates) the database in `dir` and rebuilds the usage
    /// counters from what is stored.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            // Durability comes from the relay's own group-committed flushes;
            // sled's periodic background flush only adds fsyncs.
            .flush_every_ms(None)
            .open()?;
        let blobs = db.open_tree("blobs")?;
        let expiry = db.open_tree("expiry")?;
        let slots = db.open_tree("slots")?;
        let tokens = TokenTrees::open(&db)?;
        let accounting = Accounting::default();
        for entry in blobs.iter() {
            let (key, value) = entry?;
            let (mailbox, _) = parse_blob_key(&key)?;
            accounting.added(&mailbox, value.len().saturating_sub(8));
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
            tokens,
        })
    }

    /// Bytes the database occupies on disk (for the audit and the stats log).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Removes one blob and its expiry entry; returns whether it existed.
    fn remove_blob(&self, mailbox: &MailboxId, seq: Seq) -> Result<bool, StoreError> {
        let Some(value) = self.blobs.remove(blob_key(mailbox, seq))? else {
            return Ok(false);
        };
        if let Some(expires_at) = be64(&value) {
            self.expiry.remove(expiry_key(expires_at, mailbox, seq))?;
        }
        self.accounting
            .removed(mailbox, value.len().saturating_sub(8));
        Ok(true)
    }
}

impl Storage for SledStorage {
    fn append(&self, mailbox: &MailboxId, blob: &Blob, expires_at: u64) -> Result<Seq, StoreError> {
        // generate_id is persistent and monotonic across restarts (after a
        // crash it skips ahead), so seqs are never reused and cursors held by
        // clients stay valid. It starts at 0; seq 0 is reserved for "before
        // everything" (the initial cursor), hence the + 1.
        let seq = self.db.generate_id()? + 1;
        self.expiry
            .insert(expiry_key(expires_at, mailbox, seq), &[])?;
        let mut value = Vec::with_capacity(8 + blob.len());
        value.extend_from_slice(&expires_at.to_be_bytes());
        value.extend_from_slice(blob.as_bytes());
        self.blobs.insert(blob_key(mailbox, seq), value)?;
        self.accounting.added(mailbox, blob.len());
        Ok(seq)
    }

    fn fetch(&self, mailbox: &MailboxId, range: FetchRange) -> Result<FetchPage, StoreError> {
        let mut page = FetchPage::default();
        if range.after >= range.upto || range.limit == 0 {
            return Ok(page);
        }
        let start = blob_key(mailbox, range.after.saturating_add(1));
        let end = blob_key(mailbox, range.upto);
        let mut bytes = 0usize;
        for entry in self.blobs.range(start..=end) {
            let (key, value) = entry?;
            let (_, seq) = parse_blob_key(&key)?;
            let len = value.len().saturating_sub(8);
            if page.blobs.len() >= range.limit
                || (!page.blobs.is_empty() && bytes + len > range.max_bytes)
            {
                page.more = true;
                break;
            }
            let (_, blob) = parse_blob_value(&value)?;
            bytes += len;
            page.blobs.push(StoredBlob { seq, blob });
        }
        Ok(page)
    }

    fn delete(&self, mailbox: &MailboxId, seqs: &[Seq]) -> Result<u32, StoreError> {
        let mut deleted = 0;
        for &seq in seqs {
            if self.remove_blob(mailbox, seq)? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let mut purged = 0;
        let end = (now.saturating_add(1)).to_be_bytes();
        for entry in self.expiry.range(..end.as_slice()).take(limit) {
            let (key, _) = entry?;
            if key.len() != EXPIRY_KEY_LEN {
                return Err(corrupt("expiry", format!("key of {} bytes", key.len())));
            }
            let mailbox =
                MailboxId::from_slice(&key[8..40]).map_err(|e| corrupt("expiry", e.to_string()))?;
            let seq = be64(&key[40..]).ok_or_else(|| corrupt("expiry", "short key"))?;
            if self.remove_blob(&mailbox, seq)? {
                purged += 1;
            } else {
                // An index entry whose blob was acked or never written.
                self.expiry.remove(&key)?;
            }
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
        self.db.flush()?;
        Ok(())
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

    fn registration(&self, hash: &[u8; 32]) -> Result<Option<Registration>, StoreError> {
        self.tokens
            .registrations
            .get(hash)?
            .map(|value| parse_registration(&value))
            .transpose()
    }

    fn register_account(&self, hash: &[u8; 32], account_key: &[u8; 32]) -> Result<(), StoreError> {
        use sled::Transactional;
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        let account = account_value(&Account {
            registration: *hash,
            revoked: false,
        });
        (&self.tokens.registrations, &self.tokens.accounts)
            .transaction(|(registrations, accounts)| {
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
