//! Crash consistency with the real binary: `kill -9` under concurrent puts
//! loses no acknowledged put and corrupts no blob.
#![allow(clippy::unwrap_used)]

#[path = "relay_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sotto_core::{RelayAddr, RelayConnection};
use support::{Owner, RelayProcess, blob, fetch_all};

/// This test is about durability, not access: the relay runs open, on
/// the storage engine named.
fn relay_config(engine: &str) -> String {
    format!("[tokens]\nrequire_tokens = false\n[storage]\nengine = \"{engine}\"\n")
}

fn spawn_relay(data: &Path, engine: &str) -> RelayProcess {
    support::spawn_relay(data, &relay_config(engine))
}

/// Acknowledged puts: mailbox owner seed → (seq → tag).
type Acked = Arc<Mutex<BTreeMap<u8, BTreeMap<u64, u64>>>>;

async fn put_until_the_relay_dies(addr: RelayAddr, owner_seed: u8, acked: Acked) {
    let Ok(conn) = RelayConnection::connect(&addr, None).await else {
        return;
    };
    let conn = Arc::new(conn);
    let mailbox = Owner::new(owner_seed).mailbox();
    let mut tag = u64::from(owner_seed) << 32;
    loop {
        // A small window of pipelined puts, as real clients send.
        let mut window = Vec::new();
        for _ in 0..8 {
            tag += 1;
            let conn = conn.clone();
            window.push((
                tag,
                tokio::spawn(async move { conn.put(&mailbox, &blob(tag), 0).await }),
            ));
        }
        for (tag, put) in window {
            match put.await.unwrap() {
                Ok(seq) => {
                    acked
                        .lock()
                        .unwrap()
                        .entry(owner_seed)
                        .or_default()
                        .insert(seq, tag);
                }
                Err(_) => return,
            }
        }
    }
}

/// Every acknowledged put is stored, byte for byte.
async fn assert_nothing_acknowledged_is_lost(addr: RelayAddr, acked: &Acked) -> usize {
    let conn = RelayConnection::connect(&addr, None).await.unwrap();
    let expected = acked.lock().unwrap().clone();
    let mut checked = 0;
    for (seed, puts) in expected {
        let stored: BTreeMap<u64, bytes::Bytes> = fetch_all(&conn, &Owner::new(seed), 0)
            .await
            .into_iter()
            .collect();
        for (seq, tag) in puts {
            let blob_bytes = stored
                .get(&seq)
                .unwrap_or_else(|| panic!("acknowledged put {seq} of mailbox {seed} was lost"));
            assert_eq!(
                blob_bytes.as_ref(),
                blob(tag).as_bytes(),
                "blob {seq} corrupted"
            );
            checked += 1;
        }
    }
    checked
}

/// The short version of the crash soak (the long one is behind a flag, in
/// the crash-consistency suite): three kill -9 cycles under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_concurrent_puts_loses_no_acknowledged_put() {
    kill_9_soak("sled").await;
}

/// The same soak on the LSM engine (issue 23 item 4): a put is
/// acknowledged only after fjall's journal was synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_kill_9_under_concurrent_puts_loses_no_acknowledged_put() {
    let dir = tempfile::tempdir().unwrap();
    kill_9_soak_in(dir.path(), "fjall").await;
    assert!(
        dir.path().join("fjall").is_dir() && !dir.path().join("db").exists(),
        "the relay ran on fjall"
    );
}

async fn kill_9_soak(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    kill_9_soak_in(dir.path(), engine).await;
}

async fn kill_9_soak_in(dir: &Path, engine: &str) {
    let acked: Acked = Arc::default();
    let cycles: u8 = std::env::var("SOTTO_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for cycle in 0..cycles {
        let mut relay = spawn_relay(dir, engine);
        let mut putters = Vec::new();
        for writer in 0..6u8 {
            let seed = cycle.wrapping_mul(6).wrapping_add(writer);
            putters.push(tokio::spawn(put_until_the_relay_dies(
                relay.addr,
                seed,
                acked.clone(),
            )));
        }
        // Let puts flow, then kill without warning at a point that varies.
        tokio::time::sleep(Duration::from_millis(300 + 70 * u64::from(cycle))).await;
        relay.child.kill().unwrap();
        relay.child.wait().unwrap();
        // Puts in flight at the kill were never acknowledged; their clients
        // would only notice the dead relay at the idle timeout.
        for putter in putters {
            putter.abort();
            let _ = putter.await;
        }
        let mut restarted = spawn_relay(dir, engine);
        let checked = assert_nothing_acknowledged_is_lost(restarted.addr, &acked).await;
        assert!(
            checked > 0,
            "cycle {cycle}: some puts were acknowledged before the kill"
        );
        restarted.child.kill().unwrap();
        restarted.child.wait().unwrap();
    }
}

/// A relay whose stdout nobody reads (a closed pipe) keeps running:
/// printing its address must never panic it.
#[tokio::test]
async fn a_closed_stdout_does_not_stop_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(support::relay_bin())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path())
        .env("SOTTO_LOG", "warn")
        .stdout(writer)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The certificate exists once the relay is up; its hash is the pin.
    let cert = dir.path().join("relay-cert.der");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cert.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = RelayAddr {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        fingerprint: sotto_relay::fingerprint(&std::fs::read(&cert).unwrap()),
    };
    let conn = RelayConnection::connect(&addr, None)
        .await
        .expect("the relay is still up");
    conn.ping().await.unwrap();
    assert!(child.try_wait().unwrap().is_none(), "the relay exited");
    child.kill().unwrap();
    child.wait().unwrap();
}
