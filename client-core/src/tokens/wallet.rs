//! The token wallet: unspent access tokens in the store, handed out once
//! each, and the period keys seen (two keys for one period is a warning).

use std::sync::Arc;

use sotto_proto::wire::ErrorCode;
use sotto_proto::{TOKEN_INPUT_LEN, TOKEN_OUTPUT_LEN};
use zeroize::Zeroizing;

use super::{AccessToken, TokenError, random};
use crate::net::{RelayAddr, RelayConnection};
use crate::store::{Batch, Store, Tree};

const WALLET_PREFIX: &[u8] = b"token/";

impl AccessToken {
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

/// Bytes of a stored token before the period key: key ID, expiry, input,
/// output.
const STORED_LEN: usize = 16 + TOKEN_INPUT_LEN + TOKEN_OUTPUT_LEN;
/// Tree `Meta`: the period public key each key ID was seen with.
pub(crate) const PERIOD_KEY_PREFIX: &[u8] = b"token-key/";
/// Tree `Meta`: key IDs for which two different keys were seen.
pub(crate) const KEY_WARNING_PREFIX: &[u8] = b"token-key-warning/";

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
    use crate::tokens::{IssuanceAccount, RevocationSecret};

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
