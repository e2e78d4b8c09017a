//! Group commit: many concurrent writers share one fsync.
//!
//! sled does not fsync on insert, so a put is acknowledged only after a
//! flush that started *after* its insert finished. Writers take a ticket
//! after mutating; a dedicated flusher thread repeatedly snapshots the newest
//! ticket, flushes once, and releases every writer up to that ticket. Under
//! load one fsync serves every put that arrived while the previous one ran.
//!
//! Appends are serialised here (one short critical section around the
//! backend's insert), and each gets a *stamp*: a counter of this process's
//! appends, kept in memory only (blob IDs are per mailbox and say nothing
//! about the order across mailboxes, so they cannot serve as a watermark).
//! The *durable watermark* — the highest stamp covered by a finished flush —
//! is a prefix of the appends. For each mailbox the relay reads up to its
//! *durable bound*: the ID before its oldest append above the watermark.
//! Fetch and subscription pushes never return a blob above it, so a client
//! never sees a blob that a crash could take back. Whatever the backend
//! held at open was read back from disk, so it is durable.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use sotto_proto::MailboxId;
use tokio::sync::watch;

use crate::metrics::LatencyHistogram;
use crate::storage::{Seq, Storage};

/// An append's place in this process's order of appends (never stored).
pub(crate) type Stamp = u64;

/// The flush covering a write failed; the write may not be durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage flush failed: {0}")]
pub(crate) struct FlushError(String);

#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// Every ticket up to this one has been covered by a finished flush.
    done: u64,
    /// The newest ticket covered by a flush that failed.
    failed_upto: u64,
}

#[derive(Default)]
struct Tickets {
    requested: u64,
    shutdown: bool,
}

/// Appends not yet covered by a finished flush, in stamp order.
#[derive(Default)]
struct Pending {
    order: VecDeque<(Stamp, MailboxId)>,
    by_mailbox: HashMap<MailboxId, VecDeque<(Seq, Stamp)>>,
}

struct Shared {
    tickets: Mutex<Tickets>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
    last_appended: AtomicU64,
    durable_stamp: AtomicU64,
    pending: Mutex<Pending>,
    flushes: AtomicU64,
    /// How long each flush took (metrics).
    flush_latency: LatencyHistogram,
    /// The last flush failed.
    flush_failed: AtomicBool,
    append_lock: Mutex<()>,
}

/// The relay's write path: serialised appends and shared flushes.
pub(crate) struct GroupCommit<S> {
    store: Arc<S>,
    shared: Arc<Shared>,
    flusher: Mutex<Option<thread::JoinHandle<()>>>,
}

