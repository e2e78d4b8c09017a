//! Pieces every report shares: latency summaries and rounding.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    /// Samples recorded.
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

impl Latency {
    /// Summarises a histogram recorded in microseconds.
    pub(crate) fn of(hist: &Histogram<u64>) -> Self {
        let ms = |micros: u64| (micros as f64 / 10.0).round() / 100.0;
        Self {
            count: hist.len(),
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p90_ms: ms(hist.value_at_quantile(0.90)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
        }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return write!(f, "no samples");
        }
        write!(
            f,
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

/// Merges `from` into `into`; both come from [`crate::stamp::histogram`], so
/// their bounds agree and the merge cannot fail.
pub(crate) fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Both share the same bounds; `add` only fails when a value does not fit.
    let _ = into.add(from);
}

/// `count / secs`, 0 for an empty window, rounded to a whole number.
pub(crate) fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (count as f64 / secs).round()
    } else {
        0.0
    }
}
