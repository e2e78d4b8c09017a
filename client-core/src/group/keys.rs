//! Megolm session keys: my outbound session, keys received, asked for
//! and withheld, and the messages that wait for a key.

use sotto_proto::Message as _;
use sotto_proto::client::{
    GroupEnvelope, GroupKey, GroupKeyRequest, GroupKeyWithheld, Payload, group_key_withheld,
    payload,
};
use vodozemac::megolm::{
    ExportedSessionKey, GroupSession, InboundGroupSession, SessionConfig, SessionKey,
};

use super::{
    Group, GroupId, INBOUND_PREFIX, InboundRecord, OUTBOUND_PREFIX, OutboundRecord, PENDING_PREFIX,
    PendingRecord, json, key, withheld,
};
use crate::engine::{Dropped, Engine, EngineError, Message, Received, Status, corrupt};
use crate::records::{Content, UNSUPPORTED_TEXT, conversation, mentions};
use crate::{Batch, Tree, records};

/// For tests: my current outbound session ID in a group, and each of my
/// sessions in it with whom it names as entitled to its key.
#[cfg(feature = "test-support")]
pub(crate) type OwnSessions = (Option<String>, Vec<(String, Vec<String>)>);

impl Engine {
    /// A session key from `peer`'s device `sender_key`.
    pub(crate) fn on_group_key(
        &mut self,
        peer: &str,
        sender_key: &[u8; 32],
        shared: GroupKey,
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        let Some(group) = GroupId::try_from(shared.group_id.as_ref())
            .ok()
            .and_then(|id| self.groups.get(&id))
        else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let id = group.id;
        let allowed = !group.left
            && group
                .generation(shared.generation)
                .is_some_and(|g| g.has(peer));
        if !allowed {
            return Ok(self.drop_blob(Dropped::Group));
        }
        let session = if !shared.session_key.is_empty() {
            SessionKey::from_bytes(&shared.session_key)
                .ok()
                .map(|k| InboundGroupSession::new(&k, SessionConfig::version_1()))
        } else {
            ExportedSessionKey::from_bytes(&shared.exported_key)
                .ok()
                .map(|k| InboundGroupSession::import(&k, SessionConfig::version_1()))
        };
        let Some(mut session) = session else {
            return Ok(self.drop_blob(Dropped::Mismatch));
        };
        let session_id = session.session_id();
        let record_key = key(INBOUND_PREFIX, &[&id, session_id.as_bytes()]);
        if let Some(existing) = self.inbound_record(&id, &session_id)? {
            let same_sender = existing.sender_key == *sender_key;
            let existing = InboundGroupSession::from_pickle(existing.pickle);
            if !same_sender {
                return Ok(self.drop_blob(Dropped::UnknownSender));
            }
            if existing.first_known_index() <= session.first_known_index() {
                return Ok(Received::Duplicate);
            }
        }
        let unlocked = self.unlock_pending(&id, &session_id, Some(&mut session), batch)?;
        let record = InboundRecord {
            pickle: session.pickle(),
            sender: peer.to_owned(),
            sender_key: *sender_key,
            generation: shared.generation,
            shared_with: None,
        };
        batch.put(Tree::Sessions, record_key, &json(&record)?);
        Ok(if unlocked.is_empty() {
            Received::Group
        } else {
            Received::Unlocked(unlocked)
        })
    }

    /// `peer` lacks the key of one of my sessions: send it if they were a
    /// member when it was made, else say it is withheld.
    pub(crate) fn on_group_key_request(
        &mut self,
        peer: &str,
        request: GroupKeyRequest,
        now_ms: u64,
    ) -> Result<Received, EngineError> {
        let Ok(id) = GroupId::try_from(request.group_id.as_ref()) else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let body = match self.inbound_record(&id, &request.session_id)? {
            Some(record) if record.sender_key == self.me => {
                let entitled = record
                    .shared_with
                    .as_ref()
                    .is_some_and(|members| members.iter().any(|m| m == peer));
                if entitled {
                    let session = InboundGroupSession::from_pickle(record.pickle);
                    payload::Body::GroupKey(GroupKey {
                        group_id: id.to_vec().into(),
                        generation: record.generation,
                        session_key: Default::default(),
                        exported_key: session.export_at_first_known_index().to_bytes().into(),
                    })
                } else {
                    withheld(
                        &id,
                        &request.session_id,
                        group_key_withheld::Reason::NotAMember,
                    )
                }
            }
            // Not my session: only its sender answers.
            Some(_) => return Ok(self.drop_blob(Dropped::Group)),
            None => withheld(
                &id,
                &request.session_id,
                group_key_withheld::Reason::UnknownSession,
            ),
        };
        let payload = Payload {
            sent_at: now_ms,
            body: Some(body),
            ..Payload::default()
        };
        self.queue(peer, payload, None)?;
        Ok(Received::Group)
    }

