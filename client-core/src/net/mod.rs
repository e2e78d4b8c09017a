//! The QUIC transport to a relay: one connection, one long-lived stream,
//! requests tagged with IDs and pipelined, pushes delivered on a channel.
//!
//! Every [`RelayConnection`] gets a fresh UDP socket, no address-validation
//! token store, and no TLS resumption, so the relay cannot link two
//! connections of the same device by anything the transport carries
//! (DESIGN §2.3). Callers open one connection to send and another to
//! receive.

mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prost::Message;
use sotto_proto::wire::{self, ErrorCode, client_frame::Request, response::Result as Reply};
use sotto_proto::{
    Blob, Challenge, FrameDecoder, MailboxId, PROTOCOL_MAX_FRAME, PROTOCOL_VERSION, SlotId,
    encode_frame,
};
use tokio::sync::{mpsc, oneshot};

/// The TLS server name clients ask for (authentication is by fingerprint).
pub const RELAY_SERVER_NAME: &str = "sotto-relay";

/// How long to wait for a relay to answer one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pushes buffered before the transport stops reading (back-pressure).
const PUSH_QUEUE: usize = 1024;

/// Where a relay is and which certificate it must present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayAddr {
    /// UDP address.
    pub addr: SocketAddr,
    /// SHA-256 of the relay's DER certificate.
    pub fingerprint: [u8; 32],
}

/// A blob pushed by a subscription.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// The mailbox it was put in.
    pub mailbox: MailboxId,
    /// Its seq (the fetch cursor after it).
    pub seq: u64,
    /// The blob bytes (bucket-sized if the relay is honest; check before use).
    pub blob: Bytes,
}

/// Something that can prove ownership of a mailbox: a blinded inbox key for
/// the current epoch (or, in relay tests, any ed25519 key).
pub trait MailboxSigner: Send + Sync {
    /// The mailbox this signer owns.
    fn mailbox_id(&self) -> MailboxId;
    /// The 32-byte blinded public key.
    fn blinded_key(&self) -> [u8; 32];
    /// An ed25519 signature over `message` under the blinded key.
    fn sign(&self, message: &[u8]) -> [u8; 64];
}

impl MailboxSigner for crate::BlindedInbox {
    fn mailbox_id(&self) -> MailboxId {
        crate::BlindedInbox::mailbox_id(self)
    }

    fn blinded_key(&self) -> [u8; 32] {
        *crate::BlindedInbox::blinded_key(self).as_bytes()
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        crate::BlindedInbox::sign(self, message)
    }
}

/// A transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The relay could not be reached.
    #[error("cannot reach the relay at {addr}: {reason}")]
    Unreachable {
        /// Where we tried.
        addr: SocketAddr,
        /// Why it failed.
        reason: String,
    },
    /// The relay presented a certificate other than the pinned one.
    #[error(
        "the relay at {addr} presented a different certificate than the one pinned in your invite; this may be an impostor (or the relay was reinstalled and everyone needs new invites)"
    )]
    FingerprintMismatch {
        /// The relay address.
        addr: SocketAddr,
    },
    /// The relay refused the request with a typed error.
    #[error("the relay refused the request ({code:?}): {message}")]
    Refused {
        /// The relay's code.
        code: ErrorCode,
        /// The relay's explanation.
        message: String,
    },
    /// The connection ended.
    #[error("the connection to the relay was lost: {0}")]
    ConnectionLost(String),
    /// The relay did not answer in time.
    #[error("the relay did not answer within {0:?}")]
    Timeout(Duration),
    /// The relay sent something this client does not understand.
    #[error("the relay sent an unexpected reply: {0}")]
    Protocol(String),
    /// Local setup failed (socket, TLS configuration).
    #[error("cannot set up the connection: {0}")]
    Setup(String),
}

