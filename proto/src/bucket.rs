//! Blob size buckets. Padding is protocol (DESIGN §5): the relay stores only
//! blobs whose size is exactly one of these, so it never learns a length
//! finer than the bucket.

use bytes::Bytes;

/// One of the four blob sizes sotto uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    /// 1 KiB: most chat messages, receipts.
    K1,
    /// 4 KiB.
    K4,
    /// 16 KiB.
    K16,
    /// 64 KiB: long messages, history transfer, attachment chunks.
    K64,
}

impl Bucket {
    /// Every bucket, smallest first.
    pub const ALL: [Bucket; 4] = [Bucket::K1, Bucket::K4, Bucket::K16, Bucket::K64];

    /// The size in bytes.
    pub const fn size(self) -> usize {
        match self {
            Bucket::K1 => 1024,
            Bucket::K4 => 4 * 1024,
            Bucket::K16 => 16 * 1024,
            Bucket::K64 => 64 * 1024,
        }
    }

    /// The bucket of exactly `len` bytes, if there is one.
    pub fn of_len(len: usize) -> Option<Bucket> {
        Self::ALL.into_iter().find(|b| b.size() == len)
    }

    /// The smallest bucket that holds `len` bytes.
    pub fn fitting(len: usize) -> Option<Bucket> {
        Self::ALL.into_iter().find(|b| b.size() >= len)
    }

    /// The largest bucket: anything bigger is an attachment, sent in chunks.
    pub const fn largest() -> Bucket {
        Bucket::K64
    }
}

/// A blob whose size is exactly one [`Bucket`].
#[derive(Clone, PartialEq, Eq)]
pub struct Blob {
    bytes: Bytes,
    bucket: Bucket,
}

/// A byte string was not exactly one bucket size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a blob must be exactly 1, 4, 16 or 64 KiB, but this one is {len} bytes")]
pub struct BlobSizeError {
    /// The offending length.
    pub len: usize,
}

impl Blob {
    /// Accepts `bytes` only if its length is a bucket size.
    pub fn new(bytes: Bytes) -> Result<Self, BlobSizeError> {
        match Bucket::of_len(bytes.len()) {
            Some(bucket) => Ok(Self { bytes, bucket }),
            None => Err(BlobSizeError { len: bytes.len() }),
        }
    }

    /// The blob's bucket.
    pub fn bucket(&self) -> Bucket {
        self.bucket
    }

    /// The blob's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The blob's bytes, without copying.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Length in bytes (always a bucket size).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: no bucket is empty. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Unwraps into the bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Contents are opaque ciphertext; the size is all there is to show.
        write!(f, "Blob({:?})", self.bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bucket_sizes_are_the_four_of_the_design() {
        let sizes: Vec<usize> = Bucket::ALL.iter().map(|b| b.size()).collect();
        assert_eq!(sizes, vec![1024, 4096, 16384, 65536]);
    }

    #[test]
    fn fitting_picks_the_smallest_bucket() {
        assert_eq!(Bucket::fitting(0), Some(Bucket::K1));
        assert_eq!(Bucket::fitting(1024), Some(Bucket::K1));
        assert_eq!(Bucket::fitting(1025), Some(Bucket::K4));
        assert_eq!(Bucket::fitting(65536), Some(Bucket::K64));
        assert_eq!(Bucket::fitting(65537), None);
    }

    proptest! {
        #[test]
        fn a_blob_exists_only_at_bucket_sizes(len in 0usize..70_000) {
            let result = Blob::new(Bytes::from(vec![0u8; len]));
            prop_assert_eq!(result.is_ok(), Bucket::of_len(len).is_some());
            if let Ok(blob) = result {
                prop_assert_eq!(blob.len(), len);
                prop_assert_eq!(blob.bucket().size(), len);
            }
        }
    }
}
