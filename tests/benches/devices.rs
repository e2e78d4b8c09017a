//! Multi-device cost (issue 11): what a message costs its sender for each
//! device it goes to, and how fast a new device takes the history of one
//! that approves it.
//!
//! Engine level, no relay and no network: a "put" is one [`Outgoing`]
//! blob the engine hands over for the relay, its bytes are the blob's
//! (bucket-sized) length, and the time is the wall time of
//! [`Engine::queue_text`] + [`Engine::outgoing`] (Olm encryption per
//! device, then the seal per blob) on one thread, in-memory stores.
//!
//! 1. Send cost for 1, 2, 5 and 10 recipient devices, with no other own
//!    device and with one (every message is copied to it): 20 warm-up
//!    messages (they open the Olm sessions), then 200 timed ones.
//! 2. History transfer, 5 rounds: 10,000 messages with bob cut by
//!    [`Engine::history_chunks`], sent over Olm to a new own device with
//!    [`Engine::queue_to_own`] and taken by its [`Engine::receive`].
//!
//! `cargo bench -p sotto-tests --bench devices`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use sotto_core::{Card, EPOCH_SECS, Engine, Epoch, MemoryStore, Outgoing, Received, Store};
use sotto_proto::Message as _;
use sotto_proto::client::{SignedCard, payload::Body};

const NOW_SECS: u64 = 1_800_000_000;
const WARM_UP: usize = 20;
const MEASURED: usize = 200;
const HISTORY: usize = 10_000;
const HISTORY_ROUNDS: usize = 5;
/// A typical chat line, not the shortest one.
const TEXT: &str = "On my way, I will be there in about ten minutes; \
                    start without me if the others are already in.";

fn engine(handle: &str) -> Engine {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
    Engine::create(store, handle, NOW_SECS).unwrap()
}

