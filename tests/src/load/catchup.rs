//! `catchup`: a device was offline while K blobs queued in its mailbox; it
//! connects and drains them. Timed from the start of its connect until the
//! last ack is durable, so the figure is what a user waits for after
//! opening the laptop.
//!
//! `--via fetch` pages with `Fetch` and acks each page while fetching the
//! next; `--via subscribe` lets the relay push the backlog (what a client
//! that subscribes from its last cursor gets) and acks in batches.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use sotto_core::{BlindedInbox, RelayConnection};

use crate::report::per_sec;
use crate::stamp::{self, Stamp};
use crate::target::Target;
use crate::throughput::new_inbox;
use crate::tokens::Issuance;

/// How the offline device catches up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Via {
    /// Fetch pages and ack each one.
    Fetch,
    /// Subscribe from cursor 0 and take the pushed backlog.
    Subscribe,
}

/// Options of the `catchup` scenario.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Blobs queued while the receiver is offline.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) messages: usize,
    /// Blob size in bytes (a bucket size).
    #[arg(long, default_value_t = 1024)]
    pub(crate) size: usize,
    /// How the receiver catches up.
    #[arg(long, value_enum, default_value_t = Via::Fetch)]
    pub(crate) via: Via,
    /// Blobs per fetch page (0 = as many as the relay sends in one frame).
    #[arg(long, default_value_t = 0)]
    pub(crate) page: u32,
    /// Connections that fill the mailbox.
    #[arg(long, default_value_t = 4)]
    pub(crate) fill_senders: usize,
    /// Puts in flight per filling connection.
    #[arg(long, default_value_t = 64)]
    pub(crate) window: usize,
}

/// The result of a `catchup` run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) target: String,
    /// Access tokens presented (one per connection), if the run has them.
    pub(crate) tokens: Option<Issuance>,
    pub(crate) via: Via,
    pub(crate) messages: usize,
    pub(crate) size: usize,
    /// Seconds to queue them (durable puts).
    pub(crate) fill_secs: f64,
    pub(crate) fill_puts_per_sec: f64,
    /// Connect + hello alone.
    pub(crate) connect_ms: f64,
    /// Connect through the last durable ack.
    pub(crate) catchup_secs: f64,
    pub(crate) catchup_msgs_per_sec: f64,
    pub(crate) received: usize,
    /// Fetch requests (via fetch) or ack requests (via subscribe).
    pub(crate) requests: usize,
    pub(crate) acked: u64,
    /// Blobs still in the mailbox afterwards (should be 0).
    pub(crate) left_in_mailbox: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "catch-up against {} via {:?}: {} × {} B queued in {:.2} s ({:.0} puts/s)",
            self.target, self.via, self.messages, self.size, self.fill_secs, self.fill_puts_per_sec
        )?;
        writeln!(
            f,
            "  drained {} in {:.3} s ({:.0} msgs/s; connect {:.1} ms), {} requests, {} acked, {} left",
            self.received,
            self.catchup_secs,
            self.catchup_msgs_per_sec,
            self.connect_ms,
            self.requests,
            self.acked,
            self.left_in_mailbox
        )
    }
}

/// Runs the scenario.
pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.messages > 0, "--messages must be at least 1");
    let inbox = new_inbox();
    let fill_secs = fill(target, &inbox, args).await?;

    let started = Instant::now();
    let conn = target
        .connect()
        .await
        .context("the catching-up receiver cannot connect")?;
    let connect = started.elapsed();
    let (received, requests, acked) = match args.via {
        Via::Fetch => drain_by_fetch(&conn, &inbox, args.page).await?,
        Via::Subscribe => drain_by_subscription(&conn, &inbox, args.messages).await?,
    };
    let secs = started.elapsed().as_secs_f64();
    let left = conn
        .fetch(&inbox, 0, 0)
        .await
        .context("final fetch")?
        .blobs
        .len();
    conn.close().await;
    Ok(Report {
        scenario: "catchup",
        target: String::new(),
        tokens: None,
        via: args.via,
        messages: args.messages,
        size: args.size,
        fill_secs: (fill_secs * 1000.0).round() / 1000.0,
        fill_puts_per_sec: per_sec(args.messages as u64, fill_secs),
        connect_ms: (connect.as_secs_f64() * 10_000.0).round() / 10.0,
        catchup_secs: (secs * 1000.0).round() / 1000.0,
        catchup_msgs_per_sec: per_sec(received as u64, secs),
        received,
        requests,
        acked,
        left_in_mailbox: left,
    })
}

