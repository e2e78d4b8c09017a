//! Subscriptions: who is waiting for new blobs in which mailbox, and the
//! blobs appended to it since.
//!
//! Every append is recorded here inside the append critical section, so in
//! stamp order (`commit`), and each subscription of its mailbox queues a
//! copy of the blob with its stamp and ID. A put that became durable then
//! wakes the subscribers, whose pushers take the queued blobs up to the
//! durable watermark: live delivery costs no storage read.
//!
//! Storage stays the source of truth. A subscription's queue holds exactly
//! the appends to its mailbox with a stamp above its *floor*, in order; the
//! pusher reads storage (catch-up) until one complete read reached a durable
//! watermark at or above the floor, and only then uses the queue, skipping
//! what that read already covered and what it already pushed. The queue is
//! bounded: on overflow it is emptied and its floor raised to the newest
//! stamp, which sends the pusher back to storage. So FIFO per mailbox
//! holds, a slow reader costs at most one bounded queue, and nothing above
//! the watermark is ever pushed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use sotto_proto::{Blob, MailboxId};
use tokio::sync::Notify;

use crate::commit::Stamp;
use crate::storage::Seq;

/// Most blobs a subscription queues before it falls back to storage.
const QUEUE_BLOBS: usize = 64;
/// Most blob bytes a subscription queues (one blob is always accepted).
const QUEUE_BYTES: usize = 128 * 1024;
/// Queue slots an empty queue may keep allocated. A queue that once held a
/// burst would otherwise keep room for [`QUEUE_BLOBS`] entries (48 bytes
/// each, 3 KiB) for as long as its connection stays idle.
const IDLE_QUEUE_SLOTS: usize = 8;

/// Appends a pusher has not taken yet.
#[derive(Default)]
struct Queue {
    /// Every append to the mailbox with a stamp above this is in `blobs`.
    floor: Stamp,
    blobs: VecDeque<(Stamp, Seq, Bytes)>,
    bytes: usize,
}

impl Queue {
    /// An empty queue gives back the room a burst made it grow to.
    fn let_go_if_idle(&mut self) {
        if self.blobs.is_empty() && self.blobs.capacity() > IDLE_QUEUE_SLOTS {
            self.blobs = VecDeque::new();
        }
    }
}

/// One subscription's wake-up signal and queue.
struct Live {
    wake: Notify,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Inner {
    mailboxes: HashMap<MailboxId, Vec<(u64, Arc<Live>)>>,
    /// The newest stamp recorded (0 before the first append since start).
    last_stamp: Stamp,
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
    /// read at) does not reach the queue's floor. Drops queued blobs that
    /// read covered (stamp at or below `read_to`) or that were pushed (ID
    /// at or below `after`) and returns the others with a stamp at or below
    /// `durable`, in order.
    pub(crate) fn take(
        &self,
        read_to: Stamp,
        after: Seq,
        durable: Stamp,
    ) -> Option<Vec<(Seq, Bytes)>> {
        let mut queue = lock(&self.live.queue);
        if queue.floor > read_to {
            return None;
        }
        let mut taken = Vec::new();
        while let Some((stamp, seq, blob)) = queue.blobs.front() {
            let skip = *stamp <= read_to || *seq <= after;
            if !skip && *stamp > durable {
                break;
            }
            let (seq, blob) = (*seq, blob.clone());
            queue.blobs.pop_front();
            queue.bytes -= blob.len();
            if !skip {
                taken.push((seq, blob));
            }
        }
        queue.let_go_if_idle();
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
                floor: inner.last_stamp,
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

    /// Records an append (not yet durable). Must be called in stamp order,
    /// in the append critical section, after the watermark was closed for it.
    pub(crate) fn appended(&self, mailbox: &MailboxId, stamp: Stamp, seq: Seq, blob: &Blob) {
        let mut inner = self.lock();
        inner.last_stamp = stamp;
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
                queue.let_go_if_idle();
                queue.bytes = 0;
                queue.floor = stamp;
                continue;
            }
            queue.bytes += bytes.len();
            queue.blobs.push_back((stamp, seq, bytes.clone()));
        }
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
        // (stamp, ID): IDs are per mailbox, stamps relay-wide.
        hub.appended(&mine, 1, 100, &blob(1));
        let sub = hub.subscribe(mine);
        // Stamp 1 predates the subscription: storage must be read past it.
        assert_eq!(seqs(sub.take(0, 0, 10)), None);
        hub.appended(&mine, 2, 101, &blob(2));
        hub.appended(&other, 3, 100, &blob(3));
        hub.appended(&mine, 4, 102, &blob(4));
        hub.appended(&mine, 5, 103, &blob(5));
        // Not above the watermark (4), and not what storage covered (2).
        assert_eq!(seqs(sub.take(2, 101, 4)), Some(vec![102]));
        assert_eq!(seqs(sub.take(2, 102, 4)), Some(vec![]));
        assert_eq!(seqs(sub.take(2, 102, 5)), Some(vec![103]));
    }

