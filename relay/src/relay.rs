//! The relay's shared state: storage behind group commit, the subscription
//! hub, limits, the clock and counters. Operations on it live in `ops/`,
//! one module per request kind; connections drive them from `connection.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sotto_proto::MailboxId;

use crate::clock::Clock;
use crate::commit::{GroupCommit, Stamp};
use crate::config::Limits;
use crate::hub::Hub;
use crate::refusal::Refusal;
use crate::storage::{FetchPage, FetchRange, Seq, Storage};
use crate::tokens::Tokens;

/// Counters for the stats log and benchmarks. Counts, never names.
#[derive(Debug, Default)]
pub struct Stats {
    /// Blobs stored.
    pub puts: AtomicU64,
    /// Fetch requests served.
    pub fetches: AtomicU64,
    /// Blobs deleted by acks.
    pub acked: AtomicU64,
    /// Blobs pushed to subscribers.
    pub pushes: AtomicU64,
    /// Requests refused with an error frame.
    pub refused: AtomicU64,
    /// Times a connection was not read for a while after a frame over its
    /// request rate (its flow control then holds the sender back).
    pub rate_pauses: AtomicU64,
    /// Blobs removed by the TTL purge.
    pub purged: AtomicU64,
    /// Connections accepted since start.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open_connections: AtomicU64,
    /// Bytes of replies and pushes waiting for the connections' writers
    /// (each connection holds at most `OUT_BYTES`, 1 MiB, of them).
    pub queued_bytes: AtomicU64,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

/// State shared by every connection.
pub struct Relay<S: Storage> {
    pub(crate) commit: GroupCommit<S>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) limits: crate::config::LiveLimits,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) slot_lock: std::sync::Mutex<()>,
    /// One ack's deletion at a time, off the async workers (see
    /// [`Relay::ack_apart`]).
    pub(crate) deleting: Arc<tokio::sync::Semaphore>,
    pub(crate) stats: Stats,
    /// Counters for metrics only.
    pub(crate) metrics: crate::metrics::Metrics,
    pub(crate) tokens: Tokens,
}

impl<S: Storage> Relay<S> {
    /// A relay over `storage`. It requires access tokens but has an
    /// ephemeral issuer key and no data dir (so no bootstrap) until
    /// [`Relay::with_tokens`] gives it its own.
    pub fn new(storage: Arc<S>, limits: Limits, clock: Arc<dyn Clock>) -> Self {
        Self {
            commit: GroupCommit::start(storage),
            hub: Arc::new(Hub::default()),
            limits: crate::config::LiveLimits::new(limits),
            clock,
            slot_lock: std::sync::Mutex::new(()),
            deleting: Arc::new(tokio::sync::Semaphore::new(1)),
            stats: Stats::default(),
            metrics: crate::metrics::Metrics::default(),
            tokens: Tokens::ephemeral(crate::config::TokenConfig::default()),
        }
    }

    /// The relay with this token configuration and issuer key.
    pub fn with_tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = tokens;
        self
    }

    /// The relay's issuer public key (teams pin it).
    pub fn issuer_key(&self) -> [u8; 32] {
        self.tokens.issuer_key()
    }

    /// The backend.
    pub fn storage(&self) -> &Arc<S> {
        self.commit.store()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counters kept for metrics only.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// False after a storage flush failed, until one succeeds.
    pub fn storage_healthy(&self) -> bool {
        self.commit.healthy()
    }

    /// Limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// fsyncs so far (group commit shares one across concurrent writers).
    pub fn flush_count(&self) -> u64 {
        self.commit.flush_count()
    }

    /// Live subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.hub.subscription_count()
    }

    /// Durable blobs of `mailbox` after `after`, one page.
    pub(crate) fn fetch_page(
        &self,
        mailbox: &MailboxId,
        after: Seq,
        limit: usize,
    ) -> Result<FetchPage, Refusal> {
        self.fetch_page_at(mailbox, after, limit, self.commit.durable_stamp())
    }

    /// Blobs of `mailbox` after `after` that are durable at watermark
    /// `durable`, which must have been read (`durable_stamp`) before this
    /// call; one page.
    pub(crate) fn fetch_page_at(
        &self,
        mailbox: &MailboxId,
        after: Seq,
        limit: usize,
        durable: Stamp,
    ) -> Result<FetchPage, Refusal> {
        let range = FetchRange {
            after,
            upto: self.commit.durable_bound(mailbox, durable),
            limit: limit.min(self.limits.max_fetch_blobs as usize),
            max_bytes: self.limits.max_fetch_bytes as usize,
        };
        Ok(self.storage().fetch(mailbox, range)?)
    }

    /// Deletes expired blobs in batches; returns how many. Runs on the
    /// background purge task, and directly from tests with a manual clock.
    pub fn purge_expired(&self) -> Result<usize, crate::storage::StoreError> {
        const BATCH: usize = 1_000;
        let now = self.clock.now_secs();
        let mut total = 0;
        loop {
            let purged = self.storage().purge_expired(now, BATCH)?;
            total += purged;
            if purged < BATCH {
                break;
            }
        }
        Stats::bump(&self.stats.purged, total as u64);
        match self.storage().drop_unused_registrations(now) {
            Ok(_) | Err(crate::storage::StoreError::Unsupported(_)) => {}
            Err(error) => return Err(error),
        }
        Ok(total)
    }

    /// Waits for a last flush and stops the flusher.
    pub fn shutdown(&self) {
        self.commit.shutdown();
    }
}
