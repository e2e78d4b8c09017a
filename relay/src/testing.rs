//! Test support shared by the relay's own tests and the cross-crate suite:
//! a real relay on 127.0.0.1:0 over sled in a temp dir, with a manual clock.
//! Not part of the relay's API: built only with the `test-support` feature.

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

/// The relay's token paths without the network, for benchmarks: one
/// registered issuance account, a fixed challenge, any storage.
pub struct TokenPaths<S: crate::Storage> {
    relay: crate::Relay<S>,
    /// The challenge issuance requests must sign.
    pub challenge: sotto_proto::Challenge,
}

impl<S: crate::Storage> TokenPaths<S> {
    /// Token paths over `storage`, with `account_key` registered and an
    /// unlimited budget.
    pub fn new(storage: Arc<S>, account_key: [u8; 32]) -> Result<Self, crate::Refusal> {
        let tokens = crate::TokenConfig {
            tokens_per_period: u32::MAX,
            ..crate::TokenConfig::default()
        };
        let relay = crate::Relay::new(
            storage,
            crate::Limits::default(),
            Arc::new(ManualClock::at_secs(T0)),
        )
        .with_tokens(crate::Tokens::ephemeral(tokens));
        let minted = relay.mint(1, T0 + 3600)?;
        let secret = minted
            .registration_tokens
            .first()
            .cloned()
            .unwrap_or_default();
        let registration =
            crate::ops::register::Registration::parse(&sotto_proto::wire::Register {
                registration_token: secret,
                account_key: account_key.to_vec().into(),
                revocation_hash: Default::default(),
            })?;
        relay.register(&registration)?;
        Ok(Self {
            relay,
            challenge: sotto_proto::Challenge::from_bytes([7; 32]),
        })
    }

    /// The relay's issuer key.
    pub fn issuer_key(&self) -> [u8; 32] {
        self.relay.issuer_key()
    }

    /// Parses, checks and evaluates one issuance request.
    pub fn issue(
        &self,
        request: &sotto_proto::wire::IssueTokens,
    ) -> Result<sotto_proto::wire::IssueOk, crate::Refusal> {
        let issuance = crate::ops::tokens::Issuance::parse(request, &self.challenge, u32::MAX)?;
        self.relay.issue(&issuance)
    }

    /// Redeems one encoded access token, as `Hello` does.
    pub fn redeem(&self, token: &[u8]) -> Result<(), crate::Refusal> {
        self.relay.redeem(token)
    }
}