    #[test]
    fn already_pushed_ids_are_skipped_even_above_the_read_watermark() {
        let hub = Arc::new(Hub::default());
        let mine = MailboxId::from_bytes([1; 32]);
        let sub = hub.subscribe(mine);
        hub.appended(&mine, 1, 100, &blob(1));
        hub.appended(&mine, 2, 101, &blob(2));
        // A storage read at watermark 0 pushed up to ID 100 (durable by
        // then); the queue must not push it again.
        assert_eq!(seqs(sub.take(0, 100, 2)), Some(vec![101]));
    }

    #[test]
    fn a_drained_queue_lets_go_of_the_room_a_burst_made() {
        let hub = Arc::new(Hub::default());
        let mailbox = MailboxId::from_bytes([1; 32]);
        let sub = hub.subscribe(mailbox);
        let burst = QUEUE_BLOBS as Stamp;
        for stamp in 1..=burst {
            hub.appended(&mailbox, stamp, stamp, &blob(0));
        }
        assert!(lock(&sub.live.queue).blobs.capacity() >= QUEUE_BLOBS);
        let taken = seqs(sub.take(0, 0, burst)).unwrap();
        assert_eq!(taken.len(), QUEUE_BLOBS);
        assert!(lock(&sub.live.queue).blobs.capacity() <= IDLE_QUEUE_SLOTS);
        // An overflow empties the queue, and lets go the same way.
        let overflow = 2 * burst + 1;
        for stamp in burst + 1..=overflow {
            hub.appended(&mailbox, stamp, stamp, &blob(0));
        }
        assert!(lock(&sub.live.queue).blobs.is_empty());
        assert!(lock(&sub.live.queue).blobs.capacity() <= IDLE_QUEUE_SLOTS);
        // Still a working queue afterwards.
        hub.appended(&mailbox, overflow + 1, overflow + 1, &blob(0));
        assert_eq!(
            seqs(sub.take(overflow, overflow, overflow + 1)),
            Some(vec![overflow + 1])
        );
    }

    #[test]
    fn an_overflowing_queue_sends_the_pusher_back_to_storage() {
        let hub = Arc::new(Hub::default());
        let mailbox = MailboxId::from_bytes([1; 32]);
        let sub = hub.subscribe(mailbox);
        let last = QUEUE_BLOBS as Stamp + 1;
        for stamp in 1..=last {
            hub.appended(&mailbox, stamp, 1_000 + stamp, &blob(0));
        }
        assert_eq!(seqs(sub.take(0, 0, last)), None, "floor raised to {last}");
        assert_eq!(seqs(sub.take(last, 1_000 + last, last)), Some(vec![]));
        hub.appended(&mailbox, last + 1, 1_001 + last, &blob(0));
        assert_eq!(
            seqs(sub.take(last, 1_000 + last, last + 1)),
            Some(vec![1_001 + last])
        );
    }
}
