//! The calls to the relay's token issuer: bootstrap, registration (by
//! invite or by a device of the same member), refill, revocation, and the
//! current period key.

use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use prost::Message;
use sotto_proto::wire::{self, ErrorCode, client_frame::Request, response::Result as Reply};
use sotto_proto::{Challenge, admin_signing_message};

use super::{
    ACCOUNT_TAG, AccessToken, IssuanceAccount, RegistrationToken, RevocationSecret, TokenError,
    TokenRequest, VerifiedTokenKey, unexpected, verify_token_key,
};
use crate::net::RelayConnection;

/// Bootstraps the relay with its one-time code: `admin_key` becomes the
/// relay admin credential. Returns the relay's issuer key (pin it).
pub async fn bootstrap(
    conn: &RelayConnection,
    code: &str,
    admin_key: &SigningKey,
) -> Result<VerifyingKey, TokenError> {
    Ok(bootstrap_issuer(conn, code, admin_key).await?.0)
}

/// [`bootstrap`], also returning the relay's token period in seconds (0
/// from a relay that does not say), which the admin writes into the
/// team's roster.
pub async fn bootstrap_issuer(
    conn: &RelayConnection,
    code: &str,
    admin_key: &SigningKey,
) -> Result<(VerifyingKey, u64), TokenError> {
    let request = Request::Bootstrap(wire::Bootstrap {
        code: code.to_owned(),
        admin_key: admin_key.verifying_key().to_bytes().to_vec().into(),
    });
    match conn.request(request).await? {
        Reply::Bootstrap(ok) => {
            let bytes: [u8; 32] = ok
                .issuer_key
                .as_ref()
                .try_into()
                .map_err(|_| TokenError::Protocol("issuer key of the wrong length".into()))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| TokenError::Protocol("issuer key is not an ed25519 key".into()))?;
            Ok((key, ok.token_period_secs))
        }
        other => Err(unexpected(&other)),
    }
}

async fn admin(
    conn: &RelayConnection,
    admin_key: &SigningKey,
    op: wire::admin_op::Op,
) -> Result<Reply, TokenError> {
    let body = wire::AdminOp { op: Some(op) }.encode_to_vec();
    let signature = admin_key.sign(&admin_signing_message(conn.challenge(), &body));
    let request = Request::Admin(wire::AdminRequest {
        body: body.into(),
        signature: signature.to_bytes().to_vec().into(),
    });
    conn.request(request).await.map_err(|e| match e.code() {
        Some(ErrorCode::Unauthorized) => TokenError::NotAdmin,
        _ => e.into(),
    })
}

/// Admin: mints `count` registration tokens valid until `expires_at`
/// (unix seconds; the relay rounds it up to its token period).
pub async fn mint_registrations(
    conn: &RelayConnection,
    admin_key: &SigningKey,
    count: u32,
    expires_at: u64,
) -> Result<Vec<RegistrationToken>, TokenError> {
    let op = wire::admin_op::Op::Mint(wire::MintRegistrations { count, expires_at });
    match admin(conn, admin_key, op).await? {
        Reply::Mint(ok) => ok
            .registration_tokens
            .iter()
            .map(|t| {
                t.as_ref()
                    .try_into()
                    .map(RegistrationToken)
                    .map_err(|_| TokenError::Protocol("registration token length".into()))
            })
            .collect(),
        other => Err(unexpected(&other)),
    }
}

