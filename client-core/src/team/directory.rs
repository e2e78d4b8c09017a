//! The encrypted directory: slot IDs, slot value encryption, and the
//! verification of member entries and the roster.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use sotto_proto::client::{
    DeviceList, DirectoryEntry, InviteCert, Roster, SignedCard, SignedInviteCert, SignedRoster,
    Succession,
};
use sotto_proto::{Blob, Message as _, SlotId};
use zeroize::Zeroizing;

use super::tags;
use crate::canonical;
use crate::card::Card;
use crate::{open_symmetric, seal_symmetric};

/// A directory lookup or check failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// No entry for the handle.
    #[error("no member \"{0}\" in the team directory")]
    NotFound(String),
    /// The entry does not chain to the team key.
    #[error("the directory entry for \"{handle}\" is not valid ({reason}); it was refused")]
    Forged {
        /// The handle looked up.
        handle: String,
        /// What did not verify.
        reason: &'static str,
    },
    /// The roster does not verify or went back in version.
    #[error("the team roster is not valid ({0}); it was refused")]
    BadRoster(&'static str),
    /// A slot value did not decrypt under the directory key.
    #[error("a directory slot does not decrypt under the team's directory key")]
    Undecryptable,
    /// Encoding a value failed.
    #[error("cannot seal a directory value: {0}")]
    Seal(#[from] crate::SealError),
}

/// The admin's team secrets: `T` and the directory key. No `Debug`.
pub struct TeamSecrets {
    /// The team signing key `T`.
    pub team: SigningKey,
    /// `K_dir`.
    pub dir_key: Zeroizing<[u8; 32]>,
}

impl TeamSecrets {
    /// Fresh team secrets.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        let mut dir_key = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).expect("invariant: the OS random number generator works");
        getrandom::fill(dir_key.as_mut()).expect("invariant: the OS random number generator works");
        Self {
            team: SigningKey::from_bytes(&seed),
            dir_key,
        }
    }

    /// The directory view every member has.
    pub fn directory(&self) -> Directory {
        Directory::new(*self.dir_key, self.team.verifying_key())
    }

    /// The key that owns the roster slot (derived from `T`'s secret, so the
    /// relay never stores `T` itself).
    pub fn roster_owner(&self) -> SigningKey {
        let hkdf = Hkdf::<Sha256>::new(None, self.team.as_bytes());
        let mut seed = Zeroizing::new([0u8; 32]);
        hkdf.expand(tags::ROSTER_OWNER, seed.as_mut())
            .expect("invariant: 32 bytes is a valid HKDF-SHA256 output length");
        SigningKey::from_bytes(&seed)
    }

    /// Signs a directory key `dir_key` at `version` (the message members
    /// accept it in).
    pub fn sign_dir_key(&self, version: u64, dir_key: &[u8; 32]) -> Vec<u8> {
        self.team
            .sign(&dir_key_message(version, dir_key))
            .to_bytes()
            .to_vec()
    }

    /// Signs a roster of `handles` at `version` that names no admin.
    pub fn sign_roster(&self, version: u64, handles: &[String]) -> Vec<u8> {
        self.sign_roster_with(version, handles, &[], None)
    }

    /// Signs a roster of `handles` at `version` naming `admins` as the
    /// team's admins (the first is where members report their devices'
    /// relay accounts; empty: none) and the relay's token issuer as the
    /// team pins it (DESIGN §7).
    pub fn sign_roster_with(
        &self,
        version: u64,
        handles: &[String],
        admins: &[String],
        issuer: Option<&TokenIssuer>,
    ) -> Vec<u8> {
        self.sign_roster_fields(
            version,
            handles,
            admins.first().map_or("", |a| a),
            admins,
            issuer,
        )
    }

    /// Signs a roster field by field: `admin` (field 3) and `admins`
    /// (field 6) as given, for rosters of teams from before several admins
    /// (`admins` empty) and for the fuzz check that re-encodes any roster.
    pub fn sign_roster_fields(
        &self,
        version: u64,
        handles: &[String],
        admin: &str,
        admins: &[String],
        issuer: Option<&TokenIssuer>,
    ) -> Vec<u8> {
        let roster = Roster {
            version,
            handles: handles.to_vec(),
            admin: admin.to_owned(),
            admins: admins.to_vec(),
            issuer_key: issuer
                .map(|i| i.issuer_key.to_vec().into())
                .unwrap_or_default(),
            token_period_secs: issuer.map_or(0, |i| i.period_secs),
        }
        .encode_to_vec();
        let signature = self.team.sign(&[tags::ROSTER, &roster].concat());
        SignedRoster {
            roster: roster.into(),
            signature: signature.to_bytes().to_vec().into(),
        }
        .encode_to_vec()
    }
}

