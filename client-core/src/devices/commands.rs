//! A member's devices, as the command line drives them (DESIGN "Devices"):
//! `device add` (a link code), `join … --link` (a new device asks to be
//! linked), `device approve` (the member signs it in and hands it the
//! member state, groups and, if asked, history), `devices`, and `device
//! remove` (a new user key the removed device never sees, and the end of
//! its relay access). Admins mint device invites and re-invites.

use std::path::Path;

use sotto_proto::client::payload;

use crate::app::{App, AppError, resolve};
use crate::client::{Client, Clock};
use crate::engine::Engine;
use crate::team::{
    InviteError, LinkParams, Membership, TeamError, link_code, parse_invite, parse_link,
};
use crate::{KeySource, RelayConnection, RevocationSecret};

/// How long a link code works.
pub const LINK_VALID_SECS: u64 = 3600;

/// A link code `sotto device add` prints.
pub struct DeviceLinkCode {
    /// The `sotto-link:` code.
    pub code: String,
    /// Whether it carries relay access (false when the relay's operator
    /// turned self-service off: the new device needs a device invite).
    pub relay_access: bool,
    /// Unix seconds after which it no longer works.
    pub expires_at: u64,
}

/// One of my devices, as `sotto devices` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    /// Its device ID (a fingerprint of its identity key).
    pub id: String,
    /// What I called it.
    pub name: String,
    /// Whether it is this device.
    pub this: bool,
    /// When it was added (unix seconds), if known.
    pub added: Option<u64>,
    /// When this device last heard from it (its clock, unix ms).
    pub last_seen: Option<u64>,
    /// False for a request awaiting approval (`--pending`).
    pub approved: bool,
    /// For a pending request: the code the new device shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
}

/// A device `sotto device approve` approved.
#[derive(Debug, Clone)]
pub struct Approved {
    /// Its device ID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// History parts sent to it.
    pub history_chunks: usize,
}

impl App {
    /// Prints a link code for a new device of mine: a one-time secret and
    /// my card, and relay access unless the relay forbids self-service.
    pub async fn device_add(&mut self) -> Result<DeviceLinkCode, AppError> {
        self.require_approved()?;
        let now = Self::now_secs(&self.clock);
        let expires_at = now + LINK_VALID_SECS;
        let secret = self.client.engine().new_link_secret(expires_at)?;
        // My other devices may approve the request too.
        let share = self.client.engine().link_secret_share(&secret, expires_at);
        self.client
            .engine_mut()
            .queue_to_own(None, share, (self.clock)())?;
        self.deliver_or_queue().await?;
        let conn = self.client.connect().await?;
        let account = crate::IssuanceAccount::load_or_create(self.store.as_ref())?;
        let minted = crate::mint_device_registration(&conn, &account, expires_at).await;
        // The roster names the admin, who must hear of the new account.
        let roster = match minted {
            Ok(_) => self.membership.roster(&conn).await.map(|_| ()),
            Err(_) => Ok(()),
        };
        conn.close().await;
        let registration_token = match minted {
            Ok(token) => {
                roster?;
                self.membership.save(self.store.as_ref())?;
                self.report_account(token.hash()).await?;
                Some(*token.as_bytes())
            }
            Err(crate::TokenError::SelfServiceDisabled) => None,
            Err(error) => return Err(error.into()),
        };
        let code = link_code(&LinkParams {
            team_name: &self.membership.team_name,
            handle: &self.membership.handle,
            relay_addr: &self.membership.relay_addr,
            relay_fingerprint: self.membership.relay_fingerprint,
            issuer_key: self.membership.issuer_key,
            dir_key: *self.membership.directory()?.dir_key(),
            dir_version: self.membership.dir_version(),
            team_key: *self.membership.directory()?.team_key().as_bytes(),
            secret,
            device: self.client.engine().signed_card(),
            registration_token,
            expires_at,
        });
        Ok(DeviceLinkCode {
            code,
            relay_access: registration_token.is_some(),
            expires_at,
        })
    }

