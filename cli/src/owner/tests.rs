//! The in-process interface `sotto chat` builds on: an [`OwnerHandle`]
//! from [`start`], and one from [`attach`] through another owner's socket,
//! against an embedded relay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use sotto_core::{App, KeySource, RelayTarget, system_clock};
use tokio::sync::broadcast;

use super::*;

/// Waits for a `message` notification with `text`.
async fn message(notes: &mut broadcast::Receiver<Notification>, text: &str) -> Notification {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let note = notes.recv().await.unwrap();
            if note.method == "message" && note.params["text"] == text {
                return note;
            }
        }
    })
    .await
    .expect("the message in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_in_process_and_through_the_socket_answer_alike() {
    let dir = tempfile::tempdir().unwrap();
    let server = sotto_relay::Server::start(sotto_relay::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("relay"),
        ..sotto_relay::Config::default()
    })
    .await
    .unwrap();
    let relay = RelayTarget {
        addr: server.local_addr().to_string(),
        fingerprint: server.fingerprint(),
    };
    let bootstrap = server.new_bootstrap_code().unwrap().to_owned();
    let home = |name: &str| dir.path().join(name);
    let mut alice = App::create_team(
        &home("alice"),
        KeySource::key_file_in(&home("alice")),
        relay,
        &bootstrap,
        "acme",
        "alice",
        system_clock(),
    )
    .await
    .unwrap();
    let code = alice.invite("bob", 3600).await.unwrap();
    let bob = App::join(
        &home("bob"),
        KeySource::key_file_in(&home("bob")),
        &code,
        system_clock(),
    )
    .await
    .unwrap();

    let (handle, owner) = start(&home("bob"), bob).await.unwrap();
    let mut notes = handle.subscribe();
    let me = handle.call("whoami", json!({})).await.unwrap();
    assert_eq!(me["handle"], "bob");
    assert_eq!(me["team"], "acme");
    alice.send("bob", "in process").await.unwrap();
    let note = message(&mut notes, "in process").await;
    assert_eq!(note.params["from"], "alice");
    let sent = handle
        .call("send", json!({"to": "alice", "text": "back"}))
        .await
        .unwrap();
    assert_eq!(sent["status"], "sent");

    // A second client attaches through the socket: same answers.
    let Attached::Remote(remote) = attach(&home("bob"), "test").await.unwrap() else {
        panic!("the profile has an owner already");
    };
    let mut remote_notes = remote.subscribe();
    assert_eq!(remote.call("whoami", json!({})).await.unwrap(), me);
    assert_eq!(
        remote
            .call("history", json!({"with": "alice"}))
            .await
            .unwrap(),
        handle
            .call("history", json!({"with": "alice"}))
            .await
            .unwrap()
    );
    let error = remote.call("no.such", json!({})).await.unwrap_err();
    assert_eq!(error.code, RpcError::NO_METHOD);
    let error = handle
        .call("send", json!({"to": "zed", "text": "x"}))
        .await
        .unwrap_err();
    assert_eq!(error.code, 4, "{}", error.message);
    alice.send("bob", "through the socket").await.unwrap();
    message(&mut remote_notes, "through the socket").await;

    owner.shutdown().await.unwrap();
    assert!(!home("bob").join(SOCKET_FILE).exists());
    assert!(remote.call("whoami", json!({})).await.is_err());
    // The profile opens again after a clean stop.
    drop(
        App::open(
            &home("bob"),
            KeySource::key_file_in(&home("bob")),
            system_clock(),
        )
        .await
        .unwrap(),
    );
}
