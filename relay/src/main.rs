//! `sotto-relay`: zero-config start of the sotto relay.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sotto_relay::{
    Config, Engine, LogFormat, LogOptions, Server, Storage, default_data_dir, read_bootstrap_code,
};

/// The sotto relay: stores and forwards fixed-size ciphertext blobs under
/// rotating mailbox IDs. It learns no content, no lengths, no names, and
/// not who talks to whom.
///
/// The first start creates the data directory, a persistent certificate
/// (clients pin its fingerprint) and a one-time admin bootstrap code.
#[derive(Parser, Debug)]
#[command(name = "sotto-relay", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// UDP address to listen on [default: 0.0.0.0:7443].
    #[arg(long, env = "SOTTO_RELAY_LISTEN", global = true)]
    listen: Option<SocketAddr>,
    /// Data directory [default: $XDG_DATA_HOME/sotto-relay].
    #[arg(long, env = "SOTTO_RELAY_DATA", global = true)]
    data: Option<PathBuf>,
    /// Address members use to reach this relay, as host:port (goes into invites).
    #[arg(long, env = "SOTTO_RELAY_PUBLIC_ADDR", global = true)]
    public_addr: Option<String>,
    /// TOML file setting any option and limit (see docs/OPERATIONS.md);
    /// flags override it.
    #[arg(long, env = "SOTTO_RELAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Registered devices may not mint registration tokens for their
    /// member's new devices; only the admin's device invites give a new
    /// device relay access (sets `tokens.self_service_devices = false`).
    #[arg(long, global = true)]
    no_self_service_devices: bool,
    /// Log format on stderr: `text` or `json` (one object a line, for log
    /// shippers) [default: text, or `log_format` in the config].
    #[arg(long, env = "SOTTO_RELAY_LOG_FORMAT", global = true)]
    log_format: Option<LogFormat>,
    /// Serve Prometheus metrics (GET /metrics) and a health check
    /// (GET /healthz) over HTTP on this TCP address [default: off, or
    /// `metrics_listen` in the config].
    #[arg(long, env = "SOTTO_RELAY_METRICS_LISTEN", global = true)]
    metrics_listen: Option<SocketAddr>,
    /// Also log the QUIC and TLS libraries' events, which carry peer IP
    /// addresses. Off by default: the relay's logs then name no one,
    /// whatever SOTTO_LOG says. For debugging connection problems only.
    #[arg(long, global = true)]
    log_peer_addresses: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the relay (the default).
    Run,
    /// Print the admin bootstrap code again, until `sotto team create` uses it.
    BootstrapCode,
    /// Print everything the relay stores, as counts and sizes (no content,
    /// no full mailbox IDs). A running relay is audited through its admin
    /// socket (as its user or root); a stopped one directly.
    Audit {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also list each mailbox by a 4-byte ID prefix.
        #[arg(long)]
        verbose: bool,
    },
    /// Back up the relay's data directory into one new file, while the
    /// relay runs (through its admin socket, as its user or root) or not.
    /// Exit codes: 0 done, 1 failed, 3 the target file system is full (or
    /// the file too large for it). On failure no file is left and the relay
    /// and its data are untouched.
    Backup {
        /// The backup file to create (it must not exist; it is created
        /// 0600 and holds the relay's private keys: keep it encrypted).
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into a new (or empty) data directory given with
    /// --data, after checking the whole file. Then start the relay on it.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
    /// Check a stopped relay's data directory (--data), or with --backup a
    /// backup file, without changing it. Exits 0 when sound, 1 when not.
    Verify {
        /// Check this backup file instead of the data directory.
        #[arg(long)]
        backup: Option<PathBuf>,
    },
    /// Check a running relay like a client would: a QUIC handshake against
    /// the pinned certificate, Hello and Ping. Prints one line; exits 0
    /// when healthy, 1 when not (for monitoring and container health
    /// checks).
    Health {
        /// The relay to check, as HOST:PORT [default: the configured listen
        /// address, on loopback if it is a wildcard].
        #[arg(long)]
        addr: Option<String>,
        /// The certificate fingerprint to pin, in hex [default: that of
        /// the certificate in the data directory].
        #[arg(long)]
        fingerprint: Option<String>,
        /// Seconds the whole check may take.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

fn config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(data) = &cli.data {
        config.data_dir = data.clone();
    }
    if let Some(public) = &cli.public_addr {
        config.public_addr = Some(public.clone());
    }
    if cli.no_self_service_devices {
        config.tokens.self_service_devices = false;
    }
    if let Some(addr) = cli.metrics_listen {
        config.metrics_listen = Some(addr);
    }
    if let Some(format) = cli.log_format {
        config.log_format = format;
    }
    if cli.log_peer_addresses {
        config.log_peer_addresses = true;
    }
    if config.data_dir.as_os_str().is_empty() {
        config.data_dir = default_data_dir();
    }
    config.validate()?;
    Ok(config)
}

/// With `--features dhat-heap`, every allocation is tracked and a heap
/// profile (`dhat-heap.json`, the peak's live bytes by call site) is
/// written when the relay stops.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    let cli = Cli::parse();
    // The log is set up before anything is logged, from the flags and the
    // config file; a config that does not load is reported below.
    let log = match config(&cli) {
        Ok(config) => LogOptions {
            format: config.log_format,
            peer_addresses: config.log_peer_addresses,
        },
        Err(_) => LogOptions {
            format: cli.log_format.unwrap_or_default(),
            peer_addresses: cli.log_peer_addresses,
        },
    };
    sotto_relay::logging::init(log);
    if let Some(Command::Health {
        addr,
        fingerprint,
        timeout,
    }) = &cli.command
    {
        return health(&cli, addr.as_deref(), fingerprint.as_deref(), *timeout);
    }
    if let Some(Command::Backup { to }) = &cli.command {
        return backup(&cli, to);
    }
    let result = match cli.command {
        Some(Command::BootstrapCode) => print_bootstrap_code(&cli),
        Some(Command::Restore { ref from }) => restore(&cli, from),
        Some(Command::Verify { ref backup }) => verify(&cli, backup.as_deref()),
        Some(Command::Backup { .. }) => Ok(()),
        Some(Command::Audit { json, verbose }) => print_audit(&cli, json, verbose),
        Some(Command::Run) | None => run(&cli),
        Some(Command::Health { .. }) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if log.format == LogFormat::Json {
                tracing::error!("{error:#}");
            } else {
                eprintln!("sotto-relay: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn print_bootstrap_code(cli: &Cli) -> anyhow::Result<()> {
    let config = config(cli)?;
    match read_bootstrap_code(&config.data_dir).with_context(|| {
        format!(
            "cannot read the bootstrap code in {}",
            config.data_dir.display()
        )
    })? {
        Some(code) => {
            println!("{code}");
            Ok(())
        }
        None => anyhow::bail!(
            "no unused bootstrap code in {} (it was used by `sotto team create`, or the relay never started with this --data)",
            config.data_dir.display()
        ),
    }
}

/// `sotto-relay health`: one line, exit 0 (healthy) or 1.
fn health(cli: &Cli, addr: Option<&str>, fingerprint: Option<&str>, timeout: u64) -> ExitCode {
    match check_health(cli, addr, fingerprint, timeout) {
        Ok(line) => {
            say(format_args!("{line}"));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("unhealthy: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_health(
    cli: &Cli,
    addr: Option<&str>,
    fingerprint: Option<&str>,
    timeout: u64,
) -> anyhow::Result<String> {
    use std::net::ToSocketAddrs;
    let config = config(cli)?;
    let addr = match addr {
        Some(addr) => addr
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {addr} (use HOST:PORT)"))?
            .next()
            .with_context(|| format!("{addr} resolves to no address"))?,
        None => {
            let mut listen = config.listen;
            if listen.ip().is_unspecified() {
                listen.set_ip(if listen.is_ipv6() {
                    std::net::Ipv6Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv4Addr::LOCALHOST.into()
                });
            }
            listen
        }
    };
    let fingerprint: [u8; 32] = match fingerprint {
        Some(hex) => hex::decode(hex.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .context("--fingerprint must be 64 hex digits (the relay's `fingerprint:` line)")?,
        None => {
            let cert = config.data_dir.join("relay-cert.der");
            let der = std::fs::read(&cert).with_context(|| {
                format!(
                    "cannot read the relay certificate {} (give --data DIR or --fingerprint HEX)",
                    cert.display()
                )
            })?;
            sotto_relay::fingerprint(&der)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let took = runtime.block_on(sotto_relay::health::check(
        addr,
        fingerprint,
        Duration::from_secs(timeout.max(1)),
    ))?;
    Ok(format!(
        "healthy: the relay at {addr} answered Ping in {} ms",
        took.as_millis()
    ))
}

/// Exit code of `backup` when the target file system is full.
const EXIT_NO_SPACE: u8 = 3;

fn backup(cli: &Cli, to: &std::path::Path) -> ExitCode {
    let result = config(cli).and_then(|config| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        sotto_relay::backup::backup_to_file(&config.data_dir, to, now).map_err(anyhow::Error::from)
    });
    match result {
        Ok((summary, source)) => {
            let from = match source {
                sotto_relay::BackupSource::Running => "the running relay",
                sotto_relay::BackupSource::Stopped => "the stopped data directory",
            };
            say(format_args!(
                "backup: {} ({} blobs, {} bytes of blobs, {} token and slot records, {} files) from {from}",
                to.display(),
                summary.blobs,
                summary.blob_bytes,
                summary.records,
                summary.files
            ));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sotto-relay: backup failed, no file written: {error:#}");
            let no_space = error
                .downcast_ref::<sotto_relay::BackupError>()
                .is_some_and(|e| e.is_no_space());
            if no_space {
                eprintln!(
                    "sotto-relay: the target file system is full (or the file too large for it); the relay and its data are untouched"
                );
                ExitCode::from(EXIT_NO_SPACE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn restore(cli: &Cli, from: &std::path::Path) -> anyhow::Result<()> {
    let config = config(cli)?;
    let summary = sotto_relay::backup::restore(from, &config.data_dir)?;
    say(format_args!(
        "restored: {} blobs, {} token and slot records, {} files into {} (backup of schema {}, taken at unix time {})",
        summary.blobs,
        summary.records,
        summary.files,
        config.data_dir.display(),
        summary.schema,
        summary.created_at
    ));
    Ok(())
}

fn verify(cli: &Cli, backup: Option<&std::path::Path>) -> anyhow::Result<()> {
    if let Some(file) = backup {
        let summary = sotto_relay::backup::verify_backup(file)?;
        say(format_args!(
            "backup OK: {} blobs, {} token and slot records, {} files, schema {}",
            summary.blobs, summary.records, summary.files, summary.schema
        ));
        return Ok(());
    }
    let config = config(cli)?;
    let report = sotto_relay::backup::verify_data_dir(&config.data_dir)?;
    if report.problems.is_empty() {
        say(format_args!(
            "data directory OK: schema {}, {} blobs, {} slots",
            report.schema.unwrap_or(sotto_relay::SCHEMA_VERSION),
            report.blobs,
            report.slots
        ));
        return Ok(());
    }
    for problem in &report.problems {
        eprintln!("problem: {problem}");
    }
    anyhow::bail!(
        "{} problem(s) in {}",
        report.problems.len(),
        config.data_dir.display()
    )
}

fn print_audit(cli: &Cli, json: bool, verbose: bool) -> anyhow::Result<()> {
    let config = config(cli)?;
    sotto_relay::schema::check(&config.data_dir)?;
    let report = match sotto_relay::audit(&config.data_dir, verbose) {
        #[cfg(unix)]
        Err(locked @ sotto_relay::AuditError::Locked { .. }) => {
            // The relay runs: it audits its own database (reads only).
            match sotto_relay::control::audit_running(&config.data_dir, verbose) {
                Ok(report) => report,
                // Another process holds the database (not a relay).
                Err(sotto_relay::control::ControlError::NotRunning(_)) => return Err(locked.into()),
                Err(error) => return Err(error.into()),
            }
        }
        other => other?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = config(cli)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let signals = Signals::install();
        match config.storage.engine {
            Engine::Sled => {
                serve(cli, &config, Server::start(config.clone()).await?, signals).await
            }
            Engine::Fjall => {
                serve(
                    cli,
                    &config,
                    Server::start_fjall(config.clone()).await?,
                    signals,
                )
                .await
            }
        }
    })
}

/// Runs a started relay until a stop signal.
async fn serve<S: Storage>(
    cli: &Cli,
    config: &Config,
    server: Server<S>,
    mut signals: Signals,
) -> anyhow::Result<()> {
    let public = config
        .public_addr
        .clone()
        .unwrap_or_else(|| server.local_addr().to_string());
    // Stable "key: value" lines on stdout: scripts and tests read them.
    // A closed stdout must never stop the relay, so write errors are
    // ignored rather than panicking like println!.
    say(format_args!("sotto relay running"));
    say(format_args!("listen: {}", server.local_addr()));
    say(format_args!("public address: {public}"));
    if let Some(metrics) = server.metrics_addr() {
        say(format_args!("metrics: {metrics}"));
    }
    say(format_args!(
        "fingerprint: {}",
        hex::encode(server.fingerprint())
    ));
    say(format_args!("data: {}", config.data_dir.display()));
    if let Some(code) = server.new_bootstrap_code() {
        say(format_args!("bootstrap code: {code}"));
    }
    if server.new_bootstrap_code().is_some() && config.log_format == LogFormat::Json {
        // Never the code itself: a shipped log must not carry it.
        tracing::info!(
            "first start: `sotto-relay bootstrap-code` prints the admin's bootstrap code"
        );
    } else if let Some(code) = server.new_bootstrap_code() {
        eprintln!(
            "\nFirst start. The admin creates the team with:\n    sotto team create {code} --handle NAME --name TEAM \\\n        --relay {public} --fingerprint {}\n(`sotto-relay bootstrap-code` prints the code again until it is used.)\nOpen UDP port {} in the firewall.\n",
            hex::encode(server.fingerprint()),
            server.local_addr().port()
        );
    }

    loop {
        match signals.next().await {
            Signal::Stop => break,
            Signal::Reload => reload(cli, &server),
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
    server.shutdown().await;
    anyhow::Ok(())
}

/// SIGHUP: reads the config file again and applies what can change while
/// connections run; the rest is logged as needing a restart. A config that
/// does not load changes nothing.
fn reload<S: Storage>(cli: &Cli, server: &Server<S>) {
    if cli.config.is_none() {
        tracing::warn!("SIGHUP: no --config file to reload; nothing changed");
        return;
    }
    match config(cli) {
        Ok(new) => {
            let needs_restart = server.reload(&new);
            for setting in &needs_restart {
                tracing::warn!(setting = %setting, "changed in the config file, but applies only after a restart");
            }
            tracing::info!(restart_needed = needs_restart.len(), "config reloaded");
        }
        Err(error) => {
            tracing::error!("SIGHUP: the config does not load, nothing changed: {error:#}");
        }
    }
}

/// One line on stdout, ignoring a closed or broken stdout.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// What a signal asks for.
enum Signal {
    /// SIGINT or SIGTERM: shut down gracefully.
    Stop,
    /// SIGHUP: reload the config.
    Reload,
}

/// The signal handlers, installed before the relay says it is running, so
/// a signal sent as soon as the start-up lines appear is never lost (the
/// default action would kill the relay without its graceful shutdown).
struct Signals {
    #[cfg(unix)]
    handlers: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let handlers = (|| {
                Some([
                    signal(SignalKind::interrupt()).ok()?,
                    signal(SignalKind::terminate()).ok()?,
                    signal(SignalKind::hangup()).ok()?,
                ])
            })();
            if handlers.is_none() {
                tracing::warn!("cannot install signal handlers; only Ctrl-C stops the relay");
            }
            Self { handlers }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        if let Some([interrupt, terminate, hangup]) = &mut self.handlers {
            return tokio::select! {
                _ = interrupt.recv() => Signal::Stop,
                _ = terminate.recv() => Signal::Stop,
                _ = hangup.recv() => Signal::Reload,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}
