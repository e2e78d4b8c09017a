//! Replays the committed fuzz corpora (`fuzz/corpus/relay_frame/` and
//! `fuzz/corpus/relay_session/`) through the same checks the fuzz targets
//! run, so every `cargo test` re-checks every seed and past finding.
//!
//! `cargo test -p sotto-relay --test fuzz_corpus -- --ignored` regenerates
//! the hand-written seeds.
#![allow(clippy::unwrap_used)]

#[path = "../../fuzz/src/corpus.rs"]
mod corpus;

use corpus::{corpus, replay};

use bytes::BytesMut;
use sotto_proto::{Message, encode_frame, wire};
use sotto_relay::fuzzing::{FuzzRelay, check_frame, check_session, run_session};

#[test]
fn relay_frame_corpus_passes() {
    replay("relay_frame", check_frame);
}

#[test]
fn relay_session_corpus_passes() {
    replay("relay_session", check_session);
}

/// Seeds for `relay_session`, in the byte language of `Action::decode_all`.
mod seeds {
    pub(super) const HELLO: &[u8] = &[0, 1];
    pub(super) const BAD_HELLO: &[u8] = &[0, 0];
    /// Put a 1 KiB blob of `fill` into owner 0's mailbox, default TTL.
    pub(super) fn put(mailbox: u8, size: u8, fill: u8) -> Vec<u8> {
        vec![1, mailbox, size, fill, 0]
    }
    /// Put with a one-hour TTL (the shortest the protocol allows).
    pub(super) fn put_short(mailbox: u8) -> Vec<u8> {
        vec![1, mailbox, 0, 0x42, 1, 0]
    }
    pub(super) fn fetch(mailbox: u8) -> Vec<u8> {
        vec![3, mailbox, 0, 0, 0, 0, 0]
    }
    pub(super) fn fetch_by(mailbox: u8, signer: u8) -> Vec<u8> {
        // A signer byte of 200 or more picks key `byte % 3`; 201 % 3 == 0.
        vec![3, mailbox, 201 + signer, 0, 0, 0, 0]
    }
    pub(super) fn ack_all(mailbox: u8) -> Vec<u8> {
        vec![3, mailbox, 0, 0, 2, 0, 0]
    }
    pub(super) fn subscribe(mailbox: u8) -> Vec<u8> {
        vec![3, mailbox, 0, 0, 3, 0]
    }
    pub(super) fn unsubscribe(mailbox: u8) -> Vec<u8> {
        vec![3, mailbox, 0, 0, 4]
    }
    pub(super) fn garbage_sig(mailbox: u8) -> Vec<u8> {
        vec![3, mailbox, 0, 220, 0, 0, 0]
    }
    pub(super) fn slot_put(slot: u8, signer: u8, version: u8) -> Vec<u8> {
        vec![6, slot, signer, version, 0, 0]
    }
    pub(super) fn slot_get(slot: u8) -> Vec<u8> {
        vec![5, slot]
    }
    /// An hour passes (the one-hour blobs expire).
    pub(super) const ADVANCE: &[u8] = &[7, 2, 1, 1];
    pub(super) const PING: &[u8] = &[7, 0];
    pub(super) const RAW: &[u8] = &[7, 1, 4, 0xff, 0xff, 0xff, 0xff];
}

fn session_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use seeds::*;
    let cat = |parts: &[&[u8]]| parts.concat();
    vec![
        ("hello-ping", cat(&[HELLO, PING])),
        ("bad-hello", cat(&[BAD_HELLO, PING])),
        ("no-hello", cat(&[PING, HELLO])),
        (
            "put-fetch-ack",
            cat(&[
                HELLO,
                &put(0, 0, 0x41),
                &put(0, 1, 0x42),
                &put(1, 0, 0x43),
                &fetch(0),
                &ack_all(0),
                &fetch(0),
                &fetch(1),
            ]),
        ),
        (
            "subscribe-push",
            cat(&[
                HELLO,
                &put(2, 0, 1),
                &subscribe(2),
                &put(2, 2, 2),
                &unsubscribe(2),
                &put(2, 0, 3),
                &fetch(2),
            ]),
        ),
        (
            "unauthorized",
            cat(&[
                HELLO,
                &put(0, 0, 1),
                &fetch_by(0, 1),
                &garbage_sig(0),
                &fetch(0),
            ]),
        ),
        (
            "expiry",
            cat(&[HELLO, &put_short(0), &put(0, 0, 9), ADVANCE, &fetch(0)]),
        ),
        (
            "slots",
            cat(&[
                HELLO,
                &slot_put(1, 0, 1),
                &slot_get(1),
                &slot_put(1, 1, 2),
                &slot_put(1, 0, 1),
                &slot_put(1, 0, 3),
                &slot_get(2),
            ]),
        ),
        (
            "bad-puts",
            cat(&[HELLO, &put(4, 0, 0), &put(0, 4, 0), &put(3, 3, 7), RAW]),
        ),
    ]
}

