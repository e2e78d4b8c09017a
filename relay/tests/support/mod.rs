//! Shared setup for the relay's integration tests: real relays on
//! 127.0.0.1:0 with real sled databases in temp dirs, real QUIC clients.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use sotto_core::{MailboxSigner, RelayAddr, RelayConnection};
use sotto_proto::{Blob, Bucket, MailboxId};
use sotto_relay::{Config, ManualClock, RelayCert, Server, SledStorage};

/// A mailbox owner. Any ed25519 key is a valid "blinded key" to the relay,
/// which only checks the hash and the signature.
pub struct Owner(pub SigningKey);

impl Owner {
    pub fn new(seed: u8) -> Self {
        Self(SigningKey::from_bytes(&[seed; 32]))
    }

    pub fn mailbox(&self) -> MailboxId {
        MailboxId::for_key_bytes(self.0.verifying_key().as_bytes())
    }
}

impl MailboxSigner for Owner {
    fn mailbox_id(&self) -> MailboxId {
        self.mailbox()
    }
    fn blinded_key(&self) -> [u8; 32] {
        *self.0.verifying_key().as_bytes()
    }
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// A blob of `bucket` size whose bytes name it: `tag` then fill.
pub fn tagged_blob(bucket: Bucket, tag: u64) -> Blob {
    let mut bytes = vec![(tag % 251) as u8; bucket.size()];
    bytes[..8].copy_from_slice(&tag.to_be_bytes());
    Blob::new(Bytes::from(bytes)).unwrap()
}

pub fn blob(tag: u64) -> Blob {
    tagged_blob(Bucket::K1, tag)
}

pub fn tag_of(blob: &[u8]) -> u64 {
    u64::from_be_bytes(blob[..8].try_into().unwrap())
}

/// A relay on loopback over sled in a temp dir, with a manual clock.
pub struct TestRelay {
    pub server: Option<Server<SledStorage>>,
    pub dir: tempfile::TempDir,
    pub clock: ManualClock,
    pub config: Config,
    pub addr: RelayAddr,
}

/// A fixed, minute-aligned start time.
pub const T0: u64 = 30_000_000 * 60;

impl TestRelay {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        adjust(&mut config);
        let clock = ManualClock::at_secs(T0);
        let (server, addr) = Self::launch(&config, &clock).await;
        Self {
            server: Some(server),
            dir,
            clock,
            config,
            addr,
        }
    }

    async fn launch(config: &Config, clock: &ManualClock) -> (Server<SledStorage>, RelayAddr) {
        let (cert, _) = RelayCert::load_or_create(&config.data_dir).unwrap();
        let storage = Arc::new(SledStorage::open(&config.data_dir.join("db")).unwrap());
        let server = Server::start_with(config, storage, Arc::new(clock.clone()), &cert).unwrap();
        let addr = RelayAddr {
            addr: server.local_addr(),
            fingerprint: server.fingerprint(),
        };
        (server, addr)
    }

    pub fn server(&self) -> &Server<SledStorage> {
        self.server.as_ref().unwrap()
    }

    pub async fn connect(&self) -> RelayConnection {
        RelayConnection::connect(&self.addr, None).await.unwrap()
    }

    /// Graceful shutdown, then a new relay on the same data dir (and port,
    /// if it is free again; the address is updated either way).
    pub async fn restart(&mut self) {
        self.server.take().unwrap().shutdown().await;
        let mut config = self.config.clone();
        config.listen = self.addr.addr;
        let (server, addr) = match tokio::net::UdpSocket::bind(self.addr.addr).await {
            Ok(probe) => {
                drop(probe);
                Self::launch(&config, &self.clock).await
            }
            Err(_) => {
                config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
                Self::launch(&config, &self.clock).await
            }
        };
        self.server = Some(server);
        self.addr = addr;
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// Fetches every blob of `owner`'s mailbox after `after`, following pages.
pub async fn fetch_all(conn: &RelayConnection, owner: &Owner, mut after: u64) -> Vec<(u64, Bytes)> {
    let mut all = Vec::new();
    loop {
        let page = conn.fetch(owner, after, 0).await.unwrap();
        for blob in &page.blobs {
            after = blob.seq;
            all.push((blob.seq, blob.blob.clone()));
        }
        if !page.more {
            return all;
        }
    }
}
