//! Shared support for sotto's cross-crate tests: real relays on loopback
//! (`sotto_relay::testing::TestRelay`), real clients over real sled stores
//! in temp dirs, all on one manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use sotto_core::{Client, Clock, Engine, KeySource, RelayAddr, SledStore, Store};
use sotto_proto::{Blob, MailboxId};
use sotto_relay::ManualClock;
use sotto_relay::storage::{FetchPage, FetchRange, Seq, SlotRecord, StoreError, Usage};
pub use sotto_relay::testing::{T0, TestRelay};
use sotto_relay::{SledStorage, Storage};

/// The relay's address as clients pin it.
pub fn relay_addr(relay: &TestRelay) -> RelayAddr {
    RelayAddr {
        addr: relay.addr,
        fingerprint: relay.fingerprint,
    }
}

/// A client clock that reads the relay's manual clock.
pub fn clock_of(clock: &ManualClock) -> Clock {
    let clock = clock.clone();
    Arc::new(move || sotto_relay::Clock::now_millis(&clock))
}

/// Whole teams through `sotto_core::App`, as `team_app.rs` and
/// `devices.rs` drive them.
pub mod teams {
    use std::path::Path;

    use sotto_core::{App, KeySource, RelayTarget};

    use super::{TestRelay, clock_of};

    /// The relay as a team stores it.
    pub fn target(relay: &TestRelay) -> RelayTarget {
        RelayTarget {
            addr: relay.addr.to_string(),
            fingerprint: relay.fingerprint,
        }
    }

    /// The store key of a home: its key file.
    pub fn key(home: &Path) -> KeySource {
        KeySource::key_file_in(home)
    }

    /// A relay that requires anonymous access tokens (the default).
    pub async fn tokens_relay() -> TestRelay {
        TestRelay::start_with(|c| c.tokens.require_tokens = true).await
    }

    /// The admin's device (team "acme", handle "admin") and one joined
    /// device per handle, in homes under `homes`.
    pub async fn team(relay: &TestRelay, homes: &Path, handles: &[&str]) -> (App, Vec<App>) {
        let mut admin = App::create_team(
            &homes.join("admin"),
            key(&homes.join("admin")),
            target(relay),
            &relay.bootstrap_code().unwrap(),
            "acme",
            "admin",
            clock_of(&relay.clock),
        )
        .await
        .unwrap();
        let mut joined = Vec::new();
        for handle in handles {
            joined.push(join(&mut admin, homes, handle, relay).await);
        }
        (admin, joined)
    }

    /// `handle` joins with an invite from `admin`.
    pub async fn join(admin: &mut App, homes: &Path, handle: &str, relay: &TestRelay) -> App {
        let code = admin.invite(handle, 3600).await.unwrap();
        let home = homes.join(handle);
        App::join(&home, key(&home), &code, clock_of(&relay.clock))
            .await
            .unwrap()
    }
}

/// A member's device: a client over a real sled store in a temp dir.
pub struct Member {
    /// The client.
    pub client: Client,
    /// Its home directory.
    pub home: tempfile::TempDir,
    relay: RelayAddr,
    clock: Clock,
}

fn open_store(home: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(SledStore::open(home, KeySource::key_file_in(home)).unwrap())
}

impl Member {
    /// A new device for `handle` using `relay`.
    pub fn new(handle: &str, relay: &TestRelay) -> Self {
        Self::new_at(handle, relay_addr(relay), &relay.clock)
    }

    /// A new device for `handle` using the relay at `relay`.
    pub fn new_at(handle: &str, relay: RelayAddr, clock: &ManualClock) -> Self {
        let home = tempfile::tempdir().unwrap();
        let engine = Engine::create(
            open_store(home.path()),
            handle,
            sotto_relay::Clock::now_secs(clock),
        )
        .unwrap();
        let clock = clock_of(clock);
        Self {
            client: Client::new(engine, relay, clock.clone()),
            home,
            relay,
            clock,
        }
    }

