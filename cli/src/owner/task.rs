//! The owner's task: the only holder of the [`App`]. It stays subscribed
//! to the relay (as `sotto listen` always did: sync, subscribe to this
//! epoch's inboxes, take pushes, ack, reconnect with backoff) and, between
//! pushes, runs the requests that arrive on its channel. A request does
//! not close the relay connection: pushes wait in the transport's queue
//! meanwhile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sotto_core::{App, AppError, Message, Status};
use tokio::sync::{broadcast, mpsc, watch};

use super::{Notification, Request, methods};
use crate::output::message_json;

/// Outgoing 1:1 messages whose delivery status is followed, at most.
const TRACKED: usize = 4096;

/// How long a sent message's status is followed.
const TRACK_FOR: Duration = Duration::from_secs(3600);

/// The owner's state besides the App.
struct Owner {
    app: App,
    requests: mpsc::Receiver<Request>,
    notify: broadcast::Sender<Notification>,
    stop: watch::Receiver<bool>,
    /// hex ID -> (recipient, last status told, since when).
    tracked: BTreeMap<String, (String, Status, Instant)>,
    online: Option<bool>,
    /// Interactive verifications that socket clients are running.
    sas: methods::SasSessions,
}

/// How one connected stretch ended.
enum Ended {
    /// Shut down.
    Stop,
    /// The epoch turned, the groups or the team changed: sync and
    /// subscribe again.
    Again,
}

/// Runs until `stop`; returns an error only for a failure that is not the
/// network's (the owner cannot go on).
pub(super) async fn run(
    app: App,
    requests: mpsc::Receiver<Request>,
    notify: broadcast::Sender<Notification>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut owner = Owner {
        app,
        requests,
        notify,
        stop,
        tracked: BTreeMap::new(),
        online: None,
        sas: methods::SasSessions::new(),
    };
    let mut backoff = 1u64;
    loop {
        if *owner.stop.borrow() {
            return Ok(());
        }
        match owner.connected().await {
            Ok(Ended::Stop) => return Ok(()),
            Ok(Ended::Again) => backoff = 1,
            Err(error) if error.is_network() => {
                owner.set_online(false, Some(format!("{error}")));
                // Requests still run meanwhile (a send is queued).
                let wait = tokio::time::sleep(Duration::from_secs(backoff));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut wait => break,
                        _ = owner.stop.changed() => return Ok(()),
                        request = owner.requests.recv() => match request {
                            Some(request) => {
                                // Offline: marked now, the receipts wait
                                // in the outbox for the connection.
                                for peer in owner.handle(request).await {
                                    if let Err(error) = owner.app.mark_read(&peer) {
                                        tracing::warn!("could not mark a conversation read: {error}");
                                    }
                                }
                            }
                            None => return Ok(()),
                        },
                    }
                }
                backoff = (backoff * 2).min(30);
            }
            Err(error) => {
                owner.set_online(false, Some(format!("{error}")));
                return Err(error.into());
            }
        }
    }
}

impl Owner {
    fn publish(&self, method: &str, params: Value) {
        // No subscriber is not an error.
        let _ = self.notify.send(Notification {
            method: method.to_owned(),
            params,
        });
    }

    fn set_online(&mut self, online: bool, error: Option<String>) {
        if self.online == Some(online) && error.is_none() {
            return;
        }
        self.online = Some(online);
        let mut params = json!({"online": online});
        if let Some(error) = error {
            params["error"] = json!(error);
        }
        self.publish("connection", params);
    }

    fn publish_messages(&mut self, messages: &[Message]) {
        for message in messages {
            self.publish("message", message_json(message));
        }
    }

    /// Messages a reaction, edit or delete changed, as they are now.
    fn publish_updates(&mut self, messages: &[Message]) {
        for message in messages {
            self.publish("message.updated", message_json(message));
        }
    }

    /// Follows the status of a message I sent (its status now: sent or
    /// queued).
    fn track(&mut self, id: String, peer: String, status: Status) {
        let now = Instant::now();
        self.tracked
            .retain(|_, (_, _, since)| now.duration_since(*since) < TRACK_FOR);
        if self.tracked.len() >= TRACKED
            && let Some(oldest) = self
                .tracked
                .iter()
                .min_by_key(|(_, (_, _, since))| *since)
                .map(|(id, _)| id.clone())
        {
            self.tracked.remove(&oldest);
        }
        self.tracked.insert(id, (peer, status, now));
    }

