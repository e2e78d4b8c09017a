//! Live delivery: receive connections subscribed to one epoch's inboxes
//! (the request inbox on a connection of its own, DESIGN §2.2).
//!
//! The receiving policy lives here once, for every driver that stays
//! connected (`Client::listen`, and the command line's profile owner):
//! which cursor each inbox subscribes from, that a blob is stored and
//! flushed before it is acked, that acks are never awaited in line (one in
//! flight per inbox, later seqs batched into the next), that group
//! mailboxes are never acked, and when to subscribe again (the epoch
//! turned, a group changed).
//!
//! **What a push answers waits a random while** (DESIGN §2.8): the acks,
//! delivered receipts, key requests and answers that pushed blobs call for
//! go out together, 1 to 5 s (uniformly random) after the first push that
//! called for them. Sent at once, their timing would pair a sender's put
//! with its recipient for a relay that watches connections; batched, a
//! burst of pushes costs one round of answers. Read receipts for what the
//! user was shown ([`Client::mark_read_later`]) go out with them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::{ACK_DRAIN, Client, ClientError, SyncReport};

/// The shortest wait before answering pushes.
pub const ANSWER_DELAY_MIN: Duration = Duration::from_secs(1);
/// The longest wait before answering pushes.
pub const ANSWER_DELAY_MAX: Duration = Duration::from_secs(5);
use crate::engine::Message;
use crate::{BlindedInbox, Epoch, NetError, Pushed, RelayConnection};

/// An ack in flight: the inbox's index and the relay's answer.
type AckFuture = BoxFuture<'static, (usize, Result<u32, NetError>)>;

/// Receive connections subscribed to this epoch's inboxes, with the acks
/// they owe: the request inbox on one, the pairwise inboxes and group
/// mailboxes on another, so no connection names the request inbox (which
/// `K_dir` ties to a member) next to a pairwise one. Made by
/// [`Client::subscribe`]; pushes come from [`Subscription::next`] and go to
/// [`Client::take_push`]; end it with [`Subscription::close`].
pub struct Subscription {
    /// One per set of inboxes (request inbox first).
    conns: Vec<Arc<RelayConnection>>,
    /// The push channel of each connection, in the same order.
    pushes: Vec<mpsc::Receiver<Pushed>>,
    inboxes: Arc<Vec<BlindedInbox>>,
    /// The connection (index into `conns`) each inbox is subscribed on.
    conn_of: Vec<usize>,
    epoch: Epoch,
    acks: FuturesUnordered<AckFuture>,
    /// Seqs processed per inbox and not yet in an ack.
    owed: Vec<Vec<u64>>,
    /// Whether an ack of the inbox is in flight.
    acking: Vec<bool>,
    /// When the acks and outgoing answers owed go out.
    answer_at: Option<tokio::time::Instant>,
    /// Pushes since the last answer may have queued outgoing blobs
    /// (receipts, key requests and answers).
    deliver_owed: bool,
    /// Conversations shown to the user since the last answer, with where
    /// their history ended when shown: marked read (one read receipt
    /// each) when the answer goes out.
    reads: BTreeMap<String, u64>,
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
    /// A team message came (a directory key, a member's key succession, my
    /// own member state): the team changed, so re-read the roster, the
    /// directory key and the device lists before going on (a revoked
    /// member's messages are refused from then on).
    pub team: bool,
}

