//! One test suite for every [`Store`] backend.
//!
//! Each check is a generic function over a [`Harness`] (a fresh store plus
//! the raw-tampering hooks a backend exposes to tests); `conformance!`
//! instantiates every check as a `#[test]` for one backend.

use super::sled::SledStore;
use super::{Batch, KeySource, MAX_KEY_LEN, MemoryStore, Store, StoreError, Tree};

/// A fresh store of one backend, plus raw access for tamper tests.
pub(crate) trait Harness {
    /// The store under test.
    type S: Store;
    /// A new, empty store.
    fn fresh() -> Self;
    /// The store.
    fn store(&self) -> &Self::S;
    /// The raw ciphertext stored at a key (which must exist).
    fn get_raw(&self, tree: Tree, key: &[u8]) -> Vec<u8>;
    /// Overwrites the raw ciphertext at a key.
    fn put_raw(&self, tree: Tree, key: &[u8], sealed: &[u8]);
}

pub(crate) struct Memory(MemoryStore);

impl Harness for Memory {
    type S = MemoryStore;
    fn fresh() -> Self {
        Self(MemoryStore::new().unwrap())
    }
    fn store(&self) -> &MemoryStore {
        &self.0
    }
    fn get_raw(&self, tree: Tree, key: &[u8]) -> Vec<u8> {
        self.0.get_raw(tree, key)
    }
    fn put_raw(&self, tree: Tree, key: &[u8], sealed: &[u8]) {
        self.0.put_raw(tree, key, sealed);
    }
}

pub(crate) struct Sled {
    store: SledStore,
    _dir: tempfile::TempDir,
}

impl Harness for Sled {
    type S = SledStore;
    fn fresh() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), KeySource::key_file_in(dir.path())).unwrap();
        Self { store, _dir: dir }
    }
    fn store(&self) -> &SledStore {
        &self.store
    }
    fn get_raw(&self, tree: Tree, key: &[u8]) -> Vec<u8> {
        let raw = super::raw_key(tree, key).unwrap();
        self.store.raw_tree().get(raw).unwrap().unwrap().to_vec()
    }
    fn put_raw(&self, tree: Tree, key: &[u8], sealed: &[u8]) {
        let raw = super::raw_key(tree, key).unwrap();
        self.store.raw_tree().insert(raw, sealed).unwrap();
    }
}

fn get(s: &impl Store, tree: Tree, key: &[u8]) -> Option<Vec<u8>> {
    s.get(tree, key).unwrap().map(|v| v.to_vec())
}

pub(crate) fn put_get_delete<H: Harness>() {
    let h = H::fresh();
    let s = h.store();
    assert_eq!(get(s, Tree::Contacts, b"c1"), None);
    s.put(Tree::Contacts, b"c1", b"card").unwrap();
    assert_eq!(get(s, Tree::Contacts, b"c1").as_deref(), Some(&b"card"[..]));
    s.delete(Tree::Contacts, b"c1").unwrap();
    assert_eq!(get(s, Tree::Contacts, b"c1"), None);
    // Deleting what is not there is fine.
    s.delete(Tree::Contacts, b"c1").unwrap();
    // Empty keys and values are ordinary.
    s.put(Tree::Seen, b"", b"").unwrap();
    assert_eq!(get(s, Tree::Seen, b"").as_deref(), Some(&b""[..]));
}

pub(crate) fn overwrite<H: Harness>() {
    let h = H::fresh();
    let s = h.store();
    s.put(Tree::Sessions, b"olm", b"v1").unwrap();
    s.put(Tree::Sessions, b"olm", b"version two").unwrap();
    assert_eq!(
        get(s, Tree::Sessions, b"olm").as_deref(),
        Some(&b"version two"[..])
    );
    assert_eq!(s.scan_prefix(Tree::Sessions, b"").unwrap().len(), 1);
}

