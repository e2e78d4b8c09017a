//! The relay's log: what gets written, and in which format.
//!
//! The relay's own events never carry a peer address, a mailbox ID, a key
//! or a token (they log counts). Its dependencies are another matter:
//! quinn, quinn-udp and rustls log connection events at debug and trace
//! level, and some carry the peer's IP address and port (and quinn-udp's
//! send errors name the destination even at `warn`). So whatever
//! `SOTTO_LOG` asks for, only events of the relay's own code pass; the
//! dependencies' events are dropped before they are formatted, unless the
//! operator asks for them explicitly with `--log-peer-addresses`
//! (`log_peer_addresses = true`), for debugging a connection problem on a
//! relay whose users know.
//!
//! Two formats: text for people (the default) and JSON, one object a line,
//! for log shippers (`--log-format json`, `log_format = "json"`). The same
//! events go out either way.

use serde::{Deserialize, Serialize};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variable holding the log filter (`info` when unset or
/// invalid), in `tracing-subscriber`'s `EnvFilter` syntax.
pub const LOG_ENV: &str = "SOTTO_LOG";

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line (`timestamp`, `level`, `target`, `fields`).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}; use text or json")),
        }
    }
}

/// What the log setup needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Text or JSON.
    pub format: LogFormat,
    /// Let the dependencies' events through, with the peer addresses some
    /// of them carry.
    pub peer_addresses: bool,
}

/// Whether an event of `target` may be logged without the peer-address
/// opt-in: only the relay's own code (the library and the binary share the
/// crate name `sotto_relay`). Events bridged from the `log` crate (rustls)
/// have the target `log` here, so they are dropped too.
pub fn is_own_target(target: &str) -> bool {
    target == "sotto_relay" || target.starts_with("sotto_relay::")
}

/// The filter from `SOTTO_LOG`, or `info`.
fn env_filter() -> EnvFilter {
    EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber writing to stderr. Returns false if one
/// was already installed (then nothing changes).
pub fn init(options: LogOptions) -> bool {
    let peer_addresses = options.peer_addresses;
    let own_only = filter_fn(move |meta| peer_addresses || is_own_target(meta.target()));
    let filter = env_filter().and(own_only);
    let ansi =
        options.format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = match options.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_relays_own_targets_pass_without_the_opt_in() {
        assert!(is_own_target("sotto_relay"));
        assert!(is_own_target("sotto_relay::server"));
        for foreign in [
            "quinn",
            "quinn_proto::connection",
            "quinn_udp",
            "rustls::server::hs",
            "log",
            "sotto_relay_evil",
            "h2",
        ] {
            assert!(!is_own_target(foreign), "{foreign}");
        }
    }

    #[test]
    fn log_formats_parse() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
