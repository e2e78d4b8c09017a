//! The team flows: create a team, invite, join, members, revoke, rotate
//! the directory key, and the contacts the roster names.

use std::path::Path;
use std::sync::Arc;

use super::{App, AppError, RelayTarget, resolve};
use crate::client::{Client, Clock};
use crate::engine::Engine;
use crate::team::{
    InviteError, InviteParams, Membership, TeamError, TeamSecrets, TokenIssuer, issue_invite,
    parse_invite,
};
use crate::{KeySource, RelayConnection, Store};

impl App {
    /// The admin's first device: creates the team on the relay at `relay`,
    /// consuming its one-time bootstrap code, with `handle` as its first
    /// member. The relay learns a fresh admin credential key (used only for
    /// relay administration) and nothing about the team.
    pub async fn create_team(
        home: &Path,
        key: KeySource,
        relay: RelayTarget,
        bootstrap_code: &str,
        team_name: &str,
        handle: &str,
        clock: Clock,
    ) -> Result<Self, AppError> {
        let store = Self::fresh(home, key)?;
        let relay_addr = resolve(&relay.addr, relay.fingerprint).await?;
        let now = Self::now_secs(&clock);
        let relay_admin = {
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(seed.as_mut())
                .expect("invariant: the OS random number generator works");
            ed25519_dalek::SigningKey::from_bytes(&seed)
        };
        // Bootstrap and the admin's own registration need no token.
        let setup = RelayConnection::connect(&relay_addr, None).await?;
        let (issuer, token_period_secs) =
            crate::bootstrap_issuer(&setup, bootstrap_code, &relay_admin).await?;
        let registration = crate::mint_registrations(&setup, &relay_admin, 1, now + 3600)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| crate::TokenError::Protocol("no registration token minted".into()))?;
        let revocation = crate::RevocationSecret::generate()?;
        let access = Self::register(&setup, &store, &registration, issuer, &revocation).await;
        setup.close().await;
        let access = access?;

