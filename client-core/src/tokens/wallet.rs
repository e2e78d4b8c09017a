//! The token wallet: unspent access tokens in the store, handed out once
//! each, and the period keys seen (two keys for one period is a warning).

use std::sync::Arc;

use sotto_proto::wire::ErrorCode;
use sotto_proto::{TOKEN_INPUT_LEN, TOKEN_OUTPUT_LEN};
use zeroize::Zeroizing;

use super::{AccessToken, TokenError, random};
use crate::net::{RelayAddr, RelayConnection};
use crate::store::{Batch, Store, StoreError, Tree};

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
/// Tree `Meta`: the token period (seconds, be64) the team's roster names.
pub(crate) const TOKEN_PERIOD: &[u8] = b"token-period";
/// Tree `Meta`: period keys other members named with a generation higher
/// than any this device held for their period, by key ID → fingerprint.
pub(crate) const NAMED_KEY_PREFIX: &[u8] = b"token-key-named/";

/// How far this device's clock may be from the relay's before a period key
/// of the neighbouring period is refused.
const PERIOD_SKEW_SECS: u64 = 300;

/// The period a key ID names (its low 40 bits: `generation << 40 | period`,
/// `TokenKeyOk.key_id`).
pub(crate) fn key_period(key_id: u64) -> u64 {
    key_id & ((1 << 40) - 1)
}

/// The generation a key ID names (its high bits). It rises relay-wide with
/// each revocation and never goes back, so at any moment every member is
/// given the same key for a period; an older generation is only ever a
/// device that has not refilled since.
pub(crate) fn key_generation(key_id: u64) -> u64 {
    key_id >> 40
}

/// The token period (seconds, 0: unknown) the team's roster names, as this
/// device last read it.
pub(crate) fn team_token_period(store: &dyn Store) -> Result<u64, StoreError> {
    Ok(store
        .get(Tree::Meta, TOKEN_PERIOD)?
        .and_then(|value| Some(u64::from_be_bytes(value.as_slice().try_into().ok()?)))
        .unwrap_or(0))
}

/// Records the token period the team's roster names.
pub(crate) fn set_team_token_issuer(store: &dyn Store, period_secs: u64) -> Result<(), StoreError> {
    let value = period_secs.to_be_bytes();
    if store
        .get(Tree::Meta, TOKEN_PERIOD)?
        .is_none_or(|stored| stored.as_slice() != value.as_slice())
    {
        store.put(Tree::Meta, TOKEN_PERIOD, &value)?;
    }
    Ok(())
}

