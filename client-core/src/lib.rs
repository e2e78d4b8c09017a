//! `sotto-core`: everything a sotto client does, as a library.
//!
//! Modules (private; their public types are re-exported here, flat).
//! Directories have a `mod.rs` whose `//!` maps their files.
//!
//! - `epoch`: [`Epoch`], the hour-long unit after which mailbox IDs rotate.
//! - `blind`: key blinding (DESIGN §4). [`InboxKey`] / [`InboxPublic`] and
//!   the per-epoch [`BlindedInbox`] that owns a mailbox; senders compute the
//!   same [`MailboxId`](sotto_proto::MailboxId) from the public key alone.
//! - `seal/`: sealed envelopes and padding (DESIGN §5). [`seal`] / [`open`]
//!   hide the sender from the relay and make every blob exactly one bucket;
//!   [`seal_symmetric`] / [`open_symmetric`] seal directory slot values;
//!   [`pad`] / [`unpad`] are the padding on its own.
//! - `device`: this device's keys ([`Device`]: Olm account, envelope key,
//!   request inbox). `card`: signed device cards ([`Card`]), exported as
//!   `sotto-card:` strings. `canonical`: the strict decoding every signed
//!   or pasted structure goes through (one encoding per value).
//! - `tokens/`: anonymous access tokens (DESIGN §7): the types, the relay
//!   calls, the [`TokenWallet`].
//! - `records/`: the engine's data model, shared by the layers above it:
//!   [`Message`], [`Status`], [`Received`], [`EngineError`], a group's
//!   state ([`GroupInfo`]), the contact and outbox records and their
//!   compact binary codec.
//! - `engine/`: 1:1 messaging without I/O ([`Engine`]): contacts, Olm
//!   sessions, outbox, receiving, history, verification.
//!   `group/`: group conversations on the same engine: Megolm sessions
//!   shared over Olm, a group secret per membership generation, one sealed
//!   blob per message in a rotating group mailbox.
//!   `client`: the async driver ([`Client`]) that moves the engine's blobs
//!   to and from a relay on separate send and receive connections.
//! - [`team`]: team key, invite codes, the encrypted directory and roster
//!   (DESIGN §6), and a device's [`Membership`](team::Membership).
//! - `app/`: the whole device for the command line ([`App`]): home
//!   directory, team flows (create, invite, join), send by handle, sync,
//!   groups, safety numbers. `sas`: interactive emoji verification
//!   ([`SasFlow`], [`SasCode`]) over Olm.
//! - `devices/`: a member's own devices in one place: link codes, the
//!   engine's side of linking (link requests, history handover) and the
//!   `sotto device` commands on the [`App`].
//! - `net/`: the QUIC transport to a relay. [`RelayConnection`] pins the
//!   relay certificate ([`RelayAddr`]), pipelines requests and delivers
//!   subscription pushes; [`MailboxSigner`] proves mailbox ownership.
//! - `store/`: the encrypted local store (DESIGN §8). [`Store`] over named
//!   [`Tree`]s, [`SledStore`] and [`MemoryStore`]; every value sealed with
//!   ChaCha20-Poly1305, the key from a 0600 key file or an Argon2id
//!   passphrase ([`KeySource`]); [`Store::blind`] keeps handles out of keys.
//!
//! **Layering.** Modules import only modules below them; there is no
//! import circle (docs/DECISIONS.md, "Client module layering"). Bottom up:
//!
//! 1. `epoch`, `canonical`, `seal`, `store`, `sas`: depend on nothing in
//!    the crate; `blind` on `epoch`; `card` and `net` on those.
//! 2. `device` (keys of this device) and `tokens` (wallet, issuer calls).
//! 3. `records`: the types the engine, groups and devices share.
//! 4. `engine`: the `Engine` state and its 1:1 messaging.
//! 5. `group`, `team`, `client`: each built on the engine (`group` adds
//!    `impl Engine` blocks; the engine dispatches to them by method, never
//!    by import).
//! 6. `app`: the device as the command line drives it.
//! 7. `devices`: both the engine's and the app's side of linking devices.
//!
//! **Test hooks** (`FuzzGroup`, forged directory entries, fixed-randomness
//! sealing, store-value fuzzing) exist only with the `test-support`
//! feature, which the fuzz targets and the test crates enable.

#![warn(missing_docs)]

mod app;
mod app_control;
mod blind;
mod canonical;
mod card;
mod client;
mod device;
mod devices;
mod engine;
mod epoch;
mod files;
mod group;
mod net;
mod records;
mod sas;
mod seal;
mod store;
pub mod team;
mod tokens;