impl<S: Storage> GroupCommit<S> {
    /// Starts the flusher thread for `store`.
    pub(crate) fn start(store: Arc<S>) -> Self {
        let (progress, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            tickets: Mutex::new(Tickets::default()),
            wake: Condvar::new(),
            progress,
            last_appended: AtomicU64::new(0),
            durable_stamp: AtomicU64::new(0),
            pending: Mutex::new(Pending::default()),
            flushes: AtomicU64::new(0),
            flush_latency: LatencyHistogram::default(),
            flush_failed: AtomicBool::new(false),
            append_lock: Mutex::new(()),
        });
        let flusher = {
            let store = store.clone();
            let shared = shared.clone();
            thread::Builder::new()
                .name("sotto-flusher".into())
                .spawn(move || flusher_loop(&*store, &shared))
                .expect("invariant: the OS can start one thread at relay start-up")
        };
        Self {
            store,
            shared,
            flusher: Mutex::new(Some(flusher)),
        }
    }

    /// The backend.
    pub(crate) fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Runs `append` (which checks quotas and inserts into `mailbox`) in the
    /// append critical section; on success the returned ID gets the next
    /// stamp, then `appended` runs with both, still in the critical section
    /// (so in stamp order, and after the watermark was closed for it).
    /// The write is *not yet durable*: await [`Self::durable`].
    pub(crate) fn append<E>(
        &self,
        mailbox: &MailboxId,
        append: impl FnOnce(&S) -> Result<Seq, E>,
        appended: impl FnOnce(Stamp, Seq),
    ) -> Result<Seq, E> {
        let _serial = lock(&self.shared.append_lock);
        // Held across the backend's append, so no reader computes a
        // mailbox's durable bound between the blob becoming readable (the
        // memory backend; or a flush inserting sled's queue) and its entry
        // here.
        let mut pending = lock(&self.shared.pending);
        let seq = append(&self.store)?;
        let stamp = self.shared.last_appended.load(Ordering::Relaxed) + 1;
        pending.order.push_back((stamp, *mailbox));
        pending
            .by_mailbox
            .entry(*mailbox)
            .or_default()
            .push_back((seq, stamp));
        drop(pending);
        self.shared.last_appended.store(stamp, Ordering::Release);
        appended(stamp, seq);
        Ok(seq)
    }

    /// Waits until every mutation made before this call is durable.
    pub(crate) async fn durable(&self) -> Result<(), FlushError> {
        let ticket = {
            let mut tickets = lock(&self.shared.tickets);
            tickets.requested += 1;
            tickets.requested
        };
        self.shared.wake.notify_one();
        let mut progress = self.shared.progress.subscribe();
        let reached = progress
            .wait_for(|p| p.done >= ticket)
            .await
            .map(|p| *p)
            .map_err(|_| FlushError("the flusher stopped".into()))?;
        if reached.failed_upto >= ticket {
            return Err(FlushError("see the relay log".into()));
        }
        Ok(())
    }

    /// The highest stamp that a finished flush covers.
    pub(crate) fn durable_stamp(&self) -> Stamp {
        self.shared.durable_stamp.load(Ordering::Acquire)
    }

    /// The highest ID of `mailbox` that is durable if the watermark is
    /// `durable` (read with [`Self::durable_stamp`]): the ID before the
    /// mailbox's oldest append above it, or every ID if there is none.
    pub(crate) fn durable_bound(&self, mailbox: &MailboxId, durable: Stamp) -> Seq {
        let pending = lock(&self.shared.pending);
        pending
            .by_mailbox
            .get(mailbox)
            .and_then(|appends| appends.iter().find(|(_, stamp)| *stamp > durable))
            .map_or(Seq::MAX, |(seq, _)| seq.saturating_sub(1))
    }

    /// How many flushes have run (for benchmarks: fsyncs per put).
    pub(crate) fn flush_count(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }

    /// How long flushes took.
    pub(crate) fn flush_latency(&self) -> &LatencyHistogram {
        &self.shared.flush_latency
    }

    /// False if the last flush failed.
    pub(crate) fn healthy(&self) -> bool {
        !self.shared.flush_failed.load(Ordering::Relaxed)
    }

    /// Flushes a last time and stops the flusher thread.
    pub(crate) fn shutdown(&self) {
        lock(&self.shared.tickets).shutdown = true;
        self.shared.wake.notify_one();
        if let Some(handle) = lock(&self.flusher).take() {
            let _ = handle.join();
        }
    }
}

