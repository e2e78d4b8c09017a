//! `sotto-relay`: the one thing a team installs on a server.
//!
//! It stores and forwards opaque, bucket-sized blobs under mailbox IDs that
//! rotate every epoch, and keeps owner-signed directory slots. It never
//! parses a blob, never stores who connected, and logs counts, not people.
//!
//! Module map:
//! - [`server`](Server): QUIC endpoint, accept loop, purge and stats tasks,
//!   graceful shutdown. `connection`: the per-connection task (reader,
//!   writer, subscription pushers). `session`: the per-connection protocol
//!   state machine, free of I/O.
//! - `ops/`: one module per request kind (`hello`, `put`, `mailbox` for
//!   fetch/ack/subscribe, `slot`, `admin` for bootstrap/mint/revoke,
//!   `register`, `device` for what a member's devices do without the admin
//!   (mint a registration for a new device, revoke a device by its
//!   revocation secret), `tokens` for issuance, the signed key and
//!   redemption), each `parse` then apply.
//! - [`Tokens`]: anonymous access (DESIGN §7): the issuer key, the VOPRF
//!   key schedule, the shared token state. [`TokenConfig`] sets it up.
//! - [`Relay`]: state shared by connections. `commit`: group commit and the
//!   durable watermark. `hub`: subscriptions, their wake-ups and
//!   bounded queues of live blobs.
//! - [`storage`]: the [`Storage`] trait, [`SledStorage`] (default) and
//!   [`MemoryStorage`].
//! - [`Config`] / [`Limits`]: every limit, with defaults. [`RelayCert`]:
//!   the persistent self-signed certificate clients pin. `bootstrap`: the
//!   one-time admin code. [`Clock`]: injected time.
//!
//! With the `test-support` feature (this repository's tests, benches and
//! fuzz targets only), `testing` (a relay on loopback in a temp dir) and
//! `fuzzing` (the sans-IO session over memory storage, and the checks the
//! fuzz targets share) are public too. They are not part of the API.

mod audit;
pub mod backup;
mod bootstrap;
mod cert;
mod clock;
mod commit;
mod config;
mod connection;
#[cfg(unix)]
pub mod control;
#[cfg(feature = "test-support")]
pub mod fuzzing;
pub mod health;
mod hub;
pub mod logging;
mod metrics;
mod metrics_http;
mod ops;
mod rate;
mod refusal;
mod relay;
pub mod schema;
mod server;
mod session;
pub mod storage;
#[cfg(feature = "test-support")]
pub mod testing;
mod tokens;

pub use audit::{
    AuditCounts, AuditError, AuditMailbox, AuditReport, BlobSummary, ExpirySummary, FileEntry,
    MailboxPrefix, SizeCount, SizeHistogram, SlotSummary, audit,
};
pub use backup::{BackupError, BackupSource, BackupSummary, VerifyReport};
pub use bootstrap::{PREFIX as BOOTSTRAP_PREFIX, read as read_bootstrap_code};
pub use cert::{RELAY_SERVER_NAME, RelayCert, fingerprint};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    Config, ConfigError, DEFAULT_PORT, Engine, Limits, StorageConfig, TokenConfig, default_data_dir,
};
pub use connection::OUT_BYTES;
pub use logging::{LogFormat, LogOptions};
pub use metrics::{Metrics, RefusalReason};
pub use refusal::Refusal;
pub use relay::{Relay, Stats};
pub use schema::{SCHEMA_VERSION, SchemaError};
pub use server::{Server, StartError};
pub use storage::{FjallStorage, MemoryStorage, SledStorage, Storage};
pub use tokens::Tokens;