    /// A new device of a member: joins with a link code (and, where the
    /// relay forbids self-service, the admin's device invite for relay
    /// access), registers, and sends its link request to the device that
    /// printed the code. Returns the device and the confirmation code to
    /// type into that device.
    pub async fn join_link(
        home: &Path,
        key: KeySource,
        link: &str,
        admin_code: Option<&str>,
        name: Option<&str>,
        clock: Clock,
    ) -> Result<(Self, String), AppError> {
        let now = Self::now_secs(&clock);
        let link = parse_link(link, now)?;
        let registration = match (&link.registration_token, admin_code) {
            (_, Some(code)) => {
                let invite = parse_invite(code, now)?;
                if !invite.device || invite.handle != link.handle {
                    return Err(InviteError::Malformed(
                        "not a device invite for this member (the admin makes one with `sotto invite HANDLE --device`)",
                    )
                    .into());
                }
                crate::RegistrationToken::from_bytes(
                    invite
                        .registration_token
                        .as_slice()
                        .try_into()
                        .map_err(|_| InviteError::Malformed("registration token"))?,
                )
            }
            (Some(token), None) => crate::RegistrationToken::from_bytes(**token),
            (None, None) => return Err(AppError::NoRelayAccess),
        };
        let store = Self::fresh(home, key)?;
        let relay = resolve(&link.relay_addr, link.relay_fingerprint).await?;
        let issuer = ed25519_dalek::VerifyingKey::from_bytes(&link.issuer_key)
            .map_err(|_| InviteError::Malformed("issuer key"))?;
        let revocation = RevocationSecret::generate()?;
        let setup = RelayConnection::connect(&relay, None).await?;
        let access = Self::register(&setup, &store, &registration, issuer, &revocation).await;
        setup.close().await;
        let access = access?;
        let engine = Engine::create(store.clone(), &link.handle, now)?;
        let me = engine.own_card().identity_key.to_bytes();
        let name = name
            .map(str::to_owned)
            .unwrap_or_else(|| format!("device {}", &engine.own_card().device_id()));
        let mut client = Client::new(engine, relay, clock.clone());
        client.set_access(access);
        // The request goes to every device of mine the directory lists
        // (any of them may approve), and always to the one that printed
        // the code.
        let mut devices = vec![(link.device.clone(), link.signed_device.clone())];
        if let Ok(listed) = Self::listed_devices(&client, &link).await {
            devices.extend(listed);
        }
        let engine = client.engine_mut();
        engine.set_devices(&link.handle, None, devices)?;
        let (request, code) =
            engine.link_request(&link.device, &link.secret, revocation.as_bytes(), &name);
        engine.queue_to_own(None, request, clock())?;
        let mut membership = Membership::for_link(&link, code.clone());
        membership.set_revocation_secret(&me, *revocation.as_bytes());
        membership.name_device(&me, &name, now);
        let mut app = Self::joined(home, store, client, membership, clock)?;
        // Unreachable relay: the request waits in the outbox, and `sotto
        // sync` sends it (and shows the code again).
        app.deliver_or_queue().await?;
        Ok((app, code))
    }

    /// The member's devices as their directory entry lists them (signed
    /// by their user key, chained to the team key of the link code).
    async fn listed_devices(
        client: &Client,
        link: &crate::team::ParsedLink,
    ) -> Result<Vec<(crate::Card, sotto_proto::client::SignedCard)>, AppError> {
        let team_key = ed25519_dalek::VerifyingKey::from_bytes(&link.team_key)
            .map_err(|_| InviteError::Malformed("team key"))?;
        let directory = crate::team::Directory::new(link.dir_key, team_key);
        let slot = directory.user_slot(&link.handle);
        let conn = client.connect().await?;
        let value = conn.slot_get(&slot).await;
        conn.close().await;
        let Some((_, value)) = value? else {
            return Ok(Vec::new());
        };
        let entry = directory
            .open_value(&slot, &value)
            .map_err(TeamError::from)?;
        let entry = directory
            .verify_entry(&link.handle, &entry)
            .map_err(TeamError::from)?;
        Ok(entry.devices)
    }

    /// Refuses device operations on a device still waiting for approval.
    pub(crate) fn require_approved(&self) -> Result<(), AppError> {
        match self.membership.awaiting_approval() {
            Some(code) => Err(TeamError::AwaitingApproval(code.to_owned()).into()),
            None => Ok(()),
        }
    }

