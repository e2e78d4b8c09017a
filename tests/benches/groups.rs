//! Group fan-out: the time for one member to send a group message and for
//! every other member to receive it, for groups of 10, 100 and 500 members
//! on one relay over loopback QUIC (issue: send cost independent of group
//! size, one put; a 100-member group fully delivered within 200 ms idle).
//!
//! Every member is a real [`Client`] (in-memory store, so 500 sled
//! databases do not measure the disk) running [`Client::listen`] on its
//! own subscribed connection; the relay is a real `sotto-relay` server with
//! sled and group commit. Relay, sender and all receivers share this
//! machine's two cores, so "all received" includes every receiver's
//! decryption done one after another on two cores.
//!
//! `cargo bench -p sotto-tests --bench groups [-- SIZES...]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sotto_core::{Client, Engine, MemoryStore, Rotation, Store};
use sotto_tests::{TestRelay, clock_of, relay_addr};
use tokio::sync::{mpsc, watch};

const MEASURED: usize = 10;

fn member(handle: &str, relay: &TestRelay) -> Client {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
    let clock = clock_of(&relay.clock);
    let engine = Engine::create(store, handle, clock() / 1000).unwrap();
    Client::new(engine, relay_addr(relay), clock)
}

struct Row {
    size: usize,
    send_ms: Vec<f64>,
    all_ms: Vec<f64>,
    puts_per_message: f64,
    first_message_puts: u64,
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(size: usize) -> Row {
    let relay = TestRelay::start_with(|config| {
        // One sender puts every message; the abuse limits are not measured.
        config.limits.requests_per_sec = u32::MAX;
    })
    .await;
    let puts = || relay.server().relay().stats().puts.load(Ordering::Relaxed);
    let mut sender = member("sender", &relay);
    let mut receivers: Vec<Client> = (1..size)
        .map(|i| member(&format!("member{i}"), &relay))
        .collect();
    let sender_card = sender.engine().export_card();
    let mut handles = Vec::new();
    for receiver in &mut receivers {
        receiver.engine_mut().import_card(&sender_card).unwrap();
        let handle = sender
            .engine_mut()
            .import_card(&receiver.engine().export_card())
            .unwrap();
        handles.push(handle);
    }
    let now = clock_of(&relay.clock)();
    sender
        .engine_mut()
        .create_group("bench", &handles, Rotation::default(), now)
        .unwrap();
    sender.deliver().await.unwrap();

    // Every receiver listens on its own connection.
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<(String, Instant)>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for mut receiver in receivers {
        let arrived = arrived_tx.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            receiver
                .listen(
                    |message| {
                        if message.group.is_some() {
                            let _ = arrived.send((message.text.clone(), Instant::now()));
                        }
                    },
                    async move {
                        let _ = stop.changed().await;
                    },
                )
                .await
                .unwrap();
        }));
    }

    let mut send = async |text: &str| {
        let started = Instant::now();
        sender
            .engine_mut()
            .queue_group_text("bench", text, now)
            .unwrap();
        sender.deliver().await.unwrap();
        started
    };
    // The last receiver's arrival time.
    let mut wait_all = async |text: &str| {
        let mut got = 0;
        let mut last = None;
        while got < size - 1 {
            let (message, at) = tokio::time::timeout(Duration::from_secs(120), arrived.recv())
                .await
                .expect("every receiver gets the message")
                .unwrap();
            if message == text {
                got += 1;
                last = Some(at);
            }
        }
        last.unwrap()
    };
    // The first message of a session also shares its key with each member
    // over Olm; it doubles as the check that everyone is subscribed.
    let before = puts();
    send("warm-up").await;
    let first_message_puts = puts() - before;
    wait_all("warm-up").await;

    let (mut send_ms, mut all_ms) = (Vec::new(), Vec::new());
    let before = puts();
    for i in 0..MEASURED {
        let text = format!("message {i}");
        let started = send(&text).await;
        send_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let done = wait_all(&text).await;
        all_ms.push((done - started).as_secs_f64() * 1000.0);
    }
    let puts_per_message = (puts() - before) as f64 / MEASURED as f64;
    stop_tx.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    relay.stop().await;
    Row {
        size,
        send_ms,
        all_ms,
        puts_per_message,
        first_message_puts,
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10, 100, 500]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| members | puts/message | first message puts | send p50 ms | send max ms | all received p50 ms | all received max ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for size in sizes {
        let row = runtime.block_on(run(size));
        println!(
            "| {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            row.size,
            row.puts_per_message,
            row.first_message_puts,
            percentile(&row.send_ms, 0.5),
            percentile(&row.send_ms, 1.0),
            percentile(&row.all_ms, 0.5),
            percentile(&row.all_ms, 1.0),
        );
    }
}
