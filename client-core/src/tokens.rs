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

use std::sync::Arc;

use bytes::Bytes;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;
use sotto_proto::wire::{self, ErrorCode, client_frame::Request, response::Result as Reply};
use sotto_proto::{
    Challenge, REGISTRATION_TOKEN_LEN, TOKEN_INPUT_LEN, TOKEN_OUTPUT_LEN, admin_signing_message,
    issue_signing_message, registration_token_hash, token_key_signing_message,
};
use voprf::{EvaluationElement, Group, Proof, VoprfClient};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::net::{NetError, RelayAddr, RelayConnection};
use crate::store::{Batch, Store, StoreError, Tree};

type Suite = voprf::Ristretto255;

const ACCOUNT_KEY: &[u8] = b"issuance-account";
const WALLET_PREFIX: &[u8] = b"token/";

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

    fn to_stored(&self) -> Zeroizing<Vec<u8>> {
        let mut value = Zeroizing::new(Vec::with_capacity(STORED_LEN + 32));
        value.extend_from_slice(&self.key_id.to_be_bytes());
        value.extend_from_slice(&self.valid_until.to_be_bytes());
        value.extend_from_slice(&self.input);
        value.extend_from_slice(&self.output);
        value.extend_from_slice(&self.key_public);
        value
    }

    fn from_stored(value: &[u8]) -> Option<Self> {
        // Tokens stored before the period key was kept lack its 32 bytes.
        if value.len() != STORED_LEN && value.len() != STORED_LEN + 32 {
            return None;
        }
        let key_public = match value.get(STORED_LEN..) {
            Some(bytes) if bytes.len() == 32 => bytes.try_into().ok()?,
            _ => [0; 32],
        };
        Some(Self {
            key_id: u64::from_be_bytes(value[..8].try_into().ok()?),
            valid_until: u64::from_be_bytes(value[8..16].try_into().ok()?),
            input: value[16..16 + TOKEN_INPUT_LEN].try_into().ok()?,
            output: value[16 + TOKEN_INPUT_LEN..STORED_LEN].try_into().ok()?,
            key_public,
        })
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

/// Bootstraps the relay with its one-time code: `admin_key` becomes the
/// relay admin credential. Returns the relay's issuer key (pin it).
pub async fn bootstrap(
    conn: &RelayConnection,
    code: &str,
    admin_key: &SigningKey,
) -> Result<VerifyingKey, TokenError> {
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
            VerifyingKey::from_bytes(&bytes)
                .map_err(|_| TokenError::Protocol("issuer key is not an ed25519 key".into()))
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

/// Bytes of a stored token before the period key: key ID, expiry, input,
/// output.
const STORED_LEN: usize = 16 + TOKEN_INPUT_LEN + TOKEN_OUTPUT_LEN;
/// Tree `Meta`: the period public key each key ID was seen with.
pub(crate) const PERIOD_KEY_PREFIX: &[u8] = b"token-key/";
/// Tree `Meta`: key IDs for which two different keys were seen.
pub(crate) const KEY_WARNING_PREFIX: &[u8] = b"token-key-warning/";
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

/// Unspent tokens, kept in the encrypted store (tree `Meta`, random keys),
/// each taken out before it is used so none is ever presented twice.
#[derive(Clone)]
pub struct TokenWallet {
    store: Arc<dyn Store>,
}

impl TokenWallet {
    /// The wallet in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Adds tokens (durably), and records the period key each was issued
    /// under ([`TokenWallet::period_keys`]).
    pub fn add(&self, tokens: &[AccessToken]) -> Result<(), TokenError> {
        let mut batch = Batch::new();
        for token in tokens {
            if token.key_public != [0; 32] {
                let key = [PERIOD_KEY_PREFIX, &token.key_id.to_be_bytes()].concat();
                match self.store.get(Tree::Meta, &key)? {
                    None => {
                        batch.put(Tree::Meta, key, &token.key_public);
                    }
                    // The relay showed this device two keys for one
                    // period: as telling as showing two members two keys.
                    Some(seen) if seen.as_slice() != token.key_public.as_slice() => {
                        batch.put(
                            Tree::Meta,
                            [KEY_WARNING_PREFIX, &token.key_id.to_be_bytes()].concat(),
                            &[],
                        );
                    }
                    Some(_) => {}
                }
            }
            let id: [u8; 16] = random()?;
            let mut key = WALLET_PREFIX.to_vec();
            key.extend_from_slice(&id);
            batch.put(Tree::Meta, key, &token.to_stored());
        }
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(())
    }

    /// Tokens still usable at `now`.
    pub fn len(&self, now: u64) -> Result<usize, TokenError> {
        Ok(self
            .store
            .scan_prefix(Tree::Meta, WALLET_PREFIX)?
            .iter()
            .filter(|(_, value)| {
                AccessToken::from_stored(value).is_some_and(|t| t.valid_until > now)
            })
            .count())
    }

    /// Takes one token usable at `now` out of the wallet (durably, before
    /// it is used); drops expired and unreadable ones on the way.
    pub fn take(&self, now: u64) -> Result<Option<AccessToken>, TokenError> {
        let entries = self.store.scan_prefix(Tree::Meta, WALLET_PREFIX)?;
        let mut batch = Batch::new();
        let mut found = None;
        for (key, value) in entries {
            batch.delete(Tree::Meta, key);
            match AccessToken::from_stored(&value) {
                Some(token) if token.valid_until > now => {
                    found = Some(token);
                    break;
                }
                _ => {}
            }
        }
        if !batch.is_empty() {
            self.store.apply(batch)?;
            self.store.flush()?;
        }
        Ok(found)
    }

    /// Forgets every token (after the relay retired their key).
    pub fn clear(&self) -> Result<(), TokenError> {
        let mut batch = Batch::new();
        for (key, _) in self.store.scan_prefix(Tree::Meta, WALLET_PREFIX)? {
            batch.delete(Tree::Meta, key);
        }
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(())
    }

    /// Opens a connection with one token, trying the next when the relay
    /// refuses one (spent, or of a retired key). [`TokenError::WalletEmpty`]
    /// means: refill.
    pub async fn connect(
        &self,
        relay: &RelayAddr,
        now: u64,
    ) -> Result<RelayConnection, TokenError> {
        while let Some(token) = self.take(now)? {
            match RelayConnection::connect(relay, Some(token.encode())).await {
                Ok(conn) => return Ok(conn),
                Err(e) if e.code() == Some(ErrorCode::TokenInvalid) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(TokenError::WalletEmpty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn token(key_id: u64, valid_until: u64) -> AccessToken {
        AccessToken {
            key_id,
            valid_until,
            input: [key_id as u8; 32],
            output: [7; 64],
            key_public: [9; 32],
        }
    }

    #[test]
    fn tokens_stored_before_the_period_key_was_kept_still_load() {
        let old = token(3, 100);
        let stored = old.to_stored();
        assert_eq!(
            AccessToken::from_stored(&stored).unwrap().key_public,
            [9; 32]
        );
        let without_key = &stored[..STORED_LEN];
        let loaded = AccessToken::from_stored(without_key).unwrap();
        assert_eq!((loaded.key_id, loaded.input), (3, old.input));
        assert_eq!(loaded.key_public, [0; 32]);
        assert!(AccessToken::from_stored(&stored[..STORED_LEN - 1]).is_none());
    }

    #[test]
    fn a_second_key_for_one_period_is_a_warning() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
        let wallet = TokenWallet::new(store.clone());
        wallet.add(&[token(5, 100)]).unwrap();
        assert!(
            store
                .scan_prefix(Tree::Meta, KEY_WARNING_PREFIX)
                .unwrap()
                .is_empty()
        );
        let mut other = token(5, 100);
        other.key_public = [8; 32];
        wallet.add(&[other]).unwrap();
        assert_eq!(
            store
                .scan_prefix(Tree::Meta, KEY_WARNING_PREFIX)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn the_wallet_hands_out_each_token_once_and_skips_expired_ones() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
        let wallet = TokenWallet::new(store);
        wallet
            .add(&[token(1, 100), token(2, 1_000), token(3, 1_000)])
            .unwrap();
        assert_eq!(wallet.len(500).unwrap(), 2);
        let a = wallet.take(500).unwrap().unwrap();
        let b = wallet.take(500).unwrap().unwrap();
        assert!(a != b);
        assert!(a.key_id() != 1 && b.key_id() != 1);
        assert!(wallet.take(500).unwrap().is_none());
    }

    #[test]
    fn the_account_key_persists_in_the_store() {
        let store = MemoryStore::new().unwrap();
        let a = IssuanceAccount::load_or_create(&store).unwrap();
        let b = IssuanceAccount::load_or_create(&store).unwrap();
        assert_eq!(a.public_key(), b.public_key());
    }

    #[test]
    fn a_revocation_hash_is_tagged_sha256_of_the_secret() {
        use sha2::Digest;
        let secret = RevocationSecret::from_bytes([5; 32]);
        let mut tagged = b"sotto/device-revocation/v1".to_vec();
        tagged.extend_from_slice(&[5; 32]);
        let expected: [u8; 32] = sha2::Sha256::digest(&tagged).into();
        assert_eq!(secret.hash(), expected);
        assert_ne!(
            RevocationSecret::generate().unwrap().hash(),
            RevocationSecret::generate().unwrap().hash()
        );
    }

    #[test]
    fn access_tokens_survive_the_store_encoding() {
        let t = token(9, 77);
        assert!(AccessToken::from_stored(&t.to_stored()) == Some(t));
    }
}
