//! Padding to one bucket: a 4-byte length, the plaintext, zeros; and the
//! plaintext room of each bucket.

use sotto_proto::Bucket;
use zeroize::Zeroizing;

use super::{HEADER_LEN, LENGTH_LEN, PadError, SEAL_OVERHEAD, TAG_LEN, UnpadError};

/// The largest plaintext that fits in a blob of `bucket`.
pub const fn max_plaintext_len(bucket: Bucket) -> usize {
    bucket.size() - SEAL_OVERHEAD
}

/// The size of the padded plaintext (`be32(len) || p || zeros`) that makes a
/// blob of exactly `bucket`.
pub const fn padded_len(bucket: Bucket) -> usize {
    bucket.size() - HEADER_LEN - TAG_LEN
}

/// The smallest bucket of at least `min_bucket` whose blob holds `len`
/// plaintext bytes.
pub(super) fn bucket_for(len: usize, min_bucket: Bucket) -> Result<Bucket, PadError> {
    bucket_for_header(len, min_bucket, HEADER_LEN)
}

/// The largest plaintext that fits in a blob of `bucket` whose clear
/// header is `header_len` bytes (0 if the header alone does not fit: a
/// hybrid blob is never 1 KiB).
pub(super) const fn room(bucket: Bucket, header_len: usize) -> usize {
    bucket
        .size()
        .saturating_sub(header_len + TAG_LEN + LENGTH_LEN)
}

/// The largest plaintext a first-contact hybrid blob (version 3, with its
/// 1088-byte ML-KEM ciphertext in the clear header) holds in `bucket`.
pub const fn max_hybrid_plaintext_len(bucket: Bucket) -> usize {
    room(bucket, super::hybrid::HYBRID_HEADER_LEN)
}

/// Whether a blob of `bucket` with a `header_len`-byte header holds `len`
/// plaintext bytes.
const fn bucket_holds(bucket: Bucket, header_len: usize, len: usize) -> bool {
    bucket.size() >= header_len + TAG_LEN + LENGTH_LEN && room(bucket, header_len) >= len
}

/// As [`bucket_for`] for a clear header of `header_len` bytes.
pub(super) fn bucket_for_header(
    len: usize,
    min_bucket: Bucket,
    header_len: usize,
) -> Result<Bucket, PadError> {
    Bucket::ALL
        .into_iter()
        .find(|b| *b >= min_bucket && bucket_holds(*b, header_len, len))
        .ok_or(PadError::TooLarge {
            len,
            max: room(Bucket::largest(), header_len),
        })
}

/// Writes `be32(len) || plaintext || zeros` into `out`, which the caller
/// sized with [`padded_len`] for a bucket that fits.
pub(super) fn write_padded(out: &mut [u8], plaintext: &[u8]) {
    // Callers checked the plaintext fits a bucket, so it is far below u32.
    let len = u32::try_from(plaintext.len()).unwrap_or(u32::MAX);
    out[..LENGTH_LEN].copy_from_slice(&len.to_be_bytes());
    out[LENGTH_LEN..LENGTH_LEN + plaintext.len()].copy_from_slice(plaintext);
    out[LENGTH_LEN + plaintext.len()..].fill(0);
}

/// Pads `plaintext` into the smallest bucket of at least `min_bucket` that
/// holds it: the padded bytes are exactly [`padded_len`] of that bucket, so
/// with a 33-byte header and a 16-byte tag the blob is exactly the bucket.
///
/// Group blobs reuse this with their own key; [`seal`] and
/// [`seal_symmetric`] already pad.
pub fn pad(plaintext: &[u8], min_bucket: Bucket) -> Result<(Bucket, Zeroizing<Vec<u8>>), PadError> {
    let bucket = bucket_for(plaintext.len(), min_bucket)?;
    let mut padded = Zeroizing::new(vec![0u8; padded_len(bucket)]);
    write_padded(&mut padded, plaintext);
    Ok((bucket, padded))
}

/// Strips the padding added by [`pad`], strictly: the length must fit and
/// every padding byte must be zero, so no two padded strings decode to the
/// same message and nothing can be smuggled in the padding.
pub fn unpad(padded: &[u8]) -> Result<&[u8], UnpadError> {
    let Some((prefix, rest)) = padded.split_first_chunk::<LENGTH_LEN>() else {
        return Err(UnpadError::TooShort { len: padded.len() });
    };
    let claimed = u32::from_be_bytes(*prefix) as usize;
    if claimed > rest.len() {
        return Err(UnpadError::LengthExceeds {
            claimed,
            available: rest.len(),
        });
    }
    let (message, padding) = rest.split_at(claimed);
    // Not secret-dependent in a way that matters (the blob authenticated),
    // but there is no reason to stop early either.
    if padding.iter().fold(0u8, |acc, b| acc | b) != 0 {
        return Err(UnpadError::NonZeroPadding);
    }
    Ok(message)
}
