//! Prometheus metrics: counts, never names.
//!
//! Every number here is a relay-wide count or size: no metric has a label
//! that names a mailbox, an address, a key or a token. The one labelled
//! metric, `sotto_refusals_total`, has a fixed set of `reason` values
//! ([`RefusalReason`]). The counters are the relay's atomics ([`Stats`]
//! and [`Metrics`]), bumped where requests are served; a scrape reads them
//! into a fresh `prometheus-client` registry and encodes it, so serving
//! requests never touches the encoder.
//!
//! Two encodings of the same registry: OpenMetrics text for scrapers that
//! accept it (Prometheus does), and the classic Prometheus text format
//! (0.0.4) for everything else (`curl`, `promtool check metrics`). They
//! differ only in how a counter's family is named (`x` with a sample
//! `x_total`, or `x_total` throughout) and in the `# EOF` line.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use sotto_proto::wire::ErrorCode;

use crate::relay::{Relay, Stats};
use crate::storage::Storage;

/// Content type of the OpenMetrics text encoding.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text encoding.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why a request was refused, as a metric label: a fixed, small set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// Over the connection's request rate.
    Rate,
    /// A mailbox's quota, a connection's subscriptions, an account's token
    /// budget.
    Quota,
    /// The relay's disk budget.
    Disk,
    /// A blob, frame or TTL outside the limits.
    Size,
    /// A signature, token, registration or bootstrap code that does not
    /// check out, or a feature the operator turned off.
    Auth,
    /// A frame that breaks the protocol.
    Protocol,
    /// A directory slot write that lost (stale version, wrong owner).
    Slot,
    /// The relay's own failure, or shutting down.
    Internal,
}

impl RefusalReason {
    /// Every reason, in the order the counters are kept.
    pub const ALL: [Self; 8] = [
        Self::Rate,
        Self::Quota,
        Self::Disk,
        Self::Size,
        Self::Auth,
        Self::Protocol,
        Self::Slot,
        Self::Internal,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Quota => "quota",
            Self::Disk => "disk",
            Self::Size => "size",
            Self::Auth => "auth",
            Self::Protocol => "protocol",
            Self::Slot => "slot",
            Self::Internal => "internal",
        }
    }

    /// The reason an error code counts under.
    pub fn of(code: ErrorCode) -> Self {
        use ErrorCode as E;
        match code {
            E::RateLimited => Self::Rate,
            E::QuotaExceeded | E::TooManySubscriptions | E::TokenBudgetExceeded => Self::Quota,
            E::DiskFull => Self::Disk,
            E::BadBlobSize | E::FrameTooLarge | E::TtlTooLong | E::TtlNotAllowed => Self::Size,
            E::Unauthorized
            | E::TokenRequired
            | E::TokenInvalid
            | E::BootstrapInvalid
            | E::RegistrationInvalid
            | E::RegistrationExpired
            | E::RegistrationUsed
            | E::AccountRevoked
            | E::NotAllowed => Self::Auth,
            E::Malformed
            | E::UnknownRequest
            | E::HelloRequired
            | E::UnsupportedVersion
            | E::BadRequest => Self::Protocol,
            E::SlotStaleVersion | E::SlotWrongOwner => Self::Slot,
            E::Unspecified | E::ShuttingDown | E::Internal => Self::Internal,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters kept for metrics only (the stats log has [`Stats`]).
#[derive(Debug, Default)]
pub struct Metrics {
    refusals: [AtomicU64; RefusalReason::ALL.len()],
    /// Tokens evaluated by issuance requests.
    pub(crate) tokens_issued: AtomicU64,
    /// Access tokens redeemed (connections admitted).
    pub(crate) tokens_redeemed: AtomicU64,
    /// Issuance accounts registered.
    pub(crate) registrations: AtomicU64,
    /// TTL purge passes finished.
    pub(crate) purge_runs: AtomicU64,
    /// TTL purge passes that failed.
    pub(crate) purge_failures: AtomicU64,
    /// Configuration reloads applied (SIGHUP).
    pub(crate) reloads: AtomicU64,
    /// Backups sent whole through the admin socket.
    pub(crate) backups: AtomicU64,
    /// Backups through the admin socket that failed or were abandoned.
    pub(crate) backup_failures: AtomicU64,
    /// Unix time the last backup through the admin socket began (0: none
    /// since the relay started).
    pub(crate) last_backup: AtomicU64,
}

impl Metrics {
    /// Counts one refusal with `code`.
    pub(crate) fn refused(&self, code: ErrorCode) {
        self.refusals[RefusalReason::of(code).index()].fetch_add(1, Relaxed);
    }

    /// Refusals counted under `reason` so far.
    pub fn refusals(&self, reason: RefusalReason) -> u64 {
        self.refusals[reason.index()].load(Relaxed)
    }

    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }
}

/// Upper bounds of the fsync latency buckets, in seconds.
const FSYNC_BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram of atomics: observing is a few relaxed adds, with
/// no lock (the flusher thread observes each fsync).
#[derive(Debug, Default)]
pub(crate) struct LatencyHistogram {
    /// Observations at or below each bound (not cumulative).
    buckets: [AtomicU64; FSYNC_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// Records one duration.
    pub(crate) fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = FSYNC_BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts): each bucket holds the
    /// observations in it alone (the encoder accumulates them), and the
    /// last, bounded by `f64::MAX`, is the encoder's `+Inf`.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let count = self.count.load(Relaxed);
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let mut bucketed = 0;
        let mut buckets: Vec<(f64, u64)> = FSYNC_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                let n = n.load(Relaxed);
                bucketed += n;
                (*bound, n)
            })
            .collect();
        // Read at slightly different moments: the total is never below
        // what the buckets hold.
        let count = count.max(bucketed);
        buckets.push((f64::MAX, count - bucketed));
        (sum, count, buckets)
    }
}

