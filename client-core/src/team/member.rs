//! A device's membership in a team, and the directory operations it does
//! through the relay: publish its own entry, resolve another member by
//! handle, read the roster; for the admin, pre-claim a member's slot and
//! publish the roster.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sotto_proto::client::{
    AdminInvite, DeviceName, DeviceSecret, MemberState, SignedCard, SignedInviteCert, Succession,
};
use sotto_proto::{Message as _, SlotId};
use zeroize::Zeroize as _;
use zeroize::Zeroizing;

use super::directory::{Directory, DirectoryError, TeamSecrets, VerifiedEntry, VerifiedRoster};
use super::invite::{IssuedInvite, ParsedInvite};
use crate::card::Card;
use crate::{Engine, NetError, RelayConnection, Store, Tree};

const MEMBERSHIP_KEY: &[u8] = b"membership";

/// A team operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    /// Directory content did not verify.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The relay.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The local store.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
    /// The handle is not on the team roster.
    #[error("\"{0}\" is not a member of this team")]
    NotAMember(String),
    /// Invited but not joined yet.
    #[error("\"{0}\" was invited but has not joined yet")]
    NotJoined(String),
    /// I am no longer on the roster.
    #[error("you are no longer a member of this team (the admin removed you)")]
    Revoked,
    /// The invite's slot already holds a member's entry.
    #[error("this invite was already used; ask your admin for a new one")]
    InviteUsed,
    /// Only the admin may do this.
    #[error("only the team admin can do that")]
    NotAdmin,
    /// Stored state is damaged.
    #[error("the stored team membership is damaged: {0}")]
    Corrupt(String),
    /// Two different successors of one user key were seen.
    #[error(
        "{0}'s user key has two different successors: one of their devices may be compromised. sotto trusts neither until the admin re-invites {0} (`sotto invite {0} --replace`)"
    )]
    UserKeyConflict(String),
    /// An entry older than one already seen.
    #[error(
        "the directory entry for \"{0}\" is older than one already seen (a rollback or a removed device); it was refused"
    )]
    Rollback(String),
    /// An entry whose user key neither follows the known one nor comes
    /// with a new invite.
    #[error(
        "the directory entry for \"{0}\" is signed by a user key that does not follow the one known; it was refused"
    )]
    UnknownUserKey(String),
    /// This device waits for approval.
    #[error(
        "this device is waiting to be approved: on one of your devices, run `sotto device approve {0}`, then `sotto sync` here"
    )]
    AwaitingApproval(String),
    /// This device was removed from the member's devices.
    #[error("this device was removed from your devices; it can no longer send or read")]
    DeviceRemoved,
}

/// What a device stores about its team (inside the encrypted store).
#[derive(Serialize, Deserialize)]
pub struct Membership {
    /// Team name.
    pub team_name: String,
    /// My handle.
    pub handle: String,
    /// Relay `host:port`.
    pub relay_addr: String,
    /// Pinned relay certificate fingerprint.
    pub relay_fingerprint: [u8; 32],
    /// The relay's token issuer key.
    pub issuer_key: [u8; 32],
    dir_key: [u8; 32],
    team_key: [u8; 32],
    cert: Vec<u8>,
    invite_seed: [u8; 32],
    user_seed: [u8; 32],
    entry_version: u64,
    roster_version: u64,
    /// The admin's team key seed, on the admin's devices only.
    team_seed: Option<[u8; 32]>,
    /// The admin's relay credential (bootstrap, mint, revoke), on the
    /// admin's devices only. Never a messaging key.
    #[serde(default)]
    relay_admin_seed: Option<[u8; 32]>,
    /// Admin: SHA-256 of each invite's registration token, by handle: it
    /// names the member's relay account for revocation.
    #[serde(default)]
    invites: std::collections::BTreeMap<String, [u8; 32]>,
    /// Whether my slot already passed from the invite key to my own key.
    #[serde(default)]
    slot_owned: bool,
    /// Version of `dir_key` (0: the one from the invite); each revocation
    /// brings a new key with a higher version.
    #[serde(default)]
    dir_version: u64,
    /// The user key the invite vouched for, once `user_seed` succeeded it.
    #[serde(default)]
    root_user_key: Option<[u8; 32]>,
    /// Encoded `Succession`s from the root user key to the current one.
    #[serde(default)]
    successions: Vec<Vec<u8>>,
    /// Encoded `SignedCard`s of my approved devices (this one included);
    /// empty in homes from before multi-device (this device alone).
    #[serde(default)]
    devices: Vec<Vec<u8>>,
    /// Relay revocation secrets of my devices, by hex identity key.
    #[serde(default)]
    revocation_secrets: std::collections::BTreeMap<String, [u8; 32]>,
    /// The user key whose slot-owner key owns my slot, when a succession
    /// has not been published yet.
    #[serde(default)]
    slot_seed: Option<[u8; 32]>,
    /// What I know of other members' user keys (DESIGN "Devices").
    #[serde(default)]
    known: std::collections::BTreeMap<String, KnownUser>,
    /// Notices for the user (a member's key changed, a conflict).
    #[serde(default)]
    notices: Vec<String>,
    /// Set on a new device until one of my devices approves it: the
    /// confirmation code it shows.
    #[serde(default)]
    awaiting_approval: Option<String>,
    /// Names and addition times of my devices, by hex identity key.
    #[serde(default)]
    device_names: std::collections::BTreeMap<String, (String, u64)>,
    /// The directory entry last applied per member: `hex(slot)/version`.
    #[serde(default)]
    applied: std::collections::BTreeMap<String, String>,
}

/// The team and relay a new membership starts from.
struct Fresh<'a> {
    team_name: &'a str,
    handle: &'a str,
    relay_addr: &'a str,
    relay_fingerprint: [u8; 32],
    issuer_key: [u8; 32],
    dir_key: [u8; 32],
    team_key: [u8; 32],
}

