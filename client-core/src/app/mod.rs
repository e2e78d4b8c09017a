//! The whole device, as the `sotto` command line uses it: a home directory
//! holding the encrypted store, the device, the team membership, contacts
//! and history; and the team flows on top of the messaging client —
//! create a team, invite, join, send by handle, sync, members, revoke.
//!
//! Every operation opens the relay connections it needs and closes them;
//! nothing here keeps state outside the store, so a process may stop
//! between any two calls.
//!
//! Where each part lives (every file extends the one [`App`]):
//!
//! - `mod.rs`: [`App`] itself, opening a home, [`AppError`], the relay
//!   address lookup.
//! - `team`: create a team, invite, join, members, revoke, directory key
//!   rotation, the contacts the roster names.
//! - `messaging`: send by handle, sync, listen, history.
//! - `groups`: the group commands on top of `crate::group`.
//! - `verify`: safety numbers and interactive (SAS) verification.
//!
//! The device commands (`device add`, `approve`, `remove`…) are in
//! `crate::devices`, next to the engine's side of linking.

mod admins;
mod files;
mod groups;
mod messaging;
mod team;
mod verify;

pub use files::{FileTarget, OutgoingFile, save_path};
pub use messaging::Conversation;
pub use verify::{SAFETY_NUMBER_TAG, SasSession, safety_number};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::client::{Client, ClientError, Clock};
use crate::engine::{Engine, EngineError, MessageId};
use crate::team::{InviteError, Membership, TeamError};
use crate::{KeySource, NetError, RelayAddr, SledStore, Store, StoreError};

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
    /// Sending, fetching or saving a file.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
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

pub(crate) async fn resolve(target: &str, fingerprint: [u8; 32]) -> Result<RelayAddr, AppError> {
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
    pub(crate) home: PathBuf,
    pub(crate) client: Client,
    pub(crate) membership: Membership,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Clock,
}

impl App {
    pub(crate) fn now_secs(clock: &Clock) -> u64 {
        clock() / 1000
    }

    /// Opens the device in `home`.
    pub async fn open(home: &Path, key: KeySource, clock: Clock) -> Result<Self, AppError> {
        // A home without a store has joined nothing; opening it must not
        // create one (its key source is chosen when it joins).
        if !SledStore::exists(home) {
            return Err(AppError::NotJoined(home.to_owned()));
        }
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
    pub(crate) fn joined(
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

    pub(crate) fn fresh(home: &Path, key: KeySource) -> Result<Arc<dyn Store>, AppError> {
        let store = open_store(home, key)?;
        if Engine::open(store.clone())?.is_some() {
            return Err(AppError::AlreadyJoined(home.to_owned()));
        }
        Ok(store)
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

    /// The messaging client.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opening_a_home_without_a_store_says_not_joined_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("fresh");
        let opened = App::open(&home, KeySource::key_file_in(&home), crate::system_clock()).await;
        assert!(matches!(opened, Err(AppError::NotJoined(_))));
        // Nothing was created: the home can still join with a passphrase.
        assert!(!SledStore::exists(&home));
        assert!(!home.join("store.key").exists());
    }
}
