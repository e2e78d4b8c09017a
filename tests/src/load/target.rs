//! The relay under test: a running `sotto-relay` named on the command line,
//! or one started in-process on its own runtime.
//!
//! The embedded relay gets a tokio runtime of its own (threads `relay-*`) so
//! that the CPU report can tell its time from the load generator's, and so
//! that neither can starve the other's scheduler the way one shared runtime
//! would. It is still the same process: memory figures in embedded mode
//! include the clients.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use sotto_core::{NetError, RelayAddr, RelayConnection};
use sotto_relay::{
    Config, Limits, MemoryStorage, RelayCert, Server, SledStorage, Storage, SystemClock,
};

use crate::tokens::{Issuance, Tokens};

/// The embedded relay's storage backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backend {
    /// sled with group commit: what `sotto-relay` runs.
    Sled,
    /// In memory, flushes are no-ops: isolates what storage costs.
    Memory,
}

/// A running embedded relay over either backend.
enum Running {
    Sled(Server<SledStorage>),
    Memory(Server<MemoryStorage>),
}

/// The counters benchmarks read, whatever the backend.
#[derive(Debug, Clone, Copy)]
struct RelayCounters {
    flushes: u64,
    puts: u64,
    open_connections: u64,
    subscriptions: usize,
}

fn counters<S: Storage>(server: &Server<S>) -> RelayCounters {
    use std::sync::atomic::Ordering::Relaxed;
    let relay = server.relay();
    RelayCounters {
        flushes: relay.flush_count(),
        puts: relay.stats().puts.load(Relaxed),
        open_connections: relay.stats().open_connections.load(Relaxed),
        subscriptions: relay.subscription_count(),
    }
}

/// Limits of the embedded relay that differ from the defaults, and why.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LimitChanges {
    /// Per-connection sustained request rate (default 5,000/s). A single
    /// load connection is meant to push the relay, not its abuse limit.
    pub(crate) requests_per_sec: u32,
    /// Per-connection burst.
    pub(crate) request_burst: u32,
    /// Blobs per mailbox (default 20,000): runs without acks would hit it.
    pub(crate) mailbox_max_blobs: u64,
}

/// The relay the load goes to.
pub(crate) struct Target {
    /// Where to connect.
    pub(crate) addr: RelayAddr,
    /// The process whose memory and CPU are the relay's, if known.
    pub(crate) relay_pid: Option<u32>,
    embedded: Option<Embedded>,
    /// One access token per load connection, when the relay requires them.
    tokens: Option<Tokens>,
}

struct Embedded {
    runtime: tokio::runtime::Runtime,
    server: Option<Running>,
    limit_changes: Option<LimitChanges>,
    /// The fresh relay's admin bootstrap code, for `--tokens`.
    bootstrap_code: Option<String>,
    // Deleted when the target is dropped, after the relay stopped.
    _dir: tempfile::TempDir,
}

