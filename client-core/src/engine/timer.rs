//! Disappearing messages: a conversation's timer, and deleting the
//! messages whose time is up.
//!
//! A timer is set by any member of the conversation (a `Content::Timer`,
//! shown to everyone as a notice in the history); texts sent while it is
//! on carry their own lifetime (`expires_in_secs`), counted from the
//! moment they were **sent** (the sender's clock), so every device deletes
//! a message at the same time whether or not it was read.
//! [`Engine::purge_expired`] removes them from the store: the history
//! entry, the message index and the status record; the search reads the
//! history, so nothing else holds their words.

use super::{Engine, EngineError, Message, MessageId, Status, be64_or_zero, corrupt};
use crate::records::{self, MAX_TIMER_SECS, MIN_TIMER_SECS};
use crate::{Batch, Tree};

/// Meta key prefix: a conversation's timer in seconds (`be64`).
const TIMER_PREFIX: &[u8] = b"timer/";

/// The history notice for a timer change.
pub(crate) fn timer_notice(secs: u64) -> String {
    if secs == 0 {
        "turned disappearing messages off".to_owned()
    } else {
        format!(
            "set disappearing messages to {}",
            crate::records::describe_secs(secs)
        )
    }
}

impl Engine {
    fn timer_key(&self, conversation: &str) -> Vec<u8> {
        [
            TIMER_PREFIX,
            self.store.blind(conversation.as_bytes()).as_bytes(),
        ]
        .concat()
    }

    /// The disappearing-message timer of `conversation` in seconds (0:
    /// off).
    pub(crate) fn timer_of(&self, conversation: &str) -> Result<u64, EngineError> {
        Ok(be64_or_zero(
            self.store.get(Tree::Meta, &self.timer_key(conversation))?,
        ))
    }

    /// Records `conversation`'s timer in `batch`.
    pub(crate) fn put_timer(&self, conversation: &str, secs: u64, batch: &mut Batch) {
        batch.put(
            Tree::Meta,
            self.timer_key(conversation),
            &secs.to_be_bytes(),
        );
    }

    /// The disappearing-message timer with `peer` (0: off).
    pub fn timer(&self, peer: &str) -> Result<u64, EngineError> {
        self.timer_of(peer)
    }

    /// When a message sent at `sent_at` in a conversation with timer
    /// `secs` disappears.
    pub(crate) fn expiry(sent_at: u64, secs: u64) -> Option<u64> {
        (secs > 0).then(|| sent_at.saturating_add(secs.saturating_mul(1000)))
    }

    /// Sets the timer with `peer`, here and (as a notice in the history)
    /// for every device of the conversation.
    pub fn set_timer(&mut self, peer: &str, secs: u64, now_ms: u64) -> Result<(), EngineError> {
        let secs = checked(secs)?;
        let content = records::Content::Timer { secs };
        let payload = sotto_proto::client::Payload {
            sent_at: now_ms,
            body: content
                .to_proto()
                .map(sotto_proto::client::payload::Body::Content),
            ..Default::default()
        };
        let notice = Message::plain(
            String::new(),
            peer.to_owned(),
            self.device.handle.clone(),
            true,
            timer_notice(secs),
            now_ms,
            Status::Queued,
            None,
        );
        self.queue(peer, payload, Some(&notice))?;
        let mut batch = Batch::new();
        self.put_timer(peer, secs, &mut batch);
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(())
    }

    /// Deletes every message whose time ran out by `now_ms` from the
    /// store: its history entry, its index entry and its status record.
    /// Returns how many. (The store's values are sealed; sled may keep the
    /// old sealed bytes in its log until it reuses the space: see
    /// docs/DECISIONS.md.)
    pub fn purge_expired(&mut self, now_ms: u64) -> Result<usize, EngineError> {
        let mut batch = Batch::new();
        let mut purged = 0;
        for (key, value) in self.store.scan_prefix(Tree::History, &[])? {
            let message = records::decode_message(&value).map_err(corrupt)?;
            if message.expires_at.is_none_or(|at| at > now_ms) {
                continue;
            }
            batch.delete(Tree::History, key);
            if let Ok(id) = hex::decode(&message.id)
                && let Ok(id) = MessageId::try_from(id.as_slice())
            {
                batch.delete(Tree::Seen, [b"msg/".as_slice(), &id].concat());
                batch.delete(Tree::Seen, [b"out".as_slice(), &id].concat());
            }
            purged += 1;
        }
        if purged > 0 {
            self.store.apply(batch)?;
            self.store.flush()?;
        }
        Ok(purged)
    }
}

