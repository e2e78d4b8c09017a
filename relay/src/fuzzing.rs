//! Fuzzing hooks: the relay's sans-IO session over [`MemoryStorage`], and
//! the check functions the `fuzz/` targets and the corpus replay tests
//! (`relay/tests/fuzz_corpus.rs`) share.
//!
//! Not part of the relay's API: built only with the `test-support` feature.
//! The checks **panic** when an invariant breaks: that is how a fuzzer
//! reports a finding.
//!
//! Inputs of [`check_session`] are decoded by [`Action::decode_all`], a
//! small total decoder (every byte string is a valid action list), so
//! libFuzzer's mutations stay meaningful and the committed corpus replays
//! under `cargo test` with no fuzzing toolchain.

#![allow(clippy::panic, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sotto_proto::wire::{self, ErrorCode, client_frame::Request, response::Result as Reply};
use sotto_proto::{
    BlindedKey, Bucket, Challenge, FrameDecoder, FrameError, MailboxId, Message, SlotId,
    encode_frame, request_signing_message, slot_signing_message,
};

use crate::clock::ManualClock;
use crate::config::Limits;
use crate::ops::mailbox::MAX_ACK_SEQS;
use crate::refusal::Refusal;
use crate::relay::Relay;
use crate::session::{self, Session, Step};
use crate::storage::{FetchRange, MemoryStorage, Seq, Storage};

/// The fixed challenge of every fuzzed session.
pub const CHALLENGE: [u8; 32] = [0x11; 32];
/// The fuzzed relay's clock starts here (a whole minute).
pub const START_SECS: u64 = 1_800_000_000;

fn server_frame(response: wire::Response) -> wire::ServerFrame {
    wire::ServerFrame {
        frame: Some(wire::server_frame::Frame::Response(response)),
    }
}

/// One connection to an in-process relay over [`MemoryStorage`] with a
/// manual clock, default limits and [`CHALLENGE`], driven synchronously.
///
/// It performs each [`Step`] as `connection.rs` does, except that it waits
/// for durability inline (MemoryStorage's flush is a no-op, but the durable
/// watermark still has to move) and pushes subscribed mailboxes at once.
pub struct FuzzRelay {
    relay: Relay<MemoryStorage>,
    session: Session,
    clock: ManualClock,
    /// Subscribed mailboxes and the last seq pushed.
    subscriptions: HashMap<MailboxId, Seq>,
    closed: bool,
}

impl Default for FuzzRelay {
    fn default() -> Self {
        Self::new()
    }
}

impl FuzzRelay {
    /// A fresh relay and connection.
    pub fn new() -> Self {
        let clock = ManualClock::at_secs(START_SECS);
        // The session model covers the messaging requests; token
        // enforcement has its own tests (tests/tests/relay_tokens.rs).
        let relay = Relay::new(
            Arc::new(MemoryStorage::new()),
            Limits::default(),
            Arc::new(clock.clone()),
        )
        .with_tokens(crate::tokens::Tokens::ephemeral(
            crate::config::TokenConfig {
                require_tokens: false,
                ..crate::config::TokenConfig::default()
            },
        ));
        let session = Session::new(&relay, Challenge::from_bytes(CHALLENGE));
        Self {
            relay,
            session,
            clock,
            subscriptions: HashMap::new(),
            closed: false,
        }
    }

    /// The relay's storage.
    pub fn storage(&self) -> &MemoryStorage {
        self.relay.storage()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.relay.limits
    }

    /// The relay clock, unix seconds.
    pub fn now_secs(&self) -> u64 {
        self.relay.clock.now_secs()
    }

    /// Whether the relay closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Moves the clock and runs the TTL purge, as the background task would.
    pub fn advance(&mut self, secs: u64) -> usize {
        self.clock.advance_secs(secs);
        self.relay
            .purge_expired()
            .unwrap_or_else(|e| panic!("MemoryStorage purge failed: {e}"))
    }

    /// Handles one frame body (the bytes after the length prefix) and
    /// returns what the relay sends back, framed.
    pub fn frame(&mut self, body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for frame in self.handle(body) {
            encode_frame(&frame, &mut out);
        }
        out.to_vec()
    }

