//! Relay configuration: every limit is explicit, configurable, and has a
//! safe default, so `sotto-relay` runs with no configuration at all.
//!
//! A TOML file (`--config FILE`) may set any field; command-line flags
//! override the file. Unknown keys are an error, so a typo never silently
//! leaves a limit at its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sotto_proto::{Bucket, PROTOCOL_MAX_FRAME, Ttl};

use crate::logging::LogFormat;

/// Default UDP port.
pub const DEFAULT_PORT: u16 = 7443;

/// Limits the relay enforces, each with a typed error frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame a client may send, in bytes (a 64 KiB put plus headers
    /// fits in the default).
    pub max_frame: u32,
    /// Blob sizes accepted; each must be a bucket size (1024, 4096, 16384, 65536).
    pub blob_sizes: Vec<u32>,
    /// Longest TTL a sender may ask for; one of the protocol's TTLs
    /// (3600, 86400, 604800, 1209600: [`sotto_proto::Ttl`]).
    pub max_ttl_secs: u32,
    /// TTL when the sender asks for none; one of the protocol's TTLs.
    pub default_ttl_secs: u32,
    /// Blobs one mailbox may hold.
    pub mailbox_max_blobs: u64,
    /// Bytes one mailbox may hold.
    pub mailbox_max_bytes: u64,
    /// Bytes of blobs and slots the relay stores in total; above it puts are
    /// refused while fetch and ack keep working.
    pub disk_budget_bytes: u64,
    /// Concurrent connections.
    pub max_connections: u32,
    /// Sustained requests per second per connection.
    pub requests_per_sec: u32,
    /// Burst of requests per connection above the sustained rate.
    pub request_burst: u32,
    /// Consecutive rate-limited requests after which the connection is closed.
    pub max_rate_violations: u32,
    /// Blobs in one fetch page (and bytes, see `max_fetch_bytes`).
    pub max_fetch_blobs: u32,
    /// Bytes of blobs in one fetch page.
    pub max_fetch_bytes: u32,
    /// Mailbox subscriptions per connection.
    pub max_subscriptions: u32,
    /// Puts, acks and slot writes per connection waiting for their flush.
    pub max_in_flight: u32,
    /// Largest directory slot value.
    pub max_slot_bytes: u32,
    /// Time a new connection has, from its first packet, to finish the
    /// handshake, open its stream and say hello.
    pub hello_timeout_ms: u64,
    /// A connection silent for this long is closed (clients keep alive).
    pub idle_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 72 * 1024,
            blob_sizes: Bucket::ALL.iter().map(|b| b.size() as u32).collect(),
            max_ttl_secs: Ttl::MAX.secs(),
            default_ttl_secs: Ttl::MAX.secs(),
            mailbox_max_blobs: 20_000,
            mailbox_max_bytes: 512 * 1024 * 1024,
            disk_budget_bytes: 20 * 1024 * 1024 * 1024,
            max_connections: 20_000,
            requests_per_sec: 5_000,
            request_burst: 10_000,
            max_rate_violations: 1_000,
            max_fetch_blobs: 512,
            max_fetch_bytes: 512 * 1024,
            max_subscriptions: 64,
            max_in_flight: 1_024,
            max_slot_bytes: 64 * 1024,
            hello_timeout_ms: 10_000,
            idle_timeout_secs: 60,
        }
    }
}

/// The limits in force, which a reload (SIGHUP) may replace while
/// connections run. Reads go through `Deref`, so code reads
/// `relay.limits.mailbox_max_blobs` as before; each read sees the limits of
/// the moment.
///
/// Before any reload the start-up limits are read in place at no cost. A
/// reload leaks its new `Limits` (a few hundred bytes): the previous ones
/// may still be borrowed by requests in progress, and leaking is what
/// lets a plain `&Limits` be handed out without a lock guard and without
/// unsafe code. Reloads are rare operator actions, so this stays small.
pub(crate) struct LiveLimits {
    initial: Limits,
    reloaded: std::sync::RwLock<Option<&'static Limits>>,
    any_reload: std::sync::atomic::AtomicBool,
}

