//! One task per connection: reads frames from the connection's stream, runs
//! them through the [`Session`] state machine, and performs its steps.
//!
//! Requests are pipelined: a put is stored in request order on this task (so
//! FIFO order holds), then its reply waits for group commit on a separate
//! task, so one connection can have many puts in flight. Responses and
//! pushes share one writer task and one stream; a queue bounded in frames
//! *and bytes* in front of it propagates back-pressure to whoever produces
//! frames, so a client that stops reading holds at most [`OUT_BYTES`] of
//! replies in the relay, however large they are.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::future::OptionFuture;
use sotto_proto::Message as _;
use sotto_proto::wire::{self, ErrorCode};
use sotto_proto::{Challenge, FrameDecoder, FrameError, MailboxId, encode_frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::commit::Stamp;
use crate::hub::Subscription;
use crate::refusal::Refusal;
use crate::relay::{Relay, Stats};
use crate::session::{self, Session, Step};
use crate::storage::{Seq, Storage};

/// Application close codes.
pub(crate) mod close {
    pub(crate) const NORMAL: u32 = 0;
    pub(crate) const PROTOCOL: u32 = 1;
    pub(crate) const SHUTTING_DOWN: u32 = 2;
}

/// Frames queued for the writer before producers wait.
const OUT_QUEUE: usize = 256;
/// Encoded bytes queued for the writer before producers wait. A count alone
/// did not bound memory: 256 fetch pages of 512 KiB are 128 MiB held for a
/// client that sends fetches and never reads (found by
/// `tests/tests/relay_flood.rs`). Two full pages keep a reading client's stream
/// busy.
pub const OUT_BYTES: usize = 1024 * 1024;
/// Bytes the writer gathers into one write.
const WRITE_BATCH: usize = 64 * 1024;
/// A write buffer larger than this is dropped after its write rather than
/// kept for the next one.
const IDLE_WRITE_BUFFER: usize = 8 * 1024;
/// How long a closing connection waits for the peer to take its last frames.
const LINGER: Duration = Duration::from_secs(2);

fn response(response: wire::Response) -> wire::ServerFrame {
    wire::ServerFrame {
        frame: Some(wire::server_frame::Frame::Response(response)),
    }
}

/// The writer's queue: a frame waits for room in both the frame count and
/// the byte budget, and gives its bytes back once written to the stream.
struct Outbox<S: Storage> {
    frames: mpsc::Sender<Queued<S>>,
    bytes: Arc<Semaphore>,
    relay: Arc<Relay<S>>,
}

impl<S: Storage> Clone for Outbox<S> {
    fn clone(&self) -> Self {
        Self {
            frames: self.frames.clone(),
            bytes: self.bytes.clone(),
            relay: self.relay.clone(),
        }
    }
}

/// A frame and its share of the byte budget, counted in
/// [`Stats::queued_bytes`] until it is dropped.
///
/// One box holds all of it: the outgoing channel allocates its slots in
/// blocks of 32 up front, on every connection, idle or not. An inline
/// `ServerFrame` made that block 5.4 KiB (a heap profile of idle
/// connections); a boxed frame beside its permit and relay handle, 32-byte
/// slots, 1 KiB; a pointer, 8-byte slots, 256 bytes.
struct Queued<S: Storage>(Box<QueuedFrame<S>>);

struct QueuedFrame<S: Storage> {
    frame: wire::ServerFrame,
    permit: OwnedSemaphorePermit,
    relay: Arc<Relay<S>>,
}

impl<S: Storage> Drop for QueuedFrame<S> {
    fn drop(&mut self) {
        let bytes = self.permit.num_permits() as u64;
        self.relay
            .stats
            .queued_bytes
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The writer is gone: the connection is closing.
#[derive(Debug)]
struct WriterGone;

impl<S: Storage> Outbox<S> {
    fn new(relay: Arc<Relay<S>>) -> (Self, mpsc::Receiver<Queued<S>>) {
        let (frames, queue) = mpsc::channel(OUT_QUEUE);
        let bytes = Arc::new(Semaphore::new(OUT_BYTES));
        (
            Self {
                frames,
                bytes,
                relay,
            },
            queue,
        )
    }

    /// Queues `frame` once the byte budget and the queue have room. The
    /// future is boxed: the connection and push tasks await it at several
    /// points, and inline it (frame, semaphore and channel futures) made
    /// every idle connection's tasks larger.
    fn send(
        &self,
        frame: wire::ServerFrame,
    ) -> std::pin::Pin<Box<impl std::future::Future<Output = Result<(), WriterGone>> + Send + '_>>
    {
        Box::pin(async move {
            // A frame larger than the whole budget takes all of it.
            let cost = frame.encoded_len().clamp(1, OUT_BYTES) as u32;
            let permit = self
                .bytes
                .clone()
                .acquire_many_owned(cost)
                .await
                .map_err(|_| WriterGone)?;
            Stats::bump(&self.relay.stats.queued_bytes, u64::from(cost));
            let queued = Queued(Box::new(QueuedFrame {
                frame,
                permit,
                relay: self.relay.clone(),
            }));
            self.frames.send(queued).await.map_err(|_| WriterGone)
        })
    }
}

/// Serves one accepted connection until the client leaves, breaks the
/// protocol, or the relay shuts down. The client must have opened its
/// stream and said hello by `hello_deadline`.
pub(crate) async fn serve<S: Storage>(
    conn: quinn::Connection,
    relay: Arc<Relay<S>>,
    mut shutdown: watch::Receiver<bool>,
    hello_deadline: Instant,
) {
    let (send, mut recv) = match tokio::time::timeout_at(hello_deadline, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        _ => {
            conn.close(close::PROTOCOL.into(), b"no stream opened in time");
            return;
        }
    };
    let mut challenge = [0u8; sotto_proto::CHALLENGE_LEN];
    if getrandom::fill(&mut challenge).is_err() {
        tracing::error!("the OS random number generator failed; closing connection");
        conn.close(close::PROTOCOL.into(), b"internal error");
        return;
    }
    let mut session = Session::new(&relay, Challenge::from_bytes(challenge));
    let (out, out_rx) = Outbox::new(relay.clone());
    let writer = tokio::spawn(write_loop(send, out_rx));
    let in_flight = Arc::new(Semaphore::new(relay.limits.max_in_flight as usize));
    let mut pending = JoinSet::new();
    let mut pushers: HashMap<MailboxId, AbortHandle> = HashMap::new();
    let mut decoder = FrameDecoder::new(relay.limits.max_frame as usize);
    let mut close_code = close::NORMAL;
    // Boxed, and dropped once the client has said hello: an idle connection
    // keeps no timer.
    let mut hello_timer = Some(Box::pin(tokio::time::sleep_until(hello_deadline)));

    'read: loop {
        if session.is_greeted() {
            hello_timer = None;
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                close_code = close::SHUTTING_DOWN;
                break 'read;
            }
            Some(()) = OptionFuture::from(hello_timer.as_mut()), if hello_timer.is_some() => {
                close_code = close::PROTOCOL;
                break 'read;
            }
            Some(_) = pending.join_next(), if !pending.is_empty() => {}
            chunk = recv.read_chunk(WRITE_BATCH, true) => {
                let chunk = match chunk {
                    Ok(Some(chunk)) => chunk,
                    // The client finished its side or the connection died.
                    Ok(None) | Err(_) => break 'read,
                };
                decoder.push(&chunk.bytes);
                loop {
                    let frame = match decoder.next_frame() {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(error @ FrameError::TooLarge { .. }) => {
                            // The stream cannot be resynchronised after a bad
                            // length: say why, then close.
                            Stats::bump(&relay.stats.refused, 1);
                            relay.metrics.refused(ErrorCode::FrameTooLarge);
                            let refusal = Refusal::new(ErrorCode::FrameTooLarge, error.to_string());
                            let _ = out.send(response(refusal.into_response(0))).await;
                            close_code = close::PROTOCOL;
                            break 'read;
                        }
                        Err(FrameError::Truncated { .. }) => break,
                    };
                    let step = match session.handle(&relay, frame) {
                        // Boxed: inline, this rare await made every
                        // connection's task 128 bytes larger.
                        Step::Ack { id, mailbox, seqs } => match Box::pin(relay.ack_apart(mailbox, seqs)).await {
                            Ok(deleted) => Step::ReplyWhenDurable {
                                response: session::acked(id, deleted),
                                wake: None,
                            },
                            Err(refusal) => {
                                relay.metrics.refused(refusal.code);
                                Step::Reply(refusal.into_response(id))
                            }
                        },
                        step => step,
                    };
                    match step {
                        Step::Reply(reply) => {
                            if out.send(response(reply)).await.is_err() {
                                break 'read;
                            }
                        }
                        Step::ReplyWhenDurable { response: reply, wake } => {
                            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                                break 'read;
                            };
                            let relay = relay.clone();
                            let out = out.clone();
                            pending.spawn(async move {
                                let reply = match relay.commit.durable().await {
                                    Ok(()) => {
                                        if let Some(mailbox) = wake {
                                            relay.hub.notify(&mailbox);
                                        }
                                        reply
                                    }
                                    Err(_) => {
                                        relay.metrics.refused(ErrorCode::Internal);
                                        Refusal::new(
                                        ErrorCode::Internal,
                                        "the relay could not make this write durable; retry",
                                    )
                                    .into_response(reply.id)
                                    }
                                };
                                let _ = out.send(response(reply)).await;
                                drop(permit);
                            });
                        }
                        Step::Subscribe { id, mailbox, after } => {
                            if out.send(response(session::subscribed(id))).await.is_err() {
                                break 'read;
                            }
                            let subscription = relay.hub.subscribe(mailbox);
                            let task = tokio::spawn(push_loop(
                                relay.clone(),
                                subscription,
                                mailbox,
                                after,
                                out.clone(),
                            ));
                            if let Some(old) = pushers.insert(mailbox, task.abort_handle()) {
                                old.abort();
                            }
                        }
                        Step::Unsubscribe { id, mailbox } => {
                            if let Some(task) = pushers.remove(&mailbox) {
                                task.abort();
                            }
                            if out.send(response(session::unsubscribed(id))).await.is_err() {
                                break 'read;
                            }
                        }
                        // Turned into a reply above.
                        Step::Ack { .. } => {}
                        Step::Close(reply) => {
                            let _ = out.send(response(reply)).await;
                            close_code = close::PROTOCOL;
                            break 'read;
                        }
                    }
                    if let Some(pause) = session.take_rate_pause(&relay) {
                        // Over its rate: the refusal went out, and this
                        // connection is not read until its next token, so
                        // QUIC flow control holds a flooder back.
                        Stats::bump(&relay.stats.rate_pauses, 1);
                        let until = tokio::time::Instant::now() + Duration::from_millis(pause);
                        tokio::select! {
                            biased;
                            _ = shutdown.changed() => {
                                close_code = close::SHUTTING_DOWN;
                                break 'read;
                            }
                            _ = tokio::time::sleep_until(until) => {}
                        }
                    }
                }
                // Every frame read: let the buffer go (frames already handed
                // on keep their own slice of it), so an idle connection keeps
                // none.
                if decoder.finish().is_ok() {
                    decoder = FrameDecoder::new(relay.limits.max_frame as usize);
                }
            }
        }
    }

    // Finish in-flight writes: their data is stored, so their replies are
    // owed. Pushes stop at once.
    for task in pushers.into_values() {
        task.abort();
    }
    while pending.join_next().await.is_some() {}
    drop(out);
    let _ = writer.await;
    conn.close(close_code.into(), b"");
}

