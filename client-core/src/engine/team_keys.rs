//! Keys the team hands the engine: the access-token period keys a
//! payload names (DESIGN §7) and a pending team directory key.

use sotto_proto::Message as _;

use super::{DIR_KEY, Engine, EngineError, corrupt};
use crate::{Batch, Store, Tree};

/// The newest period key recorded by the token wallet, as payloads name it.
pub(super) fn newest_token_key(
    store: &dyn Store,
) -> Result<Option<sotto_proto::client::TokenKeyRef>, EngineError> {
    let newest = store
        .scan_prefix(Tree::Meta, crate::tokens::PERIOD_KEY_PREFIX)?
        .into_iter()
        .filter_map(|(key, public)| {
            let id = key.get(crate::tokens::PERIOD_KEY_PREFIX.len()..)?;
            Some((u64::from_be_bytes(id.try_into().ok()?), public))
        })
        .max_by_key(|(id, _)| *id);
    Ok(
        newest.map(|(key_id, public)| sotto_proto::client::TokenKeyRef {
            key_id,
            fingerprint: crate::token_key_fingerprint(key_id, &public)
                .to_vec()
                .into(),
        }),
    )
}

impl Engine {
    /// Re-reads which access-token period key this device holds (after a
    /// refill), for the payloads it queues from now on.
    pub fn refresh_token_key(&mut self) -> Result<(), EngineError> {
        self.token_key = newest_token_key(self.store.as_ref())?;
        Ok(())
    }

    /// The ID of the period key my payloads name, if I hold one.
    pub fn token_key_id(&self) -> Option<u64> {
        self.token_key.as_ref().map(|k| k.key_id)
    }

    /// A sender named a period key: if I hold another key for the same
    /// period, the relay showed us different keys — a way to tell members
    /// apart (DESIGN §7). Recorded, and reported by
    /// [`Engine::token_key_warnings`]; the message itself is authentic.
    pub(super) fn check_token_key(
        &self,
        named: Option<&sotto_proto::client::TokenKeyRef>,
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let Some(named) = named else {
            return Ok(());
        };
        use crate::tokens::{
            NAMED_KEY_PREFIX, PERIOD_KEY_PREFIX, by_key_id, key_generation, key_period,
        };
        // Per period, not only per key ID: a relay that gave each member a
        // generation of its own would show every member a key ID no other
        // holds. Generations rise relay-wide and never go back, so a
        // member naming an older one has not refilled since a revocation;
        // one naming a newer one is noted, and my next refill must reach
        // it (`TokenWallet::add` warns otherwise).
        let period = key_period(named.key_id);
        let mine: Vec<(u64, Vec<u8>)> = by_key_id(self.store.as_ref(), PERIOD_KEY_PREFIX)?
            .into_iter()
            .filter(|(id, _)| key_period(*id) == period)
            .collect();
        let named_before = by_key_id(self.store.as_ref(), NAMED_KEY_PREFIX)?
            .into_iter()
            .find(|(id, _)| *id == named.key_id);
        let differs = mine.iter().any(|(id, public)| {
            *id == named.key_id
                && crate::token_key_fingerprint(*id, public).as_slice()
                    != named.fingerprint.as_ref()
        }) || named_before
            .as_ref()
            .is_some_and(|(_, fingerprint)| fingerprint.as_slice() != named.fingerprint.as_ref());
        let newest_mine = mine.iter().map(|(id, _)| key_generation(*id)).max();
        if named_before.is_none()
            && newest_mine.is_none_or(|newest| key_generation(named.key_id) > newest)
        {
            batch.put(
                Tree::Meta,
                [NAMED_KEY_PREFIX, &named.key_id.to_be_bytes()].concat(),
                &named.fingerprint,
            );
        }
        if differs {
            batch.put(
                Tree::Meta,
                [
                    crate::tokens::KEY_WARNING_PREFIX,
                    &named.key_id.to_be_bytes(),
                ]
                .concat(),
                &[],
            );
        }
        Ok(())
    }

    /// Access-token periods for which this device saw a key other than one
    /// a member (or the relay, earlier) showed it: the relay may be telling
    /// members apart. Empty when all is well.
    pub fn token_key_warnings(&self) -> Result<Vec<u64>, EngineError> {
        Ok(self
            .store
            .scan_prefix(Tree::Meta, crate::tokens::KEY_WARNING_PREFIX)?
            .into_iter()
            .filter_map(|(key, _)| {
                key.get(crate::tokens::KEY_WARNING_PREFIX.len()..)
                    .and_then(|id| id.try_into().ok())
                    .map(u64::from_be_bytes)
            })
            .collect())
    }

    /// Records the period key `public` for `key_id` as this device's (the
    /// wallet does so on refill; tests use it to stage a relay that showed
    /// two members two keys).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn record_period_key(&mut self, key_id: u64, public: &[u8; 32]) -> Result<(), EngineError> {
        self.store.put(
            Tree::Meta,
            &[crate::tokens::PERIOD_KEY_PREFIX, &key_id.to_be_bytes()].concat(),
            public,
        )?;
        self.refresh_token_key()
    }

    /// Records the token period the team's roster names (the team layer
    /// calls it after each roster it read): refills refuse a key of
    /// another period.
    pub fn set_token_issuer(&self, period_secs: u64) -> Result<(), EngineError> {
        crate::tokens::set_team_token_issuer(self.store.as_ref(), period_secs)?;
        Ok(())
    }

    /// A directory key received and not yet applied by the team layer.
    pub fn pending_dir_key(&self) -> Result<Option<sotto_proto::client::DirKey>, EngineError> {
        self.store
            .get(Tree::Meta, DIR_KEY)?
            .map(|bytes| sotto_proto::client::DirKey::decode(bytes.as_slice()).map_err(corrupt))
            .transpose()
    }

    /// The team layer applied (or refused) the pending directory key.
    pub fn clear_dir_key(&self) -> Result<(), EngineError> {
        self.store.delete(Tree::Meta, DIR_KEY)?;
        Ok(self.store.flush()?)
    }
}