    /// As [`Self::frame`], unencoded. Nothing after the connection closed.
    pub fn handle(&mut self, body: &[u8]) -> Vec<wire::ServerFrame> {
        if self.closed {
            return Vec::new();
        }
        if body.len() > self.relay.limits.max_frame as usize {
            // connection.rs: the decoder refuses the length, then closes.
            self.closed = true;
            let error = FrameError::TooLarge {
                len: body.len(),
                max: self.relay.limits.max_frame as usize,
            };
            return vec![server_frame(
                Refusal::new(ErrorCode::FrameTooLarge, error.to_string()).into_response(0),
            )];
        }
        let mut out = Vec::new();
        match self
            .session
            .handle(&self.relay, Bytes::copy_from_slice(body))
        {
            Step::Reply(response) => out.push(server_frame(response)),
            Step::ReplyWhenDurable { response, wake } => {
                let durable = futures::executor::block_on(self.relay.commit.durable());
                match durable {
                    Ok(()) => {
                        out.push(server_frame(response));
                        if let Some(mailbox) = wake {
                            self.push(&mailbox, &mut out);
                        }
                    }
                    Err(e) => panic!("MemoryStorage flush failed: {e}"),
                }
            }
            Step::Ack { id, mailbox, seqs } => match self.relay.ack(&mailbox, &seqs) {
                Ok(deleted) => match futures::executor::block_on(self.relay.commit.durable()) {
                    Ok(()) => out.push(server_frame(session::acked(id, deleted))),
                    Err(e) => panic!("MemoryStorage flush failed: {e}"),
                },
                Err(refusal) => out.push(server_frame(refusal.into_response(id))),
            },
            Step::Subscribe { id, mailbox, after } => {
                out.push(server_frame(session::subscribed(id)));
                self.subscriptions.insert(mailbox, after);
                self.push(&mailbox, &mut out);
            }
            Step::Unsubscribe { id, mailbox } => {
                self.subscriptions.remove(&mailbox);
                out.push(server_frame(session::unsubscribed(id)));
            }
            Step::Close(response) => {
                self.closed = true;
                out.push(server_frame(response));
            }
        }
        out
    }

    /// Pushes what a subscription to `mailbox` has not seen yet (the
    /// `push_loop` of `connection.rs`, run to completion).
    fn push(&mut self, mailbox: &MailboxId, out: &mut Vec<wire::ServerFrame>) {
        let Some(cursor) = self.subscriptions.get_mut(mailbox) else {
            return;
        };
        loop {
            let page = self
                .relay
                .fetch_page(mailbox, *cursor, usize::MAX)
                .unwrap_or_else(|e| panic!("MemoryStorage fetch failed: {}", e.message));
            for stored in page.blobs {
                *cursor = stored.seq;
                out.push(wire::ServerFrame {
                    frame: Some(wire::server_frame::Frame::Push(wire::Push {
                        mailbox_id: mailbox.as_bytes().to_vec().into(),
                        seq: stored.seq,
                        blob: stored.blob.into_bytes(),
                    })),
                });
            }
            if !page.more {
                return;
            }
        }
    }
}

impl Drop for FuzzRelay {
    fn drop(&mut self) {
        // Join the flusher thread, so a fuzzer does not pile threads up.
        self.relay.shutdown();
    }
}

// ---------------------------------------------------------------------------
// relay_frame

/// The `relay_frame` check: `data[0]` picks a chunk size, the rest is a
/// client byte stream. It is fed to a [`FrameDecoder`] in chunks and whole;
/// both must yield the same frames, and every frame that decodes as a
/// `ClientFrame` must survive a re-encode: `decode(encode(decode(x))) ==
/// decode(x)`, and encoding is stable from then on.
pub fn check_frame(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let max = Limits::default().max_frame as usize;
    let whole = deframe(stream, stream.len().max(1), max);
    let chunked = deframe(stream, usize::from(chunk % 17) + 1, max);
    assert_eq!(whole, chunked, "chunking changed the frames");
    for body in whole.0 {
        let Ok(frame) = wire::ClientFrame::decode(body.clone()) else {
            continue;
        };
        let encoded = frame.encode_to_vec();
        let again = wire::ClientFrame::decode(encoded.as_slice())
            .unwrap_or_else(|e| panic!("a re-encoded frame does not decode: {e}"));
        assert_eq!(again, frame, "decode(encode(decode(x))) != decode(x)");
        assert_eq!(again.encode_to_vec(), encoded, "encoding is not stable");
    }
}

/// Frames out of `stream` pushed `chunk` bytes at a time; stops at the first
/// framing error, as the relay does.
fn deframe(stream: &[u8], chunk: usize, max: usize) -> (Vec<Bytes>, Option<FrameError>) {
    let mut decoder = FrameDecoder::new(max);
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= max);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    let end = decoder.finish().err();
    (frames, end)
}

// ---------------------------------------------------------------------------
// relay_session

/// A tiny total reader: past the end every read gives zeros.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (usize::from(self.u8()) % (max + 1)).min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }
}

/// Owner keys the fuzzer signs with; their mailboxes are the ones it reads.
pub const OWNER_SEEDS: [[u8; 32]; 3] = [[1; 32], [2; 32], [3; 32]];

