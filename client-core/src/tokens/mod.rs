//! Anonymous access tokens, the client side (DESIGN §6, §7).
//!
//! A device has an [`IssuanceAccount`]: an ed25519 key of its own, used only
//! to ask the relay for tokens (never its identity, so the relay cannot
//! link a member's devices). It registers once with a single-use
//! [`RegistrationToken`] from its invite ([`register`]), then [`refill`]s a
//! [`TokenWallet`] with VOPRF tokens (RFC 9497, verifiable mode). Each new
//! connection presents one unspent token ([`TokenWallet::connect`]); the
//! relay cannot tell which device's tokens it sees.
//!
//! A refill is checked twice before any token is kept: the period key must
//! be signed by the relay's issuer key the team pinned, and the DLEQ proof
//! must show every token was made with that key. Either failing means the
//! relay may be trying to tag this device with a key of its own.
//!
//! The admin's side: [`bootstrap`] the relay once, [`mint_registrations`]
//! for invites, [`revoke`] a device's issuance account.
//! [`TokenRequest`] is the sans-IO core of [`refill`].
//!
//! A member's own devices (DESIGN §8 "Devices"): a device registers with
//! the hash of a [`RevocationSecret`] of its own ([`register_device`]),
//! which the member's other devices keep, so any of them can end its relay
//! access ([`revoke_device`]) without the admin. A registered device can
//! [`mint_device_registration`] for a new device of its member, if the
//! relay's operator allows it. The relay keeps only a count of those per
//! account, never which token went to which device, so nothing it stores
//! links a member's devices.
//!
//! Where each part lives:
//!
//! - `mod.rs`: the types — [`IssuanceAccount`], [`RegistrationToken`],
//!   [`RevocationSecret`], [`AccessToken`], [`VerifiedTokenKey`], and
//!   [`TokenRequest`], the sans-IO core of a refill.
//! - `relay`: the calls to the relay's issuer (bootstrap, registration,
//!   refill, revocation, the period key).
//! - `wallet`: the [`TokenWallet`] of unspent tokens in the store and the
//!   period keys it has seen.

mod relay;
mod wallet;

pub use relay::{
    bootstrap, bootstrap_issuer, mint_device_registration, mint_registrations, refill, register,
    register_device, revoke, revoke_device, token_key,
};
pub use wallet::TokenWallet;
pub(crate) use wallet::{
    KEY_WARNING_PREFIX, NAMED_KEY_PREFIX, PERIOD_KEY_PREFIX, by_key_id, key_generation, key_period,
    set_team_token_issuer,
};

use bytes::Bytes;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;
use sotto_proto::wire::{self, ErrorCode, response::Result as Reply};
use sotto_proto::{
    Challenge, REGISTRATION_TOKEN_LEN, TOKEN_INPUT_LEN, TOKEN_OUTPUT_LEN, issue_signing_message,
    registration_token_hash, token_key_signing_message,
};
use voprf::{EvaluationElement, Group, Proof, VoprfClient};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::net::NetError;
use crate::store::{Store, StoreError, Tree};

type Suite = voprf::Ristretto255;

const ACCOUNT_KEY: &[u8] = b"issuance-account";

/// Device revocation hashes: `SHA-256(REVOCATION_TAG || secret)`. The relay
/// uses the same tag (`relay/src/ops/device.rs`).
pub const REVOCATION_TAG: &[u8] = b"sotto/device-revocation/v1";
/// Account requests: the account key signs `ACCOUNT_TAG || challenge ||
/// body`. The relay uses the same tag (`relay/src/ops/device.rs`).
pub const ACCOUNT_TAG: &[u8] = b"sotto/account/v1";

