//! Shared support for sotto's cross-crate tests: real relays on loopback
//! (`sotto_relay::testing::TestRelay`), real clients over real sled stores
//! in temp dirs, all on one manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use sotto_core::{Client, Clock, Engine, KeySource, RelayAddr, SledStore, Store};
use sotto_relay::ManualClock;
pub use sotto_relay::testing::{T0, TestRelay};

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
