//! Subscriptions: who is waiting for new blobs in which mailbox.
//!
//! The hub carries *wake-ups*, not blobs. A put that became durable wakes
//! every subscriber of its mailbox; each subscription's pusher then reads the
//! mailbox from storage after its own cursor, up to the durable watermark.
//! Reading from storage keeps pushes in seq (FIFO) order with no race
//! between catch-up and live delivery, and a slow reader costs no memory:
//! its pusher just falls behind and catches up from disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sotto_proto::MailboxId;
use tokio::sync::Notify;

/// A subscription's wake-up signal.
pub(crate) type Wake = Arc<Notify>;

/// Subscriptions by mailbox.
#[derive(Default)]
pub(crate) struct Hub {
    mailboxes: Mutex<HashMap<MailboxId, Vec<(u64, Wake)>>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Removes its subscription from the hub when dropped.
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    mailbox: MailboxId,
    id: u64,
    wake: Wake,
}

impl Subscription {
    /// Resolves when the mailbox may have new durable blobs. A wake-up that
    /// arrives while nobody waits is kept, so none is lost.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut mailboxes = self.hub.lock();
        if let Some(subs) = mailboxes.get_mut(&self.mailbox) {
            subs.retain(|(id, _)| *id != self.id);
            if subs.is_empty() {
                mailboxes.remove(&self.mailbox);
            }
        }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MailboxId, Vec<(u64, Wake)>>> {
        // Updates are single pushes/retains; a poisoned map is still whole.
        self.mailboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers interest in `mailbox`.
    pub(crate) fn subscribe(self: &Arc<Self>, mailbox: MailboxId) -> Subscription {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wake = Wake::default();
        self.lock()
            .entry(mailbox)
            .or_default()
            .push((id, wake.clone()));
        Subscription {
            hub: self.clone(),
            mailbox,
            id,
            wake,
        }
    }

    /// Wakes every subscriber of `mailbox`.
    pub(crate) fn notify(&self, mailbox: &MailboxId) {
        if let Some(subs) = self.lock().get(mailbox) {
            for (_, wake) in subs {
                wake.notify_one();
            }
        }
    }

    /// Number of live subscriptions (for stats).
    pub(crate) fn subscription_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}
