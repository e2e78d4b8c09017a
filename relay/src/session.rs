//! The per-connection protocol state machine, free of I/O: the connection
//! hands it each received frame and performs the [`Step`] it returns.
//!
//! It enforces the connection-level rules: `Hello` first and once, the
//! access token gate, the request rate limit, and the per-connection
//! subscription cap.

use std::collections::HashSet;

use bytes::Bytes;
use sotto_proto::Message;
use sotto_proto::wire::{self, ErrorCode, client_frame::Request, response::Result as Reply};
use sotto_proto::{Challenge, MailboxId};

use crate::metrics::Metrics;
use crate::ops::admin::AdminOp;
use crate::ops::device::{AccountOp, AccountRequest, DeviceRevocation};
use crate::ops::hello;
use crate::ops::mailbox::{OwnerOp, authorize};
use crate::ops::put::PutRequest;
use crate::ops::register::Registration;
use crate::ops::slot::SlotWrite;
use crate::ops::tokens::Issuance;
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
    /// Delete the named blobs of `mailbox` (see [`Relay::ack_apart`]), then
    /// reply to `id` once the deletion is durable.
    Ack {
        id: u64,
        mailbox: MailboxId,
        seqs: Vec<Seq>,
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
    /// Hello carried a valid, unspent access token.
    admitted: bool,
    rate: TokenBucket,
    violations: u32,
    /// The last frame was refused for the rate (see `take_rate_pause`).
    rate_limited: bool,
    subscriptions: HashSet<MailboxId>,
}

impl Session {
    /// A session with the connection's random `challenge`.
    pub(crate) fn new<S: Storage>(relay: &Relay<S>, challenge: Challenge) -> Self {
        let limits = &relay.limits;
        Self {
            challenge,
            greeted: false,
            admitted: false,
            rate: TokenBucket::new(
                limits.requests_per_sec,
                limits.request_burst,
                relay.clock.now_millis(),
            ),
            violations: 0,
            rate_limited: false,
            subscriptions: HashSet::new(),
        }
    }

    /// Whether `Hello` was accepted.
    /// After a frame refused for the rate: how long to stop reading this
    /// connection (until its next token), so that a flooder is held back
    /// by QUIC flow control instead of costing the relay a decode and a
    /// refusal per frame at full speed. `None` otherwise.
    pub(crate) fn take_rate_pause<S: Storage>(&mut self, relay: &Relay<S>) -> Option<u64> {
        if !std::mem::take(&mut self.rate_limited) {
            return None;
        }
        Some(self.rate.wait_millis(relay.clock.now_millis()).max(1))
    }

    pub(crate) fn is_greeted(&self) -> bool {
        self.greeted
    }