fn owner(i: u8) -> SigningKey {
    SigningKey::from_bytes(&OWNER_SEEDS[usize::from(i) % OWNER_SEEDS.len()])
}

fn owner_mailbox(i: u8) -> MailboxId {
    MailboxId::for_key_bytes(owner(i).verifying_key().as_bytes())
}

/// A blob or slot value size: a bucket, or one that is not.
fn size(choice: u8) -> usize {
    match choice % 6 {
        0..=3 => Bucket::ALL[usize::from(choice % 4)].size(),
        4 => 1000,
        _ => 0,
    }
}

/// One step of a fuzzed session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `Hello` with protocol version 1 or another one.
    Hello { valid: bool },
    /// `Put` into an owner's mailbox (`mailbox < 3`), a random 32-byte one,
    /// or a malformed ID; a bucket-sized or odd blob.
    Put {
        mailbox: u8,
        random_id: [u8; 32],
        size: u8,
        fill: u8,
        ttl_secs: u32,
    },
    /// An owner request for owner `mailbox`'s mailbox signed by owner
    /// `signer`, or with a broken signature (`sig` 1: garbage, 2: another
    /// challenge, 3: a blinded key that is not a point).
    Owner {
        mailbox: u8,
        signer: u8,
        sig: u8,
        op: OwnerAction,
    },
    /// `SlotGet` of one of a few slots.
    SlotGet { slot: u8 },
    /// `SlotPut` signed by an owner key, or with a bad signature.
    SlotPut {
        slot: u8,
        signer: u8,
        version: u64,
        size: u8,
        bad_sig: bool,
    },
    /// `Ping`.
    Ping,
    /// A frame body of arbitrary bytes.
    Raw(Vec<u8>),
    /// Moves the clock (and runs the purge).
    Advance { secs: u32 },
}

/// The operation inside an owner request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerAction {
    Fetch {
        after: u64,
        limit: u32,
    },
    /// Ack: `which` 0 = every stored seq, 1 = the oldest, 2 = `seqs`.
    Ack {
        which: u8,
        seqs: Vec<u64>,
    },
    Subscribe {
        after: u64,
    },
    Unsubscribe,
    /// A body of arbitrary bytes (signed like a real one).
    Body(Vec<u8>),
}

impl Action {
    /// Decodes a whole input into actions; every byte string is valid.
    pub fn decode_all(data: &[u8]) -> Vec<Action> {
        let mut r = Reader(data);
        let mut actions = Vec::new();
        while !r.0.is_empty() && actions.len() < 256 {
            actions.push(Self::decode(&mut r));
        }
        actions
    }

