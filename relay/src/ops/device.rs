//! What a member's devices do for themselves, without the admin (DESIGN §8
//! "Devices"): `AccountRequest` (a registered device mints one registration
//! token for another device of its member) and `RevokeDevice` (whoever holds
//! a device's revocation secret ends that device's issuance account).
//!
//! Neither may let the relay link a member's devices (DESIGN §2). A token a
//! device mints is stored exactly like one the admin mints, and the minting
//! account keeps only a count; the account the token later creates names
//! the token, never the account that minted it. Each device registers the
//! hash of its own revocation secret, so no two accounts share anything.

use sha2::{Digest, Sha256};
use sotto_proto::wire::{self, ErrorCode};
use sotto_proto::{Challenge, Message};

use crate::ops::admin::{public_key, signature};
use crate::refusal::Refusal;
use crate::relay::Relay;
use crate::storage::Storage;

/// Account requests: `ACCOUNT_TAG || challenge || body`, signed by the
/// account key. A tag of its own, so an issuance signature (or any other)
/// can never pass for an account operation.
pub(crate) const ACCOUNT_TAG: &[u8] = b"sotto/account/v1";
/// Device revocation hashes: `SHA-256(REVOCATION_TAG || secret)`.
pub(crate) const REVOCATION_TAG: &[u8] = b"sotto/device-revocation/v1";
/// Length of a device revocation secret.
pub(crate) const REVOCATION_SECRET_LEN: usize = 32;

/// The message an account request's signature covers.
pub(crate) fn account_signing_message(challenge: &Challenge, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(ACCOUNT_TAG.len() + 32 + body.len());
    message.extend_from_slice(ACCOUNT_TAG);
    message.extend_from_slice(challenge.as_bytes());
    message.extend_from_slice(body);
    message
}

/// The hash a device registers for its revocation secret.
pub(crate) fn revocation_hash(secret: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(REVOCATION_TAG)
        .chain_update(secret)
        .finalize()
        .into()
}

/// A verified account operation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AccountOp {
    MintDevice { expires_at: u64 },
}

/// A signature-checked account request.
#[derive(Debug)]
pub(crate) struct AccountRequest {
    account_key: [u8; 32],
    pub(crate) op: AccountOp,
}

impl AccountRequest {
    /// Verifies the account key's signature over this connection's
    /// challenge, then decodes the operation.
    pub(crate) fn parse(
        request: &wire::AccountRequest,
        challenge: &Challenge,
    ) -> Result<Self, Refusal> {
        let key = public_key(&request.account_key, "account_key")?;
        key.verify_strict(
            &account_signing_message(challenge, &request.body),
            &signature(&request.signature)?,
        )
        .map_err(|_| {
            Refusal::new(
                ErrorCode::Unauthorized,
                "the account signature does not verify for this connection",
            )
        })?;
        let op = wire::AccountOp::decode(request.body.as_ref())
            .map_err(|e| Refusal::new(ErrorCode::Malformed, format!("account operation: {e}")))?;
        let op = match op.op {
            Some(wire::account_op::Op::MintDevice(m)) => AccountOp::MintDevice {
                expires_at: m.expires_at,
            },
            None => {
                return Err(Refusal::new(
                    ErrorCode::UnknownRequest,
                    "unknown account operation",
                ));
            }
        };
        Ok(Self {
            account_key: key.to_bytes(),
            op,
        })
    }
}

/// A well-formed `RevokeDevice`: the hash of the secret shown.
pub(crate) struct DeviceRevocation {
    hash: [u8; 32],
}

impl DeviceRevocation {
    pub(crate) fn parse(request: &wire::RevokeDevice) -> Result<Self, Refusal> {
        if request.revocation_secret.len() != REVOCATION_SECRET_LEN {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "revocation_secret must be 32 bytes",
            ));
        }
        Ok(Self {
            hash: revocation_hash(&request.revocation_secret),
        })
    }
}

