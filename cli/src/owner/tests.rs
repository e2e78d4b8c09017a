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

/// An embedded relay in `dir` with `tokens`, a team "acme" whose admin is
/// `admin`, and the members `handles` joined from its invites; each home
/// is `dir/HANDLE`.
async fn team(
    dir: &std::path::Path,
    tokens: sotto_relay::TokenConfig,
    admin: &str,
    handles: &[&str],
) -> (sotto_relay::Server, App, Vec<App>) {
    let server = sotto_relay::Server::start(sotto_relay::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("relay"),
        tokens,
        ..sotto_relay::Config::default()
    })
    .await
    .unwrap();
    let relay = RelayTarget {
        addr: server.local_addr().to_string(),
        fingerprint: server.fingerprint(),
    };
    let bootstrap = server.new_bootstrap_code().unwrap().to_owned();
    let mut admin_app = App::create_team(
        &dir.join(admin),
        KeySource::key_file_in(&dir.join(admin)),
        relay,
        &bootstrap,
        "acme",
        admin,
        system_clock(),
    )
    .await
    .unwrap();
    let mut members = Vec::new();
    for handle in handles {
        let code = admin_app.invite(handle, 3600).await.unwrap();
        members.push(
            App::join(
                &dir.join(handle),
                KeySource::key_file_in(&dir.join(handle)),
                &code,
                system_clock(),
            )
            .await
            .unwrap(),
        );
    }
    (server, admin_app, members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_in_process_and_through_the_socket_answer_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut alice, mut members) = team(
        dir.path(),
        sotto_relay::TokenConfig::default(),
        "alice",
        &["bob"],
    )
    .await;
    let bob = members.pop().unwrap();
    let home = |name: &str| dir.path().join(name);

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
    // Paged: the last message, then the page before it through the
    // cursor, then nothing more.
    let last = handle
        .call("history", json!({"with": "alice", "limit": 1}))
        .await
        .unwrap();
    assert_eq!(last["messages"][0]["text"], "back");
    let before = last["earlier"]
        .as_u64()
        .expect("a cursor: one more message");
    let page = handle
        .call(
            "history",
            json!({"with": "alice", "limit": 1, "before": before}),
        )
        .await
        .unwrap();
    assert_eq!(page["messages"][0]["text"], "in process");
    let first = handle
        .call(
            "history",
            json!({"with": "alice", "limit": 5, "before": page["earlier"]}),
        )
        .await
        .unwrap();
    assert_eq!(first["messages"], json!([]));
    assert!(first["earlier"].is_null());
    let error = handle
        .call("history", json!({"with": "alice", "before": 3}))
        .await
        .unwrap_err();
    assert_eq!(error.code, RpcError::INVALID_PARAMS, "{}", error.message);
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

/// Issue 18 item 4: a running owner re-reads the team when a team message
/// comes (here the new directory key a revocation sends): the revoked
/// member's messages are refused from then on, without a restart. The
/// relay does not require access tokens, so a revoked member whose client
/// ignores the revocation can still put; only the owner's own check stands
/// between that blob and the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_refuses_a_revoked_members_messages_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = sotto_relay::TokenConfig {
        require_tokens: false,
        ..sotto_relay::TokenConfig::default()
    };
    let (server, mut admin, mut members) =
        team(dir.path(), tokens, "admin", &["bob", "carol"]).await;
    let home = |name: &str| dir.path().join(name);
    let mut carol = members.pop().unwrap();
    let bob = members.pop().unwrap();
    carol.send("bob", "before").await.unwrap();

    let (handle, owner) = start(&home("bob"), bob).await.unwrap();
    let mut notes = handle.subscribe();
    message(&mut notes, "before").await;

    admin.revoke("carol").await.unwrap();
    // Behind the directory key in the same mailbox (through the client:
    // bob's entry under the new key may not be published yet).
    admin
        .client()
        .send_text("bob", "revoked carol")
        .await
        .unwrap();
    message(&mut notes, "revoked carol").await;

    // Carol's client ignores the revocation and writes on.
    let now_ms = system_clock()();
    let engine = carol.client().engine_mut();
    engine.queue_text("bob", "after", now_ms).unwrap();
    let outgoing = engine.outgoing(now_ms / 1000).unwrap();
    let addr = sotto_core::RelayAddr {
        addr: server.local_addr(),
        fingerprint: server.fingerprint(),
    };
    let conn = sotto_core::RelayConnection::connect(&addr, None)
        .await
        .unwrap();
    for item in &outgoing {
        conn.put(&item.mailbox, &item.blob, 0).await.unwrap();
    }
    conn.close().await;
    admin.client().send_text("bob", "still here").await.unwrap();
    let texts = tokio::time::timeout(Duration::from_secs(30), async {
        let mut texts = Vec::new();
        loop {
            let note = notes.recv().await.unwrap();
            if note.method == "message" {
                let text = note.params["text"].as_str().unwrap_or_default().to_owned();
                texts.push(text.clone());
                if text == "still here" {
                    return texts;
                }
            }
        }
    })
    .await
    .expect("the message in time");
    assert!(
        !texts.iter().any(|t| t == "after"),
        "a revoked member's message was shown: {texts:?}"
    );
    let history = handle
        .call("history", json!({"with": "carol"}))
        .await
        .unwrap();
    assert!(
        !history.to_string().contains("after"),
        "a revoked member's message was stored: {history}"
    );
    owner.shutdown().await.unwrap();
}