    /// `peer` will not share a session key: the messages waiting for it
    /// are shown as withheld.
    pub(crate) fn on_group_key_withheld(
        &mut self,
        peer: &str,
        withheld: GroupKeyWithheld,
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        let Ok(id) = GroupId::try_from(withheld.group_id.as_ref()) else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let pending = self.pending(&id, &withheld.session_id)?;
        let mut unlocked = Vec::new();
        for (pending_key, record) in pending {
            let Ok(envelope) = GroupEnvelope::decode(record.envelope.as_slice()) else {
                continue;
            };
            if envelope.sender_user != peer {
                continue;
            }
            batch.delete(Tree::Meta, pending_key);
            if let Some(mut message) = self.history_entry(&record.history_key)? {
                message.status = Status::Withheld;
                batch.put(
                    Tree::History,
                    record.history_key.clone(),
                    &records::encode_message(&message),
                );
                unlocked.push(message);
            }
        }
        Ok(Received::Unlocked(unlocked))
    }

    fn pending(
        &self,
        id: &GroupId,
        session_id: &str,
    ) -> Result<Vec<(Vec<u8>, PendingRecord)>, EngineError> {
        self.store
            .scan_prefix(
                Tree::Meta,
                &key(PENDING_PREFIX, &[id, session_id.as_bytes()]),
            )?
            .into_iter()
            .map(|(k, v)| Ok((k, serde_json::from_slice(&v).map_err(corrupt)?)))
            .collect()
    }

    fn history_entry(&self, history_key: &[u8]) -> Result<Option<Message>, EngineError> {
        self.store
            .get(Tree::History, history_key)?
            .map(|bytes| records::decode_message(&bytes).map_err(corrupt))
            .transpose()
    }

    /// Decrypts the messages that waited for `session_id`, in place in the
    /// history.
    pub(super) fn unlock_pending(
        &mut self,
        id: &GroupId,
        session_id: &str,
        session: Option<&mut InboundGroupSession>,
        batch: &mut Batch,
    ) -> Result<Vec<Message>, EngineError> {
        let Some(session) = session else {
            return Ok(Vec::new());
        };
        let mut unlocked = Vec::new();
        for (pending_key, record) in self.pending(id, session_id)? {
            batch.delete(Tree::Meta, pending_key);
            let Ok(envelope) = GroupEnvelope::decode(record.envelope.as_slice()) else {
                continue;
            };
            let Some(mut message) = self.history_entry(&record.history_key)? else {
                continue;
            };
            match self.decrypt_group(session, &envelope)? {
                Some((decrypted, seen)) => {
                    batch.put(Tree::Seen, seen, &[]);
                    message.id = decrypted.id;
                    message.sent_at = decrypted.sent_at;
                    message.status = Status::Received;
                    match decrypted.content {
                        Content::Timer { .. }
                            if !self.may_set_timer(&conversation(id), &message.from) =>
                        {
                            // An admin-only timer from a member: ignored,
                            // its placeholder goes.
                            tracing::info!(
                                "ignored a timer change from a member who is not a group admin"
                            );
                            batch.delete(Tree::History, record.history_key.clone());
                            continue;
                        }
                        Content::Timer { secs } => {
                            self.put_timer(&conversation(id), secs, batch);
                            message.text = crate::engine::timer_notice(secs);
                        }
                        Content::Text {
                            body,
                            reply_to,
                            expires_in_secs,
                        } => {
                            message.text = body;
                            message.reply_to = reply_to.map(hex::encode);
                            message.expires_at = Self::expiry(message.sent_at, expires_in_secs);
                            message.mentions_me =
                                !message.from_me && mentions(&message.text, &self.device.handle);
                            if let Ok(message_id) = hex::decode(&message.id) {
                                self.index_message(
                                    &message_id,
                                    &record.history_key,
                                    &conversation(id),
                                    batch,
                                );
                            }
                        }
                        Content::Unsupported => message.text = UNSUPPORTED_TEXT.to_owned(),
                        Content::File(info) => {
                            message.text = info.caption.clone();
                            message.file = Some(info.summary());
                            if let Ok(message_id) = hex::decode(&message.id) {
                                self.put_file(&message_id, &info, batch);
                                self.index_message(
                                    &message_id,
                                    &record.history_key,
                                    &conversation(id),
                                    batch,
                                );
                            }
                        }
                        change => {
                            // A change that waited for its key: applied
                            // now, and its placeholder goes.
                            batch.delete(Tree::History, record.history_key.clone());
                            let sender = message.from.clone();
                            if let Received::Updated(changed) = self.receive_change(
                                &conversation(id),
                                &sender,
                                &change,
                                message.sent_at,
                                batch,
                            )? {
                                unlocked.push(changed);
                            }
                            continue;
                        }
                    }
                }
                None => message.status = Status::Withheld,
            }
            // The placeholder had no lifetime; the text may have one.
            Self::index_expiry(&record.history_key, &message, batch);
            batch.put(
                Tree::History,
                record.history_key.clone(),
                &records::encode_message(&message),
            );
            unlocked.push(message);
        }
        Ok(unlocked)
    }

    pub(super) fn outbound_created(&self, id: &GroupId) -> Result<Option<u64>, EngineError> {
        Ok(self.outbound_record(id)?.map(|r| r.created_ms))
    }