/// Key IDs and values under `prefix` (a key ID each).
pub(crate) fn by_key_id(
    store: &dyn Store,
    prefix: &[u8],
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    Ok(store
        .scan_prefix(Tree::Meta, prefix)?
        .into_iter()
        .filter_map(|(key, value)| {
            let id = key.get(prefix.len()..)?;
            Some((u64::from_be_bytes(id.try_into().ok()?), value.to_vec()))
        })
        .collect())
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
        let known = by_key_id(self.store.as_ref(), PERIOD_KEY_PREFIX)?;
        let named = by_key_id(self.store.as_ref(), NAMED_KEY_PREFIX)?;
        for token in tokens {
            // Generations never go back: a key of this period older than
            // one this device already held, or than one another member
            // named, means the relay shows members different keys (to
            // tell their tokens apart). So does a member naming another
            // key for this very ID.
            let generation = key_generation(token.key_id);
            let fingerprint = super::token_key_fingerprint(token.key_id, &token.key_public);
            let older = |id: u64| {
                key_period(id) == key_period(token.key_id) && key_generation(id) > generation
            };
            if token.key_public != [0; 32]
                && (known.iter().any(|(id, _)| older(*id))
                    || named.iter().any(|(id, named)| {
                        older(*id) || (*id == token.key_id && named.as_slice() != fingerprint)
                    }))
            {
                batch.put(
                    Tree::Meta,
                    [KEY_WARNING_PREFIX, &token.key_id.to_be_bytes()].concat(),
                    &[],
                );
            }
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

    /// Refuses `tokens` if their key's period is not the current one at
    /// `now` (give or take a few minutes of clock skew), when the team's
    /// roster named the relay's token period: a relay that hands this
    /// device a key of another period could tell its tokens apart.
    pub fn check_period(&self, tokens: &[AccessToken], now: u64) -> Result<(), TokenError> {
        let period_secs = team_token_period(self.store.as_ref())?;
        if period_secs == 0 {
            return Ok(());
        }
        let earliest = now.saturating_sub(PERIOD_SKEW_SECS) / period_secs;
        let latest = now.saturating_add(PERIOD_SKEW_SECS) / period_secs;
        match tokens
            .iter()
            .map(|token| key_period(token.key_id))
            .find(|period| *period < earliest || *period > latest)
        {
            Some(period) => Err(TokenError::KeyOutsidePeriod {
                period,
                current: now / period_secs,
            }),
            None => Ok(()),
        }
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

    fn warnings(store: &Arc<dyn Store>) -> Vec<u64> {
        store
            .scan_prefix(Tree::Meta, KEY_WARNING_PREFIX)
            .unwrap()
            .into_iter()
            .map(|(key, _)| u64::from_be_bytes(key[KEY_WARNING_PREFIX.len()..].try_into().unwrap()))
            .collect()
    }

    /// Issue 18 item 6: per period, not only per key ID. Generations rise
    /// relay-wide and never go back, so a newer generation is a revocation
    /// (no warning), while a refill of an older generation than this
    /// device held, or than another member named, is the relay showing
    /// members different keys for one period.
    #[test]
    fn an_older_generation_in_one_period_than_one_seen_is_a_warning() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
        let wallet = TokenWallet::new(store.clone());
        let period = 500;
        wallet.add(&[token(period, 100)]).unwrap();
        let mut revoked = token((3 << 40) | period, 100);
        revoked.key_public = [8; 32];
        wallet.add(&[revoked]).unwrap();
        // Another period's key is never compared.
        let mut other_period = token(period - 1, 100);
        other_period.key_public = [6; 32];
        wallet.add(&[other_period]).unwrap();
        assert_eq!(warnings(&store), Vec::<u64>::new());

        let mut older = token((1 << 40) | period, 100);
        older.key_public = [7; 32];
        wallet.add(&[older]).unwrap();
        assert_eq!(warnings(&store), [(1 << 40) | period]);

        // Another member named generation 5 of the period; the relay then
        // hands this device generation 4.
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
        let wallet = TokenWallet::new(store.clone());
        store
            .put(
                Tree::Meta,
                &[NAMED_KEY_PREFIX, &((5u64 << 40) | period).to_be_bytes()].concat(),
                &[1; 16],
            )
            .unwrap();
        wallet.add(&[token((4 << 40) | period, 100)]).unwrap();
        assert_eq!(warnings(&store), [(4 << 40) | period]);
    }

    /// Issue 18 item 6: once the roster named the relay's token period, a
    /// key of another period than the current one is refused (a few
    /// minutes of clock skew aside).
    #[test]
    fn a_key_outside_the_current_period_is_refused() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
        let wallet = TokenWallet::new(store.clone());
        let key = (2 << 40) | 50;
        // Period unknown: nothing to check against.
        wallet.check_period(&[token(key, 0)], 9_000).unwrap();
        set_team_token_issuer(store.as_ref(), 100).unwrap();
        for now in [5_000, 5_099, 4_990, 5_110] {
            wallet.check_period(&[token(key, 0)], now).unwrap();
        }
        for now in [4_000, 5_500, 9_000] {
            assert!(matches!(
                wallet.check_period(&[token(key, 0)], now),
                Err(TokenError::KeyOutsidePeriod { period: 50, .. })
            ));
        }
        assert!(matches!(
            wallet.check_period(&[token(key, 0), token((2 << 40) | 57, 0)], 5_000),
            Err(TokenError::KeyOutsidePeriod { period: 57, .. })
        ));
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
