//! `connections`: opens N subscribed connections (one fresh mailbox each,
//! as N idle devices would), holds them, and reports how many succeeded,
//! the handshake rate, the relay's CPU per connection setup (with token
//! redemption when the run has tokens), and the relay's resident memory
//! per connection.
//!
//! Each client connection has its own UDP socket (DESIGN §2.3), so N is
//! capped by this process's open-file limit. Memory is the relay process's
//! `VmRSS` delta; with `--embedded` that process also holds the N client
//! connections, so the figure is an upper bound — run a separate
//! `sotto-relay` with `--relay-pid` for the relay's own cost.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use sotto_core::{BlindedInbox, RelayConnection};

use crate::procstat::{self, CpuSnapshot, CpuUse};
use crate::report::{Latency, per_sec};
use crate::stamp;
use crate::target::Target;
use crate::throughput::new_inbox;
use crate::tokens::Issuance;

/// Files kept free for everything that is not a load connection.
const SPARE_FILES: u64 = 256;

/// Options of the `connections` scenario.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Connections to open, each subscribed to its own mailbox.
    #[arg(long, default_value_t = 1000)]
    pub(crate) count: usize,
    /// Seconds to hold them open once all are up.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) hold: f64,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 64)]
    pub(crate) parallel: usize,
    /// Seconds to let the relay's memory settle before each RSS reading.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) settle: f64,
}

/// The result of a `connections` run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) target: String,
    pub(crate) requested: usize,
    pub(crate) succeeded: usize,
    pub(crate) failed: usize,
    /// Still open (no close reason) at the end of the hold.
    pub(crate) alive_after_hold: usize,
    pub(crate) first_error: Option<String>,
    /// Seconds to open all of them.
    pub(crate) open_secs: f64,
    /// Connect + hello + subscribe per second.
    pub(crate) handshakes_per_sec: f64,
    /// Connect + hello + subscribe time per connection.
    pub(crate) handshake_latency: Latency,
    /// Relay CPU (user + system) while the connections were opened, per
    /// connection that succeeded: QUIC and TLS handshake, hello (with
    /// token redemption when the run has tokens), subscribe (blinded-key
    /// signature check). Granularity: the kernel's 10 ms CPU tick over the
    /// whole opening phase.
    pub(crate) relay_cpu_ms_per_connection: Option<f64>,
    /// Relay and other processes' cores while the connections were opened.
    pub(crate) cpu_while_opening: CpuUse,
    /// Access tokens presented (one per connection), if the run has them.
    pub(crate) tokens: Option<Issuance>,
    pub(crate) hold_secs: f64,
    /// Which process the memory figures are for.
    pub(crate) memory_of: String,
    pub(crate) rss_before_kib: Option<u64>,
    pub(crate) rss_after_kib: Option<u64>,
    pub(crate) rss_per_connection_kib: Option<f64>,
    /// This process (the clients) when the relay is another process.
    pub(crate) client_rss_per_connection_kib: Option<f64>,
    /// What the relay counted (embedded only).
    pub(crate) relay_open_connections: Option<u64>,
    pub(crate) relay_subscriptions: Option<usize>,
    pub(crate) open_files_limit: Option<u64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "connections against {}: {} requested, {} succeeded, {} failed, {} alive after {:.0} s hold",
            self.target,
            self.requested,
            self.succeeded,
            self.failed,
            self.alive_after_hold,
            self.hold_secs
        )?;
        writeln!(
            f,
            "  opened in {:.2} s: {:.0} handshakes/s; handshake {}",
            self.open_secs, self.handshakes_per_sec, self.handshake_latency
        )?;
        let tokens = match &self.tokens {
            Some(issuance) => format!(
                "with token redemption ({} tokens from {} accounts, issued in {:.2} s before)",
                issuance.tokens, issuance.accounts, issuance.secs
            ),
            None => "without tokens".into(),
        };
        match self.relay_cpu_ms_per_connection {
            Some(ms) => writeln!(
                f,
                "  relay CPU per connection setup {tokens}: {ms:.3} ms; while opening: {}",
                self.cpu_while_opening
            )?,
            None => writeln!(
                f,
                "  relay CPU per connection setup: n/a (pass --relay-pid)"
            )?,
        }
        match (
            self.rss_before_kib,
            self.rss_after_kib,
            self.rss_per_connection_kib,
        ) {
            (Some(before), Some(after), Some(per)) => writeln!(
                f,
                "  memory ({}): {before} KiB → {after} KiB, {per:.1} KiB per connection",
                self.memory_of
            )?,
            _ => writeln!(f, "  memory: n/a (pass --relay-pid, or use --embedded)")?,
        }
        if let Some(client) = self.client_rss_per_connection_kib {
            writeln!(
                f,
                "  client side (this process): {client:.1} KiB per connection"
            )?;
        }
        if let (Some(open), Some(subs)) = (self.relay_open_connections, self.relay_subscriptions) {
            writeln!(
                f,
                "  relay counts {open} open connections, {subs} subscriptions"
            )?;
        }
        if let Some(error) = &self.first_error {
            writeln!(f, "  first error: {error}")?;
        }
        Ok(())
    }
}

