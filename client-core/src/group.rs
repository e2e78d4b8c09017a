//! Group conversations with Megolm (DESIGN §4, §5, §8), without I/O: an
//! extension of the [`Engine`].
//!
//! - **One put per message.** A group message is encrypted once with the
//!   sender device's outbound Megolm session, wrapped in a
//!   [`GroupEnvelope`], and sealed ([`seal`], the 1:1 format) to the
//!   group's *envelope key*, into the group's mailbox. Every member reads
//!   the same blob.
//! - **Group secret per generation.** A group's membership has a version,
//!   its *generation*; every generation has a fresh 32-byte secret `G`,
//!   sent by the group's admin over Olm to each member device in a
//!   [`GroupState`]. From `G` come the group inbox key (its mailbox rotates
//!   per epoch like any inbox, DESIGN §4) and the group envelope key, so a
//!   removed member can neither locate nor open anything sent after the
//!   change, and a member added later never learns an earlier mailbox.
//! - **Indistinguishable blobs.** Sealing to an x25519 key derived from
//!   `G` gives group blobs exactly the shape of 1:1 blobs: version byte 1,
//!   a real ephemeral x25519 key, one bucket size.
//! - **Sessions.** Each member device shares its outbound session's key
//!   over Olm with every member device, and starts a new session after
//!   `rotate_messages` messages, `rotate_secs` seconds, or any membership
//!   change.
//! - **Replay.** Megolm has none; each (session, message index) is accepted
//!   once ([`Tree::Seen`]).
//! - **Missing keys.** A message whose session key has not arrived is kept,
//!   shown as waiting, and the key is asked of its sender over Olm; the
//!   sender answers with the key, or with "withheld" if the asker was not a
//!   member when the session was made.
//!
//! Group mailboxes are never acked (DESIGN §4): each reader keeps a cursor
//! per mailbox ([`Tree::Cursors`]) and blobs expire by TTL.

use std::collections::HashMap;
use std::sync::Mutex;

use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sotto_proto::client::{
    GroupEnvelope, GroupKey, GroupKeyRequest, GroupKeyWithheld, GroupLeave, GroupPayload,
    GroupSessionShare, GroupState, Payload, Text, group_key_withheld, group_payload, payload,
};
use sotto_proto::{Blob, MailboxId, Message as _};
use vodozemac::megolm::{
    ExportedSessionKey, GroupSession, GroupSessionPickle, InboundGroupSession,
    InboundGroupSessionPickle, MegolmMessage, SessionConfig, SessionKey,
};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::engine::{
    Dropped, Engine, EngineError, Message, MessageId, OutboxRecord, Received, Status, corrupt,
    random_id, status_record,
};
use crate::{
    Batch, BlindId, BlindedInbox, EPOCH_SECS, EnvelopeSecret, Epoch, InboxKey, Store, Tree, open,
    records, seal,
};

/// A group's 16-byte random ID.
pub type GroupId = [u8; 16];

/// HKDF info deriving the group inbox key's seed from the group secret.
pub const GROUP_INBOX_INFO: &[u8] = b"sotto/group-inbox/v1";
/// HKDF info deriving the group envelope key from the group secret.
pub const GROUP_ENVELOPE_INFO: &[u8] = b"sotto/group-envelope/v1";
/// Default Megolm rotation: after this many messages...
pub const DEFAULT_ROTATE_MESSAGES: u32 = 100;
/// ... or this many seconds (a week), whichever comes first.
pub const DEFAULT_ROTATE_SECS: u64 = 7 * 24 * 3600;
const GROUP_ENVELOPE_VERSION: u32 = 1;
/// The previous generation's mailbox is still read for this many epochs
/// after a change, so messages its members sent before they heard of the
/// change arrive.
const GRACE_EPOCHS: u64 = 2;
const GROUP_PREFIX: &[u8] = b"group/";
const OUTBOUND_PREFIX: &[u8] = b"gout/";
const INBOUND_PREFIX: &[u8] = b"gin/";
const PENDING_PREFIX: &[u8] = b"gpend/";
const REQUESTED_PREFIX: &[u8] = b"greq/";

/// How often senders start a new Megolm session (fixed at creation, carried
/// in the group state so every member applies the same policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// After this many messages.
    pub messages: u32,
    /// After this many seconds.
    pub secs: u64,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            messages: DEFAULT_ROTATE_MESSAGES,
            secs: DEFAULT_ROTATE_SECS,
        }
    }
}

/// A group as the command line shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// Hex ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Member handles.
    pub members: Vec<String>,
    /// Who may change the membership.
    pub admins: Vec<String>,
    /// Membership version.
    pub generation: u64,
    /// False once I was removed.
    pub active: bool,
}

/// One membership generation: its members and its secret.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Generation {
    #[zeroize(skip)]
    number: u64,
    secret: [u8; 32],
    #[zeroize(skip)]
    members: Vec<String>,
    /// The epoch in which this device learned of the generation.
    #[zeroize(skip)]
    since_epoch: u64,
}

impl Generation {
    fn derive(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, &self.secret)
            .expand(info, out.as_mut())
            .expect("invariant: 32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    fn inbox(&self) -> InboxKey {
        InboxKey::from_seed(*self.derive(GROUP_INBOX_INFO))
    }

    fn envelope(&self) -> EnvelopeSecret {
        EnvelopeSecret::from_bytes(*self.derive(GROUP_ENVELOPE_INFO))
    }

    fn has(&self, handle: &str) -> bool {
        self.members.iter().any(|m| m == handle)
    }
}

/// A group as stored.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Group {
    id: GroupId,
    name: String,
    admins: Vec<String>,
    current: Generation,
    previous: Option<Generation>,
    rotate_messages: u32,
    rotate_secs: u64,
    /// I was removed: nothing is read or sent any more; history stays.
    left: bool,
}

impl Group {
    /// The state its members get (with the current secret).
    fn state(&self) -> GroupState {
        GroupState {
            group_id: self.id.to_vec().into(),
            generation: self.current.number,
            name: self.name.clone(),
            members: self.current.members.clone(),
            admins: self.admins.clone(),
            secret: self.current.secret.to_vec().into(),
            rotate_messages: self.rotate_messages,
            rotate_secs: self.rotate_secs,
        }
    }

    fn info(&self) -> GroupInfo {
        GroupInfo {
            id: hex::encode(self.id),
            name: self.name.clone(),
            members: self.current.members.clone(),
            admins: self.admins.clone(),
            generation: self.current.number,
            active: !self.left,
        }
    }

    fn generation(&self, number: u64) -> Option<&Generation> {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find(|g| g.number == number)
    }
}

