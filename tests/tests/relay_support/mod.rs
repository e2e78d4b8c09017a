//! Shared setup for the relay's integration tests (`tests/tests/relay*.rs`;
//! they drive the relay through client-core's transport, so they live in
//! this crate and the relay never depends on client-core): real relays on
//! 127.0.0.1:0 with real sled databases in temp dirs, real QUIC clients.
#![allow(dead_code, unused_imports, clippy::unwrap_used, unreachable_pub)]

use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use sotto_core::{MailboxSigner, RelayAddr, RelayConnection};
use sotto_proto::{Blob, Bucket, MailboxId};

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

pub use sotto_relay::testing::{T0, TestRelay};

pub fn addr(relay: &TestRelay) -> RelayAddr {
    RelayAddr {
        addr: relay.addr,
        fingerprint: relay.fingerprint,
    }
}

pub async fn connect(relay: &TestRelay) -> RelayConnection {
    RelayConnection::connect(&addr(relay), None).await.unwrap()
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

/// A `sotto-relay` process and where it listens.
pub struct RelayProcess {
    pub child: std::process::Child,
    pub addr: RelayAddr,
}

/// The real `sotto-relay` binary, which cargo builds beside this package's
/// own (`sotto-load`) when the workspace is built or tested as a whole
/// (`cargo test --workspace`, as CI runs). Testing this package alone
/// needs `cargo build -p sotto-relay` first (with `--release` for a
/// release test run).
pub fn relay_bin() -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_sotto-load")).with_file_name("sotto-relay");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p sotto-relay` first, or `cargo test --workspace`",
        path.display()
    );
    path
}

/// Starts the real binary on 127.0.0.1:0 with `data` as its data directory
/// and `config` (TOML) as its configuration file.
pub fn spawn_relay(data: &std::path::Path, config: &str) -> RelayProcess {
    spawn_relay_with_args(data, config, &[])
}

/// [`spawn_relay`] with extra command-line flags.
pub fn spawn_relay_with_args(data: &std::path::Path, config: &str, args: &[&str]) -> RelayProcess {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let config_file = data.join("relay.toml");
    std::fs::write(&config_file, config).unwrap();
    let mut child = Command::new(relay_bin())
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--config")
        .arg(&config_file)
        .args(args)
        .env("SOTTO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut listen, mut fingerprint) = (None, None);
    while listen.is_none() || fingerprint.is_none() {
        let line = lines.next().expect("relay printed its address").unwrap();
        if let Some(addr) = line.strip_prefix("listen: ") {
            listen = Some(addr.parse().unwrap());
        }
        if let Some(hex) = line.strip_prefix("fingerprint: ") {
            fingerprint = Some(hex::decode(hex).unwrap().try_into().unwrap());
        }
    }
    RelayProcess {
        child,
        addr: RelayAddr {
            addr: listen.unwrap(),
            fingerprint: fingerprint.unwrap(),
        },
    }
}

// ------------------------------------------------------------- teams

pub const DAY: u64 = 24 * 3600;

/// A relay that requires access tokens.
pub async fn token_relay() -> TestRelay {
    TestRelay::start_with(|c| c.tokens.require_tokens = true).await
}

/// The key the tests bootstrap relays with.
pub fn admin_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// A bootstrapped relay: its issuer key and the admin's connection.
pub async fn bootstrapped(relay: &TestRelay) -> (ed25519_dalek::VerifyingKey, RelayConnection) {
    let conn = connect(relay).await;
    let code = relay.bootstrap_code().unwrap();
    let issuer = sotto_core::bootstrap(&conn, &code, &admin_key())
        .await
        .unwrap();
    (issuer, conn)
}

/// A connection opened with an access token.
pub async fn with_token(
    relay: &TestRelay,
    token: &sotto_core::AccessToken,
) -> Result<RelayConnection, sotto_core::NetError> {
    RelayConnection::connect(&addr(relay), Some(token.encode())).await
}

/// The relay's error code of a refused result.
pub fn code_of<T>(result: Result<T, sotto_core::NetError>) -> sotto_proto::wire::ErrorCode {
    match result {
        Err(e) => e.code().expect("a typed refusal"),
        Ok(_) => panic!("expected a refusal"),
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Stops the relay and returns its data dir (kept alive) and the path of
/// its sled database, for tests that inspect what it stored.
pub async fn stop_and_keep_db(relay: TestRelay) -> (tempfile::TempDir, std::path::PathBuf) {
    let db = relay.dir.path().join("db");
    let TestRelay { server, dir, .. } = relay;
    if let Some(server) = server {
        server.shutdown().await;
    }
    (dir, db)
}