/// What `T` signs to hand out a new `K_dir`.
fn dir_key_message(version: u64, dir_key: &[u8; 32]) -> Vec<u8> {
    [tags::DIR_KEY, &version.to_be_bytes(), dir_key].concat()
}

/// Whether `signature` is `T`'s over a directory key at `version`.
pub fn verify_dir_key(
    team_key: &VerifyingKey,
    version: u64,
    dir_key: &[u8; 32],
    signature: &[u8],
) -> bool {
    ed25519_dalek::Signature::from_slice(signature).is_ok_and(|s| {
        team_key
            .verify_strict(&dir_key_message(version, dir_key), &s)
            .is_ok()
    })
}

/// What every member knows of the team: `K_dir` and `T`'s public key.
#[derive(Clone)]
pub struct Directory {
    dir_key: Zeroizing<[u8; 32]>,
    team_key: VerifyingKey,
}

/// The longest chain of user-key successions an entry may carry.
pub const MAX_SUCCESSIONS: usize = 64;

/// A member entry that verified along the whole chain.
#[derive(Debug)]
pub struct VerifiedEntry {
    /// The handle.
    pub handle: String,
    /// The member's current user key `U` (the last of `chain`).
    pub user_key: VerifyingKey,
    /// The invite key that vouched for the first user key.
    pub invite_key: [u8; 32],
    /// Every user key from the one the invite vouched for to the current
    /// one, each signed by the one before.
    pub chain: Vec<[u8; 32]>,
    /// Device-list version (higher wins).
    pub devices_version: u64,
    /// The member's devices, each with its signed card.
    pub devices: Vec<(Card, SignedCard)>,
}

/// A roster that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRoster {
    /// Version (a lower one than already seen is a rollback).
    pub version: u64,
    /// Member handles.
    pub handles: Vec<String>,
    /// The team admin's handle, if the roster names one (the first admin:
    /// members report their devices' relay accounts to it).
    pub admin: Option<String>,
    /// Every admin's handle as the roster lists them (empty in rosters
    /// from before several admins: then `admin` is the only one). See
    /// [`VerifiedRoster::admins`].
    pub admins_listed: Vec<String>,
    /// The token issuer the roster names (`None` in rosters from before it
    /// was recorded).
    pub issuer: Option<TokenIssuer>,
}

impl VerifiedRoster {
    /// The team's admins: the listed ones, or the one `admin` of a roster
    /// from before there could be several.
    pub fn admins(&self) -> Vec<String> {
        if self.admins_listed.is_empty() {
            self.admin.iter().cloned().collect()
        } else {
            self.admins_listed.clone()
        }
    }
}

/// The relay's token issuer as the team record (the `T`-signed roster)
/// names it: a modified relay that gives one member a token key of its own
/// must then break a check some member makes (DESIGN §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenIssuer {
    /// The relay's long-term issuer key, which signs every period key.
    pub issuer_key: [u8; 32],
    /// The relay's token period, seconds (0: unknown).
    pub period_secs: u64,
}

fn verify(key: &VerifyingKey, tag: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(signature) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    key.verify_strict(&[tag, message].concat(), &Signature::from_bytes(&signature))
        .is_ok()
}

fn verifying_key(bytes: &[u8]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(bytes.try_into().ok()?).ok()
}

/// Builds a member's entry: the invite key vouches for `U`, `U` signs the
/// device list.
pub fn build_entry(
    cert: &SignedInviteCert,
    handle: &str,
    invite_key: &SigningKey,
    user_key: &SigningKey,
    devices_version: u64,
    devices: &[SignedCard],
) -> Vec<u8> {
    build_entry_with(
        cert,
        handle,
        invite_key,
        &user_key.verifying_key(),
        &[],
        user_key,
        devices_version,
        devices,
    )
}