/// Issue 21: `file.send` uploads with `file.progress` notifications and
/// the member receives the file; `file.info` describes it; `file.save`
/// writes the very bytes, and a second save into the same directory
/// takes a free name instead of overwriting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_send_info_and_save_through_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, alice, mut members) = team(
        dir.path(),
        sotto_relay::TokenConfig::default(),
        "alice",
        &["bob"],
    )
    .await;
    let mut bob = members.pop().unwrap();
    let (handle, owner) = start(&dir.path().join("alice"), alice).await.unwrap();
    let mut notes = handle.subscribe();
    // Three chunks: one window of puts, then its progress.
    let bytes: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let path = dir.path().join("data.bin");
    std::fs::write(&path, &bytes).unwrap();
    let sent = handle
        .call(
            "file.send",
            json!({"to": "bob", "path": path.display().to_string(), "caption": "the data", "transfer": "t1"}),
        )
        .await
        .unwrap();
    assert_eq!(sent["status"], "sent");
    assert_eq!(sent["size"], 150_000);
    assert_eq!(sent["transfer"], "t1");
    let id = sent["id"].as_str().unwrap().to_owned();
    let mut last = None;
    while let Ok(note) = notes.try_recv() {
        if note.method == "file.progress" {
            assert_eq!(note.params["transfer"], "t1");
            assert_eq!(note.params["direction"], "up");
            assert_eq!(note.params["total"], 150_000);
            last = note.params["done"].as_u64();
        }
    }
    assert_eq!(last, Some(150_000), "the last progress is the whole file");

    let info = handle.call("file.info", json!({"id": id})).await.unwrap();
    assert_eq!(info["name"], "data.bin");
    assert_eq!(info["size"], 150_000);
    assert_eq!(info["caption"], "the data");
    assert_eq!(info["downloaded"], false);
    assert!(info["thumbnail"].is_null());

    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let first = handle
        .call(
            "file.save",
            json!({"id": id, "path": out.display().to_string()}),
        )
        .await
        .unwrap();
    assert_eq!(first["path"], out.join("data.bin").display().to_string());
    assert_eq!(std::fs::read(out.join("data.bin")).unwrap(), bytes);
    let second = handle
        .call(
            "file.save",
            json!({"id": id, "path": out.display().to_string()}),
        )
        .await
        .unwrap();
    assert_eq!(
        second["path"],
        out.join("data (1).bin").display().to_string()
    );
    assert_eq!(std::fs::read(out.join("data (1).bin")).unwrap(), bytes);
    let info = handle.call("file.info", json!({"id": id})).await.unwrap();
    assert_eq!(info["downloaded"], true);
    let error = handle
        .call(
            "file.send",
            json!({"to": "bob", "group": "ops", "path": "x"}),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, RpcError::INVALID_PARAMS);

    // bob receives it and reads the same bytes.
    let report = bob.sync().await.unwrap();
    let message = report
        .messages
        .iter()
        .find(|m| m.file.is_some())
        .expect("the file message");
    assert_eq!(message.text, "the data");
    let got = bob
        .save_file(
            &bob.resolve_message_id(&message.id).unwrap(),
            Some(&dir.path().join("bob.bin")),
            &mut |_| {},
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(got).unwrap(), bytes);
    owner.shutdown().await.unwrap();
}
