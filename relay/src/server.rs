//! The relay server: a QUIC endpoint, the accept loop, background tasks
//! (TTL purge, stats), and graceful shutdown.
//!
//! Shutdown (SIGINT / SIGTERM, or [`Server::shutdown`]): stop accepting,
//! tell every connection to stop reading, let each finish its in-flight
//! writes and send their replies, flush storage a last time, close.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sotto_proto::ALPN;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::bootstrap;
use crate::cert::{CertError, RelayCert};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError, Engine};
use crate::connection::{self, close};
use crate::metrics::Metrics;
use crate::relay::{Relay, Stats};
use crate::storage::{FjallStorage, SledStorage, Storage, StoreError};

/// How long shutdown waits for connections to finish their in-flight work.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The certificate could not be loaded or created.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The data directory's schema is newer than this relay, or cannot be
    /// read or migrated.
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
    /// The database could not be opened.
    #[error(
        "cannot open the relay database in {dir}: {source} (is another sotto-relay using this data directory?)"
    )]
    Storage {
        /// The database directory.
        dir: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The data directory holds the other storage engine's database.
    #[error(
        "{dir} holds a {found} database, but the config says storage.engine = \"{configured}\": set the engine the data directory was made with (nothing was changed)"
    )]
    OtherEngine {
        /// The data directory.
        dir: PathBuf,
        /// The engine whose database is there.
        found: &'static str,
        /// The engine configured.
        configured: &'static str,
    },
    /// File system error on the data directory.
    #[error("cannot prepare data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TLS or QUIC setup failed.
    #[error("cannot set up TLS/QUIC: {0}")]
    Tls(String),
    /// The metrics listener's TCP socket could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running relay.
pub struct Server<S: Storage = SledStorage> {
    relay: Arc<Relay<S>>,
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    fingerprint: [u8; 32],
    new_bootstrap_code: Option<String>,
    /// The configuration in force (a reload replaces its limits).
    config: std::sync::Mutex<Config>,
    /// The QUIC server settings, to give new connections new transport
    /// limits on a reload.
    quic: quinn::ServerConfig,
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

/// What starting needs before the storage opens: the data directory
/// prepared, migrated and checked against the configured engine.
struct Prepared {
    dir: PathBuf,
    cert: RelayCert,
    new_code: Option<String>,
}

impl Prepared {
    fn new(config: &Config) -> Result<Self, StartError> {
        config.validate()?;
        let dir = config.data_dir.clone();
        create_private_dir(&dir).map_err(|source| StartError::DataDir {
            dir: dir.clone(),
            source,
        })?;
        // Before anything else is read or created in it.
        crate::schema::prepare(&dir)?;
        // One engine's database per data directory: starting the other
        // engine would serve an empty store and hide the queued blobs.
        let engine = config.storage.engine;
        for other in [Engine::Sled, Engine::Fjall] {
            if other != engine && dir.join(other.db_dir()).exists() {
                return Err(StartError::OtherEngine {
                    dir: dir.clone(),
                    found: other.name(),
                    configured: engine.name(),
                });
            }
        }
        let (cert, first_start) = RelayCert::load_or_create(&dir)?;
        let new_code = bootstrap::create_if_first_start(&dir, first_start).map_err(|source| {
            StartError::DataDir {
                dir: dir.clone(),
                source,
            }
        })?;
        Ok(Self {
            dir,
            cert,
            new_code,
        })
    }

    /// Opens the storage with `open` on a blocking thread.
    async fn open<S: Storage>(
        &self,
        engine: Engine,
        open: fn(&Path) -> Result<S, StoreError>,
    ) -> Result<S, StartError> {
        let db_dir = self.dir.join(engine.db_dir());
        let opening = db_dir.clone();
        tokio::task::spawn_blocking(move || open(&opening))
            .await
            .map_err(|e| StartError::Tls(format!("storage open task failed: {e}")))?
            .map_err(|source| StartError::Storage {
                dir: db_dir,
                source,
            })
    }
}

impl Server<SledStorage> {
    /// Starts a relay with sled storage in `config.data_dir`, creating the
    /// directory, certificate and bootstrap code on first start. Must be
    /// called inside a tokio runtime. (`config.storage.engine` must be
    /// sled; [`Server::start_fjall`] starts the other engine.)
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let mut config = config;
        config.storage.engine = Engine::Sled;
        let prepared = Prepared::new(&config)?;
        let storage = prepared.open(Engine::Sled, SledStorage::open).await?;
        let mut server = Self::start_with(
            &config,
            Arc::new(storage),
            Arc::new(SystemClock),
            &prepared.cert,
        )?;
        server.new_bootstrap_code = prepared.new_code;
        let dir = prepared.dir;
        #[cfg(unix)]
        match crate::control::bind(&dir) {
            Ok(listener) => server.background.push(tokio::spawn(crate::control::serve(
                listener,
                server.relay.clone(),
                dir.clone(),
                server.shutdown.subscribe(),
            ))),
            Err(error) => tracing::warn!(
                %error,
                "cannot bind the admin socket in the data directory: `sotto-relay backup` and `audit` cannot reach this running relay"
            ),
        }
        Ok(server)
    }
}

