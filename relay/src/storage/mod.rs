//! Storage behind a trait: the relay's protocol code never knows it is sled.
//!
//! A backend keeps three things: blobs (per mailbox, FIFO by an ID that
//! increases within the mailbox, see `ids`), an expiry index for the TTL
//! purge, and directory slots. It also keeps usage accounting (per-mailbox count and
//! bytes, total bytes) so quota and disk-budget checks cost nothing.
//!
//! For anonymous access (DESIGN §7) it also keeps the issuer state (the
//! token key seed, its generation, the admin key), registration token
//! hashes, issuance accounts (with a count of the device registrations
//! each minted, never which), an index from device revocation hashes to
//! accounts, per-(account, period) issuance counts and the spent-token sets. Nothing issued can be matched to anything redeemed:
//! counts are per period only, and a spent token is stored as the token
//! key's ID and a hash of its input, with no time and no connection data.
//!
//! Durability is explicit: mutations become durable at the next
//! [`Storage::flush`], which the relay's group commit
//! ([`crate::commit`]) shares across concurrent writers.

mod accounting;
mod at_rest;
mod fjall;
mod ids;
mod memory;
mod sled;

#[cfg(test)]
mod conformance;

pub use self::fjall::{FJALL_DIR, FjallStorage};
pub use self::memory::MemoryStorage;
pub use self::sled::SledStorage;
pub use accounting::Usage;

use bytes::Bytes;
use sotto_proto::{Blob, MailboxId, SlotId};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A blob's ID within its mailbox (the wire's `seq`): strictly increasing
/// within the mailbox, also across restarts; clients use it as their fetch
/// cursor. IDs of different mailboxes are not ordered with each other below
/// the minute (see `ids`).
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
    /// Only blobs with seq at most this (the mailbox's durable bound).
    pub upto: Seq,
    /// At most this many blobs.
    pub limit: usize,
    /// At most this many blob bytes (a page always holds at least one blob).
    pub max_bytes: usize,
}

/// The relay's token-issuing state. Holds the seed every token key is
/// derived from, so it is zeroized on drop and has no `Debug`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct IssuerState {
    /// Secret seed; the key of period `p` in generation `g` is derived from
    /// it (`crate::tokens`).
    pub seed: [u8; 32],
    /// Bumped by every revocation, which retires every earlier key at once.
    pub generation: u32,
    /// The admin's relay credential (ed25519), once bootstrapped.
    pub admin_key: Option<[u8; 32]>,
}

/// A minted registration token, stored under the hash of its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Unix seconds, rounded up to the token period.
    pub expires_at: u64,
    /// The issuance account it created, once used.
    pub account: Option<[u8; 32]>,
}

/// An issuance account: a device's relay credential key.
///
/// It never names another account: not the one that minted its
/// registration token, nor the ones it minted tokens for (DESIGN §2: the
/// relay must not be able to link a member's devices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Hash of the registration token that created it (what the admin
    /// revokes by).
    pub registration: [u8; 32],
    /// Revoked accounts get no more tokens.
    pub revoked: bool,
    /// How many registration tokens this account minted for other devices
    /// of its member (a count only, held against the relay's cap).
    pub device_registrations: u32,
    /// `SHA-256("sotto/device-revocation/v1" || secret)` given at
    /// registration, if any: whoever shows the secret may revoke the account.
    pub revocation: Option<[u8; 32]>,
}

impl Account {
    /// A fresh, unrevoked account created with registration token `registration`.
    pub fn new(registration: [u8; 32], revocation: Option<[u8; 32]>) -> Self {
        Self {
            registration,
            revoked: false,
            device_registrations: 0,
            revocation,
        }
    }
}

