//! Test support shared by the relay's own tests and the cross-crate suite:
//! a real relay on 127.0.0.1:0 over sled in a temp dir, with a manual clock.
//! Not part of the relay's API.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::{Config, ManualClock, RelayCert, Server, SledStorage};

/// A fixed, minute- and hour-aligned start time (an epoch boundary).
pub const T0: u64 = 500_000 * 3600;

/// A relay on loopback over sled in a temp dir, with a manual clock.
pub struct TestRelay {
    /// The running server (`None` only while restarting).
    pub server: Option<Server<SledStorage>>,
    /// The data directory.
    pub dir: tempfile::TempDir,
    /// The relay's clock; tests move it.
    pub clock: ManualClock,
    /// The configuration it runs with.
    pub config: Config,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate fingerprint.
    pub fingerprint: [u8; 32],
}

impl TestRelay {
    /// A relay with default limits.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A relay with adjusted configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_clock(ManualClock::at_secs(T0), adjust).await
    }

    /// A relay on a given clock (shared with clients in cross-crate tests).
    pub async fn start_with_clock(clock: ManualClock, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("test: temp dir");
        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        // Tests of other features run without tokens; token tests turn
        // them on with `start_with(|c| c.tokens.require_tokens = true)`.
        config.tokens.require_tokens = false;
        adjust(&mut config);
        let server = Self::launch(&config, &clock);
        Self {
            addr: server.local_addr(),
            fingerprint: server.fingerprint(),
            server: Some(server),
            dir,
            clock,
            config,
        }
    }

    fn launch(config: &Config, clock: &ManualClock) -> Server<SledStorage> {
        let (cert, first_start) =
            RelayCert::load_or_create(&config.data_dir).expect("test: certificate");
        crate::bootstrap::create_if_first_start(&config.data_dir, first_start)
            .expect("test: bootstrap code");
        let storage = Arc::new(SledStorage::open(&config.data_dir.join("db")).expect("test: sled"));
        Server::start_with(config, storage, Arc::new(clock.clone()), &cert)
            .expect("test: relay start")
    }

    /// The running server.
    pub fn server(&self) -> &Server<SledStorage> {
        self.server.as_ref().expect("test: the relay is running")
    }

    /// The unused bootstrap code, if any.
    pub fn bootstrap_code(&self) -> Option<String> {
        crate::bootstrap::read(&self.config.data_dir).expect("test: bootstrap code file")
    }

    /// Graceful shutdown, then a new relay on the same data dir and, when
    /// the port is free again, the same address.
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let mut config = self.config.clone();
        config.listen = self.addr;
        if std::net::UdpSocket::bind(self.addr).is_err() {
            config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        }
        let server = Self::launch(&config, &self.clock);
        self.addr = server.local_addr();
        self.server = Some(server);
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}
