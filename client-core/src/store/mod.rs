//! The client's encrypted local store.
//!
//! Everything a client keeps — identity, contacts, vodozemac pickles,
//! history, the outbox, sync cursors, the set of seen message IDs — goes
//! through the [`Store`] trait: a small key-value store with a fixed set of
//! named [`Tree`]s, atomic multi-tree [`Batch`]es and an explicit, durable
//! [`Store::flush`]. Two backends implement it: [`SledStore`] (the real one,
//! a sled database in a directory) and [`MemoryStore`] (tests and ephemeral
//! clients). Both encrypt the same way, so one conformance suite
//! (`conformance.rs`) runs against both.
//!
//! # Decisions
//!
//! **Values** are sealed with ChaCha20-Poly1305 under a subkey of the
//! store's master key, a fresh random nonce per write, and associated data
//! naming the tree and the key (`crypt.rs`). A value moved, swapped or
//! replayed into another slot by someone who can write the disk fails to
//! open with [`StoreError::Decrypt`]; a truncated one gives
//! [`StoreError::Corrupt`]. Neither ever panics. A value *rolled back* to an
//! older ciphertext of the same slot is not detected (that would need a
//! MAC over the whole database); the protocol layers above treat the store
//! as the device's own memory, and an attacker who can rewrite it can also
//! replace the binary.
//!
//! **Keys are stored in the clear**, and that is a contract on callers.
//! Hashing every key with a MAC would hide them but destroy the order that
//! history and outbox need for prefix scans, so instead keys must never
//! contain content: no handles, names, text or public keys — only counters,
//! random IDs, and [`BlindId`]s. [`Store::blind`] turns any identifier
//! (a handle, a contact's device key) into a 16-byte keyed HMAC-SHA256
//! under a subkey of the store key, so a history key like
//! `blind(contact) || be64(seq)` keeps per-contact order while a reader of
//! the raw files learns only how many entries each pseudonymous contact has
//! and when they change. (An unkeyed hash would not do: a team's handles
//! are few enough to try them all.) Value lengths are not padded and do
//! leak; a test reads every byte of a sled directory and finds neither a
//! stored message nor a handle.
//!
//! **Layout**: all trees share one sled tree, each raw key prefixed with
//! its tree's one-byte tag, so a [`Batch`] over several trees is a single
//! `sled::Batch` — atomic without sled's transaction machinery, and the
//! cheapest path for the hot "store a received message + mark it seen" write.
//! Within a batch, later operations on the same slot win.
//!
//! **Durability**: writes reach the OS at once but are durable only after
//! [`Store::flush`] (an fsync). Callers flush before acknowledging anything
//! to the relay, and may share one flush across many writes.
//!
//! **Keys** come from a 0600 key file or an Argon2id passphrase; see
//! `keyfile.rs` for both and for the header file that detects a wrong one.
//!
//! Modules: `crypt` (sealing, blinding, verifier), `keyfile` (key sources,
//! header), `sled` and `memory` (backends), `conformance` (shared tests).

mod crypt;
mod keyfile;
mod memory;
mod sled;

#[cfg(test)]
mod conformance;

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crypt::Crypt;
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub use crypt::{fuzz_open_value, fuzz_seal_value};
pub use keyfile::KeySource;
pub use memory::MemoryStore;
pub use sled::SledStore;

/// Longest key a store accepts, in bytes. Keys are IDs, not content.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest value a store accepts, in bytes (plaintext). Attachments are
/// stored in chunks well below this.
pub const MAX_VALUE_LEN: usize = 16 * 1024 * 1024;

/// The store's namespaces. A closed set, so callers cannot typo a name and
/// every tree has a stable one-byte tag on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    /// Store-level bookkeeping (schema version, counters).
    Meta,
    /// This device's own keys and account pickle.
    Identity,
    /// Known members and their devices.
    Contacts,
    /// Olm and Megolm session pickles.
    Sessions,
    /// Message history, keyed by conversation and sequence number.
    History,
    /// Messages not yet durably acknowledged by the relay.
    Outbox,
    /// Per-mailbox fetch cursors.
    Cursors,
    /// IDs of messages already received, for deduplication.
    Seen,
}