/// Admin: revokes the issuance account created with the registration token
/// of this hash ([`RegistrationToken::hash`]); the relay also retires its
/// current token key, so every device refills.
pub async fn revoke(
    conn: &RelayConnection,
    admin_key: &SigningKey,
    registration_token_hash: &[u8; 32],
) -> Result<(), TokenError> {
    let op = wire::admin_op::Op::Revoke(wire::RevokeAccount {
        registration_token_hash: registration_token_hash.to_vec().into(),
    });
    match admin(conn, admin_key, op).await? {
        Reply::Revoke(_) => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// Registers this device's issuance account with an invite's token,
/// without a revocation secret (only the admin can end its access); new
/// code should use [`register_device`].
pub async fn register(
    conn: &RelayConnection,
    registration_token: &RegistrationToken,
    account: &IssuanceAccount,
) -> Result<(), TokenError> {
    register_with(conn, registration_token, account, Bytes::new()).await
}

/// Registers this device's issuance account with a registration token
/// (from an invite, or minted by another device of the member) and the
/// hash of its `revocation` secret, so the member's devices holding the
/// secret can end its relay access ([`revoke_device`]).
pub async fn register_device(
    conn: &RelayConnection,
    registration_token: &RegistrationToken,
    account: &IssuanceAccount,
    revocation: &RevocationSecret,
) -> Result<(), TokenError> {
    let hash = revocation.hash().to_vec().into();
    register_with(conn, registration_token, account, hash).await
}

async fn register_with(
    conn: &RelayConnection,
    registration_token: &RegistrationToken,
    account: &IssuanceAccount,
    revocation_hash: Bytes,
) -> Result<(), TokenError> {
    let request = Request::Register(wire::Register {
        registration_token: registration_token.0.to_vec().into(),
        account_key: account.public_key().to_vec().into(),
        revocation_hash,
    });
    match conn.request(request).await? {
        Reply::Register(_) => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// The message an account request's signature covers.
fn account_signing_message(challenge: &Challenge, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(ACCOUNT_TAG.len() + 32 + body.len());
    message.extend_from_slice(ACCOUNT_TAG);
    message.extend_from_slice(challenge.as_bytes());
    message.extend_from_slice(body);
    message
}

/// Mints one single-use registration token for another device of this
/// member, signed by this device's registered issuance `account`. The
/// relay caps `expires_at` (a week by default) and rounds it up to its
/// token period; it counts these per account and refuses beyond its cap
/// ([`TokenError::DeviceRegistrationsExhausted`]), and refuses all of them
/// if its operator turned the feature off
/// ([`TokenError::SelfServiceDisabled`]).
pub async fn mint_device_registration(
    conn: &RelayConnection,
    account: &IssuanceAccount,
    expires_at: u64,
) -> Result<RegistrationToken, TokenError> {
    let body = wire::AccountOp {
        op: Some(wire::account_op::Op::MintDevice(
            wire::MintDeviceRegistration { expires_at },
        )),
    }
    .encode_to_vec();
    let signature = account
        .signing_key()
        .sign(&account_signing_message(conn.challenge(), &body));
    let request = Request::Account(wire::AccountRequest {
        account_key: account.public_key().to_vec().into(),
        body: body.into(),
        signature: signature.to_bytes().to_vec().into(),
    });
    let reply = conn.request(request).await.map_err(|e| match e.code() {
        Some(ErrorCode::Unauthorized) => TokenError::AccountUnknown,
        Some(ErrorCode::QuotaExceeded) => TokenError::DeviceRegistrationsExhausted,
        _ => e.into(),
    })?;
    match reply {
        Reply::Mint(ok) => match ok.registration_tokens.as_slice() {
            [token] => token
                .as_ref()
                .try_into()
                .map(RegistrationToken)
                .map_err(|_| TokenError::Protocol("registration token length".into())),
            tokens => Err(TokenError::Protocol(format!(
                "asked for one registration token, got {}",
                tokens.len()
            ))),
        },
        other => Err(unexpected(&other)),
    }
}

/// Ends the relay access of the device that registered with this
/// revocation secret's hash: it gets no more tokens, and the relay moves
/// to a new token key at once, so the tokens it hoarded die too (every
/// other device refills by itself). Repeating it is harmless.
pub async fn revoke_device(
    conn: &RelayConnection,
    secret: &RevocationSecret,
) -> Result<(), TokenError> {
    let request = Request::RevokeDevice(wire::RevokeDevice {
        revocation_secret: secret.as_bytes().to_vec().into(),
    });
    let reply = conn.request(request).await.map_err(|e| match e.code() {
        Some(ErrorCode::RegistrationInvalid) => TokenError::RevocationUnknown,
        _ => e.into(),
    })?;
    match reply {
        Reply::Revoke(_) => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// The relay's current period key, checked against the pinned issuer key.
pub async fn token_key(
    conn: &RelayConnection,
    issuer_key: &VerifyingKey,
) -> Result<VerifiedTokenKey, TokenError> {
    match conn.request(Request::TokenKey(wire::TokenKey {})).await? {
        Reply::TokenKey(key) => verify_token_key(&key, issuer_key),
        other => Err(unexpected(&other)),
    }
}

/// Fetches `n` tokens. Use a connection of its own (it may be opened
/// without a token): the relay sees the account on it.
pub async fn refill(
    conn: &RelayConnection,
    account: &IssuanceAccount,
    issuer_key: &VerifyingKey,
    n: u32,
) -> Result<Vec<AccessToken>, TokenError> {
    let request = TokenRequest::new(n)?;
    let issue = request.issue_request(account, conn.challenge());
    match conn.request(Request::IssueTokens(issue)).await? {
        Reply::Issue(reply) => request.finish(&reply, issuer_key),
        other => Err(unexpected(&other)),
    }
}
