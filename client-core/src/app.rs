//! The whole device, as the `sotto` command line uses it: a home directory
//! holding the encrypted store, the device, the team membership, contacts
//! and history; and the team flows on top of the messaging client —
//! create a team, invite, join, send by handle, sync, members, revoke.
//!
//! Every operation opens the relay connections it needs and closes them;
//! nothing here keeps state outside the store, so a process may stop
//! between any two calls.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha512};

use crate::client::{Client, ClientError, Clock, SyncReport};
use crate::engine::{Engine, EngineError, Message, MessageId};
use crate::team::{
    InviteError, InviteParams, Membership, TeamError, TeamSecrets, issue_invite, parse_invite,
};
use crate::{KeySource, NetError, RelayAddr, RelayConnection, SledStore, Store, StoreError};

#[path = "app_devices.rs"]
mod devices;

pub use devices::{Approved, DeviceInfo, DeviceLinkCode, LINK_VALID_SECS};

/// Domain separation for safety numbers.
pub const SAFETY_NUMBER_TAG: &[u8] = b"sotto/safety-number/v1";

/// A device-level operation failed; every variant reads as advice.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No device in this home.
    #[error(
        "no sotto identity in {0}; run `sotto join INVITE_CODE` (or `sotto team create`) first"
    )]
    NotJoined(PathBuf),
    /// This home already has a device.
    #[error("{0} already holds a sotto identity; use another --home")]
    AlreadyJoined(PathBuf),
    /// The relay address could not be resolved.
    #[error("cannot resolve the relay address {0}")]
    Resolve(String),
    /// The local store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Messaging state.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The relay.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The team layer.
    #[error(transparent)]
    Team(#[from] TeamError),
    /// An invite code.
    #[error(transparent)]
    Invite(#[from] InviteError),
    /// Cannot message oneself.
    #[error("that is you")]
    Myself,
    /// Anonymous access tokens or relay registration.
    #[error(transparent)]
    Token(#[from] crate::TokenError),
    /// The other side did not take part in time.
    #[error(
        "{0} did not answer the verification in time; both of you run `sotto verify {0} --sas` at the same time"
    )]
    VerificationTimedOut(String),
    /// The other side sent an unusable key.
    #[error("the verification with {0} failed: their key is invalid")]
    VerificationInvalid(String),
    /// A link code without relay access, and no device invite.
    #[error(
        "this link code carries no relay access (the relay's operator turned self-service off): ask your admin for `sotto invite HANDLE --device` and run `sotto join ADMIN_CODE --link LINK_CODE`"
    )]
    NoRelayAccess,
    /// No pending link request shows that code.
    #[error(
        "no new device waiting for approval shows the code {0}: run `sotto join LINK_CODE` on the new device first, then check the code it shows (`sotto devices --pending` lists the waiting ones)"
    )]
    NoSuchLinkRequest(String),
    /// No device of mine has that ID.
    #[error("none of your devices has the ID {0}; `sotto devices` lists them")]
    UnknownDevice(String),
    /// Several devices of mine match.
    #[error("several of your devices have IDs starting with {0}; give more of the ID")]
    AmbiguousDevice(String),
    /// A device cannot remove itself.
    #[error("this is the device you are using; remove it from another of your devices")]
    RemoveThisDevice,
}

/// A message handed to [`App::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Its ID.
    pub id: MessageId,
    /// Whether the relay already stored it; if not, it waits in the outbox.
    pub delivered: bool,
}

/// How an interactive verification ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SasOutcome {
    /// Both confirmed and the MACs check: the contact is now verified.
    Verified,
    /// My user said the codes differ: someone may be in the middle.
    Rejected,
    /// My user confirmed, but the other side's confirmation did not check.
    Mismatch,
}

impl AppError {
    /// Whether the relay could not be reached (worth retrying later), as
    /// opposed to a refusal or a local problem.
    pub fn is_network(&self) -> bool {
        let net = match self {
            AppError::Resolve(_) => return true,
            AppError::Net(net)
            | AppError::Team(TeamError::Net(net))
            | AppError::Token(crate::TokenError::Net(net)) => net,
            _ => return false,
        };
        !matches!(net, NetError::Refused { .. })
    }
}