    fn decode(r: &mut Reader<'_>) -> Action {
        // Small cursors matter more than random 64-bit ones.
        let cursor = |r: &mut Reader<'_>| match r.u8() % 3 {
            0 => 0,
            1 => u64::from(r.u8()),
            _ => r.u64(),
        };
        match r.u8() % 9 {
            0 => Action::Hello {
                valid: !r.u8().is_multiple_of(4),
            },
            1 | 2 => {
                let mailbox = r.u8() % 5;
                let mut random_id = [0u8; 32];
                if mailbox == 3 {
                    random_id[0] = r.u8();
                    random_id[1] = r.u8();
                }
                Action::Put {
                    mailbox,
                    random_id,
                    size: r.u8(),
                    fill: r.u8(),
                    ttl_secs: match r.u8() % 4 {
                        0 => 0,
                        1 => sotto_proto::Ttl::ALL[usize::from(r.u8() % 4)].secs(),
                        2 => r.u32() % (15 * 24 * 3600),
                        _ => r.u32(),
                    },
                }
            }
            3 | 4 => {
                let mailbox = r.u8() % 3;
                let signer_byte = r.u8();
                // Mostly the right key, so owner operations get exercised.
                let signer = if signer_byte < 200 {
                    mailbox
                } else {
                    signer_byte % 3
                };
                let sig = match r.u8() {
                    0..=219 => 0,
                    b => b % 3 + 1,
                };
                let op = match r.u8() % 6 {
                    0 | 1 => OwnerAction::Fetch {
                        after: cursor(r),
                        limit: u32::from(r.u8() % 8),
                    },
                    2 => {
                        let which = r.u8() % 3;
                        let seqs = (0..r.u8() % 4).map(|_| cursor(r)).collect();
                        OwnerAction::Ack { which, seqs }
                    }
                    3 => OwnerAction::Subscribe { after: cursor(r) },
                    4 => OwnerAction::Unsubscribe,
                    _ => OwnerAction::Body(r.bytes(24)),
                };
                Action::Owner {
                    mailbox,
                    signer,
                    sig,
                    op,
                }
            }
            5 => Action::SlotGet { slot: r.u8() % 4 },
            6 => Action::SlotPut {
                slot: r.u8() % 4,
                signer: r.u8() % 3,
                version: u64::from(r.u8() % 8),
                size: r.u8(),
                bad_sig: r.u8() > 230,
            },
            7 => match r.u8() % 3 {
                0 => Action::Ping,
                1 => Action::Raw(r.bytes(64)),
                _ => Action::Advance {
                    secs: match r.u8() % 3 {
                        0 => u32::from(r.u8()),
                        1 => 3600 * u32::from(r.u8()),
                        _ => r.u32() % (20 * 24 * 3600),
                    },
                },
            },
            _ => Action::Ping,
        }
    }

    /// The frame body this action sends, or `None` for a clock move.
    fn frame(&self, id: u64) -> Option<Vec<u8>> {
        let request = match self {
            Action::Hello { valid } => Request::Hello(wire::Hello {
                version: if *valid { 1 } else { 2 },
                access_token: Bytes::new(),
            }),
            Action::Put {
                mailbox,
                random_id,
                size: s,
                fill,
                ttl_secs,
            } => Request::Put(wire::Put {
                mailbox_id: match mailbox {
                    0..=2 => owner_mailbox(*mailbox).as_bytes().to_vec(),
                    3 => random_id.to_vec(),
                    _ => vec![7; 31],
                }
                .into(),
                blob: vec![*fill; size(*s)].into(),
                ttl_secs: *ttl_secs,
            }),
            Action::Owner { .. } => return None,
            Action::SlotGet { slot } => Request::SlotGet(wire::SlotGet {
                slot_id: vec![*slot; 32].into(),
            }),
            Action::SlotPut {
                slot,
                signer,
                version,
                size: s,
                bad_sig,
            } => {
                let key = owner(*signer);
                let value = vec![*slot ^ 0x5A; size(*s)];
                let id = SlotId::from_bytes([*slot; 32]);
                let mut signature = key
                    .sign(&slot_signing_message(&id, *version, &value))
                    .to_bytes();
                if *bad_sig {
                    signature[0] ^= 1;
                }
                Request::SlotPut(wire::SlotPut {
                    slot_id: id.as_bytes().to_vec().into(),
                    version: *version,
                    value: value.into(),
                    owner_key: key.verifying_key().as_bytes().to_vec().into(),
                    signature: signature.to_vec().into(),
                    new_owner_key: Default::default(),
                })
            }
            Action::Ping => Request::Ping(wire::Ping {}),
            Action::Raw(bytes) => return Some(bytes.clone()),
            Action::Advance { .. } => return None,
        };
        Some(
            wire::ClientFrame {
                id,
                request: Some(request),
            }
            .encode_to_vec(),
        )
    }
}

/// Builds an owner request frame; "ack everything" needs the stored seqs.
fn owner_frame(id: u64, action: &Action, stored: &[Seq]) -> Vec<u8> {
    let Action::Owner {
        mailbox,
        signer,
        sig,
        op,
    } = action
    else {
        return Vec::new();
    };
    let op = match op {
        OwnerAction::Fetch { after, limit } => wire::mailbox_op::Op::Fetch(wire::Fetch {
            after: *after,
            limit: *limit,
        }),
        OwnerAction::Ack { which, seqs } => wire::mailbox_op::Op::Ack(wire::Ack {
            seqs: match which {
                0 => stored.to_vec(),
                1 => stored.iter().take(1).copied().collect(),
                _ => seqs.clone(),
            },
        }),
        OwnerAction::Subscribe { after } => {
            wire::mailbox_op::Op::Subscribe(wire::Subscribe { after: *after })
        }
        OwnerAction::Unsubscribe => wire::mailbox_op::Op::Unsubscribe(wire::Unsubscribe {}),
        OwnerAction::Body(_) => wire::mailbox_op::Op::Unsubscribe(wire::Unsubscribe {}),
    };
    let body = match op_body_override(action) {
        Some(raw) => raw,
        None => wire::MailboxOp { op: Some(op) }.encode_to_vec(),
    };
    let key = owner(*signer);
    let challenge = if *sig == 2 { [0x22; 32] } else { CHALLENGE };
    let mut signature = key
        .sign(&request_signing_message(
            &Challenge::from_bytes(challenge),
            &body,
        ))
        .to_bytes()
        .to_vec();
    if *sig == 1 {
        signature = vec![0x33; 64];
    }
    let blinded_key = if *sig == 3 {
        // y = 2 is not on the curve: a key that is not a point.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        bad.to_vec()
    } else {
        key.verifying_key().as_bytes().to_vec()
    };
    wire::ClientFrame {
        id,
        request: Some(Request::Mailbox(wire::MailboxRequest {
            mailbox_id: owner_mailbox(*mailbox).as_bytes().to_vec().into(),
            blinded_key: blinded_key.into(),
            body: body.into(),
            signature: signature.into(),
        })),
    }
    .encode_to_vec()
}

