//! `sotto-proto`: the relay wire protocol, shared by the relay and clients.
//!
//! No I/O lives here; both ends feed bytes in and get typed values out.
//!
//! - [`wire`]: the prost messages generated from `proto/sotto.proto`
//!   (`ClientFrame`, `ServerFrame`, ...).
//! - [`frame`](FrameDecoder): `be32(len) || message` framing with a maximum
//!   frame size, as a push-bytes-in / pull-frames-out decoder.
//! - [`Bucket`] and [`Blob`]: the only blob sizes that exist; a blob of any
//!   other size cannot be constructed.
//! - [`MailboxId`], [`BlindedKey`], [`Challenge`]: mailbox IDs and the
//!   signature check that authorizes fetch / ack / subscribe (DESIGN §4).
//! - [`SlotId`] and [`slot_signing_message`]: directory slot writes.
//! - [`Ttl`]: the only blob lifetimes a relay accepts.
//!
//! - [`client`]: the end-to-end formats (cards, envelopes, payloads) that
//!   travel sealed; only clients decode them.
//!
//! Every domain-separation string of the protocol is a `pub const` here.
//!
//! Every public item is documented (`missing_docs`); the docs of [`wire`]
//! and [`client`] are the comments in `proto/*.proto`, so a field's meaning
//! on the wire is written once, next to its definition.

#![warn(missing_docs)]

mod bucket;
mod frame;
mod mailbox;
mod slot;
mod tokens;
mod ttl;

pub use bucket::{Blob, BlobSizeError, Bucket};
pub use frame::{FRAME_HEADER_LEN, FrameDecoder, FrameError, PROTOCOL_MAX_FRAME, encode_frame};
pub use mailbox::{
    AuthError, BlindedKey, CHALLENGE_LEN, Challenge, KeyError, MAILBOX_TAG, MailboxId, REQUEST_TAG,
    request_signing_message,
};
pub use slot::{
    SLOT_TAG, SLOT_TRANSFER_TAG, SlotId, slot_signing_message, slot_transfer_signing_message,
};
pub use tokens::{
    ADMIN_TAG, ISSUE_TAG, REGISTRATION_TAG, REGISTRATION_TOKEN_LEN, TOKEN_ELEMENT_LEN,
    TOKEN_INPUT_LEN, TOKEN_KEY_TAG, TOKEN_OUTPUT_LEN, admin_signing_message, issue_signing_message,
    registration_token_hash, token_key_signing_message,
};
pub use ttl::{Ttl, TtlError};

/// The generated wire messages (package `sotto.relay.v1`).
#[allow(unreachable_pub, clippy::all)]
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/sotto.relay.v1.rs"));
}

/// End-to-end client formats (package `sotto.client.v1`): device cards,
/// envelopes, payloads. The relay never parses these.
#[allow(unreachable_pub, clippy::all)]
pub mod client {
    include!(concat!(env!("OUT_DIR"), "/sotto.client.v1.rs"));
}

pub use prost::Message;

/// ALPN protocol identifier; a relay refuses connections that do not offer it.
pub const ALPN: &[u8] = b"sotto/1";

/// The protocol version carried in `Hello.version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The most seqs one `Ack` may name; a relay refuses longer ones.
pub const MAX_ACK_SEQS: usize = 4_096;