impl From<ClientError> for AppError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Engine(e) => AppError::Engine(e),
            ClientError::Net(e) => AppError::Net(e),
            ClientError::Token(e) => AppError::Token(e),
        }
    }
}

/// Where the relay is, as a team stores it.
#[derive(Clone, Debug)]
pub struct RelayTarget {
    /// `host:port` as members should dial it.
    pub addr: String,
    /// Pinned certificate fingerprint.
    pub fingerprint: [u8; 32],
}

async fn resolve(target: &str, fingerprint: [u8; 32]) -> Result<RelayAddr, AppError> {
    let addr = tokio::net::lookup_host(target)
        .await
        .map_err(|_| AppError::Resolve(target.to_owned()))?
        .next()
        .ok_or_else(|| AppError::Resolve(target.to_owned()))?;
    Ok(RelayAddr { addr, fingerprint })
}

fn open_store(home: &Path, key: KeySource) -> Result<Arc<dyn Store>, AppError> {
    Ok(Arc::new(SledStore::open(home, key)?))
}

/// A device with its team.
pub struct App {
    home: PathBuf,
    client: Client,
    membership: Membership,
    store: Arc<dyn Store>,
    clock: Clock,
}

impl App {
    fn now_secs(clock: &Clock) -> u64 {
        clock() / 1000
    }

    /// Opens the device in `home`.
    pub async fn open(home: &Path, key: KeySource, clock: Clock) -> Result<Self, AppError> {
        let store = open_store(home, key)?;
        let engine =
            Engine::open(store.clone())?.ok_or_else(|| AppError::NotJoined(home.to_owned()))?;
        let membership = Membership::load(store.as_ref())?
            .ok_or_else(|| AppError::NotJoined(home.to_owned()))?;
        let relay = resolve(&membership.relay_addr, membership.relay_fingerprint).await?;
        let mut client = Client::new(engine, relay, clock.clone());
        client.set_access(Self::access(&store, membership.issuer_key)?);
        Ok(Self::assemble(home, store, client, membership, clock))
    }

    /// A device that just created or joined a team: its membership is
    /// saved last, so a failure before this point leaves no half-joined
    /// home that `open` would take for a member.
    fn joined(
        home: &Path,
        store: Arc<dyn Store>,
        client: Client,
        membership: Membership,
        clock: Clock,
    ) -> Result<Self, AppError> {
        membership.save(store.as_ref())?;
        Ok(Self::assemble(home, store, client, membership, clock))
    }

    fn assemble(
        home: &Path,
        store: Arc<dyn Store>,
        client: Client,
        membership: Membership,
        clock: Clock,
    ) -> Self {
        Self {
            home: home.to_owned(),
            client,
            membership,
            store,
            clock,
        }
    }

