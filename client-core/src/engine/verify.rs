//! The engine's side of interactive verification (SAS): the key and MAC
//! messages, and which contacts are verified.

use sotto_proto::client::{Payload, SasKey, SasMac, payload};

use super::{Engine, EngineError, be64_or_zero};
use crate::Tree;

impl Engine {
    pub(super) fn sas_key_slot(&self, kind: &[u8], peer: &str) -> Vec<u8> {
        [
            kind,
            self.store.blind(peer.as_bytes()).as_bytes().as_slice(),
        ]
        .concat()
    }

    /// Sends `peer` my ephemeral SAS key.
    pub fn queue_sas_key(
        &mut self,
        peer: &str,
        public_key: &[u8],
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let payload = Payload {
            sent_at: now_ms,
            body: Some(payload::Body::SasKey(SasKey {
                public_key: public_key.to_vec().into(),
            })),
            ..Payload::default()
        };
        self.queue(peer, payload, None)?;
        Ok(())
    }

    /// Sends `peer` the MAC that says my user confirmed the match.
    pub fn queue_sas_mac(
        &mut self,
        peer: &str,
        mac: &[u8],
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let payload = Payload {
            sent_at: now_ms,
            body: Some(payload::Body::SasMac(SasMac {
                mac: mac.to_vec().into(),
            })),
            ..Payload::default()
        };
        self.queue(peer, payload, None)?;
        Ok(())
    }

    fn sas_record(
        &self,
        kind: &[u8],
        peer: &str,
        since_ms: u64,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        let Some(record) = self.store.get(Tree::Meta, &self.sas_key_slot(kind, peer))? else {
            return Ok(None);
        };
        let sent_at = be64_or_zero(Some(zeroize::Zeroizing::new(
            record.get(..8).unwrap_or_default().to_vec(),
        )));
        Ok((sent_at >= since_ms).then(|| record.get(8..).unwrap_or_default().to_vec()))
    }

    /// `peer`'s SAS key, if one sent at or after `since_ms` was received.
    pub fn received_sas_key(
        &self,
        peer: &str,
        since_ms: u64,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        self.sas_record(b"sas-key/", peer, since_ms)
    }

    /// `peer`'s SAS MAC, if one sent at or after `since_ms` was received.
    pub fn received_sas_mac(
        &self,
        peer: &str,
        since_ms: u64,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        self.sas_record(b"sas-mac/", peer, since_ms)
    }

    /// Records that I verified `peer`'s current device key.
    pub fn mark_verified(&self, peer: &str) -> Result<(), EngineError> {
        let key = self
            .verified_key(peer)?
            .ok_or_else(|| EngineError::UnknownContact(peer.to_owned()))?;
        self.store
            .put(Tree::Meta, &self.sas_key_slot(b"verified/", peer), &key)?;
        self.store.flush()?;
        Ok(())
    }

    /// Whether I verified `peer`'s *current* key — its user key, or its
    /// device key outside a team (a changed key is unverified again, never
    /// carried over).
    pub fn is_verified(&self, peer: &str) -> Result<bool, EngineError> {
        let Some(current) = self.verified_key(peer)? else {
            return Ok(false);
        };
        Ok(self
            .store
            .get(Tree::Meta, &self.sas_key_slot(b"verified/", peer))?
            .is_some_and(|key| key.as_slice() == current.as_slice()))
    }

    /// Keeps a verification across a user-key succession the team layer
    /// checked (the old key signed the new one): `old` verified means
    /// `new` is.
    pub(crate) fn carry_verification(
        &self,
        peer: &str,
        old: &[u8; 32],
        new: &[u8; 32],
    ) -> Result<(), EngineError> {
        let slot = self.sas_key_slot(b"verified/", peer);
        if self
            .store
            .get(Tree::Meta, &slot)?
            .is_some_and(|key| key.as_slice() == old.as_slice())
        {
            self.store.put(Tree::Meta, &slot, new)?;
        }
        Ok(())
    }
}