/// A histogram's values read at scrape time.
#[derive(Debug)]
struct HistogramSnapshot {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl TypedMetric for HistogramSnapshot {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for HistogramSnapshot {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

/// The registry of every metric, read from `relay` now.
fn registry<S: Storage>(relay: &Relay<S>) -> Registry {
    let s: &Stats = relay.stats();
    let m = &relay.metrics;
    let load = |counter: &AtomicU64| ConstCounter::new(counter.load(Relaxed));
    let mut r = Registry::with_prefix("sotto");

    r.register(
        "connections_open",
        "QUIC connections open now",
        gauge(s.open_connections.load(Relaxed)),
    );
    r.register(
        "connections_accepted",
        "QUIC connections that finished the handshake since start",
        load(&s.connections),
    );
    r.register("puts", "Blobs stored by puts", load(&s.puts));
    r.register(
        "pushes",
        "Blobs pushed to subscribed connections",
        load(&s.pushes),
    );
    r.register("acked_blobs", "Blobs deleted by acks", load(&s.acked));
    r.register("fetches", "Fetch requests served", load(&s.fetches));
    let refusals = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    for reason in RefusalReason::ALL {
        refusals
            .get_or_create(&vec![("reason", reason.label())])
            .inc_by(m.refusals(reason));
    }
    r.register(
        "refusals",
        "Requests refused with an error frame, by reason",
        refusals,
    );
    r.register(
        "rate_pauses",
        "Times a connection over its request rate was not read for a while",
        load(&s.rate_pauses),
    );
    let storage = relay.storage();
    if let Some(blobs) = storage.blob_count() {
        r.register("stored_blobs", "Blobs stored now", gauge(blobs));
    }
    r.register(
        "stored_bytes",
        "Bytes of blobs and directory slots stored now",
        gauge(storage.total_bytes()),
    );
    r.register(
        "mailboxes",
        "Mailboxes holding at least one blob",
        gauge(storage.mailbox_count() as u64),
    );
    r.register(
        "subscriptions",
        "Live mailbox subscriptions",
        gauge(relay.subscription_count() as u64),
    );
    r.register(
        "queued_bytes",
        "Bytes of replies and pushes waiting for the connections' writers",
        gauge(s.queued_bytes.load(Relaxed)),
    );
    r.register(
        "fsyncs",
        "Storage flushes (fsync), each shared by every write waiting for it",
        ConstCounter::new(relay.flush_count()),
    );
    let (sum, count, buckets) = relay.commit.flush_latency().snapshot();
    r.register(
        "fsync_duration_seconds",
        "Time one storage flush (fsync) took",
        HistogramSnapshot {
            sum,
            count,
            buckets,
        },
    );
    r.register(
        "tokens_issued",
        "Access tokens evaluated for issuance accounts",
        load(&m.tokens_issued),
    );
    r.register(
        "tokens_redeemed",
        "Access tokens redeemed by connections",
        load(&m.tokens_redeemed),
    );
    r.register(
        "registrations",
        "Issuance accounts registered",
        load(&m.registrations),
    );
    r.register(
        "purge_runs",
        "TTL purge passes finished",
        load(&m.purge_runs),
    );
    r.register(
        "purge_failures",
        "TTL purge passes that failed",
        load(&m.purge_failures),
    );
    r.register(
        "purged_blobs",
        "Blobs deleted by the TTL purge",
        load(&s.purged),
    );
    r.register(
        "config_reloads",
        "Configuration reloads applied (SIGHUP)",
        load(&m.reloads),
    );
    r.register(
        "backups",
        "Backups sent whole through the admin socket (sotto-relay backup of the running relay)",
        load(&m.backups),
    );
    r.register(
        "backup_failures",
        "Backups through the admin socket that failed or whose reader gave up",
        load(&m.backup_failures),
    );
    r.register(
        "last_backup_timestamp_seconds",
        "Unix time the last whole backup through the admin socket began; 0 if none since the relay started",
        gauge(m.last_backup.load(Relaxed)),
    );
    r
}

/// Every metric in the OpenMetrics text encoding.
pub(crate) fn render_openmetrics<S: Storage>(relay: &Relay<S>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in
    // a metric above, and then the scrape gets what was written.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry(relay));
    out
}

/// Every metric in the classic Prometheus text encoding (0.0.4).
pub(crate) fn render_prometheus<S: Storage>(relay: &Relay<S>) -> String {
    openmetrics_to_prometheus(&render_openmetrics(relay))
}

/// Rewrites OpenMetrics text as classic Prometheus text: a counter family
/// `x` (samples `x_total`) becomes `x_total`, and `# EOF` and `# UNIT`
/// lines go. Gauges and histograms are written alike in both.
fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_a_reason_from_the_fixed_set() {
        for code in 0..=64 {
            let Ok(code) = ErrorCode::try_from(code) else {
                continue;
            };
            assert!(RefusalReason::ALL.contains(&RefusalReason::of(code)));
        }
        assert_eq!(RefusalReason::of(ErrorCode::RateLimited).label(), "rate");
        assert_eq!(RefusalReason::of(ErrorCode::QuotaExceeded).label(), "quota");
    }

    #[test]
    fn the_histogram_buckets_each_observation_once() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 10.0031).abs() < 1e-6, "{sum}");
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[3], (0.005, 1));
        assert_eq!(buckets.iter().map(|(_, n)| n).sum::<u64>(), 3);
        assert_eq!(*buckets.last().unwrap_or(&(0.0, 0)), (f64::MAX, 1));
    }

    #[test]
    fn counters_are_renamed_for_the_classic_format() {
        let om = "# HELP sotto_puts Blobs.\n# TYPE sotto_puts counter\nsotto_puts_total 5\n\
                  # HELP sotto_open Open.\n# TYPE sotto_open gauge\nsotto_open 3\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(om),
            "# HELP sotto_puts_total Blobs.\n# TYPE sotto_puts_total counter\nsotto_puts_total 5\n\
             # HELP sotto_open Open.\n# TYPE sotto_open gauge\nsotto_open 3\n"
        );
    }
}