    fn fresh(home: &Path, key: KeySource) -> Result<Arc<dyn Store>, AppError> {
        let store = open_store(home, key)?;
        if Engine::open(store.clone())?.is_some() {
            return Err(AppError::AlreadyJoined(home.to_owned()));
        }
        Ok(store)
    }

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
        let issuer = crate::bootstrap(&setup, bootstrap_code, &relay_admin).await?;
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
        let engine = Engine::create(store.clone(), handle, now)?;
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
        conn.close().await;
        Self::joined(home, store, client, membership, clock)
    }

    /// Registers this device's issuance account with `registration` and
    /// fills its token wallet.
    async fn register(
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

    fn access(store: &Arc<dyn Store>, issuer: [u8; 32]) -> Result<crate::Access, AppError> {
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
        let conn = self.client.connect().await?;
        let mut roster = self.membership.roster(&conn).await?.handles;
        let issued = self.mint_invite(&conn, handle, valid_secs, false).await?;
        self.membership
            .record_invite(handle, issued.registration_token_hash);
        self.membership.preclaim(&conn, &issued).await?;
        if !roster.iter().any(|h| h == handle) {
            roster.push(handle.to_owned());
            self.membership.publish_roster(&conn, &roster).await?;
        }
        self.membership.save(self.store.as_ref())?;
        conn.close().await;
        Ok(issued.code)
    }

    /// Admin: a relay registration token and an invite for `handle`
    /// around it (`device`: a device invite, relay access only).
    async fn mint_invite(
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

    /// My handle.
    pub fn handle(&self) -> &str {
        &self.membership.handle
    }

    /// The team name.
    pub fn team_name(&self) -> &str {
        &self.membership.team_name
    }

    /// Whether this device is the admin's.
    pub fn is_admin(&self) -> bool {
        self.membership.is_admin()
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The team roster.
    pub async fn members(&mut self) -> Result<Vec<String>, AppError> {
        let conn = self.client.connect().await?;
        let roster = self.membership.roster(&conn).await?;
        self.membership.save(self.store.as_ref())?;
        conn.close().await;
        Ok(roster.handles)
    }

    /// Makes `handle` a contact, resolving and verifying their device in
    /// the directory, unless it already is one.
    pub async fn ensure_contact(&mut self, handle: &str) -> Result<(), AppError> {
        self.require_approved()?;
        if handle == self.membership.handle {
            return Err(AppError::Myself);
        }
        if self.client.engine().contact_card(handle).is_none() {
            let conn = self.client.connect().await?;
            let added = self
                .membership
                .add_member_contact(&conn, self.client.engine_mut(), handle)
                .await;
            conn.close().await;
            added?;
            self.membership.save(self.store.as_ref())?;
        }
        Ok(())
    }

    /// Sends `text` to `handle` (resolving them in the directory on first
    /// use). The message is durable locally before any network I/O: if the
    /// relay cannot be reached it stays queued ([`Sent::delivered`] is
    /// false) and the next sync or send delivers it. A first message to
    /// someone not yet a contact needs the relay, to look them up.
    pub async fn send(&mut self, handle: &str, text: &str) -> Result<Sent, AppError> {
        self.require_approved()?;
        self.ensure_contact(handle).await?;
        // The roster decides who is in the team: a removed member may not
        // send, and nobody sends to one. Offline, the roster last seen
        // stands (the relay refuses a revoked member's device anyway).
        let reachable = match self.roster_check(handle).await {
            Err(error) if error.is_network() => false,
            other => {
                other?;
                true
            }
        };
        let id = self
            .client
            .engine_mut()
            .queue_text(handle, text, (self.clock)())?;
        if !reachable {
            // Just failed to reach the relay: do not wait for it twice.
            return Ok(Sent {
                id,
                delivered: false,
            });
        }
        let delivered = match self.client.deliver().await {
            Ok(_) => true,
            Err(error) => {
                let error = AppError::from(error);
                if !error.is_network() {
                    return Err(error);
                }
                false
            }
        };
        Ok(Sent { id, delivered })
    }

    async fn roster_check(&mut self, handle: &str) -> Result<(), AppError> {
        let conn = self.client.connect().await?;
        let roster = self.membership.roster(&conn).await;
        conn.close().await;
        let roster = roster?;
        self.membership.save(self.store.as_ref())?;
        if !roster.handles.contains(&self.membership.handle) {
            return Err(TeamError::Revoked.into());
        }
        if !roster.handles.iter().any(|h| h == handle) {
            self.client.engine_mut().remove_contact(handle)?;
            return Err(TeamError::NotAMember(handle.to_owned()).into());
        }
        // The member's current devices, as their user key signed them: a
        // forged or rolled-back list is refused here, before anything is
        // encrypted to it.
        let conn = self.client.connect().await?;
        let refreshed = self
            .membership
            .refresh_member(&conn, self.client.engine_mut(), handle)
            .await;
        conn.close().await;
        self.membership.save(self.store.as_ref())?;
        if let Err(error) = refreshed {
            if self.membership.is_compromised(handle) {
                self.client.engine_mut().remove_contact(handle)?;
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// Admin: removes `handle` from the roster; every member drops them at
    /// their next sync and stops encrypting to them.
    pub async fn revoke(&mut self, handle: &str) -> Result<(), AppError> {
        if handle == self.membership.handle {
            return Err(AppError::Myself);
        }
        self.membership.team_secrets()?;
        let conn = self.client.connect().await?;
        let roster = self.membership.roster(&conn).await?.handles;
        if !roster.iter().any(|h| h == handle) {
            conn.close().await;
            return Err(TeamError::NotAMember(handle.to_owned()).into());
        }
        let remaining: Vec<String> = roster.into_iter().filter(|h| h != handle).collect();
        self.membership.publish_roster(&conn, &remaining).await?;
        // The relay stops issuing tokens to the member's account and moves
        // to a new token key, so tokens hoarded before now stop working.
        if let Some(hash) = self.membership.invite_token_hash(handle) {
            crate::revoke(&conn, &self.membership.relay_admin()?, &hash).await?;
        }
        conn.close().await;
        self.membership.save(self.store.as_ref())?;
        self.client.engine_mut().remove_contact(handle)?;
        self.rotate_directory(&remaining).await
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
    async fn rotate_directory_except(
        &mut self,
        remaining: &[String],
        excluded: &str,
    ) -> Result<(), AppError> {
        // Resolve everyone in the old directory first: they must be
        // contacts to receive the key. A member invited but not joined (or
        // whose entry does not verify) is skipped; their invite carries
        // the old key.
        let mut recipients = Vec::new();
        let me = self.membership.handle.clone();
        for handle in remaining.iter().filter(|h| **h != me && *h != excluded) {
            match self.ensure_contact(handle).await {
                Ok(()) => recipients.push(handle.clone()),
                Err(error) if error.is_network() => return Err(error),
                Err(_) => {}
            }
        }
        let (dir_key, version, signature) = self.membership.rotate_dir_key()?;
        self.publish_under_new_key(Some(remaining)).await?;
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

    /// Publishes my entry (and, for the admin, `roster`) under the
    /// directory key just taken, then saves the membership; on failure the
    /// stored membership, with the old key, is reloaded, so nothing local
    /// changed and the step can be retried.
    async fn publish_under_new_key(&mut self, roster: Option<&[String]>) -> Result<(), AppError> {
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
    async fn apply_dir_key(&mut self) -> Result<bool, AppError> {
        let Some(pending) = self.client.engine().pending_dir_key()? else {
            return Ok(false);
        };
        let taken = self.membership.accept_dir_key(
            &pending.dir_key,
            pending.version,
            &pending.signature,
        )?;
        if taken {
            // On failure the key stays pending for the next sync.
            self.publish_under_new_key(None).await?;
        }
        self.client.engine().clear_dir_key()?;
        Ok(taken)
    }

    /// Fetches everything pending; members no longer on the roster are
    /// dropped from the contacts first.
    pub async fn sync(&mut self) -> Result<SyncReport, AppError> {
        let awaiting = self.membership.awaiting_approval().is_some();
        if !awaiting {
            self.refresh_contacts().await?;
        }
        let report = self.client.sync().await?;
        self.client
            .engine()
            .prune_link_secrets(Self::now_secs(&self.clock))?;
        let applied = self.apply_member_state()?;
        self.apply_dir_key().await?;
        if applied && awaiting {
            // Just approved: find the team's members now, so this device
            // can write to them at once.
            self.refresh_contacts().await?;
        }
        Ok(report)
    }

    /// Notices for the user since the last call: a member's key changed, a
    /// directory entry was refused, a device of mine was removed.
    pub fn take_notices(&mut self) -> Result<Vec<String>, AppError> {
        let notices = self.membership.take_notices();
        if !notices.is_empty() {
            self.membership.save(self.store.as_ref())?;
        }
        Ok(notices)
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

    async fn refresh_contacts(&mut self) -> Result<(), AppError> {
        let conn = self.client.connect().await?;
        let roster = match self.membership.roster(&conn).await {
            Ok(roster) => roster,
            Err(error) => {
                conn.close().await;
                return Err(error.into());
            }
        };
        for contact in self.client.engine().contacts() {
            if !roster.handles.contains(&contact) {
                self.client.engine_mut().remove_contact(&contact)?;
            }
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

    async fn add_contacts(
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

    /// Stays connected and hands each message to `on_message` until `stop`.
    pub async fn listen(
        &mut self,
        on_message: impl FnMut(&Message),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), AppError> {
        self.refresh_contacts().await?;
        Ok(self.client.listen(on_message, stop).await?)
    }

    /// Local history with `handle`.
    pub fn history(&self, handle: &str) -> Result<Vec<Message>, AppError> {
        Ok(self.client.engine().history(handle)?)
    }

    /// The safety number of my device and `handle`'s: the same on both
    /// sides; compare it in person or on a call.
    pub fn safety_number(&self, handle: &str) -> Result<String, AppError> {
        let (mine, theirs) = self.verification_keys(handle)?;
        Ok(safety_number(
            (&self.membership.handle, &mine),
            (handle, &theirs),
        ))
    }

    /// The keys a verification with `handle` is about: both user keys
    /// (one for all of a member's devices; a device removal moves it along
    /// a signed succession, a re-invite replaces it).
    fn verification_keys(&self, handle: &str) -> Result<([u8; 32], [u8; 32]), AppError> {
        let theirs = self
            .client
            .engine()
            .verified_key(handle)?
            .ok_or_else(|| EngineError::UnknownContact(handle.to_owned()))?;
        Ok((self.membership.user_key(), theirs))
    }

    /// Whether I verified `handle`'s current device.
    pub fn is_verified(&self, handle: &str) -> Result<bool, AppError> {
        Ok(self.client.engine().is_verified(handle)?)
    }

    /// Interactive verification with `handle` through the relay (both run
    /// it at about the same time): `confirm` shows the code and returns
    /// whether the person says it matches the other device's.
    pub async fn verify_sas(
        &mut self,
        handle: &str,
        timeout: std::time::Duration,
        confirm: impl FnOnce(&crate::sas::SasCode) -> bool,
    ) -> Result<SasOutcome, AppError> {
        use crate::sas::{Party, SasFlow};
        self.ensure_contact(handle).await?;
        let started = (self.clock)();
        // A key the other side sent a little before we started counts: the
        // two people rarely press enter at the same second.
        let since = started.saturating_sub(10 * 60 * 1000);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut flow = SasFlow::new();
        let our_key = flow.public_key();
        self.client
            .engine_mut()
            .queue_sas_key(handle, &our_key, started)?;
        self.client.deliver().await?;
        let their_key = loop {
            if let Some(key) = self.client.engine().received_sas_key(handle, since)? {
                break key;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(AppError::VerificationTimedOut(handle.to_owned()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            self.sync().await?;
        };
        let (mine, theirs) = self.verification_keys(handle)?;
        let my_handle = self.membership.handle.clone();
        let me = Party {
            handle: &my_handle,
            identity: mine,
            sas_key: our_key,
        };
        let them = Party {
            handle,
            identity: theirs,
            sas_key: their_key
                .as_slice()
                .try_into()
                .map_err(|_| AppError::VerificationInvalid(handle.to_owned()))?,
        };
        let code = flow
            .establish(&me, &them)
            .ok_or_else(|| AppError::VerificationInvalid(handle.to_owned()))?;
        if !confirm(&code) {
            return Ok(SasOutcome::Rejected);
        }
        let mac = flow
            .mac(&me)
            .ok_or_else(|| AppError::VerificationInvalid(handle.to_owned()))?;
        self.client
            .engine_mut()
            .queue_sas_mac(handle, &mac, (self.clock)())?;
        self.client.deliver().await?;
        loop {
            if let Some(mac) = self.client.engine().received_sas_mac(handle, since)?
                && flow.verify_mac(&them, &mac)
            {
                self.client.engine().mark_verified(handle)?;
                return Ok(SasOutcome::Verified);
            }
            if tokio::time::Instant::now() > deadline {
                return Ok(SasOutcome::Mismatch);
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            self.sync().await?;
        }
    }

    /// Creates a group named `name` with me as its admin and `handles` as
    /// members (resolved in the directory); its state goes to each of them
    /// over Olm. Queued if the relay is down.
    pub async fn group_create(
        &mut self,
        name: &str,
        handles: &[String],
        rotation: crate::Rotation,
    ) -> Result<crate::GroupInfo, AppError> {
        for handle in handles {
            self.ensure_contact(handle).await?;
        }
        let info =
            self.client
                .engine_mut()
                .create_group(name, handles, rotation, (self.clock)())?;
        self.deliver_or_queue().await?;
        Ok(info)
    }

    /// Admin of the group: adds `handles`; they see only what is sent from
    /// now on.
    pub async fn group_add(
        &mut self,
        group: &str,
        handles: &[String],
    ) -> Result<crate::GroupInfo, AppError> {
        for handle in handles {
            self.ensure_contact(handle).await?;
        }
        self.resolve_group_members(group).await?;
        let info = self
            .client
            .engine_mut()
            .add_group_members(group, handles, (self.clock)())?;
        self.deliver_or_queue().await?;
        Ok(info)
    }

    /// Admin of the group: removes `handles`; the group secret and every
    /// member's Megolm session rotate, so they can neither locate nor read
    /// anything sent after this.
    pub async fn group_remove(
        &mut self,
        group: &str,
        handles: &[String],
    ) -> Result<crate::GroupInfo, AppError> {
        self.resolve_group_members(group).await?;
        let info = self
            .client
            .engine_mut()
            .remove_group_members(group, handles, (self.clock)())?;
        self.deliver_or_queue().await?;
        Ok(info)
    }

    /// Leaves a group I do not administer: this device stops at once, and
    /// the admin's device removes me when it next syncs.
    pub async fn group_leave(&mut self, group: &str) -> Result<crate::GroupInfo, AppError> {
        let info = self
            .client
            .engine_mut()
            .leave_group(group, (self.clock)())?;
        self.deliver_or_queue().await?;
        Ok(info)
    }

    /// Sends `text` to a group: one put, whatever the group's size (plus,
    /// when my Megolm session is new, its key to each member over Olm).
    pub async fn group_send(&mut self, group: &str, text: &str) -> Result<Sent, AppError> {
        self.require_approved()?;
        self.resolve_group_members(group).await?;
        let id = self
            .client
            .engine_mut()
            .queue_group_text(group, text, (self.clock)())?;
        let delivered = self.deliver_or_queue().await?;
        Ok(Sent { id, delivered })
    }

    /// My groups.
    pub fn groups(&self) -> Vec<crate::GroupInfo> {
        self.client.engine().groups()
    }

    /// A group's local history.
    pub fn group_history(&self, group: &str) -> Result<Vec<Message>, AppError> {
        Ok(self.client.engine().group_history(group)?)
    }

    /// Makes every member of `group` a contact, as far as the directory
    /// allows (an invited member who has not joined yet is skipped: they
    /// ask for the session key when they see a message).
    async fn resolve_group_members(&mut self, group: &str) -> Result<(), AppError> {
        let info = self.client.engine().find_group(group)?;
        let missing: Vec<String> = info
            .members
            .iter()
            .filter(|m| {
                **m != self.membership.handle && self.client.engine().contact_card(m).is_none()
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let conn = match self.client.connect().await {
            Ok(conn) => conn,
            Err(error) => {
                // Offline: send with the contacts I have.
                let error = AppError::from(error);
                return if error.is_network() {
                    Ok(())
                } else {
                    Err(error)
                };
            }
        };
        self.add_contacts(conn, &missing).await
    }

    /// Delivers the outbox; a network failure leaves it queued (false).
    async fn deliver_or_queue(&mut self) -> Result<bool, AppError> {
        match self.client.deliver().await {
            Ok(_) => Ok(true),
            Err(error) => {
                let error = AppError::from(error);
                if error.is_network() {
                    Ok(false)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// The messaging client.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// 60 digits in 12 groups from both parties' handles and identity keys,
/// order-independent.
pub fn safety_number(a: (&str, &[u8; 32]), b: (&str, &[u8; 32])) -> String {
    let mut parties = [a, b];
    parties.sort();
    let mut hasher = Sha512::new();
    hasher.update(SAFETY_NUMBER_TAG);
    for (handle, key) in parties {
        hasher.update((handle.len() as u32).to_be_bytes());
        hasher.update(handle.as_bytes());
        hasher.update(key);
    }
    let digest = hasher.finalize();
    digest
        .chunks(5)
        .take(12)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", value % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_numbers_agree_on_both_sides_and_change_with_a_key() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let one = safety_number(("alice", &a), ("bob", &b));
        assert_eq!(one, safety_number(("bob", &b), ("alice", &a)));
        assert_eq!(one.split(' ').count(), 12);
        assert!(
            one.split(' ')
                .all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit()))
        );
        assert_ne!(one, safety_number(("alice", &a), ("bob", &[3u8; 32])));
    }
}