impl Tree {
    /// Every tree, in tag order.
    pub const ALL: [Tree; 8] = [
        Tree::Meta,
        Tree::Identity,
        Tree::Contacts,
        Tree::Sessions,
        Tree::History,
        Tree::Outbox,
        Tree::Cursors,
        Tree::Seen,
    ];

    /// The tree's name, as used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Identity => "identity",
            Tree::Contacts => "contacts",
            Tree::Sessions => "sessions",
            Tree::History => "history",
            Tree::Outbox => "outbox",
            Tree::Cursors => "cursors",
            Tree::Seen => "seen",
        }
    }

    /// The tree's on-disk tag: the first byte of each of its raw keys and
    /// part of each value's associated data. Never renumber.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Tree::Meta => 1,
            Tree::Identity => 2,
            Tree::Contacts => 3,
            Tree::Sessions => 4,
            Tree::History => 5,
            Tree::Outbox => 6,
            Tree::Cursors => 7,
            Tree::Seen => 8,
        }
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A keyed pseudonym for an identifier, safe to use in store keys.
/// See [`Store::blind`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlindId(pub(crate) [u8; BlindId::LEN]);

impl BlindId {
    /// Length in bytes: 128 bits, ample against collisions in one store.
    pub const LEN: usize = 16;

    /// The bytes, for building keys.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

impl AsRef<[u8]> for BlindId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for BlindId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A short fingerprint only, as for every identifier in logs.
        write!(f, "BlindId({}…)", hex::encode(&self.0[..4]))
    }
}

/// An atomic group of puts and deletes, possibly across several trees.
/// Holds plaintext values (zeroized on drop), so no `Debug`.
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

enum Op {
    Put {
        tree: Tree,
        key: Vec<u8>,
        value: Zeroizing<Vec<u8>>,
    },
    Delete {
        tree: Tree,
        key: Vec<u8>,
    },
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` in `tree` to `value` when the batch is applied. A
    /// history write also drops the search group covering the entry
    /// ([`search_group_key`]).
    pub fn put(&mut self, tree: Tree, key: impl Into<Vec<u8>>, value: &[u8]) -> &mut Self {
        let key = key.into();
        self.drop_search_group(tree, &key);
        self.ops.push(Op::Put {
            tree,
            key,
            value: Zeroizing::new(value.to_vec()),
        });
        self
    }

    /// Removes `key` from `tree` when the batch is applied. A history
    /// delete also drops the search group covering the entry, so a
    /// deleted or expired text leaves the search index in the same atomic
    /// write, and the conversation's counted unread messages
    /// ([`UNREAD_PREFIX`]), which are counted again when next asked for
    /// (an operation later in the batch may put a corrected count).
    pub fn delete(&mut self, tree: Tree, key: impl Into<Vec<u8>>) -> &mut Self {
        let key = key.into();
        self.drop_search_group(tree, &key);
        if tree == Tree::History
            && key.len() == BlindId::LEN + 8
            && let Some(blind) = key.get(..BlindId::LEN)
        {
            self.ops.push(Op::Delete {
                tree: Tree::Meta,
                key: [UNREAD_PREFIX, blind].concat(),
            });
        }
        self.ops.push(Op::Delete { tree, key });
        self
    }

    fn drop_search_group(&mut self, tree: Tree, key: &[u8]) {
        if tree == Tree::History
            && let Some(group) = search_group_key(key)
        {
            self.ops.push(Op::Delete {
                tree: Tree::Meta,
                key: group,
            });
        }
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Checks and encrypts every operation before anything is written, so
    /// a batch with one bad entry writes nothing.
    fn seal(self, crypt: &Crypt) -> Result<Vec<RawOp>, StoreError> {
        self.ops
            .into_iter()
            .map(|op| match op {
                Op::Put { tree, key, value } => {
                    check_value(tree, &value)?;
                    let raw = raw_key(tree, &key)?;
                    Ok(RawOp::Put(raw, crypt.seal(tree, &key, &value)?))
                }
                Op::Delete { tree, key } => Ok(RawOp::Delete(raw_key(tree, &key)?)),
            })
            .collect()
    }
}

/// A checked, encrypted batch operation on a raw (tag-prefixed) key.
enum RawOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// Meta-tree key prefix of the search index (`engine/search.rs`): one
/// sealed value per conversation and [`SEARCH_GROUP`] consecutive history
/// positions, holding the lowercased texts of those entries. Derived data,
/// rebuilt from the history whenever it is missing.
pub(crate) const SEARCH_PREFIX: &[u8] = b"search/";
/// History positions per search group.
pub(crate) const SEARCH_GROUP: u64 = 256;

/// Meta-tree key prefix of each conversation's counted unread messages
/// (`engine/history.rs`): `UNREAD_PREFIX || blind(conversation)` holds
/// `be64(read mark) || be64(head) || be64(count)`, `count` messages from
/// others between the read mark (excluded) and history position `head`
/// (included). Derived data: a history delete in the conversation drops
/// it ([`Batch::delete`]), and it is counted again from the read mark.
pub(crate) const UNREAD_PREFIX: &[u8] = b"unread/";

/// The Meta key of the search group that covers history key `key`
/// (`blind(conversation) || be64(seq)`): `SEARCH_PREFIX || blind ||
/// be64(seq / SEARCH_GROUP)`. `None` for a key of another shape.
pub(crate) fn search_group_key(history_key: &[u8]) -> Option<Vec<u8>> {
    if history_key.len() != BlindId::LEN + 8 {
        return None;
    }
    let (blind, seq) = history_key.split_at(BlindId::LEN);
    let seq = u64::from_be_bytes(seq.try_into().ok()?);
    Some([SEARCH_PREFIX, blind, &(seq / SEARCH_GROUP).to_be_bytes()].concat())
}

/// The raw key of (`tree`, `key`): the tree's tag, then the key.
fn raw_key(tree: Tree, key: &[u8]) -> Result<Vec<u8>, StoreError> {
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::KeyTooLong {
            tree,
            len: key.len(),
        });
    }
    let mut raw = Vec::with_capacity(1 + key.len());
    raw.push(tree.tag());
    raw.extend_from_slice(key);
    Ok(raw)
}

