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
    /// whether the person says it matches the other device's. The steps,
    /// for a caller that cannot wait in line (the profile's owner), are
    /// [`App::sas_start`], [`App::sas_code`], [`App::sas_confirm`] and
    /// [`App::sas_verified`]; this runs them, syncing while it waits.
    pub async fn verify_sas(
        &mut self,
        handle: &str,
        timeout: std::time::Duration,
        confirm: impl FnOnce(&crate::sas::SasCode) -> bool,
    ) -> Result<SasOutcome, AppError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut session = self.sas_start(handle).await?;
        let code = loop {
            if let Some(code) = self.sas_code(&mut session)? {
                break code;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(AppError::VerificationTimedOut(handle.to_owned()));
            }
            tokio::time::sleep(SAS_POLL).await;
            self.sync().await?;
        };
        if !confirm(&code) {
            return Ok(SasOutcome::Rejected);
        }
        self.sas_confirm(&mut session).await?;
        loop {
            if self.sas_verified(&session)? {
                return Ok(SasOutcome::Verified);
            }
            if tokio::time::Instant::now() > deadline {
                return Ok(SasOutcome::Mismatch);
            }
            tokio::time::sleep(SAS_POLL).await;
            self.sync().await?;
        }
    }

    /// Starts an interactive verification with `handle`: sends my
    /// ephemeral key (through the relay, sealed like any message).
    pub async fn sas_start(&mut self, handle: &str) -> Result<SasSession, AppError> {
        self.ensure_contact(handle).await?;
        let started = (self.clock)();
        let flow = crate::sas::SasFlow::new();
        let our_key = flow.public_key();
        self.client
            .engine_mut()
            .queue_sas_key(handle, &our_key, started)?;
        self.client.deliver().await?;
        Ok(SasSession {
            handle: handle.to_owned(),
            flow,
            our_key,
            // A key the other side sent a little before we started counts:
            // the two people rarely press enter at the same second.
            since: started.saturating_sub(10 * 60 * 1000),
            their_key: None,
            code: None,
        })
    }

    /// The code to compare, once `handle`'s key came in (`None`: not yet).
    /// Looks only at what is stored: a sync or a live subscription brings
    /// the key.
    pub fn sas_code(
        &mut self,
        session: &mut SasSession,
    ) -> Result<Option<crate::sas::SasCode>, AppError> {
        if let Some(code) = &session.code {
            return Ok(Some(code.clone()));
        }
        let handle = session.handle.clone();
        let Some(their_key) = self
            .client
            .engine()
            .received_sas_key(&handle, session.since)?
        else {
            return Ok(None);
        };
        let their_key: [u8; 32] = their_key
            .as_slice()
            .try_into()
            .map_err(|_| AppError::VerificationInvalid(handle.clone()))?;
        let (me, them) = self.sas_parties(session, their_key)?;
        let code = session
            .flow
            .establish(&me.party(), &them.party())
            .ok_or_else(|| AppError::VerificationInvalid(handle.clone()))?;
        session.their_key = Some(their_key);
        session.code = Some(code.clone());
        Ok(Some(code))
    }

    /// The person said the codes match: tells the other side with a MAC
    /// over my identity key.
    pub async fn sas_confirm(&mut self, session: &mut SasSession) -> Result<(), AppError> {
        let invalid = || AppError::VerificationInvalid(session.handle.clone());
        let their_key = session.their_key.ok_or_else(invalid)?;
        let (me, _) = self.sas_parties(session, their_key)?;
        let mac = session.flow.mac(&me.party()).ok_or_else(invalid)?;
        self.client
            .engine_mut()
            .queue_sas_mac(&session.handle, &mac, (self.clock)())?;
        self.client.deliver().await?;
        Ok(())
    }

    /// Whether `handle`'s confirmation came in and checks; then `handle` is
    /// marked verified. Looks only at what is stored, like
    /// [`App::sas_code`].
    pub fn sas_verified(&mut self, session: &SasSession) -> Result<bool, AppError> {
        let Some(their_key) = session.their_key else {
            return Ok(false);
        };
        let (_, them) = self.sas_parties(session, their_key)?;
        let engine = self.client.engine();
        if let Some(mac) = engine.received_sas_mac(&session.handle, session.since)?
            && session.flow.verify_mac(&them.party(), &mac)
        {
            engine.mark_verified(&session.handle)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Both sides of `session`: handles, identity keys, ephemeral keys.
    fn sas_parties(
        &self,
        session: &SasSession,
        their_key: [u8; 32],
    ) -> Result<(OwnedParty, OwnedParty), AppError> {
        let (mine, theirs) = self.verification_keys(&session.handle)?;
        Ok((
            OwnedParty {
                handle: self.membership.handle.clone(),
                identity: mine,
                sas_key: session.our_key,
            },
            OwnedParty {
                handle: session.handle.clone(),
                identity: theirs,
                sas_key: their_key,
            },
        ))
    }
}

/// How often a waiting verification looks again.
const SAS_POLL: std::time::Duration = std::time::Duration::from_millis(300);

/// An interactive verification in progress ([`App::sas_start`]). Holds
/// the ephemeral secret in memory only; no `Debug`.
pub struct SasSession {
    handle: String,
    flow: crate::sas::SasFlow,
    our_key: [u8; 32],
    /// Keys and MACs sent after this (unix ms) count.
    since: u64,
    their_key: Option<[u8; 32]>,
    code: Option<crate::sas::SasCode>,
}

impl SasSession {
    /// Who is being verified.
    pub fn handle(&self) -> &str {
        &self.handle
    }
}

/// A [`crate::sas::Party`] that owns its handle.
struct OwnedParty {
    handle: String,
    identity: [u8; 32],
    sas_key: [u8; 32],
}

impl OwnedParty {
    fn party(&self) -> crate::sas::Party<'_> {
        crate::sas::Party {
            handle: &self.handle,
            identity: self.identity,
            sas_key: self.sas_key,
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
