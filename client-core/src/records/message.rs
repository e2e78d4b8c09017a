//! The engine's data: messages and their statuses, what a received blob
//! turned out to be, the engine's error, and the contact and outbox
//! records as stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use sotto_proto::{Blob, MailboxId};

use crate::card::CardError;
use crate::device::DeviceError;
use crate::{SealError, StoreError, records};

/// A 16-byte random message ID.
pub type MessageId = [u8; 16];

/// Where a message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Mine, in the outbox: not yet accepted by the relay.
    Queued,
    /// Mine, stored durably by the relay.
    Sent,
    /// Mine, never sent: I was removed from the group before it went out.
    Unsent,
    /// Mine, the recipient's device has it.
    Delivered,
    /// Mine, the recipient read it.
    Read,
    /// Theirs.
    Received,
    /// Theirs, in a group, but the sender's session key has not arrived
    /// yet: it was asked for and the text appears when it does.
    Waiting,
    /// Theirs, in a group, and the sender will not share its key (it was
    /// sent before I joined): shown as such, never as an error.
    Withheld,
}

/// A message in the local history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Hex message ID (the same on every device that has it).
    pub id: String,
    /// The other member of the conversation.
    pub peer: String,
    /// Who wrote it.
    pub from: String,
    /// Whether I wrote it.
    pub from_me: bool,
    /// The text.
    pub text: String,
    /// Sender clock, unix milliseconds.
    pub sent_at: u64,
    /// Delivery state.
    pub status: Status,
    /// The group's name, for a group message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The hex ID of the message it replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Who reacted with what: emoji → the handles of those who did.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reactions: BTreeMap<String, BTreeSet<String>>,
    /// When its author last edited it (author's clock, unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<u64>,
    /// Its author deleted it for everyone: the text is gone, a stub stays.
    #[serde(default)]
    pub deleted: bool,
    /// A group message whose text mentions me (`@my-handle`).
    #[serde(default)]
    pub mentions_me: bool,
    /// When every device deletes it (disappearing messages; sender's
    /// clock, unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// The file it carries (its text is the caption); the file key stays
    /// in the store, never here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRef>,
}

/// What a message shows of the file it carries (issue 21): no key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The name as the sender gave it (sanitized when saved).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Media type (empty: unknown).
    pub media_type: String,
    /// Chunks in its mailbox, dummies included.
    pub chunks: u64,
    /// A thumbnail came with it.
    #[serde(default)]
    pub has_thumbnail: bool,
}

impl Message {
    /// A message with no reply, reaction, edit or mention.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn plain(
        id: String,
        peer: String,
        from: String,
        from_me: bool,
        text: String,
        sent_at: u64,
        status: Status,
        group: Option<String>,
    ) -> Self {
        Self {
            id,
            peer,
            from,
            from_me,
            text,
            sent_at,
            status,
            group,
            reply_to: None,
            reactions: BTreeMap::new(),
            edited_at: None,
            deleted: false,
            mentions_me: false,
            expires_at: None,
            file: None,
        }
    }

    /// Whether its author edited it.
    pub fn edited(&self) -> bool {
        self.edited_at.is_some()
    }

    /// How many reacted with each emoji.
    pub fn reaction_counts(&self) -> BTreeMap<&str, usize> {
        self.reactions
            .iter()
            .map(|(emoji, by)| (emoji.as_str(), by.len()))
            .collect()
    }
}

/// Something that needs to reach the relay.
#[derive(Debug)]
pub struct Outgoing {
    /// Outbox entry to remove once the relay acknowledged the put.
    pub key: Vec<u8>,
    /// Where to put it.
    pub mailbox: MailboxId,
    /// The sealed, bucket-sized blob.
    pub blob: Blob,
    /// The relay TTL to ask for (0: the relay's default); shorter for a
    /// disappearing message.
    pub ttl_secs: u32,
}

/// What a received blob turned out to be.
#[derive(Debug)]
pub enum Received {
    /// A new message, now in the history.
    Message(Message),
    /// A message in the history changed: a reaction, an edit or a delete
    /// for everyone was applied to it (the message as it is now).
    Updated(Message),
    /// A receipt; the listed messages of mine changed status.
    Receipt,
    /// A step of an interactive verification, kept in the store for the
    /// verifying command to pick up.
    Verification,
    /// Group messages that waited for their session key and are now
    /// readable (or known to be withheld).
    Unlocked(Vec<Message>),
    /// Group membership or a group session key, applied.
    Group,
    /// A new team directory key, kept for the team layer to check (it must
    /// be signed by the team key) and apply; or my member state from one
    /// of my devices (a link approval, a new user key).
    Team,
    /// A new device asks to be linked to me; it waits for
    /// `sotto device approve`.
    LinkRequest,
    /// Part of my history, from the device that approved this one.
    History {
        /// Which part (1-based).
        index: u32,
        /// Of how many.
        total: u32,
        /// Messages it held.
        messages: usize,
    },
    /// A message seen before (a redelivery or a replay): ignored.
    Duplicate,
    /// Not accepted (see [`Dropped`]); counted, never shown.
    Dropped(Dropped),
}

