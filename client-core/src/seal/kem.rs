//! The device's ML-KEM-768 key (FIPS 203, RustCrypto's `ml-kem`): the
//! post-quantum half of the hybrid envelope (DESIGN §5.1). Nothing here is
//! lattice code; it wraps the crate's key types with sotto's storage and
//! wire forms and draws every random input from the operating system.

use ml_kem::ml_kem_768::{DecapsulationKey, EncapsulationKey};
use ml_kem::{B32, Decapsulate, KeyExport, Seed};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{KEM_PAIRWISE_INFO, SealError, derive_key};

/// Bytes of an ML-KEM-768 encapsulation (public) key.
pub const KEM_PUBLIC_LEN: usize = 1184;
/// Bytes of an ML-KEM-768 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// Bytes of the seed an ML-KEM-768 decapsulation key is stored as (`d || z`).
pub const KEM_SEED_LEN: usize = 64;

/// A device's ML-KEM-768 decapsulation key. Stored as its 64-byte seed;
/// wiped on drop (the crate's own `ZeroizeOnDrop`); no `Debug`.
pub struct KemSecret {
    key: DecapsulationKey,
}

impl KemSecret {
    /// A fresh key from the operating system's random number generator.
    ///
    /// # Panics
    ///
    /// If the operating system cannot supply randomness; no key can be made
    /// safely without it.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
        getrandom::fill(seed.as_mut())
            .expect("invariant: the OS random number generator is available");
        Self::from_seed(&seed)
    }

    /// Restores a key from its 64-byte seed (`d || z` of FIPS 203).
    pub fn from_seed(seed: &[u8; KEM_SEED_LEN]) -> Self {
        let mut array = Seed::from(*seed);
        let key = DecapsulationKey::from_seed(array);
        array.zeroize();
        Self { key }
    }

    /// The seed, for persisting in the (encrypted) local store.
    pub fn to_seed(&self) -> Zeroizing<[u8; KEM_SEED_LEN]> {
        let mut out = Zeroizing::new([0u8; KEM_SEED_LEN]);
        if let Some(mut seed) = self.key.to_seed() {
            out.copy_from_slice(seed.as_slice());
            seed.zeroize();
        }
        out
    }

    /// The public encapsulation key senders encapsulate to.
    pub fn public(&self) -> KemPublic {
        let bytes = self.key.encapsulation_key().to_bytes();
        KemPublic(bytes.as_slice().into())
    }

    /// Decapsulates `ciphertext` (FIPS 203 implicit rejection: a damaged
    /// ciphertext yields an unrelated secret, so the AEAD fails later).
    pub(super) fn decapsulate(&self, ciphertext: &[u8; KEM_CIPHERTEXT_LEN]) -> Zeroizing<[u8; 32]> {
        let ct = ml_kem::ml_kem_768::Ciphertext::from(*ciphertext);
        let mut shared = self.key.decapsulate(&ct);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(shared.as_slice());
        shared.zeroize();
        out
    }
}

/// An ML-KEM-768 public key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KemKeyError {
    /// Not 1184 bytes.
    #[error("an ML-KEM-768 public key is {KEM_PUBLIC_LEN} bytes, not {got}")]
    Length {
        /// The length found.
        got: usize,
    },
    /// A coefficient is out of range (FIPS 203's modulus check).
    #[error("the ML-KEM-768 public key fails the FIPS 203 modulus check")]
    Invalid,
}

/// A device's public ML-KEM-768 encapsulation key, as published in its
/// card. Only keys that pass FIPS 203's encapsulation-key check are made.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KemPublic(Box<[u8]>);