/// The mailboxes handed out by [`Engine::inboxes`] that belong to groups.
pub(crate) type MailboxMap = Mutex<HashMap<MailboxId, (GroupId, u64)>>;

/// My outbound Megolm session in a group.
#[derive(Serialize, Deserialize)]
struct OutboundRecord {
    pickle: GroupSessionPickle,
    generation: u64,
    created_ms: u64,
}

/// An inbound Megolm session: whose it is and, for my own, whom it was
/// shared with (they may ask for it again).
#[derive(Serialize, Deserialize)]
struct InboundRecord {
    pickle: InboundGroupSessionPickle,
    sender: String,
    sender_key: [u8; 32],
    generation: u64,
    #[serde(default)]
    shared_with: Option<Vec<String>>,
}

/// A group blob waiting for its session key.
#[derive(Serialize, Deserialize)]
struct PendingRecord {
    history_key: Vec<u8>,
    envelope: Vec<u8>,
}

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    for part in parts {
        key.extend_from_slice(part);
        key.push(b'/');
    }
    key
}

fn seen_key(session_id: &str, index: u32) -> Vec<u8> {
    [b"g", session_id.as_bytes(), &index.to_be_bytes()].concat()
}

/// Loads every stored group.
pub(crate) fn load_groups(store: &dyn Store) -> Result<HashMap<GroupId, Group>, EngineError> {
    let mut groups = HashMap::new();
    for (_, value) in store.scan_prefix(Tree::Meta, GROUP_PREFIX)? {
        let group: Group = serde_json::from_slice(&value).map_err(corrupt)?;
        groups.insert(group.id, group);
    }
    Ok(groups)
}

fn new_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("invariant: the OS random number generator works");
    secret
}

fn json<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, EngineError> {
    serde_json::to_vec(value)
        .map(Zeroizing::new)
        .map_err(corrupt)
}