/// Sends queued frames, gathering whatever is ready into one write.
async fn write_loop<S: Storage>(mut send: quinn::SendStream, mut queue: mpsc::Receiver<Queued<S>>) {
    // Grown on demand and let go whenever the queue runs dry: an idle
    // connection holds no write buffer at all, and a busy one reuses its
    // buffer for as long as frames keep coming.
    let mut buf = BytesMut::new();
    // The budget of the frames in `buf` returns once quinn has taken them.
    let mut written = Vec::new();
    while let Some(queued) = queue.recv().await {
        encode_frame(&queued.0.frame, &mut buf);
        written.push(queued);
        while buf.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(queued) => {
                    encode_frame(&queued.0.frame, &mut buf);
                    written.push(queued);
                }
                Err(_) => break,
            }
        }
        if send.write_all(&buf).await.is_err() {
            return;
        }
        if queue.is_empty() || buf.capacity() > IDLE_WRITE_BUFFER {
            buf = BytesMut::new();
        } else {
            buf.clear();
        }
        written.clear();
        if queue.is_empty() || written.capacity() > 64 {
            written = Vec::new();
        }
    }
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(LINGER, send.stopped()).await;
    }
}

/// Pushes every durable blob of `mailbox` after `after`, in seq order, then
/// each new one as the hub announces it: from storage until a complete read
/// reaches the subscription's queue floor, then from the queue (see `hub`).
async fn push_loop<S: Storage>(
    relay: Arc<Relay<S>>,
    subscription: Subscription,
    mailbox: MailboxId,
    mut after: Seq,
    out: Outbox<S>,
) {
    // The watermark of the last complete storage read: every blob durable
    // at it has been pushed (or was deleted before the read).
    let mut read_to: Stamp = 0;
    loop {
        let durable = relay.commit.durable_stamp();
        let mut blobs = Vec::new();
        let mut more = false;
        match subscription.take(read_to, after, durable) {
            Some(live) => blobs = live,
            None => {
                let Ok(page) = relay.fetch_page_at(&mailbox, after, usize::MAX, durable) else {
                    return;
                };
                more = page.more;
                if !more {
                    read_to = read_to.max(durable);
                }
                blobs.extend(page.blobs.into_iter().map(|b| (b.seq, b.blob.into_bytes())));
            }
        }
        for (seq, blob) in blobs {
            after = seq;
            let push = wire::ServerFrame {
                frame: Some(wire::server_frame::Frame::Push(wire::Push {
                    mailbox_id: mailbox.as_bytes().to_vec().into(),
                    seq,
                    blob,
                })),
            };
            if out.send(push).await.is_err() {
                return;
            }
            Stats::bump(&relay.stats.pushes, 1);
        }
        if !more {
            subscription.woken().await;
        }
    }
}