impl<S: Storage> Relay<S> {
    /// Mints one registration token for another device of the account's
    /// member (not yet durable: the caller awaits group commit).
    pub(crate) fn mint_device(
        &self,
        request: &AccountRequest,
        expires_at: u64,
    ) -> Result<wire::MintOk, Refusal> {
        let config = &self.tokens.config;
        if !config.self_service_devices {
            return Err(Refusal::new(
                ErrorCode::NotAllowed,
                "the relay's operator turned self-service device registration off; \
                 ask your admin for a device invite",
            ));
        }
        let now = self.clock.now_secs();
        if expires_at <= now {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "registration tokens must expire in the future",
            ));
        }
        // A token meant for a device being linked right now need not live
        // long; capping it bounds what a stolen, unused one is worth.
        let expires_at = expires_at.min(now.saturating_add(config.max_device_registration_secs));
        let cap = config.max_device_registrations;
        // Under the token state lock, so concurrent requests of one account
        // cannot both pass the cap.
        let secrets = self.tokens.with_state(&**self.storage(), now, |_, _| {
            let account = self.live_account(&request.account_key)?;
            if account.device_registrations >= cap {
                return Err(Refusal::new(
                    ErrorCode::QuotaExceeded,
                    format!(
                        "this device already minted the {cap} device registrations the relay \
                         allows it; ask your admin for a device invite"
                    ),
                ));
            }
            // The count first: a crash in between costs a count, never
            // leaves a token uncounted. Only the count is stored, never
            // which token: nothing links the device that minted it to the
            // device that uses it.
            self.storage()
                .set_device_registrations(&request.account_key, account.device_registrations + 1)?;
            self.new_registrations(1, expires_at)
        })?;
        tracing::info!("device registration minted");
        Ok(wire::MintOk {
            registration_tokens: secrets,
        })
    }

    /// Revokes the account registered with this revocation hash exactly as
    /// the admin's `RevokeAccount` does (not yet durable: the caller awaits
    /// group commit).
    pub(crate) fn revoke_device(
        &self,
        revocation: &DeviceRevocation,
    ) -> Result<wire::RevokeOk, Refusal> {
        let now = self.clock.now_secs();
        let rotated = self
            .tokens
            .with_state(&**self.storage(), now, |state, keys| {
                let account = self
                    .storage()
                    .account_by_revocation(&revocation.hash)?
                    .ok_or_else(|| {
                        Refusal::new(
                            ErrorCode::RegistrationInvalid,
                            "no device registered with this revocation secret; \
                         a device registered without one can only be revoked by the admin",
                        )
                    })?;
                let revoked = self
                    .storage()
                    .account(&account)?
                    .is_some_and(|account| account.revoked);
                if revoked {
                    // Already done (a retry): rotating the key again would only
                    // make every honest device refill once more, and anyone
                    // holding the secret could repeat it at will.
                    return Ok(false);
                }
                self.retire_account(state, keys, &account)?;
                Ok(true)
            })?;
        if rotated {
            tracing::info!("issuance account revoked by its revocation secret; token key rotated");
        }
        Ok(wire::RevokeOk {})
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ed25519_dalek::{Signer, SigningKey};

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::{Limits, TokenConfig};
    use crate::ops::register::Registration;
    use crate::storage::MemoryStorage;
    use crate::tokens::Tokens;

    const NOW: u64 = 1_000_000;

    fn relay(adjust: impl FnOnce(&mut TokenConfig)) -> Relay<MemoryStorage> {
        let mut config = TokenConfig::default();
        adjust(&mut config);
        Relay::new(
            Arc::new(MemoryStorage::new()),
            Limits::default(),
            Arc::new(ManualClock::at_secs(NOW)),
        )
        .with_tokens(Tokens::ephemeral(config))
    }

    fn register(relay: &Relay<MemoryStorage>, key: &SigningKey, secret: Option<&[u8; 32]>) {
        let token = relay.mint(1, NOW + 3600).unwrap().registration_tokens[0].clone();
        let registration = Registration::parse(&wire::Register {
            registration_token: token,
            account_key: key.verifying_key().to_bytes().to_vec().into(),
            revocation_hash: secret
                .map(|s| revocation_hash(s).to_vec())
                .unwrap_or_default()
                .into(),
        })
        .unwrap();
        relay.register(&registration).unwrap();
    }

    fn signed(key: &SigningKey, challenge: &Challenge, expires_at: u64) -> wire::AccountRequest {
        let body = wire::AccountOp {
            op: Some(wire::account_op::Op::MintDevice(
                wire::MintDeviceRegistration { expires_at },
            )),
        }
        .encode_to_vec();
        let signature = key.sign(&account_signing_message(challenge, &body));
        wire::AccountRequest {
            account_key: key.verifying_key().to_bytes().to_vec().into(),
            body: body.into(),
            signature: signature.to_bytes().to_vec().into(),
        }
    }

    fn mint(
        relay: &Relay<MemoryStorage>,
        key: &SigningKey,
        expires_at: u64,
    ) -> Result<wire::MintOk, Refusal> {
        let challenge = Challenge::from_bytes([3; 32]);
        let request = AccountRequest::parse(&signed(key, &challenge, expires_at), &challenge)?;
        let AccountOp::MintDevice { expires_at } = request.op;
        relay.mint_device(&request, expires_at)
    }

    #[test]
    fn a_signature_for_another_challenge_or_key_is_refused() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let request = signed(&key, &Challenge::from_bytes([3; 32]), NOW + 60);
        let other = AccountRequest::parse(&request, &Challenge::from_bytes([4; 32]));
        assert_eq!(other.unwrap_err().code, ErrorCode::Unauthorized);
        let mut forged = request.clone();
        forged.account_key = SigningKey::from_bytes(&[2; 32])
            .verifying_key()
            .to_bytes()
            .to_vec()
            .into();
        let refused = AccountRequest::parse(&forged, &Challenge::from_bytes([3; 32]));
        assert_eq!(refused.unwrap_err().code, ErrorCode::Unauthorized);
    }

    #[test]
    fn only_a_live_account_mints_and_only_up_to_its_cap() {
        let relay = relay(|c| c.max_device_registrations = 2);
        let key = SigningKey::from_bytes(&[1; 32]);
        assert_eq!(
            mint(&relay, &key, NOW + 60).unwrap_err().code,
            ErrorCode::Unauthorized,
            "not registered"
        );
        register(&relay, &key, None);
        assert_eq!(
            mint(&relay, &key, NOW).unwrap_err().code,
            ErrorCode::BadRequest,
            "already expired"
        );
        for _ in 0..2 {
            assert_eq!(
                mint(&relay, &key, NOW + 60)
                    .unwrap()
                    .registration_tokens
                    .len(),
                1
            );
        }
        assert_eq!(
            mint(&relay, &key, NOW + 60).unwrap_err().code,
            ErrorCode::QuotaExceeded
        );
    }

    #[test]
    fn a_device_token_expires_within_the_cap() {
        let relay = relay(|c| {
            c.token_period_secs = 100;
            c.max_device_registration_secs = 1_000;
        });
        let key = SigningKey::from_bytes(&[1; 32]);
        register(&relay, &key, None);
        let secret = mint(&relay, &key, u64::MAX).unwrap().registration_tokens[0].clone();
        let record = relay
            .storage()
            .registration(&sotto_proto::registration_token_hash(&secret))
            .unwrap()
            .unwrap();
        assert_eq!(record.expires_at, NOW + 1_000);
        assert_eq!(record.account, None);
    }

    #[test]
    fn self_service_off_is_its_own_error() {
        let relay = relay(|c| c.self_service_devices = false);
        let key = SigningKey::from_bytes(&[1; 32]);
        register(&relay, &key, None);
        let refused = mint(&relay, &key, NOW + 60).unwrap_err();
        assert_eq!(refused.code, ErrorCode::NotAllowed);
        assert!(
            refused.message.contains("device invite"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn a_revocation_secret_revokes_once_and_rotates_once() {
        let relay = relay(|_| {});
        let key = SigningKey::from_bytes(&[1; 32]);
        let secret = [9; 32];
        register(&relay, &key, Some(&secret));
        let generation = || {
            relay
                .tokens
                .with_state(&**relay.storage(), NOW, |state, _| Ok(state.generation))
                .unwrap()
        };
        let before = generation();
        let wrong = DeviceRevocation::parse(&wire::RevokeDevice {
            revocation_secret: vec![8; 32].into(),
        })
        .unwrap();
        assert_eq!(
            relay.revoke_device(&wrong).unwrap_err().code,
            ErrorCode::RegistrationInvalid
        );
        let short = DeviceRevocation::parse(&wire::RevokeDevice {
            revocation_secret: vec![9; 31].into(),
        });
        assert_eq!(short.err().map(|r| r.code), Some(ErrorCode::BadRequest));
        let right = DeviceRevocation::parse(&wire::RevokeDevice {
            revocation_secret: secret.to_vec().into(),
        })
        .unwrap();
        relay.revoke_device(&right).unwrap();
        let account = key.verifying_key().to_bytes();
        assert!(relay.storage().account(&account).unwrap().unwrap().revoked);
        assert_eq!(generation(), before + 1);
        relay.revoke_device(&right).unwrap();
        assert_eq!(generation(), before + 1, "a repeat does not rotate again");
    }

    #[test]
    fn a_revocation_hash_is_used_once_and_must_be_32_bytes() {
        let relay = relay(|_| {});
        register(&relay, &SigningKey::from_bytes(&[1; 32]), Some(&[9; 32]));
        let token = relay.mint(1, NOW + 3600).unwrap().registration_tokens[0].clone();
        let again = Registration::parse(&wire::Register {
            registration_token: token.clone(),
            account_key: SigningKey::from_bytes(&[2; 32])
                .verifying_key()
                .to_bytes()
                .to_vec()
                .into(),
            revocation_hash: revocation_hash(&[9; 32]).to_vec().into(),
        })
        .unwrap();
        assert_eq!(
            relay.register(&again).unwrap_err().code,
            ErrorCode::BadRequest
        );
        let short = Registration::parse(&wire::Register {
            registration_token: token,
            account_key: SigningKey::from_bytes(&[3; 32])
                .verifying_key()
                .to_bytes()
                .to_vec()
                .into(),
            revocation_hash: vec![1; 31].into(),
        });
        assert_eq!(short.err().map(|r| r.code), Some(ErrorCode::BadRequest));
    }
}
