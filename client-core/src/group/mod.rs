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
//!
//! Where each part lives (every file extends the [`Engine`]):
//!
//! - `mod.rs`: the stored session records, store keys, finding a group
//!   by name; the group state itself ([`GroupInfo`], the generations and
//!   secrets) is defined in `crate::records`, below the engine that holds
//!   it.
//! - `membership`: create a group, add and remove members, publish a new
//!   generation, apply a [`GroupState`] or a leave.
//! - `keys`: Megolm session keys — my outbound session, sharing it,
//!   answering requests, withheld keys, unlocking waiting messages.
//! - `messages`: encrypt and seal a group message, receive and decrypt one.
//! - `changes`: react to, edit or delete a message by its ID, 1:1 or in
//!   a group ([`Change`]).
//! - `mailboxes`: the group mailboxes to read per epoch and their cursors.
//! - `handover`: what a newly approved device of mine gets to follow my
//!   groups.
//! - `fuzz` (feature `test-support`): [`FuzzGroup`], a fixed group for the
//!   fuzz targets.

mod changes;
#[cfg(feature = "test-support")]
mod fuzz;
mod handover;
mod keys;
mod mailboxes;
mod membership;
mod messages;

pub use crate::records::{
    DEFAULT_ROTATE_MESSAGES, DEFAULT_ROTATE_SECS, GROUP_ENVELOPE_INFO, GROUP_INBOX_INFO,
    GROUP_PAIRWISE_INFO, GroupId, GroupInfo, Rotation,
};
pub(crate) use crate::records::{GROUP_PREFIX, Generation, Group, conversation};
pub use changes::Change;
#[cfg(feature = "test-support")]
pub use fuzz::FuzzGroup;

use serde::{Deserialize, Serialize};
use sotto_proto::client::{GroupKeyWithheld, group_key_withheld, payload};
use vodozemac::megolm::{GroupSessionPickle, InboundGroupSessionPickle};
use zeroize::Zeroizing;

use crate::engine::{Engine, EngineError, corrupt};

const GROUP_ENVELOPE_VERSION: u32 = 1;
/// The previous generation's mailbox is still read for this many epochs
/// after a change, so messages its members sent before they heard of the
/// change arrive.
const GRACE_EPOCHS: u64 = 2;

const OUTBOUND_PREFIX: &[u8] = b"gout/";
const INBOUND_PREFIX: &[u8] = b"gin/";
const PENDING_PREFIX: &[u8] = b"gpend/";
const REQUESTED_PREFIX: &[u8] = b"greq/";

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
    content: crate::records::Content,
    sent_at: u64,
}