/// What a device knows of another member's user key.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct KnownUser {
    /// The invite key that vouched for the chain's first key.
    invite_key: [u8; 32],
    /// The user keys, oldest first; the last is current.
    chain: Vec<[u8; 32]>,
    /// The newest device-list version accepted.
    devices_version: u64,
    /// Successions seen (in entries or announced over Olm): old → new.
    seen: std::collections::BTreeMap<String, [u8; 32]>,
    /// Two successors of one key were seen: nothing is trusted until a
    /// re-invite.
    compromised: bool,
}

/// How a verified entry relates to what was known.
#[derive(Debug, PartialEq, Eq)]
pub enum Trust {
    /// First sight, or the same user key.
    Same,
    /// The user key was succeeded (old signed new).
    Succeeded {
        /// The key known before.
        old: [u8; 32],
    },
    /// A new invite: a new user key altogether ("key changed").
    Replaced,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.dir_key.zeroize();
        self.invite_seed.zeroize();
        self.user_seed.zeroize();
        if let Some(seed) = &mut self.slot_seed {
            seed.zeroize();
        }
        for secret in self.revocation_secrets.values_mut() {
            secret.zeroize();
        }
        if let Some(seed) = &mut self.team_seed {
            seed.zeroize();
        }
        if let Some(seed) = &mut self.relay_admin_seed {
            seed.zeroize();
        }
    }
}

fn corrupt(e: impl std::fmt::Display) -> TeamError {
    TeamError::Corrupt(e.to_string())
}

impl Membership {
    /// The membership a joining device derives from its invite (with a new
    /// user key `U`).
    pub fn from_invite(invite: &ParsedInvite) -> Self {
        let mut user_seed = [0u8; 32];
        getrandom::fill(&mut user_seed).expect("invariant: the OS random number generator works");
        let mut membership = Self::fresh(Fresh {
            team_name: &invite.team_name,
            handle: &invite.handle,
            relay_addr: &invite.relay_addr,
            relay_fingerprint: invite.relay_fingerprint,
            issuer_key: invite.issuer_key,
            dir_key: *invite.directory.dir_key(),
            team_key: *invite.directory.team_key().as_bytes(),
        });
        membership.cert = invite.cert.encode_to_vec();
        membership.invite_seed = invite.invite_key.to_bytes();
        membership.user_seed = user_seed;
        user_seed.zeroize();
        membership.entry_version = 1;
        membership
    }

    /// A device's membership before it has heard anything from the team
    /// or from its own other devices: the constructors start here and set
    /// what they know, so no field's initial value is written twice.
    fn fresh(team: Fresh<'_>) -> Self {
        Self {
            team_name: team.team_name.to_owned(),
            handle: team.handle.to_owned(),
            relay_addr: team.relay_addr.to_owned(),
            relay_fingerprint: team.relay_fingerprint,
            issuer_key: team.issuer_key,
            dir_key: team.dir_key,
            team_key: team.team_key,
            cert: Vec::new(),
            invite_seed: [0; 32],
            user_seed: [0; 32],
            entry_version: 0,
            roster_version: 0,
            team_seed: None,
            relay_admin_seed: None,
            invites: Default::default(),
            slot_owned: false,
            dir_version: 0,
            root_user_key: None,
            successions: Vec::new(),
            devices: Vec::new(),
            revocation_secrets: Default::default(),
            slot_seed: None,
            known: Default::default(),
            notices: Vec::new(),
            awaiting_approval: None,
            device_names: Default::default(),
            applied: Default::default(),
        }
    }

    /// The admin's own membership: an invite to themself, plus `T` and the
    /// relay admin credential.
    pub fn for_admin(team: &TeamSecrets, invite: &ParsedInvite, relay_admin: &SigningKey) -> Self {
        let mut membership = Self::from_invite(invite);
        membership.team_seed = Some(team.team.to_bytes());
        membership.relay_admin_seed = Some(relay_admin.to_bytes());
        membership
    }

    /// The admin's relay credential.
    pub fn relay_admin(&self) -> Result<SigningKey, TeamError> {
        self.relay_admin_seed
            .map(|seed| SigningKey::from_bytes(&seed))
            .ok_or(TeamError::NotAdmin)
    }

    /// Admin: remembers which registration token `handle`'s invite carried.
    pub fn record_invite(&mut self, handle: &str, registration_token_hash: [u8; 32]) {
        self.invites
            .insert(handle.to_owned(), registration_token_hash);
    }

    /// Admin: the registration token hash of `handle`'s invite.
    pub fn invite_token_hash(&self, handle: &str) -> Option<[u8; 32]> {
        self.invites.get(handle).copied()
    }

    /// Saves to the store.
    pub fn save(&self, store: &dyn Store) -> Result<(), TeamError> {
        let bytes = Zeroizing::new(serde_json::to_vec(self).map_err(corrupt)?);
        store.put(Tree::Meta, MEMBERSHIP_KEY, &bytes)?;
        store.flush()?;
        Ok(())
    }

    /// Loads from the store, if this device joined a team.
    pub fn load(store: &dyn Store) -> Result<Option<Self>, TeamError> {
        match store.get(Tree::Meta, MEMBERSHIP_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(corrupt),
            None => Ok(None),
        }
    }

    /// The directory view.
    pub fn directory(&self) -> Result<Directory, TeamError> {
        let team_key = ed25519_dalek::VerifyingKey::from_bytes(&self.team_key).map_err(corrupt)?;
        Ok(Directory::new(self.dir_key, team_key))
    }

    /// The admin's team secrets, if this device holds them.
    pub fn team_secrets(&self) -> Result<TeamSecrets, TeamError> {
        let seed = self.team_seed.ok_or(TeamError::NotAdmin)?;
        Ok(TeamSecrets {
            team: SigningKey::from_bytes(&seed),
            dir_key: Zeroizing::new(self.dir_key),
        })
    }

    /// The version of the directory key I hold.
    pub fn dir_version(&self) -> u64 {
        self.dir_version
    }