impl<S> Drop for GroupCommit<S> {
    fn drop(&mut self) {
        lock(&self.shared.tickets).shutdown = true;
        self.shared.wake.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded sections only move integers and queue entries; a
    // poisoned lock holds a consistent value.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn flusher_loop<S: Storage>(store: &S, shared: &Shared) {
    let mut done = 0u64;
    loop {
        let (target, shutdown) = {
            let mut tickets = lock(&shared.tickets);
            while tickets.requested == done && !tickets.shutdown {
                tickets = shared
                    .wake
                    .wait(tickets)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            (tickets.requested, tickets.shutdown)
        };
        // Read after the ticket snapshot: every append that took a ticket up
        // to `target` stored its stamp before taking it.
        let covered = shared.last_appended.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        let result = store.flush();
        shared.flush_latency.observe(started.elapsed());
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        shared
            .flush_failed
            .store(result.is_err(), Ordering::Relaxed);
        match result {
            Ok(()) => {
                shared.durable_stamp.store(covered, Ordering::Release);
                let mut pending = lock(&shared.pending);
                while let Some(&(stamp, mailbox)) = pending.order.front() {
                    if stamp > covered {
                        break;
                    }
                    pending.order.pop_front();
                    if let Some(appends) = pending.by_mailbox.get_mut(&mailbox) {
                        appends.pop_front();
                        if appends.is_empty() {
                            pending.by_mailbox.remove(&mailbox);
                        }
                    }
                }
                drop(pending);
                shared.progress.send_modify(|p| p.done = target);
            }
            Err(error) => {
                tracing::error!(%error, "storage flush failed; the writes it covered are refused");
                shared.progress.send_modify(|p| {
                    p.done = target;
                    p.failed_upto = target;
                });
            }
        }
        done = target;
        if shutdown {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FetchRange, MemoryStorage, SledStorage};
    use bytes::Bytes;
    use sotto_proto::{Blob, MailboxId};

    fn blob() -> Blob {
        Blob::new(Bytes::from(vec![0; 1024])).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let commit = Arc::new(GroupCommit::start(Arc::new(
            SledStorage::open(dir.path()).unwrap(),
        )));
        let mut tasks = Vec::new();
        for writer in 0..32u8 {
            let commit = commit.clone();
            tasks.push(tokio::spawn(async move {
                let mailbox = MailboxId::from_bytes([writer; 32]);
                for _ in 0..20 {
                    commit
                        .append(&mailbox, |s| s.append(&mailbox, &blob(), 0, 10), |_, _| {})
                        .unwrap();
                    commit.durable().await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let flushes = commit.flush_count();
        assert!(
            flushes < 640,
            "{flushes} flushes for 640 writes: no sharing"
        );
        assert_eq!(
            commit.durable_stamp(),
            commit.shared.last_appended.load(Ordering::Acquire)
        );
        assert!(lock(&commit.shared.pending).by_mailbox.is_empty());
        commit.shutdown();
    }

    #[tokio::test]
    async fn after_a_restart_old_blobs_are_visible_and_the_first_new_one_is_not_until_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let mailbox = MailboxId::from_bytes([1; 32]);
        let old = {
            let store = SledStorage::open(dir.path()).unwrap();
            let seq = store.append(&mailbox, &blob(), 0, 10).unwrap();
            store.flush().unwrap();
            seq
        };
        let commit = GroupCommit::start(Arc::new(SledStorage::open(dir.path()).unwrap()));
        let bound = |commit: &GroupCommit<SledStorage>| {
            commit.durable_bound(&mailbox, commit.durable_stamp())
        };
        assert!(bound(&commit) >= old, "what was on disk is visible at once");
        let new = commit
            .append(&mailbox, |s| s.append(&mailbox, &blob(), 0, 10), |_, _| {})
            .unwrap();
        assert!(new > old);
        assert_eq!(
            bound(&commit),
            new - 1,
            "the first new blob waits for its flush"
        );
        commit.durable().await.unwrap();
        assert!(bound(&commit) >= new);
        commit.shutdown();
    }

    #[tokio::test]
    async fn the_watermark_hides_writes_until_they_are_flushed() {
        let commit = GroupCommit::start(Arc::new(MemoryStorage::new()));
        let mailbox = MailboxId::from_bytes([1; 32]);
        let other = MailboxId::from_bytes([2; 32]);
        let seq = commit
            .append(&mailbox, |s| s.append(&mailbox, &blob(), 0, 10), |_, _| {})
            .unwrap();
        let range = |upto| FetchRange {
            after: 0,
            upto,
            limit: 10,
            max_bytes: usize::MAX,
        };
        let fetch = |commit: &GroupCommit<MemoryStorage>| {
            let upto = commit.durable_bound(&mailbox, commit.durable_stamp());
            commit
                .store()
                .fetch(&mailbox, range(upto))
                .unwrap()
                .blobs
                .len()
        };
        assert_eq!(fetch(&commit), 0);
        assert_eq!(
            commit.durable_bound(&other, commit.durable_stamp()),
            Seq::MAX,
            "another mailbox's pending put bounds nothing here"
        );
        commit.durable().await.unwrap();
        assert!(commit.durable_bound(&mailbox, commit.durable_stamp()) >= seq);
        assert_eq!(fetch(&commit), 1);
        commit.shutdown();
    }
}