fn op_body_override(action: &Action) -> Option<Vec<u8>> {
    match action {
        Action::Owner {
            op: OwnerAction::Body(raw),
            ..
        } => Some(raw.clone()),
        _ => None,
    }
}

/// A blob the model believes is stored.
#[derive(Clone, Debug)]
struct ModelBlob {
    seq: Seq,
    len: usize,
    fill: u8,
    expires_at: u64,
}

/// What the relay should hold, predicted independently of its code from
/// the requests it acknowledged.
#[derive(Default)]
struct Model {
    greeted: bool,
    blobs: BTreeMap<MailboxId, Vec<ModelBlob>>,
    /// Per mailbox: blob IDs increase within a mailbox only.
    last_seq: HashMap<MailboxId, Seq>,
    /// Slot ID -> (owner key, version, value length).
    slots: HashMap<[u8; 32], ([u8; 32], u64, usize)>,
    /// Subscribed mailbox -> last seq the model expects pushed.
    subscriptions: HashMap<MailboxId, Seq>,
}

impl Model {
    fn stored(&self, mailbox: &MailboxId) -> Vec<Seq> {
        self.blobs
            .get(mailbox)
            .map(|b| b.iter().map(|b| b.seq).collect())
            .unwrap_or_default()
    }

    /// Blobs of a subscribed `mailbox` the relay should push now.
    fn due_pushes(&mut self, mailbox: &MailboxId) -> Vec<Seq> {
        let Some(cursor) = self.subscriptions.get_mut(mailbox) else {
            return Vec::new();
        };
        let due: Vec<Seq> = self
            .blobs
            .get(mailbox)
            .map(|b| b.iter().map(|b| b.seq).filter(|s| s > cursor).collect())
            .unwrap_or_default();
        if let Some(last) = due.last() {
            *cursor = *last;
        }
        due
    }
}

fn error_code(response: &wire::Response) -> Option<ErrorCode> {
    match &response.result {
        Some(Reply::Error(e)) => {
            Some(ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified))
        }
        _ => None,
    }
}

/// The `relay_session` check: plays [`Action::decode_all`]`(data)` against a
/// [`FuzzRelay`] and a model of what it must store. Invariants: nothing
/// panics; every frame the relay sends encodes and decodes as a
/// `ServerFrame`; each request gets one response with its ID; acknowledged
/// puts have strictly increasing seqs; fetches and pushes return exactly the
/// model's blobs, oldest first (FIFO); an ack by the owner deletes exactly
/// the named blobs; the purge deletes exactly the expired ones; and the
/// storage's `total_bytes` equals the bytes of every stored blob and slot.
pub fn check_session(data: &[u8]) {
    run_session(data);
}

/// What a [`check_session`] run reached, so tests can tell that a seed
/// exercises what it claims to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionSummary {
    /// Puts acknowledged.
    pub puts: u64,
    /// Blobs returned by fetches.
    pub fetched: u64,
    /// Blobs deleted by acks.
    pub acked: u64,
    /// Blobs pushed to subscriptions.
    pub pushed: u64,
    /// Blobs removed by the purge.
    pub purged: u64,
    /// Slot writes accepted.
    pub slot_writes: u64,
    /// Error responses.
    pub refused: u64,
}