    /// Admin: moves to a fresh directory key; returns it, its version and
    /// `T`'s signature, to send to every remaining member. Nothing is
    /// published yet: the caller re-publishes the roster and my entry under
    /// the new key.
    pub fn rotate_dir_key(&mut self) -> Result<([u8; 32], u64, Vec<u8>), TeamError> {
        let team = self.team_secrets()?;
        let mut dir_key = [0u8; 32];
        getrandom::fill(&mut dir_key).expect("invariant: the OS random number generator works");
        let version = self.dir_version + 1;
        let signature = team.sign_dir_key(version, &dir_key);
        self.dir_key = dir_key;
        self.dir_version = version;
        Ok((dir_key, version, signature))
    }

    /// A member: takes a directory key the admin sent, if `T` signed it and
    /// it is newer than mine; returns whether it was taken.
    pub fn accept_dir_key(
        &mut self,
        dir_key: &[u8],
        version: u64,
        signature: &[u8],
    ) -> Result<bool, TeamError> {
        let Ok(dir_key) = <[u8; 32]>::try_from(dir_key) else {
            return Ok(false);
        };
        let team_key = ed25519_dalek::VerifyingKey::from_bytes(&self.team_key).map_err(corrupt)?;
        if version <= self.dir_version
            || !super::verify_dir_key(&team_key, version, &dir_key, signature)
        {
            return Ok(false);
        }
        self.dir_key = dir_key;
        self.dir_version = version;
        Ok(true)
    }

    /// Whether this device is the admin's.
    pub fn is_admin(&self) -> bool {
        self.team_seed.is_some()
    }

    /// Refuses an invite whose slot already holds a joined member's entry.
    pub async fn check_unused(&self, conn: &RelayConnection) -> Result<(), TeamError> {
        let directory = self.directory()?;
        let slot = directory.user_slot(&self.handle);
        if let Some((_, value)) = conn.slot_get(&slot).await? {
            let entry = directory.open_value(&slot, &value)?;
            if !entry.is_empty() {
                return Err(TeamError::InviteUsed);
            }
        }
        Ok(())
    }

    /// The key my directory slot passes to at join: derived from my user
    /// key `U`, which the invite code does not carry.
    fn slot_owner(&self) -> SigningKey {
        Self::slot_owner_of(&self.user_seed)
    }

    fn slot_owner_of(user_seed: &[u8; 32]) -> SigningKey {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(None, user_seed);
        let mut seed = Zeroizing::new([0u8; 32]);
        hkdf.expand(super::tags::SLOT_OWNER, seed.as_mut())
            .expect("invariant: 32 bytes is a valid HKDF-SHA256 output length");
        SigningKey::from_bytes(&seed)
    }

