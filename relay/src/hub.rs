//! Subscriptions: who is waiting for new blobs in which mailbox, and the
//! blobs appended to it since.
//!
//! Every append is recorded here inside the append critical section, so in
//! seq order, and each subscription of its mailbox queues a copy of the
//! blob. A put that became durable then wakes the subscribers, whose pushers
//! take the queued blobs up to the durable watermark: live delivery costs no
//! storage read.
//!
//! Storage stays the source of truth. A subscription's queue holds exactly
//! the appends to its mailbox with a seq above its *floor*, in seq order; the
//! pusher reads storage (catch-up) until one complete read reached a durable
//! watermark at or above the floor, and only then uses the queue, skipping
//! what that read already covered. The queue is bounded: on overflow it is
//! emptied and its floor raised to the newest seq, which sends the pusher
//! back to storage. So FIFO per mailbox holds, a slow reader costs at most
//! one bounded queue, and nothing above the watermark is ever pushed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use sotto_proto::{Blob, MailboxId};
use tokio::sync::Notify;

use crate::storage::Seq;

/// Most blobs a subscription queues before it falls back to storage.
const QUEUE_BLOBS: usize = 64;
/// Most blob bytes a subscription queues (one blob is always accepted).
const QUEUE_BYTES: usize = 128 * 1024;

/// Appends a pusher has not taken yet.
#[derive(Default)]
struct Queue {
    /// Every append to the mailbox with a seq above this is in `blobs`.
    floor: Seq,
    blobs: VecDeque<(Seq, Bytes)>,
    bytes: usize,
}

/// One subscription's wake-up signal and queue.
struct Live {
    wake: Notify,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Inner {
    mailboxes: HashMap<MailboxId, Vec<(u64, Arc<Live>)>>,
    /// The newest seq recorded (0 before the first append since start).
    last_seq: Seq,
}

/// Subscriptions by mailbox.
#[derive(Default)]
pub(crate) struct Hub {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
}

/// Removes its subscription from the hub when dropped.
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    mailbox: MailboxId,
    id: u64,
    live: Arc<Live>,
}

impl Subscription {
    /// Resolves when the mailbox may have new durable blobs. A wake-up that
    /// arrives while nobody waits is kept, so none is lost.
    pub(crate) async fn woken(&self) {
        self.live.wake.notified().await;
    }