impl LiveLimits {
    /// `limits`, until replaced.
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            initial: limits,
            reloaded: std::sync::RwLock::new(None),
            any_reload: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Puts `limits` in force for every read from now on.
    pub(crate) fn replace(&self, limits: Limits) {
        let leaked: &'static Limits = Box::leak(Box::new(limits));
        *self
            .reloaded
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(leaked);
        self.any_reload
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl std::ops::Deref for LiveLimits {
    type Target = Limits;

    fn deref(&self) -> &Limits {
        if !self.any_reload.load(std::sync::atomic::Ordering::Acquire) {
            return &self.initial;
        }
        let reloaded = *self
            .reloaded
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        reloaded.unwrap_or(&self.initial)
    }
}

impl std::fmt::Debug for LiveLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Limits::fmt(self, f)
    }
}

/// A configuration the relay refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid limit: {0}")]
    Invalid(String),
}

/// Everything the relay needs to start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Data directory (database, certificate, bootstrap code).
    pub data_dir: PathBuf,
    /// Address clients should use, as `host:port` (printed, put in invites).
    pub public_addr: Option<String>,
    /// Seconds between TTL purge passes.
    pub purge_interval_secs: u64,
    /// Seconds between stats log lines (counts only).
    pub stats_interval_secs: u64,
    /// Receive and send buffer asked for the relay's one UDP socket, in
    /// bytes. Every client shares it, so the OS default (about 208 KiB on
    /// Linux) overflows under bursts and each lost datagram costs a QUIC
    /// retransmission timeout. Linux caps it at `net.core.rmem_max` /
    /// `wmem_max`. 0 leaves the OS default.
    pub udp_buffer_bytes: u32,
    /// Log lines as text (the default) or JSON (for log shippers).
    pub log_format: LogFormat,
    /// Also log the events of the relay's dependencies (QUIC, TLS), which
    /// carry peer IP addresses. Off by default: the relay's logs then name
    /// no one whatever `SOTTO_LOG` says (see `logging`).
    pub log_peer_addresses: bool,
    /// TCP address of the HTTP listener serving Prometheus metrics
    /// (`GET /metrics`) and a health check (`GET /healthz`); none when
    /// unset. Keep it on loopback or a private network.
    pub metrics_listen: Option<SocketAddr>,
    /// Limits.
    pub limits: Limits,
    /// Anonymous access tokens.
    pub tokens: TokenConfig,
    /// The storage engine.
    pub storage: StorageConfig,
}

/// The storage engine (`[storage]`), chosen at start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `"sled"` (the default: `DATA_DIR/db`) or `"fjall"` (`DATA_DIR/fjall`,
    /// an LSM tree with a journal). A data directory holds one engine's
    /// database; the relay refuses to start with the other engine
    /// configured rather than serve an empty store.
    pub engine: Engine,
}

/// The storage engines the relay can run on (issue 23 item 4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// sled 0.34: a B-tree; blobs in per-mailbox chunks.
    #[default]
    Sled,
    /// fjall 3: an LSM tree with a journal; one record per blob, an ack is
    /// a tombstone.
    Fjall,
}

impl Engine {
    /// The database directory of this engine in a data directory.
    pub fn db_dir(self) -> &'static str {
        match self {
            Engine::Sled => "db",
            Engine::Fjall => crate::storage::FJALL_DIR,
        }
    }

    /// The engine's name as the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Fjall => "fjall",
        }
    }
}

/// Anonymous access tokens (DESIGN §7): who must present one, how often the
/// token key rotates, and how many tokens one issuance account gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// Refuse every request but bootstrap, registration, issuance, token
    /// key and ping on connections opened without a valid access token.
    pub require_tokens: bool,
    /// Length of a token key period in seconds; a key issues during its own
    /// period and is accepted until the end of the next one.
    pub token_period_secs: u64,
    /// Extra seconds a key is accepted after that, for clients' clock skew.
    pub token_grace_secs: u64,
    /// Tokens one issuance account may obtain per period.
    pub tokens_per_period: u32,
    /// Most tokens one issuance request may ask for.
    pub max_issue_batch: u32,
    /// Most registration tokens one mint request may create.
    pub max_mint: u32,
    /// Let a registered device mint a registration token for another
    /// device of its member (`AccountRequest`), so members add their own
    /// devices without the admin. Off: only the admin's device invites
    /// give a new device relay access.
    pub self_service_devices: bool,
    /// Registration tokens one issuance account may mint for other devices,
    /// over its whole life (a stolen device key cannot mint without end).
    pub max_device_registrations: u32,
    /// Longest a registration token a device mints stays valid; a longer
    /// expiry asked for is cut to it (then rounded up to the token period).
    pub max_device_registration_secs: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            require_tokens: true,
            token_period_secs: 24 * 3600,
            token_grace_secs: 600,
            tokens_per_period: 500,
            max_issue_batch: 500,
            max_mint: 1_000,
            self_service_devices: true,
            max_device_registrations: 10,
            max_device_registration_secs: 7 * 24 * 3600,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            data_dir: default_data_dir(),
            public_addr: None,
            purge_interval_secs: 60,
            stats_interval_secs: 300,
            udp_buffer_bytes: 4 * 1024 * 1024,
            log_format: LogFormat::Text,
            log_peer_addresses: false,
            metrics_listen: None,
            limits: Limits::default(),
            tokens: TokenConfig::default(),
            storage: StorageConfig::default(),
        }
    }
}

