//! Mailbox IDs and the owner check for fetch / ack / subscribe (DESIGN §4).
//!
//! A mailbox ID is `SHA-256("sotto/mailbox/v1" || B)` for a blinded public
//! key `B`. Anyone may put into a mailbox; only the holder of `B`'s secret may
//! read, ack or subscribe, proven by an ed25519 signature over
//! `"sotto/req/v1" || challenge || body`. The challenge is fresh per
//! connection, so a captured request is worthless on any other connection,
//! and the tag keeps these signatures from being valid for anything else.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// Domain separation for mailbox IDs.
pub const MAILBOX_TAG: &[u8] = b"sotto/mailbox/v1";
/// Domain separation for signed mailbox requests.
pub const REQUEST_TAG: &[u8] = b"sotto/req/v1";
/// Bytes in a connection challenge.
pub const CHALLENGE_LEN: usize = 32;

/// A malformed key or ID on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Wrong number of bytes.
    #[error("expected {expected} bytes, got {got}")]
    Length {
        /// Required length.
        expected: usize,
        /// Received length.
        got: usize,
    },
    /// Not a valid compressed Edwards point.
    #[error("not a valid ed25519 public key")]
    NotAPoint,
}

/// The owner check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The key does not hash to the mailbox being accessed.
    #[error("the key does not belong to this mailbox")]
    WrongMailbox,
    /// The signature is malformed or does not verify (strictly) under the key.
    #[error("the request signature does not verify")]
    BadSignature,
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], KeyError> {
    bytes.try_into().map_err(|_| KeyError::Length {
        expected: N,
        got: bytes.len(),
    })
}

/// A 32-byte mailbox ID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MailboxId([u8; 32]);

impl MailboxId {
    /// Parses 32 wire bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        fixed(bytes).map(Self)
    }

    /// Wraps 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The ID's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The mailbox of blinded key bytes `key` (no point validation needed:
    /// hashing is defined for any 32 bytes).
    pub fn for_key_bytes(key: &[u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(MAILBOX_TAG);
        hasher.update(key);
        Self(hasher.finalize().into())
    }

    /// A short fingerprint for debug logs; never log the full ID.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl std::fmt::Debug for MailboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MailboxId({}…)", self.short())
    }
}

/// A blinded per-epoch public key `B_e`, validated as a curve point.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BlindedKey {
    bytes: [u8; 32],
    key: VerifyingKey,
}

impl BlindedKey {
    /// Parses and validates 32 wire bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = fixed(bytes)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAPoint)?;
        Ok(Self { bytes, key })
    }

    /// The compressed point.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The mailbox this key owns.
    pub fn mailbox_id(&self) -> MailboxId {
        MailboxId::for_key_bytes(&self.bytes)
    }

    /// Checks that this key owns `mailbox` and signed `body` on the
    /// connection with `challenge`.
    pub fn authorize(
        &self,
        mailbox: &MailboxId,
        challenge: &Challenge,
        body: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        if self.mailbox_id() != *mailbox {
            return Err(AuthError::WrongMailbox);
        }
        self.verify(challenge, body, signature)
    }

    /// Verifies `signature` over `"sotto/req/v1" || challenge || body` with
    /// `verify_strict` (no malleable or small-order signatures).
    pub fn verify(
        &self,
        challenge: &Challenge,
        body: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        let signature: [u8; 64] = signature.try_into().map_err(|_| AuthError::BadSignature)?;
        let signature = Signature::from_bytes(&signature);
        self.key
            .verify_strict(&request_signing_message(challenge, body), &signature)
            .map_err(|_| AuthError::BadSignature)
    }
}

impl std::fmt::Debug for BlindedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlindedKey({}…)", hex::encode(&self.bytes[..4]))
    }
}

/// The per-connection random challenge sent in `Welcome`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Challenge([u8; CHALLENGE_LEN]);

impl Challenge {
    /// Wraps challenge bytes (the relay draws them from the OS RNG).
    pub const fn from_bytes(bytes: [u8; CHALLENGE_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses wire bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        fixed(bytes).map(Self)
    }

    /// The challenge bytes.
    pub fn as_bytes(&self) -> &[u8; CHALLENGE_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Challenge(..)")
    }
}

/// The exact bytes a mailbox owner signs: `"sotto/req/v1" || challenge || body`.
pub fn request_signing_message(challenge: &Challenge, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(REQUEST_TAG.len() + CHALLENGE_LEN + body.len());
    message.extend_from_slice(REQUEST_TAG);
    message.extend_from_slice(challenge.as_bytes());
    message.extend_from_slice(body);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn signed(signer: &SigningKey, challenge: &Challenge, body: &[u8]) -> Vec<u8> {
        signer
            .sign(&request_signing_message(challenge, body))
            .to_bytes()
            .to_vec()
    }

    #[test]
    fn mailbox_id_is_sha256_of_tag_and_key() {
        // Matches the known-answer vector in client-core/tests/vectors/blinding.json.
        let key = hex::decode("bb2c335f4f50052d85431b1105e63e00a33fc2e5ba3c971412381499cc640c29")
            .unwrap();
        let id = MailboxId::for_key_bytes(&key.try_into().unwrap());
        assert_eq!(
            hex::encode(id.as_bytes()),
            "0306d8961a1a263699a585d42a3c457662204b47a334e7c86cc2884f9aa0d0f4"
        );
    }

    #[test]
    fn owner_signature_authorizes_its_own_mailbox_only() {
        let owner = key(1);
        let blinded = BlindedKey::from_slice(owner.verifying_key().as_bytes()).unwrap();
        let challenge = Challenge::from_bytes([9; 32]);
        let sig = signed(&owner, &challenge, b"body");
        assert_eq!(
            blinded.authorize(&blinded.mailbox_id(), &challenge, b"body", &sig),
            Ok(())
        );
        let other = MailboxId::for_key_bytes(key(2).verifying_key().as_bytes());
        assert_eq!(
            blinded.authorize(&other, &challenge, b"body", &sig),
            Err(AuthError::WrongMailbox)
        );
    }

    #[test]
    fn a_signature_is_bound_to_its_challenge_and_body() {
        let owner = key(1);
        let blinded = BlindedKey::from_slice(owner.verifying_key().as_bytes()).unwrap();
        let challenge = Challenge::from_bytes([9; 32]);
        let sig = signed(&owner, &challenge, b"body");
        let other_connection = Challenge::from_bytes([8; 32]);
        assert_eq!(
            blinded.verify(&other_connection, b"body", &sig),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            blinded.verify(&challenge, b"other body", &sig),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            blinded.verify(&challenge, b"body", &sig[..63]),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn malformed_keys_are_typed_errors() {
        assert_eq!(
            BlindedKey::from_slice(&[1; 31]),
            Err(KeyError::Length {
                expected: 32,
                got: 31
            })
        );
        assert_eq!(
            MailboxId::from_slice(&[1; 33]),
            Err(KeyError::Length {
                expected: 32,
                got: 33
            })
        );
    }
}
