//! `throughput`: S senders put stamped blobs round-robin into the mailboxes
//! of R subscribed receivers, at a fixed offered rate or as fast as the
//! relay acknowledges, with up to `--window` puts in flight per sender.
//!
//! Rates count only what happened inside the measurement window (after
//! `--warmup`, for `--duration`): durable puts are puts whose `PutOk`
//! arrived, delivered messages are pushes received. Latency samples are
//! taken for blobs *sent* inside the window. At a fixed rate the stamp is
//! the time the put was scheduled, not when it left, so a sender that falls
//! behind shows up as latency instead of hiding it (coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use sotto_core::{BlindedInbox, EPOCH_SECS, Epoch, InboxKey, NetError, RelayConnection};
use sotto_proto::MailboxId;
use sotto_proto::wire::ErrorCode;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::procstat::{self, CpuSnapshot, CpuUse};
use crate::report::{Latency, merge, per_sec};
use crate::stamp::{self, Stamp};
use crate::target::{LimitChanges, Target};
use crate::tokens::Issuance;

/// Offered load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Rate {
    /// As fast as puts are acknowledged, bounded by the window.
    Max,
    /// Messages per second over all senders.
    PerSec(f64),
}

/// Parses `max` or a positive number of messages per second.
pub(crate) fn parse_rate(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match s.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(Rate::PerSec(rate)),
        _ => Err("expected `max` or a positive number of messages per second".into()),
    }
}

/// Options of the `throughput` scenario.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Sending connections.
    #[arg(long, default_value_t = 16)]
    pub(crate) senders: usize,
    /// Receiving connections, one subscribed mailbox each.
    #[arg(long, default_value_t = 16)]
    pub(crate) receivers: usize,
    /// Offered load over all senders in messages per second, or `max`.
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    pub(crate) rate: Rate,
    /// Seconds of measurement (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup: f64,
    /// Blob size in bytes; must be a bucket size (1024, 4096, 16384, 65536).
    #[arg(long, default_value_t = 1024)]
    pub(crate) size: usize,
    /// Puts in flight per sender (pipelined on the connection's one stream).
    #[arg(long, default_value_t = 64)]
    pub(crate) window: usize,
    /// Receivers ack delivered blobs in batches of this many; 0 = never ack
    /// (mailboxes then grow for the whole run).
    #[arg(long, default_value_t = 64)]
    pub(crate) ack_batch: usize,
    /// TTL asked for each blob, in seconds (0 = the relay's default).
    #[arg(long, default_value_t = 0)]
    pub(crate) ttl: u32,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    put_errors: AtomicU64,
    rate_limited: AtomicU64,
    delivered: AtomicU64,
    unknown_blobs: AtomicU64,
    blobs_acked: AtomicU64,
    ack_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, counter: &AtomicU64, error: &NetError) {
        counter.fetch_add(1, Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if first.is_none() {
            *first = Some(error.to_string());
        }
    }
}

/// Totals over the whole run, warm-up and drain included.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Totals {
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    pub(crate) delivered: u64,
    /// Acknowledged puts no receiver got by the end of the drain.
    pub(crate) undelivered: u64,
    pub(crate) put_errors: u64,
    pub(crate) rate_limited: u64,
    pub(crate) blobs_acked_by_receivers: u64,
    pub(crate) ack_errors: u64,
    /// Pushed blobs without a readable stamp.
    pub(crate) unknown_blobs: u64,
    pub(crate) first_error: Option<String>,
}

