//! The relay's side of anonymous access (DESIGN §7): the long-term issuer
//! key, the schedule of VOPRF token keys, and the state every token
//! operation shares. The operations themselves live in `ops/admin.rs`,
//! `ops/register.rs` and `ops/tokens.rs`.
//!
//! **Key schedule.** Time is cut into periods of `token_period_secs`. The
//! key of period `p` in generation `g` is `DeriveKeyPair(seed, info)` of
//! RFC 9497 with `info = "sotto/token-key/v1" || be64(key_id)`, where
//! `key_id = g << 40 | p` and `seed` is a random secret stored once in the
//! database. So nothing but the seed and the generation is stored, keys
//! survive restarts, and a revocation (`g + 1`) retires every earlier key
//! at once. A key issues during its own period and is accepted until the
//! end of the next one plus `token_grace_secs`, so a token fetched just
//! before a rollover is still good for at least a period.
//!
//! **Issuer key.** An ed25519 key in `issuer-key` (0600) in the data dir,
//! created on first use like the certificate. It signs each period's VOPRF
//! public key; teams pin it, so a relay cannot hand one member a key of its
//! own to tag that member's tokens without members noticing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ed25519_dalek::{Signer, SigningKey};
use sotto_proto::token_key_signing_message;
use sotto_proto::wire::{self, ErrorCode};
use voprf::{Group, VoprfServer};
use zeroize::Zeroizing;

use crate::cert::write_private;
use crate::config::TokenConfig;
use crate::refusal::Refusal;
use crate::storage::{IssuerState, Storage};

/// The VOPRF ciphersuite: ristretto255-SHA512, verifiable mode.
pub(crate) type Suite = voprf::Ristretto255;
/// One period's VOPRF key.
pub(crate) type TokenKey = VoprfServer<Suite>;

const ISSUER_FILE: &str = "issuer-key";
const KEY_INFO_TAG: &[u8] = b"sotto/token-key/v1";
const PERIOD_BITS: u32 = 40;
const PERIOD_MASK: u64 = (1 << PERIOD_BITS) - 1;

/// A key's ID: its generation in the high bits, its period in the low 40,
/// so IDs order by generation then period and "every key older than X" is
/// one range.
pub(crate) fn key_id(generation: u32, period: u64) -> u64 {
    (u64::from(generation) << PERIOD_BITS) | (period & PERIOD_MASK)
}

fn split_key_id(key_id: u64) -> (u32, u64) {
    ((key_id >> PERIOD_BITS) as u32, key_id & PERIOD_MASK)
}

/// Token state loaded from storage on first use.
struct Live {
    state: IssuerState,
    keys: HashMap<u64, Arc<TokenKey>>,
    spent_floor: u64,
    issued_floor: u64,
}

/// Everything token operations share: configuration, the issuer key, and
/// the issuer state (loaded lazily, so a storage backend without token
/// support still runs a relay that does not require tokens).
pub struct Tokens {
    pub(crate) config: TokenConfig,
    issuer: SigningKey,
    data_dir: Option<PathBuf>,
    live: Mutex<Option<Live>>,
}

/// A current key and what clients need to check it.
pub(crate) struct CurrentKey {
    pub(crate) id: u64,
    pub(crate) key: Arc<TokenKey>,
    pub(crate) period: u64,
}