impl NetError {
    /// The relay's error code, if the relay refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            NetError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<wire::Response>>>>;

/// A live connection to a relay.
pub struct RelayConnection {
    conn: quinn::Connection,
    endpoint: quinn::Endpoint,
    send: tokio::sync::Mutex<quinn::SendStream>,
    pending: Pending,
    next_id: AtomicU64,
    pushes: Mutex<Option<mpsc::Receiver<Pushed>>>,
    reader: tokio::task::JoinHandle<()>,
    welcome: wire::Welcome,
    challenge: Challenge,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Guarded sections are single map operations.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RelayConnection {
    /// Connects, pins the certificate, and says hello (with an anonymous
    /// access token once the relay requires one).
    pub async fn connect(relay: &RelayAddr, access_token: Option<Bytes>) -> Result<Self, NetError> {
        let connection = Self::open(relay).await?;
        connection.hello(access_token).await
    }

    /// Opens the connection and its stream but sends nothing: for tests of
    /// what a relay does with clients that skip the handshake.
    #[cfg(feature = "test-support")]
    pub async fn connect_without_hello(relay: &RelayAddr) -> Result<Self, NetError> {
        Self::open(relay).await
    }

    async fn hello(mut self, access_token: Option<Bytes>) -> Result<Self, NetError> {
        let hello = Request::Hello(wire::Hello {
            version: PROTOCOL_VERSION,
            access_token: access_token.unwrap_or_default(),
        });
        match self.request(hello).await? {
            Reply::Welcome(welcome) => {
                self.challenge = Challenge::from_slice(&welcome.challenge)
                    .map_err(|e| NetError::Protocol(format!("challenge: {e}")))?;
                self.welcome = welcome;
                Ok(self)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Opens the connection and its stream; sends nothing yet.
    async fn open(relay: &RelayAddr) -> Result<Self, NetError> {
        let addr = relay.addr;
        let (tls, mismatch) =
            tls::client_config(relay.fingerprint).map_err(|e| NetError::Setup(e.to_string()))?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| NetError::Setup(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.token_store(Arc::new(quinn::NoneTokenStore));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(15)));
        transport.max_concurrent_bidi_streams(0u32.into());
        transport.max_concurrent_uni_streams(0u32.into());
        config.transport_config(Arc::new(transport));
        // A fresh socket per connection: nothing at the UDP layer links two
        // connections of this device either.
        let bind: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| NetError::Setup(format!("UDP socket: {e}")))?;
        endpoint.set_default_client_config(config);
        let connecting =
            endpoint
                .connect(addr, RELAY_SERVER_NAME)
                .map_err(|e| NetError::Unreachable {
                    addr,
                    reason: e.to_string(),
                })?;
        let conn = match tokio::time::timeout(Duration::from_secs(10), connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(if mismatch.load(Ordering::SeqCst) {
                    NetError::FingerprintMismatch { addr }
                } else {
                    NetError::Unreachable {
                        addr,
                        reason: e.to_string(),
                    }
                });
            }
            Err(_) => {
                return Err(NetError::Unreachable {
                    addr,
                    reason: "no answer within 10s (is the relay running and UDP open?)".into(),
                });
            }
        };
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| NetError::ConnectionLost(e.to_string()))?;
        let pending: Pending = Arc::default();
        let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE);
        let reader = tokio::spawn(read_loop(recv, pending.clone(), push_tx));
        Ok(Self {
            conn,
            endpoint,
            send: tokio::sync::Mutex::new(send),
            pending,
            next_id: AtomicU64::new(1),
            pushes: Mutex::new(Some(push_rx)),
            reader,
            welcome: wire::Welcome::default(),
            challenge: Challenge::from_bytes([0; 32]),
        })
    }

    /// The relay's welcome (limits, clock).
    pub fn welcome(&self) -> &wire::Welcome {
        &self.welcome
    }

    /// This connection's challenge, which owner requests sign.
    pub fn challenge(&self) -> &Challenge {
        &self.challenge
    }

    /// Takes the push receiver (once); pushes of every subscription on this
    /// connection arrive there in order per mailbox.
    ///
    /// Replies share the stream with pushes and come behind them, and the
    /// connection stops reading while this queue is full: whoever holds the
    /// receiver must keep taking pushes while it waits for a reply on the
    /// same connection (or drop the receiver), or the reply is stuck until
    /// the request timeout.
    pub fn take_pushes(&self) -> Option<mpsc::Receiver<Pushed>> {
        lock(&self.pushes).take()
    }

    /// Sends any request and waits for its reply; a relay error becomes
    /// [`NetError::Refused`].
    pub async fn request(&self, request: Request) -> Result<Reply, NetError> {
        let frame = wire::ClientFrame {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            request: Some(request),
        };
        let mut bytes = BytesMut::new();
        encode_frame(&frame, &mut bytes);
        self.send_raw_with_reply(frame.id, &bytes).await
    }

