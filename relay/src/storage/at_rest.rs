//! Blobs encrypted at rest under day keys that are destroyed once no stored
//! blob uses them (issue 18 item 12).
//!
//! sled is log-structured: an acked or expired blob is removed from the
//! tree, but its bytes stay in the log files until sled happens to reclaim
//! the segment, and a copy of the disk would read them. So every chunk value
//! is sealed with XChaCha20-Poly1305 under the key of the *day* its first
//! blob was put (UTC day of the ID's minute), with a random 24-byte nonce
//! and the associated data `AT_REST_TAG ‖ mailbox ‖ chunk ID ‖ expires_at ‖
//! key ID`, so a sealed value only opens in its own place. A chunk that an
//! ack or a later append rewrites keeps its key.
//!
//! The keys are **not** in sled (its log would keep a deleted key as it
//! keeps a deleted blob) but in `at-rest-keys`, a small file next to the
//! database (0600), rewritten whole and atomically (temporary file, fsync,
//! rename, fsync of the directory) whenever a key is created or destroyed.
//! A key is destroyed by the purge pass once no chunk sealed under it is
//! stored and its day is over: after the longest TTL of the blobs put that
//! day at the latest, earlier when all were acked. From then on the log
//! bytes of every blob sealed under it are noise, wherever sled left them.
//!
//! What a copy of the disk still yields: the keys of days that still have
//! blobs (and so those blobs, as the relay itself holds them: sealed client
//! envelopes), sled's keys (mailbox ID, blob ID, expiry) and value lengths
//! of deleted records until sled reclaims them, and, below the file system,
//! blocks of earlier versions of the key file that a journaling or
//! copy-on-write file system, an SSD's remapping or a backup kept: deleting
//! a file does not overwrite its blocks. A disk copy taken after a key was
//! destroyed, on storage that does not keep old blocks, cannot open
//! anything sealed under it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use sotto_proto::MailboxId;
use zeroize::Zeroizing;

use super::{Seq, StoreError};

/// Domain separation for at-rest sealing (the start of the associated data).
pub(super) const AT_REST_TAG: &[u8] = b"sotto/relay-at-rest/v1";
/// The key file, in the database directory.
pub(super) const KEY_FILE: &str = "at-rest-keys";
/// First bytes of the key file.
const MAGIC: &[u8; 8] = b"sottoAK1";
/// Bytes a sealed value adds: key ID, nonce, tag.
pub(super) const SEAL_OVERHEAD: usize = 4 + 24 + 16;

/// A key's ID: its UTC day (days since the epoch).
pub(super) type KeyId = u32;

/// The day key for a blob ID (whose top bits are its minute, see `ids`).
pub(super) fn key_id_of(seq: Seq) -> KeyId {
    u32::try_from((seq >> 20) / 1_440).unwrap_or(u32::MAX)
}

type Key = Zeroizing<[u8; 32]>;

/// The day keys and how many stored chunks each seals. No `Debug`.
pub(super) struct AtRestKeys {
    path: PathBuf,
    keys: Mutex<BTreeMap<KeyId, Key>>,
    chunks: Mutex<HashMap<KeyId, u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each guarded update is one map operation.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree: "at-rest-keys",
        what: what.into(),
    }
}

fn aad(mailbox: &MailboxId, chunk: Seq, expires_at: u64, key_id: KeyId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AT_REST_TAG.len() + 52);
    aad.extend_from_slice(AT_REST_TAG);
    aad.extend_from_slice(mailbox.as_bytes());
    aad.extend_from_slice(&chunk.to_be_bytes());
    aad.extend_from_slice(&expires_at.to_be_bytes());
    aad.extend_from_slice(&key_id.to_be_bytes());
    aad
}

impl AtRestKeys {
    /// Reads the key file in `dir`, if there is one (it is created with the
    /// first key, so opening a database for an audit writes nothing).
    pub(super) fn load(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(KEY_FILE);
        let mut keys = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let body = bytes
                    .strip_prefix(MAGIC.as_slice())
                    .ok_or_else(|| corrupt("not a key file"))?;
                if body.len() % 36 != 0 {
                    return Err(corrupt(format!("{} bytes of keys", body.len())));
                }
                for entry in body.chunks_exact(36) {
                    let id = KeyId::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
                    let mut key = Zeroizing::new([0u8; 32]);
                    key.copy_from_slice(&entry[4..]);
                    keys.insert(id, key);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Self {
            path,
            keys: Mutex::new(keys),
            chunks: Mutex::new(HashMap::new()),
        })
    }

