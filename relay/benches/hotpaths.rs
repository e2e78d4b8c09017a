//! Micro-benchmarks of the relay's hot paths, without the network:
//!
//! - `frame decode`: a put frame (1 KiB blob) through the sans-IO framing
//!   and protobuf decoding, as every request goes.
//! - `blinded signature check`: the owner check of fetch / ack / subscribe
//!   (mailbox hash + `verify_strict` over challenge and body). The owner
//!   key is a plain ed25519 key: to the relay a blinded key `B_e` is any
//!   valid point, so the check costs the same (how clients blind their
//!   keys is client-core's business, and not measured here).
//! - `put path`: a whole put through the per-connection session over
//!   memory storage, including the group-commit handshake with the flusher
//!   thread (its fsync is a no-op here): parse, quota, append, durable.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use sotto_proto::wire::{self, client_frame::Request};
use sotto_proto::{
    BlindedKey, Challenge, FrameDecoder, MailboxId, Message, encode_frame, request_signing_message,
};
use sotto_relay::fuzzing::FuzzRelay;

fn put_frame(id: u64, mailbox: MailboxId) -> wire::ClientFrame {
    wire::ClientFrame {
        id,
        request: Some(Request::Put(wire::Put {
            mailbox_id: mailbox.as_bytes().to_vec().into(),
            blob: Bytes::from(vec![0x5a; 1024]),
            ttl_secs: 0,
        })),
    }
}

fn frame_decode(c: &mut Criterion) {
    let mut bytes = BytesMut::new();
    encode_frame(&put_frame(1, MailboxId::from_bytes([1; 32])), &mut bytes);
    let mut decoder = FrameDecoder::new(72 * 1024);
    c.bench_function("frame decode: 1 KiB put", |b| {
        b.iter(|| {
            decoder.push(black_box(&bytes));
            let frame = decoder
                .next_frame()
                .expect("well formed")
                .expect("complete");
            wire::ClientFrame::decode(frame).expect("decodes")
        })
    });
}

fn blinded_signature_check(c: &mut Criterion) {
    let owner = SigningKey::from_bytes(&[7; 32]);
    let challenge = Challenge::from_bytes([9; 32]);
    let body = wire::MailboxOp {
        op: Some(wire::mailbox_op::Op::Fetch(wire::Fetch {
            after: 0,
            limit: 0,
        })),
    }
    .encode_to_vec();
    let signature = owner
        .sign(&request_signing_message(&challenge, &body))
        .to_bytes();
    let key = BlindedKey::from_slice(owner.verifying_key().as_bytes()).expect("a valid point");
    let mailbox = key.mailbox_id();
    c.bench_function("blinded signature check (hash + verify_strict)", |b| {
        b.iter(|| {
            key.authorize(
                black_box(&mailbox),
                &challenge,
                black_box(&body),
                &signature,
            )
            .expect("authorized")
        })
    });
}

fn put_path(c: &mut Criterion) {
    let mut relay = FuzzRelay::new();
    let hello = wire::ClientFrame {
        id: 0,
        request: Some(Request::Hello(wire::Hello {
            version: sotto_proto::PROTOCOL_VERSION,
            access_token: Bytes::new(),
        })),
    };
    relay.handle(&hello.encode_to_vec());
    let mailboxes: Vec<MailboxId> = (0..1024u32)
        .map(|i| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            MailboxId::for_key_bytes(&key)
        })
        .collect();
    let mut n = 0u64;
    c.bench_function("put path: session + memory storage + group commit", |b| {
        b.iter(|| {
            n += 1;
            // Keep under the per-connection rate limit of the manual clock.
            if n.is_multiple_of(4_000) {
                relay.advance(1);
            }
            let frame = put_frame(n, mailboxes[(n % 1024) as usize]).encode_to_vec();
            let replies = relay.handle(black_box(&frame));
            assert!(matches!(
                replies.first().and_then(|f| f.frame.as_ref()),
                Some(wire::server_frame::Frame::Response(wire::Response {
                    result: Some(wire::response::Result::Put(_)),
                    ..
                }))
            ));
        })
    });
}

criterion_group!(benches, frame_decode, blinded_signature_check, put_path);
criterion_main!(benches);