/// [`check_session`], returning what the run reached.
pub fn run_session(data: &[u8]) -> SessionSummary {
    let mut summary = SessionSummary::default();
    let mut relay = FuzzRelay::new();
    let mut model = Model::default();
    let limits = relay.limits().clone();
    for (i, action) in Action::decode_all(data).iter().enumerate() {
        if relay.is_closed() {
            break;
        }
        let id = i as u64 + 1;
        if let Action::Advance { secs } = action {
            summary.purged += relay.advance(u64::from(*secs)) as u64;
            let now = relay.now_secs();
            for blobs in model.blobs.values_mut() {
                blobs.retain(|b| b.expires_at > now);
            }
            model.blobs.retain(|_, b| !b.is_empty());
            check_storage(&relay, &model);
            continue;
        }
        let body = match action {
            Action::Owner { mailbox, .. } => {
                owner_frame(id, action, &model.stored(&owner_mailbox(*mailbox)))
            }
            _ => action.frame(id).unwrap_or_default(),
        };
        let now = relay.now_secs();
        let frames = relay.handle(&body);
        // Every frame must survive the wire.
        for frame in &frames {
            let bytes = frame.encode_to_vec();
            let decoded = wire::ServerFrame::decode(bytes.as_slice())
                .unwrap_or_else(|e| panic!("a relay frame does not decode: {e}"));
            assert_eq!(&decoded, frame, "a relay frame does not round-trip");
        }
        let mut responses = Vec::new();
        let mut pushes = Vec::new();
        for frame in frames {
            match frame.frame {
                Some(wire::server_frame::Frame::Response(r)) => responses.push(r),
                Some(wire::server_frame::Frame::Push(p)) => pushes.push(p),
                None => panic!("an empty server frame"),
            }
        }
        assert_eq!(responses.len(), 1, "{action:?}: one response per request");
        let response = &responses[0];
        summary.pushed += pushes.len() as u64;
        match &response.result {
            Some(Reply::Put(_)) => summary.puts += 1,
            Some(Reply::Fetch(page)) => summary.fetched += page.blobs.len() as u64,
            Some(Reply::Ack(ok)) => summary.acked += u64::from(ok.deleted),
            Some(Reply::SlotPut(_)) => summary.slot_writes += 1,
            Some(Reply::Error(_)) => summary.refused += 1,
            _ => {}
        }
        predict(&mut model, &limits, now, &body, response, &pushes, &relay);
        check_storage(&relay, &model);
    }
    summary
}

/// Checks one response (and its pushes) against the model, and updates the
/// model with what the relay acknowledged.
#[allow(clippy::too_many_arguments)]
fn predict(
    model: &mut Model,
    limits: &Limits,
    now: u64,
    body: &[u8],
    response: &wire::Response,
    pushes: &[wire::Push],
    relay: &FuzzRelay,
) {
    let code = error_code(response);
    let Ok(frame) = wire::ClientFrame::decode(body) else {
        assert_eq!(code, Some(ErrorCode::Malformed));
        assert_eq!(response.id, 0);
        assert!(pushes.is_empty());
        return;
    };
    assert_eq!(response.id, frame.id, "the response carries the request ID");
    let Some(request) = frame.request else {
        assert_eq!(code, Some(ErrorCode::UnknownRequest));
        return;
    };
    if body.len() > limits.max_frame as usize {
        assert_eq!(code, Some(ErrorCode::FrameTooLarge));
        return;
    }
    if !model.greeted {
        match request {
            Request::Hello(h) if h.version == 1 => {
                assert!(matches!(response.result, Some(Reply::Welcome(_))));
                model.greeted = true;
            }
            Request::Hello(_) => {
                assert_eq!(code, Some(ErrorCode::UnsupportedVersion));
                assert!(relay.is_closed());
            }
            _ => {
                assert_eq!(code, Some(ErrorCode::HelloRequired));
                assert!(relay.is_closed());
            }
        }
        return;
    }
    assert!(!relay.is_closed(), "the relay closed a greeted connection");
    match request {
        Request::Hello(_) => assert_eq!(code, Some(ErrorCode::HelloRequired)),
        Request::Ping(_) => assert!(matches!(response.result, Some(Reply::Pong(_)))),
        // The action decoder does not generate token requests (the token
        // tests cover them); if one appears it must still be answered.
        Request::Bootstrap(_)
        | Request::Admin(_)
        | Request::Register(_)
        | Request::IssueTokens(_)
        | Request::TokenKey(_)
        | Request::RevokeDevice(_)
        | Request::Account(_) => assert!(response.result.is_some()),
        Request::Put(put) => {
            let expected = if put.mailbox_id.len() != 32 {
                Some(ErrorCode::BadRequest)
            } else if !limits.blob_sizes.contains(&(put.blob.len() as u32)) {
                Some(ErrorCode::BadBlobSize)
            } else if put.ttl_secs != 0 && sotto_proto::Ttl::from_secs(put.ttl_secs).is_err() {
                Some(ErrorCode::TtlNotAllowed)
            } else if put.ttl_secs > limits.max_ttl_secs {
                Some(ErrorCode::TtlTooLong)
            } else {
                None
            };
            assert_eq!(code, expected, "put outcome");
            if let Some(Reply::Put(ok)) = &response.result {
                let mailbox = MailboxId::from_slice(&put.mailbox_id)
                    .unwrap_or_else(|_| panic!("accepted a bad mailbox ID"));
                let last = model.last_seq.entry(mailbox).or_default();
                assert!(ok.seq > *last, "seqs must strictly increase in a mailbox");
                *last = ok.seq;
                let ttl = if put.ttl_secs == 0 {
                    limits.default_ttl_secs
                } else {
                    put.ttl_secs
                };
                model.blobs.entry(mailbox).or_default().push(ModelBlob {
                    seq: ok.seq,
                    len: put.blob.len(),
                    fill: put.blob.first().copied().unwrap_or(0),
                    expires_at: (now + u64::from(ttl)).div_ceil(60) * 60,
                });
                let due = model.due_pushes(&mailbox);
                check_pushes(model, &mailbox, &due, pushes);
            } else {
                assert!(pushes.is_empty());
            }
        }
        Request::Mailbox(request) => owner_request(model, limits, &request, response, pushes),
        Request::SlotGet(get) => {
            let expected = model.slots.get(get.slot_id.as_ref());
            match (&response.result, expected) {
                (Some(Reply::Slot(v)), Some((_, version, len))) => {
                    assert!(v.found && v.version == *version && v.value.len() == *len)
                }
                (Some(Reply::Slot(v)), None) => assert!(!v.found),
                _ => assert_eq!(code, Some(ErrorCode::BadRequest)),
            }
        }
        Request::SlotPut(put) => {
            let expected = slot_outcome(model, limits, &put);
            assert_eq!(code, expected, "slot put outcome");
            if code.is_none() {
                let mut slot = [0u8; 32];
                slot.copy_from_slice(&put.slot_id);
                let mut owner = [0u8; 32];
                owner.copy_from_slice(&put.owner_key);
                model
                    .slots
                    .insert(slot, (owner, put.version, put.value.len()));
            }
        }
    }
}