    /// Queued blobs to push, or `None` if the pusher must read storage first
    /// because its last complete storage read (`read_to`, the watermark it
    /// read at) does not reach the queue's floor. Drops queued blobs at or
    /// below `skip` (already pushed or covered by storage) and returns those
    /// at or below `durable`, in seq order.
    pub(crate) fn take(&self, read_to: Seq, skip: Seq, durable: Seq) -> Option<Vec<(Seq, Bytes)>> {
        let mut queue = lock(&self.live.queue);
        if queue.floor > read_to {
            return None;
        }
        let mut taken = Vec::new();
        while let Some((seq, blob)) = queue.blobs.front() {
            if *seq > durable && *seq > skip {
                break;
            }
            let (seq, blob) = (*seq, blob.clone());
            queue.blobs.pop_front();
            queue.bytes -= blob.len();
            if seq > skip {
                taken.push((seq, blob));
            }
        }
        Some(taken)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        if let Some(subs) = inner.mailboxes.get_mut(&self.mailbox) {
            subs.retain(|(id, _)| *id != self.id);
            if subs.is_empty() {
                inner.mailboxes.remove(&self.mailbox);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Updates are single pushes/pops/retains; a poisoned lock is still whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Registers interest in `mailbox`. Appends recorded from now on are
    /// queued for it; older ones must come from storage.
    pub(crate) fn subscribe(self: &Arc<Self>, mailbox: MailboxId) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        let live = Arc::new(Live {
            wake: Notify::new(),
            queue: Mutex::new(Queue {
                floor: inner.last_seq,
                ..Queue::default()
            }),
        });
        inner
            .mailboxes
            .entry(mailbox)
            .or_default()
            .push((id, live.clone()));
        drop(inner);
        Subscription {
            hub: self.clone(),
            mailbox,
            id,
            live,
        }
    }

    /// Records an append (not yet durable). Must be called in seq order, in
    /// the append critical section, after the watermark was closed for it.
    pub(crate) fn appended(&self, mailbox: &MailboxId, seq: Seq, blob: &Blob) {
        let mut inner = self.lock();
        inner.last_seq = seq;
        let Some(subs) = inner.mailboxes.get(mailbox) else {
            return;
        };
        // A copy, so a queued blob never pins the connection's read buffer.
        let bytes = Bytes::copy_from_slice(blob.as_bytes());
        for (_, live) in subs {
            let mut queue = lock(&live.queue);
            if queue.blobs.len() >= QUEUE_BLOBS
                || (!queue.blobs.is_empty() && queue.bytes + bytes.len() > QUEUE_BYTES)
            {
                // The pusher is behind: it resumes from storage up to here.
                queue.blobs.clear();
                queue.bytes = 0;
                queue.floor = seq;
                continue;
            }
            queue.bytes += bytes.len();
            queue.blobs.push_back((seq, bytes.clone()));
        }
    }

    /// The newest seq recorded since start (0 if none).
    pub(crate) fn last_seq(&self) -> Seq {
        self.lock().last_seq
    }

    /// Wakes every subscriber of `mailbox`.
    pub(crate) fn notify(&self, mailbox: &MailboxId) {
        if let Some(subs) = self.lock().mailboxes.get(mailbox) {
            for (_, live) in subs {
                live.wake.notify_one();
            }
        }
    }

    /// Number of live subscriptions (for stats).
    pub(crate) fn subscription_count(&self) -> usize {
        self.lock().mailboxes.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(fill: u8) -> Blob {
        Blob::new(Bytes::from(vec![fill; 1024])).unwrap()
    }

    fn seqs(taken: Option<Vec<(Seq, Bytes)>>) -> Option<Vec<Seq>> {
        taken.map(|blobs| blobs.into_iter().map(|(seq, _)| seq).collect())
    }

    #[test]
    fn the_queue_holds_appends_in_order_up_to_the_watermark() {
        let hub = Arc::new(Hub::default());
        let mine = MailboxId::from_bytes([1; 32]);
        let other = MailboxId::from_bytes([2; 32]);
        hub.appended(&mine, 1, &blob(1));
        let sub = hub.subscribe(mine);
        // Seq 1 predates the subscription: storage must be read past it.
        assert_eq!(seqs(sub.take(0, 0, 10)), None);
        hub.appended(&mine, 2, &blob(2));
        hub.appended(&other, 3, &blob(3));
        hub.appended(&mine, 4, &blob(4));
        hub.appended(&mine, 5, &blob(5));
        // Not above the watermark (4), and not what storage covered (2).
        assert_eq!(seqs(sub.take(2, 2, 4)), Some(vec![4]));
        assert_eq!(seqs(sub.take(2, 4, 4)), Some(vec![]));
        assert_eq!(seqs(sub.take(2, 4, 5)), Some(vec![5]));
    }

    #[test]
    fn an_overflowing_queue_sends_the_pusher_back_to_storage() {
        let hub = Arc::new(Hub::default());
        let mailbox = MailboxId::from_bytes([1; 32]);
        let sub = hub.subscribe(mailbox);
        let last = QUEUE_BLOBS as Seq + 1;
        for seq in 1..=last {
            hub.appended(&mailbox, seq, &blob(0));
        }
        assert_eq!(seqs(sub.take(0, 0, last)), None, "floor raised to {last}");
        assert_eq!(seqs(sub.take(last, last, last)), Some(vec![]));
        hub.appended(&mailbox, last + 1, &blob(0));
        assert_eq!(seqs(sub.take(last, last, last + 1)), Some(vec![last + 1]));
    }
}
