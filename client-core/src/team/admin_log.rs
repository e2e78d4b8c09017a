//! The admin log (DESIGN §6 "Admins"): every admin action, appended to a
//! chain of directory slots only admins can find, open or write.
//!
//! Everything derives from the team key `T`, which only admins' devices
//! hold: the log key (`HKDF(T, "sotto/admin-log/v1")`), entry `i`'s slot
//! ID (`HMAC(log key, "sotto/admin-log-slot/v1" || be64(i))`), the key
//! that seals its value (bound to the slot, padded to a bucket like every
//! directory value) and the key that owns the slot. A member without `T`
//! cannot compute a slot ID, open a value or write one; the relay sees
//! opaque, bucket-sized slots like any other.
//!
//! Each entry is signed by the acting admin's user key `U` and names its
//! own index, so an entry cannot be forged by another admin in someone
//! else's name, nor moved to another place in the log.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use sotto_proto::client::{AdminLogEntry, SignedAdminLogEntry};
use sotto_proto::{Blob, Message as _, SlotId};
use zeroize::Zeroizing;

use super::directory::{DirectoryError, TeamSecrets};
use crate::canonical;
use crate::{open_symmetric, seal_symmetric};

/// HKDF info of the log key, from `T`'s secret.
const LOG_KEY: &[u8] = b"sotto/admin-log/v1";
/// HMAC prefix of entry slot IDs.
const LOG_SLOT: &[u8] = b"sotto/admin-log-slot/v1";
/// HKDF info of the value sealing key, from the log key.
const LOG_VALUE: &[u8] = b"sotto/admin-log-value/v1";
/// HKDF info of the slots' owner key, from the log key.
const LOG_OWNER: &[u8] = b"sotto/admin-log-owner/v1";
use super::tags::ADMIN_LOG_ENTRY as LOG_ENTRY;

/// Why one log entry was refused (it is never shown as an action).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminLogError {
    /// The value does not open under the admins' log key.
    #[error(
        "it does not decrypt under the admins' log key (altered on the relay, or not written by an admin)"
    )]
    Undecryptable,
    /// The value opened but is not a signed entry.
    #[error("it is not a well-formed signed log entry")]
    Malformed,
    /// The signature does not verify under the key it names.
    #[error("its signature does not verify (the entry was altered or is unsigned)")]
    BadSignature,
    /// Signed, but by a key that is not the named actor's.
    #[error("it claims to be {0}'s, but is not signed by any user key known for {0}")]
    NotTheActor(String),
    /// The entry names another index than the slot it was read from.
    #[error("it names index {named} but was read at {found} (moved or replayed)")]
    Moved {
        /// The index the entry names.
        named: u64,
        /// The index it was read at.
        found: u64,
    },
}

/// One verified admin action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdminAction {
    /// Its place in the log (0: the first).
    pub index: u64,
    /// When, unix seconds (the actor's clock).
    pub at: u64,
    /// The acting admin.
    pub actor: String,
    /// What was done (`invite`, `revoke`, `admin-add`, …).
    pub action: String,
    /// The member acted on (empty: none).
    pub subject: String,
    /// The registration token hash an invite or a recorded account named.
    #[serde(skip)]
    pub registration_token_hash: Option<[u8; 32]>,
}

/// An entry as read: verified, or refused with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminLogLine {
    /// Decrypted and signed by the actor it names.
    Valid(AdminAction),
    /// Not shown as an action.
    Refused {
        /// Its place in the log.
        index: u64,
        /// Why.
        reason: AdminLogError,
    },
}

/// The keys of the admin log, derived from `T`. No `Debug`.
pub struct AdminLog {
    key: Zeroizing<[u8; 32]>,
}

impl AdminLog {
    /// The log of the team whose `T` this is.
    pub fn new(team: &TeamSecrets) -> Self {
        Self {
            key: hkdf(team.team.as_bytes(), LOG_KEY),
        }
    }

    /// The slot of entry `index`.
    pub fn slot(&self, index: u64) -> SlotId {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(self.key.as_slice())
            .expect("invariant: HMAC accepts any key length");
        mac.update(LOG_SLOT);
        mac.update(&index.to_be_bytes());
        SlotId::from_bytes(mac.finalize().into_bytes().into())
    }

    /// The key that owns every log slot (an admin claims a new slot with
    /// it; nobody without `T` can write one).
    pub fn owner(&self) -> SigningKey {
        SigningKey::from_bytes(&hkdf(self.key.as_slice(), LOG_OWNER))
    }

    /// Seals a signed entry for `slot` (bound to it, padded to a bucket).
    pub fn seal(&self, slot: &SlotId, signed: &[u8]) -> Result<Blob, DirectoryError> {
        let bound = Zeroizing::new([slot.as_bytes().as_slice(), signed].concat());
        Ok(seal_symmetric(
            &hkdf(self.key.as_slice(), LOG_VALUE),
            &bound,
        )?)
    }

    /// Opens the value read from entry `index`'s slot and checks its
    /// signature and index; `known_key(actor, key)` says whether `key` is
    /// one of `actor`'s user keys.
    pub fn open(
        &self,
        index: u64,
        value: &[u8],
        known_key: impl Fn(&str, &[u8; 32]) -> bool,
    ) -> AdminLogLine {
        match self.open_entry(index, value, known_key) {
            Ok(action) => AdminLogLine::Valid(action),
            Err(reason) => AdminLogLine::Refused { index, reason },
        }
    }

