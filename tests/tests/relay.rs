//! The relay over real QUIC on loopback with real sled storage.
#![allow(clippy::unwrap_used)]

#[path = "relay_support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ed25519_dalek::{Signer, SigningKey};
use sotto_core::{NetError, RelayConnection};
use sotto_proto::wire::{self, ErrorCode, client_frame::Request};
use sotto_proto::{Bucket, SlotId, encode_frame};
use sotto_relay::Storage;
use support::{Owner, T0, TestRelay, addr, blob, connect, fetch_all, tag_of, tagged_blob};

fn refused(result: Result<impl std::fmt::Debug, NetError>) -> ErrorCode {
    match result {
        Err(NetError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn put_fetch_ack_round_trip() {
    let relay = TestRelay::start().await;
    let owner = Owner::new(1);
    let sender = connect(&relay).await;
    let seq = sender.put(&owner.mailbox(), &blob(7), 0).await.unwrap();

    let receiver = connect(&relay).await;
    let page = receiver.fetch(&owner, 0, 0).await.unwrap();
    assert_eq!(page.blobs.len(), 1);
    assert_eq!(page.blobs[0].seq, seq);
    assert_eq!(tag_of(&page.blobs[0].blob), 7);
    assert_eq!(page.blobs[0].blob.len(), 1024);

    assert_eq!(receiver.ack(&owner, vec![seq]).await.unwrap(), 1);
    assert!(receiver.fetch(&owner, 0, 0).await.unwrap().blobs.is_empty());
    assert_eq!(
        receiver.ack(&owner, vec![seq]).await.unwrap(),
        0,
        "acking twice deletes nothing"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_subscriber_gets_a_put_from_another_connection_without_polling() {
    let relay = TestRelay::start().await;
    let owner = Owner::new(1);
    let receiver = connect(&relay).await;
    let mut pushes = receiver.take_pushes().unwrap();
    receiver.subscribe(&owner, 0).await.unwrap();

    let sender = connect(&relay).await;
    let seq = sender.put(&owner.mailbox(), &blob(42), 0).await.unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(5), pushes.recv())
        .await
        .expect("push arrives without any request from the receiver")
        .unwrap();
    assert_eq!(pushed.mailbox, owner.mailbox());
    assert_eq!(pushed.seq, seq);
    assert_eq!(tag_of(&pushed.blob), 42);

    // Another mailbox's blob is not pushed here.
    sender
        .put(&Owner::new(2).mailbox(), &blob(1), 0)
        .await
        .unwrap();
    let seq2 = sender.put(&owner.mailbox(), &blob(43), 0).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), pushes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.seq, tag_of(&next.blob)), (seq2, 43));
    relay.stop().await;
}

#[tokio::test]
async fn a_subscription_first_delivers_the_backlog_after_its_cursor() {
    let relay = TestRelay::start().await;
    let owner = Owner::new(1);
    let sender = connect(&relay).await;
    let first = sender.put(&owner.mailbox(), &blob(1), 0).await.unwrap();
    sender.put(&owner.mailbox(), &blob(2), 0).await.unwrap();
    let receiver = connect(&relay).await;
    let mut pushes = receiver.take_pushes().unwrap();
    receiver.subscribe(&owner, first).await.unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(5), pushes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tag_of(&pushed.blob), 2, "only blobs after the cursor");
    relay.stop().await;
}