/// A token operation failed. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The bootstrap code is wrong or was used.
    #[error(
        "this bootstrap code is wrong or was already used; `sotto-relay bootstrap-code` on the relay prints it while it is unused"
    )]
    BootstrapInvalid,
    /// The registration token is unknown to the relay.
    #[error("this invite is not valid for this relay; ask your admin for a new one")]
    InviteInvalid,
    /// The registration token expired.
    #[error("this invite expired; ask your admin for a new one")]
    InviteExpired,
    /// The registration token was used.
    #[error("this invite was already used; ask your admin for a new one")]
    InviteUsed,
    /// The issuance account was revoked.
    #[error("this device's access to the relay was revoked; ask your admin")]
    Revoked,
    /// The period's budget is used up.
    #[error(
        "this device fetched all the access tokens it may for now; try again in the next period"
    )]
    BudgetExceeded,
    /// The admin key is not the relay's admin.
    #[error("the relay does not accept this admin key; only the admin who bootstrapped it may")]
    NotAdmin,
    /// The relay's operator turned self-service device registration off.
    #[error(
        "this relay does not let devices register their member's new devices (its operator turned self-service device registration off); ask your admin for a device invite: `sotto invite HANDLE --device`"
    )]
    SelfServiceDisabled,
    /// This device minted as many device registrations as the relay allows.
    #[error(
        "this device already registered as many new devices with the relay as it may; ask your admin for a device invite: `sotto invite HANDLE --device`"
    )]
    DeviceRegistrationsExhausted,
    /// The relay knows no issuance account with this device's key.
    #[error(
        "the relay does not know this device's access account (it never registered, or the relay lost its data); ask your admin for a device invite"
    )]
    AccountUnknown,
    /// No device registered with this revocation secret.
    #[error(
        "the relay knows no device registered with this revocation secret (a device that registered before revocation secrets existed can only be revoked by the admin: `sotto revoke HANDLE`)"
    )]
    RevocationUnknown,
    /// The key is not signed by the pinned issuer key.
    #[error(
        "the relay's token key is not signed by the issuer key your team pinned; it may be trying to track you: do not use it and tell your admin"
    )]
    BadIssuerSignature,
    /// The relay's token key is of another period than the current one.
    #[error(
        "the relay's token key is for period {period}, not the current period {current}: it may be trying to track you (or this device's clock is wrong); do not use it, check the clock and tell your admin"
    )]
    KeyOutsidePeriod {
        /// The period the key names.
        period: u64,
        /// The current period by this device's clock.
        current: u64,
    },
    /// The DLEQ proof does not verify.
    #[error(
        "the relay's tokens do not prove they were made with its published key; it may be trying to track you: do not use it and tell your admin"
    )]
    BadProof,
    /// No usable token is left.
    #[error("no access tokens left; fetch more (refill) on a connection without a token")]
    WalletEmpty,
    /// The relay answered something this client does not understand.
    #[error("the relay sent an unexpected reply: {0}")]
    Protocol(String),
    /// The OS random number generator failed.
    #[error("the system's random number generator failed")]
    Random,
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The network or the relay failed otherwise.
    #[error(transparent)]
    Net(NetError),
}

impl From<NetError> for TokenError {
    fn from(error: NetError) -> Self {
        match error.code() {
            Some(ErrorCode::BootstrapInvalid) => TokenError::BootstrapInvalid,
            Some(ErrorCode::RegistrationInvalid) => TokenError::InviteInvalid,
            Some(ErrorCode::RegistrationExpired) => TokenError::InviteExpired,
            Some(ErrorCode::RegistrationUsed) => TokenError::InviteUsed,
            Some(ErrorCode::AccountRevoked) => TokenError::Revoked,
            Some(ErrorCode::TokenBudgetExceeded) => TokenError::BudgetExceeded,
            Some(ErrorCode::NotAllowed) => TokenError::SelfServiceDisabled,
            _ => TokenError::Net(error),
        }
    }
}

fn random<const N: usize>() -> Result<[u8; N], TokenError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| TokenError::Random)?;
    Ok(bytes)
}

fn unexpected(reply: &Reply) -> TokenError {
    TokenError::Protocol(format!("unexpected reply {reply:?}"))
}

/// This device's issuance credential. Secret: no `Debug`, zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct IssuanceAccount {
    seed: [u8; 32],
}

impl IssuanceAccount {
    /// A fresh account key.
    pub fn generate() -> Result<Self, TokenError> {
        Ok(Self { seed: random()? })
    }

