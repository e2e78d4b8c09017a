//! `Bootstrap` and admin operations (`MintRegistrations`, `RevokeAccount`).
//!
//! Bootstrap consumes the one-time code from the `bootstrap-code` file and
//! makes the caller's key the relay's admin credential: an ed25519 key used
//! only for relay admin operations, never for messaging. Admin requests are
//! signed by it over `"sotto/admin/v1" || challenge || body` and decoded
//! only after the signature verified, like owner requests.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ed25519_dalek::{Signature, VerifyingKey};
use sotto_proto::wire::{self, ErrorCode};
use sotto_proto::{
    Challenge, Message, REGISTRATION_TOKEN_LEN, admin_signing_message, registration_token_hash,
};
use subtle::ConstantTimeEq;

use crate::bootstrap;
use crate::refusal::Refusal;
use crate::relay::Relay;
use crate::storage::{IssuerState, Storage};
use crate::tokens::TokenKey;

/// Parses a 32-byte ed25519 public key.
pub(crate) fn public_key(bytes: &[u8], what: &str) -> Result<VerifyingKey, Refusal> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Refusal::new(ErrorCode::BadRequest, format!("{what} must be 32 bytes")))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("{what} is not a valid ed25519 key"),
        )
    })
}

/// Parses a 64-byte signature.
pub(crate) fn signature(bytes: &[u8]) -> Result<Signature, Refusal> {
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|_| Refusal::new(ErrorCode::Unauthorized, "a signature must be 64 bytes"))?;
    Ok(Signature::from_bytes(&bytes))
}

fn bootstrap_invalid() -> Refusal {
    Refusal::new(
        ErrorCode::BootstrapInvalid,
        "this bootstrap code is wrong or was already used; the relay has an admin",
    )
}

/// A verified admin operation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AdminOp {
    Mint { count: u32, expires_at: u64 },
    Revoke { registration: [u8; 32] },
}