    /// My stored outbound session in group `id`.
    pub(super) fn outbound_record(
        &self,
        id: &GroupId,
    ) -> Result<Option<OutboundRecord>, EngineError> {
        self.store
            .get(Tree::Sessions, &key(OUTBOUND_PREFIX, &[id]))?
            .map(|bytes| serde_json::from_slice(&bytes).map_err(corrupt))
            .transpose()
    }

    /// The stored inbound session `session_id` of group `id`.
    pub(super) fn inbound_record(
        &self,
        id: &GroupId,
        session_id: &str,
    ) -> Result<Option<InboundRecord>, EngineError> {
        self.store
            .get(
                Tree::Sessions,
                &key(INBOUND_PREFIX, &[id, session_id.as_bytes()]),
            )?
            .map(|bytes| serde_json::from_slice(&bytes).map_err(corrupt))
            .transpose()
    }

    /// Takes `handles` off the `shared_with` list of every session of mine,
    /// so a key request from them is answered "withheld".
    pub(super) fn forget_entitlements(&self, handles: &[String]) -> Result<(), EngineError> {
        let mut batch = Batch::new();
        for (stored, value) in self.store.scan_prefix(Tree::Sessions, INBOUND_PREFIX)? {
            let mut record: InboundRecord = serde_json::from_slice(&value).map_err(corrupt)?;
            let Some(shared) = record.shared_with.as_mut() else {
                continue;
            };
            let before = shared.len();
            shared.retain(|m| !handles.contains(m));
            if shared.len() != before {
                batch.put(Tree::Sessions, stored, &json(&record)?);
            }
        }
        self.store.apply(batch)?;
        Ok(())
    }

    /// For tests: my current outbound session in `group` (its ID), and
    /// for each of my sessions in it, whom it names as entitled to its key.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn own_sessions(&self, group: &str) -> Result<OwnSessions, EngineError> {
        let info = self.find_group(group)?;
        let group = self.group_by_hex(&info.id)?;
        let current = self
            .outbound_record(&group.id)?
            .map(|record| GroupSession::from_pickle(record.pickle).session_id());
        let mut own = Vec::new();
        for (_, value) in self
            .store
            .scan_prefix(Tree::Sessions, &key(INBOUND_PREFIX, &[&group.id]))?
        {
            let record: InboundRecord = serde_json::from_slice(&value).map_err(corrupt)?;
            if record.sender_key == self.me {
                let session = InboundGroupSession::from_pickle(record.pickle);
                own.push((session.session_id(), record.shared_with.unwrap_or_default()));
            }
        }
        Ok((current, own))
    }

    /// My outbound session in `group`, or a new one (shared with every
    /// member over Olm) when there is none or it is due for rotation.
    pub(super) fn outbound_session(
        &mut self,
        group: &Group,
        now_ms: u64,
    ) -> Result<GroupSession, EngineError> {
        let outbound_key = key(OUTBOUND_PREFIX, &[&group.id]);
        if let Some(record) = self.outbound_record(&group.id)? {
            let session = GroupSession::from_pickle(record.pickle);
            let fresh = record.generation == group.current.number
                && session.message_index() < group.rotate_messages
                && now_ms.saturating_sub(record.created_ms) < group.rotate_secs * 1000;
            if fresh {
                return Ok(session);
            }
        }
        let session = GroupSession::new(SessionConfig::version_1());
        let session_key = session.session_key();
        let me = self.device.handle.clone();
        let shared = GroupKey {
            group_id: group.id.to_vec().into(),
            generation: group.current.number,
            session_key: session_key.to_bytes().into(),
            exported_key: Default::default(),
        };
        for member in group.current.members.iter().filter(|m| **m != me) {
            // A member not yet resolved asks for the key when it sees a
            // message (and is entitled to it).
            if !self.contacts.contains_key(member) {
                continue;
            }
            let payload = Payload {
                sent_at: now_ms,
                body: Some(payload::Body::GroupKey(shared.clone())),
                ..Payload::default()
            };
            self.queue(member, payload, None)?;
        }
        // And to my other devices, which read the group too.
        let payload = Payload {
            sent_at: now_ms,
            body: Some(payload::Body::GroupKey(shared.clone())),
            ..Payload::default()
        };
        self.queue(&me, payload, None)?;
        let own = InboundRecord {
            pickle: InboundGroupSession::new(&session_key, SessionConfig::version_1()).pickle(),
            sender: me,
            sender_key: self.me,
            generation: group.current.number,
            shared_with: Some(group.current.members.clone()),
        };
        let mut batch = Batch::new();
        batch.put(
            Tree::Sessions,
            key(
                INBOUND_PREFIX,
                &[&group.id, session.session_id().as_bytes()],
            ),
            &json(&own)?,
        );
        batch.put(
            Tree::Sessions,
            outbound_key,
            &json(&OutboundRecord {
                pickle: session.pickle(),
                generation: group.current.number,
                created_ms: now_ms,
            })?,
        );
        self.store.apply(batch)?;
        Ok(session)
    }
}
