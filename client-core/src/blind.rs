//! Key blinding: per-epoch mailbox IDs that only the inbox owner can read
//! (DESIGN §4, Tor v3 onion-service style).
//!
//! An inbox key is an ed25519 key `I` with public point `P`. For each epoch
//! `e` both a sender (who knows only `P`) and the owner (who knows the seed)
//! derive the same blinded key `B_e = h_e · P` and mailbox
//! `SHA-256("sotto/mailbox/v1" || B_e)`; only the owner knows the blinded
//! secret `b_e = h_e · a` that signs fetch / ack / subscribe requests. The
//! relay sees `B_e` and the mailbox but never `P`, and without `P` the
//! mailboxes of two epochs cannot be linked.
//!
//! Every step composes ed25519-dalek / curve25519-dalek / sha2; the
//! derivation is pinned byte for byte by libsodium-computed vectors in
//! `tests/vectors/blinding.json`.

use curve25519_dalek::Scalar;
use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha512};
use sotto_proto::{BlindedKey, Challenge, KeyError, MailboxId, request_signing_message};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::epoch::Epoch;

/// Domain separation for the blinding factor `h_e`.
pub const BLIND_TAG: &[u8] = b"sotto/blind/v1";
/// Domain separation for the blinded nonce prefix `n_e`.
pub const BLIND_PREFIX_TAG: &[u8] = b"sotto/blind-prefix/v1";

/// The secret half of an inbox key: a 32-byte ed25519 seed.
///
/// It signs nothing itself; it only yields a [`BlindedInbox`] per epoch.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct InboxKey {
    seed: [u8; 32],
}

impl InboxKey {
    /// Restores an inbox key from its persisted seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { seed }
    }

    /// A fresh inbox key from the operating system's random number generator.
    ///
    /// # Panics
    ///
    /// If the operating system cannot supply randomness; no key can be made
    /// safely without it.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("invariant: the OS random number generator is available");
        Self { seed }
    }

    /// The seed, for persisting in the (encrypted) local store. Never log it.
    pub fn seed_bytes(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public inbox key `P`, published in directory entries and contact
    /// cards.
    pub fn public(&self) -> InboxPublic {
        InboxPublic::from_verifying_key(SigningKey::from_bytes(&self.seed).verifying_key())
    }

    /// The blinded key pair for `epoch`: what fetches, acks and subscribes.
    pub fn blind(&self, epoch: Epoch) -> BlindedInbox {
        // `a` (clamped, reduced mod l) and `prefix`, split from SHA-512(seed)
        // exactly as RFC 8032 key generation does.
        let expanded = ExpandedSecretKey::from(&self.seed);
        let public = VerifyingKey::from(&expanded);
        let h = blinding_factor(public.as_bytes(), epoch);
        let scalar = h * expanded.scalar;
        let blinded_public = VerifyingKey::from(public.to_edwards() * h);
        let hash_prefix = blinded_prefix(&expanded.hash_prefix, blinded_public.as_bytes());
        BlindedInbox {
            secret: ExpandedSecretKey {
                scalar,
                hash_prefix,
            },
            public: blinded_public,
            epoch,
        }
    }
}

/// `h_e = SHA-512("sotto/blind/v1" || P || be64(e)) mod l`. Public: anyone
/// who knows `P` computes it.
fn blinding_factor(public: &[u8; 32], epoch: Epoch) -> Scalar {
    let digest: [u8; 64] = Sha512::new()
        .chain_update(BLIND_TAG)
        .chain_update(public)
        .chain_update(epoch.get().to_be_bytes())
        .finalize()
        .into();
    Scalar::from_bytes_mod_order_wide(&digest)
}

/// `n_e = SHA-512("sotto/blind-prefix/v1" || prefix || B_e)[0..32]`.
///
/// A fresh nonce prefix per epoch, derived from the secret prefix: reusing
/// the unblinded prefix with a different scalar would make RFC 8032 nonces
/// repeat across keys, which leaks the secret scalar.
fn blinded_prefix(prefix: &[u8; 32], blinded_public: &[u8; 32]) -> [u8; 32] {
    let digest: Zeroizing<[u8; 64]> = Zeroizing::new(
        Sha512::new()
            .chain_update(BLIND_PREFIX_TAG)
            .chain_update(prefix)
            .chain_update(blinded_public)
            .finalize()
            .into(),
    );
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest[..32]);
    out
}

/// A public inbox key `P`: enough to compute any epoch's mailbox and put
/// into it, never enough to read it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InboxPublic {
    key: VerifyingKey,
}

impl InboxPublic {
    fn from_verifying_key(key: VerifyingKey) -> Self {
        Self { key }
    }

