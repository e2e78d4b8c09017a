//! Directory slots: `SlotGet` and owner-signed `SlotPut`.
//!
//! The first write binds the slot to its owner key; every later write must
//! be signed by that key and carry a higher version. Values are bucket-sized
//! like blobs, so a slot's size says nothing about what it holds.

use ed25519_dalek::{Signature, VerifyingKey};
use sotto_proto::wire::{self, ErrorCode};
use sotto_proto::{Bucket, SlotId, slot_signing_message, slot_transfer_signing_message};

use crate::refusal::Refusal;
use crate::relay::Relay;
use crate::storage::{SlotRecord, Storage};

fn slot_id(bytes: &[u8]) -> Result<SlotId, Refusal> {
    SlotId::from_slice(bytes)
        .map_err(|e| Refusal::new(ErrorCode::BadRequest, format!("slot_id: {e}")))
}

/// A validated, signature-checked slot write.
#[derive(Debug)]
pub(crate) struct SlotWrite {
    id: SlotId,
    record: SlotRecord,
    /// The key the slot passes to after this write, if it changes hands.
    new_owner: Option<[u8; 32]>,
}

impl SlotWrite {
    pub(crate) fn parse(put: wire::SlotPut, max_bytes: u32) -> Result<Self, Refusal> {
        let id = slot_id(&put.slot_id)?;
        if Bucket::of_len(put.value.len()).is_none() || put.value.len() > max_bytes as usize {
            return Err(Refusal::new(
                ErrorCode::BadBlobSize,
                format!(
                    "a slot value must be a bucket size of at most {max_bytes} bytes, not {}",
                    put.value.len()
                ),
            ));
        }
        let owner: [u8; 32] = put
            .owner_key
            .as_ref()
            .try_into()
            .map_err(|_| Refusal::new(ErrorCode::BadRequest, "owner_key must be 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&owner).map_err(|_| {
            Refusal::new(
                ErrorCode::BadRequest,
                "owner_key is not a valid ed25519 key",
            )
        })?;
        let signature: [u8; 64] = put.signature.as_ref().try_into().map_err(|_| {
            Refusal::new(
                ErrorCode::Unauthorized,
                "the slot signature must be 64 bytes",
            )
        })?;
        let new_owner: Option<[u8; 32]> = match put.new_owner_key.len() {
            0 => None,
            _ => {
                let new_owner: [u8; 32] = put.new_owner_key.as_ref().try_into().map_err(|_| {
                    Refusal::new(ErrorCode::BadRequest, "new_owner_key must be 32 bytes")
                })?;
                VerifyingKey::from_bytes(&new_owner).map_err(|_| {
                    Refusal::new(
                        ErrorCode::BadRequest,
                        "new_owner_key is not a valid ed25519 key",
                    )
                })?;
                Some(new_owner)
            }
        };
        let message = match &new_owner {
            Some(next) => slot_transfer_signing_message(&id, put.version, &put.value, next),
            None => slot_signing_message(&id, put.version, &put.value),
        };
        key.verify_strict(&message, &Signature::from_bytes(&signature))
            .map_err(|_| {
                Refusal::new(
                    ErrorCode::Unauthorized,
                    "the slot signature does not verify",
                )
            })?;
        Ok(Self {
            id,
            record: SlotRecord {
                version: put.version,
                owner,
                value: put.value,
            },
            new_owner,
        })
    }
}

impl<S: Storage> Relay<S> {
    /// Reads a slot.
    pub(crate) fn slot_get(&self, get: &wire::SlotGet) -> Result<wire::SlotValue, Refusal> {
        let id = slot_id(&get.slot_id)?;
        Ok(match self.storage().slot_get(&id)? {
            Some(record) => wire::SlotValue {
                found: true,
                version: record.version,
                value: record.value,
            },
            None => wire::SlotValue::default(),
        })
    }

    /// Writes a slot after the owner and version checks (not yet durable:
    /// the caller awaits group commit).
    pub(crate) fn slot_put(&self, write: SlotWrite) -> Result<(), Refusal> {
        // One writer at a time, so check-then-write cannot interleave.
        let _serial = self.slot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let existing = self.storage().slot_get(&write.id)?;
        let old_len = existing.as_ref().map_or(0, |r| r.value.len() as u64);
        if let Some(existing) = existing {
            if existing.owner != write.record.owner {
                return Err(Refusal::new(
                    ErrorCode::SlotWrongOwner,
                    "this slot belongs to another key",
                ));
            }
            if write.record.version <= existing.version {
                return Err(Refusal::new(
                    ErrorCode::SlotStaleVersion,
                    format!(
                        "version {} is not newer than the stored version {}",
                        write.record.version, existing.version
                    ),
                ));
            }
        }
        let growth = (write.record.value.len() as u64).saturating_sub(old_len);
        if self.storage().total_bytes() + growth > self.limits.disk_budget_bytes {
            return Err(Refusal::new(
                ErrorCode::DiskFull,
                "the relay's disk budget is exhausted",
            ));
        }
        let mut record = write.record;
        if let Some(next) = write.new_owner {
            record.owner = next;
        }
        self.storage().slot_put(&write.id, &record)?;
        Ok(())
    }
}