impl Target {
    /// A relay someone else runs.
    pub(crate) fn remote(
        addr: SocketAddr,
        fingerprint: &str,
        pid: Option<u32>,
    ) -> anyhow::Result<Self> {
        let bytes = hex::decode(fingerprint.trim())
            .context("--fingerprint must be the hex SHA-256 that sotto-relay prints")?;
        let fingerprint: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("--fingerprint must be 32 bytes (64 hex digits)"))?;
        Ok(Self {
            addr: RelayAddr { addr, fingerprint },
            relay_pid: pid,
            embedded: None,
            tokens: None,
        })
    }

    /// Starts a relay on 127.0.0.1 with its data in a temporary directory
    /// (under `parent` if given, so the disk under test can be chosen).
    pub(crate) fn embedded(
        threads: usize,
        parent: Option<&Path>,
        default_limits: bool,
        backend: Backend,
        udp_buffer: Option<u32>,
        require_tokens: bool,
    ) -> anyhow::Result<Self> {
        let dir = match parent {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .context("cannot create a temporary data directory for the embedded relay")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("relay-worker")
            .enable_all()
            .build()
            .context("cannot start the relay runtime")?;
        let mut limits = Limits::default();
        let limit_changes = if default_limits {
            None
        } else {
            limits.requests_per_sec = 10_000_000;
            limits.request_burst = 10_000_000;
            limits.mailbox_max_blobs = 10_000_000;
            Some(LimitChanges {
                requests_per_sec: limits.requests_per_sec,
                request_burst: limits.request_burst,
                mailbox_max_blobs: limits.mailbox_max_blobs,
            })
        };
        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().join("relay"),
            limits,
            // Without `--tokens` the load tool measures the relay's data
            // path alone and holds no tokens.
            tokens: sotto_relay::TokenConfig {
                require_tokens,
                ..Default::default()
            },
            ..Config::default()
        };
        if let Some(bytes) = udp_buffer {
            config.udp_buffer_bytes = bytes;
        }
        let server = match backend {
            Backend::Sled => Running::Sled(
                runtime
                    .block_on(Server::start(config))
                    .context("cannot start the embedded relay")?,
            ),
            Backend::Memory => {
                std::fs::create_dir_all(&config.data_dir)
                    .context("cannot create the relay's data directory")?;
                let (cert, _) = RelayCert::load_or_create(&config.data_dir)
                    .context("cannot create the relay certificate")?;
                // `start_with` binds the endpoint, so it must run on the
                // relay's runtime.
                let _guard = runtime.enter();
                Running::Memory(
                    Server::start_with(
                        &config,
                        Arc::new(MemoryStorage::new()),
                        Arc::new(SystemClock),
                        &cert,
                    )
                    .context("cannot start the embedded relay")?,
                )
            }
        };
        let (addr, fingerprint, bootstrap_code) = match &server {
            Running::Sled(s) => (s.local_addr(), s.fingerprint(), s.new_bootstrap_code()),
            Running::Memory(s) => (s.local_addr(), s.fingerprint(), s.new_bootstrap_code()),
        };
        let bootstrap_code = bootstrap_code.map(str::to_owned);
        Ok(Self {
            addr: RelayAddr { addr, fingerprint },
            relay_pid: Some(std::process::id()),
            embedded: Some(Embedded {
                runtime,
                server: Some(server),
                limit_changes,
                bootstrap_code,
                _dir: dir,
            }),
            tokens: None,
        })
    }

    /// Bootstraps the relay with its unused bootstrap `code` and obtains
    /// `count` access tokens; from then on every [`Target::connect`]
    /// presents one.
    pub(crate) async fn obtain_tokens(
        &mut self,
        code: &str,
        count: usize,
    ) -> anyhow::Result<Issuance> {
        let (tokens, issuance) = Tokens::obtain(&self.addr, code, count).await?;
        self.tokens = Some(tokens);
        Ok(issuance)
    }

    /// Opens a load connection: QUIC and TLS handshake, then hello with an
    /// access token if the run has them (the relay redeems it).
    pub(crate) async fn connect(&self) -> anyhow::Result<RelayConnection> {
        let token = match &self.tokens {
            Some(tokens) => Some(tokens.take()?),
            None => None,
        };
        RelayConnection::connect(&self.addr, token)
            .await
            .map_err(|error: NetError| anyhow::Error::new(error))
    }

    /// Whether the relay runs in this process.
    pub(crate) fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The embedded relay's unused bootstrap code.
    pub(crate) fn bootstrap_code(&self) -> Option<String> {
        self.embedded.as_ref()?.bootstrap_code.clone()
    }

    /// Limits changed from the defaults (embedded only).
    pub(crate) fn limit_changes(&self) -> Option<LimitChanges> {
        self.embedded.as_ref().and_then(|e| e.limit_changes.clone())
    }

    fn counters(&self) -> Option<RelayCounters> {
        match self.embedded.as_ref()?.server.as_ref()? {
            Running::Sled(server) => Some(counters(server)),
            Running::Memory(server) => Some(counters(server)),
        }
    }

    /// fsyncs the relay has done so far (embedded only).
    pub(crate) fn flush_count(&self) -> Option<u64> {
        self.counters().map(|c| c.flushes)
    }

    /// Blobs the relay has stored so far (embedded only).
    pub(crate) fn relay_puts(&self) -> Option<u64> {
        self.counters().map(|c| c.puts)
    }

    /// Connections the relay holds open now (embedded only).
    pub(crate) fn open_connections(&self) -> Option<u64> {
        self.counters().map(|c| c.open_connections)
    }

    /// Live subscriptions on the relay (embedded only).
    pub(crate) fn subscriptions(&self) -> Option<usize> {
        self.counters().map(|c| c.subscriptions)
    }

    /// Stops an embedded relay gracefully. Call outside any runtime.
    pub(crate) fn shutdown(mut self) {
        if let Some(mut embedded) = self.embedded.take() {
            match embedded.server.take() {
                Some(Running::Sled(server)) => embedded.runtime.block_on(server.shutdown()),
                Some(Running::Memory(server)) => embedded.runtime.block_on(server.shutdown()),
                None => {}
            }
            embedded
                .runtime
                .shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}