fn check_value(tree: Tree, value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(StoreError::ValueTooLarge {
            tree,
            len: value.len(),
        });
    }
    Ok(())
}

/// The raw range `scan_last` walks backwards: from (`tree`, `prefix`) up
/// to (`tree`, `before`) excluded, or to the end of the prefix. Returns
/// the raw prefix too, which every key in the walk must start with.
fn last_range(
    tree: Tree,
    prefix: &[u8],
    before: Option<&[u8]>,
) -> Result<(Vec<u8>, std::ops::Bound<Vec<u8>>), StoreError> {
    use std::ops::Bound;
    let raw_prefix = raw_key(tree, prefix)?;
    let end = match before {
        Some(before) => Bound::Excluded(raw_key(tree, before)?),
        None => prefix_successor(&raw_prefix).map_or(Bound::Unbounded, Bound::Excluded),
    };
    Ok((raw_prefix, end))
}

/// The smallest key greater than every key starting with `prefix`, if
/// there is one (there is none for an all-0xff prefix).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// One entry of a prefix scan: the key (without tree tag) and the value.
pub type Entry = (Vec<u8>, Zeroizing<Vec<u8>>);

/// The client's local key-value store. Every value is encrypted at rest;
/// keys are stored in the clear and must not carry content (see the module
/// docs and [`Store::blind`]). Object-safe: hold it as `Arc<dyn Store>`.
pub trait Store: Send + Sync {
    /// The value at `key` in `tree`, decrypted, or `None`.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;

    /// Sets `key` in `tree` to `value`.
    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Removes `key` from `tree`; removing a missing key is not an error.
    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError>;

    /// Every entry of `tree` whose key starts with `prefix`, in ascending
    /// byte order of the keys. Fails as a whole if any value fails to open.
    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError>;