/// The result of a `throughput` run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) target: String,
    pub(crate) senders: usize,
    pub(crate) receivers: usize,
    /// `None` = max.
    pub(crate) offered_per_sec: Option<f64>,
    pub(crate) window: usize,
    pub(crate) size: usize,
    pub(crate) ack_batch: usize,
    pub(crate) warmup_secs: f64,
    pub(crate) measured_secs: f64,
    /// Puts acknowledged (durable) per second in the window.
    pub(crate) durable_puts_per_sec: f64,
    /// Pushes received per second in the window.
    pub(crate) delivered_per_sec: f64,
    /// Puts sent per second in the window.
    pub(crate) sent_per_sec: f64,
    /// Put sent (or scheduled) → `PutOk` received.
    pub(crate) put_latency: Latency,
    /// Put sent (or scheduled) → push received.
    pub(crate) push_latency: Latency,
    /// Relay fsyncs in the window (embedded only).
    pub(crate) fsyncs: Option<u64>,
    /// Relay fsyncs per blob stored in the window (embedded only); acks
    /// share the same flushes.
    pub(crate) fsyncs_per_put: Option<f64>,
    pub(crate) cpu: CpuUse,
    /// UDP datagrams the kernel dropped for full receive buffers during the
    /// window, machine-wide (each is a lost QUIC packet).
    pub(crate) udp_receive_drops: Option<u64>,
    pub(crate) totals: Totals,
    pub(crate) relay_limits_changed: Option<LimitChanges>,
    /// Access tokens presented (one per connection), if the run has them.
    pub(crate) tokens: Option<Issuance>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let offered = match self.offered_per_sec {
            Some(rate) => format!("{rate} msg/s"),
            None => "max".into(),
        };
        writeln!(
            f,
            "throughput against {}: {} senders × {} receivers, offered {offered}, window {}, {} B blobs, ack batch {}",
            self.target, self.senders, self.receivers, self.window, self.size, self.ack_batch
        )?;
        writeln!(
            f,
            "  measured {:.1} s after {:.1} s warm-up",
            self.measured_secs, self.warmup_secs
        )?;
        writeln!(
            f,
            "  durable puts/s: {:.0}   delivered msgs/s: {:.0}   sent/s: {:.0}",
            self.durable_puts_per_sec, self.delivered_per_sec, self.sent_per_sec
        )?;
        writeln!(f, "  put→ack latency:  {}", self.put_latency)?;
        writeln!(f, "  put→push latency: {}", self.push_latency)?;
        match (self.fsyncs, self.fsyncs_per_put) {
            (Some(fsyncs), Some(per_put)) => writeln!(
                f,
                "  relay fsyncs: {fsyncs} ({per_put:.4} per put, {:.1} puts per fsync)",
                if per_put > 0.0 { 1.0 / per_put } else { 0.0 }
            )?,
            _ => writeln!(f, "  relay fsyncs: n/a (only with --embedded)")?,
        }
        writeln!(f, "  cpu: {}", self.cpu)?;
        if let Some(drops) = self.udp_receive_drops {
            writeln!(f, "  UDP datagrams dropped (receive buffer full): {drops}")?;
        }
        let t = &self.totals;
        writeln!(
            f,
            "  totals: sent {} acked {} delivered {} undelivered {} put errors {} rate-limited {} ack errors {} unknown {}",
            t.sent,
            t.acked,
            t.delivered,
            t.undelivered,
            t.put_errors,
            t.rate_limited,
            t.ack_errors,
            t.unknown_blobs
        )?;
        if let Some(error) = &t.first_error {
            writeln!(f, "  first error: {error}")?;
        }
        Ok(())
    }
}

struct Snapshot {
    at: Instant,
    sent: u64,
    acked: u64,
    delivered: u64,
    flushes: Option<u64>,
    relay_puts: Option<u64>,
    udp_drops: Option<u64>,
    cpu: CpuSnapshot,
}

impl Snapshot {
    fn take(counters: &Counters, target: &Target) -> Self {
        Self {
            at: Instant::now(),
            sent: counters.sent.load(Relaxed),
            acked: counters.acked.load(Relaxed),
            delivered: counters.delivered.load(Relaxed),
            flushes: target.flush_count(),
            relay_puts: target.relay_puts(),
            udp_drops: procstat::udp_receive_drops(),
            cpu: CpuSnapshot::take(external_pid(target)),
        }
    }
}

fn external_pid(target: &Target) -> Option<u32> {
    if target.is_embedded() {
        None
    } else {
        target.relay_pid
    }
}

/// The current epoch, as a real client computes it.
pub(crate) fn current_epoch() -> Epoch {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Epoch::from_unix_secs(now, EPOCH_SECS)
}