    /// Writes `keys` to the key file: a temporary file (0600), fsynced,
    /// renamed over the old one, then the directory fsynced.
    fn save(&self, keys: &BTreeMap<KeyId, Key>) -> Result<(), StoreError> {
        let mut bytes = Zeroizing::new(MAGIC.to_vec());
        for (id, key) in keys {
            bytes.extend_from_slice(&id.to_be_bytes());
            bytes.extend_from_slice(key.as_slice());
        }
        let temp = self.path.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Counts a stored chunk sealed under `id` (at open).
    pub(super) fn counted(&self, id: KeyId) {
        *lock(&self.chunks).entry(id).or_default() += 1;
    }

    /// A chunk sealed under `id` was removed.
    pub(super) fn uncounted(&self, id: KeyId) {
        if let Some(count) = lock(&self.chunks).get_mut(&id) {
            *count = count.saturating_sub(1);
        }
    }

    /// Seals a new chunk's plaintext under the key of `id`, creating (and
    /// saving) that key first if it does not exist, and counts the chunk.
    /// Called only by the insert path, which the retire pass excludes.
    pub(super) fn seal_new(
        &self,
        id: KeyId,
        mailbox: &MailboxId,
        chunk: Seq,
        expires_at: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        {
            let mut keys = lock(&self.keys);
            if !keys.contains_key(&id) {
                let mut key = Zeroizing::new([0u8; 32]);
                getrandom::fill(key.as_mut_slice())
                    .map_err(|e| StoreError::Sync(std::io::Error::other(e.to_string())))?;
                let mut next = keys.clone();
                next.insert(id, key);
                // On disk before anything is sealed under it.
                self.save(&next)?;
                *keys = next;
            }
        }
        let sealed = self.seal(id, mailbox, chunk, expires_at, plaintext)?;
        self.counted(id);
        Ok(sealed)
    }

    /// Seals `plaintext` under the existing key `id`: `id(4) ‖ nonce(24) ‖
    /// ciphertext ‖ tag(16)`.
    pub(super) fn seal(
        &self,
        id: KeyId,
        mailbox: &MailboxId,
        chunk: Seq,
        expires_at: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let keys = lock(&self.keys);
        let key = keys
            .get(&id)
            .ok_or_else(|| corrupt(format!("no key {id} to seal under")))?;
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce)
            .map_err(|e| StoreError::Sync(std::io::Error::other(e.to_string())))?;
        let mut sealed = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        sealed.extend_from_slice(&id.to_be_bytes());
        sealed.extend_from_slice(&nonce);
        let mut buffer = plaintext.to_vec();
        XChaCha20Poly1305::new((&**key).into())
            .encrypt_in_place(
                &XNonce::from(nonce),
                &aad(mailbox, chunk, expires_at, id),
                &mut buffer,
            )
            .map_err(|_| corrupt("sealing failed"))?;
        sealed.extend_from_slice(&buffer);
        Ok(sealed)
    }

    /// Opens what [`Self::seal`] made for this place; returns the key ID and
    /// the plaintext.
    pub(super) fn open(
        &self,
        mailbox: &MailboxId,
        chunk: Seq,
        expires_at: u64,
        sealed: &[u8],
    ) -> Result<(KeyId, Vec<u8>), StoreError> {
        let id = sealed_key_id(sealed).ok_or_else(|| corrupt("sealed value too short"))?;
        if sealed.len() < SEAL_OVERHEAD {
            return Err(corrupt("sealed value too short"));
        }
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&sealed[4..28]);
        let keys = lock(&self.keys);
        let key = keys.get(&id).ok_or_else(|| {
            corrupt(format!(
                "key {id} is gone: the value should have gone with it"
            ))
        })?;
        let mut buffer = sealed[28..].to_vec();
        XChaCha20Poly1305::new((&**key).into())
            .decrypt_in_place(
                &XNonce::from(nonce),
                &aad(mailbox, chunk, expires_at, id),
                &mut buffer,
            )
            .map_err(|_| corrupt("a sealed value does not open (tampered or misplaced)"))?;
        Ok((id, buffer))
    }

    /// Destroys every key of a day before `today` that seals no stored
    /// chunk, rewriting the key file; returns how many went. The caller
    /// excludes the insert path meanwhile.
    pub(super) fn retire(&self, today: KeyId) -> Result<usize, StoreError> {
        let chunks = lock(&self.chunks);
        let mut keys = lock(&self.keys);
        let unused: Vec<KeyId> = keys
            .keys()
            .copied()
            .filter(|id| *id < today && chunks.get(id).copied().unwrap_or(0) == 0)
            .collect();
        if unused.is_empty() {
            return Ok(0);
        }
        let mut next = keys.clone();
        for id in &unused {
            next.remove(id);
        }
        self.save(&next)?;
        // The old map's keys are zeroized as they drop.
        *keys = next;
        drop(keys);
        drop(chunks);
        lock(&self.chunks).retain(|id, count| *count > 0 || *id >= today);
        Ok(unused.len())
    }

    /// Copies of the keys (tests look for their bytes on disk).
    #[cfg(test)]
    pub(super) fn key_bytes(&self) -> Vec<(KeyId, [u8; 32])> {
        lock(&self.keys)
            .iter()
            .map(|(id, key)| (*id, **key))
            .collect()
    }
}

/// The key ID a sealed value names.
pub(super) fn sealed_key_id(sealed: &[u8]) -> Option<KeyId> {
    Some(KeyId::from_be_bytes(sealed.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_in_its_own_place() {
        let dir = tempfile::tempdir().unwrap();
        let keys = AtRestKeys::load(dir.path()).unwrap();
        let mailbox = MailboxId::from_bytes([1; 32]);
        let sealed = keys.seal_new(7, &mailbox, 5, 60, b"chunk").unwrap();
        assert_eq!(
            keys.open(&mailbox, 5, 60, &sealed).unwrap(),
            (7, b"chunk".to_vec())
        );
        let other = MailboxId::from_bytes([2; 32]);
        assert!(
            keys.open(&other, 5, 60, &sealed).is_err(),
            "another mailbox"
        );
        assert!(keys.open(&mailbox, 6, 60, &sealed).is_err(), "another ID");
        assert!(
            keys.open(&mailbox, 5, 120, &sealed).is_err(),
            "another expiry"
        );
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(keys.open(&mailbox, 5, 60, &flipped).is_err(), "tampered");
    }

    #[test]
    fn the_key_file_is_owner_only_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let keys = AtRestKeys::load(dir.path()).unwrap();
        let mailbox = MailboxId::from_bytes([1; 32]);
        let sealed = keys.seal_new(3, &mailbox, 1, 60, b"x").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = AtRestKeys::load(dir.path()).unwrap();
        assert_eq!(again.open(&mailbox, 1, 60, &sealed).unwrap().1, b"x");
        assert!(!dir.path().join("at-rest-keys.tmp").exists());
    }
}