    fn open_entry(
        &self,
        index: u64,
        value: &[u8],
        known_key: impl Fn(&str, &[u8; 32]) -> bool,
    ) -> Result<AdminAction, AdminLogError> {
        let slot = self.slot(index);
        let bound = open_symmetric(&hkdf(self.key.as_slice(), LOG_VALUE), value)
            .map_err(|_| AdminLogError::Undecryptable)?;
        let signed = bound
            .strip_prefix(slot.as_bytes().as_slice())
            .ok_or(AdminLogError::Undecryptable)?;
        let signed =
            canonical::decode::<SignedAdminLogEntry>(signed).ok_or(AdminLogError::Malformed)?;
        let user_key = <[u8; 32]>::try_from(signed.user_key.as_ref())
            .ok()
            .and_then(|key| VerifyingKey::from_bytes(&key).ok())
            .ok_or(AdminLogError::Malformed)?;
        let signature = <[u8; 64]>::try_from(signed.signature.as_ref())
            .map_err(|_| AdminLogError::BadSignature)?;
        user_key
            .verify_strict(
                &[LOG_ENTRY, &signed.entry].concat(),
                &Signature::from_bytes(&signature),
            )
            .map_err(|_| AdminLogError::BadSignature)?;
        let entry =
            canonical::decode::<AdminLogEntry>(&signed.entry).ok_or(AdminLogError::Malformed)?;
        // A hash is 32 bytes or absent: anything else would be dropped
        // here, and the entry shown as something it does not say.
        let registration_token_hash = match entry.registration_token_hash.len() {
            0 => None,
            _ => Some(
                <[u8; 32]>::try_from(entry.registration_token_hash.as_ref())
                    .map_err(|_| AdminLogError::Malformed)?,
            ),
        };
        if entry.index != index {
            return Err(AdminLogError::Moved {
                named: entry.index,
                found: index,
            });
        }
        if !known_key(&entry.actor, user_key.as_bytes()) {
            return Err(AdminLogError::NotTheActor(entry.actor));
        }
        Ok(AdminAction {
            index,
            at: entry.at,
            actor: entry.actor,
            action: entry.action,
            subject: entry.subject,
            registration_token_hash,
        })
    }
}

/// Signs `entry` with the actor's user key.
pub fn sign_log_entry(user_key: &SigningKey, entry: &AdminLogEntry) -> Vec<u8> {
    let entry = entry.encode_to_vec();
    let signature = user_key.sign(&[LOG_ENTRY, &entry].concat());
    SignedAdminLogEntry {
        entry: entry.into(),
        user_key: user_key.verifying_key().as_bytes().to_vec().into(),
        signature: signature.to_bytes().to_vec().into(),
    }
    .encode_to_vec()
}

fn hkdf(secret: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let hkdf = Hkdf::<Sha256>::new(None, secret);
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf.expand(info, key.as_mut())
        .expect("invariant: 32 bytes is a valid HKDF-SHA256 output length");
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, actor: &str) -> AdminLogEntry {
        AdminLogEntry {
            at: 7,
            actor: actor.into(),
            action: "revoke".into(),
            subject: "carol".into(),
            index,
            ..Default::default()
        }
    }

    #[test]
    fn entries_verify_only_signed_by_their_actor_in_their_slot() {
        let team = TeamSecrets::generate();
        let log = AdminLog::new(&team);
        let alice = SigningKey::from_bytes(&[1; 32]);
        let known = |actor: &str, key: &[u8; 32]| {
            actor == "alice" && key == alice.verifying_key().as_bytes()
        };
        let signed = sign_log_entry(&alice, &entry(3, "alice"));
        let value = log.seal(&log.slot(3), &signed).unwrap().into_bytes();
        let AdminLogLine::Valid(action) = log.open(3, &value, known) else {
            panic!("a good entry was refused");
        };
        assert_eq!(
            (action.actor.as_str(), action.subject.as_str()),
            ("alice", "carol")
        );
        // Read from another slot: the value is bound to its slot.
        assert_eq!(
            log.open(4, &value, known),
            AdminLogLine::Refused {
                index: 4,
                reason: AdminLogError::Undecryptable
            }
        );
        // Claiming another actor.
        let signed = sign_log_entry(&alice, &entry(3, "bob"));
        let value = log.seal(&log.slot(3), &signed).unwrap().into_bytes();
        assert!(matches!(
            log.open(3, &value, known),
            AdminLogLine::Refused {
                reason: AdminLogError::NotTheActor(_),
                ..
            }
        ));
        // A tampered byte of the sealed value.
        let mut value = log
            .seal(&log.slot(3), &sign_log_entry(&alice, &entry(3, "alice")))
            .unwrap()
            .into_bytes()
            .to_vec();
        let last = value.len() - 1;
        value[last] ^= 1;
        assert!(matches!(
            log.open(3, &value, known),
            AdminLogLine::Refused {
                reason: AdminLogError::Undecryptable,
                ..
            }
        ));
        // An entry whose body was changed after signing.
        let mut signed =
            SignedAdminLogEntry::decode(sign_log_entry(&alice, &entry(3, "alice")).as_slice())
                .unwrap();
        let mut body = AdminLogEntry::decode(signed.entry.as_ref()).unwrap();
        body.subject = "dave".into();
        signed.entry = body.encode_to_vec().into();
        let value = log
            .seal(&log.slot(3), &signed.encode_to_vec())
            .unwrap()
            .into_bytes();
        assert!(matches!(
            log.open(3, &value, known),
            AdminLogLine::Refused {
                reason: AdminLogError::BadSignature,
                ..
            }
        ));
        // Another team's T opens nothing.
        let other = AdminLog::new(&TeamSecrets::generate());
        assert_ne!(other.slot(3), log.slot(3));
    }
}