impl Client {
    /// Opens fresh receive connections (DESIGN §2.2), one for the request
    /// inbox and one for the rest, and subscribes to every inbox of the
    /// current epoch: device inboxes from their start (acked blobs are
    /// gone), group mailboxes after this device's cursor.
    pub async fn subscribe(&self) -> Result<Subscription, ClientError> {
        let now_secs = self.now_ms() / 1000;
        let epoch = Epoch::from_unix_secs(now_secs, crate::EPOCH_SECS);
        let (request, other) = self.engine.inbox_sets(now_secs, 1)?;
        let mut conns: Vec<Arc<RelayConnection>> = Vec::with_capacity(2);
        let mut pushes = Vec::with_capacity(2);
        let mut conn_of = Vec::with_capacity(request.len() + other.len());
        let mut inboxes = Vec::with_capacity(request.len() + other.len());
        for set in [request, other] {
            if set.is_empty() {
                continue;
            }
            let conn = self.connect().await?;
            let subscribed = self.subscribe_on(&conn, &set).await.and_then(|()| {
                conn.take_pushes()
                    .ok_or_else(|| NetError::Protocol("push channel already taken".into()).into())
            });
            let taken = match subscribed {
                Ok(taken) => taken,
                Err(error) => {
                    conn.close().await;
                    for conn in conns.drain(..) {
                        if let Ok(conn) = Arc::try_unwrap(conn) {
                            conn.close().await;
                        }
                    }
                    return Err(error);
                }
            };
            conn_of.extend(std::iter::repeat_n(conns.len(), set.len()));
            inboxes.extend(set);
            conns.push(Arc::new(conn));
            pushes.push(taken);
        }
        // The clock is looked at on every push and every second, so an
        // injected clock crossing the boundary is noticed promptly.
        let tick = tokio::time::interval(Duration::from_secs(1));
        Ok(Subscription {
            conns,
            pushes,
            conn_of,
            owed: vec![Vec::new(); inboxes.len()],
            acking: vec![false; inboxes.len()],
            inboxes: Arc::new(inboxes),
            epoch,
            acks: FuturesUnordered::new(),
            answer_at: None,
            deliver_owed: false,
            reads: BTreeMap::new(),
            tick,
        })
    }

    /// Subscribes to each of `inboxes` on `conn`.
    async fn subscribe_on(
        &self,
        conn: &RelayConnection,
        inboxes: &[BlindedInbox],
    ) -> Result<(), ClientError> {
        for inbox in inboxes {
            let after = if self.engine.is_group_mailbox(&inbox.mailbox_id()) {
                self.engine.group_cursor(&inbox.mailbox_id())?
            } else {
                0
            };
            conn.subscribe(inbox, after).await?;
        }
        Ok(())
    }

