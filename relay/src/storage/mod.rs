//! Storage behind a trait: the relay's protocol code never knows it is sled.
//!
//! A backend keeps three things: blobs (per mailbox, FIFO by a global,
//! strictly increasing sequence number), an expiry index for the TTL purge,
//! and directory slots. It also keeps usage accounting (per-mailbox count and
//! bytes, total bytes) so quota and disk-budget checks cost nothing.
//!
//! Durability is explicit: mutations become durable at the next
//! [`Storage::flush`], which the relay's group commit
//! ([`crate::commit`]) shares across concurrent writers.

mod accounting;
mod memory;
mod sled;

#[cfg(test)]
mod conformance;

pub use self::memory::MemoryStorage;
pub use self::sled::SledStorage;
pub use accounting::Usage;

use bytes::Bytes;
use sotto_proto::{Blob, MailboxId, SlotId};

/// A blob's position in the relay's global order. Strictly increasing across
/// every put, also across restarts; clients use it as their fetch cursor.
pub type Seq = u64;

/// A stored blob as fetch returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    /// Position; fetch cursors are `seq`s.
    pub seq: Seq,
    /// The blob.
    pub blob: Blob,
}

/// A stored directory slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRecord {
    /// Version; every update must raise it.
    pub version: u64,
    /// The ed25519 key that claimed the slot.
    pub owner: [u8; 32],
    /// Opaque, bucket-sized value.
    pub value: Bytes,
}

/// One page of a fetch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchPage {
    /// Blobs in seq order.
    pub blobs: Vec<StoredBlob>,
    /// True if blobs with `seq <= upto` remain after the last one returned.
    pub more: bool,
}

/// What a fetch may return.
#[derive(Clone, Copy, Debug)]
pub struct FetchRange {
    /// Only blobs with seq strictly greater.
    pub after: Seq,
    /// Only blobs with seq at most this (the durable watermark).
    pub upto: Seq,
    /// At most this many blobs.
    pub limit: usize,
    /// At most this many blob bytes (a page always holds at least one blob).
    pub max_bytes: usize,
}

/// A storage backend failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database reported an error.
    #[error("database error: {0}")]
    Db(#[from] ::sled::Error),
    /// A stored record could not be decoded: the data directory is damaged.
    #[error("corrupt record in tree {tree}: {what}")]
    Corrupt {
        /// Which tree.
        tree: &'static str,
        /// What was wrong.
        what: String,
    },
}

/// A relay storage backend. Implementations must be safe to call from many
/// threads; the relay serialises appends itself (see [`crate::commit`]), so
/// `append` never runs concurrently with another `append`.
pub trait Storage: Send + Sync + 'static {
    /// Stores `blob` in `mailbox` until `expires_at` (unix seconds) and
    /// returns its seq, greater than every seq handed out before.
    fn append(&self, mailbox: &MailboxId, blob: &Blob, expires_at: u64) -> Result<Seq, StoreError>;

    /// Blobs of `mailbox` within `range`, oldest first.
    fn fetch(&self, mailbox: &MailboxId, range: FetchRange) -> Result<FetchPage, StoreError>;

    /// Deletes the listed blobs of `mailbox` (others' blobs are untouched
    /// whatever seqs are named); returns how many existed.
    fn delete(&self, mailbox: &MailboxId, seqs: &[Seq]) -> Result<u32, StoreError>;

    /// Deletes up to `limit` blobs whose expiry is at or before `now`;
    /// returns how many were deleted.
    fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, StoreError>;

    /// Count and bytes stored in `mailbox`.
    fn mailbox_usage(&self, mailbox: &MailboxId) -> Usage;

    /// Bytes of blobs and slot values stored in total.
    fn total_bytes(&self) -> u64;

    /// Number of mailboxes holding at least one blob.
    fn mailbox_count(&self) -> usize;

    /// The slot `id`, if it was ever written.
    fn slot_get(&self, id: &SlotId) -> Result<Option<SlotRecord>, StoreError>;

    /// Writes slot `id` (the caller has checked owner and version).
    fn slot_put(&self, id: &SlotId, record: &SlotRecord) -> Result<(), StoreError>;

    /// The highest seq among the blobs present when the backend was opened
    /// (0 if none): everything up to it was read back from disk, so it is
    /// durable. The group commit's watermark starts here.
    fn seq_at_open(&self) -> Seq;

    /// Makes every mutation so far durable (fsync). Blocking.
    fn flush(&self) -> Result<(), StoreError>;
}