fn frame_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let frames = [
        (
            "hello",
            wire::client_frame::Request::Hello(wire::Hello {
                version: 1,
                access_token: Default::default(),
            }),
        ),
        ("ping", wire::client_frame::Request::Ping(wire::Ping {})),
        (
            "put",
            wire::client_frame::Request::Put(wire::Put {
                mailbox_id: vec![1; 32].into(),
                blob: vec![2; 1024].into(),
                ttl_secs: 3_600,
            }),
        ),
        (
            "mailbox",
            wire::client_frame::Request::Mailbox(wire::MailboxRequest {
                mailbox_id: vec![1; 32].into(),
                blinded_key: vec![2; 32].into(),
                body: wire::MailboxOp {
                    op: Some(wire::mailbox_op::Op::Ack(wire::Ack {
                        seqs: vec![1, 2, 3],
                    })),
                }
                .encode_to_vec()
                .into(),
                signature: vec![3; 64].into(),
            }),
        ),
        (
            "slot-put",
            wire::client_frame::Request::SlotPut(wire::SlotPut {
                slot_id: vec![4; 32].into(),
                version: 7,
                value: vec![5; 1024].into(),
                owner_key: vec![6; 32].into(),
                signature: vec![7; 64].into(),
                new_owner_key: Default::default(),
            }),
        ),
    ];
    let mut seeds: Vec<(&'static str, Vec<u8>)> = frames
        .into_iter()
        .enumerate()
        .map(|(i, (name, request))| {
            let mut out = BytesMut::new();
            encode_frame(
                &wire::ClientFrame {
                    id: i as u64 + 1,
                    request: Some(request),
                },
                &mut out,
            );
            let mut data = vec![i as u8 * 3 + 1];
            data.extend_from_slice(&out);
            (name, data)
        })
        .collect();
    let pipelined: Vec<u8> = seeds.iter().flat_map(|(_, d)| d[1..].to_vec()).collect();
    seeds.push(("pipelined", [&[5u8][..], &pipelined].concat()));
    seeds.push(("too-large", vec![0, 0x00, 0x10, 0x00, 0x00, 1, 2, 3]));
    seeds.push(("truncated", vec![2, 0, 0, 0, 9, 8, 1]));
    seeds
}

#[test]
fn session_seeds_reach_what_their_names_say() {
    let seeds = session_seeds();
    let run = |name: &str| run_session(&seeds.iter().find(|(n, _)| *n == name).unwrap().1);
    let s = run("put-fetch-ack");
    assert_eq!((s.puts, s.acked, s.refused), (3, 2, 0));
    // First fetch: 2 blobs; after the ack: none; the other mailbox: 1.
    assert_eq!(s.fetched, 3);
    let s = run("subscribe-push");
    assert_eq!((s.puts, s.pushed, s.fetched), (3, 2, 3));
    let s = run("unauthorized");
    assert_eq!((s.refused, s.fetched), (2, 1));
    let s = run("expiry");
    assert_eq!((s.purged, s.fetched), (1, 1));
    let s = run("slots");
    // v1 by key 0; key 1 refused; v1 again stale; v3 accepted.
    assert_eq!((s.slot_writes, s.refused), (2, 2));
    let s = run("bad-puts");
    assert_eq!((s.puts, s.refused), (1, 3));
    assert_eq!(run("no-hello").refused, 1);
    assert_eq!(run("bad-hello").refused, 1);
}

#[test]
fn the_hook_answers_an_empty_frame() {
    let mut relay = FuzzRelay::new();
    let out = relay.frame(&[]);
    let mut decoder = sotto_proto::FrameDecoder::new(1 << 20);
    decoder.push(&out);
    let frame = wire::ServerFrame::decode(decoder.next_frame().unwrap().unwrap()).unwrap();
    assert!(matches!(
        frame.frame,
        Some(wire::server_frame::Frame::Response(_))
    ));
    assert!(
        !relay.is_closed(),
        "a frame without a request kind does not close"
    );
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus"]
fn regenerate_seed_corpus() {
    for (target, seeds) in [
        ("relay_session", session_seeds()),
        ("relay_frame", frame_seeds()),
    ] {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
    }
}
