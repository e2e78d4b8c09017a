//! What it costs to store one received message.
//!
//! The hot write of a client: a received message (~300 bytes) goes into
//! `history` and its ID into `seen`, in one atomic batch. Measured
//! amortized per message, once without any flush (what sled's background
//! flusher would give) and once with an fsync every 100 messages (how the
//! sync engine commits before acking a fetch). Product target: at most
//! 50 µs per stored message.
//!
//! Run optimised: `cargo bench -p sotto-core --bench store`, or, to reuse
//! the dev build of the dependencies, `CARGO_PROFILE_DEV_OPT_LEVEL=3 cargo
//! bench -p sotto-core --profile dev --bench store`. Not a plain dev build:
//! ChaCha20-Poly1305 is generic, so it is compiled into `sotto-core` at
//! `sotto-core`'s opt-level, and unoptimised it costs ~80 µs per seal.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sotto_core::{Batch, KeySource, MemoryStore, SledStore, Store, Tree};

const MESSAGE_LEN: usize = 300;

fn store_message(store: &dyn Store, contact: &[u8], seq: u64, message: &[u8]) {
    let mut history_key = contact.to_vec();
    history_key.extend_from_slice(&seq.to_be_bytes());
    // A message ID as the sync engine would see it: 16 opaque bytes.
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&seq.to_be_bytes());
    let mut batch = Batch::new();
    batch
        .put(Tree::History, history_key, message)
        .put(Tree::Seen, id.to_vec(), b"");
    store
        .apply(batch)
        .expect("the benchmark store accepts writes");
}

/// A fresh store for one variant, so one variant's dirty data or size
/// does not bill the next. On the real disk, not a tmpfs, so fsync costs
/// what it costs.
fn fresh_sled() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temp dir");
    let store = SledStore::open(dir.path(), KeySource::key_file_in(dir.path()))
        .expect("a fresh store opens");
    (dir, store)
}

fn bench(c: &mut Criterion) {
    let message = vec![0x5a; MESSAGE_LEN];
    let mut group = c.benchmark_group("store_received_message");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));

    for flush_every in [None, Some(100u64)] {
        let name = match flush_every {
            None => "sled, no flush".to_string(),
            Some(n) => format!("sled, flush every {n}"),
        };
        let (_dir, store) = fresh_sled();
        let contact = store.blind(b"@bench-contact");
        let mut seq = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    seq += 1;
                    store_message(&store, contact.as_bytes(), seq, &message);
                    if flush_every.is_some_and(|n| seq.is_multiple_of(n)) {
                        store.flush().expect("flush succeeds");
                    }
                }
                start.elapsed()
            });
        });
    }

    // The same write without a disk: what encryption and the store layer
    // cost on their own.
    let memory = MemoryStore::new().expect("a memory store");
    let contact = memory.blind(b"@bench-contact");
    let mut seq = 0u64;
    group.bench_function("memory backend", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                seq += 1;
                store_message(&memory, contact.as_bytes(), seq, &message);
            }
            start.elapsed()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
