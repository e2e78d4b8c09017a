//! The outbox: queue texts and receipts sealed to every device of the
//! peer, hand them to the driver, forget them once the relay has them.

use sotto_proto::client::{Envelope, Payload, Receipt, Text, payload, receipt};
use sotto_proto::{Blob, Bucket, MailboxId, Message as _};
use vodozemac::olm::SessionConfig;

use super::{
    ENVELOPE_VERSION, Engine, EngineError, Message, MessageId, OutboxRecord, Outgoing, Status,
    corrupt, random_id,
};
use crate::{
    Batch, EPOCH_SECS, Epoch, InboxPublic, Tree, records, seal, seal_hybrid, seal_pairwise,
};

/// The most message IDs one receipt names: 1,000 IDs (about 18 KB) fit
/// the largest blob with room to spare.
pub(crate) const MAX_RECEIPT_IDS: usize = 1000;

impl Engine {
    /// The mailbox of `inbox` in `epoch`, blinded once per epoch.
    fn mailbox_of(&self, inbox: &InboxPublic, epoch: Epoch) -> MailboxId {
        let mut cache = self
            .mailboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache.get(inbox.as_bytes()) {
            Some((cached, mailbox)) if *cached == epoch.get() => *mailbox,
            _ => {
                let mailbox = inbox.mailbox(epoch);
                cache.insert(*inbox.as_bytes(), (epoch.get(), mailbox));
                mailbox
            }
        }
    }

    /// Encrypts `payload` for every device of `peer` and queues it in the
    /// outbox; a message with a history entry is also copied to my own
    /// other devices. History and session state are committed in the same
    /// batch. Returns the message ID.
    pub(crate) fn queue(
        &mut self,
        peer: &str,
        payload: Payload,
        history: Option<&Message>,
    ) -> Result<MessageId, EngineError> {
        self.queue_to(peer, None, payload, history)
    }

    /// As [`Engine::queue`], to one device of `peer` only when `only` is
    /// set. `peer` may be my own handle: then it goes to my other devices.
    pub(crate) fn queue_to(
        &mut self,
        peer: &str,
        only: Option<&[u8]>,
        mut payload: Payload,
        history: Option<&Message>,
    ) -> Result<MessageId, EngineError> {
        let me = self.device.handle.clone();
        if peer != me && self.contacts.get(peer).is_none_or(Vec::is_empty) {
            return Err(EngineError::UnknownContact(peer.to_owned()));
        }
        let message_id = random_id();
        payload.message_id = message_id.to_vec().into();
        payload.token_key = self.token_key.clone();
        // Room for a first-contact hybrid envelope, whose header carries
        // an ML-KEM ciphertext.
        if payload.encoded_len() + 80
            > crate::max_hybrid_plaintext_len(sotto_proto::Bucket::largest()) - 200
        {
            return Err(EngineError::TooLong(payload.encoded_len()));
        }
        let mut targets: Vec<(String, usize)> = Vec::new();
        let count = |handle: &str| self.contacts.get(handle).map_or(0, Vec::len);
        for index in 0..count(peer) {
            let identity = self.contacts[peer][index].card.identity_key.to_bytes();
            if only.is_none_or(|o| o == identity.as_slice()) {
                targets.push((peer.to_owned(), index));
            }
        }
        // My other devices get my messages, and my changes to messages
        // (reactions, edits, deletes), to file them as I did.
        let change = matches!(payload.body, Some(payload::Body::Content(_)));
        let copy = (history.is_some() || change) && peer != me;
        if copy {
            targets.extend((0..count(&me)).map(|index| (me.clone(), index)));
        }
        let ttl_secs = crate::records::ttl_for(expires_in_secs(&payload));
        let mut batch = Batch::new();
        let now_secs = payload.sent_at / 1000;
        for (handle, index) in targets {
            // A pairwise post-quantum secret to seal with, refreshed on
            // schedule.
            self.ensure_pq(&handle, index, now_secs, &mut batch)?;
            let mut payload = payload.clone();
            if handle == me && peer != me {
                payload.sent_to = peer.to_owned();
            }
            self.seal_to_device(
                &handle,
                index,
                &mut payload,
                &message_id,
                ttl_secs,
                &mut batch,
            )?;
        }
        if let Some(message) = history {
            let message = Message {
                id: hex::encode(message_id),
                ..message.clone()
            };
            self.file_message(peer, &message, &message_id, &mut batch)?;
        }
        self.store.apply(batch)?;
        Ok(message_id)
    }

