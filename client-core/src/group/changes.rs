//! Changing a message by its ID, 1:1 or in a group: the one entry point
//! ([`Engine::change_message`]) that finds the message's conversation and
//! sends the change there. It lives with groups because it is the layer
//! that knows both kinds of conversation.

use crate::engine::{Engine, EngineError, Message, MessageId};
use crate::records::{ActionError, Content, check_reaction};

/// What a member does to a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// React with this emoji, or take my reaction back if I already did.
    React(String),
    /// Replace my message's text.
    Edit(String),
    /// Delete my message for everyone.
    Delete,
}

impl Engine {
    /// Applies `change` to the message with ID `id` here, and queues it to
    /// everyone in its conversation (my other devices too). Returns the
    /// message as it is now.
    pub fn change_message(
        &mut self,
        id: &MessageId,
        change: Change,
        now_ms: u64,
    ) -> Result<Message, EngineError> {
        let Some(target) = self.find_message(id)? else {
            return Err(ActionError::UnknownMessage(hex::encode(id)).into());
        };
        let me = self.device.handle.clone();
        let content = match change {
            Change::React(emoji) => {
                check_reaction(&emoji).map_err(ActionError::from)?;
                let remove = target
                    .message
                    .reactions
                    .get(&emoji)
                    .is_some_and(|by| by.contains(&me));
                Content::React {
                    target: *id,
                    emoji,
                    remove,
                }
            }
            Change::Edit(body) => {
                if body.trim().is_empty() {
                    return Err(ActionError::EmptyEdit.into());
                }
                Content::Edit { target: *id, body }
            }
            Change::Delete => Content::Delete { target: *id },
        };
        match target.conversation.strip_prefix("group/") {
            Some(group) => self.queue_group_change(group, &content, now_ms),
            None => self.queue_change_to(&target.conversation, &content, now_ms),
        }
    }

    /// The conversation of the message with ID `id`: `None` if there is no
    /// such message here, `Some(None)` for a 1:1 message, `Some(Some(hex
    /// group ID))` for a group's.
    pub fn message_group(&self, id: &MessageId) -> Result<Option<Option<String>>, EngineError> {
        Ok(self.find_message(id)?.map(|target| {
            target
                .conversation
                .strip_prefix("group/")
                .map(str::to_owned)
        }))
    }
}