/// A fresh mailbox owner, as a real client makes one.
pub(crate) fn new_inbox() -> BlindedInbox {
    InboxKey::generate().blind(current_epoch())
}

/// Runs the scenario.
pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.senders > 0 && args.receivers > 0,
        "--senders and --receivers must be at least 1"
    );
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    anyhow::ensure!(
        args.duration > 0.0 && args.warmup >= 0.0,
        "--duration must be positive and --warmup not negative"
    );
    stamp::blob(
        args.size,
        Stamp {
            sent_nanos: 0,
            sender: 0,
            seq: 0,
        },
    )
    .with_context(|| format!("--size {}", args.size))?;

    // Receivers subscribe before any put, so every blob is pushed live.
    let receivers = futures::future::try_join_all((0..args.receivers).map(|_| async {
        let inbox = new_inbox();
        let conn = target.connect().await.context("receiver cannot connect")?;
        conn.subscribe(&inbox, 0)
            .await
            .context("receiver cannot subscribe")?;
        anyhow::Ok((Arc::new(conn), Arc::new(inbox)))
    }))
    .await?;
    let mailboxes: Arc<[MailboxId]> = receivers
        .iter()
        .map(|(_, inbox)| inbox.mailbox_id())
        .collect();
    let senders = futures::future::try_join_all(
        (0..args.senders)
            .map(|_| async { target.connect().await.context("sender cannot connect") }),
    )
    .await?;

    let counters = Arc::new(Counters::default());
    let origin = Instant::now();
    let measure_from = origin + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let window = Window {
        origin,
        from_nanos: stamp::nanos_since(origin, measure_from),
        to_nanos: stamp::nanos_since(origin, end),
    };
    let (stop, stopped) = watch::channel(false);

    let mut receiver_tasks = JoinSet::new();
    for (conn, inbox) in receivers {
        let pushes = conn
            .take_pushes()
            .context("invariant: a fresh connection still has its push receiver")?;
        receiver_tasks.spawn(receive(
            conn,
            inbox,
            pushes,
            args.ack_batch,
            window,
            counters.clone(),
            stopped.clone(),
        ));
    }
    let per_sender = match args.rate {
        Rate::Max => None,
        Rate::PerSec(rate) => Some(Duration::from_secs_f64(args.senders as f64 / rate)),
    };
    let mut sender_tasks = JoinSet::new();
    for (id, conn) in senders.into_iter().enumerate() {
        sender_tasks.spawn(send(
            conn,
            SenderPlan {
                id: id as u32,
                mailboxes: mailboxes.clone(),
                size: args.size,
                ttl: args.ttl,
                window: args.window,
                period: per_sender,
                end,
            },
            window,
            counters.clone(),
        ));
    }

    tokio::time::sleep_until(measure_from.into()).await;
    let before = Snapshot::take(&counters, target);
    tokio::time::sleep_until(end.into()).await;
    let after = Snapshot::take(&counters, target);

    let mut put_hist = stamp::histogram();
    while let Some(done) = sender_tasks.join_next().await {
        merge(&mut put_hist, &done.context("a sender task failed")?);
    }
    // Let the last acknowledged puts arrive before receivers stop.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while counters.delivered.load(Relaxed) < counters.acked.load(Relaxed)
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    let mut push_hist = stamp::histogram();
    while let Some(done) = receiver_tasks.join_next().await {
        merge(&mut push_hist, &done.context("a receiver task failed")?);
    }

    let secs = after.at.duration_since(before.at).as_secs_f64();
    let fsyncs = after.flushes.zip(before.flushes).map(|(a, b)| a - b);
    let relay_puts = after.relay_puts.zip(before.relay_puts).map(|(a, b)| a - b);
    let fsyncs_per_put = fsyncs
        .zip(relay_puts)
        .filter(|(_, puts)| *puts > 0)
        .map(|(f, p)| (f as f64 / p as f64 * 10_000.0).round() / 10_000.0);
    let acked = counters.acked.load(Relaxed);
    let delivered = counters.delivered.load(Relaxed);
    let first_error = counters
        .first_error
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    Ok(Report {
        scenario: "throughput",
        target: String::new(),
        senders: args.senders,
        receivers: args.receivers,
        offered_per_sec: match args.rate {
            Rate::Max => None,
            Rate::PerSec(rate) => Some(rate),
        },
        window: args.window,
        size: args.size,
        ack_batch: args.ack_batch,
        warmup_secs: args.warmup,
        measured_secs: (secs * 1000.0).round() / 1000.0,
        durable_puts_per_sec: per_sec(after.acked - before.acked, secs),
        delivered_per_sec: per_sec(after.delivered - before.delivered, secs),
        sent_per_sec: per_sec(after.sent - before.sent, secs),
        put_latency: Latency::of(&put_hist),
        push_latency: Latency::of(&push_hist),
        fsyncs,
        fsyncs_per_put,
        cpu: before.cpu.cores_until(&after.cpu, secs),
        udp_receive_drops: after.udp_drops.zip(before.udp_drops).map(|(a, b)| a - b),
        totals: Totals {
            sent: counters.sent.load(Relaxed),
            acked,
            delivered,
            undelivered: acked.saturating_sub(delivered),
            put_errors: counters.put_errors.load(Relaxed),
            rate_limited: counters.rate_limited.load(Relaxed),
            blobs_acked_by_receivers: counters.blobs_acked.load(Relaxed),
            ack_errors: counters.ack_errors.load(Relaxed),
            unknown_blobs: counters.unknown_blobs.load(Relaxed),
            first_error,
        },
        relay_limits_changed: target.limit_changes(),
        tokens: None,
    })
}