/// Runs the scenario.
pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<Report> {
    let limit = procstat::open_files_limit();
    if let Some(limit) = limit {
        let room = limit.saturating_sub(SPARE_FILES) as usize;
        anyhow::ensure!(
            args.count <= room,
            "--count {} needs one UDP socket per connection, but the open-file limit is {limit}; \
             raise it (`ulimit -n`) or open at most {room}",
            args.count
        );
    }
    let relay_pid = target.relay_pid;
    let own_pid = std::process::id();
    let separate_relay = relay_pid.is_some_and(|pid| pid != own_pid);
    let settle = || tokio::time::sleep(Duration::from_secs_f64(args.settle.max(0.0)));
    settle().await;
    let rss_before = relay_pid.and_then(procstat::rss_kib);
    let client_before = procstat::rss_kib(own_pid);

    let external = if target.is_embedded() {
        None
    } else {
        relay_pid
    };
    let cpu_before = CpuSnapshot::take(external);
    let started = Instant::now();
    let results: Vec<_> = stream::iter(0..args.count)
        .map(|_| open_one(target))
        .buffer_unordered(args.parallel.max(1))
        .collect()
        .await;
    let open_secs = started.elapsed().as_secs_f64();
    let cpu_while_opening = cpu_before.cores_until(&CpuSnapshot::take(external), open_secs);

    let mut hist = stamp::histogram();
    let mut held: Vec<(RelayConnection, BlindedInbox)> = Vec::with_capacity(args.count);
    let mut first_error = None;
    for result in results {
        match result {
            Ok((conn, inbox, took)) => {
                stamp::record(&mut hist, took);
                held.push((conn, inbox));
            }
            Err(error) => {
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    let succeeded = held.len();
    let relay_cores = if target.is_embedded() {
        cpu_while_opening.by_thread_group.get("relay").copied()
    } else {
        cpu_while_opening.external_relay_process
    };
    let relay_cpu_ms_per_connection = relay_cores
        .filter(|_| succeeded > 0)
        .map(|cores| (cores * open_secs * 1000.0 / succeeded as f64 * 1000.0).round() / 1000.0);
    // Let allocations from the handshake burst settle before measuring.
    settle().await;
    let rss_after = relay_pid.and_then(procstat::rss_kib);
    let client_after = procstat::rss_kib(own_pid);
    let relay_open_connections = target.open_connections();
    let relay_subscriptions = target.subscriptions();
    tokio::time::sleep(Duration::from_secs_f64(args.hold.max(0.0))).await;
    let alive_after_hold = held
        .iter()
        .filter(|(conn, _)| conn.close_reason().is_none())
        .count();
    // Close concurrently: each close waits briefly for its endpoint to idle.
    stream::iter(held)
        .for_each_concurrent(256, |(conn, _)| conn.close())
        .await;

    let per_connection = |before: Option<u64>, after: Option<u64>| {
        before
            .zip(after)
            .filter(|_| succeeded > 0)
            .map(|(b, a)| ((a as f64 - b as f64) / succeeded as f64 * 10.0).round() / 10.0)
    };
    Ok(Report {
        scenario: "connections",
        target: String::new(),
        requested: args.count,
        succeeded,
        failed: args.count - succeeded,
        alive_after_hold,
        first_error,
        open_secs: (open_secs * 1000.0).round() / 1000.0,
        handshakes_per_sec: per_sec(succeeded as u64, open_secs),
        handshake_latency: Latency::of(&hist),
        relay_cpu_ms_per_connection,
        cpu_while_opening,
        tokens: None,
        hold_secs: args.hold,
        memory_of: if separate_relay {
            format!("relay process {}", relay_pid.unwrap_or_default())
        } else {
            "this process: embedded relay and clients together (upper bound)".into()
        },
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_per_connection_kib: per_connection(rss_before, rss_after),
        client_rss_per_connection_kib: if separate_relay {
            per_connection(client_before, client_after)
        } else {
            None
        },
        relay_open_connections,
        relay_subscriptions,
        open_files_limit: limit,
    })
}

async fn open_one(target: &Target) -> anyhow::Result<(RelayConnection, BlindedInbox, Duration)> {
    let started = Instant::now();
    let inbox = new_inbox();
    let conn = target.connect().await.context("connect")?;
    conn.subscribe(&inbox, 0).await.context("subscribe")?;
    Ok((conn, inbox, started.elapsed()))
}