pub(crate) fn trees_are_separate<H: Harness>() {
    let h = H::fresh();
    let s = h.store();
    for (i, tree) in Tree::ALL.into_iter().enumerate() {
        s.put(tree, b"same-key", &[i as u8]).unwrap();
    }
    for (i, tree) in Tree::ALL.into_iter().enumerate() {
        assert_eq!(get(s, tree, b"same-key"), Some(vec![i as u8]));
        assert_eq!(s.scan_prefix(tree, b"").unwrap().len(), 1);
    }
    s.delete(Tree::History, b"same-key").unwrap();
    assert_eq!(get(s, Tree::History, b"same-key"), None);
    assert!(get(s, Tree::Outbox, b"same-key").is_some());
}

pub(crate) fn prefix_scan_is_ordered_and_bounded<H: Harness>() {
    let h = H::fresh();
    let s = h.store();
    let alice = s.blind(b"@alice");
    let bob = s.blind(b"@bob");
    // Insert out of order; seq 256 sorts after 255 only because it is big-endian.
    for seq in [3u64, 256, 1, 255, 2] {
        for who in [alice, bob] {
            let mut key = who.as_bytes().to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            s.put(Tree::History, &key, format!("{who:?}#{seq}").as_bytes())
                .unwrap();
        }
    }
    s.put(Tree::Outbox, alice.as_bytes(), b"other tree")
        .unwrap();
    let scanned = s.scan_prefix(Tree::History, alice.as_bytes()).unwrap();
    let seqs: Vec<u64> = scanned
        .iter()
        .map(|(k, _)| {
            assert!(k.starts_with(alice.as_bytes()));
            u64::from_be_bytes(k[16..].try_into().unwrap())
        })
        .collect();
    assert_eq!(seqs, [1, 2, 3, 255, 256]);
    assert_eq!(&**scanned[0].1, format!("{alice:?}#1").as_bytes());
    assert_eq!(s.scan_prefix(Tree::History, b"").unwrap().len(), 10);
    assert!(s.scan_prefix(Tree::Cursors, b"").unwrap().is_empty());
}

pub(crate) fn last_key_is_the_greatest_under_the_prefix<H: Harness>() {
    let h = H::fresh();
    let s = h.store();
    assert_eq!(s.last_key(Tree::History, b"").unwrap(), None);
    // Prefixes that end in 0xff have no simple successor.
    for prefix in [b"a".as_slice(), b"a\xff", b"\xff\xff"] {
        for seq in [3u64, 256, 1, 255] {
            let key = [prefix, &seq.to_be_bytes()].concat();
            s.put(Tree::History, &key, b"v").unwrap();
        }
        let last = s.last_key(Tree::History, prefix).unwrap().unwrap();
        assert_eq!(last, [prefix, &256u64.to_be_bytes()].concat());
    }
    // Keys of other prefixes and trees do not count.
    s.put(Tree::History, b"b", b"v").unwrap();
    s.put(Tree::Outbox, b"a\xff\xff", b"v").unwrap();
    assert_eq!(s.last_key(Tree::History, b"ab").unwrap(), None);
    assert_eq!(s.last_key(Tree::Seen, b"").unwrap(), None);
    assert_eq!(
        s.last_key(Tree::Outbox, b"").unwrap().unwrap(),
        b"a\xff\xff"
    );
    assert_eq!(
        s.last_key(Tree::History, b"").unwrap().unwrap(),
        [b"\xff\xff".as_slice(), &256u64.to_be_bytes()].concat()
    );
}