    /// Writes raw bytes on the stream (tests use it to send malformed input)
    /// and waits for the reply to request `id`.
    pub async fn send_raw_with_reply(&self, id: u64, bytes: &[u8]) -> Result<Reply, NetError> {
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        self.send_raw(bytes).await?;
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => {
                return Err(NetError::ConnectionLost(
                    self.conn
                        .close_reason()
                        .map_or_else(|| "stream closed".into(), |r| r.to_string()),
                ));
            }
            Err(_) => {
                lock(&self.pending).remove(&id);
                return Err(NetError::Timeout(REQUEST_TIMEOUT));
            }
        };
        match response.result {
            Some(Reply::Error(error)) => Err(NetError::Refused {
                code: ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified),
                message: error.message,
            }),
            Some(reply) => Ok(reply),
            None => Err(NetError::Protocol("empty response".into())),
        }
    }

    /// Writes raw bytes on the stream without waiting for anything.
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), NetError> {
        self.send
            .lock()
            .await
            .write_all(bytes)
            .await
            .map_err(|e| NetError::ConnectionLost(e.to_string()))
    }

    /// Stores `blob` in `mailbox`; returns its seq once the relay made it
    /// durable.
    pub async fn put(
        &self,
        mailbox: &MailboxId,
        blob: &Blob,
        ttl_secs: u32,
    ) -> Result<u64, NetError> {
        let request = Request::Put(wire::Put {
            mailbox_id: mailbox.as_bytes().to_vec().into(),
            blob: blob.bytes().clone(),
            ttl_secs,
        });
        match self.request(request).await? {
            Reply::Put(ok) => Ok(ok.seq),
            other => Err(unexpected(&other)),
        }
    }

    /// Builds an owner request for `signer`'s mailbox, signed for this
    /// connection.
    pub fn owner_request(&self, signer: &dyn MailboxSigner, op: wire::mailbox_op::Op) -> Request {
        let body = wire::MailboxOp { op: Some(op) }.encode_to_vec();
        let signature = signer.sign(&sotto_proto::request_signing_message(
            &self.challenge,
            &body,
        ));
        Request::Mailbox(wire::MailboxRequest {
            mailbox_id: signer.mailbox_id().as_bytes().to_vec().into(),
            blinded_key: signer.blinded_key().to_vec().into(),
            body: body.into(),
            signature: signature.to_vec().into(),
        })
    }

    /// One page of blobs after `after` (limit 0: as many as the relay sends).
    pub async fn fetch(
        &self,
        signer: &dyn MailboxSigner,
        after: u64,
        limit: u32,
    ) -> Result<wire::FetchOk, NetError> {
        let op = wire::mailbox_op::Op::Fetch(wire::Fetch { after, limit });
        match self.request(self.owner_request(signer, op)).await? {
            Reply::Fetch(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes blobs by seq; returns how many the relay deleted. More seqs
    /// than one ack may name ([`sotto_proto::MAX_ACK_SEQS`]) go in several
    /// requests, pipelined.
    pub async fn ack(&self, signer: &dyn MailboxSigner, seqs: Vec<u64>) -> Result<u32, NetError> {
        let acks = seqs.chunks(sotto_proto::MAX_ACK_SEQS).map(|seqs| {
            let op = wire::mailbox_op::Op::Ack(wire::Ack {
                seqs: seqs.to_vec(),
            });
            let request = self.owner_request(signer, op);
            async move {
                match self.request(request).await? {
                    Reply::Ack(ok) => Ok(ok.deleted),
                    other => Err(unexpected(&other)),
                }
            }
        });
        let mut deleted = 0u32;
        for result in futures::future::join_all(acks).await {
            deleted = deleted.saturating_add(result?);
        }
        Ok(deleted)
    }

    /// Subscribes: the relay pushes every blob after `after`, then each new
    /// one, on this connection.
    pub async fn subscribe(&self, signer: &dyn MailboxSigner, after: u64) -> Result<(), NetError> {
        let op = wire::mailbox_op::Op::Subscribe(wire::Subscribe { after });
        match self.request(self.owner_request(signer, op)).await? {
            Reply::Subscribe(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Stops a subscription.
    pub async fn unsubscribe(&self, signer: &dyn MailboxSigner) -> Result<(), NetError> {
        let op = wire::mailbox_op::Op::Unsubscribe(wire::Unsubscribe {});
        match self.request(self.owner_request(signer, op)).await? {
            Reply::Unsubscribe(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Reads a slot: `(version, value)` if it exists.
    pub async fn slot_get(&self, slot: &SlotId) -> Result<Option<(u64, Bytes)>, NetError> {
        let request = Request::SlotGet(wire::SlotGet {
            slot_id: slot.as_bytes().to_vec().into(),
        });
        match self.request(request).await? {
            Reply::Slot(value) if value.found => Ok(Some((value.version, value.value))),
            Reply::Slot(_) => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    /// Writes a slot, signed by `owner` over
    /// `"sotto/slot/v1" || slot || be64(version) || value`.
    pub async fn slot_put(
        &self,
        slot: &SlotId,
        version: u64,
        value: Bytes,
        owner: &ed25519_dalek::SigningKey,
    ) -> Result<(), NetError> {
        self.slot_write(slot, version, value, owner, None).await
    }

    /// Writes a slot and hands it to `new_owner`: only that key may write it
    /// afterwards. Signed by the current `owner` over
    /// `"sotto/slot-transfer/v1" || slot || be64(version) || value || new_owner`.
    pub async fn slot_transfer(
        &self,
        slot: &SlotId,
        version: u64,
        value: Bytes,
        owner: &ed25519_dalek::SigningKey,
        new_owner: &ed25519_dalek::VerifyingKey,
    ) -> Result<(), NetError> {
        self.slot_write(slot, version, value, owner, Some(new_owner))
            .await
    }

    async fn slot_write(
        &self,
        slot: &SlotId,
        version: u64,
        value: Bytes,
        owner: &ed25519_dalek::SigningKey,
        new_owner: Option<&ed25519_dalek::VerifyingKey>,
    ) -> Result<(), NetError> {
        use ed25519_dalek::Signer;
        let message = match new_owner {
            Some(next) => {
                sotto_proto::slot_transfer_signing_message(slot, version, &value, next.as_bytes())
            }
            None => sotto_proto::slot_signing_message(slot, version, &value),
        };
        let signature = owner.sign(&message);
        let request = Request::SlotPut(wire::SlotPut {
            slot_id: slot.as_bytes().to_vec().into(),
            version,
            value,
            owner_key: owner.verifying_key().as_bytes().to_vec().into(),
            signature: signature.to_bytes().to_vec().into(),
            new_owner_key: new_owner
                .map(|k| k.as_bytes().to_vec().into())
                .unwrap_or_default(),
        });
        match self.request(request).await? {
            Reply::SlotPut(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Round trip to the relay.
    pub async fn ping(&self) -> Result<(), NetError> {
        match self.request(Request::Ping(wire::Ping {})).await? {
            Reply::Pong(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Whether the relay closed the connection (and why).
    pub fn close_reason(&self) -> Option<String> {
        self.conn.close_reason().map(|r| r.to_string())
    }

    /// The local UDP address (tests check every connection has its own).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        if let Ok(mut send) = self.send.try_lock() {
            let _ = send.finish();
        }
        self.conn.close(0u32.into(), b"bye");
        self.reader.abort();
        // Long enough for the endpoint driver to send CONNECTION_CLOSE (a
        // local UDP send), not for the whole draining period (3 PTO, about
        // 80 ms even on loopback), which every command would otherwise wait
        // out once per connection.
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
    }
}

impl Drop for RelayConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// How long [`RelayConnection::close`] lets the close frame go out.
const CLOSE_GRACE: Duration = Duration::from_millis(15);

fn unexpected(reply: &Reply) -> NetError {
    NetError::Protocol(format!("{reply:?}").chars().take(80).collect())
}

async fn read_loop(mut recv: quinn::RecvStream, pending: Pending, pushes: mpsc::Sender<Pushed>) {
    let mut decoder = FrameDecoder::new(PROTOCOL_MAX_FRAME);
    loop {
        let chunk = match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) | Err(_) => break,
        };
        decoder.push(&chunk.bytes);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => {
                    lock(&pending).clear();
                    return;
                }
            };
            let Ok(frame) = wire::ServerFrame::decode(frame) else {
                continue;
            };
            match frame.frame {
                Some(wire::server_frame::Frame::Response(response)) => {
                    let waiter = lock(&pending).remove(&response.id);
                    match waiter {
                        Some(waiter) => {
                            let _ = waiter.send(response);
                        }
                        // An error about a frame that had no usable id (a
                        // malformed frame): deliver it to every waiter.
                        None if response.id == 0 => {
                            for (_, waiter) in lock(&pending).drain() {
                                let _ = waiter.send(response.clone());
                            }
                        }
                        None => {}
                    }
                }
                Some(wire::server_frame::Frame::Push(push)) => {
                    let Ok(mailbox) = MailboxId::from_slice(&push.mailbox_id) else {
                        continue;
                    };
                    let pushed = Pushed {
                        mailbox,
                        seq: push.seq,
                        blob: push.blob,
                    };
                    if pushes.send(pushed).await.is_err() {
                        // Nobody listens for pushes; keep serving replies.
                    }
                }
                None => {}
            }
        }
    }
    // Dropping the senders wakes every waiter with "connection lost".
    lock(&pending).clear();
}