    /// The confirmation code, while this device waits for approval.
    pub fn awaiting_approval(&self) -> Option<&str> {
        self.membership.awaiting_approval()
    }

    /// Approves the new device that shows `confirm`: signs it into my
    /// device list, publishes the list, and sends it my member state, my
    /// groups and their sessions, and (from `history_since_ms`) my history.
    pub async fn device_approve(
        &mut self,
        confirm: &str,
        history_since_ms: Option<u64>,
    ) -> Result<Approved, AppError> {
        self.require_approved()?;
        self.sync().await?;
        let wanted = crate::normalize_code(confirm);
        let pending = self
            .client
            .engine()
            .pending_devices()?
            .into_iter()
            .find(|p| crate::normalize_code(&p.code) == wanted)
            .ok_or_else(|| AppError::NoSuchLinkRequest(confirm.to_owned()))?;
        let identity = pending.card.identity_key.to_bytes();
        let secret = <[u8; 32]>::try_from(pending.revocation_secret.as_slice()).ok();
        let now = Self::now_secs(&self.clock);
        self.membership
            .add_device(self.client.engine(), &pending.signed, secret)?;
        let name = if pending.name.is_empty() {
            format!("device {}", pending.card.device_id())
        } else {
            pending.name.clone()
        };
        self.membership.name_device(&identity, &name, now);
        // Published first: if that fails, the request is still pending and
        // the approval can be repeated.
        self.publish_under_new_key(None).await?;
        self.client.engine().take_link_request(confirm)?;
        self.apply_own_devices()?;
        let chunks = match history_since_ms {
            Some(since) => self.client.engine().history_chunks(since)?,
            None => Vec::new(),
        };
        let state = self
            .membership
            .member_state(self.client.engine(), chunks.len() as u32)?;
        let now_ms = (self.clock)();
        let engine = self.client.engine_mut();
        // Every device of mine gets the new state (the list, the new
        // device's revocation secret); the new one its groups and history.
        engine.queue_to_own(None, payload::Body::MemberState(state), now_ms)?;
        engine.queue_group_handover(&identity, now_ms)?;
        let history_chunks = chunks.len();
        for chunk in chunks {
            engine.queue_to_own(Some(&identity), payload::Body::History(chunk), now_ms)?;
        }
        engine.flush()?;
        self.deliver_or_queue().await?;
        Ok(Approved {
            id: pending.card.device_id(),
            name,
            history_chunks,
        })
    }

    /// Makes my approved devices (from the membership) the ones my engine
    /// copies to.
    fn apply_own_devices(&mut self) -> Result<(), AppError> {
        let devices = self.membership.own_devices(self.client.engine())?;
        let user_key = self.membership.user_key();
        let handle = self.membership.handle.clone();
        let change = self
            .client
            .engine_mut()
            .set_devices(&handle, Some(user_key), devices)?;
        if !change.removed.is_empty() {
            self.client
                .engine_mut()
                .rotate_sessions_shared_with(&handle)?;
        }
        Ok(())
    }

    /// Applies a member state another device of mine sent (an approval, a
    /// new user key after a removal). Returns whether one was applied.
    pub(crate) fn apply_member_state(&mut self) -> Result<bool, AppError> {
        let Some(state) = self.client.engine().pending_member_state()? else {
            return Ok(false);
        };
        let applied = self
            .membership
            .apply_member_state(self.client.engine(), &state);
        self.client.engine().clear_member_state()?;
        let applied = applied?;
        self.membership.save(self.store.as_ref())?;
        if applied {
            self.apply_own_devices()?;
        }
        Ok(applied)
    }