pub(crate) fn pages_read_on_from_a_mark_and_back_from_the_end<H: Harness>() {
    let h = H::fresh();
    let s = h.store();
    let key = |prefix: &[u8], seq: u64| [prefix, &seq.to_be_bytes()].concat();
    let seqs = |entries: Vec<super::Entry>| -> Vec<u64> {
        entries
            .iter()
            .map(|(k, _)| u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap()))
            .collect()
    };
    // Prefixes that end in 0xff have no simple successor; a neighbour
    // prefix on each side must never leak in.
    for prefix in [b"a".as_slice(), b"b\xff", b"\xff\xff"] {
        for seq in 1..=10u64 {
            s.put(Tree::History, &key(prefix, seq), &seq.to_be_bytes())
                .unwrap();
        }
    }
    s.put(Tree::History, b"`", b"before").unwrap();
    s.put(Tree::History, b"c", b"after").unwrap();
    s.put(Tree::Outbox, &key(b"a", 11), b"other tree").unwrap();
    for prefix in [b"a".as_slice(), b"b\xff", b"\xff\xff"] {
        let after = |seq: u64, limit| {
            seqs(
                s.scan_after(Tree::History, prefix, &key(prefix, seq), limit)
                    .unwrap(),
            )
        };
        assert_eq!(after(0, 100), (1..=10).collect::<Vec<_>>());
        assert_eq!(after(3, 4), [4, 5, 6, 7]);
        assert_eq!(after(9, 100), [10]);
        assert!(after(10, 100).is_empty());
        assert!(after(3, 0).is_empty());
        let last = |before: Option<u64>, limit| {
            let before = before.map(|seq| key(prefix, seq));
            seqs(
                s.scan_last(Tree::History, prefix, before.as_deref(), limit)
                    .unwrap(),
            )
        };
        assert_eq!(last(None, 3), [8, 9, 10]);
        assert_eq!(last(Some(8), 3), [5, 6, 7]);
        assert_eq!(last(Some(3), 5), [1, 2]);
        assert_eq!(last(None, 100), (1..=10).collect::<Vec<_>>());
        assert!(last(Some(1), 5).is_empty());
        // Values come back opened.
        let page = s.scan_last(Tree::History, prefix, None, 1).unwrap();
        assert_eq!(page[0].1.as_slice(), &10u64.to_be_bytes());
    }
}

pub(crate) fn batch_applies_across_trees<H: Harness>() {
    let h = H::fresh();
    let s = h.store();
    s.put(Tree::Outbox, b"m1", b"pending").unwrap();
    let mut batch = Batch::new();
    batch
        .put(Tree::History, b"h1".to_vec(), b"message")
        .put(Tree::Seen, b"id1".to_vec(), b"")
        .delete(Tree::Outbox, b"m1".to_vec())
        // Later operations on one slot win.
        .put(Tree::Cursors, b"c".to_vec(), b"1")
        .put(Tree::Cursors, b"c".to_vec(), b"2");
    assert_eq!(batch.len(), 5);
    s.apply(batch).unwrap();
    assert_eq!(
        get(s, Tree::History, b"h1").as_deref(),
        Some(&b"message"[..])
    );
    assert_eq!(get(s, Tree::Seen, b"id1").as_deref(), Some(&b""[..]));
    assert_eq!(get(s, Tree::Outbox, b"m1"), None);
    assert_eq!(get(s, Tree::Cursors, b"c").as_deref(), Some(&b"2"[..]));
    s.apply(Batch::new()).unwrap();
}

pub(crate) fn failing_batch_writes_nothing<H: Harness>() {
    let h = H::fresh();
    let s = h.store();
    s.put(Tree::Outbox, b"m1", b"pending").unwrap();
    let mut batch = Batch::new();
    batch
        .put(Tree::History, b"h1".to_vec(), b"message")
        .delete(Tree::Outbox, b"m1".to_vec())
        .put(Tree::Seen, vec![0u8; MAX_KEY_LEN + 1], b"");
    assert!(matches!(
        s.apply(batch),
        Err(StoreError::KeyTooLong {
            tree: Tree::Seen,
            ..
        })
    ));
    assert_eq!(get(s, Tree::History, b"h1"), None);
    assert_eq!(
        get(s, Tree::Outbox, b"m1").as_deref(),
        Some(&b"pending"[..])
    );
    assert!(matches!(
        s.put(Tree::Meta, &[0u8; MAX_KEY_LEN + 1], b""),
        Err(StoreError::KeyTooLong { .. })
    ));
}

