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
    random_id,
};
use crate::records::{ActionError, Content};
use crate::{Batch, BlindId, Epoch, Tree, open, open_pairwise, records, seal, seal_pairwise};

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
        let content = match payload.body {
            Some(group_payload::Body::Text(text)) => Content::from_text(text),
            Some(group_payload::Body::Content(content)) => match Content::from_proto(content) {
                Ok(content) => content,
                Err(_) => return Ok(None),
            },
            None => return Ok(None),
        };
        if payload.message_id.len() != 16 {
            return Ok(None);
        }
        Ok(Some((
            Decrypted {
                id: hex::encode(&payload.message_id),
                content,
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
        let timer = self.timer_of(&self.group_conversation(group)?)?;
        // With a timer on, the text carries its lifetime (versioned
        // content); without, it stays a plain text every version reads.
        let body = if timer > 0 {
            let content = Content::Text {
                body: text.to_owned(),
                reply_to: None,
                expires_in_secs: timer,
            };
            match content.to_proto() {
                Some(content) => group_payload::Body::Content(content),
                None => return Err(ActionError::UnknownMessage(String::new()).into()),
            }
        } else {
            group_payload::Body::Text(Text {
                body: text.to_owned(),
            })
        };
        self.queue_group_payload(group, body, Some((text, None, timer)), now_ms)
    }

    /// Queues a text to a group that replies to `reply_to`, a message of
    /// that group. Returns its ID.
    pub fn queue_group_reply(
        &mut self,
        group: &str,
        text: &str,
        reply_to: &MessageId,
        now_ms: u64,
    ) -> Result<MessageId, EngineError> {
        let conversation = self.group_conversation(group)?;
        match self.find_message(reply_to)? {
            Some(target) if target.conversation == conversation => {}
            Some(_) => return Err(ActionError::OtherConversation.into()),
            None => return Err(ActionError::UnknownMessage(hex::encode(reply_to)).into()),
        }
        let timer = self.timer_of(&conversation)?;
        let content = Content::Text {
            body: text.to_owned(),
            reply_to: Some(*reply_to),
            expires_in_secs: timer,
        };
        let Some(content) = content.to_proto() else {
            return Err(ActionError::UnknownMessage(String::new()).into());
        };
        let body = group_payload::Body::Content(content);
        self.queue_group_payload(group, body, Some((text, Some(reply_to), timer)), now_ms)
    }

    /// Applies my own change (reaction, edit, delete) to a message of
    /// `group` here and queues it to the group. Returns the message as it
    /// is now.
    pub(crate) fn queue_group_change(
        &mut self,
        group: &str,
        content: &Content,
        now_ms: u64,
    ) -> Result<Message, EngineError> {
        let conversation = self.group_conversation(group)?;
        let me = self.device.handle.clone();
        let mut batch = Batch::new();
        // Checked first, applied only once it is queued.
        let message = self.apply_change(&conversation, &me, content, now_ms, &mut batch)??;
        let Some(proto) = content.to_proto() else {
            return Err(ActionError::UnknownMessage(String::new()).into());
        };
        self.queue_group_payload(group, group_payload::Body::Content(proto), None, now_ms)?;
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(message)
    }

    /// Sets the disappearing-message timer of `group` for every member,
    /// shown as a notice in its history.
    pub fn set_group_timer(
        &mut self,
        group: &str,
        secs: u64,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let secs = crate::engine::checked_timer(secs)?;
        let conversation = self.group_conversation(group)?;
        if !self.may_set_timer(&conversation, &self.device.handle) {
            return Err(EngineError::GroupChange(
                "only an admin of this group may set its timer (the group says so)".into(),
            ));
        }
        let Some(content) = (Content::Timer { secs }).to_proto() else {
            return Err(ActionError::UnknownMessage(String::new()).into());
        };
        let notice = crate::engine::timer_notice(secs);
        self.queue_group_payload(
            group,
            group_payload::Body::Content(content),
            Some((&notice, None, 0)),
            now_ms,
        )?;
        let mut batch = Batch::new();
        self.put_timer(&conversation, secs, &mut batch);
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(())
    }

    /// The disappearing-message timer of `group` (0: off).
    pub fn group_timer(&self, group: &str) -> Result<u64, EngineError> {
        self.timer_of(&self.group_conversation(group)?)
    }

    /// Encrypts `body` once with my outbound Megolm session for `group`
    /// and queues it; `text` (with what it replies to and its timer) is
    /// filed in the history as mine. Returns the payload's message ID.
    pub(crate) fn queue_group_payload(
        &mut self,
        group: &str,
        body: group_payload::Body,
        text: Option<(&str, Option<&MessageId>, u64)>,
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
            body: Some(body),
        };
        let plaintext = Zeroizing::new(payload.encode_to_vec());
        let limit = crate::max_plaintext_len(sotto_proto::Bucket::largest()) - 400;
        if plaintext.len() > limit {
            return Err(EngineError::TooLong(plaintext.len()));
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
            ttl_secs: crate::records::ttl_for(match &payload.body {
                Some(group_payload::Body::Content(sotto_proto::client::Content {
                    kind: Some(sotto_proto::client::content::Kind::Post(post)),
                    ..
                })) => post.expires_in_secs,
                _ => 0,
            }),
        };
        batch.put(Tree::Outbox, outbox_key, &records::encode_outbox(&record));
        if let Some((text, reply_to, timer)) = text {
            let mut message = Message::plain(
                hex::encode(message_id),
                group.name.clone(),
                me,
                true,
                text.to_owned(),
                now_ms,
                Status::Queued,
                Some(group.name.clone()),
            );
            message.reply_to = reply_to.map(hex::encode);
            message.expires_at = Self::expiry(now_ms, timer);
            // Filed as any message of mine: entry, index, status record
            // and, for a disappearing one, its expiry index entry.
            self.file_message(&conversation(&group.id), &message, &message_id, &mut batch)?;
        }
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
        let to = group.current.envelope().public();
        // When every member's devices are post-quantum capable, the blob
        // is version 4 like 1:1 blobs between them (DESIGN §5.1); else
        // version 1, which every member reads.
        let blob = if self.group_is_post_quantum(&group.current.members) {
            seal_pairwise(
                &to,
                &group.current.pairwise(),
                &envelope.encode_to_vec(),
                sotto_proto::Bucket::K1,
            )?
        } else {
            seal(&to, &envelope.encode_to_vec())?
        };
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
        let opened = match crate::blob_version(blob) {
            Some(crate::PAIRWISE_SEAL_VERSION) => {
                open_pairwise(&secret.envelope(), blob, [&secret.pairwise()]).map(|(p, _)| p)
            }
            _ => open(&secret.envelope(), blob),
        };
        let Ok(opened) = opened else {
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
        let mut message = Message::plain(
            String::new(),
            group_name.clone(),
            envelope.sender_user.clone(),
            // Sent from another device of mine.
            envelope.sender_user == self.device.handle,
            String::new(),
            0,
            Status::Waiting,
            Some(group_name),
        );
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
                message.sent_at = decrypted.sent_at;
                message.status = Status::Received;
                batch.put(Tree::Seen, seen, &[]);
                let message_id = hex::decode(&message.id).unwrap_or_default();
                let received = self.receive_content(
                    &conversation,
                    decrypted.content,
                    message,
                    &message_id,
                    &mut batch,
                )?;
                self.store.apply(batch)?;
                Ok(received)
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
    pub(crate) fn group_conversation(&self, group: &str) -> Result<String, EngineError> {
        let info = self.find_group(group)?;
        Ok(conversation(&self.group_by_hex(&info.id)?.id))
    }
}
