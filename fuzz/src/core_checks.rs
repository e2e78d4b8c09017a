//! Checks for the client-core fuzz targets (`sealed_envelope`,
//! `store_record`). One source, compiled twice: by the fuzz targets and by
//! `client-core/tests/fuzz_corpus.rs`, which replays the committed corpus
//! under `cargo test` (both include this file with `#[path]`). It uses only
//! sotto-core's public API and its `#[doc(hidden)]` fuzzing hooks, and
//! panics when an invariant breaks.
#![allow(dead_code, clippy::unwrap_used)]

use sotto_core::{
    EnvelopeSecret, Tree, fuzz_open_value, fuzz_seal_value, max_plaintext_len, open,
    open_symmetric, pad, padded_len, seal_symmetric_with_salt, unpad,
};
use sotto_proto::Bucket;

/// The recipient secret of `sealed_envelope` inputs.
pub(crate) const ENVELOPE_SECRET: [u8; 32] = [0x42; 32];
/// The group key of `sealed_envelope` inputs.
pub(crate) const GROUP_KEY: [u8; 32] = [0x24; 32];
/// The store master key of `store_record` inputs.
pub(crate) const STORE_KEY: [u8; 32] = [0x77; 32];

/// `sealed_envelope`: the whole input is a blob for `open` and
/// `open_symmetric`, and (resized to a bucket's padded length chosen by its
/// first byte) a padded plaintext for `unpad`. Never panics; whatever opens
/// is a bucket-sized blob; a group blob re-seals to the same bytes with its
/// salt; `pad(unpad(x)) == x` for every padded-length `x` that unpads.
pub(crate) fn check_sealed_envelope(data: &[u8]) {
    let secret = EnvelopeSecret::from_bytes(ENVELOPE_SECRET);
    if let Ok(plain) = open(&secret, data) {
        let bucket = Bucket::of_len(data.len()).expect("an opened blob is bucket-sized");
        assert!(plain.len() <= max_plaintext_len(bucket));
    }
    if let Ok(plain) = open_symmetric(&GROUP_KEY, data) {
        let bucket = Bucket::of_len(data.len()).expect("an opened blob is bucket-sized");
        let salt: [u8; 32] = data[1..33].try_into().unwrap();
        let again = seal_symmetric_with_salt(&GROUP_KEY, &plain, bucket, &salt).unwrap();
        assert_eq!(
            again.as_bytes(),
            data,
            "a group blob does not re-seal to itself"
        );
    }
    let _ = unpad(data);
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let bucket = Bucket::ALL[usize::from(choice % 4)];
    let mut padded = rest.to_vec();
    padded.resize(padded_len(bucket), 0);
    if let Ok(message) = unpad(&padded) {
        let (got_bucket, again) =
            pad(message, bucket).expect("an unpadded message fits its bucket");
        assert_eq!(got_bucket, bucket);
        assert_eq!(&again[..], &padded[..], "pad(unpad(x)) != x");
    }
}

/// Splits a `store_record` input into (tree, key, sealed value).
pub(crate) fn store_record_parts(data: &[u8]) -> Option<(Tree, &[u8], &[u8])> {
    let (&tree, rest) = data.split_first()?;
    let (&key_len, rest) = rest.split_first()?;
    let key_len = usize::from(key_len % 64).min(rest.len());
    let (key, sealed) = rest.split_at(key_len);
    Some((Tree::ALL[usize::from(tree) % Tree::ALL.len()], key, sealed))
}

/// The input layout `store_record_parts` reads.
pub(crate) fn store_record_input(tree: Tree, key: &[u8], sealed: &[u8]) -> Vec<u8> {
    let tag = Tree::ALL.iter().position(|t| *t == tree).unwrap() as u8;
    let mut out = vec![tag, key.len() as u8];
    out.extend_from_slice(key);
    out.extend_from_slice(sealed);
    out
}

/// `store_record`: `tree(1) || key_len(1) || key || sealed value` opened
/// under [`STORE_KEY`] as the store reads values. Never panics; a value that
/// opens has exactly the store's overhead and survives a seal/open round
/// trip.
pub(crate) fn check_store_record(data: &[u8]) {
    let Some((tree, key, sealed)) = store_record_parts(data) else {
        return;
    };
    if let Ok(plain) = fuzz_open_value(STORE_KEY, tree, key, sealed) {
        assert_eq!(sealed.len(), plain.len() + 29, "sealed value overhead");
        let again = fuzz_seal_value(STORE_KEY, tree, key, &plain).unwrap();
        assert_eq!(
            &fuzz_open_value(STORE_KEY, tree, key, &again).unwrap()[..],
            &plain[..]
        );
    }
}
