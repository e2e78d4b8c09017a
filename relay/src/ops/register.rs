//! `Register`: a device consumes a single-use registration token (from its
//! invite) and creates its issuance account. The account key is the
//! device's relay-issuance credential, one per device and never its
//! identity key, so the relay cannot link a member's devices. It may
//! carry the hash of the device's revocation secret (`ops::device`).

use sotto_proto::wire::{self, ErrorCode};
use sotto_proto::{REGISTRATION_TOKEN_LEN, registration_token_hash};

use crate::ops::admin::public_key;
use crate::refusal::Refusal;
use crate::relay::Relay;
use crate::storage::Storage;

/// A well-formed registration.
pub(crate) struct Registration {
    token_hash: [u8; 32],
    account_key: [u8; 32],
    /// The device's revocation hash (`ops::device`), if it gave one.
    revocation: Option<[u8; 32]>,
}

impl Registration {
    pub(crate) fn parse(request: &wire::Register) -> Result<Self, Refusal> {
        if request.registration_token.len() != REGISTRATION_TOKEN_LEN {
            return Err(Refusal::new(
                ErrorCode::RegistrationInvalid,
                "this registration token is malformed",
            ));
        }
        let account_key = public_key(&request.account_key, "account_key")?.to_bytes();
        // Empty: a client from before revocation secrets; only the admin
        // can end that account.
        let revocation = match request.revocation_hash.len() {
            0 => None,
            _ => Some(request.revocation_hash.as_ref().try_into().map_err(|_| {
                Refusal::new(
                    ErrorCode::BadRequest,
                    "revocation_hash must be 32 bytes, or empty for none",
                )
            })?),
        };
        Ok(Self {
            token_hash: registration_token_hash(&request.registration_token),
            account_key,
            revocation,
        })
    }
}

impl<S: Storage> Relay<S> {
    /// Consumes the token and creates the account (not yet durable: the
    /// caller awaits group commit before replying).
    pub(crate) fn register(&self, registration: &Registration) -> Result<(), Refusal> {
        let now = self.clock.now_secs();
        // The token state lock serialises check-then-write, so one token
        // can never create two accounts.
        self.tokens.with_state(&**self.storage(), now, |_, _| {
            let record = self
                .storage()
                .registration(&registration.token_hash)?
                .ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::RegistrationInvalid,
                        "this registration token is not known to the relay",
                    )
                })?;
            if record.account.is_some() {
                return Err(Refusal::new(
                    ErrorCode::RegistrationUsed,
                    "this registration token was already used",
                ));
            }
            if record.expires_at <= now {
                return Err(Refusal::new(
                    ErrorCode::RegistrationExpired,
                    "this registration token has expired",
                ));
            }
            if self.storage().account(&registration.account_key)?.is_some() {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "this account key is already registered",
                ));
            }
            if let Some(revocation) = &registration.revocation {
                // Two accounts under one hash would let one secret end
                // both; the hash is a device's own random secret, so a
                // repeat means a client bug (or a replayed request).
                if self.storage().account_by_revocation(revocation)?.is_some() {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        "this revocation hash is already in use; make a new revocation secret",
                    ));
                }
            }
            self.storage().register_account(
                &registration.token_hash,
                &registration.account_key,
                registration.revocation.as_ref(),
            )?;
            Ok(())
        })?;
        tracing::info!("issuance account registered");
        Ok(())
    }
}