/// Builds a member's entry whose user key was succeeded: the invite key
/// vouches for `root`, `successions` lead from it to `current`, and
/// `current` signs the device list.
#[allow(clippy::too_many_arguments)]
pub fn build_entry_with(
    cert: &SignedInviteCert,
    handle: &str,
    invite_key: &SigningKey,
    root: &VerifyingKey,
    successions: &[Succession],
    current: &SigningKey,
    devices_version: u64,
    devices: &[SignedCard],
) -> Vec<u8> {
    let user_key_signature =
        invite_key.sign(&[tags::USER_KEY, handle.as_bytes(), root.as_bytes()].concat());
    let device_list = DeviceList {
        version: devices_version,
        devices: devices.to_vec(),
    }
    .encode_to_vec();
    let device_list_signature = current.sign(&[tags::DEVICE_LIST, &device_list].concat());
    DirectoryEntry {
        version: 1,
        cert: Some(cert.clone()),
        user_key: root.as_bytes().to_vec().into(),
        user_key_signature: user_key_signature.to_bytes().to_vec().into(),
        device_list: device_list.into(),
        device_list_signature: device_list_signature.to_bytes().to_vec().into(),
        successions: successions.to_vec(),
    }
    .encode_to_vec()
}

/// `old` names `new` its successor.
pub fn sign_succession(old: &SigningKey, new: &VerifyingKey) -> Succession {
    let old_public = old.verifying_key();
    let signature = old.sign(&succession_message(old_public.as_bytes(), new.as_bytes()));
    Succession {
        old_key: old_public.as_bytes().to_vec().into(),
        new_key: new.as_bytes().to_vec().into(),
        signature: signature.to_bytes().to_vec().into(),
    }
}

fn succession_message(old: &[u8], new: &[u8]) -> Vec<u8> {
    [tags::SUCCESSION, old, new].concat()
}

/// Checks one succession: its old key signed it. Returns (old, new).
pub fn verify_succession(succession: &Succession) -> Option<([u8; 32], [u8; 32])> {
    let old = verifying_key(&succession.old_key)?;
    let new = verifying_key(&succession.new_key)?;
    let signature = <[u8; 64]>::try_from(succession.signature.as_ref()).ok()?;
    old.verify_strict(
        &succession_message(old.as_bytes(), new.as_bytes()),
        &Signature::from_bytes(&signature),
    )
    .ok()?;
    Some((*old.as_bytes(), *new.as_bytes()))
}

impl Directory {
    /// A view of the directory with key `dir_key`, signed by `team_key`.
    pub fn new(dir_key: [u8; 32], team_key: VerifyingKey) -> Self {
        Self {
            dir_key: Zeroizing::new(dir_key),
            team_key,
        }
    }

    /// `K_dir` (members persist it).
    pub fn dir_key(&self) -> &[u8; 32] {
        &self.dir_key
    }

    /// The team's public key `T`.
    pub fn team_key(&self) -> &VerifyingKey {
        &self.team_key
    }

