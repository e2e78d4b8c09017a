//! Corpus helpers shared, by `#[path]`, by the tests that replay the fuzz
//! corpora under `cargo test` (`relay/tests/fuzz_corpus.rs`,
//! `client-core/tests/fuzz_corpus.rs`). Both crates sit one level below
//! the repository root.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The committed corpus directory of `target`.
pub fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs `check` over every file of `target`'s corpus; a panic fails the
/// test naming the file.
pub fn replay(target: &str, check: fn(&[u8])) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus(target))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target}");
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{target}: {} fails", file.display());
    }
}
