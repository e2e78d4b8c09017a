//! Sealed envelopes and padding (DESIGN §5).
//!
//! A blob put into a device inbox hides its sender from the relay (as
//! Signal's sealed sender) and its length within a bucket:
//!
//! ```text
//! blob = version(1) || eph_x25519_pub(32) || ChaCha20Poly1305(key, nonce = 0,
//!                                              aad = version || eph_pub,
//!                                              padded(plaintext))
//! key  = HKDF-SHA256(ikm = X25519(eph, E), salt = eph_pub || E, info = "sotto/seal/v1")
//! padded(p) = be32(len) || p || zeros, so the whole blob is exactly one bucket
//! ```
//!
//! The ephemeral key is fresh per blob, so each AEAD key encrypts exactly one
//! message and the all-zero nonce is safe. Group blobs are sealed with
//! [`seal`] too, to a key derived from the group secret, so they *are* 1:1
//! blobs in form. [`seal_symmetric`] (version 2, 32 random salt bytes in
//! place of the ephemeral key) seals directory slot values, which never
//! share a mailbox with blobs: its version byte would tell them apart.
//!
//! Opening is strict: the blob must be a bucket size, carry the expected
//! version, not use a low-order ephemeral key, authenticate, and decode to a
//! length that fits with every padding byte zero. Anything else is a typed
//! error, never a panic, because every byte of a blob comes from the network.
//!
//! Where each part lives:
//!
//! - `mod.rs`: the versions, domain-separation strings, layout sizes, the
//!   error enums, and the shared AEAD steps (key derivation, seal and open
//!   a padded body, the header).
//! - `keys`: [`EnvelopeSecret`] / [`EnvelopePublic`], a recipient's
//!   x25519 envelope key.
//! - `envelope`: [`seal`] / [`open`] to a recipient's envelope key with a
//!   fresh ephemeral key (version 1).
//! - `kem`: [`KemSecret`] / [`KemPublic`], a device's ML-KEM-768 key
//!   (RustCrypto's `ml-kem`), encapsulation, and the pairwise secret
//!   [`PairwiseKey`] an encapsulation establishes.
//! - `hybrid`: the post-quantum versions (DESIGN §5.1): [`seal_hybrid`] /
//!   [`open_hybrid`] (version 3, first contact: X25519 and ML-KEM-768,
//!   the ciphertext in the clear header) and [`seal_pairwise`] /
//!   [`open_pairwise`] (version 4: version 1's header, the pairwise secret
//!   mixed into the key).
//! - `symmetric`: [`seal_symmetric`] / [`open_symmetric`] under a shared
//!   32-byte key with a fresh salt (version 2: directory slots).
//! - `padding`: [`pad`] / [`unpad`] to one bucket, and the bucket sizes.

mod envelope;
mod hybrid;
mod kem;
mod keys;
mod padding;
mod symmetric;
#[cfg(test)]
mod tests;

#[cfg(feature = "test-support")]
pub use envelope::seal_with_ephemeral;
pub use envelope::{open, seal, seal_min_bucket};
pub use hybrid::{
    HYBRID_HEADER_LEN, HybridOpened, open_hybrid, open_pairwise, seal_hybrid, seal_pairwise,
};
#[cfg(feature = "test-support")]
pub use hybrid::{seal_hybrid_with_ephemeral, seal_pairwise_with_ephemeral};
pub use kem::{
    KEM_CIPHERTEXT_LEN, KEM_PUBLIC_LEN, KEM_SEED_LEN, KemEncapsulation, KemKeyError, KemPublic,
    KemSecret, PairwiseKey,
};
pub use keys::{EnvelopePublic, EnvelopeSecret};
pub use padding::{max_hybrid_plaintext_len, max_plaintext_len, pad, padded_len, unpad};
#[cfg(feature = "test-support")]
pub use symmetric::seal_symmetric_with_salt;
pub use symmetric::{open_symmetric, seal_symmetric, seal_symmetric_min_bucket};

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use sotto_proto::{Blob, Bucket};
use zeroize::Zeroizing;