impl<S: Storage> Relay<S> {
    /// Consumes the bootstrap code; returns the issuer key.
    pub(crate) fn bootstrap(
        &self,
        request: &wire::Bootstrap,
    ) -> Result<wire::BootstrapOk, Refusal> {
        let admin = public_key(&request.admin_key, "admin_key")?;
        let Some(dir) = self.tokens.data_dir() else {
            return Err(bootstrap_invalid());
        };
        let now = self.clock.now_secs();
        self.tokens.with_state(&**self.storage(), now, |state, _| {
            if state.admin_key.is_some() {
                return Err(bootstrap_invalid());
            }
            let code = bootstrap::read(dir)
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot read the bootstrap code file");
                    Refusal::new(
                        ErrorCode::Internal,
                        "the relay cannot read its bootstrap code",
                    )
                })?
                .ok_or_else(bootstrap_invalid)?;
            if !bool::from(code.as_bytes().ct_eq(request.code.trim().as_bytes())) {
                return Err(bootstrap_invalid());
            }
            let mut next = state.clone();
            next.admin_key = Some(admin.to_bytes());
            // Durable before the code goes: a crash in between leaves an
            // admin and a dead code file, never neither.
            self.storage().set_issuer_state(&next)?;
            self.storage().flush()?;
            *state = next;
            if let Err(e) = bootstrap::remove(dir) {
                tracing::error!(error = %e, "cannot delete the used bootstrap code file");
            }
            Ok(())
        })?;
        tracing::info!("relay bootstrapped: admin credential stored");
        Ok(wire::BootstrapOk {
            issuer_key: self.tokens.issuer_key().to_vec().into(),
            token_period_secs: self.tokens.config.token_period_secs,
        })
    }

    /// Verifies the admin's signature and decodes the operation.
    pub(crate) fn authorize_admin(
        &self,
        request: &wire::AdminRequest,
        challenge: &Challenge,
    ) -> Result<AdminOp, Refusal> {
        let now = self.clock.now_secs();
        let admin = self
            .tokens
            .with_state(&**self.storage(), now, |state, _| Ok(state.admin_key))?
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::Unauthorized,
                    "this relay has no admin yet; bootstrap it first",
                )
            })?;
        let key = public_key(&admin, "stored admin key")?;
        key.verify_strict(
            &admin_signing_message(challenge, &request.body),
            &signature(&request.signature)?,
        )
        .map_err(|_| {
            Refusal::new(
                ErrorCode::Unauthorized,
                "the admin signature does not verify for this connection",
            )
        })?;
        let op = wire::AdminOp::decode(request.body.clone())
            .map_err(|e| Refusal::new(ErrorCode::Malformed, format!("admin operation: {e}")))?;
        match op.op {
            Some(wire::admin_op::Op::Mint(m)) => {
                if m.count == 0 || m.count > self.tokens.config.max_mint {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        format!(
                            "mint between 1 and {} registration tokens at a time",
                            self.tokens.config.max_mint
                        ),
                    ));
                }
                if m.expires_at <= now {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        "registration tokens must expire in the future",
                    ));
                }
                Ok(AdminOp::Mint {
                    count: m.count,
                    expires_at: m.expires_at,
                })
            }
            Some(wire::admin_op::Op::Revoke(r)) => Ok(AdminOp::Revoke {
                registration: r.registration_token_hash.as_ref().try_into().map_err(|_| {
                    Refusal::new(
                        ErrorCode::BadRequest,
                        "registration_token_hash must be 32 bytes",
                    )
                })?,
            }),
            None => Err(Refusal::new(
                ErrorCode::UnknownRequest,
                "unknown admin operation",
            )),
        }
    }

    /// Stores `count` fresh registration tokens valid until `expires_at`
    /// (rounded up to the token period, so no stored time is finer) and
    /// returns their secrets. Admin-minted and device-minted tokens are
    /// stored alike, so the store cannot tell them apart.
    pub(crate) fn new_registrations(
        &self,
        count: u32,
        expires_at: u64,
    ) -> Result<Vec<Bytes>, Refusal> {
        let period = self.tokens.config.token_period_secs;
        let expires_at = expires_at.div_ceil(period).saturating_mul(period);
        let mut secrets = Vec::with_capacity(count as usize);
        let mut hashes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let mut secret = [0u8; REGISTRATION_TOKEN_LEN];
            getrandom::fill(&mut secret).map_err(|_| {
                Refusal::new(ErrorCode::Internal, "the relay's random source failed")
            })?;
            hashes.push((registration_token_hash(&secret), expires_at));
            secrets.push(secret.to_vec().into());
        }
        self.storage().put_registrations(&hashes)?;
        Ok(secrets)
    }

    /// Mints registration tokens (not yet durable: the caller awaits group
    /// commit before replying).
    pub(crate) fn mint(&self, count: u32, expires_at: u64) -> Result<wire::MintOk, Refusal> {
        let secrets = self.new_registrations(count, expires_at)?;
        tracing::info!(count, "registration tokens minted");
        Ok(wire::MintOk {
            registration_tokens: secrets,
        })
    }

    /// Revokes the account created with a registration token and moves to
    /// a new token generation at once, so tokens hoarded before stop
    /// working (not yet durable: the caller awaits group commit).
    pub(crate) fn revoke(&self, registration: &[u8; 32]) -> Result<wire::RevokeOk, Refusal> {
        let record = self.storage().registration(registration)?.ok_or_else(|| {
            Refusal::new(
                ErrorCode::RegistrationInvalid,
                "no registration token has this hash",
            )
        })?;
        let Some(account) = record.account else {
            // Never used: expire it, so it can never create an account.
            self.storage().put_registrations(&[(*registration, 0)])?;
            return Ok(wire::RevokeOk {});
        };
        let now = self.clock.now_secs();
        self.tokens
            .with_state(&**self.storage(), now, |state, keys| {
                self.retire_account(state, keys, &account)
            })?;
        tracing::info!("issuance account revoked; token key rotated");
        Ok(wire::RevokeOk {})
    }

    /// Marks `account` revoked and moves to the next token key generation,
    /// retiring every key so far: tokens the account hoarded die with it
    /// (honest devices refill). Runs under the token state lock.
    pub(crate) fn retire_account(
        &self,
        state: &mut IssuerState,
        keys: &mut HashMap<u64, Arc<TokenKey>>,
        account: &[u8; 32],
    ) -> Result<(), Refusal> {
        self.storage().revoke_account(account)?;
        let mut next = state.clone();
        next.generation = next.generation.checked_add(1).ok_or_else(|| {
            Refusal::new(ErrorCode::Internal, "the token key generation is exhausted")
        })?;
        self.storage().set_issuer_state(&next)?;
        *state = next;
        keys.clear();
        Ok(())
    }
}
