//! Live delivery: a receive connection subscribed to one epoch's inboxes.
//!
//! The receiving policy lives here once, for every driver that stays
//! connected (`Client::listen`, and the command line's profile owner):
//! which cursor each inbox subscribes from, that a blob is stored and
//! flushed before it is acked, that acks are never awaited in line (one in
//! flight per inbox, later seqs batched into the next), that group
//! mailboxes are never acked, that delivered receipts and key answers go
//! out at once, and when to subscribe again (the epoch turned, a group
//! changed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::{ACK_DRAIN, Client, ClientError, SyncReport};
use crate::engine::Message;
use crate::{BlindedInbox, Epoch, NetError, Pushed, RelayConnection};

/// An ack in flight: the inbox's index and the relay's answer.
type AckFuture = BoxFuture<'static, (usize, Result<u32, NetError>)>;

/// A receive connection subscribed to this epoch's inboxes, with the acks
/// it owes. Made by [`Client::subscribe`]; pushes come from
/// [`Subscription::next`] and go to [`Client::take_push`]; end it with
/// [`Subscription::close`].
pub struct Subscription {
    conn: Arc<RelayConnection>,
    pushes: mpsc::Receiver<Pushed>,
    inboxes: Arc<Vec<BlindedInbox>>,
    epoch: Epoch,
    acks: FuturesUnordered<AckFuture>,
    /// Seqs processed per inbox and not yet in an ack.
    owed: Vec<Vec<u64>>,
    /// Whether an ack of the inbox is in flight.
    acking: Vec<bool>,
    tick: tokio::time::Interval,
}

/// What one pushed blob turned out to be.
#[derive(Debug)]
pub struct PushTaken {
    /// Messages, receipts and the rest, counted as a sync counts them.
    pub report: SyncReport,
    /// A group was joined or moved to a new generation: its mailbox is not
    /// among this subscription's, so subscribe again.
    pub resubscribe: bool,
}

impl Client {
    /// Opens a fresh receive connection (DESIGN §2.2) and subscribes to
    /// every inbox of the current epoch: device inboxes from their start
    /// (acked blobs are gone), group mailboxes after this device's cursor.
    pub async fn subscribe(&self) -> Result<Subscription, ClientError> {
        let now_secs = self.now_ms() / 1000;
        let epoch = Epoch::from_unix_secs(now_secs, crate::EPOCH_SECS);
        let inboxes = self.engine.inboxes(now_secs, 1)?;
        let conn = self.connect().await?;
        let pushes = conn
            .take_pushes()
            .ok_or_else(|| NetError::Protocol("push channel already taken".into()))?;
        for inbox in &inboxes {
            let after = if self.engine.is_group_mailbox(&inbox.mailbox_id()) {
                self.engine.group_cursor(&inbox.mailbox_id())?
            } else {
                0
            };
            conn.subscribe(inbox, after).await?;
        }
        // The clock is looked at on every push and every second, so an
        // injected clock crossing the boundary is noticed promptly.
        let tick = tokio::time::interval(Duration::from_secs(1));
        Ok(Subscription {
            conn: Arc::new(conn),
            pushes,
            owed: vec![Vec::new(); inboxes.len()],
            acking: vec![false; inboxes.len()],
            inboxes: Arc::new(inboxes),
            epoch,
            acks: FuturesUnordered::new(),
            tick,
        })
    }

    /// Stores one pushed blob, flushes, owes its ack (device inboxes) or
    /// moves the group cursor past it, and sends what it calls for at once:
    /// a delivered receipt for a new 1:1 message (when receipts are on),
    /// key requests and answers.
    pub async fn take_push(
        &mut self,
        subscription: &mut Subscription,
        push: Pushed,
    ) -> Result<PushTaken, ClientError> {
        let mut report = SyncReport::default();
        let Some(index) = subscription
            .inboxes
            .iter()
            .position(|inbox| inbox.mailbox_id() == push.mailbox)
        else {
            // Not a mailbox this subscription asked for: nothing to take.
            return Ok(PushTaken {
                report,
                resubscribe: false,
            });
        };
        let epoch = subscription.inboxes[index].epoch();
        let received = self.engine.receive_in(&push.mailbox, &push.blob, epoch)?;
        let group = self.engine.is_group_mailbox(&push.mailbox);
        if group {
            self.engine.set_group_cursor(&push.mailbox, push.seq)?;
        }
        // Stored before acked: a crash in between fetches it again.
        self.engine.flush()?;
        if !group {
            subscription.owe(index, push.seq);
        }
        let mut delivered = BTreeMap::new();
        report.count(received, Some(&mut delivered));
        let resubscribe = self.engine.take_groups_changed();
        if self.receipts {
            for (peer, ids) in delivered {
                self.engine
                    .queue_receipt(&peer, &ids, false, self.now_ms())?;
            }
        }
        // Receipts, key requests and answers go out at once.
        report.sent = self.deliver().await?;
        Ok(PushTaken {
            report,
            resubscribe,
        })
    }

