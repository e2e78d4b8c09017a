//! `sotto-relay`: zero-config start of the sotto relay.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sotto_relay::{Config, Server, default_data_dir, read_bootstrap_code};

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
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the relay (the default).
    Run,
    /// Print the admin bootstrap code again, until `sotto team create` uses it.
    BootstrapCode,
    /// Print everything the relay stores, as counts and sizes (no content,
    /// no full mailbox IDs). Stop the relay first, or audit a copy of the
    /// data directory.
    Audit {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also list each mailbox by a 4-byte ID prefix.
        #[arg(long)]
        verbose: bool,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SOTTO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Some(Command::BootstrapCode) => print_bootstrap_code(&cli),
        Some(Command::Audit { json, verbose }) => print_audit(&cli, json, verbose),
        Some(Command::Run) | None => run(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sotto-relay: {error:#}");
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

fn print_audit(cli: &Cli, json: bool, verbose: bool) -> anyhow::Result<()> {
    let config = config(cli)?;
    let report = sotto_relay::audit(&config.data_dir, verbose)?;
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
        let server = Server::start(config.clone()).await?;
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
        say(format_args!("fingerprint: {}", hex::encode(server.fingerprint())));
        say(format_args!("data: {}", config.data_dir.display()));
        if let Some(code) = server.new_bootstrap_code() {
            say(format_args!("bootstrap code: {code}"));
            eprintln!(
                "\nFirst start. The admin creates the team with:\n    sotto team create {code} --handle NAME --name TEAM \\\n        --relay {public} --fingerprint {}\n(`sotto-relay bootstrap-code` prints the code again until it is used.)\nOpen UDP port {} in the firewall.\n",
                hex::encode(server.fingerprint()),
                server.local_addr().port()
            );
        }

        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        server.shutdown().await;
        anyhow::Ok(())
    })
}

/// One line on stdout, ignoring a closed or broken stdout.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
