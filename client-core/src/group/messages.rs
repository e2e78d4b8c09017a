//! Group messages: encrypt once with Megolm, seal to the group envelope
//! key; receive, check and decrypt.

use sotto_proto::client::{
    GroupEnvelope, GroupKeyRequest, GroupPayload, Payload, Text, group_payload, payload,
};
use sotto_proto::{Blob, MailboxId, Message as _};
use vodozemac::megolm::{InboundGroupSession, MegolmMessage};
use zeroize::Zeroizing;

use super::{
    Decrypted, GROUP_ENVELOPE_VERSION, GroupId, OUTBOUND_PREFIX, OutboundRecord, PENDING_PREFIX,
    PendingRecord, REQUESTED_PREFIX, conversation, json, key, seen_key,
};
use crate::engine::{
    Dropped, Engine, EngineError, Message, MessageId, OutboxRecord, Received, Status, corrupt,
    random_id, status_record,
};
use crate::{Batch, BlindId, Epoch, Tree, open, records, seal};

impl Engine {
    /// Decrypts a group envelope's Megolm message; `None` if the session
    /// cannot (a message before the key's first index). Returns the
    /// message's ID, text and time, and its replay-protection key.
    pub(super) fn decrypt_group(
        &self,
        session: &mut InboundGroupSession,
        envelope: &GroupEnvelope,
    ) -> Result<Option<(Decrypted, Vec<u8>)>, EngineError> {
        let Ok(megolm) = MegolmMessage::from_bytes(&envelope.megolm) else {
            return Ok(None);
        };
        let Ok(decrypted) = session.decrypt(&megolm) else {
            return Ok(None);
        };
        let plaintext = Zeroizing::new(decrypted.plaintext);
        let Ok(payload) = GroupPayload::decode(plaintext.as_slice()) else {
            return Ok(None);
        };
        let Some(group_payload::Body::Text(Text { body })) = payload.body else {
            return Ok(None);
        };
        Ok(Some((
            Decrypted {
                id: hex::encode(&payload.message_id),
                text: body,
                sent_at: payload.sent_at,
            },
            seen_key(&envelope.session_id, decrypted.message_index),
        )))
    }

    /// Queues a text to a group: encrypted once with my outbound Megolm
    /// session (made and shared first if needed), durable locally before
    /// any network I/O. Returns its ID.
    pub fn queue_group_text(
        &mut self,
        group: &str,
        text: &str,
        now_ms: u64,
    ) -> Result<MessageId, EngineError> {
        let info = self.find_group(group)?;
        let group = self.group_by_hex(&info.id)?.clone();
        let me = self.device.handle.clone();
        if group.left || !group.current.has(&me) {
            return Err(EngineError::NotInGroup(group.name.clone()));
        }
        let message_id = random_id();
        let payload = GroupPayload {
            message_id: message_id.to_vec().into(),
            sent_at: now_ms,
            body: Some(group_payload::Body::Text(Text {
                body: text.to_owned(),
            })),
        };
        let plaintext = Zeroizing::new(payload.encode_to_vec());
        let limit = crate::max_plaintext_len(sotto_proto::Bucket::largest()) - 400;
        if plaintext.len() > limit {
            return Err(EngineError::TooLong(text.len()));
        }
        let mut session = self.outbound_session(&group, now_ms)?;
        let megolm = session.encrypt(plaintext.as_slice());
        let session_id = session.session_id();
        let envelope = GroupEnvelope {
            version: GROUP_ENVELOPE_VERSION,
            group_id: group.id.to_vec().into(),
            generation: group.current.number,
            epoch: 0,
            sender_identity_key: self.me.to_vec().into(),
            sender_user: me.clone(),
            session_id: session_id.clone(),
            megolm: megolm.to_bytes().into(),
        };
        let mut batch = Batch::new();
        let outbox_key = self.next_outbox_key(&message_id);
        let record = OutboxRecord {
            peer: String::new(),
            envelope: envelope.encode_to_vec(),
            group: Some(hex::encode(group.id)),
            message_id: message_id.to_vec(),
        };
        batch.put(Tree::Outbox, outbox_key, &records::encode_outbox(&record));
        let message = Message {
            id: hex::encode(message_id),
            peer: group.name.clone(),
            from: me,
            from_me: true,
            text: text.to_owned(),
            sent_at: now_ms,
            status: Status::Queued,
            group: Some(group.name.clone()),
        };
        let history_key = self.next_history_key(&conversation(&group.id))?;
        batch.put(
            Tree::History,
            history_key.clone(),
            &records::encode_message(&message),
        );
        batch.put(
            Tree::Seen,
            [b"out".as_slice(), &message_id].concat(),
            &status_record(&history_key, message.status),
        );
        // My own blob comes back from the group mailbox: already seen.
        batch.put(
            Tree::Seen,
            seen_key(&session_id, megolm.message_index()),
            &[],
        );
        let outbound = OutboundRecord {
            pickle: session.pickle(),
            generation: group.current.number,
            created_ms: self.outbound_created(&group.id)?.unwrap_or(now_ms),
        };
        batch.put(
            Tree::Sessions,
            key(OUTBOUND_PREFIX, &[&group.id]),
            &json(&outbound)?,
        );
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(message_id)
    }

