//! Replies, reactions, edits and deletes for everyone: finding a message
//! by its ID, checking who may change it, applying the change to the
//! history. Shared by 1:1 conversations (here) and groups
//! (`crate::group`), on the sending device and on every receiving one.
//!
//! **The rule** (docs/PROTOCOL.md, "Message content"): a change names its
//! target by message ID; it is applied only if the target is in the
//! history, in the same conversation the change arrived in, and, for an
//! edit or a delete, written by the change's sender as Olm or Megolm
//! authenticated it. Anything else is refused, logged locally (no IDs, no
//! handles) and counted as [`Dropped::Refused`].

use sotto_proto::client::{Payload, payload};

use super::{Dropped, Engine, EngineError, Message, MessageId, Received, Status, corrupt};
use crate::records::{
    ActionError, Content, DELETED_TEXT, MAX_REACTIONS, UNSUPPORTED_TEXT, mentions,
};
use crate::{Batch, BlindId, Tree, records};

/// `Seen` key prefix of the message index: `"msg/" || message ID` →
/// `history key || conversation`, so a change finds its target, and the
/// target's conversation, without scanning the history.
const INDEX_PREFIX: &[u8] = b"msg/";
const HISTORY_KEY_LEN: usize = BlindId::LEN + 8;

/// A message found by ID: where it is and what it is.
pub(crate) struct Target {
    /// Its history key.
    pub(crate) key: Vec<u8>,
    /// Its conversation: a handle, or a group's `group/<hex>`.
    pub(crate) conversation: String,
    /// The message, with the current status of one of mine.
    pub(crate) message: Message,
    /// The status in the entry itself (mine keep theirs beside it).
    stored_status: Status,
}

impl Engine {
    /// Records in `batch` where message `id` of `conversation` is.
    pub(crate) fn index_message(
        &self,
        id: &[u8],
        history_key: &[u8],
        conversation: &str,
        batch: &mut Batch,
    ) {
        if id.len() == 16 {
            batch.put(
                Tree::Seen,
                [INDEX_PREFIX, id].concat(),
                &[history_key, conversation.as_bytes()].concat(),
            );
        }
    }

    /// The message with ID `id`, if the history holds it.
    pub(crate) fn find_message(&self, id: &MessageId) -> Result<Option<Target>, EngineError> {
        let Some(record) = self.store.get(Tree::Seen, &[INDEX_PREFIX, id].concat())? else {
            return Ok(None);
        };
        if record.len() < HISTORY_KEY_LEN {
            return Err(corrupt("message index entry too short"));
        }
        let (key, conversation) = record.split_at(HISTORY_KEY_LEN);
        let conversation = String::from_utf8(conversation.to_vec()).map_err(corrupt)?;
        let Some(value) = self.store.get(Tree::History, key)? else {
            return Ok(None);
        };
        let mut message = records::decode_message(&value).map_err(corrupt)?;
        if message.id != hex::encode(id) {
            return Ok(None);
        }
        let stored_status = message.status;
        if let Some(record) = self
            .store
            .get(Tree::Seen, &[b"out".as_slice(), id].concat())?
            && let (_, Some(status)) =
                crate::records::split_status_record(&record).map_err(corrupt)?
        {
            message.status = status;
        }
        Ok(Some(Target {
            key: key.to_vec(),
            conversation,
            message,
            stored_status,
        }))
    }

