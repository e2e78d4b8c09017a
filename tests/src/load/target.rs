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
use sotto_core::RelayAddr;
use sotto_relay::{Config, Limits, Server};

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
}

struct Embedded {
    runtime: tokio::runtime::Runtime,
    server: Option<Server>,
    limit_changes: Option<LimitChanges>,
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
        })
    }

    /// Starts a sled-backed relay on 127.0.0.1 in a temporary directory
    /// (under `parent` if given, so the disk under test can be chosen).
    pub(crate) fn embedded(
        threads: usize,
        parent: Option<&Path>,
        default_limits: bool,
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
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().join("relay"),
            limits,
            ..Config::default()
        };
        let server = runtime
            .block_on(Server::start(config))
            .context("cannot start the embedded relay")?;
        Ok(Self {
            addr: RelayAddr {
                addr: server.local_addr(),
                fingerprint: server.fingerprint(),
            },
            relay_pid: Some(std::process::id()),
            embedded: Some(Embedded {
                runtime,
                server: Some(server),
                limit_changes,
                _dir: dir,
            }),
        })
    }

    /// Whether the relay runs in this process.
    pub(crate) fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// Limits changed from the defaults (embedded only).
    pub(crate) fn limit_changes(&self) -> Option<LimitChanges> {
        self.embedded.as_ref().and_then(|e| e.limit_changes.clone())
    }

    fn relay(&self) -> Option<&Arc<sotto_relay::Relay<sotto_relay::SledStorage>>> {
        self.embedded
            .as_ref()
            .and_then(|e| e.server.as_ref())
            .map(Server::relay)
    }

    /// fsyncs the relay has done so far (embedded only).
    pub(crate) fn flush_count(&self) -> Option<u64> {
        self.relay().map(|r| r.flush_count())
    }

    /// Blobs the relay has stored so far (embedded only).
    pub(crate) fn relay_puts(&self) -> Option<u64> {
        self.relay()
            .map(|r| r.stats().puts.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Connections the relay holds open now (embedded only).
    pub(crate) fn open_connections(&self) -> Option<u64> {
        self.relay().map(|r| {
            r.stats()
                .open_connections
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Live subscriptions on the relay (embedded only).
    pub(crate) fn subscriptions(&self) -> Option<usize> {
        self.relay().map(|r| r.subscription_count())
    }

    /// Stops an embedded relay gracefully. Call outside any runtime.
    pub(crate) fn shutdown(mut self) {
        if let Some(mut embedded) = self.embedded.take() {
            if let Some(server) = embedded.server.take() {
                embedded.runtime.block_on(server.shutdown());
            }
            embedded
                .runtime
                .shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}