impl Engine {
    /// My groups, by name.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let mut groups: Vec<GroupInfo> = self.groups.values().map(Group::info).collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        groups
    }

    /// The group called `name`, or whose hex ID starts with `name`.
    pub fn find_group(&self, name: &str) -> Result<GroupInfo, EngineError> {
        let by_name: Vec<&Group> = self.groups.values().filter(|g| g.name == name).collect();
        let matches = if by_name.is_empty() {
            self.groups
                .values()
                .filter(|g| name.len() >= 4 && hex::encode(g.id).starts_with(name))
                .collect()
        } else {
            by_name
        };
        match matches.as_slice() {
            [group] => Ok(group.info()),
            [] => Err(EngineError::UnknownGroup(name.to_owned())),
            several => Err(EngineError::AmbiguousGroup {
                name: name.to_owned(),
                ids: several.iter().map(|g| hex::encode(g.id)).collect(),
            }),
        }
    }

    fn group_by_hex(&self, id: &str) -> Result<&Group, EngineError> {
        hex::decode(id)
            .ok()
            .and_then(|id| GroupId::try_from(id.as_slice()).ok())
            .and_then(|id| self.groups.get(&id))
            .ok_or_else(|| EngineError::UnknownGroup(id.to_owned()))
    }

    /// Creates a group with me as its admin and `members` (contacts) in it,
    /// and queues its state to each of them over Olm.
    pub fn create_group(
        &mut self,
        name: &str,
        members: &[String],
        rotation: Rotation,
        now_ms: u64,
    ) -> Result<GroupInfo, EngineError> {
        let me = self.device.handle.clone();
        if self.groups.values().any(|g| g.name == name && !g.left) {
            return Err(EngineError::GroupNameTaken(name.to_owned()));
        }
        if name.trim().is_empty() || name.len() > 64 {
            return Err(EngineError::GroupChange(
                "a group name is 1 to 64 characters".into(),
            ));
        }
        let mut all = vec![me.clone()];
        for member in members {
            if !self.contacts.contains_key(member) {
                return Err(EngineError::UnknownContact(member.clone()));
            }
            if !all.contains(member) {
                all.push(member.clone());
            }
        }
        let group = Group {
            id: random_id(),
            name: name.to_owned(),
            admins: vec![me],
            current: Generation {
                number: 1,
                secret: new_secret(),
                members: all,
                since_epoch: Epoch::from_unix_secs(now_ms / 1000, EPOCH_SECS).get(),
            },
            previous: None,
            rotate_messages: rotation.messages.max(1),
            rotate_secs: rotation.secs.max(1),
            left: false,
        };
        let info = group.info();
        self.publish_group(group, &[], now_ms)?;
        Ok(info)
    }

    /// Adds `handles` (contacts) to a group I administer: a new generation
    /// with a new secret, so they read only what is sent from now on.
    pub fn add_group_members(
        &mut self,
        group: &str,
        handles: &[String],
        now_ms: u64,
    ) -> Result<GroupInfo, EngineError> {
        let mut next = self.next_generation(group, now_ms)?;
        let mut added = false;
        for handle in handles {
            if !self.contacts.contains_key(handle) {
                return Err(EngineError::UnknownContact(handle.clone()));
            }
            if !next.current.has(handle) {
                next.current.members.push(handle.clone());
                added = true;
            }
        }
        if !added {
            return Err(EngineError::GroupChange(format!(
                "everyone named is already in \"{}\"",
                next.name
            )));
        }
        let info = next.info();
        self.publish_group(next, &[], now_ms)?;
        Ok(info)
    }

    /// Removes `handles` from a group I administer: a new generation whose
    /// secret they never receive, and every member's Megolm session
    /// rotates, so they can neither locate nor read what follows.
    pub fn remove_group_members(
        &mut self,
        group: &str,
        handles: &[String],
        now_ms: u64,
    ) -> Result<GroupInfo, EngineError> {
        let mut next = self.next_generation(group, now_ms)?;
        let me = self.device.handle.clone();
        let mut removed = Vec::new();
        for handle in handles {
            if *handle == me {
                return Err(EngineError::GroupChange(
                    "an admin cannot remove themselves from their group".into(),
                ));
            }
            if next.current.has(handle) {
                next.current.members.retain(|m| m != handle);
                next.admins.retain(|m| m != handle);
                removed.push(handle.clone());
            }
        }
        if removed.is_empty() {
            return Err(EngineError::GroupChange(format!(
                "nobody named is in \"{}\"",
                next.name
            )));
        }
        let info = next.info();
        self.publish_group(next, &removed, now_ms)?;
        Ok(info)
    }

    /// The group's next generation, with a fresh secret; checks that I may
    /// make it.
    fn next_generation(&self, group: &str, now_ms: u64) -> Result<Group, EngineError> {
        let info = self.find_group(group)?;
        let group = self.group_by_hex(&info.id)?;
        if group.left {
            return Err(EngineError::NotInGroup(group.name.clone()));
        }
        if !group.admins.contains(&self.device.handle) {
            return Err(EngineError::NotGroupAdmin(group.name.clone()));
        }
        let mut next = group.clone();
        next.previous = Some(group.current.clone());
        next.current = Generation {
            number: group.current.number + 1,
            secret: new_secret(),
            members: group.current.members.clone(),
            since_epoch: Epoch::from_unix_secs(now_ms / 1000, EPOCH_SECS).get(),
        };
        Ok(next)
    }

    /// Stores `group` and queues its state to every member (and, without
    /// the secret, to each of `removed`, so their device shows that they
    /// left). My outbound session is dropped: the next message starts a
    /// new one.
    fn publish_group(
        &mut self,
        group: Group,
        removed: &[String],
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let me = self.device.handle.clone();
        let state = group.state();
        let payload = |state: GroupState| Payload {
            sent_at: now_ms,
            body: Some(payload::Body::GroupState(state)),
            ..Payload::default()
        };
        for member in group.current.members.iter().filter(|m| **m != me) {
            self.queue(member, payload(state.clone()), None)?;
        }
        // My other devices follow the group too.
        self.queue(&me, payload(state.clone()), None)?;
        for member in removed {
            let without_secret = GroupState {
                secret: Default::default(),
                ..state.clone()
            };
            self.queue(member, payload(without_secret), None)?;
        }
        let mut batch = Batch::new();
        batch.delete(Tree::Sessions, key(OUTBOUND_PREFIX, &[&group.id]));
        batch.put(Tree::Meta, key(GROUP_PREFIX, &[&group.id]), &json(&group)?);
        self.store.apply(batch)?;
        self.store.flush()?;
        self.groups.insert(group.id, group);
        Ok(())
    }

    /// A group state from `peer` (over Olm, so `peer` is authenticated).
    pub(crate) fn on_group_state(
        &mut self,
        peer: &str,
        state: GroupState,
        epoch: Epoch,
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        let Ok(id) = GroupId::try_from(state.group_id.as_ref()) else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let me = self.device.handle.clone();
        let mine = state.members.contains(&me) && state.secret.len() == 32;
        let generation = |secret: &[u8]| Generation {
            number: state.generation,
            secret: secret.try_into().unwrap_or([0; 32]),
            members: state.members.clone(),
            since_epoch: epoch.get(),
        };
        let group = match self.groups.get(&id).cloned() {
            None => {
                // One of my own devices speaks for me in every group.
                let sender_may = peer == me
                    || (state.admins.iter().any(|a| a == peer)
                        && state.members.iter().any(|m| m == peer));
                if !sender_may || state.generation == 0 || !mine {
                    return Ok(self.drop_blob(Dropped::Group));
                }
                Group {
                    id,
                    name: state.name.clone(),
                    admins: state.admins.clone(),
                    current: generation(&state.secret),
                    previous: None,
                    rotate_messages: state.rotate_messages.max(1),
                    rotate_secs: state.rotate_secs.max(1),
                    left: false,
                }
            }
            Some(known) => {
                if peer != me && !known.admins.iter().any(|a| a == peer) {
                    return Ok(self.drop_blob(Dropped::Group));
                }
                if state.generation <= known.current.number {
                    return Ok(Received::Duplicate);
                }
                let mut next = known.clone();
                next.admins = state.admins.clone();
                next.name = state.name.clone();
                if mine {
                    next.previous = Some(known.current.clone());
                    next.current = generation(&state.secret);
                } else {
                    next.current = generation(&[0; 32]);
                    self.leave(&mut next, batch)?;
                }
                next
            }
        };
        batch.delete(Tree::Sessions, key(OUTBOUND_PREFIX, &[&id]));
        batch.put(Tree::Meta, key(GROUP_PREFIX, &[&id]), &json(&group)?);
        self.groups.insert(id, group);
        self.groups_changed = true;
        Ok(Received::Group)
    }

    /// Marks `group` left: keeps the history, forgets the secrets, and
    /// drops (as unsent) what I had queued for it.
    fn leave(&self, group: &mut Group, batch: &mut Batch) -> Result<(), EngineError> {
        group.left = true;
        group.previous = None;
        group.current.secret = [0; 32];
        let hex_id = hex::encode(group.id);
        for (key, value) in self.store.scan_prefix(Tree::Outbox, &[])? {
            let queued = records::decode_outbox(&value).map_err(corrupt)?;
            if queued.group.as_deref() == Some(hex_id.as_str()) {
                batch.delete(Tree::Outbox, key);
                self.update_status(&queued.message_id, Status::Unsent, batch)?;
            }
        }
        Ok(())
    }

    /// Leaves a group I am in but do not administer: my device stops
    /// reading and sending at once, and each admin's device removes me
    /// (a new generation I never receive) when it hears of it.
    pub fn leave_group(&mut self, group: &str, now_ms: u64) -> Result<GroupInfo, EngineError> {
        let info = self.find_group(group)?;
        let mut left = self.group_by_hex(&info.id)?.clone();
        if left.left {
            return Err(EngineError::NotInGroup(left.name.clone()));
        }
        let me = self.device.handle.clone();
        if left.admins.contains(&me) {
            return Err(EngineError::GroupChange(format!(
                "you administer \"{}\"; remove its other members instead of leaving it",
                left.name
            )));
        }
        let admins: Vec<String> = left
            .admins
            .iter()
            .filter(|a| self.contacts.contains_key(*a))
            .cloned()
            .collect();
        for admin in &admins {
            let payload = Payload {
                sent_at: now_ms,
                body: Some(payload::Body::GroupLeave(GroupLeave {
                    group_id: left.id.to_vec().into(),
                })),
                ..Payload::default()
            };
            self.queue(admin, payload, None)?;
        }
        let mut batch = Batch::new();
        self.leave(&mut left, &mut batch)?;
        batch.delete(Tree::Sessions, key(OUTBOUND_PREFIX, &[&left.id]));
        batch.put(Tree::Meta, key(GROUP_PREFIX, &[&left.id]), &json(&left)?);
        self.store.apply(batch)?;
        self.store.flush()?;
        let info = left.info();
        self.groups.insert(left.id, left);
        Ok(info)
    }

    /// `peer` left a group I administer: remove them, as `group remove`
    /// would.
    pub(crate) fn on_group_leave(
        &mut self,
        peer: &str,
        leave: GroupLeave,
        now_ms: u64,
    ) -> Result<Received, EngineError> {
        let Some(group) = GroupId::try_from(leave.group_id.as_ref())
            .ok()
            .and_then(|id| self.groups.get(&id))
        else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let mine = !group.left && group.admins.contains(&self.device.handle);
        if !mine || !group.current.has(peer) {
            return Ok(self.drop_blob(Dropped::Group));
        }
        let id = hex::encode(group.id);
        self.remove_group_members(&id, &[peer.to_owned()], now_ms)?;
        Ok(Received::Group)
    }

    /// A session key from `peer`'s device `sender_key`.
    pub(crate) fn on_group_key(
        &mut self,
        peer: &str,
        sender_key: &[u8; 32],
        shared: GroupKey,
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        let Some(group) = GroupId::try_from(shared.group_id.as_ref())
            .ok()
            .and_then(|id| self.groups.get(&id))
        else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let id = group.id;
        let allowed = !group.left
            && group
                .generation(shared.generation)
                .is_some_and(|g| g.has(peer));
        if !allowed {
            return Ok(self.drop_blob(Dropped::Group));
        }
        let session = if !shared.session_key.is_empty() {
            SessionKey::from_bytes(&shared.session_key)
                .ok()
                .map(|k| InboundGroupSession::new(&k, SessionConfig::version_1()))
        } else {
            ExportedSessionKey::from_bytes(&shared.exported_key)
                .ok()
                .map(|k| InboundGroupSession::import(&k, SessionConfig::version_1()))
        };
        let Some(mut session) = session else {
            return Ok(self.drop_blob(Dropped::Mismatch));
        };
        let session_id = session.session_id();
        let record_key = key(INBOUND_PREFIX, &[&id, session_id.as_bytes()]);
        if let Some(existing) = self.inbound_record(&id, &session_id)? {
            let same_sender = existing.sender_key == *sender_key;
            let existing = InboundGroupSession::from_pickle(existing.pickle);
            if !same_sender {
                return Ok(self.drop_blob(Dropped::UnknownSender));
            }
            if existing.first_known_index() <= session.first_known_index() {
                return Ok(Received::Duplicate);
            }
        }
        let unlocked = self.unlock_pending(&id, &session_id, Some(&mut session), batch)?;
        let record = InboundRecord {
            pickle: session.pickle(),
            sender: peer.to_owned(),
            sender_key: *sender_key,
            generation: shared.generation,
            shared_with: None,
        };
        batch.put(Tree::Sessions, record_key, &json(&record)?);
        Ok(if unlocked.is_empty() {
            Received::Group
        } else {
            Received::Unlocked(unlocked)
        })
    }

    /// `peer` lacks the key of one of my sessions: send it if they were a
    /// member when it was made, else say it is withheld.
    pub(crate) fn on_group_key_request(
        &mut self,
        peer: &str,
        request: GroupKeyRequest,
        now_ms: u64,
    ) -> Result<Received, EngineError> {
        let Ok(id) = GroupId::try_from(request.group_id.as_ref()) else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let body = match self.inbound_record(&id, &request.session_id)? {
            Some(record) if record.sender_key == self.me => {
                let entitled = record
                    .shared_with
                    .as_ref()
                    .is_some_and(|members| members.iter().any(|m| m == peer));
                if entitled {
                    let session = InboundGroupSession::from_pickle(record.pickle);
                    payload::Body::GroupKey(GroupKey {
                        group_id: id.to_vec().into(),
                        generation: record.generation,
                        session_key: Default::default(),
                        exported_key: session.export_at_first_known_index().to_bytes().into(),
                    })
                } else {
                    withheld(
                        &id,
                        &request.session_id,
                        group_key_withheld::Reason::NotAMember,
                    )
                }
            }
            // Not my session: only its sender answers.
            Some(_) => return Ok(self.drop_blob(Dropped::Group)),
            None => withheld(
                &id,
                &request.session_id,
                group_key_withheld::Reason::UnknownSession,
            ),
        };
        let payload = Payload {
            sent_at: now_ms,
            body: Some(body),
            ..Payload::default()
        };
        self.queue(peer, payload, None)?;
        Ok(Received::Group)
    }

    /// `peer` will not share a session key: the messages waiting for it
    /// are shown as withheld.
    pub(crate) fn on_group_key_withheld(
        &mut self,
        peer: &str,
        withheld: GroupKeyWithheld,
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        let Ok(id) = GroupId::try_from(withheld.group_id.as_ref()) else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let pending = self.pending(&id, &withheld.session_id)?;
        let mut unlocked = Vec::new();
        for (pending_key, record) in pending {
            let Ok(envelope) = GroupEnvelope::decode(record.envelope.as_slice()) else {
                continue;
            };
            if envelope.sender_user != peer {
                continue;
            }
            batch.delete(Tree::Meta, pending_key);
            if let Some(mut message) = self.history_entry(&record.history_key)? {
                message.status = Status::Withheld;
                batch.put(
                    Tree::History,
                    record.history_key.clone(),
                    &records::encode_message(&message),
                );
                unlocked.push(message);
            }
        }
        Ok(Received::Unlocked(unlocked))
    }

    fn pending(
        &self,
        id: &GroupId,
        session_id: &str,
    ) -> Result<Vec<(Vec<u8>, PendingRecord)>, EngineError> {
        self.store
            .scan_prefix(
                Tree::Meta,
                &key(PENDING_PREFIX, &[id, session_id.as_bytes()]),
            )?
            .into_iter()
            .map(|(k, v)| Ok((k, serde_json::from_slice(&v).map_err(corrupt)?)))
            .collect()
    }

    fn history_entry(&self, history_key: &[u8]) -> Result<Option<Message>, EngineError> {
        self.store
            .get(Tree::History, history_key)?
            .map(|bytes| records::decode_message(&bytes).map_err(corrupt))
            .transpose()
    }

    /// Decrypts the messages that waited for `session_id`, in place in the
    /// history.
    fn unlock_pending(
        &mut self,
        id: &GroupId,
        session_id: &str,
        session: Option<&mut InboundGroupSession>,
        batch: &mut Batch,
    ) -> Result<Vec<Message>, EngineError> {
        let Some(session) = session else {
            return Ok(Vec::new());
        };
        let mut unlocked = Vec::new();
        for (pending_key, record) in self.pending(id, session_id)? {
            batch.delete(Tree::Meta, pending_key);
            let Ok(envelope) = GroupEnvelope::decode(record.envelope.as_slice()) else {
                continue;
            };
            let Some(mut message) = self.history_entry(&record.history_key)? else {
                continue;
            };
            match self.decrypt_group(session, &envelope)? {
                Some((decrypted, seen)) => {
                    batch.put(Tree::Seen, seen, &[]);
                    message.id = decrypted.id;
                    message.text = decrypted.text;
                    message.sent_at = decrypted.sent_at;
                    message.status = Status::Received;
                }
                None => message.status = Status::Withheld,
            }
            batch.put(
                Tree::History,
                record.history_key.clone(),
                &records::encode_message(&message),
            );
            unlocked.push(message);
        }
        Ok(unlocked)
    }

    /// Decrypts a group envelope's Megolm message; `None` if the session
    /// cannot (a message before the key's first index). Returns the
    /// message's ID, text and time, and its replay-protection key.
    fn decrypt_group(
        &self,
        session: &mut InboundGroupSession,
        envelope: &GroupEnvelope,
    ) -> Result<Option<(Decrypted, Vec<u8>)>, EngineError> {
        let Ok(megolm) = MegolmMessage::from_bytes(&envelope.megolm) else {
            return Ok(None);
        };
        let Ok(decrypted) = session.decrypt(&megolm) else {
            return Ok(None);
        };
        let plaintext = Zeroizing::new(decrypted.plaintext);
        let Ok(payload) = GroupPayload::decode(plaintext.as_slice()) else {
            return Ok(None);
        };
        let Some(group_payload::Body::Text(Text { body })) = payload.body else {
            return Ok(None);
        };
        Ok(Some((
            Decrypted {
                id: hex::encode(&payload.message_id),
                text: body,
                sent_at: payload.sent_at,
            },
            seen_key(&envelope.session_id, decrypted.message_index),
        )))
    }

    /// Queues a text to a group: encrypted once with my outbound Megolm
    /// session (made and shared first if needed), durable locally before
    /// any network I/O. Returns its ID.
    pub fn queue_group_text(
        &mut self,
        group: &str,
        text: &str,
        now_ms: u64,
    ) -> Result<MessageId, EngineError> {
        let info = self.find_group(group)?;
        let group = self.group_by_hex(&info.id)?.clone();
        let me = self.device.handle.clone();
        if group.left || !group.current.has(&me) {
            return Err(EngineError::NotInGroup(group.name.clone()));
        }
        let message_id = random_id();
        let payload = GroupPayload {
            message_id: message_id.to_vec().into(),
            sent_at: now_ms,
            body: Some(group_payload::Body::Text(Text {
                body: text.to_owned(),
            })),
        };
        let plaintext = Zeroizing::new(payload.encode_to_vec());
        let limit = crate::max_plaintext_len(sotto_proto::Bucket::largest()) - 400;
        if plaintext.len() > limit {
            return Err(EngineError::TooLong(text.len()));
        }
        let mut session = self.outbound_session(&group, now_ms)?;
        let megolm = session.encrypt(plaintext.as_slice());
        let session_id = session.session_id();
        let envelope = GroupEnvelope {
            version: GROUP_ENVELOPE_VERSION,
            group_id: group.id.to_vec().into(),
            generation: group.current.number,
            epoch: 0,
            sender_identity_key: self.me.to_vec().into(),
            sender_user: me.clone(),
            session_id: session_id.clone(),
            megolm: megolm.to_bytes().into(),
        };
        let mut batch = Batch::new();
        let outbox_key = self.next_outbox_key(&message_id);
        let record = OutboxRecord {
            peer: String::new(),
            envelope: envelope.encode_to_vec(),
            group: Some(hex::encode(group.id)),
            message_id: message_id.to_vec(),
        };
        batch.put(Tree::Outbox, outbox_key, &records::encode_outbox(&record));
        let message = Message {
            id: hex::encode(message_id),
            peer: group.name.clone(),
            from: me,
            from_me: true,
            text: text.to_owned(),
            sent_at: now_ms,
            status: Status::Queued,
            group: Some(group.name.clone()),
        };
        let history_key = self.next_history_key(&conversation(&group.id))?;
        batch.put(
            Tree::History,
            history_key.clone(),
            &records::encode_message(&message),
        );
        batch.put(
            Tree::Seen,
            [b"out".as_slice(), &message_id].concat(),
            &status_record(&history_key, message.status),
        );
        // My own blob comes back from the group mailbox: already seen.
        batch.put(
            Tree::Seen,
            seen_key(&session_id, megolm.message_index()),
            &[],
        );
        let outbound = OutboundRecord {
            pickle: session.pickle(),
            generation: group.current.number,
            created_ms: self.outbound_created(&group.id)?.unwrap_or(now_ms),
        };
        batch.put(
            Tree::Sessions,
            key(OUTBOUND_PREFIX, &[&group.id]),
            &json(&outbound)?,
        );
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(message_id)
    }

    fn outbound_created(&self, id: &GroupId) -> Result<Option<u64>, EngineError> {
        Ok(self.outbound_record(id)?.map(|r| r.created_ms))
    }

    /// My stored outbound session in group `id`.
    fn outbound_record(&self, id: &GroupId) -> Result<Option<OutboundRecord>, EngineError> {
        self.store
            .get(Tree::Sessions, &key(OUTBOUND_PREFIX, &[id]))?
            .map(|bytes| serde_json::from_slice(&bytes).map_err(corrupt))
            .transpose()
    }

    /// The stored inbound session `session_id` of group `id`.
    fn inbound_record(
        &self,
        id: &GroupId,
        session_id: &str,
    ) -> Result<Option<InboundRecord>, EngineError> {
        self.store
            .get(
                Tree::Sessions,
                &key(INBOUND_PREFIX, &[id, session_id.as_bytes()]),
            )?
            .map(|bytes| serde_json::from_slice(&bytes).map_err(corrupt))
            .transpose()
    }

    /// My outbound session in `group`, or a new one (shared with every
    /// member over Olm) when there is none or it is due for rotation.
    fn outbound_session(
        &mut self,
        group: &Group,
        now_ms: u64,
    ) -> Result<GroupSession, EngineError> {
        let outbound_key = key(OUTBOUND_PREFIX, &[&group.id]);
        if let Some(record) = self.outbound_record(&group.id)? {
            let session = GroupSession::from_pickle(record.pickle);
            let fresh = record.generation == group.current.number
                && session.message_index() < group.rotate_messages
                && now_ms.saturating_sub(record.created_ms) < group.rotate_secs * 1000;
            if fresh {
                return Ok(session);
            }
        }
        let session = GroupSession::new(SessionConfig::version_1());
        let session_key = session.session_key();
        let me = self.device.handle.clone();
        let shared = GroupKey {
            group_id: group.id.to_vec().into(),
            generation: group.current.number,
            session_key: session_key.to_bytes().into(),
            exported_key: Default::default(),
        };
        for member in group.current.members.iter().filter(|m| **m != me) {
            // A member not yet resolved asks for the key when it sees a
            // message (and is entitled to it).
            if !self.contacts.contains_key(member) {
                continue;
            }
            let payload = Payload {
                sent_at: now_ms,
                body: Some(payload::Body::GroupKey(shared.clone())),
                ..Payload::default()
            };
            self.queue(member, payload, None)?;
        }
        // And to my other devices, which read the group too.
        let payload = Payload {
            sent_at: now_ms,
            body: Some(payload::Body::GroupKey(shared.clone())),
            ..Payload::default()
        };
        self.queue(&me, payload, None)?;
        let own = InboundRecord {
            pickle: InboundGroupSession::new(&session_key, SessionConfig::version_1()).pickle(),
            sender: me,
            sender_key: self.me,
            generation: group.current.number,
            shared_with: Some(group.current.members.clone()),
        };
        let mut batch = Batch::new();
        batch.put(
            Tree::Sessions,
            key(
                INBOUND_PREFIX,
                &[&group.id, session.session_id().as_bytes()],
            ),
            &json(&own)?,
        );
        batch.put(
            Tree::Sessions,
            outbound_key,
            &json(&OutboundRecord {
                pickle: session.pickle(),
                generation: group.current.number,
                created_ms: now_ms,
            })?,
        );
        self.store.apply(batch)?;
        Ok(session)
    }

    /// Seals a queued group envelope for the group's current mailbox;
    /// `None` if I left the group (the message is not sent).
    pub(crate) fn seal_group(
        &self,
        group: &str,
        envelope: &[u8],
        epoch: Epoch,
    ) -> Result<Option<(MailboxId, Blob)>, EngineError> {
        let Ok(group) = self.group_by_hex(group) else {
            return Ok(None);
        };
        if group.left {
            return Ok(None);
        }
        let mut envelope = GroupEnvelope::decode(envelope).map_err(corrupt)?;
        envelope.epoch = epoch.get();
        envelope.generation = group.current.number;
        let blob = seal(
            &group.current.envelope().public(),
            &envelope.encode_to_vec(),
        )?;
        Ok(Some((group.current.inbox().public().mailbox(epoch), blob)))
    }

    /// The group inboxes to read for the epochs `from..=to`: each group's
    /// current generation, and the previous one for a grace period.
    pub(crate) fn group_inboxes(&self, from: Epoch, to: Epoch) -> Vec<BlindedInbox> {
        let mut map = self
            .group_mailboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the latest list's mailboxes are looked up (the map stays small
        // in a long `listen`).
        map.clear();
        let mut inboxes = Vec::new();
        for group in self.groups.values().filter(|g| !g.left) {
            let previous = group
                .previous
                .as_ref()
                .filter(|_| to.get() <= group.current.since_epoch + GRACE_EPOCHS);
            for generation in std::iter::once(&group.current).chain(previous) {
                let inbox = generation.inbox();
                for epoch in Epoch::range(from, to) {
                    let blinded = inbox.blind(epoch);
                    map.insert(blinded.mailbox_id(), (group.id, generation.number));
                    inboxes.push(blinded);
                }
            }
        }
        inboxes
    }

    /// Whether a group's secret changed since the last call: its new
    /// mailboxes are not in the inbox list handed out before.
    pub fn take_groups_changed(&mut self) -> bool {
        std::mem::take(&mut self.groups_changed)
    }

    /// Whether `mailbox` is a group mailbox (never acked: read with a
    /// cursor).
    pub fn is_group_mailbox(&self, mailbox: &MailboxId) -> bool {
        self.group_of(mailbox).is_some()
    }

    fn group_of(&self, mailbox: &MailboxId) -> Option<(GroupId, u64)> {
        self.group_mailboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(mailbox)
            .copied()
    }

    /// The relay seq up to which a group mailbox was read.
    pub fn group_cursor(&self, mailbox: &MailboxId) -> Result<u64, EngineError> {
        Ok(crate::engine::be64_or_zero(
            self.store.get(Tree::Cursors, mailbox.as_bytes())?,
        ))
    }

    /// Records that a group mailbox was read up to `seq` (applied, not
    /// flushed).
    pub fn set_group_cursor(&self, mailbox: &MailboxId, seq: u64) -> Result<(), EngineError> {
        if seq > self.group_cursor(mailbox)? {
            self.store
                .put(Tree::Cursors, mailbox.as_bytes(), &seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// Processes one blob read from `mailbox` of `epoch`: a group blob if
    /// the mailbox is a group's, else a 1:1 blob ([`Engine::receive`]).
    pub fn receive_in(
        &mut self,
        mailbox: &MailboxId,
        blob: &[u8],
        epoch: Epoch,
    ) -> Result<Received, EngineError> {
        match self.group_of(mailbox) {
            Some((id, generation)) => self.receive_group(id, generation, blob, epoch),
            None => self.receive(blob, epoch),
        }
    }

    fn receive_group(
        &mut self,
        id: GroupId,
        generation: u64,
        blob: &[u8],
        epoch: Epoch,
    ) -> Result<Received, EngineError> {
        let Some(group) = self.groups.get(&id).filter(|g| !g.left).cloned() else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let Some(secret) = group.generation(generation) else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let Ok(opened) = open(&secret.envelope(), blob) else {
            return Ok(self.drop_blob(Dropped::Unsealable));
        };
        let Ok(envelope) = GroupEnvelope::decode(opened.as_slice()) else {
            return Ok(self.drop_blob(Dropped::BadEnvelope));
        };
        if envelope.version != GROUP_ENVELOPE_VERSION
            || envelope.group_id.as_ref() != id.as_slice()
            || envelope.generation != generation
            || envelope.epoch.abs_diff(epoch.get()) > 1
        {
            return Ok(self.drop_blob(Dropped::BadEnvelope));
        }
        let Ok(megolm) = MegolmMessage::from_bytes(&envelope.megolm) else {
            return Ok(self.drop_blob(Dropped::Undecryptable));
        };
        let seen = seen_key(&envelope.session_id, megolm.message_index());
        if self.store.get(Tree::Seen, &seen)?.is_some() {
            return Ok(Received::Duplicate);
        }
        // The sender must be a current member whose device is the one
        // named, and (below) the one the session key came from.
        let sender_ok = self
            .contacts
            .get(&envelope.sender_user)
            .is_some_and(|devices| {
                devices.iter().any(|c| {
                    c.card.identity_key.to_bytes().as_slice()
                        == envelope.sender_identity_key.as_ref()
                })
            })
            && group.current.has(&envelope.sender_user);
        if !sender_ok {
            return Ok(self.drop_blob(Dropped::UnknownSender));
        }
        let group_name = group.name.clone();
        let record = self.inbound_record(&id, &envelope.session_id)?;
        let mut batch = Batch::new();
        let conversation = conversation(&id);
        let mut message = Message {
            id: String::new(),
            peer: group_name.clone(),
            from: envelope.sender_user.clone(),
            // Sent from another device of mine.
            from_me: envelope.sender_user == self.device.handle,
            text: String::new(),
            sent_at: 0,
            status: Status::Waiting,
            group: Some(group_name),
        };
        match record {
            None => {
                // The key has not arrived: keep the blob, ask its sender once.
                let history_key = self.next_history_key(&conversation)?;
                batch.put(
                    Tree::History,
                    history_key.clone(),
                    &records::encode_message(&message),
                );
                // Ordered as in the history: the key ends in the entry's
                // sequence number.
                let mut pending_key = key(PENDING_PREFIX, &[&id, envelope.session_id.as_bytes()]);
                pending_key.extend_from_slice(history_key.get(BlindId::LEN..).unwrap_or_default());
                let pending = PendingRecord {
                    history_key,
                    envelope: opened.to_vec(),
                };
                pending_key.extend_from_slice(&random_id());
                batch.put(Tree::Meta, pending_key, &json(&pending)?);
                batch.put(Tree::Seen, seen, &[]);
                let requested = key(REQUESTED_PREFIX, &[&id, envelope.session_id.as_bytes()]);
                if self.store.get(Tree::Meta, &requested)?.is_none() {
                    batch.put(Tree::Meta, requested, &[]);
                    let request = Payload {
                        sent_at: 0,
                        body: Some(payload::Body::GroupKeyRequest(GroupKeyRequest {
                            group_id: id.to_vec().into(),
                            session_id: envelope.session_id.clone(),
                        })),
                        ..Payload::default()
                    };
                    // Only the device whose session it is can answer.
                    self.queue_to(
                        &envelope.sender_user,
                        Some(&envelope.sender_identity_key),
                        request,
                        None,
                    )?;
                }
                self.store.apply(batch)?;
                Ok(Received::Message(message))
            }
            Some(record) => {
                if record.sender_key.as_slice() != envelope.sender_identity_key.as_ref() {
                    return Ok(self.drop_blob(Dropped::UnknownSender));
                }
                let mut session = InboundGroupSession::from_pickle(record.pickle);
                let Some((decrypted, seen)) = self.decrypt_group(&mut session, &envelope)? else {
                    return Ok(self.drop_blob(Dropped::Undecryptable));
                };
                message.id = decrypted.id;
                message.text = decrypted.text;
                message.sent_at = decrypted.sent_at;
                message.status = Status::Received;
                let history_key = self.next_history_key(&conversation)?;
                batch.put(
                    Tree::History,
                    history_key,
                    &records::encode_message(&message),
                );
                batch.put(Tree::Seen, seen, &[]);
                self.store.apply(batch)?;
                Ok(Received::Message(message))
            }
        }
    }

    /// A group's local history, oldest first.
    pub fn group_history(&self, group: &str) -> Result<Vec<Message>, EngineError> {
        let info = self.find_group(group)?;
        let id = self.group_by_hex(&info.id)?.id;
        self.history_of(&conversation(&id))
    }

    /// The group's mailbox at `epoch` under its current generation, as a
    /// sender computes it (for tests that check what a removed member can
    /// compute).
    pub fn group_mailbox(&self, group: &str, epoch: Epoch) -> Result<MailboxId, EngineError> {
        let info = self.find_group(group)?;
        let group = self.group_by_hex(&info.id)?;
        Ok(group.current.inbox().public().mailbox(epoch))
    }
}

/// The history conversation name of a group (blinded like a handle).
impl Engine {
    /// What a newly approved device of mine needs to follow my groups:
    /// each group's state, with its secret, and every Megolm session I can
    /// read, with whose it is (DESIGN "Devices").
    pub(crate) fn group_handover(&self) -> Result<Vec<payload::Body>, EngineError> {
        let mut bodies = Vec::new();
        for group in self.groups.values().filter(|g| !g.left) {
            bodies.push(payload::Body::GroupState(group.state()));
        }
        for (store_key, value) in self.store.scan_prefix(Tree::Sessions, INBOUND_PREFIX)? {
            let Some(id) = store_key
                .get(INBOUND_PREFIX.len()..INBOUND_PREFIX.len() + 16)
                .and_then(|id| GroupId::try_from(id).ok())
            else {
                continue;
            };
            if self.groups.get(&id).is_none_or(|g| g.left) {
                continue;
            }
            let record: InboundRecord = serde_json::from_slice(&value).map_err(corrupt)?;
            let session = InboundGroupSession::from_pickle(record.pickle);
            bodies.push(payload::Body::GroupSession(GroupSessionShare {
                group_id: id.to_vec().into(),
                generation: record.generation,
                exported_key: session.export_at_first_known_index().to_bytes().into(),
                sender: record.sender,
                sender_key: record.sender_key.to_vec().into(),
                outbound: false,
                shared_with: Vec::new(),
            }));
        }
        Ok(bodies)
    }

    /// A Megolm session forwarded by one of my own devices (the caller
    /// checked that): stored as the session of the member it names.
    pub(crate) fn on_group_session_share(
        &mut self,
        share: GroupSessionShare,
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        let Some(id) = GroupId::try_from(share.group_id.as_ref())
            .ok()
            .filter(|id| self.groups.get(id).is_some_and(|g| !g.left))
        else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let (Ok(sender_key), Ok(exported)) = (
            <[u8; 32]>::try_from(share.sender_key.as_ref()),
            ExportedSessionKey::from_bytes(&share.exported_key),
        ) else {
            return Ok(self.drop_blob(Dropped::Mismatch));
        };
        let mut session = InboundGroupSession::import(&exported, SessionConfig::version_1());
        let session_id = session.session_id();
        if self.inbound_record(&id, &session_id)?.is_some() {
            return Ok(Received::Duplicate);
        }
        let unlocked = self.unlock_pending(&id, &session_id, Some(&mut session), batch)?;
        let record = InboundRecord {
            pickle: session.pickle(),
            sender: share.sender,
            sender_key,
            generation: share.generation,
            shared_with: None,
        };
        batch.put(
            Tree::Sessions,
            key(INBOUND_PREFIX, &[&id, session_id.as_bytes()]),
            &json(&record)?,
        );
        Ok(if unlocked.is_empty() {
            Received::Group
        } else {
            Received::Unlocked(unlocked)
        })
    }

    /// A device of `handle` was removed: my outbound sessions in the
    /// groups `handle` is in were shared with it, so each starts anew at
    /// my next message (the groups issue's exclusion rule).
    pub(crate) fn rotate_sessions_shared_with(&mut self, handle: &str) -> Result<(), EngineError> {
        let mut batch = Batch::new();
        for group in self.groups.values().filter(|g| g.current.has(handle)) {
            batch.delete(Tree::Sessions, key(OUTBOUND_PREFIX, &[&group.id]));
        }
        self.store.apply(batch)?;
        Ok(())
    }
}

/// The history conversation of `group`.
pub(crate) fn conversation_of(group: &Group) -> String {
    conversation(&group.id)
}

fn conversation(id: &GroupId) -> String {
    format!("group/{}", hex::encode(id))
}

fn withheld(id: &GroupId, session_id: &str, reason: group_key_withheld::Reason) -> payload::Body {
    payload::Body::GroupKeyWithheld(GroupKeyWithheld {
        group_id: id.to_vec().into(),
        session_id: session_id.to_owned(),
        reason: reason as i32,
    })
}

struct Decrypted {
    id: String,
    text: String,
    sent_at: u64,
}

/// A fixed two-member group for the fuzz targets: alice (admin) and bob,
/// on in-memory stores, with the group state and alice's session key
/// already at bob. Not part of the API.
#[doc(hidden)]
pub struct FuzzGroup {
    alice: Engine,
    bob: Engine,
    now_ms: u64,
}

#[doc(hidden)]
impl FuzzGroup {
    /// The setup: cards exchanged, the group made, one message delivered.
    pub fn new() -> Result<Self, EngineError> {
        let now_ms = 1_700_000_000_000;
        let engine = |handle: &str| -> Result<Engine, EngineError> {
            let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(crate::MemoryStore::new()?);
            Engine::create(store, handle, now_ms / 1000)
        };
        let mut fuzz = Self {
            alice: engine("alice")?,
            bob: engine("bob")?,
            now_ms,
        };
        fuzz.alice.import_card(&fuzz.bob.export_card())?;
        fuzz.bob.import_card(&fuzz.alice.export_card())?;
        fuzz.alice
            .create_group("fuzz", &["bob".to_owned()], Rotation::default(), now_ms)?;
        fuzz.alice.queue_group_text("fuzz", "hello", now_ms)?;
        fuzz.deliver()?;
        Ok(fuzz)
    }

    fn epoch(&self) -> Epoch {
        Epoch::from_unix_secs(self.now_ms / 1000, EPOCH_SECS)
    }

    /// Everything in alice's outbox, to bob.
    fn deliver(&mut self) -> Result<Vec<Received>, EngineError> {
        let epoch = self.epoch();
        self.bob.inboxes(self.now_ms / 1000, 1)?;
        let mut received = Vec::new();
        for item in self.alice.outgoing(self.now_ms / 1000)? {
            received.push(
                self.bob
                    .receive_in(&item.mailbox, item.blob.as_bytes(), epoch)?,
            );
            self.alice.sent(&item.key)?;
        }
        Ok(received)
    }

    /// `data` as the plaintext of a blob in the group's mailbox, sealed to
    /// the group's envelope key: what any member could put there. With
    /// `fix_up`, an input that decodes as a `GroupEnvelope` gets this
    /// group's ID, generation, epoch and alice as its sender, so mutations
    /// reach session lookup and Megolm decryption.
    pub fn group_blob(
        &mut self,
        data: &[u8],
        fix_up: bool,
    ) -> Result<Option<Received>, EngineError> {
        let epoch = self.epoch();
        let info = self.alice.find_group("fuzz")?;
        let group = self.alice.group_by_hex(&info.id)?;
        let mut plaintext = data.to_vec();
        if fix_up && let Ok(mut envelope) = GroupEnvelope::decode(data) {
            envelope.group_id = group.id.to_vec().into();
            envelope.generation = group.current.number;
            envelope.epoch = epoch.get();
            envelope.sender_identity_key = self.alice.me.to_vec().into();
            envelope.sender_user = "alice".into();
            if let Some(record) = self.alice.outbound_record(&group.id)? {
                envelope.session_id = GroupSession::from_pickle(record.pickle).session_id();
            }
            plaintext = envelope.encode_to_vec();
        }
        let Ok(blob) = seal(&group.current.envelope().public(), &plaintext) else {
            return Ok(None);
        };
        let mailbox = group.current.inbox().public().mailbox(epoch);
        self.bob.inboxes(self.now_ms / 1000, 1)?;
        self.bob
            .receive_in(&mailbox, blob.as_bytes(), epoch)
            .map(Some)
    }

    /// A real group message from alice, as the plaintext of its blob (a
    /// seed for the fuzzer).
    pub fn sample_envelope(&mut self, text: &str) -> Result<Vec<u8>, EngineError> {
        self.alice.queue_group_text("fuzz", text, self.now_ms)?;
        let mut sample = Vec::new();
        for (key, value) in self.alice.store.scan_prefix(Tree::Outbox, &[])? {
            let record = records::decode_outbox(&value).map_err(corrupt)?;
            if record.group.is_some() {
                let mut envelope =
                    GroupEnvelope::decode(record.envelope.as_slice()).map_err(corrupt)?;
                envelope.epoch = self.epoch().get();
                sample = envelope.encode_to_vec();
                self.alice.sent(&key)?;
            }
        }
        self.deliver()?;
        Ok(sample)
    }

    /// Bob's view of the group: its history must always load.
    pub fn bob_history(&self) -> Result<Vec<Message>, EngineError> {
        // By ID: an admin's state may rename the group.
        let id = self.alice.find_group("fuzz")?.id;
        self.bob.group_history(&id)
    }

    /// `data`, if it decodes as an Olm payload, sent by alice to bob: group
    /// states, keys, requests and withheld notices with any content.
    /// With `fix_up`, a group body gets this group's ID.
    pub fn olm_payload(&mut self, data: &[u8], fix_up: bool) -> Result<Vec<Received>, EngineError> {
        let Ok(mut payload) = Payload::decode(data) else {
            return Ok(Vec::new());
        };
        if fix_up {
            let id: bytes::Bytes = self
                .alice
                .groups
                .keys()
                .next()
                .map(|id| id.to_vec().into())
                .unwrap_or_default();
            match &mut payload.body {
                Some(payload::Body::GroupState(state)) => state.group_id = id,
                Some(payload::Body::GroupKey(key)) => key.group_id = id,
                Some(payload::Body::GroupKeyRequest(request)) => request.group_id = id,
                Some(payload::Body::GroupKeyWithheld(withheld)) => withheld.group_id = id,
                Some(payload::Body::GroupLeave(leave)) => leave.group_id = id,
                _ => {}
            }
        }
        match self.alice.queue("bob", payload, None) {
            Ok(_) => {}
            Err(EngineError::TooLong(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error),
        }
        self.deliver()
    }
}
