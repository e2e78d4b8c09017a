//! Receiving: the inboxes to read this epoch and [`Engine::receive`],
//! which applies the acceptance rule (see the module map) and dispatches
//! each payload.

use sotto_proto::Message as _;
use sotto_proto::client::{Envelope, Payload, payload, receipt};
use vodozemac::Curve25519PublicKey;
use vodozemac::olm::OlmMessage;

use super::pq::{Sealed, Slot};
use super::{
    DIR_KEY, Dropped, ENVELOPE_VERSION, Engine, EngineError, LAST_EPOCH, Message, Received, Status,
    be64_or_zero, corrupt,
};
use crate::device::Device;
use crate::records::Content;
use crate::{
    Batch, BlindedInbox, EPOCH_SECS, Epoch, HYBRID_SEAL_VERSION, InboxKey, InboxPublic,
    PAIRWISE_SEAL_VERSION, SEAL_VERSION, Tree, blob_version, open, open_hybrid, open_pairwise,
};

impl Engine {
    /// A 1:1 message or change from `peer`, filed in its conversation: the
    /// one with `peer`, or, from another device of mine, the one its
    /// `sent_to` names (then it is mine).
    #[allow(clippy::too_many_arguments)]
    fn receive_1to1(
        &mut self,
        content: Content,
        peer: &str,
        from_my_device: bool,
        sent_to: &str,
        message_id: &[u8],
        sent_at: u64,
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        let conversation = if from_my_device {
            if sent_to.is_empty() || sent_to == peer {
                return Ok(self.drop_blob(Dropped::Mismatch));
            }
            sent_to
        } else {
            peer
        };
        let template = Message::plain(
            hex::encode(message_id),
            conversation.to_owned(),
            peer.to_owned(),
            from_my_device,
            String::new(),
            sent_at,
            if from_my_device {
                Status::Sent
            } else {
                Status::Received
            },
            None,
        );
        self.receive_content(conversation, content, template, message_id, batch)
    }

    /// The inboxes to read at `now`: my request inbox and every pairwise
    /// inbox, for each epoch from the last fully synced one (minus one, for
    /// senders with skewed clocks) to the current one, bounded by `max_epochs`.
    pub fn inboxes(
        &self,
        now_secs: u64,
        max_epochs: u64,
    ) -> Result<Vec<BlindedInbox>, EngineError> {
        let (mut request, other) = self.inbox_sets(now_secs, max_epochs)?;
        request.extend(other);
        Ok(request)
    }

    /// [`Engine::inboxes`] in two sets: my request inbox's mailboxes, and
    /// the rest (pairwise inboxes and group mailboxes). They are read on
    /// separate connections (DESIGN §2.2): the request inbox's public key
    /// is in my directory entry, so whoever holds `K_dir` and watches the
    /// relay could label a connection that reads it and learn every other
    /// mailbox read on that connection.
    pub fn inbox_sets(
        &self,
        now_secs: u64,
        max_epochs: u64,
    ) -> Result<(Vec<BlindedInbox>, Vec<BlindedInbox>), EngineError> {
        let current = Epoch::from_unix_secs(now_secs, EPOCH_SECS);
        let last = be64_or_zero(self.store.get(Tree::Meta, LAST_EPOCH)?);
        let oldest = current.get().saturating_sub(max_epochs.saturating_sub(1));
        let from = Epoch::new(last.saturating_sub(1).clamp(oldest, current.get()));
        // Every request inbox still read (the current one, and a rotated
        // one for its grace period): on the request connection.
        let request_keys: Vec<&InboxKey> = self.request_inbox_keys(now_secs);
        let request: Vec<BlindedInbox> = Epoch::range(from, current)
            .flat_map(|epoch| request_keys.iter().map(move |key| key.blind(epoch)))
            .collect();
        let keys: Vec<&InboxKey> = self
            .contacts
            .values()
            .flatten()
            .map(|c| &c.my_inbox)
            .collect();
        let mut other: Vec<BlindedInbox> = Epoch::range(from, current)
            .flat_map(|epoch| keys.iter().map(move |key| key.blind(epoch)))
            .collect();
        other.extend(self.group_inboxes(from, current));
        Ok((request, other))
    }

