//! An in-memory backend: the same contract as sled, nothing on disk. Used by
//! tests, fuzzing and benchmarks of the protocol path without storage costs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use sotto_proto::{Blob, MailboxId, SlotId};

use super::accounting::Accounting;
use super::ids::BlobIds;
use super::{
    Account, FetchPage, FetchRange, IssuerState, Registration, Seq, SlotRecord, Storage,
    StoreError, StoredBlob, Usage,
};

#[derive(Default)]
struct Inner {
    blobs: BTreeMap<(MailboxId, Seq), (u64, Blob)>,
    expiry: BTreeSet<(u64, MailboxId, Seq)>,
    slots: HashMap<SlotId, SlotRecord>,
    issuer: Option<IssuerState>,
    registrations: HashMap<[u8; 32], Registration>,
    accounts: HashMap<[u8; 32], Account>,
    revocations: HashMap<[u8; 32], [u8; 32]>,
    issued: BTreeMap<(u64, [u8; 32]), u32>,
    spent: BTreeSet<(u64, [u8; 32])>,
}

/// Volatile storage.
#[derive(Default)]
pub struct MemoryStorage {
    inner: Mutex<Inner>,
    accounting: Accounting,
    ids: BlobIds,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every mutation below completes or leaves the maps untouched.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remove_blob(&self, inner: &mut Inner, mailbox: &MailboxId, seq: Seq) -> bool {
        match inner.blobs.remove(&(*mailbox, seq)) {
            Some((expires_at, blob)) => {
                inner.expiry.remove(&(expires_at, *mailbox, seq));
                self.accounting.removed(mailbox, blob.len());
                true
            }
            None => false,
        }
    }
}

impl Storage for MemoryStorage {
    fn append(
        &self,
        mailbox: &MailboxId,
        blob: &Blob,
        now: u64,
        expires_at: u64,
    ) -> Result<Seq, StoreError> {
        let mut inner = self.lock();
        let seq = self.ids.next(mailbox, now);
        inner.expiry.insert((expires_at, *mailbox, seq));
        inner
            .blobs
            .insert((*mailbox, seq), (expires_at, blob.clone()));
        self.accounting.added(mailbox, blob.len());
        Ok(seq)
    }

    fn fetch(&self, mailbox: &MailboxId, range: FetchRange) -> Result<FetchPage, StoreError> {
        let inner = self.lock();
        let mut page = FetchPage::default();
        if range.after >= range.upto || range.limit == 0 {
            return Ok(page);
        }
        let mut bytes = 0usize;
        for ((_, seq), (_, blob)) in inner
            .blobs
            .range((*mailbox, range.after + 1)..=(*mailbox, range.upto))
        {
            if page.blobs.len() >= range.limit
                || (!page.blobs.is_empty() && bytes + blob.len() > range.max_bytes)
            {
                page.more = true;
                break;
            }
            bytes += blob.len();
            page.blobs.push(StoredBlob {
                seq: *seq,
                blob: blob.clone(),
            });
        }
        Ok(page)
    }

    fn delete(&self, mailbox: &MailboxId, seqs: &[Seq]) -> Result<u32, StoreError> {
        let mut inner = self.lock();
        let mut deleted = 0;
        for &seq in seqs {
            if self.remove_blob(&mut inner, mailbox, seq) {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let due: Vec<(u64, MailboxId, Seq)> = inner
            .expiry
            .iter()
            .take_while(|(expires_at, _, _)| *expires_at <= now)
            .take(limit)
            .copied()
            .collect();
        let mut purged = 0;
        for (_, mailbox, seq) in due {
            if self.remove_blob(&mut inner, &mailbox, seq) {
                purged += 1;
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

    fn blob_count(&self) -> Option<u64> {
        Some(self.accounting.blob_count())
    }

    fn slot_get(&self, id: &SlotId) -> Result<Option<SlotRecord>, StoreError> {
        Ok(self.lock().slots.get(id).cloned())
    }

    fn slot_put(&self, id: &SlotId, record: &SlotRecord) -> Result<(), StoreError> {
        let old = self.lock().slots.insert(*id, record.clone());
        self.accounting
            .slot_replaced(old.map_or(0, |r| r.value.len()), record.value.len());
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn issuer_state(&self) -> Result<Option<IssuerState>, StoreError> {
        Ok(self.lock().issuer.clone())
    }

    fn set_issuer_state(&self, state: &IssuerState) -> Result<(), StoreError> {
        self.lock().issuer = Some(state.clone());
        Ok(())
    }

    fn put_registrations(&self, tokens: &[([u8; 32], u64)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for (hash, expires_at) in tokens {
            inner.registrations.insert(
                *hash,
                Registration {
                    expires_at: *expires_at,
                    account: None,
                },
            );
        }
        Ok(())
    }

    fn drop_unused_registrations(&self, now: u64) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let before = inner.registrations.len();
        inner
            .registrations
            .retain(|_, r| r.account.is_some() || r.expires_at > now);
        Ok(before - inner.registrations.len())
    }

    fn registration(&self, hash: &[u8; 32]) -> Result<Option<Registration>, StoreError> {
        Ok(self.lock().registrations.get(hash).cloned())
    }

    fn register_account(
        &self,
        hash: &[u8; 32],
        account_key: &[u8; 32],
        revocation: Option<&[u8; 32]>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let Some(registration) = inner.registrations.get_mut(hash) else {
            return Err(StoreError::Corrupt {
                tree: "registrations",
                what: "registering with an unknown token".into(),
            });
        };
        registration.account = Some(*account_key);
        inner
            .accounts
            .insert(*account_key, Account::new(*hash, revocation.copied()));
        if let Some(revocation) = revocation {
            inner.revocations.insert(*revocation, *account_key);
        }
        Ok(())
    }

    fn account_by_revocation(&self, hash: &[u8; 32]) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self.lock().revocations.get(hash).copied())
    }

    fn set_device_registrations(
        &self,
        account_key: &[u8; 32],
        count: u32,
    ) -> Result<(), StoreError> {
        if let Some(account) = self.lock().accounts.get_mut(account_key) {
            account.device_registrations = count;
        }
        Ok(())
    }

    fn account(&self, account_key: &[u8; 32]) -> Result<Option<Account>, StoreError> {
        Ok(self.lock().accounts.get(account_key).cloned())
    }

    fn revoke_account(&self, account_key: &[u8; 32]) -> Result<(), StoreError> {
        if let Some(account) = self.lock().accounts.get_mut(account_key) {
            account.revoked = true;
        }
        Ok(())
    }

    fn issued(&self, account_key: &[u8; 32], period: u64) -> Result<u32, StoreError> {
        Ok(self
            .lock()
            .issued
            .get(&(period, *account_key))
            .copied()
            .unwrap_or(0))
    }

    fn set_issued(
        &self,
        account_key: &[u8; 32],
        period: u64,
        count: u32,
    ) -> Result<(), StoreError> {
        self.lock().issued.insert((period, *account_key), count);
        Ok(())
    }

    fn drop_issued_before(&self, period: u64) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let keep = inner.issued.split_off(&(period, [0; 32]));
        let dropped = std::mem::replace(&mut inner.issued, keep).len();
        Ok(dropped)
    }

    fn spend_token(&self, key_id: u64, input_hash: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.lock().spent.insert((key_id, *input_hash)))
    }

    fn drop_spent_before(&self, key_id: u64) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let keep = inner.spent.split_off(&(key_id, [0; 32]));
        let dropped = std::mem::replace(&mut inner.spent, keep).len();
        Ok(dropped)
    }
}