    /// The account stored in `store`, or a new one saved there.
    pub fn load_or_create(store: &dyn Store) -> Result<Self, TokenError> {
        if let Some(seed) = store.get(Tree::Identity, ACCOUNT_KEY)? {
            let seed: [u8; 32] = seed
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt {
                    tree: Tree::Identity,
                    reason: "the issuance account key is not 32 bytes",
                })?;
            return Ok(Self { seed });
        }
        let account = Self::generate()?;
        store.put(Tree::Identity, ACCOUNT_KEY, &account.seed)?;
        store.flush()?;
        Ok(account)
    }

    /// The public key the relay knows the account by.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing_key().verifying_key().to_bytes()
    }

    fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.seed)
    }
}

/// A single-use registration token (from an invite). Secret: no `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RegistrationToken([u8; REGISTRATION_TOKEN_LEN]);

impl RegistrationToken {
    /// From its 32 bytes.
    pub fn from_bytes(bytes: [u8; REGISTRATION_TOKEN_LEN]) -> Self {
        Self(bytes)
    }

    /// The bytes (to put in an invite).
    pub fn as_bytes(&self) -> &[u8; REGISTRATION_TOKEN_LEN] {
        &self.0
    }

    /// The hash the relay stores and the admin revokes by.
    pub fn hash(&self) -> [u8; 32] {
        registration_token_hash(&self.0)
    }
}

/// A device's revocation secret: whoever holds it may end the relay
/// access of the device that registered its hash ([`revoke_device`]). A
/// device makes its own and hands it to the member's other devices. Secret:
/// no `Debug`, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RevocationSecret([u8; 32]);

impl RevocationSecret {
    /// A fresh random secret.
    pub fn generate() -> Result<Self, TokenError> {
        Ok(Self(random()?))
    }

    /// From its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The bytes (to hand to the member's other devices).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `SHA-256(REVOCATION_TAG || secret)`: what the device registers with.
    pub fn hash(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::new()
            .chain_update(REVOCATION_TAG)
            .chain_update(self.0)
            .finalize()
            .into()
    }
}

/// One unblinded access token: good for one connection. No `Debug`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct AccessToken {
    key_id: u64,
    valid_until: u64,
    input: [u8; TOKEN_INPUT_LEN],
    output: [u8; TOKEN_OUTPUT_LEN],
    /// The period's public key it was issued under (all zero for tokens
    /// stored before this was kept).
    key_public: [u8; 32],
}

impl AccessToken {
    /// The token key it belongs to.
    pub fn key_id(&self) -> u64 {
        self.key_id
    }

    /// Unix seconds after which the relay refuses it.
    pub fn valid_until(&self) -> u64 {
        self.valid_until
    }

    /// The random input (tests check the relay stores nothing of it).
    pub fn input(&self) -> &[u8; TOKEN_INPUT_LEN] {
        &self.input
    }

    /// The VOPRF output.
    pub fn output(&self) -> &[u8; TOKEN_OUTPUT_LEN] {
        &self.output
    }

    /// The bytes for `Hello.access_token`.
    pub fn encode(&self) -> Bytes {
        wire::AccessToken {
            key_id: self.key_id,
            input: self.input.to_vec().into(),
            output: self.output.to_vec().into(),
        }
        .encode_to_vec()
        .into()
    }
}

/// A period key checked against the pinned issuer key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTokenKey {
    /// The key's ID, which tokens name (and messages carry, DESIGN §7).
    pub key_id: u64,
    /// The VOPRF public key.
    pub public_key: [u8; 32],
    /// Until when its tokens are accepted.
    pub valid_until: u64,
}

/// Checks a period key's issuer signature.
pub fn verify_token_key(
    key: &wire::TokenKeyOk,
    issuer_key: &VerifyingKey,
) -> Result<VerifiedTokenKey, TokenError> {
    let signature: [u8; 64] = key
        .issuer_signature
        .as_ref()
        .try_into()
        .map_err(|_| TokenError::BadIssuerSignature)?;
    issuer_key
        .verify_strict(
            &token_key_signing_message(key.key_id, &key.public_key, key.valid_until),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| TokenError::BadIssuerSignature)?;
    Ok(VerifiedTokenKey {
        key_id: key.key_id,
        public_key: key
            .public_key
            .as_ref()
            .try_into()
            .map_err(|_| TokenError::BadIssuerSignature)?,
        valid_until: key.valid_until,
    })
}