    /// At most `limit` entries of `tree` under `prefix` whose keys come
    /// after `after` (exclusive), ascending: reading on from a mark without
    /// opening what lies before it. `after` starts with `prefix` (a key
    /// below the prefix yields nothing).
    fn scan_after(
        &self,
        tree: Tree,
        prefix: &[u8],
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// The last `limit` entries of `tree` under `prefix` whose keys come
    /// before `before` (exclusive; `None`: the end), ascending: a page of
    /// a conversation, newest last.
    fn scan_last(
        &self,
        tree: Tree,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// The greatest key of `tree` that starts with `prefix`, without
    /// reading its value: where a counter resumes after a restart (the
    /// last history entry of a conversation, the last outbox entry).
    fn last_key(&self, tree: Tree, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies every operation of `batch`, or none of them.
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;

    /// Makes every write so far durable (fsync). A no-op in memory.
    fn flush(&self) -> Result<(), StoreError>;

    /// A keyed pseudonym for `id` (a handle, a device key, a group ID) to
    /// use in keys instead of `id` itself: the first 16 bytes of
    /// HMAC-SHA256 under a subkey of this store's key. Stable for the life
    /// of the store, unlinkable to `id` without the key.
    fn blind(&self, id: &[u8]) -> BlindId;
}

/// Everything that can go wrong opening or using a [`Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The passphrase does not unlock this store.
    #[error("the store passphrase is wrong")]
    WrongPassphrase,

    /// The key file holds a different key from the one the store was
    /// created with.
    #[error(
        "the key file {} does not unlock this store; restore the key file the store was created with",
        .path.display()
    )]
    WrongKeyFile {
        /// The key file that was tried.
        path: PathBuf,
    },

    /// A new store was asked to use an empty passphrase.
    #[error("the store passphrase is empty; choose a non-empty passphrase")]
    EmptyPassphrase,

    /// The key file can be read by group or others.
    #[error(
        "the key file {} is readable by other users (mode {mode:03o}); run `chmod 600 {}` and try again",
        .path.display(), .path.display()
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The store exists but its key file does not.
    #[error(
        "the key file {} is missing; restore it from a backup (the store cannot be read without it)",
        .path.display()
    )]
    KeyFileMissing {
        /// Where the key file was expected.
        path: PathBuf,
    },

    /// The key file is not 32 bytes long.
    #[error(
        "the key file {} is not a sotto store key (expected 32 bytes, found {len}); restore the right file",
        .path.display()
    )]
    KeyFileMalformed {
        /// The key file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },

    /// The store was created with the other kind of key source.
    #[error("this store is unlocked with a {expected}, not a {given}")]
    KeySourceMismatch {
        /// The kind the store was created with.
        expected: &'static str,
        /// The kind that was offered.
        given: &'static str,
    },

    /// The plaintext header file is missing, unreadable or out of bounds.
    #[error(
        "the store header {} is damaged ({reason}); restore it from a backup",
        .path.display()
    )]
    Header {
        /// The header file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Deriving the key from the passphrase failed.
    #[error("deriving the store key from the passphrase failed: {0}")]
    Kdf(String),

    /// A value failed authentication: tampered with, moved to another key,
    /// or written under another key.
    #[error(
        "a value in the `{tree}` tree failed to decrypt; the store was damaged or tampered with"
    )]
    Decrypt {
        /// The tree the value was read from.
        tree: Tree,
    },

    /// A value is structurally malformed (truncated, unknown version).
    #[error("a value in the `{tree}` tree is corrupt ({reason})")]
    Corrupt {
        /// The tree the value was read from.
        tree: Tree,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A key longer than [`MAX_KEY_LEN`] (a caller bug).
    #[error("a key for the `{tree}` tree is {len} bytes long; the limit is {MAX_KEY_LEN}")]
    KeyTooLong {
        /// The tree.
        tree: Tree,
        /// The key's length.
        len: usize,
    },

    /// A value larger than [`MAX_VALUE_LEN`] (a caller bug).
    #[error("a value for the `{tree}` tree is {len} bytes; the limit is {MAX_VALUE_LEN}")]
    ValueTooLarge {
        /// The tree.
        tree: Tree,
        /// The value's length.
        len: usize,
    },

    /// The sled database failed (locked by another process, disk full,
    /// damaged files).
    #[error(
        "the store database in {} failed: {source}; check that no other sotto process uses it and that the disk has space",
        .path.display()
    )]
    Database {
        /// The database directory.
        path: PathBuf,
        /// sled's error.
        source: ::sled::Error,
    },

    /// A file operation on the key file, header or store directory failed.
    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
}
