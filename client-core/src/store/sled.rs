//! [`SledStore`]: the on-disk backend, a sled database in a directory.
//!
//! Directory layout (created 0700):
//!
//! ```text
//! DIR/store.header   plaintext JSON: key source, Argon2id salt, verifier
//! DIR/store.key      the key file, 0600 (default key source only)
//! DIR/db/            the sled database: tag-prefixed keys, sealed values
//! ```
//!
//! All trees live in one sled tree (`sotto/store/v1`) so that a multi-tree
//! [`Batch`] is one atomic `sled::Batch`; see the parent module's docs.

use std::fs::DirBuilder;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::crypt::Crypt;
use super::keyfile::{self, KeySource};
use super::{Batch, BlindId, Entry, RawOp, Store, StoreError, Tree, check_value, raw_key};

/// Name of the sled database directory inside the store directory.
const DB_DIR: &str = "db";
/// Name of the single sled tree that holds every [`Tree`].
const SLED_TREE: &[u8] = b"sotto/store/v1";

/// An encrypted store in a sled database.
pub struct SledStore {
    tree: ::sled::Tree,
    db: ::sled::Db,
    crypt: Crypt,
    db_path: PathBuf,
}

impl SledStore {
    /// Opens one raw entry: its key without the tree tag, its value.
    fn open_entry(&self, tree: Tree, raw: &[u8], sealed: &[u8]) -> Result<Entry, StoreError> {
        let key = raw.get(1..).unwrap_or_default().to_vec();
        let value = self.crypt.open(tree, &key, sealed)?;
        Ok((key, value))
    }

    /// Whether `dir` holds a store (opening one that does not creates it).
    #[must_use]
    pub fn exists(dir: impl AsRef<Path>) -> bool {
        dir.as_ref().join(DB_DIR).exists()
    }

    /// Opens the store in `dir`, creating it (and, for a key file source
    /// whose file does not exist, a new key file) if `dir` holds no store.
    ///
    /// A wrong passphrase or key file is reported before the database is
    /// touched ([`StoreError::WrongPassphrase`],
    /// [`StoreError::WrongKeyFile`]). Deriving a passphrase key takes a few
    /// hundred milliseconds by design.
    pub fn open(dir: impl AsRef<Path>, source: KeySource) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        let mut builder = DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .map_err(|e| keyfile::io_err("create the store directory", dir, e))?;

        let db_path = dir.join(DB_DIR);
        let master = keyfile::unlock(dir, source, db_path.exists())?;
        let crypt = Crypt::new(&master);
        drop(master);

