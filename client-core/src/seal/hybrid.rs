//! The post-quantum hybrid envelopes (DESIGN §5.1):
//!
//! - version 3, first contact: X25519 to the recipient's envelope key and
//!   an ML-KEM-768 ciphertext to its ML-KEM key, both shared secrets and
//!   both public keys and ciphertexts in the key derivation;
//! - version 4, every later blob between two devices: X25519 as version 1,
//!   with the pairwise post-quantum secret the version-3 encapsulation
//!   established mixed into the key. Same 33-byte header as version 1, so
//!   the plaintext room of every bucket is unchanged.

use sotto_proto::{Blob, Bucket};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::kem::{KEM_CIPHERTEXT_LEN, KemEncapsulation, KemPublic, KemSecret, PairwiseKey};
use super::padding::{bucket_for_header, write_padded};
use super::{
    EnvelopePublic, EnvelopeSecret, HEADER_LEN, HYBRID_SEAL_INFO, HYBRID_SEAL_VERSION, OpenError,
    PAIRWISE_SEAL_INFO, PAIRWISE_SEAL_VERSION, SealError, derive_key, open_padded,
    open_padded_with_header, parse_header, seal_padded, seal_padded_with_header,
};

/// The clear header of a version-3 blob: version, ephemeral X25519 key,
/// ML-KEM ciphertext.
pub const HYBRID_HEADER_LEN: usize = HEADER_LEN + KEM_CIPHERTEXT_LEN;

/// The ephemeral X25519 shared secret with `recipient`, refusing a
/// low-order recipient key.
fn x25519_shared(
    recipient: &EnvelopePublic,
    ephemeral: &[u8; 32],
) -> Result<([u8; 32], Zeroizing<[u8; 32]>), SealError> {
    let ephemeral = StaticSecret::from(*ephemeral);
    let eph_public = PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&PublicKey::from(*recipient.as_bytes()));
    if !shared.was_contributory() {
        return Err(SealError::InvalidRecipientKey);
    }
    Ok((eph_public, Zeroizing::new(shared.to_bytes())))
}