        let team = TeamSecrets::generate();
        let own = issue_invite(
            &team,
            &InviteParams {
                team_name,
                handle,
                expires_at: now + 3600,
                relay_addr: &relay.addr,
                relay_fingerprint: relay.fingerprint,
                registration_token: registration.as_bytes(),
                issuer_key: issuer.to_bytes(),
                device: false,
            },
        )?;
        let parsed = parse_invite(&own.code, now)?;
        let mut membership = Membership::for_admin(&team, &parsed, &relay_admin);
        membership.record_invite(handle, own.registration_token_hash);
        // The team record (the roster) names the issuer, signed by T.
        membership.set_token_issuer(TokenIssuer {
            issuer_key: issuer.to_bytes(),
            period_secs: token_period_secs,
        });
        let engine = Engine::create(store.clone(), handle, now)?;
        engine.set_token_issuer(token_period_secs)?;
        let identity = engine.own_card().identity_key.to_bytes();
        membership.set_revocation_secret(&identity, *revocation.as_bytes());
        membership.name_device(&identity, "first device", now);
        let mut client = Client::new(engine, relay_addr, clock.clone());
        client.set_access(access);
        let conn = client.connect().await?;
        membership.preclaim(&conn, &own).await?;
        membership.publish_entry(&conn, client.engine()).await?;
        membership
            .publish_roster(&conn, &[handle.to_owned()])
            .await?;
        membership
            .append_log(
                &conn,
                now,
                "team-created",
                handle,
                Some(own.registration_token_hash),
            )
            .await?;
        conn.close().await;
        Self::joined(home, store, client, membership, clock)
    }

    /// Registers this device's issuance account with `registration` and
    /// fills its token wallet.
    pub(crate) async fn register(
        conn: &RelayConnection,
        store: &Arc<dyn Store>,
        registration: &crate::RegistrationToken,
        issuer: ed25519_dalek::VerifyingKey,
        revocation: &crate::RevocationSecret,
    ) -> Result<crate::Access, AppError> {
        let account = crate::IssuanceAccount::load_or_create(store.as_ref())?;
        crate::register_device(conn, registration, &account, revocation).await?;
        let tokens = crate::refill(conn, &account, &issuer, 100).await?;
        let wallet = crate::TokenWallet::new(store.clone());
        wallet.add(&tokens)?;
        Ok(crate::Access {
            account,
            issuer,
            wallet,
        })
    }

    pub(crate) fn access(
        store: &Arc<dyn Store>,
        issuer: [u8; 32],
    ) -> Result<crate::Access, AppError> {
        let issuer = ed25519_dalek::VerifyingKey::from_bytes(&issuer)
            .map_err(|_| TeamError::Corrupt("the stored issuer key is not a key".into()))?;
        Ok(crate::Access {
            account: crate::IssuanceAccount::load_or_create(store.as_ref())?,
            issuer,
            wallet: crate::TokenWallet::new(store.clone()),
        })
    }

    /// Admin: invites `handle`; returns the invite code.
    pub async fn invite(&mut self, handle: &str, valid_secs: u64) -> Result<String, AppError> {
        self.catch_up_with_admins().await?;
        let conn = self.client.connect().await?;
        let mut roster = self.membership.roster(&conn).await?.handles;
        let issued = self.mint_invite(&conn, handle, valid_secs, false).await?;
        if let Some(previous) = self.membership.invite_token_hash(handle) {
            // A second invite for one handle: the earlier one still names
            // an account (or a token) to revoke with the member.
            self.membership.record_registration(handle, previous);
        }
        self.membership
            .record_invite(handle, issued.registration_token_hash);
        self.membership.preclaim(&conn, &issued).await?;
        if !roster.iter().any(|h| h == handle) {
            roster.push(handle.to_owned());
            self.membership.publish_roster(&conn, &roster).await?;
        }
        self.log_action(
            &conn,
            "invite",
            handle,
            Some(issued.registration_token_hash),
        )
        .await;
        self.membership.save(self.store.as_ref())?;
        conn.close().await;
        Ok(issued.code)
    }

    /// Admin: a relay registration token and an invite for `handle`
    /// around it (`device`: a device invite, relay access only).
    pub(crate) async fn mint_invite(
        &self,
        conn: &RelayConnection,
        handle: &str,
        valid_secs: u64,
        device: bool,
    ) -> Result<crate::team::IssuedInvite, AppError> {
        let team = self.membership.team_secrets()?;
        let relay_admin = self.membership.relay_admin()?;
        let expires_at = Self::now_secs(&self.clock) + valid_secs;
        let registration = crate::mint_registrations(conn, &relay_admin, 1, expires_at)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| crate::TokenError::Protocol("no registration token minted".into()))?;
        Ok(issue_invite(
            &team,
            &InviteParams {
                team_name: &self.membership.team_name,
                handle,
                expires_at,
                relay_addr: &self.membership.relay_addr,
                relay_fingerprint: self.membership.relay_fingerprint,
                registration_token: registration.as_bytes(),
                issuer_key: self.membership.issuer_key,
                device,
            },
        )?)
    }

    /// A member's first device: joins with an invite code.
    pub async fn join(
        home: &Path,
        key: KeySource,
        code: &str,
        clock: Clock,
    ) -> Result<Self, AppError> {
        let now = Self::now_secs(&clock);
        let invite = parse_invite(code, now)?;
        if invite.device {
            return Err(InviteError::LinkNeeded.into());
        }
        let store = Self::fresh(home, key)?;
        let relay = resolve(&invite.relay_addr, invite.relay_fingerprint).await?;
        let registration = crate::RegistrationToken::from_bytes(
            invite
                .registration_token
                .as_slice()
                .try_into()
                .map_err(|_| InviteError::Malformed("registration token"))?,
        );
        let issuer = ed25519_dalek::VerifyingKey::from_bytes(&invite.issuer_key)
            .map_err(|_| InviteError::Malformed("issuer key"))?;
        // Registration needs no token; it consumes the invite's single-use
        // registration token at the relay.
        let setup = RelayConnection::connect(&relay, None).await?;
        let revocation = crate::RevocationSecret::generate()?;
        let access = Self::register(&setup, &store, &registration, issuer, &revocation).await;
        setup.close().await;
        let access = access?;
        let mut membership = Membership::from_invite(&invite);
        let engine = Engine::create(store.clone(), &invite.handle, now)?;
        let identity = engine.own_card().identity_key.to_bytes();
        membership.set_revocation_secret(&identity, *revocation.as_bytes());
        membership.name_device(&identity, "first device", now);
        let mut client = Client::new(engine, relay, clock.clone());
        client.set_access(access);
        let conn = client.connect().await?;
        membership.check_unused(&conn).await?;
        membership.publish_entry(&conn, client.engine()).await?;
        conn.close().await;
        Self::joined(home, store, client, membership, clock)
    }

    /// The team roster.
    pub async fn members(&mut self) -> Result<Vec<String>, AppError> {
        let conn = self.client.connect().await?;
        let roster = self.membership.roster(&conn).await?;
        self.membership.save(self.store.as_ref())?;
        conn.close().await;
        Ok(roster.handles)
    }

    /// Admin: removes `handle` from the roster; every member drops them at
    /// their next sync and stops encrypting to them.
    pub async fn revoke(&mut self, handle: &str) -> Result<(), AppError> {
        if handle == self.membership.handle {
            return Err(AppError::Myself);
        }
        self.membership.team_secrets()?;
        self.catch_up_with_admins().await?;
        let conn = self.client.connect().await?;
        let roster = self.membership.roster(&conn).await?.handles;
        if !roster.iter().any(|h| h == handle) {
            conn.close().await;
            return Err(TeamError::NotAMember(handle.to_owned()).into());
        }
        let remaining: Vec<String> = roster.into_iter().filter(|h| h != handle).collect();
        // Accounts other admins recorded (their invites, reports filed
        // with them) are in the admin log.
        if let Err(error) = self.registrations_from_log(&conn, handle).await {
            conn.close().await;
            return Err(error);
        }
        // The relay stops issuing tokens to every account of the member
        // (their first invite's, device invites', the ones their devices
        // reported) and moves to a new token key, so tokens hoarded before
        // now stop working. Before the roster changes, so a failure here
        // can be retried with the same command.
        let revoked = self.revoke_accounts(&conn, handle).await;
        if let Err(error) = revoked {
            conn.close().await;
            return Err(error);
        }
        // An admin revoked loses the role with the membership (the roster
        // lists only members as admins).
        let published = self.membership.publish_roster(&conn, &remaining).await;
        if published.is_ok() {
            self.log_action(&conn, "revoke", handle, None).await;
        }
        conn.close().await;
        published?;
        self.membership.forget_registrations(handle);
        self.membership.save(self.store.as_ref())?;
        // Every group of mine they were in moves on without them.
        let departed = [handle.to_owned()];
        self.client
            .engine_mut()
            .members_revoked(&departed, (self.clock)())?;
        self.client.engine_mut().remove_contact(handle)?;
        self.rotate_directory(&remaining).await
    }

    /// Admin: ends every relay account recorded for `handle`. A token
    /// the relay no longer knows (it expired unused long ago) is skipped.
    pub(crate) async fn revoke_accounts(
        &mut self,
        conn: &RelayConnection,
        handle: &str,
    ) -> Result<(), AppError> {
        let relay_admin = self.membership.relay_admin()?;
        for hash in self.membership.registrations_of(handle) {
            match crate::revoke(conn, &relay_admin, &hash).await {
                Ok(()) | Err(crate::TokenError::InviteInvalid) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Admin: files the relay accounts members' devices reported (a
    /// device that minted a registration token for another device of its
    /// member); on any other device they are dropped.
    pub(crate) async fn file_account_reports(&mut self) -> Result<(), AppError> {
        let reports = self.client.engine().take_account_reports()?;
        if reports.is_empty() || !self.membership.is_admin() {
            return Ok(());
        }
        for (handle, hash) in reports {
            // A member reporting a token recorded for someone else (an
            // invite code they saw) would have that account revoked with
            // their own: refused, with a notice.
            match self.membership.registration_holder(&hash) {
                Some(holder) if holder != handle => {
                    let notice = format!(
                        "{handle}'s device reported a relay registration that belongs to {holder}; it was ignored"
                    );
                    self.membership.push_notice(notice);
                }
                _ => {
                    self.membership.record_registration(&handle, hash);
                    // Every admin finds it in the log when revoking.
                    self.log_action_now("account-recorded", &handle, Some(hash))
                        .await?;
                }
            }
        }
        self.membership.save(self.store.as_ref())?;
        Ok(())
    }

    /// A registration token I minted for a new device of mine: the admin
    /// records it (on the admin's own devices, at once; elsewhere it is
    /// reported to the admin over Olm), so revoking me ends that device's
    /// relay account too.
    pub(crate) async fn report_account(&mut self, hash: [u8; 32]) -> Result<(), AppError> {
        let me = self.membership.handle.clone();
        if self.membership.is_admin() {
            self.membership.record_registration(&me, hash);
            self.membership.save(self.store.as_ref())?;
            // The other admins find it in the log.
            return self
                .log_action_now("account-recorded", &me, Some(hash))
                .await;
        }
        let Some(admin) = self.membership.team_admin().map(str::to_owned) else {
            // A roster from before rosters named the admin.
            return Ok(());
        };
        if admin == me {
            return Ok(());
        }
        self.ensure_contact(&admin).await?;
        self.client
            .engine_mut()
            .queue_account_report(&admin, hash, (self.clock)())?;
        self.deliver_or_queue().await?;
        Ok(())
    }

    /// Admin, after a revocation (DESIGN §6): a new `K_dir`. The roster and
    /// my entry are re-published under it, and it goes to every remaining
    /// member over Olm, signed by `T`; their devices re-publish their own
    /// entries under it at their next sync. The revoked member keeps the
    /// old key, which opens only slots nobody updates any more, and cannot
    /// compute the new slot IDs.
    async fn rotate_directory(&mut self, remaining: &[String]) -> Result<(), AppError> {
        self.rotate_directory_except(remaining, "").await
    }

    /// As [`App::rotate_directory`], but the key does not go to `excluded`
    /// (a member re-invited because their devices were lost: those devices
    /// must not get it).
    pub(crate) async fn rotate_directory_except(
        &mut self,
        remaining: &[String],
        excluded: &str,
    ) -> Result<(), AppError> {
        // Resolve everyone in the old directory first: they must be
        // contacts to receive the key. A member whose entry does not
        // verify is skipped. A member invited but not joined holds an
        // invite that carries the old key: it is withdrawn below.
        let mut recipients = Vec::new();
        let mut unjoined = Vec::new();
        let me = self.membership.handle.clone();
        for handle in remaining.iter().filter(|h| **h != me && *h != excluded) {
            match self.ensure_contact(handle).await {
                Ok(()) => recipients.push(handle.clone()),
                Err(error) if error.is_network() => return Err(error),
                Err(AppError::Team(TeamError::NotJoined(_))) => unjoined.push(handle.clone()),
                Err(_) => {}
            }
        }
        self.withdraw_invites(&unjoined).await?;
        let now = Self::now_secs(&self.clock);
        self.client.engine_mut().rotate_request_inbox(now)?;
        let (dir_key, version, signature) = self.membership.rotate_dir_key()?;
        self.publish_under_new_key(Some(remaining)).await?;
        self.log_action_now("dir-key-rotated", &format!("version {version}"), None)
            .await?;
        let now = (self.clock)();
        // My other devices need the key too.
        recipients.push(me);
        for handle in recipients {
            let payload = sotto_proto::client::Payload {
                sent_at: now,
                body: Some(sotto_proto::client::payload::Body::DirKey(
                    sotto_proto::client::DirKey {
                        dir_key: dir_key.to_vec().into(),
                        version,
                        signature: signature.clone().into(),
                    },
                )),
                ..Default::default()
            };
            self.client.engine_mut().queue(&handle, payload, None)?;
        }
        self.client.engine().flush()?;
        self.deliver_or_queue().await?;
        Ok(())
    }

    /// Admin, before the directory key rotates: the outstanding invites of
    /// `handles` (invited, not joined) carry the old key, so their
    /// registration tokens are expired at the relay and the admin is told
    /// to invite them again (`sotto invite HANDLE` mints a code with the
    /// new key). (The relay expires a token that was never used; one used
    /// by a member whose entry is not published yet loses its account,
    /// and that member needs the new invite too.)
    async fn withdraw_invites(&mut self, handles: &[String]) -> Result<(), AppError> {
        if handles.is_empty() {
            return Ok(());
        }
        let relay_admin = self.membership.relay_admin()?;
        let conn = self.client.connect().await?;
        // Invites other admins minted are in the admin log.
        for handle in handles {
            if let Err(error) = self.registrations_from_log(&conn, handle).await {
                conn.close().await;
                return Err(error);
            }
        }
        let pending: Vec<(String, Vec<[u8; 32]>)> = handles
            .iter()
            .map(|h| (h.clone(), self.membership.registrations_of(h)))
            .filter(|(_, hashes)| !hashes.is_empty())
            .collect();
        let mut outcome = Ok(());
        'members: for (handle, hashes) in pending {
            for hash in hashes {
                match crate::revoke(&conn, &relay_admin, &hash).await {
                    Ok(()) | Err(crate::TokenError::InviteInvalid) => {}
                    Err(error) => {
                        outcome = Err(error.into());
                        break 'members;
                    }
                }
            }
            self.log_action(&conn, "invite-withdrawn", &handle, None)
                .await;
            self.membership.push_notice(format!(
                "the invite for {handle} carried the old team directory key and was withdrawn; run `sotto invite {handle}` for a new one"
            ));
        }
        conn.close().await;
        self.membership.save(self.store.as_ref())?;
        outcome
    }

    /// Publishes my entry (and, for the admin, `roster`) under the
    /// directory key just taken, then saves the membership; on failure the
    /// stored membership, with the old key, is reloaded, so nothing local
    /// changed and the step can be retried.
    pub(crate) async fn publish_under_new_key(
        &mut self,
        roster: Option<&[String]>,
    ) -> Result<(), AppError> {
        let conn = self.client.connect().await?;
        let published = async {
            if let Some(roster) = roster {
                self.membership.publish_roster(&conn, roster).await?;
            }
            self.membership
                .publish_entry(&conn, self.client.engine())
                .await
        }
        .await;
        conn.close().await;
        if let Err(error) = published {
            self.membership = Membership::load(self.store.as_ref())?
                .ok_or_else(|| AppError::NotJoined(self.home.clone()))?;
            return Err(error.into());
        }
        self.membership.save(self.store.as_ref())?;
        Ok(())
    }

    /// A member: applies a directory key the admin sent (checked against
    /// `T`) and re-publishes my entry under it. Returns whether it moved.
    pub(crate) async fn apply_dir_key(&mut self) -> Result<bool, AppError> {
        let Some(pending) = self.client.engine().pending_dir_key()? else {
            return Ok(false);
        };
        let taken = self.membership.accept_dir_key(
            &pending.dir_key,
            pending.version,
            &pending.signature,
        )?;
        if taken {
            // A revocation: my request inbox moves too (the revoked member
            // read my card in the old directory). On failure the key stays
            // pending for the next sync; the new inbox is published then.
            let now = Self::now_secs(&self.clock);
            self.client.engine_mut().rotate_request_inbox(now)?;
            self.publish_under_new_key(None).await?;
        }
        self.client.engine().clear_dir_key()?;
        Ok(taken)
    }

    /// The version of the team directory key this device holds (0: the
    /// one from its invite; +1 per revocation).
    pub fn directory_version(&self) -> u64 {
        self.membership.dir_version()
    }

    /// The roster's slot ID under my directory key (to check what a
    /// revoked member can still compute).
    pub fn roster_slot(&self) -> Result<sotto_proto::SlotId, AppError> {
        Ok(self.membership.directory()?.roster_slot())
    }

    /// Hands the engine the token period the newest roster named (refills
    /// refuse a key of another period).
    pub(crate) fn note_token_issuer(&self) -> Result<(), AppError> {
        if let Some(issuer) = self.membership.token_issuer() {
            self.client.engine().set_token_issuer(issuer.period_secs)?;
        }
        Ok(())
    }

    pub(crate) async fn refresh_contacts(&mut self) -> Result<(), AppError> {
        let conn = self.client.connect().await?;
        let roster = match self.membership.roster(&conn).await {
            Ok(roster) => roster,
            Err(error) => {
                conn.close().await;
                return Err(error.into());
            }
        };
        self.note_token_issuer()?;
        let departed: Vec<String> = self
            .client
            .engine()
            .contacts()
            .into_iter()
            .filter(|contact| !roster.handles.contains(contact))
            .collect();
        if !departed.is_empty() && roster.version > 0 {
            // Revoked: every group of mine they were in moves on without
            // them (the states go out with this sync's outbox).
            self.client
                .engine_mut()
                .members_revoked(&departed, (self.clock)())?;
        }
        for contact in departed {
            self.client.engine_mut().remove_contact(&contact)?;
        }
        // Every member's entry, mine included, each sync: a device added
        // or removed anywhere is picked up here. An entry that does not
        // verify leaves the devices known before, and a notice.
        let refreshed = self
            .membership
            .refresh_members(&conn, self.client.engine_mut(), &roster)
            .await;
        conn.close().await;
        let mut outcome = Ok(());
        let refreshed = match refreshed {
            Ok(refreshed) => refreshed,
            Err(error) => {
                self.membership.save(self.store.as_ref())?;
                return Err(error.into());
            }
        };
        for (handle, refreshed) in refreshed {
            match refreshed {
                Ok(()) | Err(TeamError::NotJoined(_)) => {}
                Err(TeamError::Net(error)) => {
                    outcome = Err(AppError::Net(error));
                    break;
                }
                Err(TeamError::DeviceRemoved) if handle == self.membership.handle => {
                    outcome = Err(TeamError::DeviceRemoved.into());
                    break;
                }
                Err(error) => {
                    let notice = format!("{error}");
                    self.membership.push_notice(notice);
                    if self.membership.is_compromised(&handle) {
                        self.client.engine_mut().remove_contact(&handle)?;
                    }
                }
            }
        }
        self.membership.save(self.store.as_ref())?;
        outcome
    }

    pub(crate) async fn add_contacts(
        &mut self,
        conn: RelayConnection,
        handles: &[String],
    ) -> Result<(), AppError> {
        for handle in handles {
            let _ = self
                .membership
                .add_member_contact(&conn, self.client.engine_mut(), handle)
                .await;
        }
        conn.close().await;
        self.membership.save(self.store.as_ref())?;
        Ok(())
    }
}
