//! The engine's data model, below every layer that uses it: the types the
//! engine, groups and devices share, and how they are stored.
//!
//! - `message`: [`Message`], [`Status`], [`Received`], [`Dropped`],
//!   [`EngineError`], and the contact and outbox records as stored.
//! - `group`: a group's state ([`GroupInfo`], generations, secrets).
//! - `keys`: store keys written by one layer and read by another.
//! - `content`: the versioned message content ([`Content`]: text or
//!   reply, reaction, edit, delete) as typed values, and its checks.
//! - `codec`: the compact binary encoding of the hot records (history,
//!   outbox, contacts), reading old JSON ones too.
//!
//! This module imports nothing above the store, the keys and the cards, so
//! `engine`, `group` and `devices` can all depend on it without depending
//! on each other.

mod codec;
mod content;
mod group;
mod keys;
mod message;

pub(crate) use codec::{
    RecordError, decode_contact, decode_message, decode_outbox, encode_contact, encode_message,
    encode_outbox,
};
pub use content::{
    ActionError, CONTENT_VERSION, Content, ContentError, DELETED_TEXT, MAX_REACTION_LEN,
    MAX_REACTIONS, MAX_TIMER_SECS, MIN_TIMER_SECS, UNSUPPORTED_TEXT, check_reaction, check_timer,
    describe_secs, mentions, parse_message_id,
};
pub use group::{
    DEFAULT_ROTATE_MESSAGES, DEFAULT_ROTATE_SECS, GROUP_ENVELOPE_INFO, GROUP_INBOX_INFO,
    GROUP_PAIRWISE_INFO, GroupId, GroupInfo, Rotation,
};
pub(crate) use group::{
    GROUP_PREFIX, Generation, Group, MailboxMap, conversation, conversation_of, load_groups,
};
pub(crate) use keys::{ACCOUNT_REPORT_PREFIX, LAST_SEEN_PREFIX, MEMBER_STATE, SUCCESSION_PREFIX};
pub(crate) use message::{
    ContactRecord, OutboxRecord, corrupt, random_id, split_status_record, status_record, ttl_for,
};
pub use message::{
    DropCounts, Dropped, EngineError, FileRef, Message, MessageId, Outgoing, Received, Status,
};