impl KemPublic {
    /// Parses and checks wire bytes (length and the modulus check of
    /// FIPS 203 §7.2).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KemKeyError> {
        let key = Self::parse(bytes)?;
        drop(key);
        Ok(Self(bytes.into()))
    }

    fn parse(bytes: &[u8]) -> Result<EncapsulationKey, KemKeyError> {
        let array = ml_kem::Key::<EncapsulationKey>::try_from(bytes)
            .map_err(|_| KemKeyError::Length { got: bytes.len() })?;
        EncapsulationKey::new(&array).map_err(|_| KemKeyError::Invalid)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A fresh encapsulation to this key: a ciphertext and the shared
    /// secret only the key's holder can recover.
    pub fn encapsulate(&self) -> Result<KemEncapsulation, SealError> {
        let mut m = Zeroizing::new([0u8; 32]);
        getrandom::fill(m.as_mut()).map_err(SealError::Randomness)?;
        self.encapsulate_with(&m)
    }

    /// As [`KemPublic::encapsulate`] with caller-chosen randomness `m`, for
    /// known-answer tests only: reusing `m` reuses the shared secret.
    #[cfg_attr(not(feature = "test-support"), allow(unreachable_pub))]
    #[doc(hidden)]
    pub fn encapsulate_with(&self, m: &[u8; 32]) -> Result<KemEncapsulation, SealError> {
        let key = Self::parse(&self.0).map_err(|_| SealError::InvalidRecipientKey)?;
        let mut m = B32::from(*m);
        let (ct, mut shared) = key.encapsulate_deterministic(&m);
        m.zeroize();
        let mut ciphertext = Box::new([0u8; KEM_CIPHERTEXT_LEN]);
        ciphertext.copy_from_slice(ct.as_slice());
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(shared.as_slice());
        shared.zeroize();
        Ok(KemEncapsulation {
            ciphertext,
            shared: secret,
        })
    }

    /// A short fingerprint for debug logs.
    pub fn short(&self) -> String {
        hex::encode(self.0.get(..4).unwrap_or_default())
    }
}

impl std::fmt::Debug for KemPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KemPublic({}…)", self.short())
    }
}

/// One ML-KEM encapsulation: the ciphertext that travels in a hybrid
/// envelope and the shared secret (wiped on drop; no `Debug`).
#[derive(ZeroizeOnDrop)]
pub struct KemEncapsulation {
    #[zeroize(skip)]
    pub(crate) ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>,
    pub(crate) shared: Zeroizing<[u8; 32]>,
}

impl KemEncapsulation {
    /// Restores a stored encapsulation (a pending one, resent until the
    /// peer answers).
    pub(crate) fn from_parts(ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>, shared: [u8; 32]) -> Self {
        Self {
            ciphertext,
            shared: Zeroizing::new(shared),
        }
    }

    /// The ciphertext.
    pub fn ciphertext(&self) -> &[u8; KEM_CIPHERTEXT_LEN] {
        &self.ciphertext
    }

    /// The pairwise secret this encapsulation establishes with the holder
    /// of `recipient` (the key it was made to).
    pub fn pairwise(&self, recipient: &KemPublic) -> PairwiseKey {
        pairwise_from(&self.shared, &self.ciphertext, recipient.as_bytes())
    }
}

/// `P = HKDF-SHA256(ikm = ss_M, salt = "", info = "sotto/pq-pairwise/v1" ||
/// ct_M || ek_M)`: the pairwise post-quantum secret two devices mix into
/// every later envelope (version 4).
pub(super) fn pairwise_from(
    shared: &[u8; 32],
    ciphertext: &[u8; KEM_CIPHERTEXT_LEN],
    recipient: &[u8],
) -> PairwiseKey {
    let info = [KEM_PAIRWISE_INFO, ciphertext.as_slice(), recipient].concat();
    PairwiseKey(derive_key(shared, &[], &info))
}

/// A pairwise post-quantum secret shared by two devices (DESIGN §5.1).
/// Wiped on drop; no `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct PairwiseKey(pub(crate) Zeroizing<[u8; 32]>);

impl PairwiseKey {
    /// Wraps stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes, for the (encrypted) local store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}