    /// Olm-encrypts `payload` to one device and adds the outbox entry (and
    /// the session state) to `batch`.
    fn seal_to_device(
        &mut self,
        handle: &str,
        index: usize,
        payload: &mut Payload,
        message_id: &MessageId,
        ttl_secs: u32,
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let contact = &self.contacts[handle][index];
        payload.reply_inbox = contact.my_inbox_public.to_vec().into();
        let identity = contact.card.identity_key;
        let fallback = contact.card.fallback_key;
        let plaintext = zeroize::Zeroizing::new(payload.encode_to_vec());
        let sessions = self.sessions.entry(identity.to_bytes()).or_default();
        if sessions.is_empty() {
            let session = self
                .device
                .account
                .create_outbound_session(SessionConfig::version_1(), identity, fallback)
                .map_err(|e| EngineError::Encrypt(e.to_string()))?;
            sessions.insert(0, session);
        }
        let olm = sessions[0]
            .encrypt(plaintext.as_slice())
            .map_err(|e| EngineError::Encrypt(e.to_string()))?;
        let (olm_type, olm_body) = olm.to_parts();
        let envelope = Envelope {
            version: ENVELOPE_VERSION,
            sender_identity_key: self.me.to_vec().into(),
            sender_user: self.device.handle.clone(),
            recipient_identity_key: identity.to_bytes().to_vec().into(),
            epoch: 0,
            message_id: message_id.to_vec().into(),
            olm_type: olm_type as u32,
            olm_body: olm_body.into(),
        };
        let outbox_key = self.next_outbox_key(message_id);
        let record = OutboxRecord {
            peer: handle.to_owned(),
            envelope: envelope.encode_to_vec(),
            group: None,
            message_id: message_id.to_vec(),
            ttl_secs,
        };
        batch.put(Tree::Outbox, outbox_key, &records::encode_outbox(&record));
        // Outbound session creation leaves the account unchanged: only the
        // session is saved.
        self.save_sessions(&identity.to_bytes(), batch)?;
        Ok(())
    }

    /// Queues a text message to `peer`: durable locally before any network
    /// I/O. Returns its ID.
    pub fn queue_text(
        &mut self,
        peer: &str,
        text: &str,
        now_ms: u64,
    ) -> Result<MessageId, EngineError> {
        // With a timer on, the text carries its lifetime (versioned
        // content); without, it stays a plain text every version reads.
        let timer = self.timer_of(peer)?;
        let body = if timer > 0 {
            crate::records::Content::Text {
                body: text.to_owned(),
                reply_to: None,
                expires_in_secs: timer,
            }
            .to_proto()
            .map(payload::Body::Content)
        } else {
            Some(payload::Body::Text(Text {
                body: text.to_owned(),
            }))
        };
        let payload = Payload {
            sent_at: now_ms,
            body,
            ..Payload::default()
        };
        let mut message = Message::plain(
            String::new(),
            peer.to_owned(),
            self.device.handle.clone(),
            true,
            text.to_owned(),
            now_ms,
            Status::Queued,
            None,
        );
        message.expires_at = Self::expiry(now_ms, timer);
        let id = self.queue(peer, payload, Some(&message))?;
        self.store.flush()?;
        Ok(id)
    }

    /// Queues a delivered or read receipt for `ids` to `peer`: one per
    /// 1,000 IDs (none for no ID).
    pub fn queue_receipt(
        &mut self,
        peer: &str,
        ids: &[MessageId],
        read: bool,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let kind = if read {
            receipt::Kind::Read
        } else {
            receipt::Kind::Delivered
        };
        // One receipt per `MAX_RECEIPT_IDS`: a conversation of 100,000
        // unread messages marked read would not fit one blob.
        for ids in ids.chunks(MAX_RECEIPT_IDS) {
            let payload = Payload {
                sent_at: now_ms,
                body: Some(payload::Body::Receipt(Receipt {
                    kind: kind as i32,
                    message_ids: ids.iter().map(|id| id.to_vec().into()).collect(),
                })),
                ..Payload::default()
            };
            self.queue(peer, payload, None)?;
        }
        Ok(())
    }

