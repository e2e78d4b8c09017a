//! The engine's side of linking a device (no I/O): link secrets and link
//! requests, the history handed to a new device, and the member state one
//! device of mine sends another.

use hmac::Mac;
use sotto_proto::Message as _;
use sotto_proto::client::{
    Envelope, HistoryChunk, HistoryItem, LinkRequest, Payload, ReactionSet, SignedCard, payload,
};
use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{OlmMessage, SessionConfig};
use zeroize::Zeroizing;

use super::{
    CHUNK_HEADROOM, HISTORY_SEEN_PREFIX, LINK_REQUEST_PREFIX, LINK_REQUEST_TTL_SECS,
    LINK_SECRET_PREFIX, LinkRequestRecord, LinkSecretOf, PendingDevice, confirmation_code,
    link_hmac, link_mac, normalize_code,
};
use crate::card::Card;
use crate::engine::{Dropped, Engine, EngineError, Message, Received, Status, corrupt};
use crate::records::{LAST_SEEN_PREFIX, MEMBER_STATE, SUCCESSION_PREFIX};
use crate::{Batch, Tree};

impl Engine {
    /// Makes a one-time link secret `s` valid until `expires_at` (unix
    /// seconds), for a link code.
    pub fn new_link_secret(&self, expires_at: u64) -> Result<[u8; 32], EngineError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("invariant: the OS random number generator works");
        self.keep_link_secret(&secret, expires_at, &self.me)?;
        Ok(secret)
    }

    /// Keeps a link secret made by my device `printer` (this one, or
    /// another that shared it), so a request MACed with it can be approved
    /// here.
    fn keep_link_secret(
        &self,
        secret: &[u8; 32],
        expires_at: u64,
        printer: &[u8; 32],
    ) -> Result<(), EngineError> {
        let mut key = LINK_SECRET_PREFIX.to_vec();
        key.extend_from_slice(&secret[..8]);
        let record = Zeroizing::new(
            [
                &expires_at.to_be_bytes(),
                secret.as_slice(),
                printer.as_slice(),
            ]
            .concat(),
        );
        self.store.put(Tree::Meta, &key, &record)?;
        self.store.flush()?;
        Ok(())
    }

    /// The body that shares link secret `secret` with my other devices.
    pub fn link_secret_share(&self, secret: &[u8; 32], expires_at: u64) -> payload::Body {
        payload::Body::LinkSecret(sotto_proto::client::LinkSecret {
            secret: secret.to_vec().into(),
            expires_at,
            printer: self.me.to_vec().into(),
        })
    }

    /// A link secret another device of mine shared (the caller checked
    /// the sender is mine).
    pub(crate) fn on_link_secret(
        &mut self,
        shared: sotto_proto::client::LinkSecret,
    ) -> Result<Received, EngineError> {
        let (Ok(secret), Ok(printer)) = (
            <[u8; 32]>::try_from(shared.secret.as_ref()),
            <[u8; 32]>::try_from(shared.printer.as_ref()),
        ) else {
            return Ok(self.drop_blob(Dropped::Mismatch));
        };
        self.keep_link_secret(&secret, shared.expires_at, &printer)?;
        Ok(Received::Team)
    }

    /// Link secrets still valid at `now_secs` (expired ones are deleted),
    /// each with the device that printed its code.
    fn link_secrets(&self, now_secs: Option<u64>) -> Result<Vec<LinkSecretOf>, EngineError> {
        let mut secrets = Vec::new();
        for (key, value) in self.store.scan_prefix(Tree::Meta, LINK_SECRET_PREFIX)? {
            let (Some(expires), Some(secret)) = (
                value
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes),
                value.get(8..40).and_then(|b| <[u8; 32]>::try_from(b).ok()),
            ) else {
                continue;
            };
            if now_secs.is_some_and(|now| now > expires) {
                self.store.delete(Tree::Meta, &key)?;
                continue;
            }
            let printer = value
                .get(40..72)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .unwrap_or(self.me);
            secrets.push((secret, printer));
        }
        Ok(secrets)
    }

    /// A blob from a device of my handle that is not one of my devices:
    /// the only thing it may be is a link request (a pre-key Olm message
    /// whose payload is MACed with one of my link secrets).
    pub(crate) fn on_link_envelope(
        &mut self,
        envelope: &Envelope,
        seen_key: Vec<u8>,
    ) -> Result<Received, EngineError> {
        let secrets = self.link_secrets(None)?;
        if secrets.is_empty() || envelope.olm_type != 0 {
            return Ok(self.drop_blob(Dropped::UnknownSender));
        }
        let Ok(sender) = <[u8; 32]>::try_from(envelope.sender_identity_key.as_ref()) else {
            return Ok(self.drop_blob(Dropped::BadEnvelope));
        };
        let Ok(OlmMessage::PreKey(pre)) =
            OlmMessage::from_parts(envelope.olm_type as usize, &envelope.olm_body)
        else {
            return Ok(self.drop_blob(Dropped::Undecryptable));
        };
        let sender_key = Curve25519PublicKey::from_bytes(sender);
        let Ok(created) = self.device.account.create_inbound_session(
            SessionConfig::version_1(),
            sender_key,
            &pre,
        ) else {
            return Ok(self.drop_blob(Dropped::Undecryptable));
        };
        let plaintext = Zeroizing::new(created.plaintext);
        let Ok(payload) = Payload::decode(plaintext.as_slice()) else {
            return Ok(self.drop_blob(Dropped::Mismatch));
        };
        let Some(payload::Body::LinkRequest(request)) = payload.body else {
            return Ok(self.drop_blob(Dropped::UnknownSender));
        };
        if payload.message_id != envelope.message_id {
            return Ok(self.drop_blob(Dropped::Mismatch));
        }
        let Some(signed) = request.card else {
            return Ok(self.drop_blob(Dropped::Mismatch));
        };
        let Ok(card) = Card::verify(&signed) else {
            return Ok(self.drop_blob(Dropped::Mismatch));
        };
        if card.handle != self.device.handle || card.identity_key.to_bytes() != sender {
            return Ok(self.drop_blob(Dropped::Mismatch));
        }
        let signed_bytes = signed.encode_to_vec();
        let Some((secret, printer)) = secrets.iter().find(|(s, _)| {
            link_hmac(s, &signed_bytes, &request.revocation_secret, &request.name)
                .verify_slice(&request.mac)
                .is_ok()
        }) else {
            return Ok(self.drop_blob(Dropped::Mismatch));
        };
        let code = confirmation_code(secret, printer, &sender);
        let record = LinkRequestRecord {
            signed_card: signed_bytes,
            revocation_secret: request.revocation_secret.to_vec(),
            code,
            received_ms: payload.sent_at,
            name: request.name.chars().take(64).collect(),
        };
        let mut batch = Batch::new();
        batch.put(Tree::Seen, seen_key, &[]);
        batch.put(
            Tree::Meta,
            [LINK_REQUEST_PREFIX, self.store.blind(&sender).as_bytes()].concat(),
            &Zeroizing::new(serde_json::to_vec(&record).map_err(corrupt)?),
        );
        // Keep the session: it is the one the approval answers on.
        self.adopt_session(sender, created.session, &mut batch)?;
        self.store.apply(batch)?;
        Ok(Received::LinkRequest)
    }

    /// Link requests waiting for approval.
    pub fn pending_devices(&self) -> Result<Vec<PendingDevice>, EngineError> {
        let mut pending = Vec::new();
        for (_, value) in self.store.scan_prefix(Tree::Meta, LINK_REQUEST_PREFIX)? {
            let record: LinkRequestRecord = serde_json::from_slice(&value).map_err(corrupt)?;
            let signed = SignedCard::decode(record.signed_card.as_slice()).map_err(corrupt)?;
            let card = Card::verify(&signed)?;
            pending.push(PendingDevice {
                card,
                signed,
                code: record.code.clone(),
                revocation_secret: Zeroizing::new(record.revocation_secret.clone()),
                received_ms: record.received_ms,
                name: record.name.clone(),
            });
        }
        Ok(pending)
    }

    /// The pending request whose confirmation code is `code`, removed from
    /// the pending list together with the link secret it used.
    pub fn take_link_request(&self, code: &str) -> Result<Option<PendingDevice>, EngineError> {
        let wanted = normalize_code(code);
        let Some(found) = self
            .pending_devices()?
            .into_iter()
            .find(|p| normalize_code(&p.code) == wanted)
        else {
            return Ok(None);
        };
        let identity = found.card.identity_key.to_bytes();
        let mut batch = Batch::new();
        batch.delete(
            Tree::Meta,
            [LINK_REQUEST_PREFIX, self.store.blind(&identity).as_bytes()].concat(),
        );
        // The link secret is one-time.
        for (secret, printer) in self.link_secrets(None)? {
            if confirmation_code(&secret, &printer, &identity) == found.code {
                let mut key = LINK_SECRET_PREFIX.to_vec();
                key.extend_from_slice(&secret[..8]);
                batch.delete(Tree::Meta, key);
            }
        }
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(Some(found))
    }

    /// Drops link secrets expired at `now_secs`, and link requests that
    /// waited longer than [`LINK_REQUEST_TTL_SECS`] (by the new device's
    /// clock) for approval.
    pub fn prune_link_secrets(&self, now_secs: u64) -> Result<(), EngineError> {
        self.link_secrets(Some(now_secs))?;
        let oldest_ms = now_secs.saturating_sub(LINK_REQUEST_TTL_SECS) * 1000;
        for (key, value) in self.store.scan_prefix(Tree::Meta, LINK_REQUEST_PREFIX)? {
            let stale = serde_json::from_slice::<LinkRequestRecord>(&value)
                .map_or(true, |record| record.received_ms < oldest_ms);
            if stale {
                self.store.delete(Tree::Meta, &key)?;
            }
        }
        Ok(())
    }

    /// Queues `body` to my other devices (or only to `only`), over Olm.
    pub fn queue_to_own(
        &mut self,
        only: Option<&[u8]>,
        body: payload::Body,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let me = self.device.handle.clone();
        let payload = Payload {
            sent_at: now_ms,
            body: Some(body),
            ..Payload::default()
        };
        self.queue_to(&me, only, payload, None)?;
        Ok(())
    }

    /// Queues, to my device `device`, what it needs to follow my groups.
    pub fn queue_group_handover(&mut self, device: &[u8], now_ms: u64) -> Result<(), EngineError> {
        for body in self.group_handover()? {
            self.queue_to_own(Some(device), body, now_ms)?;
        }
        Ok(())
    }

    /// My history since `since_ms` (sender clock), cut into chunks that
    /// each fit one 64 KiB blob, oldest first within each conversation.
    pub fn history_chunks(&self, since_ms: u64) -> Result<Vec<HistoryChunk>, EngineError> {
        let mut conversations: Vec<String> = self.contacts();
        conversations.extend(self.groups.values().map(crate::records::conversation_of));
        let budget =
            crate::max_plaintext_len(sotto_proto::Bucket::largest()).saturating_sub(CHUNK_HEADROOM);
        let mut chunks: Vec<HistoryChunk> = Vec::new();
        let mut current = HistoryChunk::default();
        for conversation in conversations {
            for message in self.history_of(&conversation)? {
                if message.sent_at < since_ms {
                    continue;
                }
                let item = HistoryItem {
                    conversation: conversation.clone(),
                    message_id: hex::decode(&message.id).unwrap_or_default().into(),
                    from: message.from.clone(),
                    from_me: message.from_me,
                    text: message.text.clone(),
                    sent_at: message.sent_at,
                    status: u32::from(message.status.to_byte()),
                    group: message.group.clone().unwrap_or_default(),
                    peer: message.peer.clone(),
                    reply_to: message
                        .reply_to
                        .as_deref()
                        .and_then(|id| hex::decode(id).ok())
                        .unwrap_or_default()
                        .into(),
                    edited_at: message.edited_at.unwrap_or_default(),
                    deleted: message.deleted,
                    reactions: message
                        .reactions
                        .iter()
                        .map(|(emoji, by)| ReactionSet {
                            emoji: emoji.clone(),
                            by: by.iter().cloned().collect(),
                        })
                        .collect(),
                };
                if !current.items.is_empty()
                    && current.encoded_len() + item.encoded_len() + 8 > budget
                {
                    chunks.push(std::mem::take(&mut current));
                }
                current.items.push(item);
            }
        }
        if !current.items.is_empty() {
            chunks.push(current);
        }
        let total = chunks.len() as u32;
        for (index, chunk) in chunks.iter_mut().enumerate() {
            chunk.index = index as u32 + 1;
            chunk.total = total;
        }
        Ok(chunks)
    }

    /// Part of my history from the device that approved this one: each
    /// message not already here goes into its conversation.
    pub(crate) fn on_history_chunk(
        &mut self,
        chunk: HistoryChunk,
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        let mut added = 0;
        for item in chunk.items {
            let id = hex::encode(&item.message_id);
            let seen = [
                HISTORY_SEEN_PREFIX,
                self.store.blind(item.conversation.as_bytes()).as_bytes(),
                item.message_id.as_ref(),
            ]
            .concat();
            let known = self.store.get(Tree::Seen, &seen)?.is_some()
                || self
                    .store
                    .get(Tree::Seen, &[b"in".as_slice(), &item.message_id].concat())?
                    .is_some()
                || self
                    .store
                    .get(Tree::Seen, &[b"out".as_slice(), &item.message_id].concat())?
                    .is_some();
            if known || item.message_id.len() != 16 {
                continue;
            }
            let status = u8::try_from(item.status)
                .ok()
                .and_then(|b| Status::from_byte(b).ok())
                .unwrap_or(Status::Received);
            let mut message = Message::plain(
                id,
                item.peer,
                item.from,
                item.from_me,
                item.text,
                item.sent_at,
                status,
                (!item.group.is_empty()).then_some(item.group),
            );
            // What happened to it since: replies, edits, deletes and
            // reactions travel with it (checked as on the wire).
            message.reply_to = (item.reply_to.len() == 16).then(|| hex::encode(&item.reply_to));
            message.edited_at = (item.edited_at > 0).then_some(item.edited_at);
            message.deleted = item.deleted;
            if message.deleted {
                message.text.clear();
            }
            for set in item
                .reactions
                .into_iter()
                .take(crate::records::MAX_REACTIONS)
            {
                if crate::records::check_reaction(&set.emoji).is_ok() && !set.by.is_empty() {
                    message
                        .reactions
                        .entry(set.emoji)
                        .or_default()
                        .extend(set.by);
                }
            }
            message.mentions_me = message.group.is_some()
                && !message.from_me
                && !message.deleted
                && crate::records::mentions(&message.text, &self.device.handle);
            self.file_message(&item.conversation, &message, &item.message_id, batch)?;
            batch.put(Tree::Seen, seen, &[]);
            added += 1;
        }
        Ok(Received::History {
            index: chunk.index,
            total: chunk.total,
            messages: added,
        })
    }

    /// A member state one of my devices sent, not yet applied.
    pub fn pending_member_state(
        &self,
    ) -> Result<Option<sotto_proto::client::MemberState>, EngineError> {
        self.store
            .get(Tree::Meta, MEMBER_STATE)?
            .map(|bytes| {
                sotto_proto::client::MemberState::decode(bytes.as_slice()).map_err(corrupt)
            })
            .transpose()
    }

    /// The team layer applied (or refused) the pending member state.
    pub fn clear_member_state(&self) -> Result<(), EngineError> {
        self.store.delete(Tree::Meta, MEMBER_STATE)?;
        Ok(self.store.flush()?)
    }

    /// When I last received something from my device `identity` (its
    /// clock, unix ms).
    pub fn device_last_seen(&self, identity: &[u8; 32]) -> Result<Option<u64>, EngineError> {
        Ok(self
            .store
            .get(
                Tree::Meta,
                &[LAST_SEEN_PREFIX, identity.as_slice()].concat(),
            )?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes))
    }

    /// Successions announced by `peer`'s devices (verified by the team
    /// layer, which then clears them).
    pub fn announced_successions(
        &self,
        peer: &str,
    ) -> Result<Vec<sotto_proto::client::Succession>, EngineError> {
        let prefix = [
            SUCCESSION_PREFIX,
            self.store.blind(peer.as_bytes()).as_bytes(),
        ]
        .concat();
        self.store
            .scan_prefix(Tree::Meta, &prefix)?
            .into_iter()
            .map(|(_, value)| {
                sotto_proto::client::Succession::decode(value.as_slice()).map_err(corrupt)
            })
            .collect()
    }

    /// Builds the link request this (new) device sends to `existing`, and
    /// the confirmation code it shows.
    pub fn link_request(
        &self,
        existing: &Card,
        secret: &[u8; 32],
        revocation_secret: &[u8],
        name: &str,
    ) -> (payload::Body, String) {
        let signed = self.signed_card();
        let card = signed.encode_to_vec();
        let mac = link_mac(secret, &card, revocation_secret, name);
        let code = confirmation_code(secret, &existing.identity_key.to_bytes(), &self.me);
        (
            payload::Body::LinkRequest(LinkRequest {
                card: Some(signed),
                revocation_secret: revocation_secret.to_vec().into(),
                mac: mac.to_vec().into(),
                name: name.to_owned(),
            }),
            code,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Epoch, MemoryStore, Store};

    fn engine(handle: &str) -> Engine {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
        Engine::create(store, handle, 0).unwrap()
    }

    /// Delivers everything `from` has queued to `to`.
    fn deliver(from: &mut Engine, to: &mut Engine) -> Vec<Received> {
        let mut received = Vec::new();
        for out in from.outgoing(0).unwrap() {
            received.push(to.receive(out.blob.as_bytes(), Epoch::new(0)).unwrap());
            from.sent(&out.key).unwrap();
        }
        received
    }

    #[test]
    fn a_link_request_is_kept_only_with_the_right_secret_and_not_forever() {
        let mut phone = engine("alice");
        let secret = phone.new_link_secret(3600).unwrap();
        let phone_card = phone.signed_card();
        let request_from = |secret: &[u8; 32]| {
            let mut new = engine("alice");
            let card = Card::verify(&phone_card).unwrap();
            new.set_devices("alice", None, vec![(card.clone(), phone_card.clone())])
                .unwrap();
            let (request, code) = new.link_request(&card, secret, &[9; 32], "laptop");
            new.queue_to_own(None, request, 1_000).unwrap();
            (new, code)
        };
        // Another secret: dropped, nothing pending.
        let (mut forger, _) = request_from(&[1; 32]);
        let got = deliver(&mut forger, &mut phone);
        assert!(matches!(got[..], [Received::Dropped(Dropped::Mismatch)]));
        assert!(phone.pending_devices().unwrap().is_empty());
        // The right one: pending, with the code the new device shows.
        let (mut laptop, code) = request_from(&secret);
        let got = deliver(&mut laptop, &mut phone);
        assert!(matches!(got[..], [Received::LinkRequest]));
        let pending = phone.pending_devices().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].code, code);
        assert_eq!(pending[0].name, "laptop");
        assert_eq!(pending[0].revocation_secret.as_slice(), &[9; 32]);
        // Still there a day after it arrived (by its clock, at 1 s), even
        // though its link secret expired after an hour...
        phone.prune_link_secrets(LINK_REQUEST_TTL_SECS).unwrap();
        assert_eq!(phone.pending_devices().unwrap().len(), 1);
        // ... and gone after that.
        phone.prune_link_secrets(LINK_REQUEST_TTL_SECS + 2).unwrap();
        assert!(phone.pending_devices().unwrap().is_empty());
        assert!(phone.take_link_request(&code).unwrap().is_none());
    }

    #[test]
    fn confirmation_codes_depend_on_the_secret_and_both_keys() {
        let code = confirmation_code(&[1; 32], &[2; 32], &[3; 32]);
        assert_eq!(code.len(), 9);
        assert_eq!(normalize_code(&code).len(), 8);
        assert_eq!(code, confirmation_code(&[1; 32], &[2; 32], &[3; 32]));
        assert_ne!(code, confirmation_code(&[9; 32], &[2; 32], &[3; 32]));
        assert_ne!(code, confirmation_code(&[1; 32], &[9; 32], &[3; 32]));
        assert_ne!(code, confirmation_code(&[1; 32], &[2; 32], &[9; 32]));
        assert_eq!(normalize_code(" 1234 5678 "), "12345678");
    }
}