/// The measurement window, as stamps express it.
#[derive(Debug, Clone, Copy)]
struct Window {
    origin: Instant,
    from_nanos: u64,
    to_nanos: u64,
}

impl Window {
    fn contains(&self, sent_nanos: u64) -> bool {
        (self.from_nanos..self.to_nanos).contains(&sent_nanos)
    }
}

struct SenderPlan {
    id: u32,
    mailboxes: Arc<[MailboxId]>,
    size: usize,
    ttl: u32,
    window: usize,
    /// Time between puts at a fixed rate; `None` = as fast as the window allows.
    period: Option<Duration>,
    end: Instant,
}

/// One sender: keeps up to `window` puts in flight until `end`, then waits
/// for the last replies. Returns its put→ack latencies.
async fn send(
    conn: RelayConnection,
    plan: SenderPlan,
    window: Window,
    counters: Arc<Counters>,
) -> Histogram<u64> {
    let mut hist = stamp::histogram();
    let mut in_flight = FuturesUnordered::new();
    // Spread senders over the mailboxes instead of all starting at the first.
    let mut next_mailbox = plan.id as usize % plan.mailboxes.len();
    let mut seq = 0u32;
    let mut next_due = Instant::now();
    loop {
        let now = Instant::now();
        if now >= plan.end {
            break;
        }
        let has_room = in_flight.len() < plan.window;
        if has_room && (plan.period.is_none() || now >= next_due) {
            // At a fixed rate the stamp is the scheduled time (see module doc).
            let scheduled = if plan.period.is_some() { next_due } else { now };
            let stamp = Stamp {
                sent_nanos: stamp::nanos_since(window.origin, scheduled),
                sender: plan.id,
                seq,
            };
            let Ok(blob) = stamp::blob(plan.size, stamp) else {
                break;
            };
            let mailbox = plan.mailboxes[next_mailbox];
            next_mailbox = (next_mailbox + 1) % plan.mailboxes.len();
            seq = seq.wrapping_add(1);
            if let Some(period) = plan.period {
                next_due += period;
            }
            counters.sent.fetch_add(1, Relaxed);
            let conn = &conn;
            in_flight.push(async move {
                let result = conn.put(&mailbox, &blob, plan.ttl).await;
                (result, scheduled, stamp.sent_nanos)
            });
            continue;
        }
        tokio::select! {
            Some((result, scheduled, sent_nanos)) = in_flight.next(), if !in_flight.is_empty() => {
                settle(&counters, &mut hist, window, result, scheduled, sent_nanos);
            }
            _ = tokio::time::sleep_until(next_due.into()), if has_room && plan.period.is_some() => {}
            _ = tokio::time::sleep_until(plan.end.into()) => {}
        }
    }
    while let Some((result, scheduled, sent_nanos)) = in_flight.next().await {
        settle(&counters, &mut hist, window, result, scheduled, sent_nanos);
    }
    drop(in_flight);
    conn.close().await;
    hist
}

