//! Group commit: many concurrent writers share one fsync.
//!
//! sled does not fsync on insert, so a put is acknowledged only after a
//! flush that started *after* its insert finished. Writers take a ticket
//! after mutating; a dedicated flusher thread repeatedly snapshots the newest
//! ticket, flushes once, and releases every writer up to that ticket. Under
//! load one fsync serves every put that arrived while the previous one ran.
//!
//! Appends are serialised here (one short critical section around the
//! backend's insert), which gives two properties the relay relies on: blob
//! seqs are handed out in insertion order, and the *durable watermark*
//! — the highest seq covered by a finished flush — is a prefix of the log.
//! Fetch and subscription pushes never return a blob above the watermark,
//! so a client never sees a blob that a crash could take back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use tokio::sync::watch;

use crate::metrics::LatencyHistogram;
use crate::storage::{Seq, Storage};

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

struct Shared {
    tickets: Mutex<Tickets>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
    last_appended: AtomicU64,
    durable_seq: AtomicU64,
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
    /// Starts the flusher thread for `store`. The watermark starts at the
    /// newest blob the backend held at open.
    pub(crate) fn start(store: Arc<S>) -> Self {
        let (progress, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            tickets: Mutex::new(Tickets::default()),
            wake: Condvar::new(),
            progress,
            // Everything the backend held at open was read back from disk,
            // so it is durable; nothing newer is until a flush covers it.
            last_appended: AtomicU64::new(store.seq_at_open()),
            durable_seq: AtomicU64::new(store.seq_at_open()),
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

    /// Runs `append` (which checks quotas and inserts) in the append critical
    /// section; on success the returned seq is recorded for the watermark,
    /// then `appended` runs with it, still in the critical section (so in
    /// seq order, and after the watermark was closed for this seq).
    /// The write is *not yet durable*: await [`Self::durable`].
    pub(crate) fn append<E>(
        &self,
        append: impl FnOnce(&S) -> Result<Seq, E>,
        appended: impl FnOnce(Seq),
    ) -> Result<Seq, E> {
        let _serial = lock(&self.shared.append_lock);
        let seq = append(&self.store)?;
        self.shared.last_appended.store(seq, Ordering::Release);
        appended(seq);
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

    /// The highest seq that a finished flush covers.
    pub(crate) fn durable_seq(&self) -> Seq {
        self.shared.durable_seq.load(Ordering::Acquire)
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
    // The guarded sections only move integers; a poisoned lock holds a
    // consistent value.
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
        // to `target` stored its seq before taking it.
        let covered_seq = shared.last_appended.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        let result = store.flush();
        shared.flush_latency.observe(started.elapsed());
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        shared
            .flush_failed
            .store(result.is_err(), Ordering::Relaxed);
        match result {
            Ok(()) => {
                shared.durable_seq.store(covered_seq, Ordering::Release);
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
                for _ in 0..20 {
                    commit
                        .append(
                            |s| s.append(&MailboxId::from_bytes([writer; 32]), &blob(), 10),
                            |_| {},
                        )
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
            commit.durable_seq(),
            commit.shared.last_appended.load(Ordering::Acquire)
        );
        commit.shutdown();
    }

    #[tokio::test]
    async fn after_a_restart_old_blobs_are_visible_and_the_first_new_one_is_not_until_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let mailbox = MailboxId::from_bytes([1; 32]);
        let old = {
            let store = SledStorage::open(dir.path()).unwrap();
            let seq = store.append(&mailbox, &blob(), 10).unwrap();
            store.flush().unwrap();
            seq
        };
        let commit = GroupCommit::start(Arc::new(SledStorage::open(dir.path()).unwrap()));
        assert_eq!(
            commit.durable_seq(),
            old,
            "what was on disk is visible at once"
        );
        let new = commit
            .append(|s| s.append(&mailbox, &blob(), 10), |_| {})
            .unwrap();
        assert!(new > old);
        assert!(
            commit.durable_seq() < new,
            "the first new blob waits for its flush"
        );
        commit.durable().await.unwrap();
        assert_eq!(commit.durable_seq(), new);
        commit.shutdown();
    }

    #[tokio::test]
    async fn the_watermark_hides_writes_until_they_are_flushed() {
        let commit = GroupCommit::start(Arc::new(MemoryStorage::new()));
        let mailbox = MailboxId::from_bytes([1; 32]);
        let seq = commit
            .append(|s| s.append(&mailbox, &blob(), 10), |_| {})
            .unwrap();
        assert!(commit.durable_seq() < seq);
        let range = |upto| FetchRange {
            after: 0,
            upto,
            limit: 10,
            max_bytes: usize::MAX,
        };
        assert!(
            commit
                .store()
                .fetch(&mailbox, range(commit.durable_seq()))
                .unwrap()
                .blobs
                .is_empty()
        );
        commit.durable().await.unwrap();
        assert_eq!(commit.durable_seq(), seq);
        assert_eq!(
            commit
                .store()
                .fetch(&mailbox, range(commit.durable_seq()))
                .unwrap()
                .blobs
                .len(),
            1
        );
        commit.shutdown();
    }
}
