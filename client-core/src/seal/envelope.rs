//! Sealing to a recipient's envelope key (version 1): a fresh ephemeral
//! x25519 key per blob, so the relay learns nothing of the sender.

use sotto_proto::{Blob, Bucket};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::padding::{bucket_for, write_padded};
use super::{
    EnvelopePublic, EnvelopeSecret, OpenError, SEAL_INFO, SEAL_VERSION, SealError, derive_key,
    open_padded, parse_header, seal_padded,
};

/// Seals `plaintext` to `recipient` into the smallest bucket that fits.
///
/// The sender stays anonymous to the relay: the blob carries only a fresh
/// ephemeral key, drawn from the operating system for every call.
pub fn seal(recipient: &EnvelopePublic, plaintext: &[u8]) -> Result<Blob, SealError> {
    seal_min_bucket(recipient, plaintext, Bucket::K1)
}

/// As [`seal`], into a bucket no smaller than `min_bucket` (to hide which of
/// several messages is the long one, or to send a fixed size).
pub fn seal_min_bucket(
    recipient: &EnvelopePublic,
    plaintext: &[u8],
    min_bucket: Bucket,
) -> Result<Blob, SealError> {
    let mut ephemeral = Zeroizing::new([0u8; 32]);
    getrandom::fill(ephemeral.as_mut()).map_err(SealError::Randomness)?;
    seal_with_ephemeral(recipient, plaintext, min_bucket, &ephemeral)
}

/// As [`seal_min_bucket`] with a caller-chosen ephemeral secret, for
/// deterministic tests only.
///
/// Reusing an ephemeral secret for two blobs to one recipient reuses the
/// AEAD key with the same nonce, which reveals both plaintexts and allows
/// forgeries. Production code calls [`seal`].
#[cfg_attr(not(feature = "test-support"), allow(unreachable_pub))]
#[doc(hidden)]
pub fn seal_with_ephemeral(
    recipient: &EnvelopePublic,
    plaintext: &[u8],
    min_bucket: Bucket,
    ephemeral: &[u8; 32],
) -> Result<Blob, SealError> {
    let bucket = bucket_for(plaintext.len(), min_bucket)?;
    let key = seal_key(recipient, ephemeral)?;
    Ok(seal_padded(
        SEAL_VERSION,
        &key.eph_public,
        &key.aead_key,
        bucket,
        |body| write_padded(body, plaintext),
    ))
}

pub(super) struct SealKey {
    pub(super) eph_public: [u8; 32],
    pub(super) aead_key: Zeroizing<[u8; 32]>,
}

/// The ephemeral public key and the AEAD key for one 1:1 blob.
pub(super) fn seal_key(
    recipient: &EnvelopePublic,
    ephemeral: &[u8; 32],
) -> Result<SealKey, SealError> {
    let ephemeral = StaticSecret::from(*ephemeral);
    let eph_public = PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&PublicKey::from(recipient.0));
    if !shared.was_contributory() {
        return Err(SealError::InvalidRecipientKey);
    }
    Ok(SealKey {
        eph_public,
        aead_key: derive_key(
            shared.as_bytes(),
            &seal_salt(&eph_public, &recipient.0),
            SEAL_INFO,
        ),
    })
}

/// `eph_pub || E`: binds the key to both public keys, so a blob cannot be
/// re-targeted to another recipient with the same shared secret.
fn seal_salt(eph_public: &[u8; 32], recipient: &[u8; 32]) -> [u8; 64] {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph_public);
    salt[32..].copy_from_slice(recipient);
    salt
}

/// Opens a blob sealed to `secret`'s public key, returning the plaintext
/// (wiped when dropped).
pub fn open(secret: &EnvelopeSecret, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let eph_public = parse_header(blob, SEAL_VERSION)?;
    let shared = secret.secret.diffie_hellman(&PublicKey::from(eph_public));
    // An all-zero shared secret is known to everyone: whatever the blob
    // says, it is not a message only we can read.
    if !shared.was_contributory() {
        return Err(OpenError::LowOrderKey);
    }
    let key = derive_key(
        shared.as_bytes(),
        &seal_salt(&eph_public, secret.public.as_bytes()),
        SEAL_INFO,
    );
    open_padded(blob, &key)
}