fn slot_outcome(model: &Model, limits: &Limits, put: &wire::SlotPut) -> Option<ErrorCode> {
    let Ok(slot) = SlotId::from_slice(&put.slot_id) else {
        return Some(ErrorCode::BadRequest);
    };
    if Bucket::of_len(put.value.len()).is_none() || put.value.len() > limits.max_slot_bytes as usize
    {
        return Some(ErrorCode::BadBlobSize);
    }
    let Ok(owner) = <[u8; 32]>::try_from(put.owner_key.as_ref()) else {
        return Some(ErrorCode::BadRequest);
    };
    let Ok(key) = VerifyingKey::from_bytes(&owner) else {
        return Some(ErrorCode::BadRequest);
    };
    let Ok(signature) = ed25519_dalek::Signature::from_slice(&put.signature) else {
        return Some(ErrorCode::Unauthorized);
    };
    if key
        .verify_strict(
            &slot_signing_message(&slot, put.version, &put.value),
            &signature,
        )
        .is_err()
    {
        return Some(ErrorCode::Unauthorized);
    }
    match model.slots.get(slot.as_bytes()) {
        Some((stored_owner, _, _)) if *stored_owner != owner => Some(ErrorCode::SlotWrongOwner),
        Some((_, version, _)) if put.version <= *version => Some(ErrorCode::SlotStaleVersion),
        _ => None,
    }
}