    /// My approved devices; with `pending`, also requests awaiting
    /// approval.
    pub fn devices(&self, pending: bool) -> Result<Vec<DeviceInfo>, AppError> {
        let engine = self.client.engine();
        let me = engine.own_card().identity_key;
        let mut list = Vec::new();
        for (card, _) in self.membership.own_devices(engine)? {
            let identity = card.identity_key.to_bytes();
            let named = self.membership.device_name(&identity);
            list.push(DeviceInfo {
                id: card.device_id(),
                name: named.as_ref().map(|(n, _)| n.clone()).unwrap_or_default(),
                this: card.identity_key == me,
                added: named.map(|(_, at)| at),
                last_seen: engine.device_last_seen(&identity)?,
                approved: true,
                confirm: None,
            });
        }
        if pending {
            for request in engine.pending_devices()? {
                // Approved meanwhile on another device of mine.
                if list.iter().any(|d| d.id == request.card.device_id()) {
                    continue;
                }
                list.push(DeviceInfo {
                    id: request.card.device_id(),
                    name: request.name.clone(),
                    this: false,
                    added: None,
                    last_seen: Some(request.received_ms),
                    approved: false,
                    confirm: Some(request.code.clone()),
                });
            }
        }
        Ok(list)
    }

    /// Removes my device whose ID starts with `id`: a new user key signed
    /// by the old one, a new device list the removed device cannot sign or
    /// read, the end of its relay access, fresh group sessions, and every
    /// contact told of the succession.
    pub async fn device_remove(&mut self, id: &str) -> Result<DeviceInfo, AppError> {
        self.require_approved()?;
        let wanted = id.trim().to_ascii_lowercase();
        let engine = self.client.engine();
        let me = engine.own_card().identity_key;
        let matches: Vec<_> = self
            .membership
            .own_devices(engine)?
            .into_iter()
            .filter(|(card, _)| !wanted.is_empty() && card.device_id().starts_with(&wanted))
            .collect();
        let card = match matches.as_slice() {
            [(card, _)] => card.clone(),
            [] => return Err(AppError::UnknownDevice(id.to_owned())),
            _ => return Err(AppError::AmbiguousDevice(id.to_owned())),
        };
        if card.identity_key == me {
            return Err(AppError::RemoveThisDevice);
        }
        let identity = card.identity_key.to_bytes();
        let info = DeviceInfo {
            id: card.device_id(),
            name: self
                .membership
                .device_name(&identity)
                .map(|(n, _)| n)
                .unwrap_or_default(),
            this: false,
            added: None,
            last_seen: None,
            approved: true,
            confirm: None,
        };
        let (succession, secret) = self
            .membership
            .remove_device(self.client.engine(), &identity)?;
        // Published with the slot passing to the new key's owner; on
        // failure the stored membership (with the old key) is reloaded.
        self.publish_under_new_key(None).await?;
        if let Some(secret) = secret {
            let conn = self.client.connect().await?;
            let revoked = crate::revoke_device(&conn, &RevocationSecret::from_bytes(secret)).await;
            conn.close().await;
            match revoked {
                Ok(()) | Err(crate::TokenError::RevocationUnknown) => {}
                Err(error) => return Err(error.into()),
            }
        }
        self.apply_own_devices()?;
        let now_ms = (self.clock)();
        let state = self.membership.member_state(self.client.engine(), 0)?;
        let engine = self.client.engine_mut();
        engine.queue_to_own(None, payload::Body::MemberState(state), now_ms)?;
        for contact in engine.contacts() {
            let announcement = sotto_proto::client::Payload {
                sent_at: now_ms,
                body: Some(payload::Body::Succession(succession.clone())),
                ..Default::default()
            };
            engine.queue(&contact, announcement, None)?;
        }
        engine.flush()?;
        self.deliver_or_queue().await?;
        Ok(info)
    }

    /// Rotates my request inbox when its schedule says so, and publishes
    /// my entry when the directory lists an older card of this device (a
    /// rotation whose publication failed, or that another device of mine
    /// overwrote). Other members pick the new card up at their next sync.
    pub(crate) async fn rotate_request_inbox_if_due(&mut self) -> Result<(), AppError> {
        let now = Self::now_secs(&self.clock);
        let due = self.client.engine().request_inbox_due(now);
        if due {
            self.client.engine_mut().rotate_request_inbox(now)?;
        }
        if due || self.membership.own_card_stale(self.client.engine()) {
            self.publish_under_new_key(None).await?;
        }
        Ok(())
    }