    /// The message whose hex ID is, or starts with, `hex_id` (at least 8
    /// hex digits, as `sotto history` shows them).
    pub fn resolve_message_id(&self, hex_id: &str) -> Result<MessageId, EngineError> {
        let wanted = hex_id.trim().to_ascii_lowercase();
        if wanted.len() == 32 {
            return Ok(crate::records::parse_message_id(&wanted)?);
        }
        if wanted.len() < 8 || wanted.len() > 32 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ActionError::BadId(hex_id.to_owned()).into());
        }
        let bytes = hex::decode(&wanted[..wanted.len() & !1])
            .map_err(|_| ActionError::BadId(hex_id.to_owned()))?;
        let mut found = self
            .store
            .scan_prefix(Tree::Seen, &[INDEX_PREFIX, &bytes].concat())?
            .into_iter()
            .filter_map(|(key, _)| MessageId::try_from(key.get(INDEX_PREFIX.len()..)?).ok())
            .filter(|id| hex::encode(id).starts_with(&wanted));
        match (found.next(), found.next()) {
            (Some(id), None) => Ok(id),
            (None, _) => Err(ActionError::UnknownMessage(hex_id.to_owned()).into()),
            (Some(_), Some(_)) => Err(ActionError::AmbiguousId(hex_id.to_owned()).into()),
        }
    }

    /// Applies a reaction, edit or delete `content` that `sender` sent at
    /// `sent_at` in `conversation` to its target, in `batch`. Returns the
    /// message as it is now, or why the change was refused (nothing is
    /// applied then).
    pub(crate) fn apply_change(
        &self,
        conversation: &str,
        sender: &str,
        content: &Content,
        sent_at: u64,
        batch: &mut Batch,
    ) -> Result<Result<Message, ActionError>, EngineError> {
        let Some(target_id) = content.target() else {
            return Ok(Err(ActionError::UnknownMessage(String::new())));
        };
        let Some(target) = self.find_message(target_id)? else {
            return Ok(Err(ActionError::UnknownMessage(hex::encode(target_id))));
        };
        if target.conversation != conversation {
            return Ok(Err(ActionError::OtherConversation));
        }
        let mut message = target.message;
        if matches!(message.status, Status::Waiting | Status::Withheld) {
            return Ok(Err(ActionError::Unreadable));
        }
        if message.deleted {
            return Ok(Err(ActionError::Deleted));
        }
        match content {
            Content::React { emoji, remove, .. } => {
                if *remove {
                    if let Some(by) = message.reactions.get_mut(emoji) {
                        by.remove(sender);
                        if by.is_empty() {
                            message.reactions.remove(emoji);
                        }
                    }
                } else {
                    if !message.reactions.contains_key(emoji)
                        && message.reactions.len() >= MAX_REACTIONS
                    {
                        return Ok(Err(ActionError::TooManyReactions));
                    }
                    message
                        .reactions
                        .entry(emoji.clone())
                        .or_default()
                        .insert(sender.to_owned());
                }
            }
            Content::Edit { body, .. } => {
                if message.from != sender {
                    return Ok(Err(ActionError::NotAuthor));
                }
                // Edits that cross on the way: the latest written wins on
                // every device.
                if message.edited_at.is_some_and(|at| at > sent_at) {
                    return Ok(Ok(message));
                }
                message.text = body.clone();
                message.edited_at = Some(sent_at);
                message.mentions_me = message.group.is_some()
                    && !message.from_me
                    && mentions(&message.text, &self.device.handle);
            }
            Content::Delete { .. } => {
                if message.from != sender {
                    return Ok(Err(ActionError::NotAuthor));
                }
                message.text.clear();
                message.reactions.clear();
                message.mentions_me = false;
                message.deleted = true;
                // A file goes with it: its key too, so it cannot be fetched.
                if message.file.take().is_some() {
                    self.forget_file(target_id, batch);
                }
            }
            Content::Text { .. }
            | Content::Timer { .. }
            | Content::File(_)
            | Content::Unsupported => {
                return Ok(Err(ActionError::UnknownMessage(String::new())));
            }
        }
        // The status of my own messages lives beside the entry (or, in
        // old homes, in it): written back as it was.
        let mut stored = message.clone();
        stored.status = target.stored_status;
        batch.put(Tree::History, target.key, &records::encode_message(&stored));
        Ok(Ok(message))
    }

    /// A change that arrived, applied or refused: refused ones are logged
    /// and counted, never shown.
    pub(crate) fn receive_change(
        &mut self,
        conversation: &str,
        sender: &str,
        content: &Content,
        sent_at: u64,
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        match self.apply_change(conversation, sender, content, sent_at, batch)? {
            Ok(message) => Ok(Received::Updated(message)),
            Err(reason) => {
                // No IDs or handles in the log: the reason only.
                tracing::info!(%reason, "ignored a message change");
                Ok(self.drop_blob(Dropped::Refused))
            }
        }
    }

    /// A received [`Content`]: a new history entry for a text (a reply
    /// too) or an unsupported kind, the change applied for the others.
    /// `template` is the entry a text becomes, its text and reply still
    /// to fill in.
    pub(crate) fn receive_content(
        &mut self,
        conversation: &str,
        content: Content,
        mut template: Message,
        message_id: &[u8],
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        match content {
            Content::Text {
                body,
                reply_to,
                expires_in_secs,
            } => {
                template.text = body;
                template.reply_to = reply_to.map(hex::encode);
                template.expires_at = Self::expiry(template.sent_at, expires_in_secs);
            }
            // Any member sets the timer (in a group that says so, an
            // admin only); everyone sees who did.
            Content::Timer { .. } if !self.may_set_timer(conversation, &template.from) => {
                tracing::info!("ignored a timer change from a member who is not a group admin");
                return Ok(self.drop_blob(Dropped::Group));
            }
            Content::Timer { secs } => {
                self.put_timer(conversation, secs, batch);
                template.text = super::timer_notice(secs);
            }
            Content::Unsupported => template.text = UNSUPPORTED_TEXT.to_owned(),
            Content::File(info) => {
                template.text = info.caption.clone();
                template.file = Some(info.summary());
                self.put_file(message_id, &info, batch);
            }
            change => {
                let sender = template.from.clone();
                return self.receive_change(
                    conversation,
                    &sender,
                    &change,
                    template.sent_at,
                    batch,
                );
            }
        }
        template.mentions_me = template.group.is_some()
            && !template.from_me
            && mentions(&template.text, &self.device.handle);
        self.file_message(conversation, &template, message_id, batch)?;
        Ok(Received::Message(template))
    }

    /// Queues a text to `peer` that replies to `reply_to` (hex ID of a
    /// message with `peer`), as versioned content. Returns its ID.
    pub fn queue_reply(
        &mut self,
        peer: &str,
        text: &str,
        reply_to: &MessageId,
        now_ms: u64,
    ) -> Result<MessageId, EngineError> {
        match self.find_message(reply_to)? {
            Some(target) if target.conversation == peer => {}
            Some(_) => return Err(ActionError::OtherConversation.into()),
            None => return Err(ActionError::UnknownMessage(hex::encode(reply_to)).into()),
        }
        let timer = self.timer_of(peer)?;
        let content = Content::Text {
            body: text.to_owned(),
            reply_to: Some(*reply_to),
            expires_in_secs: timer,
        };
        let payload = Payload {
            sent_at: now_ms,
            body: content.to_proto().map(payload::Body::Content),
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
        message.reply_to = Some(hex::encode(reply_to));
        message.expires_at = Self::expiry(now_ms, timer);
        let id = self.queue(peer, payload, Some(&message))?;
        self.store.flush()?;
        Ok(id)
    }

    /// Applies my own change to a 1:1 message here and queues it to the
    /// peer's devices and my other ones. Returns the message as it is now.
    pub(crate) fn queue_change_to(
        &mut self,
        peer: &str,
        content: &Content,
        now_ms: u64,
    ) -> Result<Message, EngineError> {
        let mut batch = Batch::new();
        let me = self.device.handle.clone();
        // Checked first, applied only once it is queued.
        let message = self.apply_change(peer, &me, content, now_ms, &mut batch)??;
        let payload = Payload {
            sent_at: now_ms,
            body: content.to_proto().map(payload::Body::Content),
            ..Payload::default()
        };
        self.queue(peer, payload, None)?;
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(message)
    }

    /// The text a message shows: its text, or what stands in for it.
    pub fn shown_text(message: &Message) -> &str {
        if message.deleted {
            DELETED_TEXT
        } else {
            &message.text
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::group::Change;
    use crate::{MemoryStore, Store};

    use crate::engine::tests::{NOW, deliver};
    const NOW_MS: u64 = NOW * 1000;

    fn engine(handle: &str) -> Engine {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().expect("memory store"));
        Engine::create(store, handle, NOW).expect("engine")
    }

    fn pair(a: &mut Engine, b: &mut Engine) {
        a.import_card(&b.export_card()).expect("card");
        b.import_card(&a.export_card()).expect("card");
    }

    /// Queues `content` from `from` to `peer` as is, without the sender's
    /// own checks: what a modified client could send.
    fn forge(from: &mut Engine, peer: &str, content: &Content) {
        let payload = Payload {
            sent_at: NOW_MS + 5,
            body: content.to_proto().map(payload::Body::Content),
            ..Payload::default()
        };
        from.queue(peer, payload, None).expect("queued");
    }

    fn id_of(hex_id: &str) -> MessageId {
        crate::records::parse_message_id(hex_id).expect("an ID")
    }

    #[test]
    fn reply_react_edit_delete_apply_on_both_sides() {
        let mut alice = engine("alice");
        let mut bob = engine("bob");
        pair(&mut alice, &mut bob);
        let first = alice.queue_text("bob", "hello", NOW_MS).expect("queued");
        deliver(&mut alice, &mut bob);
        bob.queue_reply("alice", "hi back", &first, NOW_MS + 1)
            .expect("reply");
        let got = deliver(&mut bob, &mut alice);
        assert!(
            matches!(&got[..], [Received::Message(m)]
                if m.reply_to.as_deref() == Some(hex::encode(first).as_str()) && m.text == "hi back"),
            "{got:?}"
        );
        // React, then react again: taken back.
        bob.change_message(&first, Change::React("👍".into()), NOW_MS + 2)
            .expect("react");
        deliver(&mut bob, &mut alice);
        let counts = |e: &Engine| e.history("alice").or_else(|_| e.history("bob"));
        assert_eq!(
            counts(&alice).expect("history")[0].reaction_counts(),
            [("👍", 1)].into()
        );
        bob.change_message(&first, Change::React("👍".into()), NOW_MS + 3)
            .expect("unreact");
        deliver(&mut bob, &mut alice);
        assert!(counts(&alice).expect("history")[0].reactions.is_empty());
        assert!(counts(&bob).expect("history")[0].reactions.is_empty());
        // The author edits, then deletes.
        alice
            .change_message(&first, Change::Edit("hello!".into()), NOW_MS + 4)
            .expect("edit");
        deliver(&mut alice, &mut bob);
        let at_bob = &bob.history("alice").expect("history")[0];
        assert_eq!(at_bob.text, "hello!");
        assert!(at_bob.edited());
        alice
            .change_message(&first, Change::Delete, NOW_MS + 5)
            .expect("delete");
        deliver(&mut alice, &mut bob);
        for history in [alice.history("bob"), bob.history("alice")] {
            let message = &history.expect("history")[0];
            assert!(message.deleted);
            assert_eq!(message.text, "");
            assert_eq!(Engine::shown_text(message), DELETED_TEXT);
        }
    }

    #[test]
    fn only_the_author_edits_or_deletes() {
        let mut alice = engine("alice");
        let mut bob = engine("bob");
        pair(&mut alice, &mut bob);
        let first = alice.queue_text("bob", "mine", NOW_MS).expect("queued");
        deliver(&mut alice, &mut bob);
        // Refused before anything is sent.
        assert!(matches!(
            bob.change_message(&first, Change::Edit("yours now".into()), NOW_MS + 1),
            Err(EngineError::Action(ActionError::NotAuthor))
        ));
        assert!(matches!(
            bob.change_message(&first, Change::Delete, NOW_MS + 1),
            Err(EngineError::Action(ActionError::NotAuthor))
        ));
        assert!(bob.outgoing(NOW).expect("outgoing").is_empty());
        // Forged past the sender's checks: refused by the receiver.
        forge(
            &mut bob,
            "alice",
            &Content::Edit {
                target: first,
                body: "yours now".into(),
            },
        );
        forge(&mut bob, "alice", &Content::Delete { target: first });
        let got = deliver(&mut bob, &mut alice);
        assert!(
            got.iter()
                .all(|r| matches!(r, Received::Dropped(Dropped::Refused))),
            "{got:?}"
        );
        let message = &alice.history("bob").expect("history")[0];
        assert_eq!(message.text, "mine");
        assert!(!message.deleted && !message.edited());
        assert_eq!(alice.drops().by_reason.get("Refused"), Some(&2));
    }

    #[test]
    fn unknown_ids_and_other_conversations_are_refused() {
        let mut alice = engine("alice");
        let mut bob = engine("bob");
        let mut carol = engine("carol");
        pair(&mut alice, &mut bob);
        pair(&mut alice, &mut carol);
        pair(&mut bob, &mut carol);
        // Alice and Bob talk; Carol learns the ID (say Bob forwarded it).
        let with_bob = bob.queue_text("alice", "private", NOW_MS).expect("queued");
        deliver(&mut bob, &mut alice);
        // Carol reacts to, and (as if she wrote it) deletes, a message of
        // another conversation.
        forge(
            &mut carol,
            "alice",
            &Content::React {
                target: with_bob,
                emoji: "👎".into(),
                remove: false,
            },
        );
        forge(&mut carol, "alice", &Content::Delete { target: with_bob });
        // And changes one that does not exist.
        forge(
            &mut carol,
            "alice",
            &Content::Edit {
                target: [7; 16],
                body: "ghost".into(),
            },
        );
        let got = deliver(&mut carol, &mut alice);
        assert_eq!(got.len(), 3);
        assert!(
            got.iter()
                .all(|r| matches!(r, Received::Dropped(Dropped::Refused))),
            "{got:?}"
        );
        let message = &alice.history("bob").expect("history")[0];
        assert_eq!(message.text, "private");
        assert!(message.reactions.is_empty() && !message.deleted);
        // Locally: an unknown ID, a reply across conversations, a bad emoji.
        assert!(matches!(
            alice.change_message(&[9; 16], Change::Delete, NOW_MS),
            Err(EngineError::Action(ActionError::UnknownMessage(_)))
        ));
        assert!(matches!(
            alice.queue_reply("carol", "re", &with_bob, NOW_MS),
            Err(EngineError::Action(ActionError::OtherConversation))
        ));
        for bad in ["👍👍", "", &"x".repeat(1000)] {
            assert!(matches!(
                alice.change_message(&with_bob, Change::React(bad.into()), NOW_MS),
                Err(EngineError::Action(ActionError::Content(
                    crate::records::ContentError::BadReaction
                )))
            ));
        }
        assert_eq!(id_of(&hex::encode(with_bob)), with_bob);
    }

    #[test]
    fn an_unknown_content_kind_shows_as_unsupported() {
        let mut alice = engine("alice");
        let mut bob = engine("bob");
        pair(&mut alice, &mut bob);
        // A newer sender's kind: this version finds no kind it knows.
        let payload = Payload {
            sent_at: NOW_MS,
            body: Some(payload::Body::Content(sotto_proto::client::Content {
                version: 2,
                kind: None,
            })),
            ..Payload::default()
        };
        alice.queue("bob", payload, None).expect("queued");
        let got = deliver(&mut alice, &mut bob);
        assert!(
            matches!(&got[..], [Received::Message(m)] if m.text == UNSUPPORTED_TEXT),
            "{got:?}"
        );
    }
}