pub use app::{
    App, AppError, Conversation, FileTarget, OutgoingFile, RelayTarget, SAFETY_NUMBER_TAG,
    SasOutcome, SasSession, Sent, safety_number, save_path,
};
pub use blind::{BLIND_PREFIX_TAG, BLIND_TAG, BlindedInbox, InboxKey, InboxPublic};
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub use blind::{BlindingInternals, blinding_internals};
pub use card::{CARD_PREFIX, CARD_TAG, Card, CardError};
pub use client::{
    ANSWER_DELAY_MAX, ANSWER_DELAY_MIN, Access, Client, ClientError, Clock, Cycle,
    MAX_CATCH_UP_EPOCHS, PushTaken, Subscription, SyncReport, system_clock,
};
pub use device::{Device, DeviceError};
pub use devices::{
    Approved, DeviceInfo, DeviceLinkCode, LINK_CONFIRM_INFO, LINK_REQUEST_TAG,
    LINK_REQUEST_TTL_SECS, LINK_VALID_SECS, PendingDevice, REQUEST_INBOX_GRACE_SECS,
    REQUEST_INBOX_ROTATE_SECS, confirmation_code, normalize_code,
};
pub use engine::{
    DeviceChange, DropCounts, Dropped, Engine, EngineError, Message, MessageId, Outgoing,
    PQ_REFRESH_SECS, Query, Received, Status,
};
pub use epoch::{EPOCH_SECS, Epoch};
pub use files::{
    BLOB_LEN as FILE_BLOB_LEN, CHUNK_AAD as FILE_CHUNK_AAD, CHUNK_DATA as FILE_CHUNK_DATA,
    CHUNK_KEY_INFO as FILE_CHUNK_KEY_INFO, FileCache, FileError, FileInfo, FileKey, FileMailbox,
    MAILBOX_KEY_INFO as FILE_MAILBOX_KEY_INFO, MAX_CAPTION as FILE_MAX_CAPTION,
    MAX_MEDIA_TYPE as FILE_MAX_MEDIA_TYPE, MAX_NAME as FILE_MAX_NAME,
    MAX_THUMBNAIL as FILE_MAX_THUMBNAIL, PendingUpload, Progress as FileProgress,
    Resume as UploadResume, THUMBNAIL_SIDE as FILE_THUMBNAIL_SIDE, TransferState, UploadTarget,
    chunk_len as file_chunk_len, delete as delete_file, download as download_file, max_file_size,
    open_chunk, open_file_chunk, padded_chunks, padme, real_chunks, resume_point, sanitize_name,
    save as save_file, seal_chunk, thumbnail as file_thumbnail, upload as upload_file,
};
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub use group::FuzzGroup;
pub use group::{
    Change, DEFAULT_ROTATE_MESSAGES, DEFAULT_ROTATE_SECS, GROUP_ENVELOPE_INFO, GROUP_INBOX_INFO,
    GROUP_PAIRWISE_INFO, GroupId, GroupInfo, Rotation,
};
pub use net::{MailboxSigner, NetError, Pushed, RELAY_SERVER_NAME, RelayAddr, RelayConnection};
pub use records::{
    ActionError, CONTENT_VERSION, Content, ContentError, DELETED_TEXT, FileRef, MAX_REACTION_LEN,
    MAX_REACTIONS, MAX_TIMER_SECS, MIN_TIMER_SECS, UNSUPPORTED_TEXT, check_reaction, check_timer,
    describe_secs, mentions, parse_message_id,
};
pub use sas::{SAS_EMOJI, SAS_INFO, SAS_MAC_INFO, SasCode, SasFlow};
pub use seal::{
    EnvelopePublic, EnvelopeSecret, GROUP_SEAL_INFO, GROUP_SEAL_VERSION, HYBRID_HEADER_LEN,
    HYBRID_SEAL_INFO, HYBRID_SEAL_VERSION, HybridOpened, KEM_CIPHERTEXT_LEN, KEM_PAIRWISE_INFO,
    KEM_PUBLIC_LEN, KEM_SEED_LEN, KemEncapsulation, KemKeyError, KemPublic, KemSecret, OpenError,
    PAIRWISE_SEAL_INFO, PAIRWISE_SEAL_VERSION, PadError, PairwiseKey, SEAL_INFO, SEAL_OVERHEAD,
    SEAL_VERSION, SealError, UnpadError, blob_version, max_hybrid_plaintext_len, max_plaintext_len,
    open, open_hybrid, open_pairwise, open_symmetric, pad, padded_len, seal, seal_hybrid,
    seal_min_bucket, seal_pairwise, seal_symmetric, seal_symmetric_min_bucket, unpad,
};
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub use seal::{
    seal_hybrid_with_ephemeral, seal_pairwise_with_ephemeral, seal_symmetric_with_salt,
    seal_with_ephemeral,
};
pub use store::{
    Batch, BlindId, Entry, KeySource, MAX_KEY_LEN, MAX_VALUE_LEN, MemoryStore, SledStore, Store,
    StoreError, Tree,
};
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub use store::{fuzz_open_value, fuzz_seal_value};
pub use tokens::{
    ACCOUNT_TAG, AccessToken, IssuanceAccount, REVOCATION_TAG, RegistrationToken, RevocationSecret,
    TOKEN_KEY_ID_TAG, TokenError, TokenRequest, TokenWallet, VerifiedTokenKey, bootstrap,
    bootstrap_issuer, mint_device_registration, mint_registrations, refill, register,
    register_device, revoke, revoke_device, token_key, token_key_fingerprint, verify_token_key,
};