pub(crate) fn swapped_values_fail_to_decrypt<H: Harness>() {
    let h = H::fresh();
    let s = h.store();
    s.put(Tree::History, b"a", b"first").unwrap();
    s.put(Tree::History, b"b", b"second").unwrap();
    let (a, b) = (
        h.get_raw(Tree::History, b"a"),
        h.get_raw(Tree::History, b"b"),
    );
    h.put_raw(Tree::History, b"a", &b);
    h.put_raw(Tree::History, b"b", &a);
    assert!(matches!(
        s.get(Tree::History, b"a"),
        Err(StoreError::Decrypt {
            tree: Tree::History
        })
    ));
    assert!(matches!(
        s.get(Tree::History, b"b"),
        Err(StoreError::Decrypt { .. })
    ));
    assert!(matches!(
        s.scan_prefix(Tree::History, b""),
        Err(StoreError::Decrypt { .. })
    ));
}

pub(crate) fn value_moved_to_another_slot_fails<H: Harness>() {
    let h = H::fresh();
    let s = h.store();
    s.put(Tree::Identity, b"k", b"secret pickle").unwrap();
    let sealed = h.get_raw(Tree::Identity, b"k");
    // Same key, other tree.
    h.put_raw(Tree::Contacts, b"k", &sealed);
    assert!(matches!(
        s.get(Tree::Contacts, b"k"),
        Err(StoreError::Decrypt {
            tree: Tree::Contacts
        })
    ));
    // Same tree, other key.
    h.put_raw(Tree::Identity, b"k2", &sealed);
    assert!(matches!(
        s.get(Tree::Identity, b"k2"),
        Err(StoreError::Decrypt { .. })
    ));
    // The original is untouched.
    assert_eq!(
        get(s, Tree::Identity, b"k").as_deref(),
        Some(&b"secret pickle"[..])
    );
}

pub(crate) fn malformed_raw_values_are_typed_errors<H: Harness>() {
    let h = H::fresh();
    let s = h.store();
    for raw in [&b""[..], &b"\x01short"[..], &[0x7f; 64][..]] {
        h.put_raw(Tree::Outbox, b"x", raw);
        assert!(matches!(
            s.get(Tree::Outbox, b"x"),
            Err(StoreError::Corrupt {
                tree: Tree::Outbox,
                ..
            })
        ));
    }
    let mut flipped = vec![1u8];
    flipped.extend_from_slice(&[0u8; 40]);
    h.put_raw(Tree::Outbox, b"x", &flipped);
    assert!(matches!(
        s.get(Tree::Outbox, b"x"),
        Err(StoreError::Decrypt { .. })
    ));
}

pub(crate) fn blind_is_stable_and_keyed<H: Harness>() {
    let (h1, h2) = (H::fresh(), H::fresh());
    let a = h1.store().blind(b"@alice");
    assert_eq!(a, h1.store().blind(b"@alice"));
    assert_ne!(a, h1.store().blind(b"@alicf"));
    assert_ne!(
        a,
        h2.store().blind(b"@alice"),
        "blinding is keyed per store"
    );
    assert!(!format!("{a:?}").contains("alice"));
}

pub(crate) fn usable_as_trait_object<H: Harness>() {
    let h = H::fresh();
    let s: &dyn Store = h.store();
    s.put(Tree::Meta, b"schema", b"1").unwrap();
    s.flush().unwrap();
    assert!(s.get(Tree::Meta, b"schema").unwrap().is_some());
}

macro_rules! conformance {
    ($module:ident => $backend:ident: $($check:ident),* $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $check() {
                    super::$check::<super::$backend>();
                }
            )*
        }
    };
}

macro_rules! all_checks {
    ($($module:ident => $backend:ident),*) => {
        $(
            conformance!($module => $backend:
                put_get_delete,
                overwrite,
                trees_are_separate,
                prefix_scan_is_ordered_and_bounded,
                last_key_is_the_greatest_under_the_prefix,
                pages_read_on_from_a_mark_and_back_from_the_end,
                batch_applies_across_trees,
                failing_batch_writes_nothing,
                swapped_values_fail_to_decrypt,
                value_moved_to_another_slot_fails,
                malformed_raw_values_are_typed_errors,
                blind_is_stable_and_keyed,
                usable_as_trait_object,
            );
        )*
    };
}

all_checks!(memory => Memory, sled => Sled);
