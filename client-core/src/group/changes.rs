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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sotto_proto::client::group_payload;

    use super::*;
    use crate::records::UNSUPPORTED_TEXT;
    use crate::{EPOCH_SECS, Epoch, MemoryStore, Received, Rotation, Store};

    const NOW: u64 = 1_800_000_000;
    const NOW_MS: u64 = NOW * 1000;

    fn engine(handle: &str) -> Engine {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().expect("memory store"));
        Engine::create(store, handle, NOW).expect("engine")
    }

    /// Everything in `from`'s outbox, offered to each of `to`.
    fn deliver(from: &mut Engine, to: &mut [&mut Engine]) -> Vec<Received> {
        let epoch = Epoch::from_unix_secs(NOW, EPOCH_SECS);
        let mut received = Vec::new();
        for item in from.outgoing(NOW).expect("outgoing") {
            for engine in to.iter_mut() {
                engine.inboxes(NOW, 1).expect("inboxes");
                received.push(
                    engine
                        .receive_in(&item.mailbox, item.blob.as_bytes(), epoch)
                        .expect("receive"),
                );
            }
            from.sent(&item.key).expect("sent");
        }
        received
    }

    /// alice (admin), bob and carol in groups "g" and "h"; alice wrote
    /// "original" in "g". Returns the three and that message's ID.
    fn three() -> (Engine, Engine, Engine, MessageId) {
        let (mut alice, mut bob, mut carol) = (engine("alice"), engine("bob"), engine("carol"));
        for card in [bob.export_card(), carol.export_card()] {
            alice.import_card(&card).expect("card");
        }
        for card in [alice.export_card(), carol.export_card()] {
            bob.import_card(&card).expect("card");
        }
        for card in [alice.export_card(), bob.export_card()] {
            carol.import_card(&card).expect("card");
        }
        let members = ["bob".to_owned(), "carol".to_owned()];
        for name in ["g", "h"] {
            alice
                .create_group(name, &members, Rotation::default(), NOW_MS)
                .expect("group");
        }
        let id = alice
            .queue_group_text("g", "original", NOW_MS)
            .expect("queued");
        deliver(&mut alice, &mut [&mut bob, &mut carol]);
        (alice, bob, carol, id)
    }

    fn text_in(engine: &Engine, group: &str, id: &MessageId) -> Message {
        engine
            .group_history(group)
            .expect("history")
            .into_iter()
            .find(|m| m.id == hex::encode(id))
            .expect("the message")
    }

    #[test]
    fn a_forged_group_edit_or_delete_by_another_member_is_refused() {
        let (mut alice, mut bob, mut carol, id) = three();
        assert_eq!(text_in(&carol, "g", &id).text, "original");
        // Bob's client skips its own check and sends the changes anyway.
        for content in [
            Content::Edit {
                target: id,
                body: "forged".into(),
            },
            Content::Delete { target: id },
        ] {
            let body = group_payload::Body::Content(content.to_proto().expect("a kind"));
            bob.queue_group_payload("g", body, None, NOW_MS + 1)
                .expect("queued");
        }
        let got = deliver(&mut bob, &mut [&mut alice, &mut carol]);
        let refused = got
            .iter()
            .filter(|r| matches!(r, Received::Dropped(crate::Dropped::Refused)))
            .count();
        assert_eq!(refused, 4, "{got:?}");
        for engine in [&alice, &carol] {
            let message = text_in(engine, "g", &id);
            assert_eq!(message.text, "original");
            assert!(!message.deleted && !message.edited());
        }
    }

    #[test]
    fn a_change_sent_in_another_group_is_refused() {
        let (mut alice, mut bob, mut carol, id) = three();
        // Bob reacts in group "h" to a message of group "g".
        let content = Content::React {
            target: id,
            emoji: "👎".into(),
            remove: false,
        };
        let body = group_payload::Body::Content(content.to_proto().expect("a kind"));
        bob.queue_group_payload("h", body, None, NOW_MS + 1)
            .expect("queued");
        let got = deliver(&mut bob, &mut [&mut alice, &mut carol]);
        assert!(
            got.iter()
                .any(|r| matches!(r, Received::Dropped(crate::Dropped::Refused))),
            "{got:?}"
        );
        assert!(text_in(&carol, "g", &id).reactions.is_empty());
        // The same reaction in the right group applies, for every member.
        bob.change_message(&id, Change::React("👎".into()), NOW_MS + 2)
            .expect("react");
        deliver(&mut bob, &mut [&mut alice, &mut carol]);
        for engine in [&alice, &bob, &carol] {
            assert_eq!(
                text_in(engine, "g", &id).reaction_counts(),
                [("👎", 1)].into()
            );
        }
    }

    #[test]
    fn an_unknown_group_content_kind_shows_as_unsupported() {
        let (mut alice, mut bob, _carol, _) = three();
        let body = group_payload::Body::Content(sotto_proto::client::Content {
            version: 7,
            kind: None,
        });
        alice
            .queue_group_payload("g", body, None, NOW_MS + 1)
            .expect("queued");
        deliver(&mut alice, &mut [&mut bob]);
        let history = bob.group_history("g").expect("history");
        assert_eq!(
            history.last().map(|m| m.text.as_str()),
            Some(UNSUPPORTED_TEXT)
        );
    }

    #[test]
    fn a_group_timer_set_by_any_member_makes_every_member_delete() {
        let (mut alice, mut bob, mut carol, first) = three();
        carol
            .set_group_timer("g", 300, NOW_MS + 1)
            .expect("any member sets it");
        deliver(&mut carol, &mut [&mut alice, &mut bob]);
        for engine in [&alice, &bob, &carol] {
            assert_eq!(engine.group_timer("g").expect("timer"), 300);
            assert!(
                engine.group_history("g").expect("history").iter().any(|m| {
                    m.from == "carol" && m.text == "set disappearing messages to 5 min"
                })
            );
        }
        let id = alice
            .queue_group_text("g", "gone in five", NOW_MS + 10)
            .expect("queued");
        deliver(&mut alice, &mut [&mut bob, &mut carol]);
        for engine in [&mut alice, &mut bob, &mut carol] {
            assert_eq!(engine.purge_expired(NOW_MS + 300_009).expect("purge"), 0);
            assert_eq!(engine.purge_expired(NOW_MS + 300_010).expect("purge"), 1);
            let history = engine.group_history("g").expect("history");
            assert!(history.iter().all(|m| m.id != hex::encode(id)));
            // Sent before the timer: stays.
            assert!(history.iter().any(|m| m.id == hex::encode(first)));
        }
    }
}
