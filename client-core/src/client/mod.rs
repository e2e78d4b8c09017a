//! The async driver: moves blobs between an [`Engine`] and a relay.
//!
//! Sending and receiving use separate connections, each opened fresh
//! (DESIGN §2.1), so no connection carries both this device's inboxes and
//! the mailboxes it writes to. Received messages are committed and flushed
//! locally before their blobs are acked at the relay, so a crash between
//! fetch and store loses nothing: the blob is fetched again and, if it was
//! already stored, recognised as a duplicate.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;

mod subscription;

pub use subscription::{ANSWER_DELAY_MAX, ANSWER_DELAY_MIN, Cycle, PushTaken, Subscription};

use crate::engine::{Engine, EngineError, Message, MessageId, Received};
use crate::{BlindedInbox, NetError, RelayAddr, RelayConnection};

/// How far back a catch-up reads: the relay's default blob TTL (14 days).
pub const MAX_CATCH_UP_EPOCHS: u64 = 14 * 24;

/// A client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Local state.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The relay.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Anonymous access tokens.
    #[error(transparent)]
    Token(#[from] crate::TokenError),
}

/// Refill the wallet when fewer tokens than this are left.
const LOW_WATER: usize = 20;
/// Tokens asked for per refill.
const REFILL: u32 = 100;
/// How long `listen` waits for the acks it still owes before it closes a
/// connection; blobs whose ack did not finish come again at the next sync.
const ACK_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// What a device needs to present anonymous access tokens (DESIGN §7).
pub struct Access {
    /// This device's issuance account.
    pub account: crate::IssuanceAccount,
    /// The relay's token issuer key, pinned by the team.
    pub issuer: ed25519_dalek::VerifyingKey,
    /// Unspent tokens, in the encrypted store.
    pub wallet: crate::TokenWallet,
}

impl Access {
    /// Refills the wallet on a connection that needs no token (issuance is
    /// unlinkable to redemption, so it may happen anywhere, any time).
    /// A key outside the current period (by `now_secs`) is refused
    /// ([`TokenWallet::check_period`](crate::TokenWallet::check_period)).
    pub async fn refill(&self, relay: &RelayAddr, now_secs: u64) -> Result<usize, ClientError> {
        let conn = RelayConnection::connect(relay, None).await?;
        let issued = crate::refill(&conn, &self.account, &self.issuer, REFILL).await;
        conn.close().await;
        let tokens = issued?;
        self.wallet.check_period(&tokens, now_secs)?;
        self.wallet.add(&tokens)?;
        Ok(tokens.len())
    }

    /// A connection presenting one unspent token, refilling first when low.
    pub async fn connect(
        &self,
        relay: &RelayAddr,
        now_secs: u64,
    ) -> Result<RelayConnection, ClientError> {
        if self.wallet.len(now_secs)? < LOW_WATER {
            self.refill(relay, now_secs).await?;
        }
        match self.wallet.connect(relay, now_secs).await {
            Err(crate::TokenError::WalletEmpty) => {
                // Every token was refused (the relay moved to a new key):
                // fetch fresh ones once.
                self.refill(relay, now_secs).await?;
                Ok(self.wallet.connect(relay, now_secs).await?)
            }
            other => Ok(other?),
        }
    }
}

/// The current time in unix milliseconds; injected so tests can cross
/// epochs without waiting.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// What one sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// New messages, in the order they were stored at the relay.
    pub messages: Vec<Message>,
    /// Messages changed by a reaction, an edit or a delete for everyone,
    /// as they are now.
    pub updated: Vec<Message>,
    /// Receipts and verification steps processed.
    pub receipts: usize,
    /// Redeliveries recognised and ignored.
    pub duplicates: usize,
    /// Blobs dropped (see [`crate::Dropped`]).
    pub dropped: usize,
    /// Outgoing blobs the relay accepted.
    pub sent: usize,
    /// New devices of mine that asked to be linked.
    pub link_requests: usize,
    /// Messages of my history received from the device that approved this
    /// one.
    pub history_messages: usize,
    /// The last history part received: (index, total).
    pub history_parts: Option<(u32, u32)>,
}