fn settle(
    counters: &Counters,
    hist: &mut Histogram<u64>,
    window: Window,
    result: Result<u64, NetError>,
    scheduled: Instant,
    sent_nanos: u64,
) {
    match result {
        Ok(_) => {
            counters.acked.fetch_add(1, Relaxed);
            if window.contains(sent_nanos) {
                stamp::record(hist, scheduled.elapsed());
            }
        }
        Err(error) if error.code() == Some(ErrorCode::RateLimited) => {
            counters.error(&counters.rate_limited, &error);
        }
        Err(error) => counters.error(&counters.put_errors, &error),
    }
}

/// Acks a receiver may have outstanding; further seqs wait for a free slot.
const ACKS_IN_FLIGHT: usize = 8;

/// One receiver: records put→push latency of every pushed blob and acks in
/// batches, until told to stop. Returns its latencies.
async fn receive(
    conn: Arc<RelayConnection>,
    inbox: Arc<BlindedInbox>,
    mut pushes: tokio::sync::mpsc::Receiver<sotto_core::Pushed>,
    ack_batch: usize,
    window: Window,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Histogram<u64> {
    let mut hist = stamp::histogram();
    let mut to_ack = Vec::new();
    let mut acks = JoinSet::new();
    loop {
        let pushed = tokio::select! {
            pushed = pushes.recv() => match pushed {
                Some(pushed) => pushed,
                None => break,
            },
            Some(_) = acks.join_next(), if !acks.is_empty() => {
                // A slot freed: a batch that filled meanwhile goes now.
                if to_ack.len() >= ack_batch {
                    acks.spawn(ack(
                        conn.clone(),
                        inbox.clone(),
                        std::mem::take(&mut to_ack),
                        counters.clone(),
                    ));
                }
                continue;
            }
            _ = stop.changed() => break,
        };
        let now = Instant::now();
        counters.delivered.fetch_add(1, Relaxed);
        match stamp::read(&pushed.blob) {
            Some(stamp) if window.contains(stamp.sent_nanos) => {
                let sent = window.origin + Duration::from_nanos(stamp.sent_nanos);
                stamp::record(&mut hist, now.saturating_duration_since(sent));
            }
            Some(_) => {}
            None => {
                counters.unknown_blobs.fetch_add(1, Relaxed);
            }
        }
        if ack_batch > 0 {
            to_ack.push(pushed.seq);
            // Never wait for an ack here: its reply comes on the stream
            // behind pushes, which only flow while this loop takes them (a
            // receiver that waited for acks with its push queue full stalled
            // until the request timeout). With every ack slot taken, the
            // batch grows until one frees.
            if to_ack.len() >= ack_batch && acks.len() < ACKS_IN_FLIGHT {
                acks.spawn(ack(
                    conn.clone(),
                    inbox.clone(),
                    std::mem::take(&mut to_ack),
                    counters.clone(),
                ));
            }
        }
    }
    if !to_ack.is_empty() {
        acks.spawn(ack(conn.clone(), inbox.clone(), to_ack, counters.clone()));
    }
    while acks.join_next().await.is_some() {}
    drop(pushes);
    if let Ok(conn) = Arc::try_unwrap(conn) {
        conn.close().await;
    }
    hist
}

async fn ack(
    conn: Arc<RelayConnection>,
    inbox: Arc<BlindedInbox>,
    seqs: Vec<u64>,
    counters: Arc<Counters>,
) {
    let count = seqs.len() as u64;
    match conn.ack(inbox.as_ref(), seqs).await {
        Ok(_) => {
            counters.blobs_acked.fetch_add(count, Relaxed);
        }
        Err(error) => counters.error(&counters.ack_errors, &error),
    }
}
