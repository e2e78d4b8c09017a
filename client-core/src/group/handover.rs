//! Groups handed to a newly approved device of mine: the group states
//! and the Megolm sessions I can read.

use sotto_proto::client::{GroupSessionShare, payload};
use vodozemac::megolm::{ExportedSessionKey, InboundGroupSession, SessionConfig};

use super::{GroupId, INBOUND_PREFIX, InboundRecord, OUTBOUND_PREFIX, json, key};
use crate::engine::{Dropped, Engine, EngineError, Received, corrupt};
use crate::{Batch, Tree};

/// The history conversation name of a group (blinded like a handle).
impl Engine {
    /// What a newly approved device of mine needs to follow my groups:
    /// each group's state, with its secret, and every Megolm session I can
    /// read, with whose it is (DESIGN "Devices").
    pub(crate) fn group_handover(&self) -> Result<Vec<payload::Body>, EngineError> {
        let mut bodies = Vec::new();
        for group in self.groups.values().filter(|g| !g.left) {
            bodies.push(payload::Body::GroupState(group.state()));
        }
        for (store_key, value) in self.store.scan_prefix(Tree::Sessions, INBOUND_PREFIX)? {
            let Some(id) = store_key
                .get(INBOUND_PREFIX.len()..INBOUND_PREFIX.len() + 16)
                .and_then(|id| GroupId::try_from(id).ok())
            else {
                continue;
            };
            if self.groups.get(&id).is_none_or(|g| g.left) {
                continue;
            }
            let record: InboundRecord = serde_json::from_slice(&value).map_err(corrupt)?;
            let session = InboundGroupSession::from_pickle(record.pickle);
            bodies.push(payload::Body::GroupSession(GroupSessionShare {
                group_id: id.to_vec().into(),
                generation: record.generation,
                exported_key: session.export_at_first_known_index().to_bytes().into(),
                sender: record.sender,
                sender_key: record.sender_key.to_vec().into(),
                outbound: false,
                shared_with: Vec::new(),
            }));
        }
        Ok(bodies)
    }

    /// A Megolm session forwarded by one of my own devices (the caller
    /// checked that): stored as the session of the member it names.
    pub(crate) fn on_group_session_share(
        &mut self,
        share: GroupSessionShare,
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        let Some(id) = GroupId::try_from(share.group_id.as_ref())
            .ok()
            .filter(|id| self.groups.get(id).is_some_and(|g| !g.left))
        else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let (Ok(sender_key), Ok(exported)) = (
            <[u8; 32]>::try_from(share.sender_key.as_ref()),
            ExportedSessionKey::from_bytes(&share.exported_key),
        ) else {
            return Ok(self.drop_blob(Dropped::Mismatch));
        };
        let mut session = InboundGroupSession::import(&exported, SessionConfig::version_1());
        let session_id = session.session_id();
        if self.inbound_record(&id, &session_id)?.is_some() {
            return Ok(Received::Duplicate);
        }
        let unlocked = self.unlock_pending(&id, &session_id, Some(&mut session), batch)?;
        let record = InboundRecord {
            pickle: session.pickle(),
            sender: share.sender,
            sender_key,
            generation: share.generation,
            shared_with: None,
        };
        batch.put(
            Tree::Sessions,
            key(INBOUND_PREFIX, &[&id, session_id.as_bytes()]),
            &json(&record)?,
        );
        Ok(if unlocked.is_empty() {
            Received::Group
        } else {
            Received::Unlocked(unlocked)
        })
    }

    /// A device of `handle` was removed: my outbound sessions in the
    /// groups `handle` is in were shared with it, so each starts anew at
    /// my next message (the groups issue's exclusion rule).
    pub(crate) fn rotate_sessions_shared_with(&mut self, handle: &str) -> Result<(), EngineError> {
        let mut batch = Batch::new();
        for group in self.groups.values().filter(|g| g.current.has(handle)) {
            batch.delete(Tree::Sessions, key(OUTBOUND_PREFIX, &[&group.id]));
        }
        self.store.apply(batch)?;
        Ok(())
    }
}
