//! A group as stored and shown: its ID, members, generations and their
//! secrets (the keys of its mailbox and envelope derive from them).

use std::collections::HashMap;
use std::sync::Mutex;

use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sotto_proto::MailboxId;
use sotto_proto::client::GroupState;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{EngineError, corrupt};
use crate::{EnvelopeSecret, InboxKey, Store, Tree};

/// A group's 16-byte random ID.
pub type GroupId = [u8; 16];

/// HKDF info deriving the group inbox key's seed from the group secret.
pub const GROUP_INBOX_INFO: &[u8] = b"sotto/group-inbox/v1";
/// HKDF info deriving the group envelope key from the group secret.
pub const GROUP_ENVELOPE_INFO: &[u8] = b"sotto/group-envelope/v1";
/// HKDF info of the secret mixed into a post-quantum group blob's key.
pub const GROUP_PAIRWISE_INFO: &[u8] = b"sotto/group-pq/v1";
/// Default Megolm rotation: after this many messages...
pub const DEFAULT_ROTATE_MESSAGES: u32 = 100;
/// ... or this many seconds (a week), whichever comes first.
pub const DEFAULT_ROTATE_SECS: u64 = 7 * 24 * 3600;

pub(crate) const GROUP_PREFIX: &[u8] = b"group/";

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
    /// Only an admin may set the disappearing-message timer.
    pub timer_admins_only: bool,
}

/// One membership generation: its members and its secret.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Generation {
    #[zeroize(skip)]
    pub(crate) number: u64,
    pub(crate) secret: [u8; 32],
    #[zeroize(skip)]
    pub(crate) members: Vec<String>,
    /// The epoch in which this device learned of the generation.
    #[zeroize(skip)]
    pub(crate) since_epoch: u64,
}

impl Generation {
    pub(crate) fn derive(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, &self.secret)
            .expand(info, out.as_mut())
            .expect("invariant: 32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    pub(crate) fn inbox(&self) -> InboxKey {
        InboxKey::from_seed(*self.derive(GROUP_INBOX_INFO))
    }

    /// The secret mixed into the key of this generation's group blobs
    /// when every member is post-quantum capable (version 4, DESIGN §5.1):
    /// such a blob looks like a 1:1 pairwise blob, and its outer layer is
    /// as post-quantum as the group secret.
    pub(crate) fn pairwise(&self) -> crate::PairwiseKey {
        crate::PairwiseKey::from_bytes(*self.derive(GROUP_PAIRWISE_INFO))
    }

    pub(crate) fn envelope(&self) -> EnvelopeSecret {
        EnvelopeSecret::from_bytes(*self.derive(GROUP_ENVELOPE_INFO))
    }

    pub(crate) fn has(&self, handle: &str) -> bool {
        self.members.iter().any(|m| m == handle)
    }
}

/// A group as stored.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Group {
    pub(crate) id: GroupId,
    pub(crate) name: String,
    pub(crate) admins: Vec<String>,
    pub(crate) current: Generation,
    pub(crate) previous: Option<Generation>,
    pub(crate) rotate_messages: u32,
    pub(crate) rotate_secs: u64,
    /// I was removed: nothing is read or sent any more; history stays.
    pub(crate) left: bool,
    /// Only an admin may set the disappearing-message timer.
    #[serde(default)]
    pub(crate) timer_admins_only: bool,
}

impl Group {
    /// The state its members get (with the current secret).
    pub(crate) fn state(&self) -> GroupState {
        GroupState {
            group_id: self.id.to_vec().into(),
            generation: self.current.number,
            name: self.name.clone(),
            members: self.current.members.clone(),
            admins: self.admins.clone(),
            secret: self.current.secret.to_vec().into(),
            rotate_messages: self.rotate_messages,
            rotate_secs: self.rotate_secs,
            timer_admins_only: self.timer_admins_only,
        }
    }

    pub(crate) fn info(&self) -> GroupInfo {
        GroupInfo {
            id: hex::encode(self.id),
            name: self.name.clone(),
            members: self.current.members.clone(),
            admins: self.admins.clone(),
            generation: self.current.number,
            active: !self.left,
            timer_admins_only: self.timer_admins_only,
        }
    }

    pub(crate) fn generation(&self, number: u64) -> Option<&Generation> {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find(|g| g.number == number)
    }
}

/// The mailboxes handed out by [`Engine::inboxes`](crate::Engine::inboxes)
/// that belong to groups.
pub(crate) type MailboxMap = Mutex<HashMap<MailboxId, (GroupId, u64)>>;

/// Loads every stored group.
pub(crate) fn load_groups(store: &dyn Store) -> Result<HashMap<GroupId, Group>, EngineError> {
    let mut groups = HashMap::new();
    for (_, value) in store.scan_prefix(Tree::Meta, GROUP_PREFIX)? {
        let group: Group = serde_json::from_slice(&value).map_err(corrupt)?;
        groups.insert(group.id, group);
    }
    Ok(groups)
}

/// The history conversation of `group`.
pub(crate) fn conversation_of(group: &Group) -> String {
    conversation(&group.id)
}

pub(crate) fn conversation(id: &GroupId) -> String {
    format!("group/{}", hex::encode(id))
}
