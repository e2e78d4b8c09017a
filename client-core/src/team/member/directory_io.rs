//! The directory operations that go through a relay connection: publish
//! my entry, resolve a handle, read and publish the roster, pre-claim a
//! slot.

use ed25519_dalek::SigningKey;
use sotto_proto::client::SignedInviteCert;
use sotto_proto::{Message as _, SlotId};

use super::{Membership, TeamError, corrupt};
use crate::team::directory::{VerifiedEntry, VerifiedRoster};
use crate::team::invite::IssuedInvite;
use crate::{Engine, RelayConnection};

impl Membership {
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
        Ok(crate::team::build_entry_with(
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
        let entry = crate::team::build_entry_with(
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
        if !self.devices.is_empty() {
            self.devices = devices.iter().map(|d| d.encode_to_vec()).collect();
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
                admin: None,
                admins_listed: Vec::new(),
                issuer: None,
            });
        };
        let signed = directory.open_value(&slot, &value)?;
        let roster = directory.verify_roster(&signed, self.roster_version)?;
        // T vouches for the issuer key: a relay that shows this device
        // another one (to tag its tokens) is refused here.
        if let Some(issuer) = roster.issuer {
            if issuer.issuer_key != self.issuer_key {
                return Err(TeamError::IssuerKeyMismatch);
            }
            self.token_issuer = Some(issuer);
        }
        self.roster_version = roster.version;
        if let Some(admin) = &roster.admin {
            self.team_admin = Some(admin.clone());
        }
        self.follow_admins(&roster);
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

    /// Admin: publishes the roster with `handles` and the admins as they
    /// stand (less any who is no longer a member).
    pub async fn publish_roster(
        &mut self,
        conn: &RelayConnection,
        handles: &[String],
    ) -> Result<(), TeamError> {
        let admins = self.admins();
        self.publish_roster_with(conn, handles, &admins).await
    }

    /// Admin: publishes the roster with `handles` and `admins` (each of
    /// them a member; at least one).
    pub async fn publish_roster_with(
        &mut self,
        conn: &RelayConnection,
        handles: &[String],
        admins: &[String],
    ) -> Result<(), TeamError> {
        let team = self.team_secrets()?;
        let admins: Vec<String> = admins
            .iter()
            .filter(|a| handles.contains(a))
            .cloned()
            .collect();
        if admins.is_empty() {
            return Err(TeamError::LastAdmin(self.admins().join(", ")));
        }
        let directory = team.directory();
        let slot: SlotId = directory.roster_slot();
        let version = self.roster_version + 1;
        let signed = team.sign_roster_with(version, handles, &admins, self.token_issuer.as_ref());
        let value = directory.seal_value(&slot, &signed)?;
        conn.slot_put(&slot, version, value.into_bytes(), &team.roster_owner())
            .await?;
        self.roster_version = version;
        self.team_admin = admins.first().cloned();
        self.team_admins = admins;
        Ok(())
    }
}
