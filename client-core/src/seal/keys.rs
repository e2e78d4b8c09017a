//! The envelope key: an x25519 key pair a device publishes in its card
//! so senders can seal to it.

use sotto_proto::KeyError;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{ZeroizeOnDrop, Zeroizing};

/// A device's x25519 envelope secret `E` (DESIGN §3). Wiped on drop; no
/// `Debug`.
#[derive(ZeroizeOnDrop)]
pub struct EnvelopeSecret {
    pub(super) secret: StaticSecret,
    #[zeroize(skip)]
    pub(super) public: PublicKey,
}

impl EnvelopeSecret {
    /// A fresh envelope key from the operating system's random number
    /// generator.
    ///
    /// # Panics
    ///
    /// If the operating system cannot supply randomness; no key can be made
    /// safely without it.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())
            .expect("invariant: the OS random number generator is available");
        Self::from_bytes(*bytes)
    }

    /// Restores a persisted envelope secret.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The secret bytes, for persisting in the (encrypted) local store.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public envelope key senders seal to.
    pub fn public(&self) -> EnvelopePublic {
        EnvelopePublic(self.public.to_bytes())
    }
}

/// A device's public envelope key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnvelopePublic(pub(super) [u8; 32]);

impl EnvelopePublic {
    /// Wraps 32 bytes. Every 32 bytes are an x25519 public key; a low-order
    /// one is refused when sealing ([`SealError::InvalidRecipientKey`]).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses wire bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        bytes.try_into().map(Self).map_err(|_| KeyError::Length {
            expected: 32,
            got: bytes.len(),
        })
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short fingerprint for debug logs; never log the full key.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl std::fmt::Debug for EnvelopePublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvelopePublic({}…)", self.short())
    }
}