    /// Handles one frame.
    pub(crate) fn handle<S: Storage>(&mut self, relay: &Relay<S>, frame: Bytes) -> Step {
        let step = self.step(relay, frame);
        if let Step::Reply(wire::Response {
            result: Some(Reply::Error(error)),
            ..
        })
        | Step::Close(wire::Response {
            result: Some(Reply::Error(error)),
            ..
        }) = &step
        {
            Stats::bump(&relay.stats.refused, 1);
            relay
                .metrics
                .refused(ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified));
        }
        step
    }

    fn step<S: Storage>(&mut self, relay: &Relay<S>, frame: Bytes) -> Step {
        let frame = wire::ClientFrame::decode(frame);
        // Every frame costs a token except the one Hello: a frame that does
        // not decode, or names no known request, still costs the relay a
        // decode and an error reply, so letting garbage through for free
        // made it an unthrottled flood (found by `tests/tests/relay_flood.rs`).
        let first_hello = !self.greeted
            && matches!(
                &frame,
                Ok(wire::ClientFrame {
                    request: Some(Request::Hello(_)),
                    ..
                })
            );
        if !first_hello && !self.rate.try_take(relay.clock.now_millis()) {
            self.violations += 1;
            self.rate_limited = true;
            let id = frame.as_ref().map_or(0, |frame| frame.id);
            let refusal = Refusal::new(ErrorCode::RateLimited, "too many requests; slow down");
            return if self.violations >= relay.limits.max_rate_violations {
                Step::Close(refusal.into_response(id))
            } else {
                Step::Reply(refusal.into_response(id))
            };
        }
        if !first_hello {
            self.violations = 0;
        }
        let frame = match frame {
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
                Request::Hello(h) => {
                    if let Err(refusal) = hello::parse(&h) {
                        return Step::Close(refusal.into_response(id));
                    }
                    // A token that does not redeem closes the connection; no
                    // token at all leaves it limited to getting tokens.
                    let redeemed = !h.access_token.is_empty();
                    if redeemed {
                        if let Err(refusal) = relay.redeem(&h.access_token) {
                            return Step::Close(refusal.into_response(id));
                        }
                        Metrics::bump(&relay.metrics.tokens_redeemed, 1);
                        self.admitted = true;
                    }
                    self.greeted = true;
                    let welcome =
                        hello::welcome(&self.challenge, &relay.limits, relay.clock.now_secs());
                    let response = ok(id, Reply::Welcome(welcome));
                    if redeemed {
                        // The spend is durable before the client may rely
                        // on the connection, so a crash cannot un-spend it.
                        Step::ReplyWhenDurable {
                            response,
                            wake: None,
                        }
                    } else {
                        Step::Reply(response)
                    }
                }
                _ => Step::Close(
                    Refusal::new(ErrorCode::HelloRequired, "the first request must be Hello")
                        .into_response(id),
                ),
            };
        }
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
        let open_to_all = matches!(
            request,
            Request::Ping(_)
                | Request::Bootstrap(_)
                | Request::Admin(_)
                | Request::Register(_)
                | Request::IssueTokens(_)
                | Request::TokenKey(_)
                | Request::RevokeDevice(_)
                | Request::Account(_)
        );
        if relay.tokens.config.require_tokens && !self.admitted && !open_to_all {
            return Err(Refusal::new(
                ErrorCode::TokenRequired,
                "this request needs a connection opened with an access token",
            ));
        }
        let durable = |result| Step::ReplyWhenDurable {
            response: ok(id, result),
            wake: None,
        };
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
                    OwnerOp::Ack { seqs } => Step::Ack { id, mailbox, seqs },
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
            Request::Bootstrap(b) => Step::Reply(ok(id, Reply::Bootstrap(relay.bootstrap(&b)?))),
            Request::Admin(request) => match relay.authorize_admin(&request, &self.challenge)? {
                AdminOp::Mint { count, expires_at } => {
                    durable(Reply::Mint(relay.mint(count, expires_at)?))
                }
                AdminOp::Revoke { registration } => {
                    durable(Reply::Revoke(relay.revoke(&registration)?))
                }
            },
            Request::Register(r) => {
                relay.register(&Registration::parse(&r)?)?;
                Metrics::bump(&relay.metrics.registrations, 1);
                durable(Reply::Register(wire::RegisterOk {}))
            }
            Request::IssueTokens(r) => {
                let issuance =
                    Issuance::parse(&r, &self.challenge, relay.tokens.config.max_issue_batch)?;
                let issued = relay.issue(&issuance)?;
                Metrics::bump(
                    &relay.metrics.tokens_issued,
                    issued.evaluated_elements.len() as u64,
                );
                durable(Reply::Issue(issued))
            }
            Request::TokenKey(_) => Step::Reply(ok(id, Reply::TokenKey(relay.token_key()?))),
            Request::RevokeDevice(r) => durable(Reply::Revoke(
                relay.revoke_device(&DeviceRevocation::parse(&r)?)?,
            )),
            Request::Account(r) => {
                let request = AccountRequest::parse(&r, &self.challenge)?;
                match request.op {
                    AccountOp::MintDevice { expires_at } => {
                        durable(Reply::Mint(relay.mint_device(&request, expires_at)?))
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

pub(crate) fn acked(id: u64, deleted: u32) -> wire::Response {
    ok(id, Reply::Ack(wire::AckOk { deleted }))
}

pub(crate) fn unsubscribed(id: u64) -> wire::Response {
    ok(id, Reply::Unsubscribe(wire::UnsubscribeOk {}))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Limits;
    use crate::storage::MemoryStorage;

    fn relay(burst: u32, max_violations: u32) -> Relay<MemoryStorage> {
        let limits = Limits {
            requests_per_sec: 1,
            request_burst: burst,
            max_rate_violations: max_violations,
            ..Limits::default()
        };
        Relay::new(
            Arc::new(MemoryStorage::new()),
            limits,
            Arc::new(ManualClock::at_secs(1_000)),
        )
        .with_tokens(crate::tokens::Tokens::ephemeral(
            crate::config::TokenConfig {
                require_tokens: false,
                ..crate::config::TokenConfig::default()
            },
        ))
    }

    fn frame(id: u64, request: Request) -> Bytes {
        wire::ClientFrame {
            id,
            request: Some(request),
        }
        .encode_to_vec()
        .into()
    }

    fn code(step: &Step) -> (bool, Option<ErrorCode>) {
        match step {
            Step::Reply(r) | Step::Close(r) => (
                matches!(step, Step::Close(_)),
                match &r.result {
                    Some(Reply::Error(e)) => ErrorCode::try_from(e.code).ok(),
                    _ => None,
                },
            ),
            _ => (false, None),
        }
    }

    /// Regression: frames that did not decode (or named no request) used to
    /// skip the token bucket, so a client could flood the relay with
    /// garbage forever without being throttled or closed.
    #[test]
    fn garbage_frames_cost_tokens_and_end_in_a_close() {
        let relay = relay(2, 2);
        let mut session = Session::new(&relay, Challenge::from_bytes([1; 32]));
        let hello = frame(
            1,
            Request::Hello(wire::Hello {
                version: sotto_proto::PROTOCOL_VERSION,
                access_token: Bytes::new(),
            }),
        );
        // The one Hello is free: the whole burst is left afterwards.
        assert_eq!(code(&session.handle(&relay, hello)), (false, None));
        let garbage = Bytes::from_static(&[0xff; 7]);
        let unknown = wire::ClientFrame {
            id: 9,
            request: None,
        }
        .encode_to_vec();
        assert_eq!(
            code(&session.handle(&relay, garbage.clone())),
            (false, Some(ErrorCode::Malformed))
        );
        assert_eq!(
            code(&session.handle(&relay, unknown.into())),
            (false, Some(ErrorCode::UnknownRequest))
        );
        assert_eq!(
            code(&session.handle(&relay, garbage.clone())),
            (false, Some(ErrorCode::RateLimited))
        );
        assert_eq!(
            code(&session.handle(&relay, garbage)),
            (true, Some(ErrorCode::RateLimited)),
            "closed after max_rate_violations"
        );
    }

    #[test]
    fn a_second_hello_is_charged_like_any_request() {
        let relay = relay(1, 5);
        let mut session = Session::new(&relay, Challenge::from_bytes([1; 32]));
        let hello = || {
            frame(
                1,
                Request::Hello(wire::Hello {
                    version: sotto_proto::PROTOCOL_VERSION,
                    access_token: Bytes::new(),
                }),
            )
        };
        assert_eq!(code(&session.handle(&relay, hello())), (false, None));
        assert_eq!(
            code(&session.handle(&relay, hello())),
            (false, Some(ErrorCode::HelloRequired))
        );
        assert_eq!(
            code(&session.handle(&relay, hello())),
            (false, Some(ErrorCode::RateLimited))
        );
    }
}
