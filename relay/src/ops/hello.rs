//! `Hello` / `Welcome`: the first exchange on every connection.

use sotto_proto::wire::{self, ErrorCode};
use sotto_proto::{Challenge, PROTOCOL_VERSION};

use crate::config::Limits;
use crate::refusal::Refusal;

/// Checks a client's hello. The access token field is accepted empty until
/// anonymous tokens exist (teams issue); then it will be checked here.
pub(crate) fn parse(hello: &wire::Hello) -> Result<(), Refusal> {
    if hello.version != PROTOCOL_VERSION {
        // Say which side is behind: the one to upgrade.
        let upgrade = if hello.version > PROTOCOL_VERSION {
            "the relay is older: its operator must upgrade it"
        } else {
            "update the client"
        };
        return Err(Refusal::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "this relay speaks protocol version {PROTOCOL_VERSION}, the client version {}; {upgrade}",
                hello.version
            ),
        ));
    }
    Ok(())
}

/// The welcome: this connection's challenge, the limits, the relay's clock.
pub(crate) fn welcome(challenge: &Challenge, limits: &Limits, now_secs: u64) -> wire::Welcome {
    wire::Welcome {
        challenge: challenge.as_bytes().to_vec().into(),
        limits: Some(wire::Limits {
            max_frame: limits.max_frame,
            max_ttl_secs: limits.max_ttl_secs,
            default_ttl_secs: limits.default_ttl_secs,
            blob_sizes: limits.blob_sizes.clone(),
            max_fetch: limits.max_fetch_blobs,
            mailbox_max_blobs: limits.mailbox_max_blobs,
            mailbox_max_bytes: limits.mailbox_max_bytes,
        }),
        now: now_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_mismatch_names_the_side_to_upgrade() {
        let hello = |version| wire::Hello {
            version,
            access_token: Default::default(),
        };
        assert!(parse(&hello(PROTOCOL_VERSION)).is_ok());
        let older = parse(&hello(PROTOCOL_VERSION - 1)).unwrap_err();
        assert_eq!(older.code, ErrorCode::UnsupportedVersion);
        assert!(older.message.contains("update the client"));
        let newer = parse(&hello(PROTOCOL_VERSION + 1)).unwrap_err();
        assert_eq!(newer.code, ErrorCode::UnsupportedVersion);
        assert!(newer.message.contains("the relay is older"));
    }
}
