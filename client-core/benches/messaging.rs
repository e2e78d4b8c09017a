//! Per-message cost of 1:1 messaging, with raw vodozemac Olm measured in
//! the same run as the baseline:
//!
//! - `olm encrypt` / `olm decrypt`: vodozemac alone, 200-byte plaintext.
//! - `engine send`: `queue_text` (Olm encrypt, history + session + outbox
//!   batch) + `outgoing` (envelope, seal into 1 KiB) + `sent` (outbox
//!   removal): everything a device does per message before the network.
//! - `engine receive`: `receive` (open, envelope checks, dedup, Olm
//!   decrypt, history + session batch): everything after the network.
//!
//! The engine runs over the in-memory store (same encryption as sled, no
//! disk), so this is CPU per message; `benches/store.rs` measures the disk.
//! Messages per second per core = 1 / time.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sotto_core::{EPOCH_SECS, Engine, Epoch, MemoryStore, Store};
use vodozemac::olm::{Account, SessionConfig};

const NOW: u64 = 1_800_000_000;
const TEXT: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco lab";

fn engine(handle: &str) -> Engine {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new().expect("memory store"));
    Engine::create(store, handle, NOW).expect("engine")
}

/// A fresh Olm session pair that has exchanged one message each way.
fn session_pair() -> (vodozemac::olm::Session, vodozemac::olm::Session) {
    let alice = Account::new();
    let mut bob = Account::new();
    bob.generate_one_time_keys(1);
    let otk = *bob.one_time_keys().values().next().expect("one key");
    let mut outbound = alice
        .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
        .expect("session");
    let first = outbound.encrypt(TEXT).expect("encrypt");
    let vodozemac::olm::OlmMessage::PreKey(pre) = first else {
        unreachable!("the first message of a session is a pre-key message")
    };
    let mut inbound = bob
        .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &pre)
        .expect("inbound")
        .session;
    // One reply so both sides run normal messages from here on.
    let reply = inbound.encrypt(TEXT).expect("encrypt");
    outbound.decrypt(&reply).expect("decrypt");
    (outbound, inbound)
}

fn raw_olm(c: &mut Criterion) {
    // Separate pairs: the encrypt benchmark advances its chain far beyond
    // the gap a receiver tolerates.
    let (mut outbound, _) = session_pair();
    c.bench_function("olm encrypt (vodozemac, 200 B)", |b| {
        b.iter(|| outbound.encrypt(black_box(TEXT)).expect("encrypt"))
    });
    let (mut outbound, mut inbound) = session_pair();
    c.bench_function("olm decrypt (vodozemac, 200 B)", |b| {
        b.iter_batched(
            || outbound.encrypt(TEXT).expect("encrypt"),
            |message| inbound.decrypt(black_box(&message)).expect("decrypt"),
            BatchSize::SmallInput,
        )
    });
}

fn engine_paths(c: &mut Criterion) {
    let mut alice = engine("alice");
    let mut bob = engine("bob");
    alice.import_card(&bob.export_card()).expect("card");
    bob.import_card(&alice.export_card()).expect("card");
    let epoch = Epoch::from_unix_secs(NOW, EPOCH_SECS);
    // Establish the session both ways first.
    let send = |from: &mut Engine, to: &str| {
        from.queue_text(to, TEXT, NOW * 1000).expect("queue");
        let out = from.outgoing(NOW).expect("outgoing").pop().expect("one");
        from.sent(&out.key).expect("sent");
        out.blob
    };
    let blob = send(&mut alice, "bob");
    bob.receive(blob.as_bytes(), epoch).expect("receive");
    let blob = send(&mut bob, "alice");
    alice.receive(blob.as_bytes(), epoch).expect("receive");

    c.bench_function("engine send: encrypt + seal 200 B into 1 KiB", |b| {
        b.iter(|| send(&mut alice, black_box("bob")))
    });
    // The receive benchmark needs a fresh blob per iteration, in order.
    let mut sender = engine("carol");
    sender.import_card(&bob.export_card()).expect("card");
    bob.import_card(&sender.export_card()).expect("card");
    c.bench_function("engine receive: open + decrypt 1 KiB", |b| {
        b.iter_batched(
            || send(&mut sender, "bob"),
            |blob| {
                bob.receive(black_box(blob.as_bytes()), epoch)
                    .expect("receive")
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, raw_olm, engine_paths);
criterion_main!(benches);
