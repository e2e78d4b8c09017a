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
//!
//! The purge runs before every history page, search and export, so it
//! must not read the history: an **expiry index** in `Meta`
//! (`expires/ || be64(expires_at) || history key`, empty values) lists
//! every entry that disappears in the order they are due, and the purge
//! reads only the index entries that are due. Every write of an expiring
//! history entry adds its index entry in the same batch
//! ([`Engine::index_expiry`]); a profile from before the index builds it
//! once, at its first purge (`expires-indexed` records that it did).

use super::{Engine, EngineError, Message, MessageId, Status, be64_or_zero, corrupt};
use crate::records::{self, MAX_TIMER_SECS, MIN_TIMER_SECS};
use crate::{Batch, Tree};

/// Meta key prefix: a conversation's timer in seconds (`be64`).
const TIMER_PREFIX: &[u8] = b"timer/";
/// Meta key prefix of the expiry index (see the module docs).
const EXPIRES_PREFIX: &[u8] = b"expires/";
/// Meta key, present once every expiring history entry is in the expiry
/// index: from the start in a new profile, after the first purge in one
/// from before the index.
pub(crate) const EXPIRES_INDEXED: &[u8] = b"expires-indexed";
/// Index entries read per round of a purge.
const PURGE_ROUND: usize = 1000;