/// The platform's data directory joined with `sotto-relay`: on Linux
/// `$XDG_DATA_HOME/sotto-relay` (an absolute `XDG_DATA_HOME` only, as the
/// XDG spec says), else `~/.local/share/sotto-relay`; `./sotto-relay-data`
/// with no home directory at all.
pub fn default_data_dir() -> PathBuf {
    directories::BaseDirs::new()
        .map(|dirs| dirs.data_dir().join("sotto-relay"))
        .unwrap_or_else(|| PathBuf::from("sotto-relay-data"))
}

impl Config {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that limits are coherent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.blob_sizes.is_empty() {
            return Err(ConfigError::Invalid("blob_sizes may not be empty".into()));
        }
        for size in &l.blob_sizes {
            if Bucket::of_len(*size as usize).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "blob size {size} is not a bucket size (1024, 4096, 16384, 65536)"
                )));
            }
        }
        let largest = l.blob_sizes.iter().max().copied().unwrap_or(0);
        if (l.max_frame as usize) < largest as usize + 256
            || l.max_frame as usize > PROTOCOL_MAX_FRAME
        {
            return Err(ConfigError::Invalid(format!(
                "max_frame must be between the largest blob size plus 256 ({}) and {PROTOCOL_MAX_FRAME}",
                largest + 256
            )));
        }
        for (name, secs) in [
            ("max_ttl_secs", l.max_ttl_secs),
            ("default_ttl_secs", l.default_ttl_secs),
        ] {
            Ttl::from_secs(secs).map_err(|e| ConfigError::Invalid(format!("{name}: {e}")))?;
        }
        if l.default_ttl_secs > l.max_ttl_secs {
            return Err(ConfigError::Invalid(
                "default_ttl_secs must be at most max_ttl_secs".into(),
            ));
        }
        if (l.max_fetch_bytes as usize) < largest as usize
            || l.max_fetch_bytes as usize > PROTOCOL_MAX_FRAME - 64 * 1024
        {
            return Err(ConfigError::Invalid(format!(
                "max_fetch_bytes must be between the largest blob size and {}",
                PROTOCOL_MAX_FRAME - 64 * 1024
            )));
        }
        let t = &self.tokens;
        if t.token_period_secs < 60 || t.token_period_secs > 366 * 24 * 3600 {
            return Err(ConfigError::Invalid(
                "token_period_secs must be between 60 and one year".into(),
            ));
        }
        if t.token_grace_secs > t.token_period_secs {
            return Err(ConfigError::Invalid(
                "token_grace_secs may not exceed token_period_secs".into(),
            ));
        }
        if t.max_device_registration_secs < 60 {
            return Err(ConfigError::Invalid(
                "max_device_registration_secs must be at least 60".into(),
            ));
        }
        if t.max_issue_batch > u32::from(u16::MAX) {
            return Err(ConfigError::Invalid(
                "max_issue_batch must be at most 65535".into(),
            ));
        }
        for (name, value) in [
            ("tokens_per_period", t.tokens_per_period),
            ("max_issue_batch", t.max_issue_batch),
            ("max_mint", t.max_mint),
            ("max_device_registrations", t.max_device_registrations),
            ("max_connections", l.max_connections),
            ("requests_per_sec", l.requests_per_sec),
            ("request_burst", l.request_burst),
            ("max_fetch_blobs", l.max_fetch_blobs),
            ("max_in_flight", l.max_in_flight),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn a_file_may_set_any_limit_and_typos_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\n[limits]\nmailbox_max_blobs = 5\n",
        )
        .unwrap();
        let config = Config::from_file(&path).unwrap();
        assert_eq!(config.limits.mailbox_max_blobs, 5);
        assert_eq!(config.listen.port(), 9000);
        std::fs::write(&path, "[limits]\nmailbox_max_blob = 5\n").unwrap();
        let error = Config::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("mailbox_max_blob"), "{error}");
    }

    #[test]
    fn self_service_devices_are_on_by_default_and_can_be_turned_off() {
        assert!(Config::default().tokens.self_service_devices);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "[tokens]\nself_service_devices = false\nmax_device_registrations = 3\n",
        )
        .unwrap();
        let config = Config::from_file(&path).unwrap();
        assert!(!config.tokens.self_service_devices);
        assert_eq!(config.tokens.max_device_registrations, 3);
        std::fs::write(&path, "[tokens]\nmax_device_registrations = 0\n").unwrap();
        assert!(Config::from_file(&path).is_err());
    }

    /// The commented default config the Debian package installs names
    /// every setting, each with its true default: uncommented, it loads
    /// and equals the built-in defaults.
    #[test]
    fn the_packaged_config_lists_every_key_with_its_default() {
        let text = include_str!("../../packaging/relay.toml");
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with(|c: char| c.is_ascii_lowercase())
                        && rest.contains(" = ") =>
                {
                    rest
                }
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let mut parsed: Config = toml::from_str(&uncommented).unwrap();
        assert_eq!(
            parsed.metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9477)))
        );
        assert_eq!(parsed.public_addr.as_deref(), Some("chat.example.org:7443"));
        assert_eq!(parsed.data_dir, PathBuf::from("/var/lib/sotto-relay"));
        parsed.metrics_listen = None;
        parsed.public_addr = None;
        let expected = Config {
            data_dir: parsed.data_dir.clone(),
            ..Config::default()
        };
        assert_eq!(parsed, expected);
        // Every key of the schema is there (a new one must be added).
        let schema = toml::Value::try_from(Config::default()).unwrap();
        let mut keys = Vec::new();
        for (key, value) in schema.as_table().unwrap() {
            match value.as_table() {
                Some(section) => keys.extend(section.keys().cloned()),
                None => keys.push(key.clone()),
            }
        }
        keys.extend(["public_addr".to_owned(), "metrics_listen".to_owned()]);
        for key in keys {
            assert!(
                text.contains(&format!("\n# {key} = ")),
                "packaging/relay.toml does not list {key}"
            );
        }
        // As shipped, everything is commented out: the defaults apply.
        let shipped: Config = toml::from_str(text).unwrap();
        assert_eq!(shipped.limits, Limits::default());
    }

    #[test]
    fn live_limits_read_the_newest_limits() {
        let live = LiveLimits::new(Limits::default());
        assert_eq!(live.mailbox_max_blobs, Limits::default().mailbox_max_blobs);
        live.replace(Limits {
            mailbox_max_blobs: 3,
            ..Limits::default()
        });
        assert_eq!(live.mailbox_max_blobs, 3);
        live.replace(Limits {
            mailbox_max_blobs: 4,
            ..Limits::default()
        });
        assert_eq!(live.mailbox_max_blobs, 4);
    }

    #[test]
    fn ttls_must_be_of_the_protocols_set() {
        let mut config = Config::default();
        config.limits.max_ttl_secs = 86_400;
        config.limits.default_ttl_secs = 3_600;
        config.validate().unwrap();
        config.limits.default_ttl_secs = 7_200;
        assert!(config.validate().is_err());
        config.limits.default_ttl_secs = 3_600;
        config.limits.max_ttl_secs = 100_000;
        assert!(config.validate().is_err());
        config.limits.max_ttl_secs = 3_600;
        config.limits.default_ttl_secs = 86_400;
        assert!(config.validate().is_err(), "default above the maximum");
    }

    #[test]
    fn a_blob_size_that_is_not_a_bucket_is_refused() {
        let mut config = Config::default();
        config.limits.blob_sizes = vec![1000];
        assert!(config.validate().is_err());
    }
}