/// A storage backend failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database reported an error.
    #[error("database error: {0}")]
    Db(#[from] ::sled::Error),
    /// The LSM engine (`storage.engine = "fjall"`) reported an error.
    #[error("database error: {0}")]
    Fjall(#[from] ::fjall::Error),
    /// Syncing the database files to disk failed.
    #[error("cannot sync the data directory to disk: {0}")]
    Sync(#[from] std::io::Error),
    /// This backend keeps no token state (a wrapper in a test, say).
    #[error("this storage backend does not support {0}")]
    Unsupported(&'static str),
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
    /// Stores `blob`, put at `now` (unix seconds), in `mailbox` until
    /// `expires_at` and returns its ID, greater than every ID handed out
    /// in `mailbox` before.
    fn append(
        &self,
        mailbox: &MailboxId,
        blob: &Blob,
        now: u64,
        expires_at: u64,
    ) -> Result<Seq, StoreError>;

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

    /// Number of blobs stored, for metrics; `None` if the backend does not
    /// count them.
    fn blob_count(&self) -> Option<u64> {
        None
    }

    /// The slot `id`, if it was ever written.
    fn slot_get(&self, id: &SlotId) -> Result<Option<SlotRecord>, StoreError>;

    /// Writes slot `id` (the caller has checked owner and version).
    fn slot_put(&self, id: &SlotId, record: &SlotRecord) -> Result<(), StoreError>;

    /// Makes every mutation so far durable (fsync). Blocking.
    fn flush(&self) -> Result<(), StoreError>;

    // Anonymous access tokens. The defaults refuse, so a backend that wraps
    // another for a test need not implement them; both real backends do.
    // The relay serialises check-then-write sequences itself.

    /// The issuer state, if it was ever written.
    fn issuer_state(&self) -> Result<Option<IssuerState>, StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// Replaces the issuer state.
    fn set_issuer_state(&self, _state: &IssuerState) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// Stores freshly minted registration tokens: (hash, expires_at).
    fn put_registrations(&self, _tokens: &[([u8; 32], u64)]) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// Forgets registration tokens that expired unused by `now`; returns
    /// how many. Used ones stay: they name the account an admin revokes.
    fn drop_unused_registrations(&self, _now: u64) -> Result<usize, StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// The registration token with this hash.
    fn registration(&self, _hash: &[u8; 32]) -> Result<Option<Registration>, StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// Atomically marks registration `hash` used by `account_key`, creates
    /// that (unrevoked) account and, with a `revocation` hash, indexes the
    /// account under it. The caller has checked that the hash is unused.
    fn register_account(
        &self,
        _hash: &[u8; 32],
        _account_key: &[u8; 32],
        _revocation: Option<&[u8; 32]>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// The key of the account registered with this revocation hash.
    fn account_by_revocation(&self, _hash: &[u8; 32]) -> Result<Option<[u8; 32]>, StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// Sets how many device registrations an existing account minted.
    fn set_device_registrations(
        &self,
        _account_key: &[u8; 32],
        _count: u32,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// The issuance account with this key.
    fn account(&self, _account_key: &[u8; 32]) -> Result<Option<Account>, StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// Marks an existing account revoked.
    fn revoke_account(&self, _account_key: &[u8; 32]) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// Tokens issued to `account_key` in `period` so far.
    fn issued(&self, _account_key: &[u8; 32], _period: u64) -> Result<u32, StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// Sets the tokens issued to `account_key` in `period`.
    fn set_issued(
        &self,
        _account_key: &[u8; 32],
        _period: u64,
        _count: u32,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// Forgets issuance counts of periods before `period`; returns how many.
    fn drop_issued_before(&self, _period: u64) -> Result<usize, StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// Records a token of `key_id` with input hash `input_hash` as spent;
    /// false if it already was. Atomic: two concurrent spends of one token
    /// cannot both succeed.
    fn spend_token(&self, _key_id: u64, _input_hash: &[u8; 32]) -> Result<bool, StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }

    /// Drops the spent sets of every key ID below `key_id`; returns how
    /// many records went.
    fn drop_spent_before(&self, _key_id: u64) -> Result<usize, StoreError> {
        Err(StoreError::Unsupported("tokens"))
    }
}