    /// Seals a queued group envelope for the group's current mailbox;
    /// `None` if I left the group (the message is not sent).
    pub(crate) fn seal_group(
        &self,
        group: &str,
        envelope: &[u8],
        epoch: Epoch,
    ) -> Result<Option<(MailboxId, Blob)>, EngineError> {
        let Ok(group) = self.group_by_hex(group) else {
            return Ok(None);
        };
        if group.left {
            return Ok(None);
        }
        let mut envelope = GroupEnvelope::decode(envelope).map_err(corrupt)?;
        envelope.epoch = epoch.get();
        envelope.generation = group.current.number;
        let blob = seal(
            &group.current.envelope().public(),
            &envelope.encode_to_vec(),
        )?;
        Ok(Some((group.current.inbox().public().mailbox(epoch), blob)))
    }

    /// Processes one blob read from `mailbox` of `epoch`: a group blob if
    /// the mailbox is a group's, else a 1:1 blob ([`Engine::receive`]).
    pub fn receive_in(
        &mut self,
        mailbox: &MailboxId,
        blob: &[u8],
        epoch: Epoch,
    ) -> Result<Received, EngineError> {
        match self.group_of(mailbox) {
            Some((id, generation)) => self.receive_group(id, generation, blob, epoch),
            None => self.receive(blob, epoch),
        }
    }