/// Queues `messages` blobs in the inbox's mailbox; returns the seconds it took.
async fn fill(target: &Target, inbox: &BlindedInbox, args: &Args) -> anyhow::Result<f64> {
    let mailbox = inbox.mailbox_id();
    let senders = args.fill_senders.clamp(1, args.messages);
    let conns = futures::future::try_join_all((0..senders).map(|_| target.connect()))
        .await
        .context("a filling sender cannot connect")?;
    let started = Instant::now();
    let origin = started;
    futures::future::try_join_all(conns.iter().enumerate().map(|(id, conn)| async move {
        // Sender `id` puts every `senders`-th message.
        let mut seqs = (id..args.messages).step_by(senders);
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < args.window.max(1) {
                let Some(seq) = seqs.next() else { break };
                let blob = stamp::blob(
                    args.size,
                    Stamp {
                        sent_nanos: stamp::nanos_since(origin, Instant::now()),
                        sender: id as u32,
                        seq: seq as u32,
                    },
                )?;
                in_flight.push(async move { conn.put(&mailbox, &blob, 0).await });
            }
            match in_flight.next().await {
                Some(result) => {
                    result.context("a put while filling the mailbox failed")?;
                }
                None => break,
            }
        }
        anyhow::Ok(())
    }))
    .await?;
    let secs = started.elapsed().as_secs_f64();
    for conn in conns {
        conn.close().await;
    }
    Ok(secs)
}

/// Fetches page after page; each page's ack goes out while the next page
/// is fetched. Returns (received, fetch requests, acked).
async fn drain_by_fetch(
    conn: &RelayConnection,
    inbox: &BlindedInbox,
    page: u32,
) -> anyhow::Result<(usize, usize, u64)> {
    let mut after = 0;
    let mut received = 0;
    let mut fetches = 0;
    let mut acked = 0u64;
    let mut acks = FuturesUnordered::new();
    loop {
        let fetch = conn.fetch(inbox, after, page);
        tokio::pin!(fetch);
        let page = loop {
            // Collect finished acks while the fetch is in flight.
            tokio::select! {
                page = &mut fetch => break page.context("fetch")?,
                Some(result) = acks.next(), if !acks.is_empty() => {
                    let result: Result<u32, sotto_core::NetError> = result;
                    acked += u64::from(result.context("ack")?);
                }
            }
        };
        fetches += 1;
        received += page.blobs.len();
        let seqs: Vec<u64> = page.blobs.iter().map(|b| b.seq).collect();
        if let Some(last) = seqs.last() {
            after = *last;
            acks.push(conn.ack(inbox, seqs));
        }
        if !page.more {
            break;
        }
    }
    while let Some(result) = acks.next().await {
        acked += u64::from(result.context("ack")?);
    }
    Ok((received, fetches, acked))
}

/// Subscribes from cursor 0 and acks the pushed backlog in batches (while
/// more arrives) until `expected` blobs arrived. Returns (received, ack
/// requests, acked).
async fn drain_by_subscription(
    conn: &RelayConnection,
    inbox: &BlindedInbox,
    expected: usize,
) -> anyhow::Result<(usize, usize, u64)> {
    const BATCH: usize = 512;
    let mut pushes = conn
        .take_pushes()
        .context("invariant: a fresh connection still has its push receiver")?;
    conn.subscribe(inbox, 0).await.context("subscribe")?;
    let mut received = 0;
    let mut batch = Vec::with_capacity(BATCH);
    let mut acks = FuturesUnordered::new();
    let mut requests = 0;
    let mut acked = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received < expected {
        tokio::select! {
            pushed = tokio::time::timeout_at(deadline, pushes.recv()) => {
                let pushed = pushed
                    .map_err(|_| anyhow::anyhow!("only {received} of {expected} blobs pushed within 60 s"))?
                    .context("the connection closed during catch-up")?;
                received += 1;
                batch.push(pushed.seq);
                if batch.len() >= BATCH || received == expected {
                    requests += 1;
                    acks.push(conn.ack(inbox, std::mem::take(&mut batch)));
                }
            }
            Some(result) = acks.next(), if !acks.is_empty() => {
                acked += u64::from(result.context("ack")?);
            }
        }
    }
    while let Some(result) = acks.next().await {
        acked += u64::from(result.context("ack")?);
    }
    Ok((received, requests, acked))
}