    /// Parses a public inbox key.
    ///
    /// Refuses anything that is not the canonical encoding of an ed25519
    /// point outside the small-order subgroup: a sender and the owner must
    /// hash the very same bytes, and a small-order `P` would give a blinded
    /// key that `verify_strict` refuses, i.e. a mailbox nobody can read.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::NotAPoint)?;
        if key.is_weak() || key.to_edwards().compress().as_bytes() != bytes {
            return Err(KeyError::NotAPoint);
        }
        Ok(Self { key })
    }

    /// Parses a public inbox key from wire bytes of any length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: &[u8; 32] = bytes.try_into().map_err(|_| KeyError::Length {
            expected: 32,
            got: bytes.len(),
        })?;
        Self::from_bytes(bytes)
    }

    /// The 32-byte compressed point.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    fn blinded_verifying_key(&self, epoch: Epoch) -> VerifyingKey {
        let h = blinding_factor(self.key.as_bytes(), epoch);
        VerifyingKey::from(self.key.to_edwards() * h)
    }

    /// `B_e`, the blinded public key for `epoch`.
    pub fn blinded_key(&self, epoch: Epoch) -> [u8; 32] {
        self.blinded_verifying_key(epoch).to_bytes()
    }

    /// The mailbox a sender puts into for this inbox during `epoch`.
    pub fn mailbox(&self, epoch: Epoch) -> MailboxId {
        MailboxId::for_key_bytes(&self.blinded_key(epoch))
    }

    /// A short fingerprint for debug logs; never log the full key.
    pub fn short(&self) -> String {
        hex::encode(&self.as_bytes()[..4])
    }
}

impl std::fmt::Debug for InboxPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InboxPublic({}…)", self.short())
    }
}

/// An inbox key blinded for one epoch: `(b_e, n_e)` and `B_e`.
///
/// Signs mailbox requests; the secret halves are wiped on drop (by
/// ed25519-dalek's `ExpandedSecretKey`).
pub struct BlindedInbox {
    secret: ExpandedSecretKey,
    public: VerifyingKey,
    epoch: Epoch,
}

impl BlindedInbox {
    /// `B_e`, sent with every fetch / ack / subscribe.
    pub fn blinded_key(&self) -> BlindedKey {
        BlindedKey::from_slice(self.public.as_bytes())
            .expect("invariant: a compressed curve point always decompresses")
    }

    /// The mailbox ID of this epoch (the same one senders compute from `P`).
    pub fn mailbox_id(&self) -> MailboxId {
        MailboxId::for_key_bytes(self.public.as_bytes())
    }

    /// The epoch this key is blinded for.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// An RFC 8032 signature over `message` with the blinded key; verifies
    /// with `verify_strict` under `B_e`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        raw_sign::<Sha512>(&self.secret, message, &self.public).to_bytes()
    }

    /// Signs a mailbox request: `"sotto/req/v1" || challenge || body`, as
    /// checked by [`BlindedKey::authorize`].
    pub fn sign_request(&self, challenge: &Challenge, body: &[u8]) -> [u8; 64] {
        self.sign(&request_signing_message(challenge, body))
    }
}

/// The intermediate values of one blinding, for the known-answer tests only.
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub struct BlindingInternals {
    /// `h_e`, canonical little-endian.
    pub h_e: [u8; 32],
    /// `b_e`, canonical little-endian (secret).
    pub b_e: Zeroizing<[u8; 32]>,
    /// `n_e` (secret).
    pub n_e: Zeroizing<[u8; 32]>,
}