    /// Tells subscribers which followed messages changed status (sent,
    /// delivered, read) since last told: a point read per followed
    /// message, run when a receipt or a sync came in.
    fn check_statuses(&mut self) {
        let mut changed = Vec::new();
        for (id, (peer, told, _)) in &mut self.tracked {
            let Some(key) = hex::decode(id)
                .ok()
                .and_then(|bytes| sotto_core::MessageId::try_from(bytes.as_slice()).ok())
            else {
                continue;
            };
            if let Ok(Some(status)) = self.app.message_status(&key)
                && status != *told
            {
                *told = status;
                changed.push((id.clone(), peer.clone(), status));
            }
        }
        for (id, peer, status) in changed {
            if status == Status::Read {
                self.tracked.remove(&id);
            }
            self.publish("status", json!({"id": id, "to": peer, "status": status}));
        }
    }

    /// Runs one request; returns the members whose messages it showed, to
    /// be marked read.
    async fn handle(&mut self, request: Request) -> Vec<String> {
        let mut effects = methods::Effects::default();
        let result = methods::call(
            &mut self.app,
            &mut self.sas,
            &request.method,
            request.params,
            &mut effects,
            &self.notify,
        )
        .await;
        // The caller may have gone; the work is done all the same.
        let _ = request.reply.send(result);
        self.publish_messages(&effects.received);
        for (id, peer, status) in effects.sent {
            self.track(id, peer, status);
        }
        if effects.synced {
            self.check_statuses();
        }
        effects.read
    }

    /// Syncs (re-reading the roster, the directory key and every member's
    /// device list: `App::sync`), subscribes, and serves until the epoch
    /// turns, the groups or the team change, the connection fails or
    /// `stop`. The receiving policy (acks, receipts, when to subscribe
    /// again) is the client's own ([`sotto_core::Subscription`]); the
    /// owner only runs requests between pushes and tells subscribers.
    async fn connected(&mut self) -> Result<Ended, AppError> {
        let stop = self.stop.clone();
        let stopped = async move {
            let mut stop = stop;
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        let report = tokio::select! {
            report = self.app.sync() => report?,
            () = &mut stopped => return Ok(Ended::Stop),
        };
        self.publish_messages(&report.messages);
        self.publish_updates(&report.updated);
        self.check_statuses();
        let mut subscription = tokio::select! {
            subscription = self.app.client().subscribe() => subscription?,
            () = &mut stopped => return Ok(Ended::Stop),
        };
        self.set_online(true, None);
        let ended = loop {
            tokio::select! {
                () = &mut stopped => break Ok(Ended::Stop),
                request = self.requests.recv() => {
                    let Some(request) = request else { break Ok(Ended::Stop) };
                    let read = self.handle(request).await;
                    let mut marked = Ok(());
                    for peer in read {
                        marked = marked.and_then(|()| {
                            self.app.client().mark_read_later(&mut subscription, &peer)
                        });
                    }
                    if let Err(error) = marked {
                        break Err(AppError::from(error));
                    }
                    if self.app.client().engine_mut().take_groups_changed() {
                        break Ok(Ended::Again);
                    }
                }
                push = subscription.next() => match push {
                    Err(error) => break Err(AppError::from(error)),
                    Ok(None) => {
                        if let Err(error) = self.app.client().answer_due(&mut subscription).await {
                            break Err(AppError::from(error));
                        }
                    }
                    Ok(Some(push)) => {
                        match self.app.client().take_push(&mut subscription, push).await {
                            Err(error) => break Err(AppError::from(error)),
                            Ok(taken) => {
                                self.publish_messages(&taken.report.messages);
                                self.publish_updates(&taken.report.updated);
                                if taken.report.receipts > 0 {
                                    self.check_statuses();
                                }
                                // A team message (a new directory key, a
                                // key succession): the next stretch's sync
                                // re-reads the roster and device lists.
                                if taken.resubscribe || taken.team {
                                    break Ok(Ended::Again);
                                }
                            }
                        }
                    }
                },
            }
            if self.app.client().epoch_turned(&subscription) {
                break Ok(Ended::Again);
            }
        };
        let settled = self.app.client().end_subscription(subscription).await;
        let ended = ended?;
        settled?;
        Ok(ended)
    }
}