/// Version byte of a sealed 1:1 envelope.
pub const SEAL_VERSION: u8 = 1;
/// Version byte of a value sealed with a symmetric key (directory slots).
pub const GROUP_SEAL_VERSION: u8 = 2;
/// Version byte of a first-contact hybrid envelope: X25519 and
/// ML-KEM-768 (DESIGN §5.1).
pub const HYBRID_SEAL_VERSION: u8 = 3;
/// Version byte of an envelope whose key mixes in the pairwise
/// post-quantum secret (DESIGN §5.1).
pub const PAIRWISE_SEAL_VERSION: u8 = 4;
/// HKDF info for 1:1 sealed envelopes.
pub const SEAL_INFO: &[u8] = b"sotto/seal/v1";
/// HKDF info (prefix; the ML-KEM ciphertext and public key follow) of a
/// version-3 envelope key.
pub const HYBRID_SEAL_INFO: &[u8] = b"sotto/seal-hybrid/v1";
/// HKDF info of a version-4 envelope key.
pub const PAIRWISE_SEAL_INFO: &[u8] = b"sotto/seal-pairwise/v1";
/// HKDF info (prefix; the ML-KEM ciphertext and public key follow) of the
/// pairwise post-quantum secret.
pub const KEM_PAIRWISE_INFO: &[u8] = b"sotto/pq-pairwise/v1";
/// HKDF info for values sealed with a symmetric key (the name predates groups; kept so stored slots still open).
pub const GROUP_SEAL_INFO: &[u8] = b"sotto/group-seal/v1";

/// The clear header: version byte and 32 bytes of ephemeral key or salt.
const HEADER_LEN: usize = 1 + 32;
/// The Poly1305 tag.
const TAG_LEN: usize = 16;
/// The `be32(len)` prefix inside the padded plaintext.
const LENGTH_LEN: usize = 4;
/// Bytes of a blob that are not plaintext: header, tag and length prefix.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN + LENGTH_LEN;

/// The plaintext does not fit in any bucket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PadError {
    /// Longer than the largest bucket holds.
    #[error(
        "the message is {len} bytes but a blob holds at most {max}; send it as an attachment instead"
    )]
    TooLarge {
        /// The plaintext length.
        len: usize,
        /// The most one blob can hold.
        max: usize,
    },
}

/// A padded plaintext is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnpadError {
    /// Too short to hold even the length prefix.
    #[error("the padded message is {len} bytes, too short for its 4-byte length prefix")]
    TooShort {
        /// The padded length.
        len: usize,
    },
    /// The length prefix claims more bytes than there are.
    #[error("the length prefix claims {claimed} bytes but only {available} follow it")]
    LengthExceeds {
        /// The length in the prefix.
        claimed: usize,
        /// Bytes after the prefix.
        available: usize,
    },
    /// A byte after the message is not zero.
    #[error("the padding after the message is not all zero bytes")]
    NonZeroPadding,
}

/// Sealing failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The plaintext is larger than the largest bucket holds.
    #[error(
        "the message is {len} bytes but a blob holds at most {max}; send it as an attachment instead"
    )]
    TooLarge {
        /// The plaintext length.
        len: usize,
        /// The most one blob can hold.
        max: usize,
    },
    /// The recipient's envelope key is a low-order point, so the shared
    /// secret would be all zeros and anyone could read the blob.
    #[error("the recipient's envelope key is invalid (a low-order point); refusing to seal to it")]
    InvalidRecipientKey,
    /// The operating system's random number generator failed.
    #[error("the operating system could not supply randomness: {0}")]
    Randomness(getrandom::Error),
}

impl From<PadError> for SealError {
    fn from(error: PadError) -> Self {
        match error {
            PadError::TooLarge { len, max } => SealError::TooLarge { len, max },
        }
    }
}

/// Opening a blob failed. Every variant means the blob is dropped (and
/// counted); none says more than that to a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The input is not exactly one bucket size (truncated or garbage).
    #[error("a blob must be exactly 1, 4, 16 or 64 KiB, but this one is {len} bytes")]
    NotABucket {
        /// The input length.
        len: usize,
    },
    /// The version byte is not the one this kind of blob uses.
    #[error("the blob has version {found}, but version {expected} was expected")]
    WrongVersion {
        /// The version byte in the blob.
        found: u8,
        /// The version this function opens.
        expected: u8,
    },
    /// The ephemeral key is a low-order point: the shared secret would be
    /// all zeros, so the blob cannot have come from an honest sender.
    #[error("the blob's ephemeral key is a low-order point; it was not sealed honestly")]
    LowOrderKey,
    /// Authentication failed: the blob is for another key, or was altered.
    #[error("the blob could not be decrypted: it is for another key or was altered")]
    Decryption,
    /// It decrypted, but the padded message inside is malformed.
    #[error("the blob decrypted but is malformed: {0}")]
    Malformed(#[from] UnpadError),
}

