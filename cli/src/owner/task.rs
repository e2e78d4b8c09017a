//! The owner's task: the only holder of the [`App`]. It stays subscribed
//! to the relay (as `sotto listen` always did: sync, subscribe to this
//! epoch's inboxes, take pushes, ack, reconnect with backoff) and, between
//! pushes, runs the requests that arrive on its channel. A request does
//! not close the relay connection: pushes wait in the transport's queue
//! meanwhile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Value, json};
use sotto_core::{App, AppError, EPOCH_SECS, Epoch, Message, NetError, Received, Status};
use tokio::sync::{broadcast, mpsc, watch};

use super::{Notification, Request, methods};
use crate::output::message_json;

/// Outgoing 1:1 messages whose delivery status is followed, at most.
const TRACKED: usize = 4096;

/// How long a sent message's status is followed.
const TRACK_FOR: Duration = Duration::from_secs(3600);

/// How long acks still owed may take when the connection closes.
const ACK_DRAIN: Duration = Duration::from_secs(2);

/// The owner's state besides the App.
struct Owner {
    app: App,
    requests: mpsc::Receiver<Request>,
    notify: broadcast::Sender<Notification>,
    stop: watch::Receiver<bool>,
    /// hex ID -> (recipient, last status told, since when).
    tracked: BTreeMap<String, (String, Status, Instant)>,
    online: Option<bool>,
}

/// How one connected stretch ended.
enum Ended {
    /// Shut down.
    Stop,
    /// The epoch turned or the groups changed: subscribe again.
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
                            Some(request) => owner.handle(request).await,
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

    async fn handle(&mut self, request: Request) {
        let mut effects = methods::Effects::default();
        let result =
            methods::call(&mut self.app, &request.method, request.params, &mut effects).await;
        // The caller may have gone; the work is done all the same.
        let _ = request.reply.send(result);
        self.publish_messages(&effects.received);
        for (id, peer, status) in effects.sent {
            self.track(id, peer, status);
        }
        if effects.synced {
            self.check_statuses();
        }
    }

    /// Syncs, subscribes, and serves until the epoch turns, the groups
    /// change, the connection fails or `stop`.
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
        self.check_statuses();
        let now = now_ms();
        let epoch = Epoch::from_unix_secs(now / 1000, EPOCH_SECS);
        let inboxes = self.app.client().engine().inboxes(now / 1000, 1)?;
        let conn = tokio::select! {
            conn = self.app.client().connect() => conn?,
            () = &mut stopped => return Ok(Ended::Stop),
        };
        let mut pushes = conn
            .take_pushes()
            .ok_or_else(|| NetError::Protocol("push channel already taken".into()))?;
        for inbox in &inboxes {
            let engine = self.app.client().engine();
            let after = if engine.is_group_mailbox(&inbox.mailbox_id()) {
                engine.group_cursor(&inbox.mailbox_id())?
            } else {
                0
            };
            conn.subscribe(inbox, after).await?;
        }
        self.set_online(true, None);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // As in `Client::listen`: one ack per inbox in flight, the seqs
        // processed meanwhile go in the next.
        let mut acks = FuturesUnordered::new();
        let mut owed: Vec<Vec<u64>> = vec![Vec::new(); inboxes.len()];
        let mut acking = vec![false; inboxes.len()];
        let ack = |index: usize, seqs: Vec<u64>| {
            let (conn, inbox) = (&conn, &inboxes[index]);
            async move { (index, conn.ack(inbox, seqs).await) }
        };
        let ended = loop {
            tokio::select! {
                () = &mut stopped => break Ok(Ended::Stop),
                _ = tick.tick() => {}
                request = self.requests.recv() => {
                    let Some(request) = request else { break Ok(Ended::Stop) };
                    self.handle(request).await;
                    if self.app.client().engine_mut().take_groups_changed() {
                        break Ok(Ended::Again);
                    }
                }
                Some((index, acked)) = acks.next(), if !acks.is_empty() => {
                    if let Err(error) = acked {
                        break Err(AppError::from(error));
                    }
                    let index: usize = index;
                    acking[index] = !owed[index].is_empty();
                    if acking[index] {
                        acks.push(ack(index, std::mem::take(&mut owed[index])));
                    }
                }
                push = pushes.recv() => {
                    let Some(push) = push else {
                        break Err(NetError::ConnectionLost(conn.close_reason().unwrap_or_default()).into());
                    };
                    let Some(index) = inboxes.iter().position(|i| i.mailbox_id() == push.mailbox) else {
                        continue;
                    };
                    match self.take_push(&push, &inboxes[index]).await {
                        Ok((group, resubscribe)) => {
                            if !group {
                                owed[index].push(push.seq);
                                if !acking[index] {
                                    acking[index] = true;
                                    acks.push(ack(index, std::mem::take(&mut owed[index])));
                                }
                            }
                            if resubscribe {
                                break Ok(Ended::Again);
                            }
                        }
                        Err(error) => break Err(error),
                    }
                }
            }
            if Epoch::from_unix_secs(now_ms() / 1000, EPOCH_SECS) != epoch {
                break Ok(Ended::Again);
            }
        };
        drop(pushes);
        let settle = async {
            while let Some((index, acked)) = acks.next().await {
                acked?;
                if !owed[index].is_empty() {
                    acks.push(ack(index, std::mem::take(&mut owed[index])));
                }
            }
            Ok::<(), NetError>(())
        };
        // A relay that does not answer must not hold up a stop.
        let settled = tokio::time::timeout(ACK_DRAIN, settle).await;
        drop(acks);
        conn.close().await;
        let ended = ended?;
        if let Ok(result) = settled {
            result?;
        }
        Ok(ended)
    }

    /// Takes one pushed blob: stores it, answers with a delivered receipt,
    /// tells subscribers. Returns (whether it was a group's, whether the
    /// groups changed).
    async fn take_push(
        &mut self,
        push: &sotto_core::Pushed,
        inbox: &sotto_core::BlindedInbox,
    ) -> Result<(bool, bool), AppError> {
        let engine = self.app.client().engine_mut();
        let received = engine.receive_in(&push.mailbox, &push.blob, inbox.epoch())?;
        let group = engine.is_group_mailbox(&push.mailbox);
        if group {
            engine.set_group_cursor(&push.mailbox, push.seq)?;
        }
        engine.flush()?;
        let mut messages = Vec::new();
        let mut receipt = false;
        match received {
            Received::Message(message) => {
                if message.group.is_none()
                    && !message.from_me
                    && let Ok(id) = hex::decode(&message.id)
                    && let Ok(id) = sotto_core::MessageId::try_from(id.as_slice())
                {
                    engine.queue_receipt(&message.peer, &[id], false, now_ms())?;
                }
                messages.push(message);
            }
            Received::Unlocked(unlocked) => messages = unlocked,
            Received::Receipt => receipt = true,
            _ => {}
        }
        let resubscribe = engine.take_groups_changed();
        // Receipts, key requests and answers go out at once.
        self.app.client().deliver().await?;
        self.publish_messages(&messages);
        if receipt {
            self.check_statuses();
        }
        Ok((group, resubscribe))
    }
}