    /// Admin: relay access (no trust) for one more device of `handle`.
    pub async fn invite_device(
        &mut self,
        handle: &str,
        valid_secs: u64,
    ) -> Result<String, AppError> {
        self.membership.team_secrets()?;
        self.catch_up_with_admins().await?;
        let conn = self.client.connect().await?;
        let issued = async {
            let roster = self.membership.roster(&conn).await?;
            if !roster.handles.iter().any(|h| h == handle) {
                return Err(TeamError::NotAMember(handle.to_owned()).into());
            }
            self.mint_invite(&conn, handle, valid_secs, true).await
        }
        .await;
        conn.close().await;
        let issued = issued?;
        // The account the new device makes with it is revoked with the
        // member.
        self.membership
            .record_registration(handle, issued.registration_token_hash);
        self.membership.save(self.store.as_ref())?;
        self.log_action_now(
            "invite-device",
            handle,
            Some(issued.registration_token_hash),
        )
        .await?;
        Ok(issued.code)
    }

    /// Admin: re-invites `handle`, who lost every device: their old relay
    /// account is revoked, the directory key rotates (the old entry, owned
    /// by the lost devices' key, is left behind), and a fresh invite
    /// certifies a new user key. Every other member sees "key changed".
    pub async fn invite_replace(
        &mut self,
        handle: &str,
        valid_secs: u64,
    ) -> Result<String, AppError> {
        if handle == self.membership.handle {
            return Err(AppError::Myself);
        }
        self.membership.team_secrets()?;
        self.catch_up_with_admins().await?;
        let conn = self.client.connect().await?;
        let roster = self.membership.roster(&conn).await;
        let roster = match roster {
            Ok(roster) => roster.handles,
            Err(error) => {
                conn.close().await;
                return Err(error.into());
            }
        };
        if !roster.iter().any(|h| h == handle) {
            conn.close().await;
            return Err(TeamError::NotAMember(handle.to_owned()).into());
        }
        // Every relay account of the lost devices ends (those other
        // admins recorded too, from the admin log).
        if let Err(error) = self.registrations_from_log(&conn, handle).await {
            conn.close().await;
            return Err(error);
        }
        let revoked = self.revoke_accounts(&conn, handle).await;
        conn.close().await;
        revoked?;
        self.membership.forget_registrations(handle);
        self.membership.save(self.store.as_ref())?;
        self.log_action_now("invite-replace", handle, None).await?;
        self.client.engine_mut().remove_contact(handle)?;
        self.rotate_directory_except(&roster, handle).await?;
        self.invite(handle, valid_secs).await
    }

    /// What a compromised device holding my user key could do: sign a
    /// successor of it and announce it to every contact. Tests use it to
    /// show that two successors of one key make every client trust
    /// neither.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub async fn announce_forged_succession(&mut self) -> Result<(), AppError> {
        let forged = self.membership.forge_succession();
        let now_ms = (self.clock)();
        let engine = self.client.engine_mut();
        for contact in engine.contacts() {
            let announcement = sotto_proto::client::Payload {
                sent_at: now_ms,
                body: Some(payload::Body::Succession(forged.clone())),
                ..Default::default()
            };
            engine.queue(&contact, announcement, None)?;
        }
        engine.flush()?;
        self.deliver_or_queue().await?;
        Ok(())
    }

    /// An entry for my handle as an attacker could make it (see
    /// `Membership::forged_entry`), for tests.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn forged_entry(
        &self,
        signer: Option<&ed25519_dalek::SigningKey>,
        version: u64,
    ) -> Result<Vec<u8>, AppError> {
        Ok(self
            .membership
            .forged_entry(self.client.engine(), signer, version)?)
    }

    /// Writes `entry` into my directory slot as it stands, for tests (a
    /// relay serving a forged entry).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub async fn write_entry(&mut self, entry: &[u8]) -> Result<(), AppError> {
        let conn = self.client.connect().await?;
        let written = self.membership.write_entry(&conn, entry).await;
        conn.close().await;
        written?;
        self.membership.save(self.store.as_ref())?;
        Ok(())
    }

    /// The team key `T`, on the admin's devices, for tests that forge
    /// what only the team key signed.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn team_key(&self) -> Result<ed25519_dalek::SigningKey, AppError> {
        Ok(self.membership.team_secrets()?.team)
    }
}