/// Why a blob was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// The sealed envelope did not open (garbage, wrong key, tampered).
    Unsealable,
    /// The envelope does not decode or is addressed to another device.
    BadEnvelope,
    /// The sender is not one of my contacts, or claims another user.
    UnknownSender,
    /// Olm could not decrypt it.
    Undecryptable,
    /// The payload does not match its envelope.
    Mismatch,
    /// About a group I am not in, or from someone who may not say it.
    Group,
    /// A reaction, edit or delete that names an unknown message, one in
    /// another conversation, or (edit, delete) one by another author.
    Refused,
    /// A classical-only envelope (version 1) from a contact device whose
    /// card has an ML-KEM key: a downgrade, refused before Olm touched it.
    Downgrade,
}

/// An engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The local store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The device keys could not be loaded or saved.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// No contact with that handle.
    #[error("unknown contact \"{0}\"; import their contact card first")]
    UnknownContact(String),
    /// The card is invalid.
    #[error(transparent)]
    Card(#[from] CardError),
    /// The card is this device's own.
    #[error("that is your own contact card")]
    OwnCard,
    /// The message is too long for one blob.
    #[error("the message is too long to send in one piece ({0} bytes); send it as an attachment")]
    TooLong(usize),
    /// Sealing failed.
    #[error("cannot seal the message: {0}")]
    Seal(#[from] SealError),
    /// Olm failed to encrypt.
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    /// Stored state is damaged.
    #[error("the local store holds a damaged record: {0}")]
    Corrupt(String),
    /// No group by that name or ID.
    #[error("no group \"{0}\"; `sotto group list` shows yours")]
    UnknownGroup(String),
    /// Several groups have that name.
    #[error("several groups are called \"{name}\"; name one by ID: {}", ids.join(", "))]
    AmbiguousGroup {
        /// The name given.
        name: String,
        /// The IDs of the groups so called.
        ids: Vec<String>,
    },
    /// I already have a group by that name.
    #[error("you already have a group called \"{0}\"; choose another name")]
    GroupNameTaken(String),
    /// Only a group's admins change its membership.
    #[error("only the admins of \"{0}\" can change who is in it")]
    NotGroupAdmin(String),
    /// I was removed from the group.
    #[error("you are no longer a member of \"{0}\"")]
    NotInGroup(String),
    /// A group change that changes nothing or is not allowed.
    #[error("{0}")]
    GroupChange(String),
    /// A reply, reaction, edit or delete that cannot be made.
    #[error(transparent)]
    Action(#[from] super::ActionError),
}

/// A contact as stored (binary, see `records.rs`; JSON in old homes).
#[derive(Serialize, Deserialize)]
pub(crate) struct ContactRecord {
    pub(crate) signed_card: Vec<u8>,
    pub(crate) their_inbox: [u8; 32],
    pub(crate) my_inbox_seed: [u8; 32],
}

/// An outbox entry as stored (binary, see `records.rs`; JSON in old
/// homes): the envelope without its epoch, which is set when the blob is
/// sealed for delivery (a retry after a long outage goes to the
/// recipient's current mailbox).
#[derive(Serialize, Deserialize)]
pub(crate) struct OutboxRecord {
    pub(crate) peer: String,
    pub(crate) envelope: Vec<u8>,
    /// Hex group ID, for a group message (`envelope` is then a
    /// `GroupEnvelope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<String>,
    /// The message ID (for a group message hidden inside Megolm). Empty in
    /// 1:1 entries of old homes: the envelope has it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) message_id: Vec<u8>,
    /// The relay TTL to ask for (0: the relay's default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) ttl_secs: u32,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// The relay TTL for a message that disappears `expires_in_secs` after it
/// was sent: the shortest TTL the protocol allows that is not shorter
/// (the longest one for timers beyond it); 0 (the relay's default) for a
/// message that does not disappear.
pub(crate) fn ttl_for(expires_in_secs: u64) -> u32 {
    if expires_in_secs == 0 {
        return 0;
    }
    sotto_proto::Ttl::ALL
        .into_iter()
        .find(|ttl| u64::from(ttl.secs()) >= expires_in_secs)
        .unwrap_or(sotto_proto::Ttl::MAX)
        .secs()
}

pub(crate) fn corrupt(e: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt(e.to_string())
}

pub(crate) fn random_id() -> MessageId {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("invariant: the OS random number generator works");
    id
}

/// Counters of dropped blobs, by reason.
#[derive(Debug, Default, Clone)]
pub struct DropCounts {
    /// Per reason.
    pub by_reason: HashMap<String, u64>,
}

/// The record of one of my messages in the `Seen` tree, under
/// `"out" || message ID`: its history key, then its delivery status.
/// Keeping the status here, not in the history entry, makes a status
/// change (sent, delivered, read) a rewrite of 25 bytes instead of a read
/// and rewrite of the whole message.
pub(crate) fn status_record(history_key: &[u8], status: Status) -> Vec<u8> {
    [history_key, &[status.to_byte()]].concat()
}

/// Splits a [`status_record`]. Old homes stored the history key alone
/// (`None`: the status is the history entry's).
pub(crate) fn split_status_record(
    record: &[u8],
) -> Result<(&[u8], Option<Status>), records::RecordError> {
    const HISTORY_KEY_LEN: usize = crate::BlindId::LEN + 8;
    match record.len() {
        HISTORY_KEY_LEN => Ok((record, None)),
        len if len == HISTORY_KEY_LEN + 1 => {
            let (key, status) = record.split_at(HISTORY_KEY_LEN);
            Ok((key, Some(Status::from_byte(status[0])?)))
        }
        _ => Err(records::RecordError::Unknown("status record length")),
    }
}
