//! Olm sessions per contact device: saving, adopting a new inbound
//! session, decrypting with the sessions of one device.

use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{OlmMessage, Session, SessionConfig, SessionPickle};

use super::{Engine, EngineError, MAX_SESSIONS, corrupt};
use crate::device::Device;
use crate::{Batch, Tree};

impl Engine {
    pub(super) fn save_sessions(
        &self,
        identity: &[u8; 32],
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let pickles: Vec<SessionPickle> = self
            .sessions
            .get(identity)
            .map(|sessions| sessions.iter().map(Session::pickle).collect())
            .unwrap_or_default();
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&pickles).map_err(corrupt)?);
        batch.put(
            Tree::Sessions,
            self.store.blind(identity).as_bytes().to_vec(),
            &bytes,
        );
        Ok(())
    }

    /// Keeps a new inbound session with `sender` (made outside
    /// [`Engine::decrypt`]) and the account it changed.
    pub(crate) fn adopt_session(
        &mut self,
        sender: [u8; 32],
        session: Session,
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let sessions = self.sessions.entry(sender).or_default();
        sessions.insert(0, session);
        sessions.truncate(MAX_SESSIONS);
        self.save_sessions(&sender, batch)?;
        batch.put(
            Tree::Identity,
            Device::store_key().to_vec(),
            &self.device.record()?,
        );
        Ok(())
    }

    /// Decrypts with an existing session or, for a pre-key message, a new
    /// inbound one. Olm authenticates `sender` either way.
    /// The flag is set when a new inbound session changed the account.
    pub(super) fn decrypt(
        &mut self,
        sender: Curve25519PublicKey,
        olm: &OlmMessage,
    ) -> Option<(Vec<u8>, bool)> {
        let sessions = self.sessions.entry(sender.to_bytes()).or_default();
        if let OlmMessage::PreKey(pre) = olm {
            if let Some(session) = sessions
                .iter_mut()
                .find(|s| s.session_id() == pre.session_id())
            {
                return session.decrypt(olm).ok().map(|p| (p, false));
            }
            let created = self
                .device
                .account
                .create_inbound_session(SessionConfig::version_1(), sender, pre)
                .ok()?;
            sessions.insert(0, created.session);
            sessions.truncate(MAX_SESSIONS);
            return Some((created.plaintext, true));
        }
        for index in 0..sessions.len() {
            if let Ok(plaintext) = sessions[index].decrypt(olm) {
                // The session the peer is using becomes the one we send on.
                let session = sessions.remove(index);
                sessions.insert(0, session);
                return Some((plaintext, false));
            }
        }
        None
    }

    /// Olm sessions held with `peer`'s devices (a restart must not add one).
    pub fn session_count(&self, peer: &str) -> usize {
        self.contacts
            .get(peer)
            .map(|devices| {
                devices
                    .iter()
                    .filter_map(|c| self.sessions.get(&c.card.identity_key.to_bytes()))
                    .map(Vec::len)
                    .sum()
            })
            .unwrap_or(0)
    }
}