    /// Records that every inbox up to `now`'s epoch was drained.
    pub fn synced_until(&self, now_secs: u64) -> Result<(), EngineError> {
        let current = Epoch::from_unix_secs(now_secs, EPOCH_SECS);
        self.store
            .put(Tree::Meta, LAST_EPOCH, &current.get().to_be_bytes())?;
        Ok(())
    }

    /// Opens a 1:1 blob by its version: classical (1), hybrid first
    /// contact (3), or with a pairwise secret of one of my contact devices
    /// (4, tried against each). `None` if it does not open.
    fn open_blob(&self, blob: &[u8]) -> Option<(zeroize::Zeroizing<Vec<u8>>, Sealed)> {
        match blob_version(blob)? {
            SEAL_VERSION => open(&self.device.envelope, blob)
                .ok()
                .map(|plaintext| (plaintext, Sealed::Classical)),
            HYBRID_SEAL_VERSION => open_hybrid(&self.device.envelope, &self.device.kem, blob)
                .ok()
                .map(|opened| (opened.plaintext, Sealed::Hybrid(opened.pairwise))),
            PAIRWISE_SEAL_VERSION => {
                let candidates: Vec<([u8; 32], Slot, &crate::PairwiseKey)> = self
                    .contacts
                    .values()
                    .flatten()
                    .flat_map(|c| {
                        let identity = c.card.identity_key.to_bytes();
                        c.pq.candidates()
                            .map(move |(slot, key)| (identity, slot, key))
                    })
                    .collect();
                let (plaintext, index) = open_pairwise(
                    &self.device.envelope,
                    blob,
                    candidates.iter().map(|(_, _, key)| *key),
                )
                .ok()?;
                let (identity, slot, _) = candidates.get(index)?;
                Some((plaintext, Sealed::Pairwise(*identity, *slot)))
            }
            _ => None,
        }
    }

    pub(crate) fn drop_blob(&mut self, reason: Dropped) -> Received {
        *self
            .drops
            .by_reason
            .entry(format!("{reason:?}"))
            .or_default() += 1;
        Received::Dropped(reason)
    }