    /// Whether the epoch `subscription` is for has passed: time to drain
    /// it and subscribe again on a fresh connection.
    pub fn epoch_turned(&self, subscription: &Subscription) -> bool {
        Epoch::from_unix_secs(self.now_ms() / 1000, crate::EPOCH_SECS) != subscription.epoch
    }

    /// Stays connected and hands each new message to `on_message` as it
    /// arrives, until `stop` resolves.
    ///
    /// Per epoch: first a sync on a short connection of its own (draining
    /// the previous epoch's inboxes and the outbox), then a fresh receive
    /// connection subscribed to the current epoch's inboxes (DESIGN §2.2).
    /// At the epoch rollover that connection is dropped and the cycle
    /// repeats; the relay pushes, nothing polls. Network errors end the
    /// call; callers reconnect with backoff.
    pub async fn listen(
        &mut self,
        mut on_message: impl FnMut(&Message),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ClientError> {
        tokio::pin!(stop);
        loop {
            self.rollovers += 1;
            let report = self.sync().await?;
            report.messages.iter().for_each(&mut on_message);
            let mut subscription = self.subscribe().await?;
            let stopped = loop {
                tokio::select! {
                    _ = &mut stop => break Ok(true),
                    push = subscription.next() => match push {
                        Err(error) => break Err(error),
                        Ok(None) => {}
                        Ok(Some(push)) => match self.take_push(&mut subscription, push).await {
                            Err(error) => break Err(error),
                            Ok(taken) => {
                                taken.report.messages.iter().for_each(&mut on_message);
                                if taken.resubscribe {
                                    break Ok(false);
                                }
                            }
                        },
                    },
                }
                if self.epoch_turned(&subscription) {
                    break Ok(false);
                }
            };
            let settled = subscription.close().await;
            if stopped? {
                settled?;
                return Ok(());
            }
            settled?;
        }
    }
}

impl Subscription {
    /// The next pushed blob, or `None` once a second (look at the clock).
    /// Ack replies are taken meanwhile. Cancel-safe: nothing is lost if the
    /// future is dropped (use it in `select!`).
    pub async fn next(&mut self) -> Result<Option<Pushed>, ClientError> {
        loop {
            tokio::select! {
                _ = self.tick.tick() => return Ok(None),
                Some((index, acked)) = self.acks.next(), if !self.acks.is_empty() => {
                    acked?;
                    // (`select!` patterns cannot name the type.)
                    let index: usize = index;
                    self.acking[index] = false;
                    self.ack_owed(index);
                }
                push = self.pushes.recv() => {
                    return match push {
                        Some(push) => Ok(Some(push)),
                        None => Err(NetError::ConnectionLost(
                            self.conn.close_reason().unwrap_or_default(),
                        )
                        .into()),
                    };
                }
            }
        }
    }

    /// The epoch whose inboxes this subscription holds.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Notes `seq` of inbox `index` as stored: acked at once if no ack of
    /// that inbox is in flight, else in the next one.
    fn owe(&mut self, index: usize, seq: u64) {
        if let Some(owed) = self.owed.get_mut(index) {
            owed.push(seq);
            self.ack_owed(index);
        }
    }

    /// Sends the acks `index` owes, unless one is in flight.
    fn ack_owed(&mut self, index: usize) {
        if self.acking[index] || self.owed[index].is_empty() {
            return;
        }
        self.acking[index] = true;
        let seqs = std::mem::take(&mut self.owed[index]);
        let (conn, inboxes) = (Arc::clone(&self.conn), Arc::clone(&self.inboxes));
        self.acks.push(Box::pin(async move {
            (index, conn.ack(&inboxes[index], seqs).await)
        }));
    }

    /// Finishes the acks still owed (for at most a few seconds: a relay
    /// that does not answer must not hold up a stop; blobs whose ack did
    /// not finish come again at the next sync) and closes the connection.
    pub async fn close(mut self) -> Result<(), ClientError> {
        // Without a push receiver the transport keeps reading replies.
        drop(self.pushes);
        let acks = &mut self.acks;
        let (owed, acking) = (&mut self.owed, &mut self.acking);
        let (conn, inboxes) = (&self.conn, &self.inboxes);
        let settle = async {
            while let Some((index, acked)) = acks.next().await {
                acked?;
                acking[index] = false;
                if !owed[index].is_empty() {
                    let seqs = std::mem::take(&mut owed[index]);
                    let (conn, inboxes) = (Arc::clone(conn), Arc::clone(inboxes));
                    acks.push(Box::pin(async move {
                        (index, conn.ack(&inboxes[index], seqs).await)
                    }));
                }
            }
            Ok::<(), NetError>(())
        };
        let settled = tokio::time::timeout(ACK_DRAIN, settle).await;
        drop(self.acks);
        if let Ok(conn) = Arc::try_unwrap(self.conn) {
            conn.close().await;
        }
        match settled {
            Ok(result) => Ok(result?),
            Err(_) => Ok(()),
        }
    }
}