impl Tokens {
    /// Tokens for a relay whose data dir is `data_dir`: loads the issuer
    /// key from it, creating it on first start.
    pub fn load(config: TokenConfig, data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(ISSUER_FILE);
        let seed = match std::fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = Zeroizing::new(vec![0u8; 32]);
                getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
                write_private(&path, &seed)?;
                seed
            }
            Err(e) => return Err(e),
        };
        let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| {
            std::io::Error::other(format!(
                "{} is not a 32-byte key; restore it from a backup (members pinned it)",
                path.display()
            ))
        })?;
        Ok(Self {
            config,
            issuer: SigningKey::from_bytes(seed),
            data_dir: Some(data_dir.to_owned()),
            live: Mutex::new(None),
        })
    }

    /// Tokens with a fresh issuer key that is never stored and no data dir
    /// (so no bootstrap): for relays built directly in tests and benches.
    pub fn ephemeral(config: TokenConfig) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        // An RNG failure leaves a zero key; this constructor is for tests.
        let _ = getrandom::fill(seed.as_mut_slice());
        Self {
            config,
            issuer: SigningKey::from_bytes(&seed),
            data_dir: None,
            live: Mutex::new(None),
        }
    }

    /// The relay's issuer public key.
    pub fn issuer_key(&self) -> [u8; 32] {
        self.issuer.verifying_key().to_bytes()
    }

    pub(crate) fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    pub(crate) fn period(&self, now: u64) -> u64 {
        now / self.config.token_period_secs
    }

    /// Until when tokens of a key of `period` are accepted.
    pub(crate) fn valid_until(&self, period: u64) -> u64 {
        period
            .saturating_add(2)
            .saturating_mul(self.config.token_period_secs)
            .saturating_add(self.config.token_grace_secs)
    }

    /// Holds the lock every token operation's check-then-write runs under
    /// ([`Self::with_state`]), so a backup copies the token trees as one
    /// consistent cut.
    pub(crate) fn hold(&self) -> std::sync::MutexGuard<'_, impl Sized> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the issuer state under the lock, loading it first (and
    /// creating the seed on the very first use), then dropping spent sets
    /// and issuance counts that can no longer matter at `now`.
    pub(crate) fn with_state<S: Storage, R>(
        &self,
        storage: &S,
        now: u64,
        f: impl FnOnce(&mut IssuerState, &mut HashMap<u64, Arc<TokenKey>>) -> Result<R, Refusal>,
    ) -> Result<R, Refusal> {
        let mut guard = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let state = match storage.issuer_state()? {
                Some(state) => state,
                None => {
                    let mut state = IssuerState {
                        seed: [0; 32],
                        generation: 0,
                        admin_key: None,
                    };
                    getrandom::fill(&mut state.seed).map_err(|_| {
                        Refusal::new(ErrorCode::Internal, "the relay's random source failed")
                    })?;
                    storage.set_issuer_state(&state)?;
                    storage.flush()?;
                    state
                }
            };
            *guard = Some(Live {
                state,
                keys: HashMap::new(),
                spent_floor: 0,
                issued_floor: 0,
            });
        }
        let Some(live) = guard.as_mut() else {
            return Err(Refusal::new(ErrorCode::Internal, "token state not loaded"));
        };
        let result = f(&mut live.state, &mut live.keys)?;
        // Housekeeping: at most once per period (or per revocation).
        let period = self.period(now);
        let spent_floor = key_id(live.state.generation, period.saturating_sub(2));
        if spent_floor > live.spent_floor {
            let dropped = storage.drop_spent_before(spent_floor)?;
            live.keys.retain(|id, _| *id >= spent_floor);
            live.spent_floor = spent_floor;
            if dropped > 0 {
                tracing::info!(dropped, "spent tokens of retired keys dropped");
            }
        }
        if period > live.issued_floor {
            storage.drop_issued_before(period)?;
            live.issued_floor = period;
        }
        Ok(result)
    }

    /// The key of `id`, derived on first use and cached.
    pub(crate) fn key(
        state: &IssuerState,
        keys: &mut HashMap<u64, Arc<TokenKey>>,
        id: u64,
    ) -> Result<Arc<TokenKey>, Refusal> {
        if let Some(key) = keys.get(&id) {
            return Ok(key.clone());
        }
        let mut info = KEY_INFO_TAG.to_vec();
        info.extend_from_slice(&id.to_be_bytes());
        let key = Arc::new(TokenKey::new_from_seed(&state.seed, &info).map_err(|_| {
            Refusal::new(
                ErrorCode::Internal,
                "the relay could not derive its token key",
            )
        })?);
        keys.insert(id, key.clone());
        Ok(key)
    }

    /// The key that issues now.
    pub(crate) fn current<S: Storage>(&self, storage: &S, now: u64) -> Result<CurrentKey, Refusal> {
        let period = self.period(now);
        self.with_state(storage, now, |state, keys| {
            let id = key_id(state.generation, period);
            Ok(CurrentKey {
                id,
                key: Self::key(state, keys, id)?,
                period,
            })
        })
    }

    /// The key a token names, if tokens of it are accepted at `now`.
    pub(crate) fn redeemable<S: Storage>(
        &self,
        storage: &S,
        now: u64,
        id: u64,
    ) -> Result<Arc<TokenKey>, Refusal> {
        let (generation, period) = split_key_id(id);
        let current_period = self.period(now);
        self.with_state(storage, now, |state, keys| {
            if generation != state.generation
                || period > current_period
                || now >= self.valid_until(period)
            {
                return Err(Refusal::new(
                    ErrorCode::TokenInvalid,
                    "this access token's key is retired; fetch new tokens",
                ));
            }
            Self::key(state, keys, id)
        })
    }

    /// The signed description of a key.
    pub(crate) fn signed(&self, current: &CurrentKey) -> wire::TokenKeyOk {
        let public_key = Suite::serialize_elem(current.key.get_public_key()).to_vec();
        let valid_until = self.valid_until(current.period);
        let signature = self.issuer.sign(&token_key_signing_message(
            current.id,
            &public_key,
            valid_until,
        ));
        wire::TokenKeyOk {
            key_id: current.id,
            public_key: public_key.into(),
            issuer_signature: signature.to_bytes().to_vec().into(),
            valid_until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn tokens() -> Tokens {
        Tokens::ephemeral(TokenConfig {
            token_period_secs: 100,
            token_grace_secs: 10,
            ..TokenConfig::default()
        })
    }

    #[test]
    fn key_ids_order_by_generation_then_period() {
        assert!(key_id(1, 0) > key_id(0, PERIOD_MASK));
        assert_eq!(split_key_id(key_id(7, 12345)), (7, 12345));
    }

    #[test]
    fn a_key_is_accepted_for_its_period_the_next_and_the_grace() {
        let t = tokens();
        let storage = MemoryStorage::new();
        let current = t.current(&storage, 1_000).unwrap();
        assert_eq!(current.period, 10);
        for now in [1_000, 1_199, 1_209] {
            t.redeemable(&storage, now, current.id).unwrap();
        }
        let refused = t.redeemable(&storage, 1_210, current.id).err().unwrap();
        assert_eq!(refused.code, ErrorCode::TokenInvalid);
        // A key of a future period is never accepted.
        assert!(t.redeemable(&storage, 1_000, key_id(0, 11)).is_err());
    }

    #[test]
    fn keys_are_the_same_after_reloading_the_state() {
        let storage = MemoryStorage::new();
        let a = tokens().current(&storage, 1_000).unwrap();
        let b = tokens().current(&storage, 1_000).unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(a.key.get_public_key(), b.key.get_public_key());
    }
}