/// The expiry index key of history entry `history_key`, due at `at`.
fn expiry_key(at: u64, history_key: &[u8]) -> Vec<u8> {
    [EXPIRES_PREFIX, &at.to_be_bytes(), history_key].concat()
}

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

    /// Adds, in `batch`, the expiry index entry of history entry `key`
    /// holding `message`, if it disappears. Every put of a new history
    /// entry calls it (an entry rewritten in place keeps its expiry, and
    /// so its index entry).
    pub(crate) fn index_expiry(key: &[u8], message: &Message, batch: &mut Batch) {
        if let Some(at) = message.expires_at {
            batch.put(Tree::Meta, expiry_key(at, key), &[]);
        }
    }

    /// Deletes every message whose time ran out by `now_ms` from the
    /// store: its history entry, its index entry and its status record.
    /// Returns how many. Reads only the expiry index entries that are
    /// due (and, once for a profile from before the index, the whole
    /// history to build it). (The store's values are sealed; sled may
    /// keep the old sealed bytes in its log until it reuses the space:
    /// see docs/DECISIONS.md.)
    pub fn purge_expired(&mut self, now_ms: u64) -> Result<usize, EngineError> {
        self.build_expiry_index()?;
        // Index keys due by `now_ms` sort before `expires/ || be64(now_ms + 1)`.
        let before = now_ms
            .checked_add(1)
            .map(|next| [EXPIRES_PREFIX, &next.to_be_bytes()].concat());
        let mut purged = 0;
        loop {
            let due =
                self.store
                    .scan_last(Tree::Meta, EXPIRES_PREFIX, before.as_deref(), PURGE_ROUND)?;
            if due.is_empty() {
                break;
            }
            let mut batch = Batch::new();
            let mut gone = Vec::new();
            for (index_key, _) in &due {
                batch.delete(Tree::Meta, index_key.clone());
                let Some(history_key) = index_key.get(EXPIRES_PREFIX.len() + 8..) else {
                    continue;
                };
                let Some(value) = self.store.get(Tree::History, history_key)? else {
                    continue;
                };
                let message = records::decode_message(&value).map_err(corrupt)?;
                // An index entry outlived by its history entry's: skipped.
                if message.expires_at.is_none_or(|at| at > now_ms) {
                    continue;
                }
                batch.delete(Tree::History, history_key.to_vec());
                if let Ok(id) = hex::decode(&message.id)
                    && let Ok(id) = MessageId::try_from(id.as_slice())
                {
                    batch.delete(Tree::Seen, [b"msg/".as_slice(), &id].concat());
                    batch.delete(Tree::Seen, [b"out".as_slice(), &id].concat());
                }
                gone.push((history_key.to_vec(), message.from_me));
                purged += 1;
            }
            self.recount_unread_after(&gone, &mut batch)?;
            self.store.apply(batch)?;
            if due.len() < PURGE_ROUND {
                break;
            }
        }
        if purged > 0 {
            self.store.flush()?;
        }
        Ok(purged)
    }

    /// Builds the expiry index of a profile from before it: one pass over
    /// the whole history, once (recorded by `EXPIRES_INDEXED`).
    fn build_expiry_index(&mut self) -> Result<(), EngineError> {
        if self.store.get(Tree::Meta, EXPIRES_INDEXED)?.is_some() {
            return Ok(());
        }
        let mut batch = Batch::new();
        for (key, value) in self.store.scan_prefix(Tree::History, &[])? {
            let message = records::decode_message(&value).map_err(corrupt)?;
            Self::index_expiry(&key, &message, &mut batch);
        }
        batch.put(Tree::Meta, EXPIRES_INDEXED, &[]);
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(())
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
    use crate::Batch;
    use crate::{MemoryStore, Received, Store};

    use crate::engine::tests::{NOW, deliver};
    const NOW_MS: u64 = NOW * 1000;

    fn engine(handle: &str) -> (Engine, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().expect("memory store"));
        (
            Engine::create(store.clone(), handle, NOW).expect("engine"),
            store,
        )
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

    /// The expiry index entries in `store`, as (due time, history key).
    fn index_entries(store: &dyn Store) -> Vec<(u64, Vec<u8>)> {
        store
            .scan_prefix(Tree::Meta, EXPIRES_PREFIX)
            .expect("scan")
            .into_iter()
            .map(|(key, _)| {
                let at = &key[EXPIRES_PREFIX.len()..EXPIRES_PREFIX.len() + 8];
                (
                    u64::from_be_bytes(at.try_into().expect("8 bytes")),
                    key[EXPIRES_PREFIX.len() + 8..].to_vec(),
                )
            })
            .collect()
    }

    /// Alice and bob with a one-hour timer; alice sends texts at the
    /// given offsets from NOW_MS, bob receives them.
    fn expiring(offsets_ms: &[u64]) -> (Engine, Engine, Arc<dyn Store>) {
        let (mut alice, _) = engine("alice");
        let (mut bob, bob_store) = engine("bob");
        alice.import_card(&bob.export_card()).expect("card");
        bob.import_card(&alice.export_card()).expect("card");
        alice.set_timer("bob", 3600, NOW_MS).expect("timer");
        deliver(&mut alice, &mut bob);
        for (i, offset) in offsets_ms.iter().enumerate() {
            alice
                .queue_text("bob", &format!("text {i}"), NOW_MS + offset)
                .expect("queued");
        }
        deliver(&mut alice, &mut bob);
        (alice, bob, bob_store)
    }

    fn texts(engine: &Engine, peer: &str) -> Vec<String> {
        engine
            .history(peer)
            .expect("history")
            .into_iter()
            .map(|m| m.text)
            .collect()
    }

    #[test]
    fn the_purge_removes_exactly_what_the_expiry_index_says_is_due() {
        let (_alice, mut bob, store) = expiring(&[1000, 2000, 3000]);
        let index = index_entries(store.as_ref());
        assert_eq!(
            index.iter().map(|(at, _)| *at).collect::<Vec<_>>(),
            [
                NOW_MS + 1000 + 3_600_000,
                NOW_MS + 2000 + 3_600_000,
                NOW_MS + 3000 + 3_600_000
            ],
            "one index entry per expiring text, in the order they are due"
        );
        // Exactly at the second one's time: the first two go.
        assert_eq!(
            bob.purge_expired(NOW_MS + 2000 + 3_600_000).expect("purge"),
            2
        );
        assert_eq!(
            texts(&bob, "alice"),
            ["set disappearing messages to 1 hour", "text 2"]
        );
        assert_eq!(index_entries(store.as_ref()), index[2..]);
        assert_eq!(bob.purge_expired(u64::MAX).expect("purge"), 1);
        assert!(index_entries(store.as_ref()).is_empty());
        assert_eq!(bob.purge_expired(u64::MAX).expect("purge"), 0);
    }

    #[test]
    fn an_index_entry_whose_history_entry_is_gone_or_lives_longer_purges_nothing() {
        let (_alice, mut bob, store) = expiring(&[1000]);
        let (at, history_key) = index_entries(store.as_ref()).remove(0);
        // An index entry due earlier than its history entry, and one for
        // an entry that no longer exists.
        let mut batch = Batch::new();
        batch.put(Tree::Meta, expiry_key(at - 10_000, &history_key), &[]);
        let mut missing = history_key.clone();
        *missing.last_mut().expect("seq") ^= 0x40;
        batch.put(Tree::Meta, expiry_key(at - 10_000, &missing), &[]);
        store.apply(batch).expect("apply");
        assert_eq!(bob.purge_expired(at - 1).expect("purge"), 0);
        assert_eq!(texts(&bob, "alice").len(), 2, "the text is still there");
        assert_eq!(index_entries(store.as_ref()), [(at, history_key)]);
        assert_eq!(bob.purge_expired(at).expect("purge"), 1);
    }

    #[test]
    fn a_profile_from_before_the_index_builds_it_once_at_its_first_purge() {
        let (_alice, mut bob, store) = expiring(&[1000, 2000]);
        let index = index_entries(store.as_ref());
        // What a profile from before the index holds: no index, no flag.
        let mut batch = Batch::new();
        for (at, key) in &index {
            batch.delete(Tree::Meta, expiry_key(*at, key));
        }
        batch.delete(Tree::Meta, EXPIRES_INDEXED);
        store.apply(batch).expect("apply");
        // The first purge builds it (nothing is due yet).
        assert_eq!(bob.purge_expired(NOW_MS).expect("purge"), 0);
        assert_eq!(index_entries(store.as_ref()), index);
        assert!(
            store
                .get(Tree::Meta, EXPIRES_INDEXED)
                .expect("get")
                .is_some()
        );
        // Built once: an index entry lost now is not found again by
        // reading the history (the purge reads the index only).
        store
            .delete(Tree::Meta, &expiry_key(index[0].0, &index[0].1))
            .expect("delete");
        assert_eq!(bob.purge_expired(u64::MAX).expect("purge"), 1);
        assert_eq!(
            texts(&bob, "alice"),
            ["set disappearing messages to 1 hour", "text 0"]
        );
    }
}
