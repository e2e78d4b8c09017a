//! Sealing under a shared 32-byte key (version 2, directory slot values):
//! a fresh salt per blob, the same shape as a version-1 blob.

use sotto_proto::{Blob, Bucket};
use zeroize::Zeroizing;

use super::padding::{bucket_for, write_padded};
use super::{
    GROUP_SEAL_INFO, GROUP_SEAL_VERSION, OpenError, SealError, derive_key, open_padded,
    parse_header, seal_padded,
};

/// Seals a value (a directory slot) with a 32-byte symmetric key into the
/// smallest bucket that fits.
///
/// Layout as [`seal`] with version 2 and 32 random salt bytes where the
/// ephemeral key would be; the AEAD key is
/// `HKDF-SHA256(key, salt, "sotto/group-seal/v1")`, fresh per blob, so the
/// all-zero nonce is never reused under one AEAD key.
pub fn seal_symmetric(key: &[u8; 32], plaintext: &[u8]) -> Result<Blob, SealError> {
    seal_symmetric_min_bucket(key, plaintext, Bucket::K1)
}

/// As [`seal_symmetric`], into a bucket no smaller than `min_bucket`.
pub fn seal_symmetric_min_bucket(
    key: &[u8; 32],
    plaintext: &[u8],
    min_bucket: Bucket,
) -> Result<Blob, SealError> {
    let mut salt = [0u8; 32];
    getrandom::fill(&mut salt).map_err(SealError::Randomness)?;
    seal_symmetric_with_salt(key, plaintext, min_bucket, &salt)
}

/// As [`seal_symmetric_min_bucket`] with a caller-chosen salt, for
/// deterministic tests only: reusing a salt under one key reuses the AEAD
/// key and nonce.
#[cfg_attr(not(feature = "test-support"), allow(unreachable_pub))]
#[doc(hidden)]
pub fn seal_symmetric_with_salt(
    key: &[u8; 32],
    plaintext: &[u8],
    min_bucket: Bucket,
    salt: &[u8; 32],
) -> Result<Blob, SealError> {
    let bucket = bucket_for(plaintext.len(), min_bucket)?;
    let aead_key = derive_key(key, salt, GROUP_SEAL_INFO);
    Ok(seal_padded(
        GROUP_SEAL_VERSION,
        salt,
        &aead_key,
        bucket,
        |body| write_padded(body, plaintext),
    ))
}

/// Opens a value sealed with `key` by [`seal_symmetric`].
pub fn open_symmetric(key: &[u8; 32], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let salt = parse_header(blob, GROUP_SEAL_VERSION)?;
    let aead_key = derive_key(key, &salt, GROUP_SEAL_INFO);
    open_padded(blob, &aead_key)
}