/// The sans-IO core of [`refill`]: blinds fresh inputs, builds the signed
/// request, and turns the relay's reply into tokens after every check.
/// Holds the blinds, so no `Debug`.
pub struct TokenRequest {
    inputs: Vec<[u8; TOKEN_INPUT_LEN]>,
    clients: Vec<VoprfClient<Suite>>,
    blinded: Vec<Bytes>,
}

impl TokenRequest {
    /// Blinds `n` fresh random inputs.
    pub fn new(n: u32) -> Result<Self, TokenError> {
        let mut request = Self {
            inputs: Vec::with_capacity(n as usize),
            clients: Vec::with_capacity(n as usize),
            blinded: Vec::with_capacity(n as usize),
        };
        for _ in 0..n {
            let input: [u8; TOKEN_INPUT_LEN] = random()?;
            let blind = VoprfClient::<Suite>::blind(&input, &mut rand_core_06::OsRng)
                .map_err(|_| TokenError::Random)?;
            request.inputs.push(input);
            request.clients.push(blind.state);
            request
                .blinded
                .push(blind.message.serialize().to_vec().into());
        }
        Ok(request)
    }

    /// The `IssueTokens` request for this connection's challenge.
    pub fn issue_request(
        &self,
        account: &IssuanceAccount,
        challenge: &Challenge,
    ) -> wire::IssueTokens {
        let signature = account
            .signing_key()
            .sign(&issue_signing_message(challenge, &self.blinded));
        wire::IssueTokens {
            account_key: account.public_key().to_vec().into(),
            blinded_elements: self.blinded.clone(),
            signature: signature.to_bytes().to_vec().into(),
        }
    }

    /// Checks the reply (issuer signature over the key, DLEQ proof) and
    /// unblinds the tokens.
    pub fn finish(
        self,
        reply: &wire::IssueOk,
        issuer_key: &VerifyingKey,
    ) -> Result<Vec<AccessToken>, TokenError> {
        let key = reply
            .key
            .as_ref()
            .ok_or_else(|| TokenError::Protocol("issuance without its key".into()))?;
        let key = verify_token_key(key, issuer_key)?;
        let public = Suite::deserialize_elem(&key.public_key).map_err(|_| TokenError::BadProof)?;
        if reply.evaluated_elements.len() != self.clients.len() {
            return Err(TokenError::Protocol(format!(
                "asked for {} tokens, got {}",
                self.clients.len(),
                reply.evaluated_elements.len()
            )));
        }
        let messages = reply
            .evaluated_elements
            .iter()
            .map(|e| EvaluationElement::<Suite>::deserialize(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TokenError::BadProof)?;
        let proof = Proof::<Suite>::deserialize(&reply.proof).map_err(|_| TokenError::BadProof)?;
        let outputs =
            VoprfClient::batch_finalize(&self.inputs, &self.clients, &messages, &proof, public)
                .map_err(|_| TokenError::BadProof)?;
        let mut tokens = Vec::with_capacity(self.inputs.len());
        for (input, output) in self.inputs.iter().zip(outputs) {
            let output = output.map_err(|_| TokenError::BadProof)?;
            tokens.push(AccessToken {
                key_id: key.key_id,
                valid_until: key.valid_until,
                input: *input,
                output: output[..]
                    .try_into()
                    .map_err(|_| TokenError::Protocol("VOPRF output length".into()))?,
                key_public: key.public_key,
            });
        }
        Ok(tokens)
    }
}

/// Domain separation of period key fingerprints in messages.
pub const TOKEN_KEY_ID_TAG: &[u8] = b"sotto/token-key-id/v1";

/// The fingerprint of a period key that messages carry (DESIGN §7).
pub fn token_key_fingerprint(key_id: u64, public_key: &[u8]) -> [u8; 16] {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(TOKEN_KEY_ID_TAG)
        .chain_update(key_id.to_be_bytes())
        .chain_update(public_key)
        .finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}
