//! Epochs: the unit of time after which every mailbox ID rotates (DESIGN §4).
//!
//! An epoch is `unix_secs / epoch_len`. The clock is always passed in, never
//! read here, so tests can cross epoch boundaries without sleeping and the
//! sync engine can catch up over a range of past epochs deterministically.

use std::fmt;

/// The default epoch length: one hour.
pub const EPOCH_SECS: u64 = 3600;

/// The number of an epoch since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(u64);

impl Epoch {
    /// Wraps a raw epoch number.
    pub const fn new(epoch: u64) -> Self {
        Self(epoch)
    }

    /// The epoch containing `unix_secs`, for epochs of `epoch_len_secs`
    /// seconds ([`EPOCH_SECS`] by default). A length of zero is treated as
    /// one second rather than dividing by zero: the length comes from
    /// configuration, and a bad configuration must not panic the client.
    pub const fn from_unix_secs(unix_secs: u64, epoch_len_secs: u64) -> Self {
        let len = if epoch_len_secs == 0 {
            1
        } else {
            epoch_len_secs
        };
        Self(unix_secs / len)
    }

    /// The epoch number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The epoch before this one (epoch 0 has none and stays 0).
    pub const fn previous(self) -> Self {
        Self(self.0.saturating_sub(1))
    }

    /// The epoch after this one (saturating at `u64::MAX`, which no clock
    /// reaches).
    #[allow(clippy::should_implement_trait)]
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }

    /// The first Unix second of this epoch for epochs of `epoch_len_secs`
    /// (saturating; zero length treated as one second as in
    /// [`Epoch::from_unix_secs`]).
    pub const fn start_unix_secs(self, epoch_len_secs: u64) -> u64 {
        let len = if epoch_len_secs == 0 {
            1
        } else {
            epoch_len_secs
        };
        self.0.saturating_mul(len)
    }

    /// Every epoch from `from` to `to`, both included, oldest first: the
    /// epochs a client catches up on after being offline. Empty if `from`
    /// is after `to`.
    pub fn range(from: Epoch, to: Epoch) -> impl DoubleEndedIterator<Item = Epoch> + Clone {
        (from.0..=to.0).map(Epoch)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Epoch {
    fn from(epoch: u64) -> Self {
        Self(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn epoch_boundaries_fall_on_multiples_of_the_length() {
        assert_eq!(Epoch::from_unix_secs(0, EPOCH_SECS).get(), 0);
        assert_eq!(Epoch::from_unix_secs(3599, EPOCH_SECS).get(), 0);
        assert_eq!(Epoch::from_unix_secs(3600, EPOCH_SECS).get(), 1);
        assert_eq!(
            Epoch::from_unix_secs(1_774_800_000, EPOCH_SECS).get(),
            493_000
        );
        assert_eq!(Epoch::from_unix_secs(119, 60).get(), 1);
    }

    #[test]
    fn zero_length_does_not_panic() {
        assert_eq!(Epoch::from_unix_secs(42, 0).get(), 42);
        assert_eq!(Epoch::new(42).start_unix_secs(0), 42);
    }

    #[test]
    fn previous_and_next_saturate() {
        assert_eq!(Epoch::new(0).previous(), Epoch::new(0));
        assert_eq!(Epoch::new(5).previous(), Epoch::new(4));
        assert_eq!(Epoch::new(5).next(), Epoch::new(6));
        assert_eq!(Epoch::new(u64::MAX).next(), Epoch::new(u64::MAX));
        assert_eq!(Epoch::new(u64::MAX).start_unix_secs(EPOCH_SECS), u64::MAX);
    }

    #[test]
    fn range_is_inclusive_and_ordered() {
        let got: Vec<u64> = Epoch::range(Epoch::new(3), Epoch::new(6))
            .map(Epoch::get)
            .collect();
        assert_eq!(got, vec![3, 4, 5, 6]);
        assert_eq!(Epoch::range(Epoch::new(7), Epoch::new(7)).count(), 1);
        assert_eq!(Epoch::range(Epoch::new(8), Epoch::new(7)).count(), 0);
    }

    proptest! {
        #[test]
        fn an_epoch_contains_its_own_start(secs in any::<u64>(), len in 1u64..100_000) {
            let epoch = Epoch::from_unix_secs(secs, len);
            let start = epoch.start_unix_secs(len);
            prop_assert!(start <= secs);
            prop_assert_eq!(Epoch::from_unix_secs(start, len), epoch);
            prop_assert!(secs - start < len);
        }
    }
}
