//! The per-connection protocol state machine, free of I/O: the connection
//! hands it each received frame and performs the [`Step`] it returns.
//!
//! It enforces the connection-level rules: `Hello` first and once, the
//! request rate limit, and the per-connection subscription cap.

use std::collections::HashSet;

use bytes::Bytes;
use sotto_proto::Message;
use sotto_proto::wire::{self, ErrorCode, client_frame::Request, response::Result as Reply};
use sotto_proto::{Challenge, MailboxId};

use crate::ops::hello;
use crate::ops::mailbox::{OwnerOp, authorize};
use crate::ops::put::PutRequest;
use crate::ops::slot::SlotWrite;
use crate::rate::TokenBucket;
use crate::refusal::Refusal;
use crate::relay::{Relay, Stats};
use crate::storage::{Seq, Storage};

/// What the connection must do next.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send this response now.
    Reply(wire::Response),
    /// Send this response once every write so far is durable, then wake the
    /// subscribers of `wake`.
    ReplyWhenDurable {
        response: wire::Response,
        wake: Option<MailboxId>,
    },
    /// Reply `SubscribeOk` to `id`, then push `mailbox` from `after`.
    Subscribe {
        id: u64,
        mailbox: MailboxId,
        after: Seq,
    },
    /// Stop pushing `mailbox` and reply to `id`.
    Unsubscribe { id: u64, mailbox: MailboxId },
    /// Send this response, then close the connection.
    Close(wire::Response),
}

fn ok(id: u64, result: Reply) -> wire::Response {
    wire::Response {
        id,
        result: Some(result),
    }
}

/// One connection's protocol state.
pub(crate) struct Session {
    challenge: Challenge,
    greeted: bool,
    rate: TokenBucket,
    violations: u32,
    subscriptions: HashSet<MailboxId>,
}

impl Session {
    /// A session with the connection's random `challenge`.
    pub(crate) fn new<S: Storage>(relay: &Relay<S>, challenge: Challenge) -> Self {
        let limits = &relay.limits;
        Self {
            challenge,
            greeted: false,
            rate: TokenBucket::new(
                limits.requests_per_sec,
                limits.request_burst,
                relay.clock.now_millis(),
            ),
            violations: 0,
            subscriptions: HashSet::new(),
        }
    }

    /// Whether `Hello` was accepted.
    pub(crate) fn is_greeted(&self) -> bool {
        self.greeted
    }

    /// Handles one frame.
    pub(crate) fn handle<S: Storage>(&mut self, relay: &Relay<S>, frame: Bytes) -> Step {
        let step = self.step(relay, frame);
        if let Step::Reply(wire::Response {
            result: Some(Reply::Error(_)),
            ..
        })
        | Step::Close(wire::Response {
            result: Some(Reply::Error(_)),
            ..
        }) = &step
        {
            Stats::bump(&relay.stats.refused, 1);
        }
        step
    }

    fn step<S: Storage>(&mut self, relay: &Relay<S>, frame: Bytes) -> Step {
        let frame = match wire::ClientFrame::decode(frame) {
            Ok(frame) => frame,
            // The framing is intact (the length prefix was honoured), so the
            // connection can go on after a typed error.
            Err(e) => {
                return Step::Reply(
                    Refusal::new(ErrorCode::Malformed, format!("frame does not decode: {e}"))
                        .into_response(0),
                );
            }
        };
        let id = frame.id;
        let Some(request) = frame.request else {
            return Step::Reply(
                Refusal::new(ErrorCode::UnknownRequest, "unknown request kind").into_response(id),
            );
        };
        if !self.greeted {
            return match request {
                Request::Hello(h) => match hello::parse(&h) {
                    Ok(()) => {
                        self.greeted = true;
                        let welcome =
                            hello::welcome(&self.challenge, &relay.limits, relay.clock.now_secs());
                        Step::Reply(ok(id, Reply::Welcome(welcome)))
                    }
                    Err(refusal) => Step::Close(refusal.into_response(id)),
                },
                _ => Step::Close(
                    Refusal::new(ErrorCode::HelloRequired, "the first request must be Hello")
                        .into_response(id),
                ),
            };
        }
        if !self.rate.try_take(relay.clock.now_millis()) {
            self.violations += 1;
            let refusal = Refusal::new(ErrorCode::RateLimited, "too many requests; slow down");
            return if self.violations >= relay.limits.max_rate_violations {
                Step::Close(refusal.into_response(id))
            } else {
                Step::Reply(refusal.into_response(id))
            };
        }
        self.violations = 0;
        match self.apply(relay, id, request) {
            Ok(step) => step,
            Err(refusal) => Step::Reply(refusal.into_response(id)),
        }
    }

    fn apply<S: Storage>(
        &mut self,
        relay: &Relay<S>,
        id: u64,
        request: Request,
    ) -> Result<Step, Refusal> {
        Ok(match request {
            Request::Hello(_) => {
                return Err(Refusal::new(
                    ErrorCode::HelloRequired,
                    "Hello may be sent only once",
                ));
            }
            Request::Ping(_) => Step::Reply(ok(id, Reply::Pong(wire::Pong {}))),
            Request::Put(put) => {
                let put = PutRequest::parse(put, &relay.limits)?;
                let seq = relay.put(&put)?;
                Step::ReplyWhenDurable {
                    response: ok(id, Reply::Put(wire::PutOk { seq })),
                    wake: Some(put.mailbox),
                }
            }
            Request::Mailbox(request) => {
                let (mailbox, op) = authorize(&request, &self.challenge)?;
                match op {
                    OwnerOp::Fetch { after, limit } => {
                        Step::Reply(ok(id, Reply::Fetch(relay.fetch(&mailbox, after, limit)?)))
                    }
                    OwnerOp::Ack { seqs } => {
                        let deleted = relay.ack(&mailbox, &seqs)?;
                        Step::ReplyWhenDurable {
                            response: ok(id, Reply::Ack(wire::AckOk { deleted })),
                            wake: None,
                        }
                    }
                    OwnerOp::Subscribe { after } => {
                        if !self.subscriptions.contains(&mailbox)
                            && self.subscriptions.len() >= relay.limits.max_subscriptions as usize
                        {
                            return Err(Refusal::new(
                                ErrorCode::TooManySubscriptions,
                                format!(
                                    "at most {} subscriptions per connection",
                                    relay.limits.max_subscriptions
                                ),
                            ));
                        }
                        self.subscriptions.insert(mailbox);
                        Step::Subscribe { id, mailbox, after }
                    }
                    OwnerOp::Unsubscribe => {
                        self.subscriptions.remove(&mailbox);
                        Step::Unsubscribe { id, mailbox }
                    }
                }
            }
            Request::SlotGet(get) => Step::Reply(ok(id, Reply::Slot(relay.slot_get(&get)?))),
            Request::SlotPut(put) => {
                relay.slot_put(SlotWrite::parse(put, relay.limits.max_slot_bytes)?)?;
                Step::ReplyWhenDurable {
                    response: ok(id, Reply::SlotPut(wire::SlotPutOk {})),
                    wake: None,
                }
            }
        })
    }
}

/// The `SubscribeOk` / `UnsubscribeOk` replies the connection sends.
pub(crate) fn subscribed(id: u64) -> wire::Response {
    ok(id, Reply::Subscribe(wire::SubscribeOk {}))
}

pub(crate) fn unsubscribed(id: u64) -> wire::Response {
    ok(id, Reply::Unsubscribe(wire::UnsubscribeOk {}))
}