        let db_err = |source| StoreError::Database {
            path: db_path.clone(),
            source,
        };
        let db = ::sled::Config::new()
            .path(&db_path)
            .open()
            .map_err(db_err)?;
        let tree = db.open_tree(SLED_TREE).map_err(db_err)?;
        Ok(Self {
            tree,
            db,
            crypt,
            db_path,
        })
    }

    fn db_err(&self, source: ::sled::Error) -> StoreError {
        StoreError::Database {
            path: self.db_path.clone(),
            source,
        }
    }

    /// Test hook: the sled tree, to tamper with raw bytes.
    #[cfg(test)]
    pub(crate) fn raw_tree(&self) -> &::sled::Tree {
        &self.tree
    }
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let raw = raw_key(tree, key)?;
        match self.tree.get(raw).map_err(|e| self.db_err(e))? {
            Some(sealed) => self.crypt.open(tree, key, &sealed).map(Some),
            None => Ok(None),
        }
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if tree == Tree::History {
            // Through a batch, which drops the entry's search group too.
            let mut batch = Batch::new();
            batch.put(tree, key, value);
            return self.apply(batch);
        }
        check_value(tree, value)?;
        let raw = raw_key(tree, key)?;
        let sealed = self.crypt.seal(tree, key, value)?;
        self.tree.insert(raw, sealed).map_err(|e| self.db_err(e))?;
        Ok(())
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        if tree == Tree::History {
            let mut batch = Batch::new();
            batch.delete(tree, key);
            return self.apply(batch);
        }
        let raw = raw_key(tree, key)?;
        self.tree.remove(raw).map_err(|e| self.db_err(e))?;
        Ok(())
    }

    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let raw_prefix = raw_key(tree, prefix)?;
        self.tree
            .scan_prefix(raw_prefix)
            .map(|item| {
                let (raw, sealed) = item.map_err(|e| self.db_err(e))?;
                // Every raw key under the prefix starts with the tag byte.
                let key = raw.get(1..).unwrap_or_default().to_vec();
                let value = self.crypt.open(tree, &key, &sealed)?;
                Ok((key, value))
            })
            .collect()
    }

    fn scan_after(
        &self,
        tree: Tree,
        prefix: &[u8],
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        use std::ops::Bound;
        let raw_prefix = raw_key(tree, prefix)?;
        let raw_after = raw_key(tree, after)?;
        let mut out = Vec::new();
        for item in self
            .tree
            .range::<Vec<u8>, _>((Bound::Excluded(raw_after), Bound::Unbounded))
        {
            let (raw, sealed) = item.map_err(|e| self.db_err(e))?;
            if out.len() >= limit || !raw.starts_with(&raw_prefix) {
                break;
            }
            out.push(self.open_entry(tree, &raw, &sealed)?);
        }
        Ok(out)
    }

    fn scan_last(
        &self,
        tree: Tree,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        use std::ops::Bound;
        let (raw_prefix, end) = super::last_range(tree, prefix, before)?;
        let mut out = Vec::new();
        for item in self
            .tree
            .range::<Vec<u8>, _>((Bound::Included(raw_prefix.clone()), end))
            .rev()
        {
            let (raw, sealed) = item.map_err(|e| self.db_err(e))?;
            if out.len() >= limit || !raw.starts_with(&raw_prefix) {
                break;
            }
            out.push(self.open_entry(tree, &raw, &sealed)?);
        }
        out.reverse();
        Ok(out)
    }

    fn last_key(&self, tree: Tree, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let raw_prefix = raw_key(tree, prefix)?;
        match self.tree.scan_prefix(raw_prefix).keys().next_back() {
            Some(raw) => {
                let raw = raw.map_err(|e| self.db_err(e))?;
                Ok(Some(raw.get(1..).unwrap_or_default().to_vec()))
            }
            None => Ok(None),
        }
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut sled_batch = ::sled::Batch::default();
        for op in batch.seal(&self.crypt)? {
            match op {
                RawOp::Put(key, value) => sled_batch.insert(key, value),
                RawOp::Delete(key) => sled_batch.remove(key),
            }
        }
        self.tree
            .apply_batch(sled_batch)
            .map_err(|e| self.db_err(e))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.db_err(e))?;
        Ok(())
    }

    fn blind(&self, id: &[u8]) -> BlindId {
        self.crypt.blind(id)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn all_bytes(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(all_bytes(&path));
            } else {
                out.extend(fs::read(&path).unwrap());
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn no_plaintext_value_or_handle_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let message = b"the eagle lands at midnight behind the old mill";
        let handle = b"@alice.wonderland";
        let control = b"control-key-visible-on-disk";
        {
            let store = SledStore::open(dir.path(), KeySource::key_file_in(dir.path())).unwrap();
            let contact = store.blind(handle);
            let mut batch = Batch::new();
            for seq in 0u64..50 {
                let mut key = contact.as_bytes().to_vec();
                key.extend_from_slice(&seq.to_be_bytes());
                batch.put(Tree::History, key, message);
            }
            batch.put(Tree::Contacts, contact.as_bytes().to_vec(), handle);
            batch.put(Tree::Seen, b"msg-id-1".to_vec(), b"");
            store.apply(batch).unwrap();
            // Keys are stored in the clear; this one proves the scan below
            // really sees the database's bytes.
            store.put(Tree::Meta, control, b"x").unwrap();
            store.flush().unwrap();
        }
        let bytes = all_bytes(dir.path());
        assert!(contains(&bytes, control), "the scan must see stored keys");
        assert!(
            !contains(&bytes, message),
            "a message was stored in the clear"
        );
        assert!(
            !contains(&bytes, handle),
            "a handle was stored in the clear"
        );
        assert!(!contains(&bytes, b"eagle"));
    }

    #[test]
    fn reopen_persists() {
        let dir = tempfile::tempdir().unwrap();
        let blinded;
        {
            let store = SledStore::open(dir.path(), KeySource::key_file_in(dir.path())).unwrap();
            store.put(Tree::Identity, b"account", b"pickle").unwrap();
            let mut batch = Batch::new();
            batch.put(Tree::Outbox, b"1".to_vec(), b"queued").put(
                Tree::Cursors,
                b"mbx".to_vec(),
                b"42",
            );
            store.apply(batch).unwrap();
            blinded = store.blind(b"@bob");
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), KeySource::key_file_in(dir.path())).unwrap();
        assert_eq!(
            &**store.get(Tree::Identity, b"account").unwrap().unwrap(),
            b"pickle"
        );
        assert_eq!(
            &**store.get(Tree::Outbox, b"1").unwrap().unwrap(),
            b"queued"
        );
        assert_eq!(&**store.get(Tree::Cursors, b"mbx").unwrap().unwrap(), b"42");
        assert_eq!(store.blind(b"@bob"), blinded, "blinding survives reopen");
    }

    #[test]
    fn passphrase_store_reopens_and_rejects_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store =
                SledStore::open(dir.path(), KeySource::passphrase("hunter2 but longer")).unwrap();
            store.put(Tree::Meta, b"k", b"v").unwrap();
            store.flush().unwrap();
        }
        assert!(matches!(
            SledStore::open(dir.path(), KeySource::passphrase("hunter3 but longer")),
            Err(StoreError::WrongPassphrase)
        ));
        let store =
            SledStore::open(dir.path(), KeySource::passphrase("hunter2 but longer")).unwrap();
        assert_eq!(&**store.get(Tree::Meta, b"k").unwrap().unwrap(), b"v");
    }

    #[test]
    fn wrong_key_file_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), KeySource::key_file_in(dir.path())).unwrap();
            store.put(Tree::Meta, b"k", b"v").unwrap();
            store.flush().unwrap();
        }
        let key_path = dir.path().join(keyfile::KEY_FILE);
        fs::remove_file(&key_path).unwrap();
        assert!(matches!(
            SledStore::open(dir.path(), KeySource::key_file_in(dir.path())),
            Err(StoreError::KeyFileMissing { .. })
        ));
        // A different key in the same place.
        let other = tempfile::tempdir().unwrap();
        drop(SledStore::open(other.path(), KeySource::key_file_in(other.path())).unwrap());
        fs::copy(other.path().join(keyfile::KEY_FILE), &key_path).unwrap();
        assert!(matches!(
            SledStore::open(dir.path(), KeySource::key_file_in(dir.path())),
            Err(StoreError::WrongKeyFile { .. })
        ));
    }

    #[test]
    fn raw_values_swapped_on_disk_fail_to_decrypt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), KeySource::key_file_in(dir.path())).unwrap();
            store.put(Tree::History, b"a", b"first").unwrap();
            store.put(Tree::History, b"b", b"second").unwrap();
            store.flush().unwrap();
        }
        {
            // Tamper through sled itself, outside the store's keys.
            let db = ::sled::open(dir.path().join(DB_DIR)).unwrap();
            let tree = db.open_tree(SLED_TREE).unwrap();
            let a = raw_key(Tree::History, b"a").unwrap();
            let b = raw_key(Tree::History, b"b").unwrap();
            let va = tree.get(&a).unwrap().unwrap();
            let vb = tree.get(&b).unwrap().unwrap();
            tree.insert(&a, vb).unwrap();
            tree.insert(&b, va).unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), KeySource::key_file_in(dir.path())).unwrap();
        assert!(matches!(
            store.get(Tree::History, b"a"),
            Err(StoreError::Decrypt {
                tree: Tree::History
            })
        ));
        assert!(matches!(
            store.scan_prefix(Tree::History, b""),
            Err(StoreError::Decrypt { .. })
        ));
    }

    #[test]
    fn second_open_of_a_live_store_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let _store = SledStore::open(dir.path(), KeySource::key_file_in(dir.path())).unwrap();
        assert!(matches!(
            SledStore::open(dir.path(), KeySource::key_file_in(dir.path())),
            Err(StoreError::Database { .. })
        ));
    }
}
