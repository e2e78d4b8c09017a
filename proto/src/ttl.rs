//! Blob lifetimes. A relay accepts only these few TTLs, so the TTL a client
//! picks is shared by every client that picks it and cannot single it out
//! (issue 18 item 11). `ttl_secs = 0` on the wire means the relay's default.

/// One of the TTLs the protocol allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ttl {
    /// One hour.
    Hour,
    /// One day.
    Day,
    /// Seven days.
    Week,
    /// Fourteen days: the default, and the longest.
    TwoWeeks,
}

/// A TTL that is not one of [`Ttl::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a TTL must be one of 3600, 86400, 604800 or 1209600 seconds (1 h, 1 d, 7 d, 14 d), not {secs}"
)]
pub struct TtlError {
    /// The seconds asked for.
    pub secs: u32,
}

impl Ttl {
    /// Every allowed TTL, shortest first.
    pub const ALL: [Ttl; 4] = [Ttl::Hour, Ttl::Day, Ttl::Week, Ttl::TwoWeeks];

    /// The longest TTL the protocol allows (and relays default to).
    pub const MAX: Ttl = Ttl::TwoWeeks;

    /// The TTL in seconds.
    pub const fn secs(self) -> u32 {
        match self {
            Ttl::Hour => 3_600,
            Ttl::Day => 24 * 3_600,
            Ttl::Week => 7 * 24 * 3_600,
            Ttl::TwoWeeks => 14 * 24 * 3_600,
        }
    }

    /// The TTL of exactly `secs` seconds, if the protocol allows it.
    pub fn from_secs(secs: u32) -> Result<Ttl, TtlError> {
        Self::ALL
            .into_iter()
            .find(|ttl| ttl.secs() == secs)
            .ok_or(TtlError { secs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_four_ttls_parse() {
        for ttl in Ttl::ALL {
            assert_eq!(Ttl::from_secs(ttl.secs()), Ok(ttl));
        }
        for secs in [0, 1, 60, 3_599, 3_601, 7_200, 86_399, 1_209_601, u32::MAX] {
            assert_eq!(Ttl::from_secs(secs), Err(TtlError { secs }));
        }
        assert_eq!(Ttl::MAX.secs(), 1_209_600);
        assert!(
            Ttl::ALL
                .windows(2)
                .all(|w| w[0] < w[1] && w[0].secs() < w[1].secs())
        );
    }
}
