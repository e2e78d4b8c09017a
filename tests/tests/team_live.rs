//! A long-running client follows the team (issue 18 item 4): `App::listen`
//! re-reads the roster, the directory key and the device lists at every
//! epoch rollover and whenever a team message arrives, so a revoked member
//! is refused and a new member is found without a restart. Real relay on
//! loopback, real stores, the relay's manual clock.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sotto_core::{App, AppError, RelayConnection};
use sotto_tests::teams::{join, team};
use sotto_tests::{TestRelay, relay_addr};
use tokio::sync::{mpsc, oneshot};

/// A revoked member whose (modified) client keeps writing: the relay here
/// does not require access tokens, so only the listening member's own
/// check stands between the blob and its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_member_refuses_a_revoked_members_messages_without_a_restart() {
    let relay = TestRelay::start().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["bob", "carol"]).await;
    let [bob, mut carol] = <[App; 2]>::try_from(joined).ok().unwrap();
    carol.send("bob", "before").await.unwrap();

    let (listener, mut messages, stop) = spawn_listen(bob);
    until_text(&mut messages, "carol", "before").await;

    // The revocation sends bob the new directory key over Olm: a team
    // message his listen takes as a push, then re-reads the team. The
    // admin's next message lands behind it in the same mailbox (sent
    // through the client: bob's entry under the new key may not be
    // published yet).
    admin.revoke("carol").await.unwrap();
    admin
        .client()
        .send_text("bob", "revoked carol")
        .await
        .unwrap();
    until_text(&mut messages, "admin", "revoked carol").await;

    // Carol's client ignores the revocation and writes on.
    put_raw(&relay, &mut carol, "bob", "after").await;
    admin.client().send_text("bob", "still here").await.unwrap();
    let seen = until_text(&mut messages, "admin", "still here").await;
    assert!(
        !seen.iter().any(|(_, text)| text == "after"),
        "a revoked member's message was shown: {seen:?}"
    );

    stop.send(()).unwrap();
    let (bob, listened) = listener.await.unwrap();
    listened.unwrap();
    assert_eq!(bob.directory_version(), 1, "the new directory key applied");
    let from_carol: Vec<String> = bob
        .history("carol")
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(from_carol, ["before"], "nothing after the revocation");
    relay.stop().await;
}

/// At the epoch rollover a listening member re-reads the roster: a member
/// who joined meanwhile is found, and their first message is taken (from a
/// device not yet known it would be dropped as from an unknown sender).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_member_finds_a_new_member_at_the_epoch_rollover() {
    let relay = TestRelay::start().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["bob"]).await;
    let [bob] = <[App; 1]>::try_from(joined).ok().unwrap();

    let (listener, mut messages, stop) = spawn_listen(bob);
    until_subscribed(&relay).await;
    let mut dave = join(&mut admin, homes.path(), "dave", &relay).await;

    // Into the next epoch: the listener ends its cycle and, before its
    // next sync, re-reads the team. The admin's message goes to the new
    // epoch's mailbox, so it is read by that sync, after the re-read.
    relay.clock.advance_secs(3600);
    admin.send("bob", "new epoch").await.unwrap();
    until_text(&mut messages, "admin", "new epoch").await;

    dave.send("bob", "hello from dave").await.unwrap();
    until_text(&mut messages, "dave", "hello from dave").await;

    stop.send(()).unwrap();
    listener.await.unwrap().1.unwrap();
    relay.stop().await;
}

type Listener = tokio::task::JoinHandle<(App, Result<(), AppError>)>;

/// Runs `app`'s `listen` on a task until `stop` is sent; (sender, text) of
/// each message it hands over comes on the receiver.
fn spawn_listen(
    mut app: App,
) -> (
    Listener,
    mpsc::UnboundedReceiver<(String, String)>,
    oneshot::Sender<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let listener = tokio::spawn(async move {
        let listened = app
            .listen(
                |message| {
                    let _ = tx.send((message.from.clone(), message.text.clone()));
                },
                async {
                    let _ = stopped.await;
                },
            )
            .await;
        (app, listened)
    });
    (listener, rx, stop)
}

/// Waits (up to 20 s) for `text` from `from`; returns every message seen
/// on the way, that one included.
async fn until_text(
    messages: &mut mpsc::UnboundedReceiver<(String, String)>,
    from: &str,
    text: &str,
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), messages.recv())
            .await
            .unwrap_or_else(|_| panic!("no {text:?} from {from} within 20 s; seen {seen:?}"))
            .expect("the listener is running");
        let done = message.0 == from && message.1 == text;
        seen.push(message);
        if done {
            return seen;
        }
    }
}

/// Waits (up to 15 s) until some connection holds a subscription.
async fn until_subscribed(relay: &TestRelay) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while relay.server().relay().subscription_count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `member` seals `text` to `to` (a contact) and puts it on a connection
/// without an access token, as a client that ignores its revocation would.
async fn put_raw(relay: &TestRelay, member: &mut App, to: &str, text: &str) {
    let now_ms = sotto_relay::Clock::now_millis(&relay.clock);
    let engine = member.client().engine_mut();
    engine.queue_text(to, text, now_ms).unwrap();
    let outgoing = engine.outgoing(now_ms / 1000).unwrap();
    let conn = RelayConnection::connect(&relay_addr(relay), None)
        .await
        .unwrap();
    for item in &outgoing {
        conn.put(&item.mailbox, &item.blob, 0).await.unwrap();
    }
    conn.close().await;
}