/// Checks a timer the user asked for.
pub(crate) fn checked(secs: u64) -> Result<u64, EngineError> {
    if secs == 0 || (MIN_TIMER_SECS..=MAX_TIMER_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(crate::records::ActionError::Content(crate::records::ContentError::BadTimer).into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{EPOCH_SECS, Epoch, MemoryStore, Received, Store};

    const NOW: u64 = 1_800_000_000;
    const NOW_MS: u64 = NOW * 1000;

    fn engine(handle: &str) -> (Engine, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().expect("memory store"));
        (
            Engine::create(store.clone(), handle, NOW).expect("engine"),
            store,
        )
    }

    fn deliver(from: &mut Engine, to: &mut Engine) -> Vec<Received> {
        let epoch = Epoch::from_unix_secs(NOW, EPOCH_SECS);
        let mut received = Vec::new();
        for out in from.outgoing(NOW).expect("outgoing") {
            received.push(to.receive(out.blob.as_bytes(), epoch).expect("receive"));
            from.sent(&out.key).expect("sent");
        }
        received
    }

    /// Every store value, opened (the store seals them at rest).
    fn all_values(store: &dyn Store) -> Vec<Vec<u8>> {
        [Tree::History, Tree::Seen, Tree::Meta, Tree::Outbox]
            .into_iter()
            .flat_map(|tree| store.scan_prefix(tree, &[]).expect("scan"))
            .map(|(_, value)| value.to_vec())
            .collect()
    }

    #[test]
    fn a_timer_set_by_one_side_makes_both_sides_delete_from_the_send_time() {
        let (mut alice, _) = engine("alice");
        let (mut bob, bob_store) = engine("bob");
        alice.import_card(&bob.export_card()).expect("card");
        bob.import_card(&alice.export_card()).expect("card");
        alice.set_timer("bob", 3600, NOW_MS).expect("timer");
        let got = deliver(&mut alice, &mut bob);
        assert!(
            matches!(&got[..], [Received::Message(m)] if m.text == "set disappearing messages to 1 hour"),
            "{got:?}"
        );
        assert_eq!(bob.timer("alice").expect("timer"), 3600);
        // Bob's own messages now disappear too: the timer is the
        // conversation's.
        let from_bob = bob
            .queue_text("alice", "secret from bob", NOW_MS + 1000)
            .expect("queued");
        deliver(&mut bob, &mut alice);
        let id = alice
            .queue_text("bob", "the secret word is swordfish", NOW_MS + 2000)
            .expect("queued");
        deliver(&mut alice, &mut bob);
        let at_bob = bob.history("alice").expect("history");
        assert_eq!(
            at_bob.last().and_then(|m| m.expires_at),
            Some(NOW_MS + 2000 + 3_600_000)
        );
        // Not yet.
        assert_eq!(bob.purge_expired(NOW_MS + 3_600_000).expect("purge"), 0);
        // Time's up, counted from when each was sent (read or not).
        assert_eq!(bob.purge_expired(NOW_MS + 3_602_000).expect("purge"), 2);
        assert_eq!(alice.purge_expired(NOW_MS + 3_602_000).expect("purge"), 2);
        for engine in [&alice, &bob] {
            let peer = if engine.handle() == "alice" {
                "bob"
            } else {
                "alice"
            };
            let texts: Vec<String> = engine
                .history(peer)
                .expect("history")
                .into_iter()
                .map(|m| m.text)
                .collect();
            assert_eq!(texts, ["set disappearing messages to 1 hour"]);
            assert!(engine.find_message(&id).expect("lookup").is_none());
            assert!(engine.find_message(&from_bob).expect("lookup").is_none());
            assert!(
                engine
                    .search(&crate::engine::Query::new("swordfish"), None, 10)
                    .expect("search")
                    .is_empty()
            );
        }
        // Nothing in Bob's store holds the text any more.
        for value in all_values(bob_store.as_ref()) {
            assert!(
                !value.windows(9).any(|w| w == b"swordfish"),
                "a store value still holds the text"
            );
        }
        // Off again: new messages stay.
        bob.set_timer("alice", 0, NOW_MS + 5000).expect("off");
        deliver(&mut bob, &mut alice);
        assert_eq!(alice.timer("bob").expect("timer"), 0);
        alice
            .queue_text("bob", "stays", NOW_MS + 6000)
            .expect("queued");
        deliver(&mut alice, &mut bob);
        assert_eq!(bob.purge_expired(u64::MAX).expect("purge"), 0);
    }

    #[test]
    fn disappearing_messages_ask_the_relay_for_the_nearest_ttl_above_the_timer() {
        let (mut alice, _) = engine("alice");
        let (bob, _) = engine("bob");
        alice.import_card(&bob.export_card()).expect("card");
        alice.bob_ttls_check(&[
            (0, 0),
            (300, 3600),
            (7200, 86_400),
            (MAX_TIMER_SECS, 1_209_600),
        ]);
    }

    impl Engine {
        /// For each (timer, TTL): with that timer on, a text to bob asks
        /// the relay for that TTL.
        fn bob_ttls_check(&mut self, cases: &[(u64, u32)]) {
            for &(timer, ttl) in cases {
                self.set_timer("bob", timer, NOW_MS).expect("timer");
                for out in self.outgoing(NOW).expect("outgoing") {
                    self.sent(&out.key).expect("sent");
                }
                self.queue_text("bob", "x", NOW_MS).expect("queued");
                let out = self.outgoing(NOW).expect("outgoing");
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].ttl_secs, ttl, "timer {timer}");
                self.sent(&out[0].key).expect("sent");
            }
        }
    }

    #[test]
    fn timers_outside_five_minutes_to_four_weeks_are_refused() {
        let (mut alice, _) = engine("alice");
        let (bob, _) = engine("bob");
        alice.import_card(&bob.export_card()).expect("card");
        for bad in [1, 299, MAX_TIMER_SECS + 1] {
            assert!(alice.set_timer("bob", bad, NOW_MS).is_err(), "{bad}");
        }
        assert!(alice.outgoing(NOW).expect("outgoing").is_empty());
    }
}
