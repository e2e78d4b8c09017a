//! A device's membership in a team, and the directory operations it does
//! through the relay: publish its own entry, resolve another member by
//! handle, read the roster; for the admin, pre-claim a member's slot and
//! publish the roster.
//!
//! Where each part lives (every file extends the one [`Membership`]):
//!
//! - `mod.rs`: [`Membership`] itself — how it is made (invite, team
//!   creation, link), stored, and its directory and team keys.
//! - `devices`: my own devices as the directory lists them — the signed
//!   device list, user-key successions, the member state my devices hand
//!   each other.
//! - `trust`: what I accept of another member's entry ([`Trust`]): the
//!   chain of user keys, never going back, compromise on forked
//!   successions.
//! - `admins`: the team's admins as the roster names them, the grant that
//!   makes a member's devices admin devices, and the admin log's reads and
//!   appends.
//! - `directory_io`: the operations that read or write directory slots
//!   through a relay connection (publish my entry, resolve a handle, the
//!   roster, pre-claim).

mod admins;
mod devices;
mod directory_io;
mod trust;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sotto_proto::Message as _;
use zeroize::Zeroize as _;
use zeroize::Zeroizing;

use super::directory::{Directory, DirectoryError, TeamSecrets};
use super::invite::ParsedInvite;
use crate::{NetError, RelayConnection, Store, Tree};

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
    /// Only an admin may do this.
    #[error("only a team admin can do that")]
    NotAdmin,
    /// The last admin cannot step down or be removed.
    #[error("{0} is the team's last admin: name another admin first (`sotto admin add HANDLE`)")]
    LastAdmin(String),
    /// `admin add` for someone who is already an admin.
    #[error("{0} is already an admin")]
    AlreadyAdmin(String),
    /// `admin remove` for someone who is not an admin.
    #[error("{0} is not an admin")]
    NotAnAdmin(String),
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
    /// The team record names another token issuer key than this device
    /// pinned.
    #[error(
        "the team's roster names another relay issuer key than the one this device pinned: the relay or your invite may have been tampered with; tell your admin"
    )]
    IssuerKeyMismatch,
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
    /// Admin: every relay registration of each member beyond its first
    /// invite (device invites, accounts its devices reported): SHA-256 of
    /// the registration token, which names the account for revocation.
    #[serde(default)]
    registrations: std::collections::BTreeMap<String, Vec<[u8; 32]>>,
    /// The team admin's handle, as the last roster read named it.
    #[serde(default)]
    team_admin: Option<String>,
    /// The token issuer as the newest roster names it (on the admin's
    /// devices: as the relay told the admin), DESIGN §7.
    #[serde(default)]
    token_issuer: Option<super::directory::TokenIssuer>,
    /// The team's admins as the newest roster names them.
    #[serde(default)]
    team_admins: Vec<String>,
    /// Admin: where the admin log's next free slot was last seen.
    #[serde(default)]
    log_next: u64,
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
            registrations: Default::default(),
            team_admin: None,
            token_issuer: None,
            team_admins: Vec::new(),
            log_next: 0,
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

    /// The token issuer the team record names (`None` until a roster that
    /// names one was read).
    pub fn token_issuer(&self) -> Option<super::directory::TokenIssuer> {
        self.token_issuer
    }

    /// Admin: records the token issuer the relay reported at bootstrap,
    /// for the rosters to come.
    pub fn set_token_issuer(&mut self, issuer: super::directory::TokenIssuer) {
        self.token_issuer = Some(issuer);
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

    /// Admin: remembers one more relay registration of `handle` (a device
    /// invite, or an account one of their devices reported).
    pub fn record_registration(&mut self, handle: &str, registration_token_hash: [u8; 32]) {
        let known = self.registrations.entry(handle.to_owned()).or_default();
        if !known.contains(&registration_token_hash) {
            known.push(registration_token_hash);
        }
    }

    /// Admin: every registration token hash recorded for `handle`: its
    /// invite's first, then its devices'.
    pub fn registrations_of(&self, handle: &str) -> Vec<[u8; 32]> {
        let mut all: Vec<[u8; 32]> = self.invites.get(handle).copied().into_iter().collect();
        for hash in self.registrations.get(handle).into_iter().flatten() {
            if !all.contains(hash) {
                all.push(*hash);
            }
        }
        all
    }

    /// Admin: the member a registration token hash is recorded for.
    pub fn registration_holder(&self, registration_token_hash: &[u8; 32]) -> Option<&str> {
        self.invites
            .iter()
            .find(|(_, hash)| *hash == registration_token_hash)
            .map(|(handle, _)| handle.as_str())
            .or_else(|| {
                self.registrations
                    .iter()
                    .find(|(_, hashes)| hashes.contains(registration_token_hash))
                    .map(|(handle, _)| handle.as_str())
            })
    }

    /// Admin: forgets `handle`'s registrations (all revoked).
    pub fn forget_registrations(&mut self, handle: &str) {
        self.invites.remove(handle);
        self.registrations.remove(handle);
    }

    /// The team admin's handle, if a roster named one.
    pub fn team_admin(&self) -> Option<&str> {
        self.team_admin.as_deref()
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::team::{TeamSecrets, issue_invite, parse_invite};

    #[test]
    fn every_registration_of_a_member_is_kept_once_and_found_by_hash() {
        let team = TeamSecrets::generate();
        let issued = issue_invite(
            &team,
            &crate::team::InviteParams {
                team_name: "acme",
                handle: "admin",
                expires_at: u64::MAX,
                relay_addr: "127.0.0.1:1",
                relay_fingerprint: [0; 32],
                registration_token: &[1; 32],
                issuer_key: [2; 32],
                device: false,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let parsed = parse_invite(&issued.code, 0).unwrap_or_else(|e| panic!("{e}"));
        let mut admin = Membership::for_admin(&team, &parsed, &SigningKey::from_bytes(&[3; 32]));
        admin.record_invite("ann", [10; 32]);
        admin.record_registration("ann", [11; 32]);
        admin.record_registration("ann", [11; 32]);
        admin.record_registration("ann", [10; 32]);
        admin.record_registration("bob", [20; 32]);
        assert_eq!(admin.registrations_of("ann"), [[10; 32], [11; 32]]);
        assert_eq!(admin.registration_holder(&[11; 32]), Some("ann"));
        assert_eq!(admin.registration_holder(&[20; 32]), Some("bob"));
        assert_eq!(admin.registration_holder(&[99; 32]), None);
        admin.forget_registrations("ann");
        assert!(admin.registrations_of("ann").is_empty());
        assert_eq!(admin.registrations_of("bob"), [[20; 32]]);
    }
}
