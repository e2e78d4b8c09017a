//! A device's membership in a team, and the directory operations it does
//! through the relay: publish its own entry, resolve another member by
//! handle, read the roster; for the admin, pre-claim a member's slot and
//! publish the roster.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sotto_proto::client::SignedInviteCert;
use sotto_proto::{Message as _, SlotId};
use zeroize::Zeroizing;

use super::directory::{
    Directory, DirectoryError, TeamSecrets, VerifiedEntry, VerifiedRoster, build_entry,
};
use super::invite::{IssuedInvite, ParsedInvite};
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
}

impl Drop for Membership {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.dir_key.zeroize();
        self.invite_seed.zeroize();
        self.user_seed.zeroize();
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
        Self {
            team_name: invite.team_name.clone(),
            handle: invite.handle.clone(),
            relay_addr: invite.relay_addr.clone(),
            relay_fingerprint: invite.relay_fingerprint,
            issuer_key: invite.issuer_key,
            dir_key: *invite.directory.dir_key(),
            team_key: *invite.directory.team_key().as_bytes(),
            cert: invite.cert.encode_to_vec(),
            invite_seed: invite.invite_key.to_bytes(),
            user_seed,
            entry_version: 1,
            roster_version: 0,
            team_seed: None,
            relay_admin_seed: None,
            invites: std::collections::BTreeMap::new(),
            slot_owned: false,
            dir_version: 0,
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
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(None, &self.user_seed);
        let mut seed = Zeroizing::new([0u8; 32]);
        hkdf.expand(super::tags::SLOT_OWNER, seed.as_mut())
            .expect("invariant: 32 bytes is a valid HKDF-SHA256 output length");
        SigningKey::from_bytes(&seed)
    }

    /// Publishes (or updates) my directory entry listing `engine`'s device.
    /// The first publication also takes the slot from the invite key, so
    /// whoever else saw the invite code can never rewrite my entry.
    pub async fn publish_entry(
        &mut self,
        conn: &RelayConnection,
        engine: &Engine,
    ) -> Result<(), TeamError> {
        let directory = self.directory()?;
        let cert = SignedInviteCert::decode(self.cert.as_slice()).map_err(corrupt)?;
        let invite_key = SigningKey::from_bytes(&self.invite_seed);
        let user_key = SigningKey::from_bytes(&self.user_seed);
        let version = self.entry_version + 1;
        let entry = build_entry(
            &cert,
            &self.handle,
            &invite_key,
            &user_key,
            version,
            &[engine.signed_card()],
        );
        let slot = directory.user_slot(&self.handle);
        let value = directory.seal_value(&slot, &entry)?.into_bytes();
        let owner = self.slot_owner();
        if self.slot_owned {
            conn.slot_put(&slot, version, value, &owner).await?;
        } else {
            conn.slot_transfer(&slot, version, value, &invite_key, &owner.verifying_key())
                .await?;
            self.slot_owned = true;
        }
        self.entry_version = version;
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
        let Some((_, value)) = conn.slot_get(&slot).await? else {
            return Err(TeamError::NotJoined(handle.to_owned()));
        };
        let entry = directory.open_value(&slot, &value)?;
        if entry.is_empty() {
            return Err(TeamError::NotJoined(handle.to_owned()));
        }
        Ok(directory.verify_entry(handle, &entry)?)
    }

    /// Makes `handle`'s current device a contact of `engine` (resolving and
    /// verifying it in the directory first); returns its device ID.
    pub async fn add_member_contact(
        &mut self,
        conn: &RelayConnection,
        engine: &mut Engine,
        handle: &str,
    ) -> Result<String, TeamError> {
        let entry = self.resolve(conn, handle).await?;
        // One device per member until multi-device lands: the newest card.
        let (card, signed) = entry
            .devices
            .into_iter()
            .last()
            .ok_or_else(|| TeamError::NotJoined(handle.to_owned()))?;
        let device = card.device_id();
        engine
            .add_contact(card, &signed)
            .map_err(|e| TeamError::Corrupt(e.to_string()))?;
        Ok(device)
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