fn card_of(engine: &Engine) -> (Card, SignedCard) {
    let signed = engine.signed_card();
    (Card::verify(&signed).unwrap(), signed)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Everything in the outbox, then drained as if the relay acknowledged it.
fn drain(engine: &mut Engine) -> Vec<Outgoing> {
    let out = engine.outgoing(NOW_SECS).unwrap();
    for item in &out {
        engine.sent(&item.key).unwrap();
    }
    out
}

struct SendRow {
    devices: usize,
    own_others: usize,
    puts: f64,
    bytes: f64,
    micros: Vec<f64>,
}

fn send_cost(devices: usize, own_others: usize) -> SendRow {
    let mut alice = engine("alice");
    let bobs: Vec<Engine> = (0..devices).map(|_| engine("bob")).collect();
    alice
        .set_devices("bob", None, bobs.iter().map(card_of).collect())
        .unwrap();
    let own: Vec<Engine> = (0..own_others).map(|_| engine("alice")).collect();
    if !own.is_empty() {
        alice
            .set_devices("alice", None, own.iter().map(card_of).collect())
            .unwrap();
    }
    let mut now_ms = NOW_SECS * 1000;
    for _ in 0..WARM_UP {
        now_ms += 1;
        alice.queue_text("bob", TEXT, now_ms).unwrap();
        drain(&mut alice);
    }
    let (mut puts, mut bytes, mut micros) = (0, 0, Vec::with_capacity(MEASURED));
    for _ in 0..MEASURED {
        now_ms += 1;
        let started = Instant::now();
        alice.queue_text("bob", TEXT, now_ms).unwrap();
        let out = alice.outgoing(NOW_SECS).unwrap();
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        puts += out.len();
        bytes += out.iter().map(|o| o.blob.len()).sum::<usize>();
        for item in &out {
            alice.sent(&item.key).unwrap();
        }
    }
    assert_eq!(puts, MEASURED * (devices + own_others));
    SendRow {
        devices,
        own_others,
        puts: puts as f64 / MEASURED as f64,
        bytes: bytes as f64 / MEASURED as f64,
        micros,
    }
}

struct HistoryRow {
    chunks: usize,
    chunk_bytes: usize,
    blob_bytes: usize,
    build: Vec<f64>,
    send: Vec<f64>,
    take: Vec<f64>,
}

fn ms_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// Alice's 10,000 messages with bob go to a fresh new device of hers,
/// `HISTORY_ROUNDS` times (each new device replaces the last one).
fn history_transfer() -> HistoryRow {
    let mut alice = engine("alice");
    let bob = engine("bob");
    alice.set_devices("bob", None, vec![card_of(&bob)]).unwrap();
    let mut now_ms = NOW_SECS * 1000;
    for i in 0..HISTORY {
        now_ms += 1;
        alice
            .queue_text("bob", &format!("{i:05} {TEXT}"), now_ms)
            .unwrap();
        // Drained now and then so the outbox scan stays short.
        if i % 100 == 99 {
            drain(&mut alice);
        }
    }
    drain(&mut alice);
    let expected = alice.history("bob").unwrap();
    let epoch = Epoch::from_unix_secs(NOW_SECS, EPOCH_SECS);

    let mut row = HistoryRow {
        chunks: 0,
        chunk_bytes: 0,
        blob_bytes: 0,
        build: Vec::new(),
        send: Vec::new(),
        take: Vec::new(),
    };
    for _ in 0..HISTORY_ROUNDS {
        let started = Instant::now();
        let chunks = alice.history_chunks(0).unwrap();
        row.build.push(ms_since(started));
        row.chunks = chunks.len();
        row.chunk_bytes = chunks.iter().map(|c| c.encoded_len()).sum();

        // Linked only now, so the new device did not get the messages as
        // copies while they were sent.
        let mut alice2 = engine("alice");
        let identity = alice2.own_card().identity_key.to_bytes();
        alice
            .set_devices("alice", None, vec![card_of(&alice2)])
            .unwrap();
        alice2
            .set_devices("alice", None, vec![card_of(&alice)])
            .unwrap();

        let started = Instant::now();
        for chunk in chunks {
            alice
                .queue_to_own(Some(&identity), Body::History(chunk), now_ms)
                .unwrap();
        }
        let out = drain(&mut alice);
        row.send.push(ms_since(started));
        assert_eq!(out.len(), row.chunks);
        row.blob_bytes = out.iter().map(|o| o.blob.len()).sum();

        let started = Instant::now();
        let mut taken = 0;
        for item in &out {
            match alice2.receive(item.blob.as_bytes(), epoch).unwrap() {
                Received::History { messages, .. } => taken += messages,
                other => panic!("a history chunk came out as {other:?}"),
            }
        }
        row.take.push(ms_since(started));
        assert_eq!(taken, HISTORY);
        assert_eq!(alice2.history("bob").unwrap(), expected);
    }
    row
}

fn main() {
    println!(
        "| recipient devices | own other devices | puts/message | bytes/message | queue + seal p50 µs | p90 µs | mean µs |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for own_others in [0, 1] {
        for devices in [1, 2, 5, 10] {
            let row = send_cost(devices, own_others);
            let mean = row.micros.iter().sum::<f64>() / row.micros.len() as f64;
            println!(
                "| {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
                row.devices,
                row.own_others,
                row.puts,
                row.bytes,
                percentile(&row.micros, 0.5),
                percentile(&row.micros, 0.9),
                mean,
            );
        }
    }

    let row = history_transfer();
    let total: Vec<f64> = (0..HISTORY_ROUNDS)
        .map(|i| row.build[i] + row.send[i] + row.take[i])
        .collect();
    println!();
    println!(
        "history of {HISTORY} messages, {HISTORY_ROUNDS} rounds: {} chunks, \
         {} bytes of chunks in {} bytes of blobs",
        row.chunks, row.chunk_bytes, row.blob_bytes
    );
    println!("| step | p50 ms | min ms | max ms | messages/s at p50 |");
    println!("|---|---:|---:|---:|---:|");
    for (step, took) in [
        ("build the chunks (`history_chunks`)", &row.build),
        ("queue + seal them to the new device", &row.send),
        ("new device takes them (`receive`)", &row.take),
        ("end to end", &total),
    ] {
        let p50 = percentile(took, 0.5);
        println!(
            "| {step} | {p50:.0} | {:.0} | {:.0} | {:.0} |",
            percentile(took, 0.0),
            percentile(took, 1.0),
            HISTORY as f64 / p50 * 1000.0,
        );
    }
}
