//! What admin, issuance and token-key signatures cover, so the relay and
//! clients build byte-identical messages. Each tag keeps a signature made
//! for one purpose from ever verifying for another.

use sha2::{Digest, Sha256};

use crate::Challenge;

/// Admin requests: `ADMIN_TAG || challenge || body`.
pub const ADMIN_TAG: &[u8] = b"sotto/admin/v1";
/// Token issuance: `ISSUE_TAG || challenge || be32(count) || blinded elements`.
pub const ISSUE_TAG: &[u8] = b"sotto/issue/v1";
/// A period's token key: `TOKEN_KEY_TAG || be64(key_id) || public_key || be64(valid_until)`.
pub const TOKEN_KEY_TAG: &[u8] = b"sotto/token-key/v1";
/// Registration token hashes: `SHA-256(REGISTRATION_TAG || secret)`.
pub const REGISTRATION_TAG: &[u8] = b"sotto/registration/v1";
/// Length of a registration token secret.
pub const REGISTRATION_TOKEN_LEN: usize = 32;
/// Length of an access token's random input.
pub const TOKEN_INPUT_LEN: usize = 32;
/// Length of a VOPRF output (ristretto255-SHA512).
pub const TOKEN_OUTPUT_LEN: usize = 64;
/// Length of a blinded or evaluated element (a compressed ristretto255 point).
pub const TOKEN_ELEMENT_LEN: usize = 32;

/// The message an admin request's signature covers.
pub fn admin_signing_message(challenge: &Challenge, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(ADMIN_TAG.len() + 32 + body.len());
    message.extend_from_slice(ADMIN_TAG);
    message.extend_from_slice(challenge.as_bytes());
    message.extend_from_slice(body);
    message
}

/// The message an issuance request's signature covers.
pub fn issue_signing_message<E: AsRef<[u8]>>(challenge: &Challenge, elements: &[E]) -> Vec<u8> {
    let mut message =
        Vec::with_capacity(ISSUE_TAG.len() + 32 + 4 + elements.len() * TOKEN_ELEMENT_LEN);
    message.extend_from_slice(ISSUE_TAG);
    message.extend_from_slice(challenge.as_bytes());
    message.extend_from_slice(&(elements.len() as u32).to_be_bytes());
    for element in elements {
        // Elements are fixed-length (checked by the relay), so plain
        // concatenation is unambiguous.
        message.extend_from_slice(element.as_ref());
    }
    message
}

/// The message the issuer key signs for a period's token key.
pub fn token_key_signing_message(key_id: u64, public_key: &[u8], valid_until: u64) -> Vec<u8> {
    let mut message = Vec::with_capacity(TOKEN_KEY_TAG.len() + 16 + public_key.len());
    message.extend_from_slice(TOKEN_KEY_TAG);
    message.extend_from_slice(&key_id.to_be_bytes());
    message.extend_from_slice(public_key);
    message.extend_from_slice(&valid_until.to_be_bytes());
    message
}

/// The hash under which the relay stores a registration token.
pub fn registration_token_hash(secret: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(REGISTRATION_TAG);
    hasher.update(secret);
    hasher.finalize().into()
}
