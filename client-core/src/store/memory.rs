//! [`MemoryStore`]: the in-memory backend.
//!
//! For tests and ephemeral clients. It keeps the same raw layout and the
//! same encryption as [`SledStore`](super::SledStore) (under a random key
//! that dies with it), so the conformance suite exercises the encryption
//! path through both backends and an accidental plaintext copy in memory is
//! no more likely than on disk.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use zeroize::Zeroizing;

use super::crypt::{Crypt, MasterKey};
use super::{Batch, BlindId, Entry, RawOp, Store, StoreError, Tree, prefix_successor, raw_key};

/// An encrypted store held in memory.
pub struct MemoryStore {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    crypt: Crypt,
}

impl MemoryStore {
    /// An empty store under a fresh random key.
    pub fn new() -> Result<Self, StoreError> {
        Ok(Self {
            map: RwLock::new(BTreeMap::new()),
            crypt: Crypt::new(&MasterKey::random()?),
        })
    }

    // Every mutation below completes or does nothing before it could
    // panic, so a poisoned lock still guards a consistent map.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens sealed entries (keys without the tree tag).
    fn open_all(
        &self,
        tree: Tree,
        sealed: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Vec<Entry>, StoreError> {
        sealed
            .into_iter()
            .map(|(key, sealed)| {
                let value = self.crypt.open(tree, &key, &sealed)?;
                Ok((key, value))
            })
            .collect()
    }

    /// Test hook: the stored ciphertext of a key.
    #[cfg(test)]
    pub(crate) fn get_raw(&self, tree: Tree, key: &[u8]) -> Vec<u8> {
        self.read()[&raw_key(tree, key).unwrap()].clone()
    }

    /// Test hook: replaces the stored ciphertext of a key.
    #[cfg(test)]
    pub(crate) fn put_raw(&self, tree: Tree, key: &[u8], sealed: &[u8]) {
        self.write()
            .insert(raw_key(tree, key).unwrap(), sealed.to_vec());
    }
}

impl Store for MemoryStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let raw = raw_key(tree, key)?;
        let sealed = self.read().get(&raw).cloned();
        sealed
            .map(|sealed| self.crypt.open(tree, key, &sealed))
            .transpose()
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(tree, key, value);
        self.apply(batch)
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        if tree == Tree::History {
            // Through a batch, which drops the entry's search group too.
            let mut batch = Batch::new();
            batch.delete(tree, key);
            return self.apply(batch);
        }
        let raw = raw_key(tree, key)?;
        self.write().remove(&raw);
        Ok(())
    }

    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let raw_prefix = raw_key(tree, prefix)?;
        let sealed: Vec<(Vec<u8>, Vec<u8>)> = self
            .read()
            .range(raw_prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&raw_prefix))
            .map(|(k, v)| (k[1..].to_vec(), v.clone()))
            .collect();
        sealed
            .into_iter()
            .map(|(key, sealed)| {
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
        let sealed: Vec<(Vec<u8>, Vec<u8>)> = self
            .read()
            .range::<Vec<u8>, _>((Bound::Excluded(raw_after), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&raw_prefix))
            .take(limit)
            .map(|(k, v)| (k[1..].to_vec(), v.clone()))
            .collect();
        self.open_all(tree, sealed)
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
        let mut sealed: Vec<(Vec<u8>, Vec<u8>)> = self
            .read()
            .range::<Vec<u8>, _>((Bound::Included(raw_prefix.clone()), end))
            .rev()
            .take_while(|(k, _)| k.starts_with(&raw_prefix))
            .take(limit)
            .map(|(k, v)| (k[1..].to_vec(), v.clone()))
            .collect();
        sealed.reverse();
        self.open_all(tree, sealed)
    }

    fn last_key(&self, tree: Tree, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let raw_prefix = raw_key(tree, prefix)?;
        let map = self.read();
        // Every key under the prefix sorts below the prefix's successor
        // (the prefix with its last byte that is not 0xff incremented).
        let last = match prefix_successor(&raw_prefix) {
            Some(end) => map.range(raw_prefix.clone()..end).next_back(),
            None => map.range(raw_prefix.clone()..).next_back(),
        };
        Ok(last
            .filter(|(k, _)| k.starts_with(&raw_prefix))
            .map(|(k, _)| k[1..].to_vec()))
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let ops = batch.seal(&self.crypt)?;
        let mut map = self.write();
        for op in ops {
            match op {
                RawOp::Put(key, value) => {
                    map.insert(key, value);
                }
                RawOp::Delete(key) => {
                    map.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn blind(&self, id: &[u8]) -> BlindId {
        self.crypt.blind(id)
    }
}