impl SyncReport {
    /// Adds what one blob turned out to be; new 1:1 messages are noted in
    /// `delivered` (by peer) for delivered receipts. Group messages get no
    /// receipts: that would be a put per member.
    fn count(
        &mut self,
        received: Received,
        delivered: Option<&mut BTreeMap<String, Vec<MessageId>>>,
    ) {
        match received {
            Received::Message(message) => {
                if message.group.is_none()
                    && !message.from_me
                    && let Some(delivered) = delivered
                    && let Ok(id) = hex::decode(&message.id)
                    && let Ok(id) = MessageId::try_from(id.as_slice())
                {
                    delivered.entry(message.peer.clone()).or_default().push(id);
                }
                self.messages.push(message);
            }
            Received::Unlocked(messages) => self.messages.extend(messages),
            Received::Updated(message) => self.updated.push(message),
            Received::Receipt | Received::Verification | Received::Group | Received::Team => {
                self.receipts += 1
            }
            Received::LinkRequest => self.link_requests += 1,
            Received::History {
                index,
                total,
                messages,
            } => {
                self.history_messages += messages;
                self.history_parts = Some((index, total));
            }
            Received::Duplicate => self.duplicates += 1,
            Received::Dropped(_) => self.dropped += 1,
        }
    }
}

/// A device's messaging client.
pub struct Client {
    engine: Engine,
    relay: RelayAddr,
    clock: Clock,
    receipts: bool,
    rollovers: u64,
    access: Option<Access>,
    history_progress: Option<Box<HistoryProgress>>,
}

/// See [`Client::set_history_progress`].
type HistoryProgress = dyn FnMut(u32, u32, usize) + Send + Sync;

impl Client {
    /// A client for `engine` talking to `relay`.
    pub fn new(engine: Engine, relay: RelayAddr, clock: Clock) -> Self {
        Self {
            engine,
            relay,
            clock,
            receipts: true,
            rollovers: 0,
            access: None,
            history_progress: None,
        }
    }

    /// Calls `progress(part, of, messages)` as each part of the history an
    /// approving device sent is taken (a new device's first sync).
    pub fn set_history_progress(
        &mut self,
        progress: impl FnMut(u32, u32, usize) + Send + Sync + 'static,
    ) {
        self.history_progress = Some(Box::new(progress));
    }

    /// Presents anonymous access tokens on every connection from now on.
    pub fn set_access(&mut self, access: Access) {
        self.access = Some(access);
    }

    /// Opens a connection to the relay: with an access token when the team
    /// uses them, fresh every time (DESIGN §2.3).
    pub async fn connect(&self) -> Result<RelayConnection, ClientError> {
        match &self.access {
            Some(access) => access.connect(&self.relay, self.now_ms() / 1000).await,
            None => Ok(RelayConnection::connect(&self.relay, None).await?),
        }
    }

    /// The relay this client talks to.
    pub fn relay(&self) -> &RelayAddr {
        &self.relay
    }

    /// Points the client at a relay that moved (same certificate or a new
    /// pinned one).
    pub fn set_relay(&mut self, relay: RelayAddr) {
        self.relay = relay;
    }

    /// Whether to send delivered receipts automatically (default on).
    pub fn set_receipts(&mut self, on: bool) {
        self.receipts = on;
    }

    /// The engine (contacts, history, cards).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine, mutably.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Unwraps the engine (e.g. to close the store).
    pub fn into_engine(self) -> Engine {
        self.engine
    }

    fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Queues a text (durable locally at once) and tries to deliver the
    /// outbox. A delivery failure leaves the message queued for the next
    /// attempt and is returned as the error.
    pub async fn send_text(&mut self, peer: &str, text: &str) -> Result<MessageId, ClientError> {
        let id = self.engine.queue_text(peer, text, self.now_ms())?;
        self.deliver().await?;
        Ok(id)
    }

    /// Delivers everything in the outbox on a fresh send connection;
    /// returns how many blobs the relay accepted.
    pub async fn deliver(&mut self) -> Result<usize, ClientError> {
        self.engine.refresh_token_key()?;
        if self.engine.outgoing(self.now_ms() / 1000)?.is_empty() {
            return Ok(0);
        }
        let conn = self.connect().await?;
        let result = self.deliver_on(&conn).await;
        conn.close().await;
        result
    }

