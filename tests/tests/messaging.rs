//! 1:1 messaging end to end: real relay on loopback, real clients over real
//! sled stores, one manual clock.
#![allow(clippy::unwrap_used)]

use sotto_core::{
    EPOCH_SECS, Engine, Epoch, MemoryStore, Received, RelayConnection, Status, Store,
};
use std::sync::Arc;

use sotto_proto::{Blob, MailboxId};
use sotto_relay::Clock as _;
use sotto_tests::{
    Member, Recording, TestRelay, clock_of, contains, directory_bytes, introduce, relay_addr,
};

fn now_ms(relay: &TestRelay) -> u64 {
    clock_of(&relay.clock)()
}

fn received_texts(member: &Member, peer: &str) -> Vec<String> {
    member
        .client
        .engine()
        .history(peer)
        .unwrap()
        .into_iter()
        .filter(|m| !m.from_me)
        .map(|m| m.text)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_exchange_1000_messages_across_an_epoch_and_a_relay_restart() {
    let mut relay = TestRelay::start().await;
    let mut alice = Member::new("alice", &relay);
    let mut bob = Member::new("bob", &relay);
    introduce(&mut alice, &mut bob);
    let start_epoch = Epoch::from_unix_secs(relay.clock.now_secs(), EPOCH_SECS);
    for round in 0..10u32 {
        if round == 5 {
            relay.restart().await;
            alice.set_relay(&relay);
            bob.set_relay(&relay);
        }
        for i in 0..50 {
            let n = round * 50 + i;
            alice
                .client
                .engine_mut()
                .queue_text("bob", &format!("a{n}"), now_ms(&relay))
                .unwrap();
            bob.client
                .engine_mut()
                .queue_text("alice", &format!("b{n}"), now_ms(&relay))
                .unwrap();
        }
        alice.client.deliver().await.unwrap();
        bob.client.deliver().await.unwrap();
        bob.client.sync().await.unwrap();
        alice.client.sync().await.unwrap();
        // Twenty minutes per round: the run crosses three epoch boundaries.
        relay.clock.advance_secs(1200);
    }
    bob.client.sync().await.unwrap();
    alice.client.sync().await.unwrap();
    let end_epoch = Epoch::from_unix_secs(relay.clock.now_secs(), EPOCH_SECS);
    assert!(end_epoch.get() >= start_epoch.get() + 3);

    let expected_a: Vec<String> = (0..500).map(|n| format!("a{n}")).collect();
    let expected_b: Vec<String> = (0..500).map(|n| format!("b{n}")).collect();
    assert_eq!(
        received_texts(&bob, "alice"),
        expected_a,
        "exactly once, in order"
    );
    assert_eq!(
        received_texts(&alice, "bob"),
        expected_b,
        "exactly once, in order"
    );
    // Delivered receipts came back for every message.
    let alice_sent = alice.client.engine().history("bob").unwrap();
    assert!(
        alice_sent
            .iter()
            .filter(|m| m.from_me)
            .all(|m| m.status == Status::Delivered)
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_client_rebuilt_from_its_store_continues_its_sessions() {
    let relay = TestRelay::start().await;
    let mut alice = Member::new("alice", &relay);
    let mut bob = Member::new("bob", &relay);
    introduce(&mut alice, &mut bob);
    alice.client.send_text("bob", "hello").await.unwrap();
    bob.client.sync().await.unwrap();
    bob.client.send_text("alice", "hi").await.unwrap();
    alice.client.sync().await.unwrap();
    let sessions = (
        alice.client.engine().session_count("bob"),
        bob.client.engine().session_count("alice"),
    );

    alice.reopen();
    bob.reopen();
    alice
        .client
        .send_text("bob", "after restart")
        .await
        .unwrap();
    bob.client.sync().await.unwrap();
    bob.client.send_text("alice", "me too").await.unwrap();
    alice.client.sync().await.unwrap();
    assert_eq!(
        received_texts(&bob, "alice"),
        vec!["hello", "after restart"]
    );
    assert_eq!(received_texts(&alice, "bob"), vec!["hi", "me too"]);
    assert_eq!(
        (
            alice.client.engine().session_count("bob"),
            bob.client.engine().session_count("alice")
        ),
        sessions,
        "no new pre-key session after the restart"
    );
    relay.stop().await;
}

fn engine(handle: &str) -> Engine {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
    Engine::create(store, handle, sotto_relay::testing::T0).unwrap()
}

#[test]
fn duplicates_yield_one_message_and_out_of_order_blobs_all_decrypt() {
    let mut alice = engine("alice");
    let mut bob = engine("bob");
    let alice_card = alice.export_card();
    bob.import_card(&alice_card).unwrap();
    alice.import_card(&bob.export_card()).unwrap();
    let now = sotto_relay::testing::T0;
    for n in 0..5 {
        alice
            .queue_text("bob", &format!("m{n}"), now * 1000)
            .unwrap();
    }
    let blobs: Vec<Blob> = alice
        .outgoing(now)
        .unwrap()
        .into_iter()
        .map(|o| o.blob)
        .collect();
    let epoch = Epoch::from_unix_secs(now, EPOCH_SECS);
    let mut texts = Vec::new();
    for index in [4, 1, 1, 0, 3, 4, 2] {
        match bob.receive(blobs[index].as_bytes(), epoch).unwrap() {
            Received::Message(m) => texts.push(m.text),
            Received::Duplicate => texts.push("dup".into()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(texts, vec!["m4", "m1", "dup", "m0", "m3", "dup", "m2"]);
    assert_eq!(bob.history("alice").unwrap().len(), 5);
}

#[test]
fn blobs_that_fail_any_check_are_dropped_never_shown() {
    let mut alice = engine("alice");
    let mut bob = engine("bob");
    let mut mallory = engine("mallory");
    bob.import_card(&alice.export_card()).unwrap();
    alice.import_card(&bob.export_card()).unwrap();
    mallory.import_card(&bob.export_card()).unwrap();
    let now = sotto_relay::testing::T0;
    let epoch = Epoch::from_unix_secs(now, EPOCH_SECS);

    // A stranger (not in bob's contacts) writes to bob.
    mallory
        .queue_text("bob", "hi, it's alice", now * 1000)
        .unwrap();
    let from_stranger = mallory.outgoing(now).unwrap().remove(0).blob;
    assert!(matches!(
        bob.receive(from_stranger.as_bytes(), epoch).unwrap(),
        Received::Dropped(sotto_core::Dropped::UnknownSender)
    ));
    // Garbage of a bucket size.
    assert!(matches!(
        bob.receive(&[7u8; 1024], epoch).unwrap(),
        Received::Dropped(sotto_core::Dropped::Unsealable)
    ));
    // A genuine blob replayed into a far-away epoch's mailbox.
    alice.queue_text("bob", "real", now * 1000).unwrap();
    let real = alice.outgoing(now).unwrap().remove(0).blob;
    assert!(matches!(
        bob.receive(real.as_bytes(), Epoch::new(epoch.get() + 5))
            .unwrap(),
        Received::Dropped(sotto_core::Dropped::BadEnvelope)
    ));
    assert!(bob.history("alice").unwrap().is_empty());
    assert!(matches!(
        bob.receive(real.as_bytes(), epoch).unwrap(),
        Received::Message(_)
    ));
}

#[tokio::test]
async fn catch_up_after_30_offline_hours_receives_everything() {
    let relay = TestRelay::start().await;
    let mut alice = Member::new("alice", &relay);
    let mut bob = Member::new("bob", &relay);
    introduce(&mut alice, &mut bob);
    bob.client.sync().await.unwrap();
    for hour in 0..30 {
        alice
            .client
            .send_text("bob", &format!("hour {hour}"))
            .await
            .unwrap();
        relay.clock.advance_secs(3600);
    }
    let connections = || {
        relay
            .server()
            .relay()
            .stats()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = connections();
    let report = bob.client.sync().await.unwrap();
    assert_eq!(report.messages.len(), 30);
    // DESIGN §2.2: every epoch is read on a connection of its own (31
    // epochs here, plus the connection that sends the receipts).
    assert!(
        connections() - before >= 31,
        "{} connections",
        connections() - before
    );
    let expected: Vec<String> = (0..30).map(|h| format!("hour {h}")).collect();
    assert_eq!(received_texts(&bob, "alice"), expected);
    relay.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_between_fetching_and_storing_gets_the_message_next_time() {
    let relay = TestRelay::start().await;
    let mut alice = Member::new("alice", &relay);
    let mut bob = Member::new("bob", &relay);
    introduce(&mut alice, &mut bob);
    alice
        .client
        .send_text("bob", "don't lose me")
        .await
        .unwrap();

    // Bob fetches and starts processing, then "crashes" before acking.
    let conn = RelayConnection::connect(&relay_addr(&relay), None)
        .await
        .unwrap();
    let now = relay.clock.now_secs();
    let inboxes = bob.client.engine().inboxes(now, 2).unwrap();
    let mut fetched = 0;
    for inbox in &inboxes {
        for blob in conn.fetch(inbox, 0, 0).await.unwrap().blobs {
            fetched += 1;
            bob.client
                .engine_mut()
                .receive(&blob.blob, inbox.epoch())
                .unwrap();
        }
    }
    assert_eq!(fetched, 1);
    conn.close().await;
    bob.reopen();

    bob.client.sync().await.unwrap();
    assert_eq!(
        received_texts(&bob, "alice"),
        vec!["don't lose me"],
        "exactly once"
    );
    relay.stop().await;
}

/// DESIGN §2: what the relay sees and stores links nothing. Every mailbox
/// ID it saw belongs to one epoch; none is or contains a long-term key; its
/// database holds no plaintext, handle, or long-term key.
#[tokio::test]
async fn the_relay_sees_only_rotating_ids_and_stores_no_plaintext_handle_or_key() {
    let clock = sotto_relay::ManualClock::at_secs(sotto_relay::testing::T0);
    let (recording, server, dir) = Recording::start(&clock);
    let addr = sotto_core::RelayAddr {
        addr: server.local_addr(),
        fingerprint: server.fingerprint(),
    };
    let mut alice = Member::new_at("alice-handle", addr, &clock);
    let mut bob = Member::new_at("bob-handle", addr, &clock);
    introduce(&mut alice, &mut bob);

    let mut epoch_of: std::collections::HashMap<MailboxId, u64> = Default::default();
    let mut long_term_keys = Vec::new();
    for member in [&alice, &bob] {
        let card = sotto_core::Card::import(&member.client.engine().export_card())
            .unwrap()
            .0;
        long_term_keys.push(card.identity_key.to_bytes().to_vec());
        long_term_keys.push(card.signing_key.as_bytes().to_vec());
        long_term_keys.push(card.envelope_key.as_bytes().to_vec());
        long_term_keys.push(card.inbox_key.as_bytes().to_vec());
        long_term_keys.push(card.fallback_key.to_bytes().to_vec());
    }
    for hour in 0..4 {
        let now = clock.now_secs();
        for member in [&alice, &bob] {
            for inbox in member.client.engine().inboxes(now, 1).unwrap() {
                epoch_of.insert(inbox.mailbox_id(), inbox.epoch().get());
                for key in &long_term_keys {
                    assert!(!contains(inbox.blinded_key().as_bytes(), key));
                }
            }
        }
        alice
            .client
            .send_text("bob-handle", &format!("secret plaintext {hour}"))
            .await
            .unwrap();
        bob.client
            .send_text("alice-handle", &format!("secret reply {hour}"))
            .await
            .unwrap();
        alice.client.sync().await.unwrap();
        bob.client.sync().await.unwrap();
        clock.advance_secs(3600);
    }
    assert_eq!(received_texts(&bob, "alice-handle").len(), 4);
    let seen = recording.mailboxes();
    assert!(!seen.is_empty());
    for mailbox in &seen {
        for key in &long_term_keys {
            assert!(
                !contains(mailbox.as_bytes(), key),
                "a mailbox ID contains a long-term key"
            );
        }
    }
    // Each mailbox the relay saw belongs to exactly one epoch: the IDs
    // rotate, none repeats across epochs.
    let epochs_per_mailbox: std::collections::HashMap<MailboxId, std::collections::HashSet<u64>> =
        seen.iter().fold(Default::default(), |mut map, m| {
            if let Some(epoch) = epoch_of.get(m) {
                map.entry(*m).or_default().insert(*epoch);
            }
            map
        });
    assert!(epochs_per_mailbox.values().all(|epochs| epochs.len() == 1));
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert!(distinct.len() >= 4, "new IDs every epoch");

    server.shutdown().await;
    let raw = directory_bytes(dir.path());
    for needle in [b"secret".as_slice(), b"alice-handle", b"bob-handle"] {
        assert!(
            !contains(&raw, needle),
            "{} found in the relay's data",
            String::from_utf8_lossy(needle)
        );
    }
    for key in &long_term_keys {
        assert!(
            !contains(&raw, key),
            "a long-term key found in the relay's data"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_gets_pushes_rotates_its_connection_each_epoch_and_read_receipts_flow() {
    let relay = TestRelay::start().await;
    let mut alice = Member::new("alice", &relay);
    let mut bob = Member::new("bob", &relay);
    introduce(&mut alice, &mut bob);
    let (listener, mut rx, stop) = spawn_listen(bob);
    alice.client.send_text("bob", "one").await.unwrap();
    assert_eq!(next_text(&mut rx).await, "one");
    // Wait until the first cycle holds its live subscription (its opening
    // sync is over), so what follows can only arrive through a new cycle.
    until_subscribed(&relay).await;
    // Into the next epoch: the listener drains and resubscribes on a new
    // connection, and the message sent to the new epoch's mailbox arrives.
    relay.clock.advance_secs(3600);
    alice.client.send_text("bob", "two").await.unwrap();
    assert_eq!(next_text(&mut rx).await, "two");
    stop.send(()).unwrap();
    let (mut bob, listened) = listener.await.unwrap();
    listened.unwrap();
    assert!(
        bob.client.epochs_listened() >= 2,
        "a new cycle, with a fresh receive connection, per epoch"
    );

    assert_eq!(bob.client.mark_read("alice").unwrap(), 2);
    // The receipt waits in bob's outbox for his next delivery.
    alice.client.sync().await.unwrap();
    assert_eq!(
        statuses(&alice, "bob"),
        vec![Status::Delivered, Status::Delivered]
    );
    bob.client.sync().await.unwrap();
    alice.client.sync().await.unwrap();
    assert_eq!(statuses(&alice, "bob"), vec![Status::Read, Status::Read]);
    assert_eq!(
        bob.client.mark_read("alice").unwrap(),
        0,
        "nothing new to mark"
    );
    relay.stop().await;
}

/// `listen` acks each push without waiting in line for the reply. A reply
/// comes on the stream behind pushes, and the transport stops reading while
/// its push queue (1,024) is full: a burst larger than the queue and the
/// relay's outbox together used to stall the listener on its first ack until
/// the 30 s request timeout, and `listen` failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_keeps_up_with_a_burst_larger_than_its_push_queue() {
    const BURST: usize = 4_000;
    let relay = TestRelay::start().await;
    let bob = Member::new("bob", &relay);
    let mailbox = request_inbox(&bob, &relay);
    let (listener, _texts, stop) = spawn_listen(bob);
    until_subscribed(&relay).await;

    // Blobs nobody sealed: the listener drops each and acks it.
    put_unsealed(&relay, &mailbox, BURST).await;

    // Every blob is acked (the relay holds none) well before a request
    // would time out, and listen is still running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    loop {
        let left = blobs_held(&relay, &mailbox);
        if left == 0 {
            break;
        }
        assert!(
            !listener.is_finished(),
            "listen ended with {left} blobs unacked"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "{left} of {BURST} blobs still unacked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    listener.await.unwrap().1.unwrap();
    relay.stop().await;
}

/// DESIGN §2.8: what pushes call for (acks, delivered receipts) waits a
/// random 1 to 5 s and goes out in one batch, so its timing does not pair
/// a sender's put with its recipient. Before, each push was acked at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_answers_pushes_together_after_a_random_wait_of_one_to_five_seconds() {
    const BLOBS: usize = 20;
    let relay = TestRelay::start().await;
    let mut alice = Member::new("alice", &relay);
    let mut bob = Member::new("bob", &relay);
    introduce(&mut alice, &mut bob);
    let mailbox = request_inbox(&bob, &relay);
    let (listener, mut rx, stop) = spawn_listen(bob);
    until_subscribed(&relay).await;

    put_unsealed(&relay, &mailbox, BLOBS).await;
    let put = std::time::Instant::now();
    // Pushed at once, but not acked before the shortest wait.
    tokio::time::sleep(sotto_core::ANSWER_DELAY_MIN / 2).await;
    assert_eq!(blobs_held(&relay, &mailbox), BLOBS as u64, "acked too soon");
    let deadline = put + sotto_core::ANSWER_DELAY_MAX + std::time::Duration::from_secs(5);
    while blobs_held(&relay, &mailbox) > 0 {
        assert!(std::time::Instant::now() < deadline, "never acked");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(put.elapsed() >= sotto_core::ANSWER_DELAY_MIN);

    // A message's delivered receipt waits the same way.
    alice.client.send_text("bob", "hello").await.unwrap();
    let sent = std::time::Instant::now();
    assert_eq!(next_text(&mut rx).await, "hello");
    let status = |alice: &Member| alice.client.engine().history("bob").unwrap()[0].status;
    alice.client.sync().await.unwrap();
    if sent.elapsed() < sotto_core::ANSWER_DELAY_MIN {
        assert_eq!(status(&alice), Status::Sent, "receipt sent too soon");
    }
    let deadline = sent + sotto_core::ANSWER_DELAY_MAX + std::time::Duration::from_secs(5);
    while status(&alice) != Status::Delivered {
        assert!(std::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        alice.client.sync().await.unwrap();
    }
    assert!(sent.elapsed() >= sotto_core::ANSWER_DELAY_MIN);
    stop.send(()).unwrap();
    listener.await.unwrap().1.unwrap();
    relay.stop().await;
}

/// With read receipts off, reading marks messages read on this device only:
/// the sender's copy stays "delivered".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_off_marks_read_here_and_tells_no_one() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = alice_and_bob(&relay);
    assert!(
        bob.client.engine().read_receipts().unwrap(),
        "on by default"
    );
    bob.client.engine_mut().set_read_receipts(false).unwrap();
    assert!(!bob.client.engine().read_receipts().unwrap());
    alice.client.send_text("bob", "secret").await.unwrap();
    bob.client.sync().await.unwrap();
    assert_eq!(bob.client.mark_read("alice").unwrap(), 1);
    bob.client.sync().await.unwrap();
    alice.client.sync().await.unwrap();
    assert_eq!(
        alice.client.engine().history("bob").unwrap()[0].status,
        Status::Delivered
    );
    assert_eq!(bob.client.mark_read("alice").unwrap(), 0, "marked here");
    relay.stop().await;
}

/// A live client marks what was shown read with its next answer, 1 to 5 s
/// after the push that opened it, never at once; a message that arrives
/// after it was shown stays unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_client_sends_read_marks_with_its_next_answer_and_only_for_what_was_shown() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = alice_and_bob(&relay);
    let mut subscription = bob.client.subscribe().await.unwrap();
    until_subscribed(&relay).await;
    // Takes pushes until `texts` messages came in; answers whatever falls
    // due meanwhile.
    async fn take(bob: &mut Member, subscription: &mut sotto_core::Subscription, texts: usize) {
        let mut got = 0;
        while got < texts {
            match subscription.next().await.unwrap() {
                Some(push) => {
                    let taken = bob.client.take_push(subscription, push).await.unwrap();
                    got += taken.report.messages.len();
                }
                None => {
                    bob.client.answer_due(subscription).await.unwrap();
                }
            }
        }
    }
    alice.client.send_text("bob", "one").await.unwrap();
    take(&mut bob, &mut subscription, 1).await;
    let pushed = std::time::Instant::now();
    bob.client
        .mark_read_later(&mut subscription, "alice")
        .unwrap();
    alice.client.send_text("bob", "two").await.unwrap();
    take(&mut bob, &mut subscription, 1).await;
    alice.client.sync().await.unwrap();
    if pushed.elapsed() < sotto_core::ANSWER_DELAY_MIN {
        assert_ne!(
            statuses(&alice, "bob")[0],
            Status::Read,
            "read receipt sent at once"
        );
    }
    let deadline = pushed + sotto_core::ANSWER_DELAY_MAX + std::time::Duration::from_secs(5);
    loop {
        if subscription.next().await.unwrap().is_none() {
            bob.client.answer_due(&mut subscription).await.unwrap();
        }
        alice.client.sync().await.unwrap();
        if statuses(&alice, "bob")[0] == Status::Read {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never read");
    }
    assert!(pushed.elapsed() >= sotto_core::ANSWER_DELAY_MIN);
    bob.client.end_subscription(subscription).await.unwrap();
    alice.client.sync().await.unwrap();
    assert_eq!(
        statuses(&alice, "bob"),
        vec![Status::Read, Status::Delivered],
        "\"two\" came after the conversation was shown"
    );
    relay.stop().await;
}

/// Unread counts start at the read mark, and a conversation reads back
/// from its end in pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_follow_the_read_mark_and_history_reads_in_pages() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = alice_and_bob(&relay);
    for n in 1..=5 {
        alice
            .client
            .send_text("bob", &format!("m{n}"))
            .await
            .unwrap();
    }
    bob.client.sync().await.unwrap();
    bob.client.send_text("alice", "mine").await.unwrap();
    assert_eq!(
        bob.client.engine().unread("alice").unwrap(),
        5,
        "mine not counted"
    );
    let page = bob.client.engine().history_page("alice", None, 3).unwrap();
    let texts: Vec<&str> = page.iter().map(|(_, m)| m.text.as_str()).collect();
    assert_eq!(texts, ["m4", "m5", "mine"]);
    let above = bob
        .client
        .engine()
        .history_page("alice", Some(page[0].0), 2)
        .unwrap();
    let texts: Vec<&str> = above.iter().map(|(_, m)| m.text.as_str()).collect();
    assert_eq!(texts, ["m2", "m3"]);
    assert!(matches!(
        bob.client.engine().history_page("zed", None, 3),
        Err(sotto_core::EngineError::UnknownContact(_))
    ));
    assert_eq!(bob.client.mark_read("alice").unwrap(), 5);
    assert_eq!(bob.client.engine().unread("alice").unwrap(), 0);
    alice.client.send_text("bob", "m6").await.unwrap();
    bob.client.sync().await.unwrap();
    assert_eq!(bob.client.engine().unread("alice").unwrap(), 1);
    relay.stop().await;
}

/// An inbox holding more blobs than one ack may name is acked in several
/// requests. sync used to name them all in one ack, the relay refused it,
/// and every later sync failed the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_acks_more_blobs_than_one_ack_may_name() {
    let relay = TestRelay::start().await;
    let mut bob = Member::new("bob", &relay);
    let mailbox = request_inbox(&bob, &relay);
    let count = sotto_proto::MAX_ACK_SEQS + 100;
    put_unsealed(&relay, &mailbox, count).await;
    assert_eq!(blobs_held(&relay, &mailbox), count as u64);
    bob.client.sync().await.unwrap();
    assert_eq!(blobs_held(&relay, &mailbox), 0, "every blob acked");
    bob.client.sync().await.unwrap();
    relay.stop().await;
}

/// Issue 18 item 7: the request inbox is read on a connection of its own,
/// by sync and by a live subscription. Its public key is in the member's
/// directory entry, so an admin who runs the relay could label a connection
/// that reads it and map the member's pairwise inboxes read alongside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_inbox_is_read_on_a_connection_of_its_own() {
    let relay = TestRelay::start().await;
    let mut alice = Member::new("alice", &relay);
    let mut bob = Member::new("bob", &relay);
    introduce(&mut alice, &mut bob);
    let request = request_inbox(&bob, &relay);
    let alone = |connections: &[Vec<MailboxId>]| {
        for connection in connections {
            assert!(
                !connection.contains(&request) || connection.len() == 1,
                "the request inbox shares a connection with {} other mailboxes",
                connection.len() - 1
            );
        }
        assert!(
            connections
                .iter()
                .any(|c| c == std::slice::from_ref(&request)),
            "the request inbox is read"
        );
        assert!(
            connections.iter().any(|c| !c.contains(&request)),
            "the pairwise inbox is read"
        );
    };

    alone(&bob.client.read_plan().unwrap());
    alice.client.send_text("bob", "one").await.unwrap();
    let report = bob.client.sync().await.unwrap();
    assert_eq!(report.messages.len(), 1);
    // Bob's reply names his pairwise inbox, where alice writes from now on.
    bob.client.send_text("alice", "hi").await.unwrap();
    alice.client.sync().await.unwrap();

    let mut subscription = bob.client.subscribe().await.unwrap();
    alone(&subscription.connections());
    assert_eq!(
        relay
            .server()
            .relay()
            .stats()
            .open_connections
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "two receive connections are open"
    );
    // A message (after alice's delivered receipt for "hi") still arrives,
    // on the pairwise inbox's connection.
    alice.client.send_text("bob", "two").await.unwrap();
    let message = loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(15), subscription.next())
            .await
            .expect("a push within 15 s")
            .unwrap();
        let Some(push) = next else { continue };
        assert_ne!(push.mailbox, request);
        let taken = bob.client.take_push(&mut subscription, push).await.unwrap();
        if let Some(message) = taken.report.messages.into_iter().next() {
            break message;
        }
    };
    assert_eq!(message.text, "two");
    bob.client.end_subscription(subscription).await.unwrap();
    relay.stop().await;
}

/// The statuses of `member`'s history with `peer`, oldest first.
fn statuses(member: &Member, peer: &str) -> Vec<Status> {
    member
        .client
        .engine()
        .history(peer)
        .unwrap()
        .iter()
        .map(|m| m.status)
        .collect()
}

/// alice and bob on `relay`, each with the other's card.
fn alice_and_bob(relay: &TestRelay) -> (Member, Member) {
    let mut alice = Member::new("alice", relay);
    let mut bob = Member::new("bob", relay);
    introduce(&mut alice, &mut bob);
    (alice, bob)
}

/// Runs `member`'s `listen` on a task until `stop` is sent. The texts of
/// the messages it hands over come on the receiver; the task gives the
/// member back with what `listen` returned.
#[allow(clippy::type_complexity)]
fn spawn_listen(
    mut member: Member,
) -> (
    tokio::task::JoinHandle<(Member, Result<(), sotto_core::ClientError>)>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::spawn(async move {
        let listened = member
            .client
            .listen(
                |message| {
                    let _ = tx.send(message.text.clone());
                },
                async {
                    let _ = stopped.await;
                },
            )
            .await;
        (member, listened)
    });
    (listener, rx, stop)
}

/// Waits (up to 15 s) until some connection holds a subscription.
async fn until_subscribed(relay: &TestRelay) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while relay.server().relay().subscription_count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never subscribed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The mailbox of `member`'s request inbox this epoch (its only one while
/// it has no contacts).
fn request_inbox(member: &Member, relay: &TestRelay) -> MailboxId {
    member
        .client
        .engine()
        .inboxes(relay.clock.now_secs(), 1)
        .unwrap()
        .remove(0)
        .mailbox_id()
}

/// Puts `count` 1 KiB blobs that nobody sealed (a client drops them) into
/// `mailbox`.
async fn put_unsealed(relay: &TestRelay, mailbox: &MailboxId, count: usize) {
    let sender = RelayConnection::connect(&relay_addr(relay), None)
        .await
        .unwrap();
    let blob = Blob::new(vec![7u8; 1024].into()).unwrap();
    let mut left = count;
    while left > 0 {
        let batch = left.min(100);
        let puts = (0..batch).map(|_| sender.put(mailbox, &blob, 0));
        for put in futures::future::join_all(puts).await {
            put.unwrap();
        }
        left -= batch;
    }
    sender.close().await;
}

/// How many blobs the relay holds for `mailbox`.
fn blobs_held(relay: &TestRelay, mailbox: &MailboxId) -> u64 {
    let storage = relay.server().relay().storage();
    sotto_relay::Storage::mailbox_usage(&**storage, mailbox).count
}

async fn next_text(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(15), rx.recv())
        .await
        .expect("a message within 15 s")
        .expect("the listener is running")
}

/// Issue 26: every blob the relay stores between two post-quantum devices
/// is hybrid: the first contact is version 3 (4 KiB for a short text),
/// and once the other side has answered every blob either way is version
/// 4 in the 1 KiB bucket, the bytes of a classical blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_blob_the_relay_stores_between_post_quantum_devices_is_hybrid() {
    let clock = sotto_relay::ManualClock::at_secs(sotto_relay::testing::T0);
    let (recording, server, _dir) = Recording::start(&clock);
    let addr = sotto_core::RelayAddr {
        addr: server.local_addr(),
        fingerprint: server.fingerprint(),
    };
    let mut alice = Member::new_at("alice", addr, &clock);
    let mut bob = Member::new_at("bob", addr, &clock);
    introduce(&mut alice, &mut bob);
    let sizes_since = |from: usize| -> Vec<(usize, u8)> {
        recording.puts()[from..]
            .iter()
            .map(|(_, size, version)| (*size, *version))
            .collect()
    };
    let before = recording.puts().len();
    alice.client.send_text("bob", "hello").await.unwrap();
    assert_eq!(
        sizes_since(before),
        [(4096, sotto_core::HYBRID_SEAL_VERSION)]
    );
    bob.client.sync().await.unwrap();
    bob.client.send_text("alice", "hi").await.unwrap();
    alice.client.sync().await.unwrap();
    // Bob's sync may have sealed a receipt to alice before it read her
    // first contact, starting an encapsulation of his own; then the
    // smaller identity key's wins and the other side's version-4 blob
    // confirms it one exchange later. After that exchange every blob is
    // version 4, whichever key is smaller (both orders occur: the keys
    // are random).
    alice.client.send_text("bob", "again").await.unwrap();
    bob.client.send_text("alice", "again").await.unwrap();
    alice.client.sync().await.unwrap();
    bob.client.sync().await.unwrap();
    for round in 0..3 {
        let before = recording.puts().len();
        alice
            .client
            .send_text("bob", &format!("a{round}"))
            .await
            .unwrap();
        bob.client
            .send_text("alice", &format!("b{round}"))
            .await
            .unwrap();
        assert_eq!(
            sizes_since(before),
            [(1024, sotto_core::PAIRWISE_SEAL_VERSION); 2],
            "round {round}"
        );
        alice.client.sync().await.unwrap();
        bob.client.sync().await.unwrap();
    }
    assert_eq!(
        received_texts(&bob, "alice"),
        ["hello", "again", "a0", "a1", "a2"]
    );
    assert_eq!(
        received_texts(&alice, "bob"),
        ["hi", "again", "b0", "b1", "b2"]
    );
    for (size, version) in sizes_since(0) {
        assert!(
            [
                sotto_core::HYBRID_SEAL_VERSION,
                sotto_core::PAIRWISE_SEAL_VERSION
            ]
            .contains(&version),
            "a blob of version {version} ({size} bytes) between post-quantum devices"
        );
    }
    server.shutdown().await;
}