/// A file upload's window of puts: 64 KiB blobs, 128 in flight on one
/// connection, into one mailbox, well within its quotas. Every put is
/// stored and acknowledged; none is refused. (With blobs this large sled
/// writes and removes node files on its own threads while the relay syncs
/// them after each flush; a node file removed mid-sync failed the flush,
/// and every put it covered was refused as `Internal`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_128_large_puts_on_one_connection_all_succeed() {
    const WINDOW: u64 = 128;
    const ROUNDS: u64 = 1;
    let relay = TestRelay::start().await;
    let owner = Owner::new(3);
    let conn = std::sync::Arc::new(connect(&relay).await);
    let flushes_before = relay.server().relay().flush_count();
    for round in 0..ROUNDS {
        let mut puts = tokio::task::JoinSet::new();
        for i in 0..WINDOW {
            let conn = conn.clone();
            let mailbox = owner.mailbox();
            let tag = round * WINDOW + i;
            puts.spawn(async move {
                conn.put(&mailbox, &tagged_blob(Bucket::K64, tag), 0)
                    .await
                    .map_err(|e| (tag, e.to_string()))
            });
        }
        while let Some(put) = puts.join_next().await {
            if let Err((tag, error)) = put.unwrap() {
                panic!("put {tag} of a window of {WINDOW} was refused: {error}");
            }
        }
    }
    assert!(
        relay.server().relay().flush_count() > flushes_before,
        "the puts went through group commit"
    );
    let mut tags: Vec<u64> = fetch_all(&conn, &owner, 0)
        .await
        .iter()
        .map(|(_, blob)| tag_of(blob))
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..ROUNDS * WINDOW).collect::<Vec<_>>());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_puts_come_back_in_fifo_order() {
    let relay = TestRelay::start().await;
    let owner = Owner::new(1);
    let receiver = connect(&relay).await;
    let mut pushes = receiver.take_pushes().unwrap();
    receiver.subscribe(&owner, 0).await.unwrap();

    let sender = std::sync::Arc::new(connect(&relay).await);
    // Pipelined: many puts in flight on one connection, issued in order.
    let mut handles = Vec::new();
    for tag in 0..1000u64 {
        let sender = sender.clone();
        let mailbox = owner.mailbox();
        handles.push(tokio::spawn(async move {
            sender.put(&mailbox, &blob(tag), 0).await.unwrap()
        }));
        if tag % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    for handle in handles {
        handle.await.unwrap();
    }
    // The relay stores in the order it received; fetch and pushes agree.
    let fetched = fetch_all(&receiver, &owner, 0).await;
    assert_eq!(fetched.len(), 1000);
    assert!(fetched.windows(2).all(|w| w[0].0 < w[1].0));
    let mut pushed = Vec::new();
    while pushed.len() < 1000 {
        let push = tokio::time::timeout(Duration::from_secs(10), pushes.recv())
            .await
            .unwrap()
            .unwrap();
        pushed.push((push.seq, push.blob));
    }
    assert_eq!(pushed, fetched, "pushes arrive in exactly the stored order");

    // Sequential puts from one sender keep their send order.
    let sequential = Owner::new(9);
    for tag in 0..200u64 {
        sender
            .put(&sequential.mailbox(), &blob(tag), 0)
            .await
            .unwrap();
    }
    let tags: Vec<u64> = fetch_all(&receiver, &sequential, 0)
        .await
        .iter()
        .map(|(_, b)| tag_of(b))
        .collect();
    assert_eq!(tags, (0..200).collect::<Vec<_>>());
    relay.stop().await;
}

/// A well-behaved client keeps working and stored data stays intact after
/// someone else's bad input.
async fn assert_relay_healthy(relay: &TestRelay, owner: &Owner, expected_tags: &[u64]) {
    let other = connect(relay).await;
    let tags: Vec<u64> = fetch_all(&other, owner, 0)
        .await
        .iter()
        .map(|(_, b)| tag_of(b))
        .collect();
    assert_eq!(tags, expected_tags);
    other
        .put(&Owner::new(200).mailbox(), &blob(1), 0)
        .await
        .unwrap();
    other.ping().await.unwrap();
}

fn frame_bytes(frame: &wire::ClientFrame) -> BytesMut {
    let mut bytes = BytesMut::new();
    encode_frame(frame, &mut bytes);
    bytes
}

#[tokio::test]
async fn bad_input_gets_typed_errors_and_hurts_nobody() {
    let relay = TestRelay::start().await;
    let owner = Owner::new(1);
    let good = connect(&relay).await;
    good.put(&owner.mailbox(), &blob(1), 0).await.unwrap();

    // Wrong blob size.
    let bad = connect(&relay).await;
    let wrong_size = Request::Put(wire::Put {
        mailbox_id: owner.mailbox().as_bytes().to_vec().into(),
        blob: Bytes::from(vec![0u8; 1000]),
        ttl_secs: 0,
    });
    assert_eq!(
        refused(bad.request(wrong_size).await),
        ErrorCode::BadBlobSize
    );
    // A 32-byte mailbox ID is required.
    let short_id = Request::Put(wire::Put {
        mailbox_id: Bytes::from_static(&[1; 5]),
        blob: blob(0).into_bytes(),
        ttl_secs: 0,
    });
    assert_eq!(refused(bad.request(short_id).await), ErrorCode::BadRequest);

    // Garbage inside a well-formed frame: typed error, connection goes on.
    let mut garbage = BytesMut::new();
    garbage.put_u32(7);
    garbage.put_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(
        refused(bad.send_raw_with_reply(0, &garbage).await),
        ErrorCode::Malformed
    );
    bad.ping().await.unwrap();

    // An unknown request kind (a field this relay does not know).
    let mut unknown = BytesMut::new();
    let mut body = Vec::new();
    prost::encoding::uint64::encode(1, &77, &mut body);
    prost::encoding::bytes::encode(99, &vec![1u8, 2, 3], &mut body);
    unknown.put_u32(body.len() as u32);
    unknown.put_slice(&body);
    assert_eq!(
        refused(bad.send_raw_with_reply(77, &unknown).await),
        ErrorCode::UnknownRequest
    );
    bad.ping().await.unwrap();
    assert_relay_healthy(&relay, &owner, &[1]).await;

    // An oversize frame: typed error, then the connection is closed.
    let oversize = connect(&relay).await;
    let mut header = BytesMut::new();
    header.put_u32(relay.config.limits.max_frame + 1);
    assert_eq!(
        refused(oversize.send_raw_with_reply(0, &header).await),
        ErrorCode::FrameTooLarge
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        oversize.ping().await.is_err(),
        "the relay closed the connection"
    );
    assert_relay_healthy(&relay, &owner, &[1]).await;

    // A truncated frame, then the client goes away.
    let truncated = connect(&relay).await;
    let whole = frame_bytes(&wire::ClientFrame {
        id: 5,
        request: Some(Request::Put(wire::Put {
            mailbox_id: owner.mailbox().as_bytes().to_vec().into(),
            blob: blob(99).into_bytes(),
            ttl_secs: 0,
        })),
    });
    truncated.send_raw(&whole[..whole.len() / 2]).await.unwrap();
    truncated.close().await;
    assert_relay_healthy(&relay, &owner, &[1]).await;
    relay.stop().await;
}

#[tokio::test]
async fn the_first_request_must_be_hello() {
    let relay = TestRelay::start().await;
    let raw = RelayConnection::connect_without_hello(&addr(&relay))
        .await
        .unwrap();
    let put = Request::Put(wire::Put {
        mailbox_id: Owner::new(1).mailbox().as_bytes().to_vec().into(),
        blob: blob(0).into_bytes(),
        ttl_secs: 0,
    });
    assert_eq!(refused(raw.request(put).await), ErrorCode::HelloRequired);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(raw.ping().await.is_err(), "closed after a missing hello");
    assert!(
        relay.server().relay().storage().total_bytes() == 0,
        "nothing stored"
    );

    let twice = connect(&relay).await;
    let hello = Request::Hello(wire::Hello {
        version: 1,
        access_token: Bytes::new(),
    });
    assert_eq!(
        refused(twice.request(hello).await),
        ErrorCode::HelloRequired
    );

    let old = RelayConnection::connect_without_hello(&addr(&relay))
        .await
        .unwrap();
    let future_version = Request::Hello(wire::Hello {
        version: 99,
        access_token: Bytes::new(),
    });
    assert_eq!(
        refused(old.request(future_version).await),
        ErrorCode::UnsupportedVersion
    );
    relay.stop().await;
}

/// Owner operations with forged authorization, each refused.
#[tokio::test]
async fn owner_operations_need_the_mailbox_key_and_this_connection() {
    let relay = TestRelay::start().await;
    let owner = Owner::new(1);
    let sender = connect(&relay).await;
    let seq = sender.put(&owner.mailbox(), &blob(5), 0).await.unwrap();
    let conn = connect(&relay).await;
    let ops = [
        wire::mailbox_op::Op::Fetch(wire::Fetch { after: 0, limit: 0 }),
        wire::mailbox_op::Op::Ack(wire::Ack { seqs: vec![seq] }),
        wire::mailbox_op::Op::Subscribe(wire::Subscribe { after: 0 }),
    ];
    for op in ops {
        // A bad signature.
        let mut request = match conn.owner_request(&owner, op.clone()) {
            Request::Mailbox(m) => m,
            _ => unreachable!(),
        };
        let mut signature = request.signature.to_vec();
        signature[0] ^= 1;
        request.signature = signature.into();
        assert_eq!(
            refused(conn.request(Request::Mailbox(request)).await),
            ErrorCode::Unauthorized
        );

        // A valid signature by a key that does not hash to the mailbox.
        let intruder = Owner::new(66);
        let mut request = match conn.owner_request(&intruder, op.clone()) {
            Request::Mailbox(m) => m,
            _ => unreachable!(),
        };
        request.mailbox_id = owner.mailbox().as_bytes().to_vec().into();
        assert_eq!(
            refused(conn.request(Request::Mailbox(request)).await),
            ErrorCode::Unauthorized
        );

        // A request captured on one connection, replayed on another.
        let captured = sender.owner_request(&owner, op.clone());
        assert_eq!(
            refused(conn.request(captured).await),
            ErrorCode::Unauthorized
        );
    }
    // Nothing was deleted by any of it.
    assert_eq!(fetch_all(&conn, &owner, 0).await.len(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn data_survives_a_graceful_restart() {
    let mut relay = TestRelay::start().await;
    let owner = Owner::new(1);
    let conn = connect(&relay).await;
    let mut seqs = Vec::new();
    for tag in 0..20 {
        seqs.push(conn.put(&owner.mailbox(), &blob(tag), 0).await.unwrap());
    }
    let slot = SlotId::from_bytes([4; 32]);
    let slot_owner = SigningKey::from_bytes(&[8; 32]);
    conn.slot_put(&slot, 1, blob(77).into_bytes(), &slot_owner)
        .await
        .unwrap();
    drop(conn);
    relay.restart().await;

    let conn = connect(&relay).await;
    let fetched = fetch_all(&conn, &owner, 0).await;
    assert_eq!(fetched.iter().map(|(s, _)| *s).collect::<Vec<_>>(), seqs);
    assert_eq!(
        fetched.iter().map(|(_, b)| tag_of(b)).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    let (version, value) = conn.slot_get(&slot).await.unwrap().unwrap();
    assert_eq!((version, tag_of(&value)), (1, 77));
    // New seqs continue after the old ones: cursors stay valid.
    let next = conn.put(&owner.mailbox(), &blob(20), 0).await.unwrap();
    assert!(next > *seqs.last().unwrap());
    relay.stop().await;
}

#[tokio::test]
async fn blobs_expire_by_ttl_and_the_purge_removes_them() {
    let relay = TestRelay::start_with(|c| {
        c.limits.max_ttl_secs = 86_400;
        c.limits.default_ttl_secs = 86_400;
    })
    .await;
    let owner = Owner::new(1);
    let conn = connect(&relay).await;
    conn.put(&owner.mailbox(), &blob(1), 3_600).await.unwrap();
    conn.put(&owner.mailbox(), &blob(2), 0).await.unwrap(); // the default TTL
    let put = |ttl_secs| {
        Request::Put(wire::Put {
            mailbox_id: owner.mailbox().as_bytes().to_vec().into(),
            blob: blob(3).into_bytes(),
            ttl_secs,
        })
    };
    // A TTL of the protocol's set, but above this relay's maximum.
    assert_eq!(
        refused(conn.request(put(7 * 86_400)).await),
        ErrorCode::TtlTooLong
    );

    let purge = || relay.server().relay().purge_expired().unwrap();
    relay.clock.advance_secs(3_599);
    assert_eq!(purge(), 0);
    relay.clock.advance_secs(1);
    assert_eq!(purge(), 1, "the one-hour blob expires at T0 + 3600");
    let tags: Vec<u64> = fetch_all(&conn, &owner, 0)
        .await
        .iter()
        .map(|(_, b)| tag_of(b))
        .collect();
    assert_eq!(tags, vec![2]);
    relay.clock.advance_secs(86_400);
    assert_eq!(purge(), 1);
    assert!(fetch_all(&conn, &owner, 0).await.is_empty());
    assert_eq!(T0 % 60, 0);
    relay.stop().await;
}

/// Issue 18 item 11: a TTL outside the protocol's small set (1 h, 1 d,
/// 7 d, 14 d) would single out the client that picks it, so the relay
/// refuses it with its own code and stores nothing.
#[tokio::test]
async fn a_ttl_outside_the_protocols_set_is_refused_and_stores_nothing() {
    let relay = TestRelay::start().await;
    let owner = Owner::new(1);
    let conn = connect(&relay).await;
    for ttl_secs in [1, 60, 120, 3_599, 3_601, 7_200, 86_401, 1_209_599] {
        let put = Request::Put(wire::Put {
            mailbox_id: owner.mailbox().as_bytes().to_vec().into(),
            blob: blob(1).into_bytes(),
            ttl_secs,
        });
        assert_eq!(
            refused(conn.request(put).await),
            ErrorCode::TtlNotAllowed,
            "{ttl_secs} s"
        );
    }
    assert!(fetch_all(&conn, &owner, 0).await.is_empty());
    for ttl in sotto_proto::Ttl::ALL {
        conn.put(&owner.mailbox(), &blob(2), ttl.secs())
            .await
            .unwrap();
    }
    assert_eq!(fetch_all(&conn, &owner, 0).await.len(), 4);
    relay.stop().await;
}

#[tokio::test]
async fn mailbox_quota_and_disk_budget_refuse_puts_but_not_fetch_or_ack() {
    let relay = TestRelay::start_with(|c| {
        c.limits.mailbox_max_blobs = 3;
        c.limits.disk_budget_bytes = 5 * 1024;
    })
    .await;
    let (a, b) = (Owner::new(1), Owner::new(2));
    let conn = connect(&relay).await;
    for tag in 0..3 {
        conn.put(&a.mailbox(), &blob(tag), 0).await.unwrap();
    }
    assert_eq!(
        refused(conn.put(&a.mailbox(), &blob(3), 0).await),
        ErrorCode::QuotaExceeded
    );
    conn.put(&b.mailbox(), &blob(10), 0).await.unwrap();
    conn.put(&b.mailbox(), &blob(11), 0).await.unwrap();
    assert_eq!(
        refused(conn.put(&b.mailbox(), &blob(12), 0).await),
        ErrorCode::DiskFull
    );

    // Fetch and ack still work, and free room.
    let stored = fetch_all(&conn, &a, 0).await;
    assert_eq!(stored.len(), 3);
    assert_eq!(conn.ack(&a, vec![stored[0].0]).await.unwrap(), 1);
    conn.put(&a.mailbox(), &blob(3), 0).await.unwrap();
    relay.stop().await;
}

#[tokio::test]
async fn slots_are_claimed_by_the_first_writer_and_versioned() {
    let relay = TestRelay::start().await;
    let conn = connect(&relay).await;
    let slot = SlotId::from_bytes([1; 32]);
    let owner = SigningKey::from_bytes(&[1; 32]);
    let stranger = SigningKey::from_bytes(&[2; 32]);
    let value = |tag| tagged_blob(Bucket::K1, tag).into_bytes();

    assert_eq!(conn.slot_get(&slot).await.unwrap(), None);
    conn.slot_put(&slot, 1, value(1), &owner).await.unwrap();
    conn.slot_put(&slot, 2, value(2), &owner).await.unwrap();
    assert_eq!(
        refused(conn.slot_put(&slot, 2, value(3), &owner).await),
        ErrorCode::SlotStaleVersion
    );
    assert_eq!(
        refused(conn.slot_put(&slot, 1, value(3), &owner).await),
        ErrorCode::SlotStaleVersion
    );
    assert_eq!(
        refused(conn.slot_put(&slot, 9, value(4), &stranger).await),
        ErrorCode::SlotWrongOwner
    );
    // A signature over other content does not pass.
    let forged = Request::SlotPut(wire::SlotPut {
        slot_id: slot.as_bytes().to_vec().into(),
        version: 10,
        value: value(5),
        owner_key: owner.verifying_key().as_bytes().to_vec().into(),
        signature: owner
            .sign(&sotto_proto::slot_signing_message(&slot, 10, &value(6)))
            .to_bytes()
            .to_vec()
            .into(),
        new_owner_key: Default::default(),
    });
    assert_eq!(refused(conn.request(forged).await), ErrorCode::Unauthorized);
    // A plain write's signature does not pass as a transfer to another key.
    let plain = owner.sign(&sotto_proto::slot_signing_message(&slot, 12, &value(7)));
    let hijack = Request::SlotPut(wire::SlotPut {
        slot_id: slot.as_bytes().to_vec().into(),
        version: 12,
        value: value(7),
        owner_key: owner.verifying_key().as_bytes().to_vec().into(),
        signature: plain.to_bytes().to_vec().into(),
        new_owner_key: stranger.verifying_key().as_bytes().to_vec().into(),
    });
    assert_eq!(refused(conn.request(hijack).await), ErrorCode::Unauthorized);
    // Values are bucket-sized.
    assert_eq!(
        refused(
            conn.slot_put(&slot, 11, Bytes::from(vec![0; 100]), &owner)
                .await
        ),
        ErrorCode::BadBlobSize
    );
    let (version, stored) = conn.slot_get(&slot).await.unwrap().unwrap();
    assert_eq!((version, tag_of(&stored)), (2, 2));

    // The owner hands the slot to a new key: from then on only that key
    // writes it.
    let heir = SigningKey::from_bytes(&[3; 32]);
    conn.slot_transfer(&slot, 3, value(8), &owner, &heir.verifying_key())
        .await
        .unwrap();
    assert_eq!(
        refused(conn.slot_put(&slot, 4, value(9), &owner).await),
        ErrorCode::SlotWrongOwner
    );
    conn.slot_put(&slot, 4, value(9), &heir).await.unwrap();
    let (version, stored) = conn.slot_get(&slot).await.unwrap().unwrap();
    assert_eq!((version, tag_of(&stored)), (4, 9));
    relay.stop().await;
}

#[tokio::test]
async fn a_flooding_connection_is_rate_limited_then_closed() {
    let relay = TestRelay::start_with(|c| {
        c.limits.requests_per_sec = 10;
        c.limits.request_burst = 5;
        c.limits.max_rate_violations = 3;
    })
    .await;
    let flooder = connect(&relay).await;
    for _ in 0..5 {
        flooder.ping().await.unwrap();
    }
    assert_eq!(refused(flooder.ping().await), ErrorCode::RateLimited);
    // The manual clock stands still: no refill.
    assert_eq!(refused(flooder.ping().await), ErrorCode::RateLimited);
    assert_eq!(refused(flooder.ping().await), ErrorCode::RateLimited);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        flooder.ping().await.is_err(),
        "closed after repeated violations"
    );

    // Another connection has its own budget.
    let polite = connect(&relay).await;
    polite.ping().await.unwrap();
    relay.clock.advance_secs(1);
    for _ in 0..5 {
        polite.ping().await.unwrap();
    }
    relay.stop().await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let relay = TestRelay::start_with(|c| c.limits.max_subscriptions = 2).await;
    let conn = connect(&relay).await;
    conn.subscribe(&Owner::new(1), 0).await.unwrap();
    conn.subscribe(&Owner::new(2), 0).await.unwrap();
    conn.subscribe(&Owner::new(1), 0).await.unwrap(); // re-subscribing is not a new one
    assert_eq!(
        refused(conn.subscribe(&Owner::new(3), 0).await),
        ErrorCode::TooManySubscriptions
    );
    conn.unsubscribe(&Owner::new(1)).await.unwrap();
    conn.subscribe(&Owner::new(3), 0).await.unwrap();
    relay.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused() {
    let relay = TestRelay::start_with(|c| c.limits.max_connections = 2).await;
    let _a = connect(&relay).await;
    let _b = connect(&relay).await;
    assert!(RelayConnection::connect(&addr(&relay), None).await.is_err());
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay.stop().await;
}

#[tokio::test]
async fn a_wrong_fingerprint_is_a_clear_error() {
    let relay = TestRelay::start().await;
    let mut impostor = addr(&relay);
    impostor.fingerprint[0] ^= 1;
    match RelayConnection::connect(&impostor, None).await {
        Err(NetError::FingerprintMismatch { .. }) => {}
        other => panic!("expected a fingerprint mismatch, got {:?}", other.err()),
    }
    relay.stop().await;
}

/// DESIGN §2.3: nothing at the transport links two connections of one
/// client. Each has its own UDP socket and its own challenge.
#[tokio::test]
async fn two_connections_of_one_client_share_no_transport_state() {
    let relay = TestRelay::start().await;
    let a = connect(&relay).await;
    let b = connect(&relay).await;
    assert_ne!(
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port()
    );
    assert_ne!(a.challenge(), b.challenge());
    relay.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_answers_in_flight_puts() {
    let relay = TestRelay::start().await;
    let owner = Owner::new(1);
    let conn = std::sync::Arc::new(connect(&relay).await);
    let mut handles = Vec::new();
    for tag in 0..200u64 {
        let conn = conn.clone();
        let mailbox = owner.mailbox();
        handles.push(tokio::spawn(async move {
            conn.put(&mailbox, &blob(tag), 0).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let dir = relay.dir.path().to_owned();
    let TestRelay {
        server, dir: _keep, ..
    } = relay;
    server.unwrap().shutdown().await;
    let acked: Vec<u64> = futures_tags(handles).await;
    // Every put the relay acknowledged is on disk after shutdown.
    let storage = sotto_relay::SledStorage::open(&dir.join("db")).unwrap();
    let stored = sotto_relay::Storage::mailbox_usage(&storage, &owner.mailbox()).count;
    assert!(
        stored as usize >= acked.len(),
        "{stored} stored, {} acknowledged",
        acked.len()
    );
}

async fn futures_tags(handles: Vec<tokio::task::JoinHandle<Result<u64, NetError>>>) -> Vec<u64> {
    let mut acked = Vec::new();
    for handle in handles {
        if let Ok(seq) = handle.await.unwrap() {
            acked.push(seq);
        }
    }
    acked
}