    /// Delivers everything in the outbox on `conn`, a send connection the
    /// caller opened (and closes): a command that already read the
    /// directory on it spends no second token (DESIGN §2.1 only keeps
    /// sending apart from receiving).
    pub async fn deliver_on(&mut self, conn: &RelayConnection) -> Result<usize, ClientError> {
        self.engine.refresh_token_key()?;
        let outgoing = self.engine.outgoing(self.now_ms() / 1000)?;
        // In outbox order, one at a time: the relay keeps per-mailbox FIFO
        // and Olm tolerates only a bounded gap, so order matters.
        let mut sent = 0;
        let mut result = Ok(());
        for item in outgoing {
            match conn.put(&item.mailbox, &item.blob, item.ttl_secs).await {
                Ok(_) => {
                    self.engine.sent(&item.key)?;
                    sent += 1;
                }
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        self.engine.flush()?;
        result?;
        Ok(sent)
    }

    /// Fetches access tokens now (otherwise fetched when few are left), on
    /// a connection that presents none; the relay's key is checked as on
    /// every refill ([`Access::refill`]).
    pub async fn refill_tokens(&self) -> Result<usize, ClientError> {
        match &self.access {
            Some(access) => access.refill(&self.relay, self.now_ms() / 1000).await,
            None => Ok(0),
        }
    }

    /// Unspent access tokens in the wallet (`None` when the team uses
    /// none): what `sotto whoami` reports, and what tests count.
    pub fn tokens_left(&self) -> Result<Option<usize>, ClientError> {
        match &self.access {
            Some(access) => Ok(Some(access.wallet.len(self.now_ms() / 1000)?)),
            None => Ok(None),
        }
    }

    /// Fetches everything pending in every inbox (catching up on every
    /// epoch since the last sync), stores it, acks it, sends receipts and
    /// the outbox.
    ///
    /// Each epoch's inboxes are read on fresh connections of their own
    /// (DESIGN §2.2), oldest epoch first, so no connection links one
    /// epoch's mailboxes to another's; within an epoch the request inbox
    /// has a connection of its own ([`Client::read_plan`]).
    pub async fn sync(&mut self) -> Result<SyncReport, ClientError> {
        let mut report = SyncReport::default();
        let now_ms = self.now_ms();
        let (request, other) = self.engine.inbox_sets(now_ms / 1000, MAX_CATCH_UP_EPOCHS)?;
        let mut delivered: BTreeMap<String, Vec<MessageId>> = BTreeMap::new();
        self.engine.take_groups_changed();
        for connection in plan(&request, &other) {
            self.sync_epoch(&connection, &mut report, &mut delivered)
                .await?;
        }
        // A group joined or re-keyed during this sync has mailboxes not read
        // yet: read them now rather than at the next sync (bounded: each
        // round needs a new group state from an admin).
        let mut read: std::collections::HashSet<sotto_proto::MailboxId> = request
            .iter()
            .chain(&other)
            .map(BlindedInbox::mailbox_id)
            .collect();
        for _ in 0..3 {
            if !self.engine.take_groups_changed() {
                break;
            }
            let (_, other) = self.engine.inbox_sets(now_ms / 1000, MAX_CATCH_UP_EPOCHS)?;
            let fresh: Vec<BlindedInbox> = other
                .into_iter()
                .filter(|inbox| read.insert(inbox.mailbox_id()))
                .collect();
            for connection in plan(&[], &fresh) {
                self.sync_epoch(&connection, &mut report, &mut delivered)
                    .await?;
            }
        }
        self.engine.synced_until(now_ms / 1000)?;

        if self.receipts {
            for (peer, ids) in delivered {
                self.engine.queue_receipt(&peer, &ids, false, now_ms)?;
            }
        }
        report.sent = self.deliver().await?;
        self.engine.flush()?;
        Ok(report)
    }

    /// The mailboxes a sync now would read, one list per receive
    /// connection, in the order the connections are opened: per epoch
    /// (oldest first) the request inbox alone, then the pairwise inboxes
    /// and group mailboxes together. What [`Client::sync`] follows; tests
    /// check that no connection mixes the request inbox with another
    /// mailbox.
    pub fn read_plan(&self) -> Result<Vec<Vec<sotto_proto::MailboxId>>, ClientError> {
        let (request, other) = self
            .engine
            .inbox_sets(self.now_ms() / 1000, MAX_CATCH_UP_EPOCHS)?;
        Ok(plan(&request, &other)
            .into_iter()
            .map(|connection| connection.iter().map(|i| i.mailbox_id()).collect())
            .collect())
    }

    /// Reads one epoch's inboxes on one connection, processes their blobs
    /// in relay order, flushes locally, then acks.
    async fn sync_epoch(
        &mut self,
        inboxes: &[&BlindedInbox],
        report: &mut SyncReport,
        delivered: &mut BTreeMap<String, Vec<MessageId>>,
    ) -> Result<(), ClientError> {
        if inboxes.is_empty() {
            return Ok(());
        }
        let conn = self.connect().await?;
        // Group mailboxes are never acked (DESIGN §4): read past my cursor.
        let mut afters = Vec::with_capacity(inboxes.len());
        for inbox in inboxes {
            afters.push(if self.engine.is_group_mailbox(&inbox.mailbox_id()) {
                self.engine.group_cursor(&inbox.mailbox_id())?
            } else {
                0
            });
        }
        let pages = join_all(
            inboxes
                .iter()
                .zip(afters)
                .map(|(inbox, after)| fetch_all(&conn, inbox, after)),
        )
        .await;
        let mut blobs = Vec::new();
        for (index, page) in pages.into_iter().enumerate() {
            for (seq, blob) in page? {
                blobs.push((seq, index, blob));
            }
        }
        if blobs.is_empty() {
            conn.close().await;
            return Ok(());
        }
        // Seqs are per mailbox (ordered across mailboxes to the minute
        // only): Olm blobs, which carry group session keys, go first.
        blobs.sort_by_key(|(seq, index, _)| {
            (
                self.engine.is_group_mailbox(&inboxes[*index].mailbox_id()),
                *seq,
            )
        });
        let mut acks: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for (seq, index, blob) in blobs {
            let inbox = inboxes[index];
            let received = self
                .engine
                .receive_in(&inbox.mailbox_id(), &blob, inbox.epoch())?;
            if let (
                Received::History {
                    index,
                    total,
                    messages,
                },
                Some(progress),
            ) = (&received, &mut self.history_progress)
            {
                progress(*index, *total, *messages);
            }
            report.count(received, Some(delivered));
            if self.engine.is_group_mailbox(&inbox.mailbox_id()) {
                self.engine.set_group_cursor(&inbox.mailbox_id(), seq)?;
            } else {
                acks.entry(index).or_default().push(seq);
            }
        }
        // Durable locally first, then acked at the relay.
        self.engine.flush()?;
        let acked = join_all(acks.into_iter().map(|(index, seqs)| {
            let inbox = inboxes[index];
            let conn = &conn;
            async move { conn.ack(inbox, seqs).await }
        }))
        .await;
        conn.close().await;
        for result in acked {
            result?;
        }
        Ok(())
    }
}

impl Client {
    /// Marks every message from `peer` read. The read receipt (when read
    /// receipts are on, [`Engine::read_receipts`]) waits in the outbox and
    /// goes out with the next delivery (a sync, a send, or a subscription's
    /// answer), not at once: its timing would tell the relay when this
    /// member read whose message. A live client uses
    /// [`Client::mark_read_later`] instead.
    pub fn mark_read(&mut self, peer: &str) -> Result<usize, ClientError> {
        Ok(self.engine.mark_read(peer, self.now_ms())?)
    }

    /// How many epoch cycles `listen` has started; each drains on its own
    /// short connection and then subscribes on a fresh one.
    pub fn epochs_listened(&self) -> u64 {
        self.rollovers
    }
}

/// The receive connections a sync opens, in order: per epoch, oldest
/// first, `request`'s mailboxes of that epoch on one connection and
/// `other`'s on the next (none for an empty set).
fn plan<'a>(request: &'a [BlindedInbox], other: &'a [BlindedInbox]) -> Vec<Vec<&'a BlindedInbox>> {
    let mut by_epoch: BTreeMap<u64, (Vec<&BlindedInbox>, Vec<&BlindedInbox>)> = BTreeMap::new();
    for inbox in request {
        by_epoch
            .entry(inbox.epoch().get())
            .or_default()
            .0
            .push(inbox);
    }
    for inbox in other {
        by_epoch
            .entry(inbox.epoch().get())
            .or_default()
            .1
            .push(inbox);
    }
    by_epoch
        .into_values()
        .flat_map(|(request, other)| [request, other])
        .filter(|connection| !connection.is_empty())
        .collect()
}

async fn fetch_all(
    conn: &RelayConnection,
    inbox: &BlindedInbox,
    mut after: u64,
) -> Result<Vec<(u64, Vec<u8>)>, NetError> {
    let mut all = Vec::new();
    loop {
        let page = conn.fetch(inbox, after, 0).await?;
        for blob in page.blobs {
            after = blob.seq;
            all.push((blob.seq, blob.blob.to_vec()));
        }
        if !page.more {
            return Ok(all);
        }
    }
}
