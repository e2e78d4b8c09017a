//! Replays the committed fuzz corpora `fuzz/corpus/sealed_envelope/` and
//! `fuzz/corpus/store_record/` through the checks the fuzz targets run
//! (`fuzz/src/core_checks.rs`, shared by `#[path]`).
//!
//! `cargo test -p sotto-core --test fuzz_corpus -- --ignored` regenerates
//! the seeds.
#![allow(clippy::unwrap_used)]

#[path = "../../fuzz/src/corpus.rs"]
mod corpus;

#[path = "../../fuzz/src/core_checks.rs"]
mod core_checks;

use corpus::{corpus, replay};

use core_checks::{
    ENVELOPE_SECRET, GROUP_KEY, STORE_KEY, check_sealed_envelope, check_store_record,
    store_record_input,
};
use sotto_core::{
    EnvelopeSecret, Tree, fuzz_seal_value, pad, seal_symmetric_with_salt, seal_with_ephemeral,
};
use sotto_proto::Bucket;

#[test]
fn sealed_envelope_corpus_passes() {
    replay("sealed_envelope", check_sealed_envelope);
}

#[test]
fn store_record_corpus_passes() {
    replay("store_record", check_store_record);
}

fn envelope_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let recipient = EnvelopeSecret::from_bytes(ENVELOPE_SECRET).public();
    let sealed = seal_with_ephemeral(&recipient, b"hello", Bucket::K1, &[9; 32]).unwrap();
    let group = seal_symmetric_with_salt(&GROUP_KEY, b"hi all", Bucket::K1, &[8; 32]).unwrap();
    let group4k = seal_symmetric_with_salt(&GROUP_KEY, &[1; 2000], Bucket::K1, &[7; 32]).unwrap();
    let (_, padded) = pad(b"padded", Bucket::K1).unwrap();
    let mut unpaddable = vec![0u8];
    unpaddable.extend_from_slice(&padded);
    let mut tampered = group.as_bytes().to_vec();
    tampered[100] ^= 1;
    vec![
        ("sealed-1k", sealed.as_bytes().to_vec()),
        ("group-1k", group.as_bytes().to_vec()),
        ("group-4k", group4k.as_bytes().to_vec()),
        ("group-tampered", tampered),
        ("padded", unpaddable),
        ("short", vec![1, 2, 3]),
    ]
}

fn store_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let sealed = |tree, key: &[u8], value: &[u8]| {
        store_record_input(
            tree,
            key,
            &fuzz_seal_value(STORE_KEY, tree, key, value).unwrap(),
        )
    };
    let history = sealed(Tree::History, &[5; 24], b"a message");
    let mut swapped = history.clone();
    swapped[0] = 6; // the same value presented as another tree's
    vec![
        ("history", history),
        ("meta-empty", sealed(Tree::Meta, b"schema", b"")),
        ("seen", sealed(Tree::Seen, &[1; 16], &[0; 8])),
        ("swapped-tree", swapped),
        ("truncated", vec![1, 3, b'k', b'e', b'y', 1, 0, 0]),
    ]
}

#[test]
fn valid_seeds_open() {
    let secret = EnvelopeSecret::from_bytes(ENVELOPE_SECRET);
    let seeds = envelope_seeds();
    assert_eq!(&**sotto_core::open(&secret, &seeds[0].1).unwrap(), b"hello");
    assert_eq!(
        &**sotto_core::open_symmetric(&GROUP_KEY, &seeds[1].1).unwrap(),
        b"hi all"
    );
    let store = store_seeds();
    let (tree, key, value) = core_checks::store_record_parts(&store[0].1).unwrap();
    assert_eq!(
        &sotto_core::fuzz_open_value(STORE_KEY, tree, key, value).unwrap()[..],
        b"a message"
    );
    let (tree, key, value) = core_checks::store_record_parts(&store[3].1).unwrap();
    assert!(sotto_core::fuzz_open_value(STORE_KEY, tree, key, value).is_err());
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus"]
fn regenerate_seed_corpus() {
    for (target, seeds) in [
        ("sealed_envelope", envelope_seeds()),
        ("store_record", store_seeds()),
    ] {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
    }
}
