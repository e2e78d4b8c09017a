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
    /// The message.
    pub(crate) message: Message,
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
        }))
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
            }
            Content::Text { .. } | Content::Unsupported => {
                return Ok(Err(ActionError::UnknownMessage(String::new())));
            }
        }
        // The status of my own messages lives beside the entry.
        let mut stored = message.clone();
        if stored.from_me {
            stored.status = Status::Sent;
        }
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
            Content::Text { body, reply_to } => {
                template.text = body;
                template.reply_to = reply_to.map(hex::encode);
            }
            Content::Unsupported => template.text = UNSUPPORTED_TEXT.to_owned(),
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
        let content = Content::Text {
            body: text.to_owned(),
            reply_to: Some(*reply_to),
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
