//! Token issuance (`IssueTokens`), the signed period key (`TokenKey`) and
//! redemption (the access token in `Hello`).
//!
//! Issuance is VOPRF in verifiable mode (RFC 9497, ristretto255-SHA512):
//! the relay evaluates the client's blinded elements with the current
//! period key and proves with one batched DLEQ proof that it used the key
//! it published, so it cannot tag a member with a key of their own.
//! Redemption recomputes the PRF on the token's input and records the
//! input's hash as spent under the key's ID; nothing ties it to the
//! issuance, which only ever counted tokens per account and period.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use sotto_proto::wire::{self, ErrorCode};
use sotto_proto::{
    Challenge, Message, TOKEN_ELEMENT_LEN, TOKEN_INPUT_LEN, TOKEN_OUTPUT_LEN, issue_signing_message,
};
use subtle::ConstantTimeEq;
use voprf::BlindedElement;

use crate::ops::admin::{public_key, signature};
use crate::refusal::Refusal;
use crate::relay::Relay;
use crate::storage::Storage;
use crate::tokens::{Suite, TokenKey};

/// A signature-checked issuance request.
pub(crate) struct Issuance {
    account_key: [u8; 32],
    blinded: Vec<BlindedElement<Suite>>,
}

impl Issuance {
    pub(crate) fn parse(
        request: &wire::IssueTokens,
        challenge: &Challenge,
        max_batch: u32,
    ) -> Result<Self, Refusal> {
        let n = request.blinded_elements.len();
        if n == 0 || n > max_batch as usize {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("ask for between 1 and {max_batch} tokens at a time"),
            ));
        }
        let key = public_key(&request.account_key, "account_key")?;
        key.verify_strict(
            &issue_signing_message(challenge, &request.blinded_elements),
            &signature(&request.signature)?,
        )
        .map_err(|_| {
            Refusal::new(
                ErrorCode::Unauthorized,
                "the issuance signature does not verify for this connection",
            )
        })?;
        let blinded = request
            .blinded_elements
            .iter()
            .map(|element| {
                if element.len() != TOKEN_ELEMENT_LEN {
                    return None;
                }
                BlindedElement::<Suite>::deserialize(element).ok()
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::BadRequest,
                    "a blinded element is not a valid ristretto255 point",
                )
            })?;
        Ok(Self {
            account_key: key.to_bytes(),
            blinded,
        })
    }
}

/// An access token as presented in `Hello`.
pub(crate) struct Presented {
    key_id: u64,
    input: [u8; TOKEN_INPUT_LEN],
    output: [u8; TOKEN_OUTPUT_LEN],
}

fn token_invalid(why: &str) -> Refusal {
    Refusal::new(ErrorCode::TokenInvalid, why)
}

impl Presented {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, Refusal> {
        let token = wire::AccessToken::decode(bytes)
            .map_err(|_| token_invalid("the access token does not decode"))?;
        Ok(Self {
            key_id: token.key_id,
            input: token
                .input
                .as_ref()
                .try_into()
                .map_err(|_| token_invalid("the access token's input must be 32 bytes"))?,
            output: token
                .output
                .as_ref()
                .try_into()
                .map_err(|_| token_invalid("the access token's output must be 64 bytes"))?,
        })
    }
}

/// Checks a token against its key: the pure, CPU-bound part of redemption.
pub(crate) fn verify(key: &TokenKey, token: &Presented) -> Result<(), Refusal> {
    let expected = key
        .evaluate(&token.input)
        .map_err(|_| token_invalid("the access token's input is unusable"))?;
    // Constant time, so a forger learns nothing byte by byte.
    if !bool::from(expected[..].ct_eq(&token.output)) {
        return Err(token_invalid("the access token is not valid"));
    }
    Ok(())
}

impl<S: Storage> Relay<S> {
    /// The issuance account registered with `account_key`, refused if
    /// there is none or it was revoked.
    pub(crate) fn live_account(
        &self,
        account_key: &[u8; 32],
    ) -> Result<crate::storage::Account, Refusal> {
        let account = self.storage().account(account_key)?.ok_or_else(|| {
            Refusal::new(
                ErrorCode::Unauthorized,
                "no issuance account has this key; register first",
            )
        })?;
        if account.revoked {
            return Err(Refusal::new(
                ErrorCode::AccountRevoked,
                "this device's relay access was revoked",
            ));
        }
        Ok(account)
    }

    /// The current period key, signed by the issuer key.
    pub(crate) fn token_key(&self) -> Result<wire::TokenKeyOk, Refusal> {
        let current = self
            .tokens
            .current(&**self.storage(), self.clock.now_secs())?;
        Ok(self.tokens.signed(&current))
    }

    /// Evaluates an issuance request within the account's budget (the count
    /// is not yet durable: the caller awaits group commit before replying).
    pub(crate) fn issue(&self, issuance: &Issuance) -> Result<wire::IssueOk, Refusal> {
        let now = self.clock.now_secs();
        let n = issuance.blinded.len() as u32;
        let budget = self.tokens.config.tokens_per_period;
        let current = self.tokens.current(&**self.storage(), now)?;
        self.tokens.with_state(&**self.storage(), now, |_, _| {
            self.live_account(&issuance.account_key)?;
            let issued = self
                .storage()
                .issued(&issuance.account_key, current.period)?;
            if issued.saturating_add(n) > budget {
                return Err(Refusal::new(
                    ErrorCode::TokenBudgetExceeded,
                    format!(
                        "{} of this period's {budget} tokens are left for this account",
                        budget.saturating_sub(issued)
                    ),
                ));
            }
            self.storage()
                .set_issued(&issuance.account_key, current.period, issued + n)?;
            Ok(())
        })?;
        let evaluated = current
            .key
            .batch_blind_evaluate(&mut rand_core_06::OsRng, &issuance.blinded)
            .map_err(|_| Refusal::new(ErrorCode::Internal, "token evaluation failed"))?;
        Ok(wire::IssueOk {
            key: Some(self.tokens.signed(&current)),
            evaluated_elements: evaluated
                .messages
                .iter()
                .map(|m| m.serialize().to_vec().into())
                .collect(),
            proof: evaluated.proof.serialize().to_vec().into(),
        })
    }

    /// Redeems an access token: checks it and records it spent (not yet
    /// durable: the caller awaits group commit before the welcome).
    pub(crate) fn redeem(&self, bytes: &[u8]) -> Result<(), Refusal> {
        let token = Presented::parse(bytes)?;
        let key: Arc<TokenKey> =
            self.tokens
                .redeemable(&**self.storage(), self.clock.now_secs(), token.key_id)?;
        verify(&key, &token)?;
        let input_hash: [u8; 32] = Sha256::digest(token.input).into();
        if !self.storage().spend_token(token.key_id, &input_hash)? {
            return Err(token_invalid("this access token was already used"));
        }
        Ok(())
    }
}