/// The version byte of a blob (the first byte), if it has one.
pub fn blob_version(blob: &[u8]) -> Option<u8> {
    blob.first().copied()
}

/// HKDF-SHA256 to a 32-byte AEAD key.
fn derive_key(ikm: &[u8], salt: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, key.as_mut())
        .expect("invariant: 32 bytes is a valid HKDF-SHA256 output length");
    key
}

/// Encrypts an already padded body into a blob of `bucket`:
/// `version || header_key || AEAD(key, 0, version || header_key, padded)`.
fn seal_padded(
    version: u8,
    header_key: &[u8; 32],
    key: &[u8; 32],
    bucket: Bucket,
    fill: impl FnOnce(&mut [u8]),
) -> Blob {
    let mut header = [0u8; HEADER_LEN];
    header[0] = version;
    header[1..].copy_from_slice(header_key);
    seal_padded_with_header(&header, key, bucket, fill)
}

/// As [`seal_padded`] with a clear header of any length (the hybrid
/// version carries an ML-KEM ciphertext after the ephemeral key): the
/// whole header is the AEAD's associated data.
fn seal_padded_with_header(
    clear_header: &[u8],
    key: &[u8; 32],
    bucket: Bucket,
    fill: impl FnOnce(&mut [u8]),
) -> Blob {
    let size = bucket.size();
    let header_len = clear_header.len();
    let mut buf = Zeroizing::new(vec![0u8; size]);
    buf[..header_len].copy_from_slice(clear_header);
    let (header, rest) = buf.split_at_mut(header_len);
    let (body, tag_out) = rest.split_at_mut(size - header_len - TAG_LEN);
    fill(body);
    let tag = ChaCha20Poly1305::new(key.into())
        .encrypt_inout_detached(&Nonce::default(), header, body.into())
        .expect("invariant: a bucket is far below ChaCha20-Poly1305's length limit");
    tag_out.copy_from_slice(&tag);
    // The buffer now holds only ciphertext; move it out without a copy.
    let bytes = std::mem::take(&mut *buf);
    Blob::new(bytes.into()).expect("invariant: the buffer was allocated at a bucket size")
}

/// The checks every blob gets before any key derivation: bucket size and
/// version. Returns the 32 header key bytes.
fn parse_header(blob: &[u8], expected: u8) -> Result<[u8; 32], OpenError> {
    if Bucket::of_len(blob.len()).is_none() {
        return Err(OpenError::NotABucket { len: blob.len() });
    }
    match blob.split_first() {
        Some((&found, rest)) if found == expected => rest
            .first_chunk::<32>()
            .copied()
            .ok_or(OpenError::NotABucket { len: blob.len() }),
        Some((&found, _)) => Err(OpenError::WrongVersion { found, expected }),
        None => Err(OpenError::NotABucket { len: 0 }),
    }
}

/// Authenticates and decrypts a blob whose header passed [`parse_header`],
/// then strips the padding.
fn open_padded(blob: &[u8], key: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    open_padded_with_header(blob, HEADER_LEN, key)
}

/// As [`open_padded`] for a clear header of `header_len` bytes.
fn open_padded_with_header(
    blob: &[u8],
    header_len: usize,
    key: &[u8; 32],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let tag = tag_of(blob, header_len)?;
    let mut body = Zeroizing::new(blob[header_len..blob.len() - TAG_LEN].to_vec());
    ChaCha20Poly1305::new(key.into())
        .decrypt_inout_detached(
            &Nonce::default(),
            &blob[..header_len],
            body.as_mut_slice().into(),
            &tag,
        )
        .map_err(|_| OpenError::Decryption)?;
    let len = unpad(&body)?.len();
    body.copy_within(LENGTH_LEN..LENGTH_LEN + len, 0);
    body.truncate(len);
    Ok(body)
}

/// The Poly1305 tag at the end of a blob whose header is `header_len`
/// bytes, checking the blob holds both.
fn tag_of(blob: &[u8], header_len: usize) -> Result<Tag, OpenError> {
    let Some(tag_at) = blob.len().checked_sub(TAG_LEN) else {
        return Err(OpenError::NotABucket { len: blob.len() });
    };
    if tag_at < header_len {
        return Err(OpenError::NotABucket { len: blob.len() });
    }
    Tag::try_from(&blob[tag_at..]).map_err(|_| OpenError::Decryption)
}
