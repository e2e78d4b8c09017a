//! An in-memory backend: the same contract as sled, nothing on disk. Used by
//! tests, fuzzing and benchmarks of the protocol path without storage costs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use sotto_proto::{Blob, MailboxId, SlotId};

use super::accounting::Accounting;
use super::{FetchPage, FetchRange, Seq, SlotRecord, Storage, StoreError, StoredBlob, Usage};

#[derive(Default)]
struct Inner {
    next_seq: Seq,
    blobs: BTreeMap<(MailboxId, Seq), (u64, Blob)>,
    expiry: BTreeSet<(u64, MailboxId, Seq)>,
    slots: HashMap<SlotId, SlotRecord>,
}

/// Volatile storage.
#[derive(Default)]
pub struct MemoryStorage {
    inner: Mutex<Inner>,
    accounting: Accounting,
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
    fn append(&self, mailbox: &MailboxId, blob: &Blob, expires_at: u64) -> Result<Seq, StoreError> {
        let mut inner = self.lock();
        inner.next_seq += 1;
        let seq = inner.next_seq;
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

    fn slot_get(&self, id: &SlotId) -> Result<Option<SlotRecord>, StoreError> {
        Ok(self.lock().slots.get(id).cloned())
    }

    fn slot_put(&self, id: &SlotId, record: &SlotRecord) -> Result<(), StoreError> {
        let old = self.lock().slots.insert(*id, record.clone());
        self.accounting
            .slot_replaced(old.map_or(0, |r| r.value.len()), record.value.len());
        Ok(())
    }

    fn seq_at_open(&self) -> Seq {
        // Nothing of a memory store outlives the process: all it holds is
        // as durable as it will ever be.
        self.lock().next_seq
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
