//! `sotto search` over 100,000 messages in one conversation, on a real
//! sled store in a temp dir. Target: under 200 ms per search (issue 22).
//! The search index (sealed groups of 256 entries, `engine/search.rs`) is
//! built by the first search; "first search" measures that build on a
//! fresh copy each time, the others search with the index in place. Not
//! run for figures on the shared development machine.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sotto_core::{Engine, KeySource, Query, SledStore, Store};

const NOW: u64 = 1_800_000_000;
const MESSAGES: usize = 100_000;

fn search(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(dir.path(), KeySource::key_file_in(dir.path())).expect("sled store"),
    );
    let mut engine = Engine::create(store, "alice", NOW).expect("engine");
    let words = ["deploy", "lunch", "relay", "invoice", "holiday", "review"];
    engine
        .bench_fill_history("bob", &words, MESSAGES)
        .expect("history filled");
    let mut group = c.benchmark_group("search 100k messages");
    group.sample_size(10);
    group.bench_function("first search (builds the index)", |b| {
        b.iter_batched(
            || {
                // Index groups dropped: the next search rebuilds them all.
                engine.bench_drop_search_index().expect("index dropped");
            },
            |()| engine.search(&Query::new("depl"), Some("bob"), 50),
            criterion::BatchSize::PerIteration,
        )
    });
    for (name, text) in [
        ("one word prefix", "depl"),
        ("two words", "weekly invoice"),
        ("no match", "zebra"),
    ] {
        let query = Query::new(text);
        group.bench_function(name, |b| {
            b.iter(|| engine.search(black_box(&query), Some("bob"), 50))
        });
    }
    group.finish();
}

criterion_group!(benches, search);
criterion_main!(benches);
