//! Usage accounting shared by the backends: per-mailbox counts and bytes and
//! the relay-wide total, kept in memory and derived from the stored data at
//! open, so it can never disagree with what is on disk after a crash.

use std::collections::HashMap;
use std::sync::Mutex;

use sotto_proto::MailboxId;

/// Blobs and bytes in one mailbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Number of blobs.
    pub count: u64,
    /// Sum of blob sizes.
    pub bytes: u64,
}

#[derive(Default)]
struct Inner {
    mailboxes: HashMap<MailboxId, Usage>,
    blob_bytes: u64,
    slot_bytes: u64,
}

/// In-memory usage counters.
#[derive(Default)]
pub(super) struct Accounting {
    inner: Mutex<Inner>,
}

impl Accounting {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the counters torn
        // (every update is a few integer ops), so poisoning is ignored.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn added(&self, mailbox: &MailboxId, len: usize) {
        let mut inner = self.lock();
        let usage = inner.mailboxes.entry(*mailbox).or_default();
        usage.count += 1;
        usage.bytes += len as u64;
        inner.blob_bytes += len as u64;
    }

    pub(super) fn removed(&self, mailbox: &MailboxId, len: usize) {
        let mut inner = self.lock();
        if let Some(usage) = inner.mailboxes.get_mut(mailbox) {
            usage.count = usage.count.saturating_sub(1);
            usage.bytes = usage.bytes.saturating_sub(len as u64);
            if usage.count == 0 {
                inner.mailboxes.remove(mailbox);
            }
        }
        inner.blob_bytes = inner.blob_bytes.saturating_sub(len as u64);
    }

    pub(super) fn slot_replaced(&self, old_len: usize, new_len: usize) {
        let mut inner = self.lock();
        inner.slot_bytes = inner.slot_bytes.saturating_sub(old_len as u64) + new_len as u64;
    }

    pub(super) fn usage(&self, mailbox: &MailboxId) -> Usage {
        self.lock()
            .mailboxes
            .get(mailbox)
            .copied()
            .unwrap_or_default()
    }

    pub(super) fn total_bytes(&self) -> u64 {
        let inner = self.lock();
        inner.blob_bytes + inner.slot_bytes
    }

    pub(super) fn mailbox_count(&self) -> usize {
        self.lock().mailboxes.len()
    }

    /// Blobs stored in all mailboxes (a sum over mailboxes: for metrics,
    /// not for a hot path).
    pub(super) fn blob_count(&self) -> u64 {
        self.lock()
            .mailboxes
            .values()
            .map(|usage| usage.count)
            .sum()
    }
}