    /// Processes one blob read from my inbox of `epoch`. The resulting state
    /// is applied to the store (not yet flushed: the caller flushes once per
    /// batch of blobs, then acks them at the relay).
    pub fn receive(&mut self, blob: &[u8], epoch: Epoch) -> Result<Received, EngineError> {
        let Some((opened, sealed)) = self.open_blob(blob) else {
            return Ok(self.drop_blob(Dropped::Unsealable));
        };
        let Ok(envelope) = Envelope::decode(opened.as_slice()) else {
            return Ok(self.drop_blob(Dropped::BadEnvelope));
        };
        if envelope.version != ENVELOPE_VERSION
            || envelope.recipient_identity_key.as_ref() != self.me.as_slice()
            || envelope.epoch.abs_diff(epoch.get()) > 1
            || envelope.message_id.len() != 16
        {
            return Ok(self.drop_blob(Dropped::BadEnvelope));
        }
        let seen_key = [b"in".as_slice(), &envelope.message_id].concat();
        if self.store.get(Tree::Seen, &seen_key)?.is_some() {
            return Ok(Received::Duplicate);
        }
        // The sender must be a contact whose card names this device key
        // (or, for a link request, a new device of mine that knows the
        // link secret).
        let Some((peer, device_index)) = self.device_with(&envelope.sender_identity_key) else {
            if envelope.sender_user == self.device.handle {
                return self.on_link_envelope(&envelope, seen_key);
            }
            return Ok(self.drop_blob(Dropped::UnknownSender));
        };
        if peer != envelope.sender_user {
            return Ok(self.drop_blob(Dropped::UnknownSender));
        }
        match &sealed {
            // Downgrade (DESIGN §5.1): a device whose card has an ML-KEM
            // key is never accepted classically. Refused before Olm runs,
            // so no session state changes.
            Sealed::Classical if self.contacts[&peer][device_index].card.kem_key.is_some() => {
                tracing::warn!(
                    "refused a classical-only envelope from a contact device with a post-quantum key"
                );
                return Ok(self.drop_blob(Dropped::Downgrade));
            }
            // A pairwise secret is bound to one device.
            Sealed::Pairwise(identity, _)
                if identity.as_slice() != envelope.sender_identity_key.as_ref() =>
            {
                return Ok(self.drop_blob(Dropped::Mismatch));
            }
            _ => {}
        }
        let from_my_device = peer == self.device.handle;
        let sender = Curve25519PublicKey::from_bytes(
            envelope
                .sender_identity_key
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("sender key length"))?,
        );
        let Ok(olm) = OlmMessage::from_parts(envelope.olm_type as usize, &envelope.olm_body) else {
            return Ok(self.drop_blob(Dropped::Undecryptable));
        };
        let Some((plaintext, account_changed)) = self.decrypt(sender, &olm) else {
            return Ok(self.drop_blob(Dropped::Undecryptable));
        };
        let plaintext = zeroize::Zeroizing::new(plaintext);
        let Ok(payload) = Payload::decode(plaintext.as_slice()) else {
            return Ok(self.drop_blob(Dropped::Mismatch));
        };
        if payload.message_id != envelope.message_id {
            return Ok(self.drop_blob(Dropped::Mismatch));
        }
        let mut batch = Batch::new();
        batch.put(Tree::Seen, seen_key, &[]);
        // Olm authenticated the sender: keep or confirm the pairwise
        // post-quantum secret the blob carried or used.
        self.on_sealed(
            &peer,
            device_index,
            sealed,
            epoch.get().saturating_mul(EPOCH_SECS),
            &mut batch,
        );
        if from_my_device {
            batch.put(
                Tree::Meta,
                [
                    crate::records::LAST_SEEN_PREFIX,
                    &envelope.sender_identity_key,
                ]
                .concat(),
                &payload.sent_at.to_be_bytes(),
            );
        }
        self.check_token_key(payload.token_key.as_ref(), &mut batch)?;
        self.save_sessions(&sender.to_bytes(), &mut batch)?;
        if account_changed {
            // A new inbound session may have used up a one-time key.
            batch.put(
                Tree::Identity,
                Device::store_key().to_vec(),
                &self.device.record()?,
            );
        }
        // The sender's pairwise inbox for replies.
        // Compared as bytes first: parsing the key is a point
        // decompression, and it is almost always the one already known.
        if let Some(contact) = self
            .contacts
            .get_mut(&peer)
            .and_then(|devices| devices.get_mut(device_index))
            && contact.their_inbox.as_bytes().as_slice() != payload.reply_inbox.as_ref()
            && let Ok(reply) = InboxPublic::from_slice(&payload.reply_inbox)
        {
            contact.their_inbox = reply;
            batch.put(Tree::Contacts, contact.store_key.clone(), &contact.record());
        }
        let received = match payload.body {
            // A message, or a change to one (a plain text is the first
            // content format).
            Some(payload::Body::Text(text)) => self.receive_1to1(
                Content::from_text(text),
                &peer,
                from_my_device,
                &payload.sent_to,
                &envelope.message_id,
                payload.sent_at,
                &mut batch,
            )?,
            Some(payload::Body::Content(content)) => match Content::from_proto(content) {
                Ok(content) => self.receive_1to1(
                    content,
                    &peer,
                    from_my_device,
                    &payload.sent_to,
                    &envelope.message_id,
                    payload.sent_at,
                    &mut batch,
                )?,
                Err(_) => self.drop_blob(Dropped::Mismatch),
            },
            Some(payload::Body::SasKey(key)) => {
                let record = [payload.sent_at.to_be_bytes().as_slice(), &key.public_key].concat();
                batch.put(Tree::Meta, self.sas_key_slot(b"sas-key/", &peer), &record);
                Received::Verification
            }
            Some(payload::Body::SasMac(mac)) => {
                let record = [payload.sent_at.to_be_bytes().as_slice(), &mac.mac].concat();
                batch.put(Tree::Meta, self.sas_key_slot(b"sas-mac/", &peer), &record);
                Received::Verification
            }
            Some(payload::Body::Receipt(receipt)) => {
                let status = if receipt.kind == receipt::Kind::Read as i32 {
                    Status::Read
                } else {
                    Status::Delivered
                };
                for id in &receipt.message_ids {
                    self.update_status(id, status, &mut batch)?;
                }
                Received::Receipt
            }
            Some(payload::Body::GroupState(state)) => {
                self.on_group_state(&peer, state, epoch, payload.sent_at, &mut batch)?
            }
            Some(payload::Body::Succession(succession)) => {
                // Kept for the team layer, which checks it against the
                // user keys it knows (two successors of one key are a
                // compromise).
                let key = [
                    crate::records::SUCCESSION_PREFIX,
                    self.store.blind(peer.as_bytes()).as_bytes(),
                    succession.old_key.as_ref(),
                    succession.new_key.as_ref(),
                ]
                .concat();
                batch.put(Tree::Meta, key, &succession.encode_to_vec());
                Received::Team
            }
            Some(payload::Body::MemberState(state)) if from_my_device => {
                batch.put(
                    Tree::Meta,
                    crate::records::MEMBER_STATE.to_vec(),
                    &state.encode_to_vec(),
                );
                Received::Team
            }
            Some(payload::Body::LinkSecret(shared)) if from_my_device => {
                self.on_link_secret(shared)?
            }
            Some(payload::Body::History(chunk)) if from_my_device => {
                self.on_history_chunk(chunk, &mut batch)?
            }
            Some(payload::Body::GroupSession(share)) if from_my_device => {
                self.on_group_session_share(share, &mut batch)?
            }
            Some(
                payload::Body::MemberState(_)
                | payload::Body::History(_)
                | payload::Body::GroupSession(_)
                | payload::Body::LinkSecret(_)
                | payload::Body::LinkRequest(_),
            ) => return Ok(self.drop_blob(Dropped::Mismatch)),
            Some(payload::Body::GroupKey(key)) => {
                self.on_group_key(&peer, &sender.to_bytes(), key, &mut batch)?
            }
            Some(payload::Body::GroupKeyRequest(request)) => {
                self.on_group_key_request(&peer, request, payload.sent_at)?
            }
            Some(payload::Body::GroupKeyWithheld(withheld)) => {
                self.on_group_key_withheld(&peer, withheld, &mut batch)?
            }
            Some(payload::Body::GroupLeave(leave)) => {
                self.on_group_leave(&peer, leave, payload.sent_at)?
            }
            Some(payload::Body::AccountReport(report)) => {
                // Filed under the authenticated sender; the team layer
                // keeps it only on the admin's devices.
                if report.registration_token_hash.len() != 32 || peer.is_empty() {
                    return Ok(self.drop_blob(Dropped::Mismatch));
                }
                self.record_account_report(&peer, &report.registration_token_hash, &mut batch);
                Received::Team
            }
            Some(payload::Body::AdminGrant(grant)) => {
                // Filed under the authenticated sender; the team layer
                // takes it only if the roster names sender and me admin.
                if peer.is_empty() {
                    return Ok(self.drop_blob(Dropped::Mismatch));
                }
                self.record_admin_grant(&peer, &grant, &mut batch);
                Received::Team
            }
            Some(payload::Body::DirKey(dir_key)) => {
                // The newest one wins; the team layer verifies T's signature.
                let newer = self
                    .pending_dir_key()?
                    .is_none_or(|pending| pending.version < dir_key.version);
                if newer {
                    batch.put(Tree::Meta, DIR_KEY.to_vec(), &dir_key.encode_to_vec());
                }
                Received::Team
            }
            None => return Ok(self.drop_blob(Dropped::Mismatch)),
        };
        self.store.apply(batch)?;
        Ok(received)
    }
}