/// Exposes `h_e`, `b_e` and `n_e` so `tests/blinding_vectors.rs` can check
/// every field against libsodium. Not part of the API.
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub fn blinding_internals(key: &InboxKey, epoch: Epoch) -> BlindingInternals {
    let blinded = key.blind(epoch);
    BlindingInternals {
        h_e: blinding_factor(key.public().as_bytes(), epoch).to_bytes(),
        b_e: Zeroizing::new(blinded.secret.scalar.to_bytes()),
        n_e: Zeroizing::new(blinded.secret.hash_prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signature;
    use proptest::prelude::*;

    fn shares_a_window(a: &[u8; 32], b: &[u8; 32]) -> bool {
        a.windows(8).any(|w| b.windows(8).any(|v| v == w))
    }

    #[test]
    fn owner_and_sender_derive_the_same_mailbox() {
        let key = InboxKey::from_seed([7; 32]);
        let epoch = Epoch::new(493_000);
        let blinded = key.blind(epoch);
        assert_eq!(blinded.mailbox_id(), key.public().mailbox(epoch));
        assert_eq!(
            blinded.blinded_key().as_bytes(),
            &key.public().blinded_key(epoch)
        );
        assert_eq!(blinded.epoch(), epoch);
    }

    #[test]
    fn public_key_round_trips_and_refuses_bad_points() {
        let public = InboxKey::from_seed([3; 32]).public();
        assert_eq!(InboxPublic::from_bytes(public.as_bytes()), Ok(public));
        assert_eq!(InboxPublic::from_slice(public.as_bytes()), Ok(public));
        // The identity point has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(InboxPublic::from_bytes(&identity), Err(KeyError::NotAPoint));
        // y + p for small y encodes the same point as y, non-canonically.
        let mut checked = 0;
        for y in 0u8..19 {
            let mut canonical = [0u8; 32];
            canonical[0] = y;
            let Ok(point) = InboxPublic::from_bytes(&canonical) else {
                continue;
            };
            let mut non_canonical = [0xffu8; 32];
            non_canonical[0] = 0xed + y;
            non_canonical[31] = 0x7f;
            assert!(VerifyingKey::from_bytes(&non_canonical).is_ok());
            assert_eq!(
                InboxPublic::from_bytes(&non_canonical),
                Err(KeyError::NotAPoint)
            );
            assert_eq!(point.as_bytes(), &canonical);
            checked += 1;
        }
        assert!(checked > 0, "some small y is a valid large-order point");
        assert_eq!(
            InboxPublic::from_slice(&[1; 31]),
            Err(KeyError::Length {
                expected: 32,
                got: 31
            })
        );
    }

    #[test]
    fn debug_shows_a_fingerprint_only() {
        let public = InboxKey::from_seed([3; 32]).public();
        let shown = format!("{public:?}");
        assert!(shown.contains(&public.short()));
        assert!(!shown.contains(&hex::encode(public.as_bytes())));
    }

    #[test]
    fn generated_keys_differ() {
        let a = InboxKey::generate();
        let b = InboxKey::generate();
        assert_ne!(a.seed_bytes(), b.seed_bytes());
        let restored = InboxKey::from_seed(*a.seed_bytes());
        assert_eq!(restored.public(), a.public());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn blinded_signatures_verify_and_authorize(
            seed in any::<[u8; 32]>(),
            epoch in any::<u64>(),
            challenge in any::<[u8; 32]>(),
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let key = InboxKey::from_seed(seed);
            let blinded = key.blind(Epoch::new(epoch));
            let signature = blinded.sign(&body);
            prop_assert!(blinded
                .public
                .verify_strict(&body, &Signature::from_bytes(&signature))
                .is_ok());

            let challenge = Challenge::from_bytes(challenge);
            let request = blinded.sign_request(&challenge, &body);
            let mailbox = key.public().mailbox(Epoch::new(epoch));
            prop_assert_eq!(
                blinded.blinded_key().authorize(&mailbox, &challenge, &body, &request),
                Ok(())
            );
        }

        #[test]
        fn epochs_share_nothing(seed in any::<[u8; 32]>(), epoch in 0u64..u64::MAX) {
            let key = InboxKey::from_seed(seed);
            let public = key.public();
            let this = key.blind(Epoch::new(epoch));
            let next = key.blind(Epoch::new(epoch).next());
            let (b1, b2) = (*this.blinded_key().as_bytes(), *next.blinded_key().as_bytes());
            prop_assert_ne!(b1, b2);
            prop_assert_ne!(this.mailbox_id(), next.mailbox_id());
            prop_assert!(!shares_a_window(&b1, public.as_bytes()));
            prop_assert!(!shares_a_window(&b2, public.as_bytes()));
            prop_assert!(!shares_a_window(&b1, &b2));
            prop_assert!(!shares_a_window(this.mailbox_id().as_bytes(), next.mailbox_id().as_bytes()));
        }

        #[test]
        fn a_signature_is_valid_in_its_own_epoch_only(
            seed in any::<[u8; 32]>(),
            epoch in 0u64..u64::MAX,
            challenge in any::<[u8; 32]>(),
        ) {
            let key = InboxKey::from_seed(seed);
            let this = key.blind(Epoch::new(epoch));
            let next = key.blind(Epoch::new(epoch).next());
            let challenge = Challenge::from_bytes(challenge);
            let signature = this.sign_request(&challenge, b"fetch");
            prop_assert!(next.blinded_key().verify(&challenge, b"fetch", &signature).is_err());
            prop_assert!(next
                .public
                .verify_strict(b"fetch", &Signature::from_bytes(&this.sign(b"fetch")))
                .is_err());
            // Nor does the old key open the new epoch's mailbox.
            prop_assert!(this
                .blinded_key()
                .authorize(&next.mailbox_id(), &challenge, b"fetch", &signature)
                .is_err());
        }
    }
}