    /// Closes the store and opens the device again from disk, as a restarted
    /// process would.
    pub fn reopen(&mut self) {
        let placeholder = {
            let store: Arc<dyn Store> = Arc::new(sotto_core::MemoryStore::new().unwrap());
            Client::new(
                Engine::create(store, "placeholder", 0).unwrap(),
                self.relay,
                self.clock.clone(),
            )
        };
        let old = std::mem::replace(&mut self.client, placeholder);
        drop(old.into_engine());
        let engine = Engine::open(open_store(self.home.path())).unwrap().unwrap();
        self.client = Client::new(engine, self.relay, self.clock.clone());
    }

    /// Points the client at a relay that moved (after a restart on a new port).
    pub fn set_relay(&mut self, relay: &TestRelay) {
        self.relay = relay_addr(relay);
        self.client.set_relay(self.relay);
    }
}

/// Exchanges contact cards both ways.
pub fn introduce(a: &mut Member, b: &mut Member) {
    let card_a = a.client.engine().export_card();
    let card_b = b.client.engine().export_card();
    a.client.engine_mut().import_card(&card_b).unwrap();
    b.client.engine_mut().import_card(&card_a).unwrap();
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every byte of every file under `dir`, for scans of what a relay stored.
pub fn directory_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(directory_bytes(&path));
        } else {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

/// A relay storage that records every mailbox it is asked about and the
/// size and first byte of every blob put: what a curious relay operator
/// sees.
pub struct Recording {
    inner: SledStorage,
    mailboxes: Mutex<Vec<MailboxId>>,
    puts: Mutex<Vec<(MailboxId, usize, u8)>>,
}

impl Recording {
    /// A real relay on loopback (tokens off) over a recording sled store in
    /// a temp dir; the dir holds its data.
    pub fn start(
        clock: &ManualClock,
    ) -> (
        Arc<Recording>,
        sotto_relay::Server<Recording>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let recording = Arc::new(Recording {
            inner: SledStorage::open(&dir.path().join("db")).unwrap(),
            mailboxes: Mutex::default(),
            puts: Mutex::default(),
        });
        let config = sotto_relay::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_owned(),
            tokens: sotto_relay::TokenConfig {
                require_tokens: false,
                ..Default::default()
            },
            ..Default::default()
        };
        let (cert, _) = sotto_relay::RelayCert::load_or_create(dir.path()).unwrap();
        let server = sotto_relay::Server::start_with(
            &config,
            recording.clone(),
            Arc::new(clock.clone()),
            &cert,
        )
        .unwrap();
        (recording, server, dir)
    }

    /// Every mailbox put to or fetched from, in order.
    pub fn mailboxes(&self) -> Vec<MailboxId> {
        self.mailboxes.lock().unwrap().clone()
    }

    /// Every blob put: its mailbox, size and first (version) byte.
    pub fn puts(&self) -> Vec<(MailboxId, usize, u8)> {
        self.puts.lock().unwrap().clone()
    }
}

impl Storage for Recording {
    fn append(&self, m: &MailboxId, b: &Blob, now: u64, e: u64) -> Result<Seq, StoreError> {
        self.mailboxes.lock().unwrap().push(*m);
        let first = b.as_bytes().first().copied().unwrap_or(0);
        self.puts
            .lock()
            .unwrap()
            .push((*m, b.as_bytes().len(), first));
        self.inner.append(m, b, now, e)
    }
    fn fetch(&self, m: &MailboxId, r: FetchRange) -> Result<FetchPage, StoreError> {
        self.mailboxes.lock().unwrap().push(*m);
        self.inner.fetch(m, r)
    }
    fn delete(&self, m: &MailboxId, s: &[Seq]) -> Result<u32, StoreError> {
        self.inner.delete(m, s)
    }
    fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        self.inner.purge_expired(now, limit)
    }
    fn mailbox_usage(&self, m: &MailboxId) -> Usage {
        self.inner.mailbox_usage(m)
    }
    fn total_bytes(&self) -> u64 {
        self.inner.total_bytes()
    }
    fn mailbox_count(&self) -> usize {
        self.inner.mailbox_count()
    }
    fn slot_get(&self, id: &sotto_proto::SlotId) -> Result<Option<SlotRecord>, StoreError> {
        self.inner.slot_get(id)
    }
    fn slot_put(&self, id: &sotto_proto::SlotId, r: &SlotRecord) -> Result<(), StoreError> {
        self.inner.slot_put(id, r)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}