/// The X25519 shared secret a recipient computes from a blob's ephemeral key.
fn x25519_open(
    secret: &EnvelopeSecret,
    eph_public: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, OpenError> {
    let shared = secret.secret.diffie_hellman(&PublicKey::from(*eph_public));
    if !shared.was_contributory() {
        return Err(OpenError::LowOrderKey);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// `eph_pub || E`.
fn salt(eph_public: &[u8; 32], recipient: &[u8; 32]) -> [u8; 64] {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph_public);
    salt[32..].copy_from_slice(recipient);
    salt
}

/// The version-3 AEAD key:
/// `HKDF-SHA256(ikm = ss_M || ss_X, salt = eph_pub || E,
///              info = "sotto/seal-hybrid/v1" || ct_M || ek_M)`.
pub(super) fn hybrid_key(
    ss_kem: &[u8; 32],
    ss_x25519: &[u8; 32],
    eph_public: &[u8; 32],
    recipient: &[u8; 32],
    ciphertext: &[u8; KEM_CIPHERTEXT_LEN],
    kem_public: &[u8],
) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(ss_kem);
    ikm[32..].copy_from_slice(ss_x25519);
    let info = [HYBRID_SEAL_INFO, ciphertext.as_slice(), kem_public].concat();
    derive_key(ikm.as_ref(), &salt(eph_public, recipient), &info)
}

/// The version-4 AEAD key:
/// `HKDF-SHA256(ikm = ss_X || P, salt = eph_pub || E,
///              info = "sotto/seal-pairwise/v1")`.
pub(super) fn pairwise_key(
    ss_x25519: &[u8; 32],
    pairwise: &PairwiseKey,
    eph_public: &[u8; 32],
    recipient: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(ss_x25519);
    ikm[32..].copy_from_slice(pairwise.as_bytes());
    derive_key(
        ikm.as_ref(),
        &salt(eph_public, recipient),
        PAIRWISE_SEAL_INFO,
    )
}

/// Seals a first-contact blob (version 3) to a device's envelope key and
/// ML-KEM key with `encapsulation` (one made to `kem_public`; resent
/// unchanged until the peer answers, each blob with a fresh X25519 key),
/// into the smallest bucket of at least `min_bucket` that fits.
pub fn seal_hybrid(
    recipient: &EnvelopePublic,
    kem_public: &KemPublic,
    encapsulation: &KemEncapsulation,
    plaintext: &[u8],
    min_bucket: Bucket,
) -> Result<Blob, SealError> {
    let mut ephemeral = Zeroizing::new([0u8; 32]);
    getrandom::fill(ephemeral.as_mut()).map_err(SealError::Randomness)?;
    seal_hybrid_with_ephemeral(
        recipient,
        kem_public,
        encapsulation,
        plaintext,
        min_bucket,
        &ephemeral,
    )
}

/// As [`seal_hybrid`] with a caller-chosen ephemeral secret, for
/// known-answer tests only.
#[cfg_attr(not(feature = "test-support"), allow(unreachable_pub))]
#[doc(hidden)]
pub fn seal_hybrid_with_ephemeral(
    recipient: &EnvelopePublic,
    kem_public: &KemPublic,
    encapsulation: &KemEncapsulation,
    plaintext: &[u8],
    min_bucket: Bucket,
    ephemeral: &[u8; 32],
) -> Result<Blob, SealError> {
    let bucket = bucket_for_header(plaintext.len(), min_bucket, HYBRID_HEADER_LEN)?;
    let (eph_public, ss_x25519) = x25519_shared(recipient, ephemeral)?;
    let key = hybrid_key(
        &encapsulation.shared,
        &ss_x25519,
        &eph_public,
        recipient.as_bytes(),
        &encapsulation.ciphertext,
        kem_public.as_bytes(),
    );
    let mut header = Vec::with_capacity(HYBRID_HEADER_LEN);
    header.push(HYBRID_SEAL_VERSION);
    header.extend_from_slice(&eph_public);
    header.extend_from_slice(encapsulation.ciphertext.as_slice());
    Ok(seal_padded_with_header(&header, &key, bucket, |body| {
        write_padded(body, plaintext)
    }))
}

/// What a version-3 blob opened to: the plaintext and the pairwise secret
/// its encapsulation establishes (to keep once the sender is
/// authenticated).
pub struct HybridOpened {
    /// The plaintext (wiped when dropped).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The pairwise post-quantum secret.
    pub pairwise: PairwiseKey,
}

/// Opens a version-3 blob sealed to this device's envelope key and ML-KEM
/// key.
pub fn open_hybrid(
    secret: &EnvelopeSecret,
    kem: &KemSecret,
    blob: &[u8],
) -> Result<HybridOpened, OpenError> {
    let eph_public = parse_header(blob, HYBRID_SEAL_VERSION)?;
    let Some(ciphertext) = blob
        .get(HEADER_LEN..HYBRID_HEADER_LEN)
        .and_then(|c| <&[u8; KEM_CIPHERTEXT_LEN]>::try_from(c).ok())
    else {
        return Err(OpenError::NotABucket { len: blob.len() });
    };
    let ss_x25519 = x25519_open(secret, &eph_public)?;
    let ss_kem = kem.decapsulate(ciphertext);
    let kem_public = kem.public();
    let key = hybrid_key(
        &ss_kem,
        &ss_x25519,
        &eph_public,
        secret.public.as_bytes(),
        ciphertext,
        kem_public.as_bytes(),
    );
    let plaintext = open_padded_with_header(blob, HYBRID_HEADER_LEN, &key)?;
    let pairwise = super::kem::pairwise_from(&ss_kem, ciphertext, kem_public.as_bytes());
    Ok(HybridOpened {
        plaintext,
        pairwise,
    })
}

/// Seals a blob (version 4) to a device's envelope key with the pairwise
/// secret shared with it mixed into the key, into the smallest bucket of
/// at least `min_bucket` that fits: an ordinary message stays 1 KiB.
pub fn seal_pairwise(
    recipient: &EnvelopePublic,
    pairwise: &PairwiseKey,
    plaintext: &[u8],
    min_bucket: Bucket,
) -> Result<Blob, SealError> {
    let mut ephemeral = Zeroizing::new([0u8; 32]);
    getrandom::fill(ephemeral.as_mut()).map_err(SealError::Randomness)?;
    seal_pairwise_with_ephemeral(recipient, pairwise, plaintext, min_bucket, &ephemeral)
}

/// As [`seal_pairwise`] with a caller-chosen ephemeral secret, for
/// known-answer tests only.
#[cfg_attr(not(feature = "test-support"), allow(unreachable_pub))]
#[doc(hidden)]
pub fn seal_pairwise_with_ephemeral(
    recipient: &EnvelopePublic,
    pairwise: &PairwiseKey,
    plaintext: &[u8],
    min_bucket: Bucket,
    ephemeral: &[u8; 32],
) -> Result<Blob, SealError> {
    let bucket = bucket_for_header(plaintext.len(), min_bucket, HEADER_LEN)?;
    let (eph_public, ss_x25519) = x25519_shared(recipient, ephemeral)?;
    let key = pairwise_key(&ss_x25519, pairwise, &eph_public, recipient.as_bytes());
    Ok(seal_padded(
        PAIRWISE_SEAL_VERSION,
        &eph_public,
        &key,
        bucket,
        |body| write_padded(body, plaintext),
    ))
}

/// Opens a version-4 blob with whichever of `candidates` (the pairwise
/// secrets this device holds) it was sealed with; returns the plaintext
/// and the index of that candidate. The X25519 step is done once; each
/// candidate costs one HKDF and one Poly1305 check.
pub fn open_pairwise<'a>(
    secret: &EnvelopeSecret,
    blob: &[u8],
    candidates: impl IntoIterator<Item = &'a PairwiseKey>,
) -> Result<(Zeroizing<Vec<u8>>, usize), OpenError> {
    let eph_public = parse_header(blob, PAIRWISE_SEAL_VERSION)?;
    let ss_x25519 = x25519_open(secret, &eph_public)?;
    for (index, pairwise) in candidates.into_iter().enumerate() {
        let key = pairwise_key(&ss_x25519, pairwise, &eph_public, secret.public.as_bytes());
        match open_padded(blob, &key) {
            Ok(plaintext) => return Ok((plaintext, index)),
            Err(OpenError::Decryption) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(OpenError::Decryption)
}