    fn hmac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(self.dir_key.as_slice())
            .expect("invariant: HMAC accepts any key length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The slot of `handle`'s entry.
    pub fn user_slot(&self, handle: &str) -> SlotId {
        SlotId::from_bytes(self.hmac(&[tags::USER_SLOT, handle.as_bytes()]))
    }

    /// The roster's slot.
    pub fn roster_slot(&self) -> SlotId {
        SlotId::from_bytes(self.hmac(&[tags::ROSTER_SLOT]))
    }

    fn value_key(&self) -> Zeroizing<[u8; 32]> {
        let hkdf = Hkdf::<Sha256>::new(None, self.dir_key.as_slice());
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf.expand(tags::DIR_VALUE, key.as_mut())
            .expect("invariant: 32 bytes is a valid HKDF-SHA256 output length");
        key
    }

    /// Encrypts a slot value, bound to its slot (a value copied to another
    /// slot does not open there), padded to a bucket.
    pub fn seal_value(&self, slot: &SlotId, value: &[u8]) -> Result<Blob, DirectoryError> {
        let bound = Zeroizing::new([slot.as_bytes().as_slice(), value].concat());
        Ok(seal_symmetric(&self.value_key(), &bound)?)
    }

    /// Decrypts a slot value read from `slot`.
    pub fn open_value(
        &self,
        slot: &SlotId,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DirectoryError> {
        let bound =
            open_symmetric(&self.value_key(), blob).map_err(|_| DirectoryError::Undecryptable)?;
        match bound.strip_prefix(slot.as_bytes().as_slice()) {
            Some(value) => Ok(Zeroizing::new(value.to_vec())),
            None => Err(DirectoryError::Undecryptable),
        }
    }

    /// Verifies `handle`'s entry along the chain `T` → invite cert → `U` →
    /// device list → device cards.
    pub fn verify_entry(
        &self,
        handle: &str,
        entry: &[u8],
    ) -> Result<VerifiedEntry, DirectoryError> {
        let forged = |reason| DirectoryError::Forged {
            handle: handle.to_owned(),
            reason,
        };
        let entry = canonical::decode::<DirectoryEntry>(entry)
            .ok_or_else(|| forged("it does not decode"))?;
        let signed_cert = entry
            .cert
            .ok_or_else(|| forged("it has no invite certificate"))?;
        if !verify(
            &self.team_key,
            tags::INVITE_CERT,
            &signed_cert.cert,
            &signed_cert.signature,
        ) {
            return Err(forged(
                "its invite certificate is not signed by the team key",
            ));
        }
        let cert = canonical::decode::<InviteCert>(&signed_cert.cert)
            .ok_or_else(|| forged("its invite certificate does not decode"))?;
        if cert.team_key.as_ref() != self.team_key.as_bytes().as_slice() {
            return Err(forged("its invite certificate names another team"));
        }
        if cert.handle != handle {
            return Err(forged("its invite certificate is for another handle"));
        }
        let invite_key =
            verifying_key(&cert.invite_key).ok_or_else(|| forged("its invite key is malformed"))?;
        let user_key =
            verifying_key(&entry.user_key).ok_or_else(|| forged("its user key is malformed"))?;
        if !verify(
            &invite_key,
            tags::USER_KEY,
            &[handle.as_bytes(), user_key.as_bytes()].concat(),
            &entry.user_key_signature,
        ) {
            return Err(forged("its user key is not vouched for by its invite"));
        }
        if entry.successions.len() > MAX_SUCCESSIONS {
            return Err(forged("its user key changed too many times"));
        }
        let mut chain = vec![*user_key.as_bytes()];
        for succession in &entry.successions {
            let Some((old, new)) = verify_succession(succession) else {
                return Err(forged("a user key succession is not signed by its old key"));
            };
            if chain.last() != Some(&old) || chain.contains(&new) {
                return Err(forged("its user key successions do not form a chain"));
            }
            chain.push(new);
        }
        let current = chain
            .last()
            .and_then(|key| verifying_key(key))
            .ok_or_else(|| forged("its user key is malformed"))?;
        if !verify(
            &current,
            tags::DEVICE_LIST,
            &entry.device_list,
            &entry.device_list_signature,
        ) {
            return Err(forged("its device list is not signed by its user key"));
        }
        let list = canonical::decode::<DeviceList>(&entry.device_list)
            .ok_or_else(|| forged("its device list does not decode"))?;
        let mut devices = Vec::new();
        for signed in list.devices {
            let card =
                Card::verify(&signed).map_err(|_| forged("a device card does not verify"))?;
            if card.handle != handle {
                return Err(forged("a device card names another handle"));
            }
            devices.push((card, signed));
        }
        Ok(VerifiedEntry {
            handle: handle.to_owned(),
            user_key: current,
            invite_key: *invite_key.as_bytes(),
            chain,
            devices_version: list.version,
            devices,
        })
    }

    /// Verifies a roster signed by `T`; `seen_version` is the newest the
    /// client has accepted (a lower version is a rollback).
    pub fn verify_roster(
        &self,
        signed: &[u8],
        seen_version: u64,
    ) -> Result<VerifiedRoster, DirectoryError> {
        let signed = canonical::decode::<SignedRoster>(signed)
            .ok_or(DirectoryError::BadRoster("it does not decode"))?;
        if !verify(
            &self.team_key,
            tags::ROSTER,
            &signed.roster,
            &signed.signature,
        ) {
            return Err(DirectoryError::BadRoster(
                "it is not signed by the team key",
            ));
        }
        let roster = canonical::decode::<Roster>(&signed.roster)
            .ok_or(DirectoryError::BadRoster("it does not decode"))?;
        if roster.version < seen_version {
            return Err(DirectoryError::BadRoster(
                "it is older than one already seen (a rollback)",
            ));
        }
        let issuer = if roster.issuer_key.is_empty() {
            // A period means nothing without the key it is the period of:
            // a roster that names one alone would lose it here.
            if roster.token_period_secs != 0 {
                return Err(DirectoryError::BadRoster(
                    "it names a token period but no issuer key",
                ));
            }
            None
        } else {
            Some(TokenIssuer {
                issuer_key: roster
                    .issuer_key
                    .as_ref()
                    .try_into()
                    .map_err(|_| DirectoryError::BadRoster("its issuer key is not 32 bytes"))?,
                period_secs: roster.token_period_secs,
            })
        };
        if !roster.admins.is_empty() {
            // `admin` is the first admin; each admin a member, once.
            if roster.admins.first() != Some(&roster.admin) {
                return Err(DirectoryError::BadRoster(
                    "its first admin is not the admin it names",
                ));
            }
            for (i, admin) in roster.admins.iter().enumerate() {
                if !roster.handles.contains(admin) || roster.admins[..i].contains(admin) {
                    return Err(DirectoryError::BadRoster(
                        "it lists an admin who is not a member, or one twice",
                    ));
                }
            }
        }
        Ok(VerifiedRoster {
            version: roster.version,
            handles: roster.handles,
            admin: (!roster.admin.is_empty()).then_some(roster.admin),
            admins_listed: roster.admins,
            issuer,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::team::invite::{InviteParams, issue_invite};
    use crate::{Engine, MemoryStore, Store};

    pub(crate) fn device_card(handle: &str) -> SignedCard {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
        Engine::create(store, handle, 0).unwrap().signed_card()
    }

    /// A member invite of `team` for `handle` that never expires.
    pub(crate) fn invite(team: &TeamSecrets, handle: &str) -> crate::team::IssuedInvite {
        issue_invite(
            team,
            &InviteParams {
                team_name: "acme",
                handle,
                expires_at: u64::MAX,
                relay_addr: "r:1",
                relay_fingerprint: [0; 32],
                registration_token: b"t",
                issuer_key: [0; 32],
                device: false,
            },
        )
        .unwrap()
    }

    fn user_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_proper_entry_verifies_along_the_chain() {
        let team = TeamSecrets::generate();
        let bob = invite(&team, "bob");
        let entry = build_entry(
            &bob.cert,
            "bob",
            &bob.invite_key,
            &user_key(1),
            1,
            &[device_card("bob")],
        );
        let verified = team.directory().verify_entry("bob", &entry).unwrap();
        assert_eq!(verified.user_key, user_key(1).verifying_key());
        assert_eq!(verified.devices.len(), 1);
        assert_eq!(verified.devices[0].0.handle, "bob");
    }

    fn reason(result: Result<VerifiedEntry, DirectoryError>) -> &'static str {
        match result {
            Err(DirectoryError::Forged { reason, .. }) => reason,
            other => panic!("expected a forgery to be refused, got {other:?}"),
        }
    }

    #[test]
    fn forged_entries_are_refused_naming_the_handle() {
        let team = TeamSecrets::generate();
        let dir = team.directory();
        let bob = invite(&team, "bob");
        let card = device_card("bob");

        // Another team's certificate.
        let stranger_team = TeamSecrets::generate();
        let foreign = invite(&stranger_team, "bob");
        let entry = build_entry(
            &foreign.cert,
            "bob",
            &foreign.invite_key,
            &user_key(1),
            1,
            std::slice::from_ref(&card),
        );
        assert_eq!(
            reason(dir.verify_entry("bob", &entry)),
            "its invite certificate is not signed by the team key"
        );

        // A valid entry for alice shown as bob's (swapped handle).
        let alice = invite(&team, "alice");
        let alice_entry = build_entry(
            &alice.cert,
            "alice",
            &alice.invite_key,
            &user_key(2),
            1,
            &[device_card("alice")],
        );
        let error = dir.verify_entry("bob", &alice_entry).unwrap_err();
        assert!(error.to_string().contains("\"bob\""), "{error}");
        assert_eq!(
            reason(Err(error)),
            "its invite certificate is for another handle"
        );

        // A valid owner key but a wrong chain: U vouched for by another key.
        let entry = build_entry(
            &bob.cert,
            "bob",
            &user_key(9),
            &user_key(1),
            1,
            std::slice::from_ref(&card),
        );
        assert_eq!(
            reason(dir.verify_entry("bob", &entry)),
            "its user key is not vouched for by its invite"
        );

        // Device list signed by someone else than U.
        let mut decoded = DirectoryEntry::decode(
            build_entry(
                &bob.cert,
                "bob",
                &bob.invite_key,
                &user_key(1),
                1,
                std::slice::from_ref(&card),
            )
            .as_slice(),
        )
        .unwrap();
        decoded.device_list_signature = user_key(3)
            .sign(&[tags::DEVICE_LIST, &decoded.device_list].concat())
            .to_bytes()
            .to_vec()
            .into();
        assert_eq!(
            reason(dir.verify_entry("bob", &decoded.encode_to_vec())),
            "its device list is not signed by its user key"
        );

        // A device card of another member slipped into bob's list.
        let entry = build_entry(
            &bob.cert,
            "bob",
            &bob.invite_key,
            &user_key(1),
            1,
            &[device_card("mallory")],
        );
        assert_eq!(
            reason(dir.verify_entry("bob", &entry)),
            "a device card names another handle"
        );
    }

    #[test]
    fn rosters_must_be_team_signed_and_never_go_back() {
        let team = TeamSecrets::generate();
        let dir = team.directory();
        let handles = vec!["alice".to_owned(), "bob".to_owned()];
        let v2 = team.sign_roster(2, &handles);
        assert_eq!(dir.verify_roster(&v2, 1).unwrap().handles, handles);
        assert!(
            matches!(dir.verify_roster(&v2, 3), Err(DirectoryError::BadRoster(_))),
            "rollback"
        );
        let forged = TeamSecrets::generate().sign_roster(5, &handles);
        assert!(matches!(
            dir.verify_roster(&forged, 0),
            Err(DirectoryError::BadRoster(_))
        ));
    }

    #[test]
    fn a_roster_lists_its_admins_only_among_its_members_once_each() {
        let team = TeamSecrets::generate();
        let dir = team.directory();
        let handles = vec!["alice".to_owned(), "bob".to_owned()];
        let admins = |a: &[&str]| a.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
        let roster = dir
            .verify_roster(
                &team.sign_roster_with(1, &handles, &admins(&["bob", "alice"]), None),
                0,
            )
            .unwrap();
        assert_eq!(roster.admins(), ["bob", "alice"]);
        assert_eq!(roster.admin.as_deref(), Some("bob"));
        // A roster from before several admins: its one admin.
        let legacy = team.sign_roster_fields(1, &handles, "alice", &[], None);
        assert_eq!(dir.verify_roster(&legacy, 0).unwrap().admins(), ["alice"]);
        for (admin, listed) in [
            ("carol", admins(&["carol"])),
            ("alice", admins(&["alice", "alice"])),
            ("alice", admins(&["bob", "alice"])),
        ] {
            let signed = team.sign_roster_fields(1, &handles, admin, &listed, None);
            assert!(
                matches!(
                    dir.verify_roster(&signed, 0),
                    Err(DirectoryError::BadRoster(_))
                ),
                "{admin} {listed:?}"
            );
        }
    }

    #[test]
    fn slot_values_are_bucket_sized_and_bound_to_their_slot() {
        let team = TeamSecrets::generate();
        let dir = team.directory();
        let (bob, alice) = (dir.user_slot("bob"), dir.user_slot("alice"));
        assert_ne!(bob, alice);
        assert_ne!(
            bob,
            TeamSecrets::generate().directory().user_slot("bob"),
            "keyed by K_dir"
        );
        let blob = dir.seal_value(&bob, b"entry").unwrap();
        assert!(sotto_proto::Bucket::of_len(blob.len()).is_some());
        assert_eq!(
            dir.open_value(&bob, blob.as_bytes()).unwrap().as_slice(),
            b"entry"
        );
        assert!(matches!(
            dir.open_value(&alice, blob.as_bytes()),
            Err(DirectoryError::Undecryptable)
        ));
        let other = TeamSecrets::generate().directory();
        assert!(matches!(
            other.open_value(&bob, blob.as_bytes()),
            Err(DirectoryError::Undecryptable)
        ));
    }
}
