//! Directory slots: opaque values under 32-byte IDs, written only by the key
//! that first claimed them.

use crate::mailbox::KeyError;

/// Domain separation for slot write signatures.
pub const SLOT_TAG: &[u8] = b"sotto/slot/v1";
/// Domain separation for slot writes that hand the slot to a new owner.
pub const SLOT_TRANSFER_TAG: &[u8] = b"sotto/slot-transfer/v1";

/// A 32-byte slot ID (`HMAC-SHA256(K_dir, ...)`, computed by clients).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId([u8; 32]);

impl SlotId {
    /// Parses 32 wire bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Length {
            expected: 32,
            got: bytes.len(),
        })?;
        Ok(Self(bytes))
    }

    /// Wraps 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The ID's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SlotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotId({}…)", hex::encode(&self.0[..4]))
    }
}

/// The bytes a slot owner signs: `"sotto/slot/v1" || slot_id || be64(version) || value`.
pub fn slot_signing_message(slot: &SlotId, version: u64, value: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SLOT_TAG.len() + 32 + 8 + value.len());
    message.extend_from_slice(SLOT_TAG);
    message.extend_from_slice(slot.as_bytes());
    message.extend_from_slice(&version.to_be_bytes());
    message.extend_from_slice(value);
    message
}

/// The bytes the current owner signs to write a slot *and* hand it to
/// `new_owner`: `"sotto/slot-transfer/v1" || slot_id || be64(version) ||
/// value || new_owner`. A distinct tag, so no plain write's signature can
/// be replayed as a transfer.
pub fn slot_transfer_signing_message(
    slot: &SlotId,
    version: u64,
    value: &[u8],
    new_owner: &[u8; 32],
) -> Vec<u8> {
    let mut message = Vec::with_capacity(SLOT_TRANSFER_TAG.len() + 32 + 8 + value.len() + 32);
    message.extend_from_slice(SLOT_TRANSFER_TAG);
    message.extend_from_slice(slot.as_bytes());
    message.extend_from_slice(&version.to_be_bytes());
    message.extend_from_slice(value);
    message.extend_from_slice(new_owner);
    message
}
