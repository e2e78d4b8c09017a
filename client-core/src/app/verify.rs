//! Verifying a contact: safety numbers and interactive emoji (SAS)
//! verification.

use sha2::{Digest, Sha512};

use super::{App, AppError, SasOutcome};
use crate::engine::EngineError;

/// Domain separation for safety numbers.
pub const SAFETY_NUMBER_TAG: &[u8] = b"sotto/safety-number/v1";

impl App {
    /// The safety number of my device and `handle`'s: the same on both
    /// sides; compare it in person or on a call.
    pub fn safety_number(&self, handle: &str) -> Result<String, AppError> {
        let (mine, theirs) = self.verification_keys(handle)?;
        Ok(safety_number(
            (&self.membership.handle, &mine),
            (handle, &theirs),
        ))
    }

    /// The keys a verification with `handle` is about: both user keys
    /// (one for all of a member's devices; a device removal moves it along
    /// a signed succession, a re-invite replaces it).
    fn verification_keys(&self, handle: &str) -> Result<([u8; 32], [u8; 32]), AppError> {
        let theirs = self
            .client
            .engine()
            .verified_key(handle)?
            .ok_or_else(|| EngineError::UnknownContact(handle.to_owned()))?;
        Ok((self.membership.user_key(), theirs))
    }

    /// Whether I verified `handle`'s current device.
    pub fn is_verified(&self, handle: &str) -> Result<bool, AppError> {
        Ok(self.client.engine().is_verified(handle)?)
    }

    /// Interactive verification with `handle` through the relay (both run
    /// it at about the same time): `confirm` shows the code and returns
    /// whether the person says it matches the other device's.
    pub async fn verify_sas(
        &mut self,
        handle: &str,
        timeout: std::time::Duration,
        confirm: impl FnOnce(&crate::sas::SasCode) -> bool,
    ) -> Result<SasOutcome, AppError> {
        use crate::sas::{Party, SasFlow};
        self.ensure_contact(handle).await?;
        let started = (self.clock)();
        // A key the other side sent a little before we started counts: the
        // two people rarely press enter at the same second.
        let since = started.saturating_sub(10 * 60 * 1000);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut flow = SasFlow::new();
        let our_key = flow.public_key();
        self.client
            .engine_mut()
            .queue_sas_key(handle, &our_key, started)?;
        self.client.deliver().await?;
        let their_key = loop {
            if let Some(key) = self.client.engine().received_sas_key(handle, since)? {
                break key;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(AppError::VerificationTimedOut(handle.to_owned()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            self.sync().await?;
        };
        let (mine, theirs) = self.verification_keys(handle)?;
        let my_handle = self.membership.handle.clone();
        let me = Party {
            handle: &my_handle,
            identity: mine,
            sas_key: our_key,
        };
        let them = Party {
            handle,
            identity: theirs,
            sas_key: their_key
                .as_slice()
                .try_into()
                .map_err(|_| AppError::VerificationInvalid(handle.to_owned()))?,
        };
        let code = flow
            .establish(&me, &them)
            .ok_or_else(|| AppError::VerificationInvalid(handle.to_owned()))?;
        if !confirm(&code) {
            return Ok(SasOutcome::Rejected);
        }
        let mac = flow
            .mac(&me)
            .ok_or_else(|| AppError::VerificationInvalid(handle.to_owned()))?;
        self.client
            .engine_mut()
            .queue_sas_mac(handle, &mac, (self.clock)())?;
        self.client.deliver().await?;
        loop {
            if let Some(mac) = self.client.engine().received_sas_mac(handle, since)?
                && flow.verify_mac(&them, &mac)
            {
                self.client.engine().mark_verified(handle)?;
                return Ok(SasOutcome::Verified);
            }
            if tokio::time::Instant::now() > deadline {
                return Ok(SasOutcome::Mismatch);
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            self.sync().await?;
        }
    }
}

/// 60 digits in 12 groups from both parties' handles and identity keys,
/// order-independent.
pub fn safety_number(a: (&str, &[u8; 32]), b: (&str, &[u8; 32])) -> String {
    let mut parties = [a, b];
    parties.sort();
    let mut hasher = Sha512::new();
    hasher.update(SAFETY_NUMBER_TAG);
    for (handle, key) in parties {
        hasher.update((handle.len() as u32).to_be_bytes());
        hasher.update(handle.as_bytes());
        hasher.update(key);
    }
    let digest = hasher.finalize();
    digest
        .chunks(5)
        .take(12)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", value % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_numbers_agree_on_both_sides_and_change_with_a_key() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let one = safety_number(("alice", &a), ("bob", &b));
        assert_eq!(one, safety_number(("bob", &b), ("alice", &a)));
        assert_eq!(one.split(' ').count(), 12);
        assert!(
            one.split(' ')
                .all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit()))
        );
        assert_ne!(one, safety_number(("alice", &a), ("bob", &[3u8; 32])));
    }
}