    fn receive_group(
        &mut self,
        id: GroupId,
        generation: u64,
        blob: &[u8],
        epoch: Epoch,
    ) -> Result<Received, EngineError> {
        let Some(group) = self.groups.get(&id).filter(|g| !g.left).cloned() else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let Some(secret) = group.generation(generation) else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let Ok(opened) = open(&secret.envelope(), blob) else {
            return Ok(self.drop_blob(Dropped::Unsealable));
        };
        let Ok(envelope) = GroupEnvelope::decode(opened.as_slice()) else {
            return Ok(self.drop_blob(Dropped::BadEnvelope));
        };
        if envelope.version != GROUP_ENVELOPE_VERSION
            || envelope.group_id.as_ref() != id.as_slice()
            || envelope.generation != generation
            || envelope.epoch.abs_diff(epoch.get()) > 1
        {
            return Ok(self.drop_blob(Dropped::BadEnvelope));
        }
        let Ok(megolm) = MegolmMessage::from_bytes(&envelope.megolm) else {
            return Ok(self.drop_blob(Dropped::Undecryptable));
        };
        let seen = seen_key(&envelope.session_id, megolm.message_index());
        if self.store.get(Tree::Seen, &seen)?.is_some() {
            return Ok(Received::Duplicate);
        }
        // The sender must be a current member whose device is the one
        // named, and (below) the one the session key came from.
        let sender_ok = self
            .contacts
            .get(&envelope.sender_user)
            .is_some_and(|devices| {
                devices.iter().any(|c| {
                    c.card.identity_key.to_bytes().as_slice()
                        == envelope.sender_identity_key.as_ref()
                })
            })
            && group.current.has(&envelope.sender_user);
        if !sender_ok {
            return Ok(self.drop_blob(Dropped::UnknownSender));
        }
        let group_name = group.name.clone();
        let record = self.inbound_record(&id, &envelope.session_id)?;
        let mut batch = Batch::new();
        let conversation = conversation(&id);
        let mut message = Message {
            id: String::new(),
            peer: group_name.clone(),
            from: envelope.sender_user.clone(),
            // Sent from another device of mine.
            from_me: envelope.sender_user == self.device.handle,
            text: String::new(),
            sent_at: 0,
            status: Status::Waiting,
            group: Some(group_name),
        };
        match record {
            None => {
                // The key has not arrived: keep the blob, ask its sender once.
                let history_key = self.next_history_key(&conversation)?;
                batch.put(
                    Tree::History,
                    history_key.clone(),
                    &records::encode_message(&message),
                );
                // Ordered as in the history: the key ends in the entry's
                // sequence number.
                let mut pending_key = key(PENDING_PREFIX, &[&id, envelope.session_id.as_bytes()]);
                pending_key.extend_from_slice(history_key.get(BlindId::LEN..).unwrap_or_default());
                let pending = PendingRecord {
                    history_key,
                    envelope: opened.to_vec(),
                };
                pending_key.extend_from_slice(&random_id());
                batch.put(Tree::Meta, pending_key, &json(&pending)?);
                batch.put(Tree::Seen, seen, &[]);
                let requested = key(REQUESTED_PREFIX, &[&id, envelope.session_id.as_bytes()]);
                if self.store.get(Tree::Meta, &requested)?.is_none() {
                    batch.put(Tree::Meta, requested, &[]);
                    let request = Payload {
                        sent_at: 0,
                        body: Some(payload::Body::GroupKeyRequest(GroupKeyRequest {
                            group_id: id.to_vec().into(),
                            session_id: envelope.session_id.clone(),
                        })),
                        ..Payload::default()
                    };
                    // Only the device whose session it is can answer.
                    self.queue_to(
                        &envelope.sender_user,
                        Some(&envelope.sender_identity_key),
                        request,
                        None,
                    )?;
                }
                self.store.apply(batch)?;
                Ok(Received::Message(message))
            }
            Some(record) => {
                if record.sender_key.as_slice() != envelope.sender_identity_key.as_ref() {
                    return Ok(self.drop_blob(Dropped::UnknownSender));
                }
                let mut session = InboundGroupSession::from_pickle(record.pickle);
                let Some((decrypted, seen)) = self.decrypt_group(&mut session, &envelope)? else {
                    return Ok(self.drop_blob(Dropped::Undecryptable));
                };
                message.id = decrypted.id;
                message.text = decrypted.text;
                message.sent_at = decrypted.sent_at;
                message.status = Status::Received;
                let history_key = self.next_history_key(&conversation)?;
                batch.put(
                    Tree::History,
                    history_key,
                    &records::encode_message(&message),
                );
                batch.put(Tree::Seen, seen, &[]);
                self.store.apply(batch)?;
                Ok(Received::Message(message))
            }
        }
    }

    /// A group's local history, oldest first.
    pub fn group_history(&self, group: &str) -> Result<Vec<Message>, EngineError> {
        self.history_of(&self.group_conversation(group)?)
    }

    /// A page of a group's history: see [`Engine::history_page`].
    pub fn group_history_page(
        &self,
        group: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, EngineError> {
        self.history_page_of(&self.group_conversation(group)?, before, limit)
    }

    /// How many messages from others in `group` I have not been shown.
    pub fn group_unread(&self, group: &str) -> Result<usize, EngineError> {
        self.unread_in(&self.group_conversation(group)?)
    }

    /// Marks everything in `group` read, here only: groups get no read
    /// receipts (one per member would be a put per member). Returns how
    /// many messages it marked.
    pub fn mark_group_read(&mut self, group: &str) -> Result<usize, EngineError> {
        let conversation = self.group_conversation(group)?;
        let head = self.history_head(&conversation)?;
        Ok(self.advance_read_mark(&conversation, head)?.len())
    }

    /// The history conversation of the group named `group` (or the start
    /// of its ID).
    fn group_conversation(&self, group: &str) -> Result<String, EngineError> {
        let info = self.find_group(group)?;
        Ok(conversation(&self.group_by_hex(&info.id)?.id))
    }
}
