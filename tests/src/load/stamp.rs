//! Load blobs: a bucket-sized blob whose first 16 bytes say when and by whom
//! it was sent, so a receiver can compute put→push latency and notice
//! blobs it cannot account for.
//!
//! Layout: `le64(nanos since the run's start) || le32(sender) || le32(seq)`,
//! then zeros. Senders and receivers live in one process and share one
//! monotonic [`Instant`], so no clock synchronisation is involved.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use sotto_proto::Blob;

/// Bytes of header at the start of each blob.
pub(crate) const HEADER: usize = 16;

/// What a receiver reads back from a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Nanoseconds since the run's start when the put was (meant to be) sent.
    pub(crate) sent_nanos: u64,
    /// Which sender.
    pub(crate) sender: u32,
    /// The sender's sequence number.
    pub(crate) seq: u32,
}

/// A blob of `size` bytes (a bucket size) carrying `stamp`.
pub(crate) fn blob(size: usize, stamp: Stamp) -> anyhow::Result<Blob> {
    let mut bytes = BytesMut::with_capacity(size);
    bytes.put_u64_le(stamp.sent_nanos);
    bytes.put_u32_le(stamp.sender);
    bytes.put_u32_le(stamp.seq);
    bytes.resize(size.max(HEADER), 0);
    Ok(Blob::new(bytes.freeze())?)
}

/// The stamp of a received blob; `None` if it is too short to carry one
/// (the relay sent something no sender of this run put).
pub(crate) fn read(blob: &Bytes) -> Option<Stamp> {
    let header = blob.get(..HEADER)?;
    let (nanos, rest) = header.split_at(8);
    let (sender, seq) = rest.split_at(4);
    Some(Stamp {
        sent_nanos: u64::from_le_bytes(nanos.try_into().ok()?),
        sender: u32::from_le_bytes(sender.try_into().ok()?),
        seq: u32::from_le_bytes(seq.try_into().ok()?),
    })
}

/// Nanoseconds from `origin` to `at` (zero if `at` is earlier).
pub(crate) fn nanos_since(origin: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// A latency histogram in microseconds, 1 µs to 100 s, 3 significant digits.
pub(crate) fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 100_000_000, 3)
        .expect("invariant: constant histogram bounds are valid")
}

/// Records `latency` (saturating at the histogram's top).
pub(crate) fn record(hist: &mut hdrhistogram::Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(micros.max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_through_a_blob() {
        let stamp = Stamp {
            sent_nanos: 123_456_789_012,
            sender: 7,
            seq: 99,
        };
        let blob = blob(1024, stamp).unwrap();
        assert_eq!(blob.len(), 1024);
        assert_eq!(read(blob.bytes()), Some(stamp));
        assert_eq!(read(&Bytes::from_static(b"short")), None);
        assert!(self::blob(1000, stamp).is_err(), "not a bucket size");
    }
}