fn owner_request(
    model: &mut Model,
    limits: &Limits,
    request: &wire::MailboxRequest,
    response: &wire::Response,
    pushes: &[wire::Push],
) {
    let code = error_code(response);
    let Ok(mailbox) = MailboxId::from_slice(&request.mailbox_id) else {
        assert_eq!(code, Some(ErrorCode::BadRequest));
        return;
    };
    let authorized = BlindedKey::from_slice(&request.blinded_key).is_ok_and(|key| {
        key.mailbox_id() == mailbox
            && key
                .verify(
                    &Challenge::from_bytes(CHALLENGE),
                    &request.body,
                    &request.signature,
                )
                .is_ok()
    });
    if !authorized {
        assert_eq!(
            code,
            Some(ErrorCode::Unauthorized),
            "an unauthorized request"
        );
        assert!(pushes.is_empty());
        return;
    }
    let op = match wire::MailboxOp::decode(request.body.clone()) {
        Ok(wire::MailboxOp { op: Some(op) }) => op,
        Ok(_) => {
            assert_eq!(code, Some(ErrorCode::UnknownRequest));
            return;
        }
        Err(_) => {
            assert_eq!(code, Some(ErrorCode::Malformed));
            return;
        }
    };
    match op {
        wire::mailbox_op::Op::Fetch(fetch) => {
            let Some(Reply::Fetch(page)) = &response.result else {
                panic!("fetch refused: {response:?}");
            };
            let limit = match fetch.limit {
                0 => usize::MAX,
                n => n as usize,
            }
            .min(limits.max_fetch_blobs as usize);
            let candidates: Vec<&ModelBlob> = model
                .blobs
                .get(&mailbox)
                .map(|b| b.iter().filter(|b| b.seq > fetch.after).collect())
                .unwrap_or_default();
            let mut expected = Vec::new();
            let mut bytes = 0;
            for blob in &candidates {
                if expected.len() >= limit
                    || (!expected.is_empty() && bytes + blob.len > limits.max_fetch_bytes as usize)
                {
                    break;
                }
                bytes += blob.len;
                expected.push(*blob);
            }
            let got: Vec<Seq> = page.blobs.iter().map(|b| b.seq).collect();
            let want: Vec<Seq> = expected.iter().map(|b| b.seq).collect();
            assert_eq!(
                got, want,
                "fetch must return the stored blobs in FIFO order"
            );
            for (stored, blob) in page.blobs.iter().zip(&expected) {
                assert_eq!(stored.blob.len(), blob.len);
                assert!(
                    stored.blob.iter().all(|b| *b == blob.fill),
                    "blob bytes changed"
                );
            }
            assert_eq!(page.more, expected.len() < candidates.len(), "fetch `more`");
            assert!(pushes.is_empty());
        }
        wire::mailbox_op::Op::Ack(ack) => {
            if ack.seqs.len() > MAX_ACK_SEQS {
                assert_eq!(code, Some(ErrorCode::BadRequest));
                return;
            }
            let Some(Reply::Ack(ok)) = &response.result else {
                panic!("ack refused: {response:?}");
            };
            let mut deleted = 0;
            if let Some(blobs) = model.blobs.get_mut(&mailbox) {
                for seq in &ack.seqs {
                    if let Some(i) = blobs.iter().position(|b| b.seq == *seq) {
                        blobs.remove(i);
                        deleted += 1;
                    }
                }
                if blobs.is_empty() {
                    model.blobs.remove(&mailbox);
                }
            }
            assert_eq!(ok.deleted, deleted, "ack deleted count");
            assert!(pushes.is_empty());
        }
        wire::mailbox_op::Op::Subscribe(subscribe) => {
            assert!(matches!(response.result, Some(Reply::Subscribe(_))));
            model.subscriptions.insert(mailbox, subscribe.after);
            let due = model.due_pushes(&mailbox);
            check_pushes(model, &mailbox, &due, pushes);
        }
        wire::mailbox_op::Op::Unsubscribe(_) => {
            assert!(matches!(response.result, Some(Reply::Unsubscribe(_))));
            model.subscriptions.remove(&mailbox);
            assert!(pushes.is_empty());
        }
    }
}

fn check_pushes(model: &Model, mailbox: &MailboxId, due: &[Seq], pushes: &[wire::Push]) {
    let got: Vec<Seq> = pushes.iter().map(|p| p.seq).collect();
    assert_eq!(got, due, "pushes must be the new blobs, oldest first");
    for push in pushes {
        assert_eq!(push.mailbox_id.as_ref(), mailbox.as_bytes());
        let blob = model
            .blobs
            .get(mailbox)
            .and_then(|b| b.iter().find(|b| b.seq == push.seq));
        assert!(
            blob.is_some_and(|b| b.len == push.blob.len()),
            "pushed blob differs"
        );
    }
}

/// The storage holds exactly the model's blobs, in order, and its byte
/// accounting is their sum plus the slots'.
fn check_storage(relay: &FuzzRelay, model: &Model) {
    let storage = relay.storage();
    let everything = FetchRange {
        after: 0,
        upto: Seq::MAX,
        limit: usize::MAX,
        max_bytes: usize::MAX,
    };
    let mut blob_bytes = 0u64;
    for (mailbox, blobs) in &model.blobs {
        let page = storage
            .fetch(mailbox, everything)
            .unwrap_or_else(|e| panic!("MemoryStorage fetch failed: {e}"));
        let got: Vec<(Seq, usize)> = page.blobs.iter().map(|b| (b.seq, b.blob.len())).collect();
        let want: Vec<(Seq, usize)> = blobs.iter().map(|b| (b.seq, b.len)).collect();
        assert_eq!(got, want, "stored blobs differ from the acknowledged ones");
        let usage = storage.mailbox_usage(mailbox);
        assert_eq!(usage.count, blobs.len() as u64, "mailbox blob count");
        blob_bytes += usage.bytes;
        assert_eq!(
            usage.bytes,
            blobs.iter().map(|b| b.len as u64).sum::<u64>(),
            "mailbox bytes"
        );
    }
    assert_eq!(storage.mailbox_count(), model.blobs.len(), "mailbox count");
    let slot_bytes: u64 = model.slots.values().map(|(_, _, len)| *len as u64).sum();
    assert_eq!(
        storage.total_bytes(),
        blob_bytes + slot_bytes,
        "total_bytes must equal the stored blobs and slots"
    );
}