impl Server<FjallStorage> {
    /// Starts a relay with fjall storage in `config.data_dir/fjall`
    /// (`storage.engine = "fjall"`), as [`Server::start`] does for sled.
    /// The admin socket (online backup and audit) is not served: those
    /// read sled's records and do not support this engine yet.
    pub async fn start_fjall(config: Config) -> Result<Self, StartError> {
        let mut config = config;
        config.storage.engine = Engine::Fjall;
        let prepared = Prepared::new(&config)?;
        let storage = prepared.open(Engine::Fjall, FjallStorage::open).await?;
        let mut server = Self::start_with(
            &config,
            Arc::new(storage),
            Arc::new(SystemClock),
            &prepared.cert,
        )?;
        server.new_bootstrap_code = prepared.new_code;
        tracing::warn!(
            "storage engine fjall: `sotto-relay backup`, `audit` and `verify` support the sled engine only"
        );
        Ok(server)
    }
}

impl<S: Storage> Server<S> {
    /// Starts a relay over any storage and clock (tests inject both). Must
    /// be called inside a tokio runtime.
    pub fn start_with(
        config: &Config,
        storage: Arc<S>,
        clock: Arc<dyn Clock>,
        cert: &RelayCert,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let server_config = quic_config(config, cert)?;
        let bind_error = |source| StartError::Bind {
            addr: config.listen,
            source,
        };
        let socket =
            udp_socket(config.listen, config.udp_buffer_bytes as usize).map_err(bind_error)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        let local_addr = endpoint.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let tokens = crate::tokens::Tokens::load(config.tokens.clone(), &config.data_dir).map_err(
            |source| StartError::DataDir {
                dir: config.data_dir.clone(),
                source,
            },
        )?;
        let relay = Arc::new(Relay::new(storage, config.limits.clone(), clock).with_tokens(tokens));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(
            endpoint.clone(),
            relay.clone(),
            Arc::new(Semaphore::new(config.limits.max_connections as usize)),
            shutdown_rx.clone(),
        ));
        let mut background = Vec::new();
        let mut metrics_addr = None;
        if let Some(addr) = config.metrics_listen {
            let metrics_error = |source| StartError::MetricsBind { addr, source };
            let listener = std::net::TcpListener::bind(addr).map_err(metrics_error)?;
            listener.set_nonblocking(true).map_err(metrics_error)?;
            metrics_addr = Some(listener.local_addr().map_err(metrics_error)?);
            let listener = tokio::net::TcpListener::from_std(listener).map_err(metrics_error)?;
            background.push(tokio::spawn(crate::metrics_http::serve(
                listener,
                relay.clone(),
                shutdown_rx.clone(),
            )));
        }
        background.extend([
            tokio::spawn(purge_loop(
                relay.clone(),
                Duration::from_secs(config.purge_interval_secs.max(1)),
                shutdown_rx.clone(),
            )),
            tokio::spawn(stats_loop(
                relay.clone(),
                Duration::from_secs(config.stats_interval_secs.max(1)),
                shutdown_rx,
            )),
        ]);
        Ok(Self {
            relay,
            endpoint,
            local_addr,
            metrics_addr,
            fingerprint: cert.fingerprint(),
            new_bootstrap_code: None,
            config: std::sync::Mutex::new(config.clone()),
            quic: server_config,
            shutdown,
            accept,
            background,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound metrics listener, if `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// SHA-256 of the relay certificate, which clients pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The bootstrap code, if this start created it (print it once).
    pub fn new_bootstrap_code(&self) -> Option<&str> {
        self.new_bootstrap_code.as_deref()
    }

    /// The shared relay state (stats, storage, purge).
    pub fn relay(&self) -> &Arc<Relay<S>> {
        &self.relay
    }

    /// Applies a re-read configuration without dropping connections: the
    /// `[limits]` take effect at once (those read per request) or for new
    /// connections (rate, frame size, in-flight writes, hello and idle
    /// timeouts, flow-control windows). Returns the names of the changed
    /// settings that need a restart (`listen`, `data_dir`, `tokens`,
    /// `limits.max_connections`, ...), which keep their running values.
    /// The caller has validated `new`.
    pub fn reload(&self, new: &Config) -> Vec<&'static str> {
        let mut running = self
            .config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut needs_restart = Vec::new();
        let mut check = |changed: bool, name: &'static str| {
            if changed {
                needs_restart.push(name);
            }
        };
        check(new.listen != running.listen, "listen");
        check(new.data_dir != running.data_dir, "data_dir");
        check(new.public_addr != running.public_addr, "public_addr");
        check(
            new.purge_interval_secs != running.purge_interval_secs,
            "purge_interval_secs",
        );
        check(
            new.stats_interval_secs != running.stats_interval_secs,
            "stats_interval_secs",
        );
        check(
            new.udp_buffer_bytes != running.udp_buffer_bytes,
            "udp_buffer_bytes",
        );
        check(new.log_format != running.log_format, "log_format");
        check(
            new.log_peer_addresses != running.log_peer_addresses,
            "log_peer_addresses",
        );
        check(
            new.metrics_listen != running.metrics_listen,
            "metrics_listen",
        );
        check(new.tokens != running.tokens, "tokens");
        check(new.storage != running.storage, "storage.engine");
        check(
            new.limits.max_connections != running.limits.max_connections,
            "limits.max_connections",
        );
        let mut limits = new.limits.clone();
        // The connection semaphore was sized at start.
        limits.max_connections = running.limits.max_connections;
        if limits != running.limits {
            match transport_config(&Config {
                limits: limits.clone(),
                ..running.clone()
            }) {
                Ok(transport) => {
                    let mut quic = self.quic.clone();
                    quic.transport_config(Arc::new(transport));
                    self.endpoint.set_server_config(Some(quic));
                }
                Err(error) => {
                    tracing::error!(%error, "reload: the new transport limits are unusable; limits unchanged");
                    return needs_restart;
                }
            }
            self.relay.limits.replace(limits.clone());
            running.limits = limits;
        }
        Metrics::bump(&self.relay.metrics.reloads, 1);
        needs_restart
    }

    /// Graceful shutdown: stop accepting, finish in-flight requests, flush.
    pub async fn shutdown(self) {
        // Refuse new connections from here on.
        self.endpoint.set_server_config(None);
        let _ = self.shutdown.send(true);
        let _ = self.accept.await;
        for task in self.background {
            let _ = task.await;
        }
        let relay = self.relay.clone();
        let _ = tokio::task::spawn_blocking(move || relay.shutdown()).await;
        self.endpoint
            .close(close::SHUTTING_DOWN.into(), b"relay shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        tracing::info!("relay stopped");
    }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The relay's one UDP socket, with large buffers: every client's datagrams
/// queue in it while the workers are busy, and with the OS default (about
/// 208 KiB) bursts from many clients overflowed it (thousands of drops per
/// second at 64 × 64 connections), each drop costing a QUIC loss timeout.
/// The OS may grant less than asked (Linux caps at `rmem_max`); that is
/// logged, not fatal.
fn udp_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer == 0 {
        socket.bind(&addr.into())?;
        return Ok(socket.into());
    }
    if let Err(error) = socket.set_recv_buffer_size(buffer) {
        tracing::warn!(%error, buffer, "cannot set the UDP receive buffer");
    }
    if let Err(error) = socket.set_send_buffer_size(buffer) {
        tracing::warn!(%error, buffer, "cannot set the UDP send buffer");
    }
    tracing::debug!(
        recv = socket.recv_buffer_size().ok(),
        send = socket.send_buffer_size().ok(),
        "UDP socket buffers"
    );
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// TLS 1.3 only, no session tickets, no resumption, no 0-RTT, no address
/// validation tokens: nothing that lets the relay link two connections of
/// the same client (DESIGN §2.3).
fn quic_config(config: &Config, cert: &RelayCert) -> Result<quinn::ServerConfig, StartError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.clone()], cert.key.clone_key())
        .map_err(|e| StartError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut validation = quinn::ValidationTokenConfig::default();
    validation.sent(0);
    server.validation_token_config(validation);
    server.transport_config(Arc::new(transport_config(config)?));
    Ok(server)
}

fn transport_config(config: &Config) -> Result<quinn::TransportConfig, StartError> {
    let mut transport = quinn::TransportConfig::default();
    // One long-lived stream per connection carries everything.
    transport.max_concurrent_bidi_streams(1u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    let idle = Duration::from_secs(config.limits.idle_timeout_secs.max(1));
    transport.max_idle_timeout(Some(
        idle.try_into()
            .map_err(|_| StartError::Tls("idle_timeout_secs is too large".into()))?,
    ));
    // Windows sized for one in-flight fetch page; small windows keep the
    // memory of many idle connections low.
    transport.stream_receive_window((config.limits.max_frame * 4).into());
    transport.receive_window((config.limits.max_frame * 8).into());
    transport.send_window(u64::from(config.limits.max_fetch_bytes) * 4);
    Ok(transport)
}

async fn accept_loop<S: Storage>(
    endpoint: quinn::Endpoint,
    relay: Arc<Relay<S>>,
    slots: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut handlers = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(_) = handlers.join_next(), if !handlers.is_empty() => {}
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    incoming.refuse();
                    continue;
                };
                let relay = relay.clone();
                let shutdown = shutdown.clone();
                // The hello timeout runs from the first packet, not from the
                // end of the handshake: a peer that sends one Initial and
                // stalls holds a connection slot, and used to hold it for
                // the whole idle timeout (found by `tests/tests/relay_flood.rs`).
                // Dropping the handshake closes the connection.
                let hello_deadline = tokio::time::Instant::now()
                    + Duration::from_millis(relay.limits.hello_timeout_ms);
                // Accepted here, not in the task: the task would keep room
                // for the 384-byte `Incoming` it captured for the whole
                // connection (a heap profile of idle connections).
                let Ok(connecting) = incoming.accept() else { continue };
                handlers.spawn(async move {
                    let Ok(Ok(conn)) = tokio::time::timeout_at(hello_deadline, connecting).await
                    else {
                        return;
                    };
                    Stats::bump(&relay.stats.connections, 1);
                    Stats::bump(&relay.stats.open_connections, 1);
                    connection::serve(conn, relay.clone(), shutdown, hello_deadline).await;
                    relay.stats.open_connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    drop(permit);
                });
            }
        }
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while handlers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = handlers.len(),
            "connections did not finish in time; closing them"
        );
        handlers.shutdown().await;
    }
}

/// Runs `tick` every `every` until shutdown.
async fn every<F: Future<Output = ()>>(
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut tick: impl FnMut() -> F,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        tick().await;
    }
}

async fn purge_loop<S: Storage>(
    relay: Arc<Relay<S>>,
    period: Duration,
    shutdown: watch::Receiver<bool>,
) {
    every(period, shutdown, || {
        let relay = relay.clone();
        async move {
            let purged = {
                let relay = relay.clone();
                tokio::task::spawn_blocking(move || relay.purge_expired()).await
            };
            let metrics = &relay.metrics;
            match purged {
                Ok(Ok(purged)) => {
                    Metrics::bump(&metrics.purge_runs, 1);
                    if purged > 0 {
                        tracing::info!(purged, "expired blobs purged");
                    }
                }
                Ok(Err(error)) => {
                    Metrics::bump(&metrics.purge_failures, 1);
                    tracing::error!(%error, "TTL purge failed");
                }
                Err(error) => {
                    Metrics::bump(&metrics.purge_failures, 1);
                    tracing::error!(%error, "TTL purge task failed");
                }
            }
        }
    })
    .await;
}

async fn stats_loop<S: Storage>(
    relay: Arc<Relay<S>>,
    period: Duration,
    shutdown: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    every(period, shutdown, || {
        let s = relay.stats();
        // Counts only: never a mailbox, key or address.
        tracing::info!(
            open_connections = s.open_connections.load(Relaxed),
            queued_bytes = s.queued_bytes.load(Relaxed),
            connections = s.connections.load(Relaxed),
            puts = s.puts.load(Relaxed),
            fetches = s.fetches.load(Relaxed),
            pushes = s.pushes.load(Relaxed),
            acked = s.acked.load(Relaxed),
            refused = s.refused.load(Relaxed),
            rate_pauses = s.rate_pauses.load(Relaxed),
            purged = s.purged.load(Relaxed),
            mailboxes = relay.storage().mailbox_count(),
            stored_bytes = relay.storage().total_bytes(),
            flushes = relay.flush_count(),
            "relay stats"
        );
        std::future::ready(())
    })
    .await;
}