    /// Everything in the outbox, sealed for the recipients' current
    /// mailboxes at `now`.
    pub fn outgoing(&self, now_secs: u64) -> Result<Vec<Outgoing>, EngineError> {
        let epoch = Epoch::from_unix_secs(now_secs, EPOCH_SECS);
        let mut out = Vec::new();
        for (key, value) in self.store.scan_prefix(Tree::Outbox, &[])? {
            let record = records::decode_outbox(&value).map_err(corrupt)?;
            if let Some(group) = &record.group {
                if let Some((mailbox, blob)) = self.seal_group(group, &record.envelope, epoch)? {
                    out.push(Outgoing {
                        key,
                        mailbox,
                        blob,
                        ttl_secs: record.ttl_secs,
                    });
                }
                continue;
            }
            let mut envelope = Envelope::decode(record.envelope.as_slice()).map_err(corrupt)?;
            // The device it was sealed for (gone if it was removed since).
            let Some(contact) = self.contacts.get(&record.peer).and_then(|devices| {
                devices.iter().find(|c| {
                    c.card.identity_key.to_bytes().as_slice()
                        == envelope.recipient_identity_key.as_ref()
                })
            }) else {
                continue;
            };
            envelope.epoch = epoch.get();
            let Some(blob) = seal_for(contact, &envelope.encode_to_vec())? else {
                continue;
            };
            out.push(Outgoing {
                key,
                mailbox: self.mailbox_of(&contact.their_inbox, epoch),
                blob,
                ttl_secs: record.ttl_secs,
            });
        }
        Ok(out)
    }

    /// The relay stored an outgoing blob durably: drop it from the outbox
    /// and mark its message sent.
    pub fn sent(&mut self, key: &[u8]) -> Result<(), EngineError> {
        let message_id = match key.get(8..) {
            Some(id) if id.len() == 16 => id.to_vec(),
            // An entry queued by an older version: its key is the
            // sequence number alone.
            _ => {
                let Some(value) = self.store.get(Tree::Outbox, key)? else {
                    return Ok(());
                };
                let record = records::decode_outbox(&value).map_err(corrupt)?;
                if record.message_id.is_empty() {
                    Envelope::decode(record.envelope.as_slice())
                        .map_err(corrupt)?
                        .message_id
                        .to_vec()
                } else {
                    record.message_id
                }
            }
        };
        let mut batch = Batch::new();
        batch.delete(Tree::Outbox, key.to_vec());
        self.update_status(&message_id, Status::Sent, &mut batch)?;
        self.store.apply(batch)?;
        Ok(())
    }
}

/// Seals a 1:1 envelope for `contact` (DESIGN §5.1): hybrid first
/// contact while my encapsulation is unanswered; the pairwise secret mixed
/// in once one is established (also when the card I hold has no ML-KEM key
/// yet but the device sent me its own encapsulation: it is post-quantum and
/// would refuse a classical blob); classical for a device with neither.
/// `None` for a device with an ML-KEM key and no secret yet (cannot
/// happen: one is made whenever such a device is added or loaded); the
/// entry then stays queued.
fn seal_for(contact: &super::Contact, bytes: &[u8]) -> Result<Option<Blob>, EngineError> {
    let to = &contact.card.envelope_key;
    let pq = &contact.pq;
    Ok(match (&contact.card.kem_key, &pq.pending, &pq.current) {
        (Some(kem), Some(pending), _) => Some(seal_hybrid(
            to,
            kem,
            &pending.encapsulation,
            bytes,
            Bucket::K1,
        )?),
        (_, _, Some((secret, _))) => Some(seal_pairwise(to, secret, bytes, Bucket::K1)?),
        (None, _, None) => Some(seal(to, bytes)?),
        (Some(_), None, None) => {
            tracing::warn!(
                "no pairwise secret for a post-quantum device; the message stays queued"
            );
            None
        }
    })
}

/// The lifetime a payload's text carries (0: none).
fn expires_in_secs(payload: &Payload) -> u64 {
    use sotto_proto::client::content::Kind;
    match &payload.body {
        Some(payload::Body::Content(content)) => match &content.kind {
            Some(Kind::Post(post)) => post.expires_in_secs,
            _ => 0,
        },
        _ => 0,
    }
}