    /// An entry for my handle as an attacker could make it, for tests of
    /// what other clients refuse: my device list at `version`, signed by
    /// `signer` (my current user key if `None`).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn forged_entry(
        &self,
        engine: &Engine,
        signer: Option<&SigningKey>,
        version: u64,
    ) -> Result<Vec<u8>, TeamError> {
        let cert = SignedInviteCert::decode(self.cert.as_slice()).map_err(corrupt)?;
        let user_key = SigningKey::from_bytes(&self.user_seed);
        let root = match self.root_user_key {
            Some(root) => ed25519_dalek::VerifyingKey::from_bytes(&root).map_err(corrupt)?,
            None => user_key.verifying_key(),
        };
        Ok(super::build_entry_with(
            &cert,
            &self.handle,
            &SigningKey::from_bytes(&self.invite_seed),
            &root,
            &self.successions()?,
            signer.unwrap_or(&user_key),
            version,
            &self.device_cards(engine)?,
        ))
    }

    /// Writes `entry` into my slot as it stands (what a relay that serves
    /// forged entries would show), for tests.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub async fn write_entry(
        &mut self,
        conn: &RelayConnection,
        entry: &[u8],
    ) -> Result<(), TeamError> {
        let directory = self.directory()?;
        let slot = directory.user_slot(&self.handle);
        let value = directory.seal_value(&slot, entry)?.into_bytes();
        let version = self.entry_version + 1;
        conn.slot_put(&slot, version, value, &self.slot_owner())
            .await?;
        self.entry_version = version;
        Ok(())
    }

    /// Publishes (or updates) my directory entry listing `engine`'s device.
    /// The first publication also takes the slot from the invite key, so
    /// whoever else saw the invite code can never rewrite my entry.
    pub async fn publish_entry(
        &mut self,
        conn: &RelayConnection,
        engine: &Engine,
    ) -> Result<(), TeamError> {
        if let Some(code) = &self.awaiting_approval {
            return Err(TeamError::AwaitingApproval(code.clone()));
        }
        let directory = self.directory()?;
        let cert = SignedInviteCert::decode(self.cert.as_slice()).map_err(corrupt)?;
        let invite_key = SigningKey::from_bytes(&self.invite_seed);
        let user_key = SigningKey::from_bytes(&self.user_seed);
        let version = self.entry_version + 1;
        let devices = self.device_cards(engine)?;
        let successions = self.successions()?;
        let root = match self.root_user_key {
            Some(root) => ed25519_dalek::VerifyingKey::from_bytes(&root).map_err(corrupt)?,
            None => user_key.verifying_key(),
        };
        let entry = super::build_entry_with(
            &cert,
            &self.handle,
            &invite_key,
            &root,
            &successions,
            &user_key,
            version,
            &devices,
        );
        let slot = directory.user_slot(&self.handle);
        let value = directory.seal_value(&slot, &entry)?.into_bytes();
        let owner = self.slot_owner();
        if !self.slot_owned {
            conn.slot_transfer(&slot, version, value, &invite_key, &owner.verifying_key())
                .await?;
            self.slot_owned = true;
        } else if let Some(previous) = self.slot_seed {
            // The user key was succeeded: the slot passes to the new key's
            // owner, so a removed device (which knew the old one) can no
            // longer write it.
            let previous = Self::slot_owner_of(&previous);
            conn.slot_transfer(&slot, version, value, &previous, &owner.verifying_key())
                .await?;
            self.slot_seed = None;
        } else {
            conn.slot_put(&slot, version, value, &owner).await?;
        }
        self.entry_version = version;
        Ok(())
    }

    /// My approved devices' signed cards (this device's alone in a home
    /// from before multi-device).
    pub fn device_cards(&self, engine: &Engine) -> Result<Vec<SignedCard>, TeamError> {
        if self.devices.is_empty() {
            return Ok(vec![engine.signed_card()]);
        }
        self.devices
            .iter()
            .map(|bytes| SignedCard::decode(bytes.as_slice()).map_err(corrupt))
            .collect()
    }

    /// My approved devices, verified.
    pub fn own_devices(&self, engine: &Engine) -> Result<Vec<(Card, SignedCard)>, TeamError> {
        self.device_cards(engine)?
            .into_iter()
            .map(|signed| {
                Card::verify(&signed)
                    .map(|card| (card, signed))
                    .map_err(corrupt)
            })
            .collect()
    }

    fn successions(&self) -> Result<Vec<Succession>, TeamError> {
        self.successions
            .iter()
            .map(|bytes| Succession::decode(bytes.as_slice()).map_err(corrupt))
            .collect()
    }

    /// My user key chain, oldest first (the last is current).
    pub fn user_chain(&self) -> Vec<[u8; 32]> {
        let mut chain = vec![self.root_user_key.unwrap_or_else(|| self.user_key())];
        for succession in self.successions().unwrap_or_default() {
            if let Some((_, new)) = super::verify_succession(&succession) {
                chain.push(new);
            }
        }
        chain
    }

    /// My current user key `U`.
    pub fn user_key(&self) -> [u8; 32] {
        *SigningKey::from_bytes(&self.user_seed)
            .verifying_key()
            .as_bytes()
    }

    /// The confirmation code, while this device waits for approval.
    pub fn awaiting_approval(&self) -> Option<&str> {
        self.awaiting_approval.as_deref()
    }

    /// Notices for the user since the last call (a member's key changed, a
    /// refused entry).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Adds a notice for the user (once).
    pub fn push_notice(&mut self, text: String) {
        self.notice(text);
    }

    fn notice(&mut self, text: String) {
        if !self.notices.contains(&text) {
            self.notices.push(text);
        }
    }

    /// Names my device `identity`, added at `added_at` (unix seconds).
    pub fn name_device(&mut self, identity: &[u8; 32], name: &str, added_at: u64) {
        self.device_names
            .insert(hex::encode(identity), (name.to_owned(), added_at));
    }

    /// The name and addition time of my device `identity`.
    pub fn device_name(&self, identity: &[u8; 32]) -> Option<(String, u64)> {
        self.device_names.get(&hex::encode(identity)).cloned()
    }

    /// Records my device `identity`'s relay revocation secret.
    pub fn set_revocation_secret(&mut self, identity: &[u8; 32], secret: [u8; 32]) {
        self.revocation_secrets
            .insert(hex::encode(identity), secret);
    }

    /// The relay revocation secret of my device `identity`, if I hold it.
    pub fn revocation_secret(&self, identity: &[u8; 32]) -> Option<[u8; 32]> {
        self.revocation_secrets.get(&hex::encode(identity)).copied()
    }

    /// Signs a new device into my device list (published by the caller).
    pub fn add_device(
        &mut self,
        engine: &Engine,
        signed: &SignedCard,
        revocation_secret: Option<[u8; 32]>,
    ) -> Result<(), TeamError> {
        let mut devices = self.device_cards(engine)?;
        let card = Card::verify(signed).map_err(corrupt)?;
        if !devices
            .iter()
            .any(|d| Card::verify(d).is_ok_and(|c| c.identity_key == card.identity_key))
        {
            devices.push(signed.clone());
        }
        self.devices = devices.iter().map(|d| d.encode_to_vec()).collect();
        if let Some(secret) = revocation_secret {
            self.set_revocation_secret(&card.identity_key.to_bytes(), secret);
        }
        Ok(())
    }

    /// Removes my device `identity` and moves to a new user key `U'`: the
    /// old `U` signs the succession, `U'` will sign the new list, and the
    /// removed device never learns `U'`. Returns the succession (to
    /// announce) and the removed device's revocation secret, if held.
    pub fn remove_device(
        &mut self,
        engine: &Engine,
        identity: &[u8; 32],
    ) -> Result<(Succession, Option<[u8; 32]>), TeamError> {
        let devices: Vec<SignedCard> = self
            .device_cards(engine)?
            .into_iter()
            .filter(|d| Card::verify(d).is_ok_and(|c| c.identity_key.to_bytes() != *identity))
            .collect();
        let old = SigningKey::from_bytes(&self.user_seed);
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("invariant: the OS random number generator works");
        let new = SigningKey::from_bytes(&seed);
        let succession = super::sign_succession(&old, &new.verifying_key());
        if self.root_user_key.is_none() {
            self.root_user_key = Some(*old.verifying_key().as_bytes());
        }
        if self.slot_seed.is_none() {
            self.slot_seed = Some(self.user_seed);
        }
        self.successions.push(succession.encode_to_vec());
        self.user_seed = seed;
        seed.zeroize();
        self.devices = devices.iter().map(|d| d.encode_to_vec()).collect();
        let secret = self.revocation_secrets.remove(&hex::encode(identity));
        Ok((succession, secret))
    }

    /// A successor of my current user key that none of my devices will
    /// use (see `App::announce_forged_succession`).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn forge_succession(&self) -> Succession {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).expect("invariant: the OS random number generator works");
        super::sign_succession(
            &SigningKey::from_bytes(&self.user_seed),
            &SigningKey::from_bytes(&seed).verifying_key(),
        )
    }

    /// The state one device of mine sends another: everything it needs to
    /// act as me. `history_chunks` says how many history parts follow.
    pub fn member_state(
        &self,
        engine: &Engine,
        history_chunks: u32,
    ) -> Result<MemberState, TeamError> {
        Ok(MemberState {
            user_seed: self.user_seed.to_vec().into(),
            invite_seed: self.invite_seed.to_vec().into(),
            cert: self.cert.clone().into(),
            successions: self.successions()?,
            devices_version: self.entry_version,
            devices: self.device_cards(engine)?,
            revocation_secrets: self
                .revocation_secrets
                .iter()
                .filter_map(|(identity, secret)| {
                    Some(DeviceSecret {
                        identity_key: hex::decode(identity).ok()?.into(),
                        secret: secret.to_vec().into(),
                    })
                })
                .collect(),
            dir_key: self.dir_key.to_vec().into(),
            dir_version: self.dir_version,
            entry_version: self.entry_version,
            team_seed: self
                .team_seed
                .map(|s| s.to_vec())
                .unwrap_or_default()
                .into(),
            relay_admin_seed: self
                .relay_admin_seed
                .map(|s| s.to_vec())
                .unwrap_or_default()
                .into(),
            invites: self
                .invites
                .iter()
                .map(|(handle, hash)| AdminInvite {
                    handle: handle.clone(),
                    registration_token_hash: hash.to_vec().into(),
                })
                .collect(),
            history_chunks,
            names: self
                .device_names
                .iter()
                .filter_map(|(identity, (name, added_at))| {
                    Some(DeviceName {
                        identity_key: hex::decode(identity).ok()?.into(),
                        name: name.clone(),
                        added_at: *added_at,
                    })
                })
                .collect(),
        })
    }

    /// Takes a member state one of my devices sent (the engine accepts it
    /// only from my approved devices). Refused if its user key neither is
    /// mine nor follows mine by signed successions, or if this device is
    /// not in its device list. Returns whether anything changed.
    pub fn apply_member_state(
        &mut self,
        engine: &Engine,
        state: &MemberState,
    ) -> Result<bool, TeamError> {
        let key32 = |bytes: &[u8], what: &str| {
            <[u8; 32]>::try_from(bytes).map_err(|_| corrupt(format!("member state: {what}")))
        };
        let user_seed = key32(&state.user_seed, "user key")?;
        let invite_seed = key32(&state.invite_seed, "invite key")?;
        let new_key = *SigningKey::from_bytes(&user_seed)
            .verifying_key()
            .as_bytes();
        let cert = SignedInviteCert::decode(state.cert.as_ref()).map_err(corrupt)?;
        let invite_cert =
            sotto_proto::client::InviteCert::decode(cert.cert.as_ref()).map_err(corrupt)?;
        if invite_cert.handle != self.handle
            || invite_cert.invite_key.as_ref()
                != SigningKey::from_bytes(&invite_seed)
                    .verifying_key()
                    .as_bytes()
        {
            return Err(corrupt("member state: a certificate for another key"));
        }
        let mut chain = Vec::new();
        for succession in &state.successions {
            let (old, new) = super::verify_succession(succession)
                .ok_or_else(|| corrupt("member state: an unsigned succession"))?;
            if chain.is_empty() {
                chain.push(old);
            }
            if chain.last() != Some(&old) {
                return Err(corrupt("member state: a broken succession chain"));
            }
            chain.push(new);
        }
        if chain.is_empty() {
            chain.push(new_key);
        }
        if chain.last() != Some(&new_key) {
            return Err(corrupt(
                "member state: the user key is not the chain's last",
            ));
        }
        let fresh = self.awaiting_approval.is_some();
        // Unless I am new, my current key must be on the chain.
        if !fresh && !chain.contains(&self.user_key()) {
            return Err(TeamError::UserKeyConflict(self.handle.clone()));
        }
        let me = engine.own_card().identity_key;
        let listed = state
            .devices
            .iter()
            .any(|d| Card::verify(d).is_ok_and(|c| c.identity_key == me));
        if !listed {
            return Err(TeamError::DeviceRemoved);
        }
        if !fresh && new_key == self.user_key() && state.entry_version < self.entry_version {
            return Ok(false);
        }
        self.user_seed = user_seed;
        self.invite_seed = invite_seed;
        self.cert = cert.encode_to_vec();
        self.root_user_key = (chain.len() > 1).then(|| chain[0]);
        self.successions = state
            .successions
            .iter()
            .map(|s| s.encode_to_vec())
            .collect();
        self.devices = state.devices.iter().map(|d| d.encode_to_vec()).collect();
        for secret in &state.revocation_secrets {
            if let (Ok(identity), Ok(value)) = (
                <[u8; 32]>::try_from(secret.identity_key.as_ref()),
                <[u8; 32]>::try_from(secret.secret.as_ref()),
            ) {
                self.set_revocation_secret(&identity, value);
            }
        }
        if state.dir_version >= self.dir_version {
            self.dir_key = key32(&state.dir_key, "directory key")?;
            self.dir_version = state.dir_version;
        }
        self.entry_version = self.entry_version.max(state.entry_version);
        if !state.team_seed.is_empty() {
            self.team_seed = Some(key32(&state.team_seed, "team key")?);
        }
        if !state.relay_admin_seed.is_empty() {
            self.relay_admin_seed = Some(key32(&state.relay_admin_seed, "relay admin key")?);
        }
        for invite in &state.invites {
            if let Ok(hash) = <[u8; 32]>::try_from(invite.registration_token_hash.as_ref()) {
                self.invites.insert(invite.handle.clone(), hash);
            }
        }
        for named in &state.names {
            self.device_names.insert(
                hex::encode(&named.identity_key),
                (named.name.chars().take(64).collect(), named.added_at),
            );
        }
        // The sender published the entry: the slot is the current key's.
        self.slot_owned = true;
        self.slot_seed = None;
        self.awaiting_approval = None;
        Ok(true)
    }

    /// A new device, from a member's link code: it knows the team and the
    /// relay, but holds no user key until one of the member's devices
    /// approves it and sends the member state.
    pub fn for_link(link: &super::ParsedLink, code: String) -> Self {
        let mut membership = Self::fresh(Fresh {
            team_name: &link.team_name,
            handle: &link.handle,
            relay_addr: &link.relay_addr,
            relay_fingerprint: link.relay_fingerprint,
            issuer_key: link.issuer_key,
            dir_key: link.dir_key,
            team_key: link.team_key,
        });
        // The approving device publishes; its member state says so.
        membership.slot_owned = true;
        membership.dir_version = link.dir_version;
        membership.awaiting_approval = Some(code);
        membership
    }

    /// Checks a verified entry against what I know of its member (DESIGN
    /// "Devices"): the first sight is taken; afterwards the user key may
    /// only move along signed successions, the device list only to a
    /// higher version, and a new user key without succession only with a
    /// new invite (the admin's `--replace`). Two successors of one key
    /// mark the member compromised until such a re-invite.
    pub fn check_known(
        &mut self,
        entry: &VerifiedEntry,
        announced: &[Succession],
    ) -> Result<Trust, TeamError> {
        let handle = entry.handle.clone();
        let first_sight = |entry: &VerifiedEntry| {
            let mut fresh = KnownUser {
                invite_key: entry.invite_key,
                chain: entry.chain.clone(),
                devices_version: entry.devices_version,
                ..KnownUser::default()
            };
            for pair in entry.chain.windows(2) {
                fresh.seen.insert(hex::encode(pair[0]), pair[1]);
            }
            fresh
        };
        let mut known = match self.known.get(&handle) {
            None => {
                self.known.insert(handle, first_sight(entry));
                return Ok(Trust::Same);
            }
            Some(known) => known.clone(),
        };
        if known.invite_key != entry.invite_key {
            // A re-invite: a new user key altogether.
            self.known.insert(handle.clone(), first_sight(entry));
            self.notice(format!(
                "{handle}'s key changed (the admin re-invited them): verify them again with `sotto verify {handle}`"
            ));
            return Ok(Trust::Replaced);
        }
        // Every succession seen, in entries or announced over Olm.
        let mut conflict = known.compromised;
        // Announcements count for the keys of this chain only: ones about
        // the keys of a member's earlier life (before a re-invite) are
        // history.
        let relevant = |old: &[u8; 32]| known.chain.contains(old) || entry.chain.contains(old);
        let announced: Vec<([u8; 32], [u8; 32])> = announced
            .iter()
            .filter_map(super::verify_succession)
            .filter(|(old, _)| relevant(old))
            .collect();
        let links = entry
            .chain
            .windows(2)
            .map(|pair| (pair[0], pair[1]))
            .chain(announced);
        for (old, new) in links {
            match known.seen.get(&hex::encode(old)) {
                Some(seen) if *seen != new => conflict = true,
                Some(_) => {}
                None => {
                    known.seen.insert(hex::encode(old), new);
                }
            }
        }
        if conflict {
            known.compromised = true;
            self.known.insert(handle.clone(), known);
            self.notice(format!(
                "{handle}'s user key has two different successors: one of their devices may be compromised; sotto trusts neither until the admin re-invites {handle}"
            ));
            return Err(TeamError::UserKeyConflict(handle));
        }
        let trust = if entry.chain == known.chain {
            if entry.devices_version < known.devices_version {
                self.known.insert(handle.clone(), known);
                return Err(TeamError::Rollback(handle));
            }
            Trust::Same
        } else if entry.chain.starts_with(&known.chain) {
            let old = known.chain.last().copied().unwrap_or(entry.chain[0]);
            Trust::Succeeded { old }
        } else if known.chain.starts_with(&entry.chain) {
            // Signed by a key that was already succeeded: a removed
            // device's list, or a replay.
            self.known.insert(handle.clone(), known);
            return Err(TeamError::Rollback(handle));
        } else {
            self.known.insert(handle.clone(), known);
            return Err(TeamError::UnknownUserKey(handle));
        };
        known.chain = entry.chain.clone();
        known.devices_version = entry.devices_version;
        self.known.insert(handle, known);
        Ok(trust)
    }

    /// Resolves `handle` and makes its devices (as its user key signed
    /// them) the ones `engine` encrypts to. For my own handle: my other
    /// devices.
    pub async fn refresh_member(
        &mut self,
        conn: &RelayConnection,
        engine: &mut Engine,
        handle: &str,
    ) -> Result<(), TeamError> {
        let entry = self.resolve(conn, handle).await?;
        self.apply_entry(engine, entry)
    }

    /// As [`Membership::refresh_member`] for every member of `roster` at
    /// once: the entries are read in one pipelined batch (one round trip,
    /// not one per member), then checked and applied one by one. Returns
    /// each member's outcome.
    pub async fn refresh_members(
        &mut self,
        conn: &RelayConnection,
        engine: &mut Engine,
        roster: &VerifiedRoster,
    ) -> Result<Vec<(String, Result<(), TeamError>)>, TeamError> {
        let directory = self.directory()?;
        let slots: Vec<SlotId> = roster
            .handles
            .iter()
            .map(|h| directory.user_slot(h))
            .collect();
        let values = futures::future::join_all(slots.iter().map(|slot| conn.slot_get(slot))).await;
        let mut outcomes = Vec::new();
        for ((handle, slot), value) in roster.handles.iter().zip(&slots).zip(values) {
            let value = value?;
            // The entry this device last applied, unchanged: nothing to
            // verify again (a relay that serves an old version can only
            // withhold news, which it always could). Successions announced
            // over Olm are checked against the entry every time.
            let stamp = value
                .as_ref()
                .map(|(version, _)| format!("{}/{version}", hex::encode(slot.as_bytes())));
            let unchanged = stamp.is_some()
                && self.applied.get(handle) == stamp.as_ref()
                && (*handle == self.handle || engine.contact_card(handle).is_some())
                && engine
                    .announced_successions(handle)
                    .map_err(|e| corrupt(e.to_string()))?
                    .is_empty();
            if unchanged {
                outcomes.push((handle.clone(), Ok(())));
                continue;
            }
            let outcome = Self::verify_slot(&directory, handle, slot, value)
                .and_then(|entry| self.apply_entry(engine, entry));
            match (&outcome, stamp) {
                (Ok(()), Some(stamp)) => {
                    self.applied.insert(handle.clone(), stamp);
                }
                _ => {
                    self.applied.remove(handle);
                }
            }
            outcomes.push((handle.clone(), outcome));
        }
        Ok(outcomes)
    }

    /// A member entry read from `slot`, verified.
    fn verify_slot(
        directory: &Directory,
        handle: &str,
        slot: &SlotId,
        value: Option<(u64, bytes::Bytes)>,
    ) -> Result<VerifiedEntry, TeamError> {
        let Some((_, value)) = value else {
            return Err(TeamError::NotJoined(handle.to_owned()));
        };
        let entry = directory.open_value(slot, &value)?;
        if entry.is_empty() {
            return Err(TeamError::NotJoined(handle.to_owned()));
        }
        Ok(directory.verify_entry(handle, &entry)?)
    }

    /// Checks a verified entry against what I know of its member and, if
    /// it passes, makes its devices the ones `engine` encrypts to.
    fn apply_entry(&mut self, engine: &mut Engine, entry: VerifiedEntry) -> Result<(), TeamError> {
        let handle = entry.handle.clone();
        let handle = handle.as_str();
        if handle == self.handle {
            return self.refresh_own(engine, entry);
        }
        let announced = engine
            .announced_successions(handle)
            .map_err(|e| corrupt(e.to_string()))?;
        let trust = self.check_known(&entry, &announced)?;
        let user_key = *entry.user_key.as_bytes();
        if let Trust::Succeeded { old } = trust {
            engine
                .carry_verification(handle, &old, &user_key)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        let change = engine
            .set_devices(handle, Some(user_key), entry.devices)
            .map_err(|e| corrupt(e.to_string()))?;
        if !change.removed.is_empty() {
            engine
                .rotate_sessions_shared_with(handle)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(())
    }

    /// A member's known state is compromised (two successors): stop
    /// encrypting to any of its devices.
    pub fn is_compromised(&self, handle: &str) -> bool {
        self.known.get(handle).is_some_and(|k| k.compromised)
    }

    /// My own entry, as published (by me or another device of mine).
    fn refresh_own(&mut self, engine: &mut Engine, entry: VerifiedEntry) -> Result<(), TeamError> {
        let mine = self.user_chain();
        let me = engine.own_card().identity_key;
        let listed = entry.devices.iter().any(|(c, _)| c.identity_key == me);
        if entry.chain == mine {
            if entry.devices_version >= self.entry_version {
                if !listed {
                    return Err(TeamError::DeviceRemoved);
                }
                self.entry_version = entry.devices_version;
                self.devices = entry
                    .devices
                    .iter()
                    .map(|(_, s)| s.encode_to_vec())
                    .collect();
            }
        } else if entry.chain.starts_with(&mine) {
            // Another device of mine moved to a new user key: it sends it
            // to me over Olm, unless I am the device it removed.
            if !listed {
                return Err(TeamError::DeviceRemoved);
            }
            return Ok(());
        } else if !mine.starts_with(&entry.chain) {
            let handle = self.handle.clone();
            self.notice(format!(
                "your directory entry is signed by a user key your devices did not make: a removed device of yours may be compromised; ask the admin to re-invite you (`sotto invite {handle} --replace`)"
            ));
            return Err(TeamError::UserKeyConflict(handle));
        }
        let user_key = self.user_key();
        let devices = self.own_devices(engine)?;
        let change = engine
            .set_devices(&self.handle, Some(user_key), devices)
            .map_err(|e| corrupt(e.to_string()))?;
        if !change.removed.is_empty() {
            engine
                .rotate_sessions_shared_with(&self.handle)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(())
    }

    /// Reads and verifies the roster (refusing a rollback).
    pub async fn roster(&mut self, conn: &RelayConnection) -> Result<VerifiedRoster, TeamError> {
        let directory = self.directory()?;
        let slot = directory.roster_slot();
        let Some((_, value)) = conn.slot_get(&slot).await? else {
            return Ok(VerifiedRoster {
                version: 0,
                handles: Vec::new(),
            });
        };
        let signed = directory.open_value(&slot, &value)?;
        let roster = directory.verify_roster(&signed, self.roster_version)?;
        self.roster_version = roster.version;
        Ok(roster)
    }

    /// Resolves `handle` to its verified devices: the entry must chain to
    /// `T` and the handle must be on the newest roster.
    pub async fn resolve(
        &mut self,
        conn: &RelayConnection,
        handle: &str,
    ) -> Result<VerifiedEntry, TeamError> {
        let roster = self.roster(conn).await?;
        if !roster.handles.iter().any(|h| h == handle) {
            return Err(TeamError::NotAMember(handle.to_owned()));
        }
        let directory = self.directory()?;
        let slot = directory.user_slot(handle);
        let value = conn.slot_get(&slot).await?;
        Self::verify_slot(&directory, handle, &slot, value)
    }

    /// Makes `handle`'s devices contacts of `engine` (resolving and
    /// verifying its entry in the directory first).
    pub async fn add_member_contact(
        &mut self,
        conn: &RelayConnection,
        engine: &mut Engine,
        handle: &str,
    ) -> Result<(), TeamError> {
        self.refresh_member(conn, engine, handle).await?;
        if engine.contact_card(handle).is_none() {
            return Err(TeamError::NotJoined(handle.to_owned()));
        }
        Ok(())
    }

    /// Admin: claims `invite`'s slot before the member joins, so no one
    /// else can take the handle's slot.
    pub async fn preclaim(
        &self,
        conn: &RelayConnection,
        invite: &IssuedInvite,
    ) -> Result<(), TeamError> {
        let directory = self.team_secrets()?.directory();
        let slot = directory.user_slot(&invite.handle);
        let value = directory.seal_value(&slot, &[])?;
        conn.slot_put(&slot, 1, value.into_bytes(), &invite.invite_key)
            .await?;
        Ok(())
    }

    /// Admin: publishes the roster with `handles`.
    pub async fn publish_roster(
        &mut self,
        conn: &RelayConnection,
        handles: &[String],
    ) -> Result<(), TeamError> {
        let team = self.team_secrets()?;
        let directory = team.directory();
        let slot: SlotId = directory.roster_slot();
        let version = self.roster_version + 1;
        let value = directory.seal_value(&slot, &team.sign_roster(version, handles))?;
        conn.slot_put(&slot, version, value.into_bytes(), &team.roster_owner())
            .await?;
        self.roster_version = version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::team::directory::tests::{device_card, invite};
    use crate::team::{TeamSecrets, build_entry_with, parse_invite};

    struct Fixture {
        team: TeamSecrets,
        invite: crate::team::IssuedInvite,
        card: SignedCard,
        /// Bob's view of the team.
        bob: Membership,
    }

    fn fixture() -> Fixture {
        let team = TeamSecrets::generate();
        let alice = invite(&team, "alice");
        let card = device_card("alice");
        let bob = Membership::from_invite(&parse_invite(&invite(&team, "bob").code, 0).unwrap());
        Fixture {
            team,
            invite: alice,
            card,
            bob,
        }
    }

    impl Fixture {
        /// Alice's entry with user keys `keys` (each succeeding the one
        /// before), the list signed by `signer` (the last key if `None`).
        fn entry(
            &self,
            keys: &[&SigningKey],
            signer: Option<&SigningKey>,
            version: u64,
        ) -> Result<VerifiedEntry, DirectoryError> {
            let successions: Vec<Succession> = keys
                .windows(2)
                .map(|pair| crate::team::sign_succession(pair[0], &pair[1].verifying_key()))
                .collect();
            let last = keys.last().unwrap();
            let bytes = build_entry_with(
                &self.invite.cert,
                "alice",
                &self.invite.invite_key,
                &keys[0].verifying_key(),
                &successions,
                signer.unwrap_or(last),
                version,
                std::slice::from_ref(&self.card),
            );
            self.team.directory().verify_entry("alice", &bytes)
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn device_lists_must_come_from_the_user_key_and_never_go_back() {
        let mut f = fixture();
        let (u, u2) = (key(1), key(2));
        let first = f.entry(&[&u], None, 5).unwrap();
        assert_eq!(f.bob.check_known(&first, &[]).unwrap(), Trust::Same);

        // Signed by the team key alone: refused before any trust check.
        let team_key = f.team.team.clone();
        assert!(matches!(
            f.entry(&[&u], Some(&team_key), 6),
            Err(DirectoryError::Forged { .. })
        ));
        // A lower version of the same user key: a rollback.
        let stale = f.entry(&[&u], None, 4).unwrap();
        assert!(matches!(
            f.bob.check_known(&stale, &[]),
            Err(TeamError::Rollback(h)) if h == "alice"
        ));
        // A succession moves the key on; the old key's lists (a removed
        // device's) are refused from then on, whatever their version.
        let next = f.entry(&[&u, &u2], None, 6).unwrap();
        assert_eq!(
            f.bob.check_known(&next, &[]).unwrap(),
            Trust::Succeeded {
                old: *u.verifying_key().as_bytes()
            }
        );
        let removed = f.entry(&[&u], None, 99).unwrap();
        assert!(matches!(
            f.bob.check_known(&removed, &[]),
            Err(TeamError::Rollback(_))
        ));
        // A new key with no succession under the same invite (a removed
        // device holds the invite key too): refused.
        let unknown = f.entry(&[&key(9)], None, 100).unwrap();
        assert!(matches!(
            f.bob.check_known(&unknown, &[]),
            Err(TeamError::UnknownUserKey(_))
        ));
    }

    #[test]
    fn two_successors_of_one_key_are_a_compromise_until_a_reinvite() {
        let mut f = fixture();
        let (u, u2, rogue) = (key(1), key(2), key(3));
        f.bob
            .check_known(&f.entry(&[&u], None, 1).unwrap(), &[])
            .unwrap();
        let announced = crate::team::sign_succession(&u, &rogue.verifying_key());
        let entry = f.entry(&[&u, &u2], None, 2).unwrap();
        assert!(matches!(
            f.bob.check_known(&entry, &[announced]),
            Err(TeamError::UserKeyConflict(h)) if h == "alice"
        ));
        assert!(f.bob.is_compromised("alice"));
        // Even the entry alone is refused now.
        assert!(f.bob.check_known(&entry, &[]).is_err());
        assert!(
            f.bob
                .take_notices()
                .iter()
                .any(|n| n.contains("two different successors"))
        );
        // The admin's re-invite (a new certificate) starts afresh, with a
        // "key changed" notice.
        f.invite = invite(&f.team, "alice");
        let fresh = f.entry(&[&key(4)], None, 1).unwrap();
        assert_eq!(f.bob.check_known(&fresh, &[]).unwrap(), Trust::Replaced);
        assert!(!f.bob.is_compromised("alice"));
        // The old life's two successors, still on record, do not count
        // against the new one.
        let stale = [
            crate::team::sign_succession(&u, &rogue.verifying_key()),
            crate::team::sign_succession(&u, &u2.verifying_key()),
        ];
        assert_eq!(f.bob.check_known(&fresh, &stale).unwrap(), Trust::Same);
        assert!(
            f.bob
                .take_notices()
                .iter()
                .any(|n| n.contains("alice's key changed"))
        );
    }
}