    /// Stores one pushed blob, flushes, owes its ack (device inboxes) or
    /// moves the group cursor past it, and queues what it calls for: a
    /// delivered receipt for a new 1:1 message (when receipts are on), key
    /// requests and answers. What is owed goes out at a random moment a few
    /// seconds later ([`Client::answer_due`]), together with whatever other
    /// pushes called for meanwhile.
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
                team: false,
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
        let team = matches!(received, crate::engine::Received::Team);
        let mut delivered = BTreeMap::new();
        report.count(received, Some(&mut delivered));
        let resubscribe = self.engine.take_groups_changed();
        if self.receipts {
            for (peer, ids) in delivered {
                self.engine
                    .queue_receipt(&peer, &ids, false, self.now_ms())?;
            }
        }
        subscription.deliver_owed = true;
        subscription.schedule_answer();
        Ok(PushTaken {
            report,
            resubscribe,
            team,
        })
    }

    /// Sends what pushes called for (acks, then the outbox: receipts, key
    /// requests and answers) once its random moment has come; call it
    /// whenever [`Subscription::next`] returns `None`. Returns how many
    /// outgoing blobs the relay accepted.
    pub async fn answer_due(
        &mut self,
        subscription: &mut Subscription,
    ) -> Result<usize, ClientError> {
        match subscription.answer_at {
            Some(at) if at <= tokio::time::Instant::now() => self.answer_now(subscription).await,
            _ => Ok(0),
        }
    }

    /// Marks what `peer` sent read once `subscription` next answers
    /// (with the acks and receipts pushes called for, 1 to 5 s after the
    /// first of them): read receipts ride with the other answers instead
    /// of timing the moment a member looked. Everything from `peer` in the
    /// history now is marked, nothing that arrives later; several calls
    /// before the answer make one receipt per conversation.
    pub fn mark_read_later(
        &mut self,
        subscription: &mut Subscription,
        peer: &str,
    ) -> Result<(), ClientError> {
        let upto = self.engine.history_head(peer)?;
        let slot = subscription.reads.entry(peer.to_owned()).or_default();
        *slot = (*slot).max(upto);
        subscription.deliver_owed = true;
        subscription.schedule_answer();
        Ok(())
    }

    /// Sends what pushes called for now, whatever the moment (before a
    /// subscription closes).
    async fn answer_now(&mut self, subscription: &mut Subscription) -> Result<usize, ClientError> {
        subscription.answer_at = None;
        for index in 0..subscription.owed.len() {
            subscription.ack_owed(index);
        }
        let now_ms = self.now_ms();
        for (peer, upto) in std::mem::take(&mut subscription.reads) {
            self.engine.mark_read_upto(&peer, upto, now_ms)?;
        }
        if !std::mem::take(&mut subscription.deliver_owed) {
            return Ok(0);
        }
        self.deliver().await
    }

    /// Answers what is owed at once and ends `subscription`
    /// ([`Subscription::close`]).
    pub async fn end_subscription(
        &mut self,
        mut subscription: Subscription,
    ) -> Result<(), ClientError> {
        let answered = self.answer_now(&mut subscription).await;
        let closed = subscription.close().await;
        answered?;
        closed
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
    /// the previous epoch's inboxes and the outbox), then fresh receive
    /// connections subscribed to the current epoch's inboxes (DESIGN §2.2).
    /// At the epoch rollover they are dropped and the cycle repeats; the
    /// relay pushes, nothing polls. Network errors end the call; callers
    /// reconnect with backoff. (`App::listen` runs the same cycles and
    /// re-reads the team between them.)
    pub async fn listen(
        &mut self,
        mut on_message: impl FnMut(&Message),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ClientError> {
        tokio::pin!(stop);
        loop {
            if self.listen_cycle(&mut on_message, stop.as_mut()).await? == Cycle::Stopped {
                return Ok(());
            }
        }
    }

    /// One cycle of [`Client::listen`]: a sync, then a subscription to this
    /// epoch's inboxes served until the epoch turns, a group changes, a
    /// team message arrives, or `stop` resolves (then `stop` must not be
    /// polled again).
    pub async fn listen_cycle(
        &mut self,
        on_message: &mut impl FnMut(&Message),
        mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<Cycle, ClientError> {
        self.rollovers += 1;
        let report = self.sync().await?;
        report.messages.iter().for_each(&mut *on_message);
        let mut subscription = self.subscribe().await?;
        let ended = loop {
            tokio::select! {
                _ = &mut stop => break Ok(Cycle::Stopped),
                push = subscription.next() => match push {
                    Err(error) => break Err(error),
                    Ok(None) => {
                        if let Err(error) = self.answer_due(&mut subscription).await {
                            break Err(error);
                        }
                    }
                    Ok(Some(push)) => match self.take_push(&mut subscription, push).await {
                        Err(error) => break Err(error),
                        Ok(taken) => {
                            taken.report.messages.iter().for_each(&mut *on_message);
                            if taken.team {
                                break Ok(Cycle::TeamChanged);
                            }
                            if taken.resubscribe {
                                break Ok(Cycle::Again);
                            }
                        }
                    },
                },
            }
            if self.epoch_turned(&subscription) {
                break Ok(Cycle::Again);
            }
        };
        let settled = self.end_subscription(subscription).await;
        let ended = ended?;
        settled?;
        Ok(ended)
    }
}

/// How one cycle of [`Client::listen_cycle`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cycle {
    /// `stop` resolved.
    Stopped,
    /// The epoch turned or a group changed: subscribe again.
    Again,
    /// A team message came (a directory key, a member's key succession, my
    /// own member state): re-read the team, then subscribe again.
    TeamChanged,
}

impl Subscription {
    /// The next pushed blob, or `None` once a second and when answers are
    /// due (look at the clock, call [`Client::answer_due`]). Ack replies are
    /// taken meanwhile. Cancel-safe: nothing is lost if the future is
    /// dropped (use it in `select!`).
    pub async fn next(&mut self) -> Result<Option<Pushed>, ClientError> {
        loop {
            let answer_at = self.answer_at;
            tokio::select! {
                _ = self.tick.tick() => return Ok(None),
                () = sleep_until(answer_at), if answer_at.is_some() => return Ok(None),
                Some((index, acked)) = self.acks.next(), if !self.acks.is_empty() => {
                    acked?;
                    // (`select!` patterns cannot name the type.)
                    let index: usize = index;
                    self.acking[index] = false;
                    // Seqs taken while it was in flight wait for the next
                    // answer.
                    if !self.owed[index].is_empty() {
                        self.schedule_answer();
                    }
                }
                (conn, push) = next_push(&mut self.pushes) => {
                    return match push {
                        Some(push) => Ok(Some(push)),
                        None => Err(NetError::ConnectionLost(
                            self.conns
                                .get(conn)
                                .and_then(|conn| conn.close_reason())
                                .unwrap_or_default(),
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

    /// The mailboxes subscribed, one list per connection (the request
    /// inbox's first): tests check that no connection mixes the request
    /// inbox with another mailbox.
    pub fn connections(&self) -> Vec<Vec<sotto_proto::MailboxId>> {
        let mut connections = vec![Vec::new(); self.conns.len()];
        for (inbox, conn) in self.inboxes.iter().zip(&self.conn_of) {
            if let Some(connection) = connections.get_mut(*conn) {
                connection.push(inbox.mailbox_id());
            }
        }
        connections
    }

    /// Notes `seq` of inbox `index` as stored: acked with the next answer.
    fn owe(&mut self, index: usize, seq: u64) {
        if let Some(owed) = self.owed.get_mut(index) {
            owed.push(seq);
            self.schedule_answer();
        }
    }

    /// Sets the moment of the next answer, 1 to 5 s from now, unless one is
    /// set.
    fn schedule_answer(&mut self) {
        if self.answer_at.is_none() {
            self.answer_at = Some(tokio::time::Instant::now() + answer_delay());
        }
    }

    /// Sends the acks `index` owes, unless one is in flight.
    fn ack_owed(&mut self, index: usize) {
        if self.acking[index] || self.owed[index].is_empty() {
            return;
        }
        self.acking[index] = true;
        let seqs = std::mem::take(&mut self.owed[index]);
        let (conn, inboxes) = (
            Arc::clone(&self.conns[self.conn_of[index]]),
            Arc::clone(&self.inboxes),
        );
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
        let (conns, conn_of, inboxes) = (&self.conns, &self.conn_of, &self.inboxes);
        let settle = async {
            while let Some((index, acked)) = acks.next().await {
                acked?;
                acking[index] = false;
                if !owed[index].is_empty() {
                    let seqs = std::mem::take(&mut owed[index]);
                    let (conn, inboxes) = (Arc::clone(&conns[conn_of[index]]), Arc::clone(inboxes));
                    acks.push(Box::pin(async move {
                        (index, conn.ack(&inboxes[index], seqs).await)
                    }));
                }
            }
            Ok::<(), NetError>(())
        };
        let settled = tokio::time::timeout(ACK_DRAIN, settle).await;
        drop(self.acks);
        for conn in self.conns {
            if let Ok(conn) = Arc::try_unwrap(conn) {
                conn.close().await;
            }
        }
        match settled {
            Ok(result) => Ok(result?),
            Err(_) => Ok(()),
        }
    }
}

/// A uniformly random wait between [`ANSWER_DELAY_MIN`] and
/// [`ANSWER_DELAY_MAX`], to the millisecond.
fn answer_delay() -> Duration {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("invariant: the OS random number generator works");
    let span = (ANSWER_DELAY_MAX - ANSWER_DELAY_MIN).as_millis() as u32;
    ANSWER_DELAY_MIN + Duration::from_millis(u64::from(u32::from_le_bytes(bytes) % (span + 1)))
}

/// The next push on any of `pushes`, with the index of its connection
/// (`None`: that connection's channel closed). Cancel-safe, as each
/// channel's `recv` is.
async fn next_push(pushes: &mut [mpsc::Receiver<Pushed>]) -> (usize, Option<Pushed>) {
    if pushes.is_empty() {
        return std::future::pending().await;
    }
    let receiving = pushes.iter_mut().map(|pushes| Box::pin(pushes.recv()));
    let (push, index, _) = futures::future::select_all(receiving).await;
    (index, push)
}

/// Sleeps until `at`; never returns for `None` (its `select!` branch is
/// disabled then).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
