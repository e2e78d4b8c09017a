//! `sotto-load`: drives a sotto relay over real QUIC through the same client
//! code real devices use (`sotto_core::RelayConnection`, blinded inbox
//! keys), and reports what the relay sustained.
//!
//! Scenarios, one module each:
//! - `throughput`: S senders put into R subscribed receivers' mailboxes;
//!   durable puts/s, delivered msgs/s, put→push latency, fsyncs per put.
//! - `connections`: N idle subscribed connections; handshake rate and relay
//!   memory per connection.
//! - `catchup`: an offline mailbox with K blobs is drained.
//!
//! Support: `target` (embedded or remote relay), `tokens` (real access
//! tokens, so that connection setup includes their redemption), `stamp`
//! (timestamped load blobs, histograms), `procstat` (`/proc` memory and
//! CPU), `report`.
//! `docs/BENCHMARKS.md` has the figures and how to reproduce them.

#[path = "../load/catchup.rs"]
mod catchup;
#[path = "../load/connections.rs"]
mod connections;
#[path = "../load/procstat.rs"]
mod procstat;
#[path = "../load/report.rs"]
mod report;
#[path = "../load/stamp.rs"]
mod stamp;
#[path = "../load/target.rs"]
mod target;
#[path = "../load/throughput.rs"]
mod throughput;
#[path = "../load/tokens.rs"]
mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::target::{Backend, Target};

/// Load generator for the sotto relay.
///
/// Runs against a relay you started (`--relay ADDR --fingerprint HEX`, as
/// `sotto-relay` prints them) or against one it starts in-process with sled
/// in a temporary directory (`--embedded`). The embedded relay lifts the
/// per-connection request rate limit and mailbox quota, so that the figures
/// measure the relay rather than its abuse limits; `--default-limits` keeps
/// them.
#[derive(Parser, Debug)]
#[command(name = "sotto-load", version, about, long_about)]
struct Cli {
    /// Start a relay in this process (sled in a temporary directory).
    #[arg(long, global = true, conflicts_with_all = ["relay", "fingerprint"])]
    embedded: bool,
    /// Address of a running relay.
    #[arg(long, global = true, requires = "fingerprint")]
    relay: Option<SocketAddr>,
    /// The relay's certificate fingerprint (hex), as `sotto-relay` prints it.
    #[arg(long, global = true)]
    fingerprint: Option<String>,
    /// Process id of a running relay, for its memory and CPU figures.
    #[arg(long, global = true)]
    relay_pid: Option<u32>,
    /// Print one JSON object with the results instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    /// Worker threads of the load generator's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    load_threads: usize,
    /// Worker threads of the embedded relay's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    relay_threads: usize,
    /// Directory in which the embedded relay's temporary data directory is
    /// made (choose the disk under test) [default: the system temp dir].
    #[arg(long, global = true)]
    data_parent: Option<PathBuf>,
    /// Keep the embedded relay's default rate limit and mailbox quota.
    #[arg(long, global = true)]
    default_limits: bool,
    /// The embedded relay's storage: `memory` shows what sled costs.
    #[arg(long, global = true, value_enum, default_value_t = Backend::Sled)]
    storage: Backend,
    /// The embedded relay's UDP socket buffer in bytes (0: the OS default)
    /// [default: the relay's `udp_buffer_bytes`].
    #[arg(long, global = true)]
    relay_udp_buffer: Option<u32>,
    /// Open every load connection with a real access token, as devices do:
    /// the load generator bootstraps the relay, registers issuance
    /// accounts and obtains the tokens before the run (not measured); each
    /// connection's hello then redeems one. With `--embedded` the relay
    /// requires tokens; with `--relay`, pass `--bootstrap-code`.
    #[arg(long, global = true)]
    tokens: bool,
    /// A fresh relay's unused admin bootstrap code (it prints it on first
    /// start); implies `--tokens`.
    #[arg(long, global = true, requires = "relay")]
    bootstrap_code: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Senders put 1 KiB blobs into subscribed receivers' mailboxes.
    Throughput(throughput::Args),
    /// Many idle subscribed connections: handshake rate, memory each.
    Connections(connections::Args),
    /// An offline receiver drains a queued mailbox.
    Catchup(catchup::Args),
}

#[derive(Serialize)]
#[serde(untagged)]
enum Report {
    Throughput(throughput::Report),
    Connections(connections::Report),
    Catchup(catchup::Report),
}

impl Scenario {
    /// Load connections the scenario opens (one token each).
    fn connections(&self) -> usize {
        match self {
            Scenario::Throughput(args) => args.senders + args.receivers,
            Scenario::Connections(args) => args.count,
            Scenario::Catchup(args) => args.fill_senders.clamp(1, args.messages.max(1)) + 1,
        }
    }
}

impl Report {
    fn set_tokens(&mut self, issuance: Option<tokens::Issuance>) {
        match self {
            Report::Throughput(r) => r.tokens = issuance,
            Report::Connections(r) => r.tokens = issuance,
            Report::Catchup(r) => r.tokens = issuance,
        }
    }

    fn set_target(&mut self, target: String) {
        match self {
            Report::Throughput(r) => r.target = target,
            Report::Connections(r) => r.target = target,
            Report::Catchup(r) => r.target = target,
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Report::Throughput(r) => r.fmt(f),
            Report::Connections(r) => r.fmt(f),
            Report::Catchup(r) => r.fmt(f),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sotto-load: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let with_tokens = cli.tokens || cli.bootstrap_code.is_some();
    let mut target = match (&cli.relay, &cli.fingerprint) {
        (Some(addr), Some(fingerprint)) => Target::remote(*addr, fingerprint, cli.relay_pid)?,
        _ if cli.embedded => Target::embedded(
            cli.relay_threads,
            cli.data_parent.as_deref(),
            cli.default_limits,
            cli.storage,
            cli.relay_udp_buffer,
            with_tokens,
        )?,
        _ => {
            anyhow::bail!("say which relay to load: --embedded, or --relay ADDR --fingerprint HEX")
        }
    };
    let target_name = if target.is_embedded() {
        format!(
            "embedded relay {} ({:?} storage)",
            target.addr.addr, cli.storage
        )
    } else {
        format!("relay {}", target.addr.addr)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.load_threads.max(1))
        .thread_name("load-worker")
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;
    let result = runtime.block_on(async {
        let issuance = if with_tokens {
            let code = cli
                .bootstrap_code
                .clone()
                .or_else(|| target.bootstrap_code())
                .context("--tokens against a running relay needs its --bootstrap-code")?;
            Some(
                target
                    .obtain_tokens(&code, cli.scenario.connections())
                    .await
                    .context("cannot obtain access tokens")?,
            )
        } else {
            None
        };
        let target = &target;
        let mut report = match &cli.scenario {
            Scenario::Throughput(args) => Report::Throughput(throughput::run(target, args).await?),
            Scenario::Connections(args) => {
                Report::Connections(connections::run(target, args).await?)
            }
            Scenario::Catchup(args) => Report::Catchup(catchup::run(target, args).await?),
        };
        report.set_tokens(issuance);
        anyhow::Ok(report)
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    target.shutdown();
    let mut report = result?;
    report.set_target(target_name);
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
