//! The local history: filing messages, statuses (receipts, read marks),
//! reading a conversation, and the store keys' sequence numbers.

use super::{
    Engine, EngineError, Message, MessageId, Status, be64_or_zero, corrupt, seq_of_key,
    split_status_record, status_record,
};
use crate::store::UNREAD_PREFIX;
use crate::{Batch, BlindId, Tree, records};

/// Meta key prefix: how far a conversation was marked read (`be64`).
const READ_UPTO_PREFIX: &[u8] = b"read-upto/";
/// Meta key, present while read receipts are off.
const READ_RECEIPTS_OFF: &[u8] = b"settings/read-receipts-off";

impl Engine {
    /// Adds `message` to `conversation`'s history in `batch`; for one of
    /// mine, also the status record that receipts move (see
    /// [`status_record`]).
    pub(crate) fn file_message(
        &mut self,
        conversation: &str,
        message: &Message,
        message_id: &[u8],
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let key = self.next_history_key(conversation)?;
        batch.put(
            Tree::History,
            key.clone(),
            &records::encode_message(message),
        );
        self.index_message(message_id, &key, conversation, batch);
        Self::index_expiry(&key, message, batch);
        if message.from_me {
            batch.put(
                Tree::Seen,
                [b"out".as_slice(), message_id].concat(),
                &status_record(&key, message.status),
            );
        }
        Ok(())
    }

    /// The key of the next history entry with `peer` (or in a group
    /// conversation): one past the conversation's last key. Keys are
    /// unique and ordered per conversation, which is all history needs.
    pub(crate) fn next_history_key(&mut self, peer: &str) -> Result<Vec<u8>, EngineError> {
        let blind = self.store.blind(peer.as_bytes());
        let seq = match self.history_seqs.get(&blind) {
            Some(seq) => *seq,
            None => self
                .store
                .last_key(Tree::History, blind.as_bytes())?
                .as_deref()
                .and_then(seq_of_key)
                .unwrap_or(0)
                .max(self.legacy_history_seq),
        } + 1;
        self.history_seqs.insert(blind, seq);
        Ok([blind.as_bytes().as_slice(), &seq.to_be_bytes()].concat())
    }

    /// The next outbox key: `be64(seq) || message ID`, so that
    /// [`Engine::sent`] knows the message without reading the entry. The
    /// counter lives in memory: at open it is recovered from the outbox's
    /// last key, and once the outbox is empty no key of the old numbering
    /// is referenced anywhere.
    pub(crate) fn next_outbox_key(&mut self, message_id: &MessageId) -> Vec<u8> {
        self.outbox_seq += 1;
        [self.outbox_seq.to_be_bytes().as_slice(), message_id].concat()
    }

    /// Marks every message from `peer` read: see [`Engine::mark_read_upto`],
    /// up to the newest message in the history now.
    pub fn mark_read(&mut self, peer: &str, now_ms: u64) -> Result<usize, EngineError> {
        let newest = self.history_head(peer)?;
        self.mark_read_upto(peer, newest, now_ms)
    }

    /// Where the history with `peer` ends now: pass it to
    /// [`Engine::mark_read_upto`] to mark read what was shown, and nothing
    /// that arrives after.
    pub fn history_head(&self, peer: &str) -> Result<u64, EngineError> {
        let prefix = self.store.blind(peer.as_bytes());
        Ok(self
            .store
            .last_key(Tree::History, prefix.as_bytes())?
            .as_deref()
            .and_then(seq_of_key)
            .unwrap_or(0))
    }

    /// Marks the messages from `peer` up to history position `upto` (from
    /// [`Engine::history_head`]) read, and when read receipts are on
    /// ([`Engine::read_receipts`]) queues one read receipt naming them all
    /// in the outbox: it goes out with the next delivery. Returns how many
    /// messages were newly marked; marking again is a no-op.
    pub fn mark_read_upto(
        &mut self,
        peer: &str,
        upto: u64,
        now_ms: u64,
    ) -> Result<usize, EngineError> {
        let ids = self.advance_read_mark(peer, upto)?;
        if self.read_receipts()? {
            self.queue_receipt(peer, &ids, true, now_ms)?;
        }
        Ok(ids.len())
    }

    /// Moves `conversation`'s read mark up to history position `upto`;
    /// returns the IDs of the messages from others it passed. Reads only
    /// what lies between the old mark and `upto`.
    pub(crate) fn advance_read_mark(
        &mut self,
        conversation: &str,
        upto: u64,
    ) -> Result<Vec<MessageId>, EngineError> {
        let prefix = self.store.blind(conversation.as_bytes());
        let marked = self.read_mark(&prefix)?;
        if upto <= marked {
            return Ok(Vec::new());
        }
        let mut ids = Vec::new();
        let mut newest = marked;
        let from = [prefix.as_bytes().as_slice(), &marked.to_be_bytes()].concat();
        // Positions are unique: at most `upto - marked` entries lie in
        // between, and none after `upto` is read.
        let most = usize::try_from(upto - marked).unwrap_or(usize::MAX);
        for (key, value) in self
            .store
            .scan_after(Tree::History, prefix.as_bytes(), &from, most)?
        {
            let seq = seq_of_key(&key).unwrap_or(0);
            if seq > upto {
                break;
            }
            newest = newest.max(seq);
            let message = records::decode_message(&value).map_err(corrupt)?;
            if !message.from_me
                && let Ok(id) = hex::decode(&message.id)
                && let Ok(id) = MessageId::try_from(id.as_slice())
            {
                ids.push(id);
            }
        }
        let read_key = [READ_UPTO_PREFIX, prefix.as_bytes()].concat();
        self.store
            .put(Tree::Meta, &read_key, &newest.to_be_bytes())?;
        // Nothing from others lies between the new mark and itself: the
        // count starts there, and reads on from it when next asked for.
        self.store.put(
            Tree::Meta,
            &unread_key(&prefix),
            &UnreadCount {
                mark: newest,
                head: newest,
                count: 0,
            }
            .encode(),
        )?;
        self.store.flush()?;
        Ok(ids)
    }

    /// Where `conversation` (blinded) was marked read up to (0: never).
    fn read_mark(&self, conversation: &BlindId) -> Result<u64, EngineError> {
        let read_key = [READ_UPTO_PREFIX, conversation.as_bytes()].concat();
        Ok(be64_or_zero(self.store.get(Tree::Meta, &read_key)?))
    }

    /// How many messages from others `conversation` holds past its read
    /// mark. Reads only what arrived since it last counted (its count is
    /// kept in the store, see [`UNREAD_PREFIX`]), or, when that count is
    /// gone or older than the read mark, what lies after the mark.
    pub(crate) fn unread_in(&self, conversation: &str) -> Result<usize, EngineError> {
        let prefix = self.store.blind(conversation.as_bytes());
        let marked = self.read_mark(&prefix)?;
        let key = unread_key(&prefix);
        let kept = self
            .store
            .get(Tree::Meta, &key)?
            .and_then(|bytes| UnreadCount::decode(&bytes))
            .filter(|kept| kept.mark == marked);
        let mut now = kept.unwrap_or(UnreadCount {
            mark: marked,
            head: marked,
            count: 0,
        });
        let from = [prefix.as_bytes().as_slice(), &now.head.to_be_bytes()].concat();
        let newer = self
            .store
            .scan_after(Tree::History, prefix.as_bytes(), &from, usize::MAX)?;
        for (key, value) in &newer {
            if !records::decode_message(value).map_err(corrupt)?.from_me {
                now.count += 1;
            }
            now.head = now.head.max(seq_of_key(key).unwrap_or(0));
        }
        if kept.is_none() || !newer.is_empty() {
            // Derived data: not flushed (lost, it is counted again).
            self.store.put(Tree::Meta, &key, &now.encode())?;
        }
        Ok(usize::try_from(now.count).unwrap_or(usize::MAX))
    }

    /// In `batch`, after deleting the history entries `gone` (key, and
    /// whether the message was mine): puts each conversation's unread
    /// count less the deleted messages it counted, so a purge does not
    /// make the next count read the conversation again. (The deletes
    /// dropped the counts; a conversation without a current one is left
    /// to be counted when asked for.)
    pub(crate) fn recount_unread_after(
        &self,
        gone: &[(Vec<u8>, bool)],
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let mut counts: std::collections::BTreeMap<&[u8], Option<UnreadCount>> = Default::default();
        for (history_key, from_me) in gone {
            let Some(blind) = history_key.get(..BlindId::LEN) else {
                continue;
            };
            let seq = seq_of_key(history_key).unwrap_or(0);
            if !counts.contains_key(blind) {
                let kept = self
                    .store
                    .get(Tree::Meta, &[UNREAD_PREFIX, blind].concat())?
                    .and_then(|bytes| UnreadCount::decode(&bytes));
                let marked = be64_or_zero(
                    self.store
                        .get(Tree::Meta, &[READ_UPTO_PREFIX, blind].concat())?,
                );
                counts.insert(blind, kept.filter(|kept| kept.mark == marked));
            }
            if let Some(Some(count)) = counts.get_mut(blind)
                && !from_me
                && seq > count.mark
                && seq <= count.head
            {
                count.count = count.count.saturating_sub(1);
            }
        }
        for (blind, count) in counts {
            if let Some(count) = count {
                batch.put(Tree::Meta, [UNREAD_PREFIX, blind].concat(), &count.encode());
            }
        }
        Ok(())
    }

    /// How many messages from `peer` I have not been shown yet (past the
    /// read mark [`Engine::mark_read`] moves).
    pub fn unread(&self, peer: &str) -> Result<usize, EngineError> {
        self.unread_in(peer)
    }

    /// Whether marking messages read tells their sender (default on). The
    /// setting is the profile's, kept in the store; delivered receipts are
    /// another matter ([`crate::Client::set_receipts`]).
    pub fn read_receipts(&self) -> Result<bool, EngineError> {
        Ok(self.store.get(Tree::Meta, READ_RECEIPTS_OFF)?.is_none())
    }

    /// Turns read receipts on or off for this profile.
    pub fn set_read_receipts(&mut self, on: bool) -> Result<(), EngineError> {
        if on {
            self.store.delete(Tree::Meta, READ_RECEIPTS_OFF)?;
        } else {
            self.store.put(Tree::Meta, READ_RECEIPTS_OFF, &[])?;
        }
        self.store.flush()?;
        Ok(())
    }

    pub(crate) fn update_status(
        &self,
        message_id: &[u8],
        status: Status,
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let seen_key = [b"out".as_slice(), message_id].concat();
        let Some(record) = self.store.get(Tree::Seen, &seen_key)? else {
            return Ok(());
        };
        let (history_key, current) = split_status_record(&record).map_err(corrupt)?;
        let current = match current {
            Some(current) => current,
            // An old home kept the status in the history entry only.
            None => match self.store.get(Tree::History, history_key)? {
                Some(bytes) => records::decode_message(&bytes).map_err(corrupt)?.status,
                None => return Ok(()),
            },
        };
        // Status only moves forward (a late "sent" never hides "read").
        let rank = |s: Status| match s {
            Status::Queued => 0,
            Status::Sent | Status::Unsent => 1,
            Status::Delivered => 2,
            Status::Read => 3,
            Status::Received | Status::Waiting | Status::Withheld => 0,
        };
        if rank(status) > rank(current) {
            batch.put(Tree::Seen, seen_key, &status_record(history_key, status));
        }
        Ok(())
    }

    /// My history with `peer`, oldest first.
    pub fn history(&self, peer: &str) -> Result<Vec<Message>, EngineError> {
        if !self.contacts.contains_key(peer)
            && self
                .store
                .last_key(Tree::History, self.store.blind(peer.as_bytes()).as_bytes())?
                .is_none()
        {
            return Err(EngineError::UnknownContact(peer.to_owned()));
        }
        self.history_of(peer)
    }

    /// Every history entry of a conversation, oldest first, with the
    /// current status of my own messages (kept beside the entry, see
    /// [`status_record`]).
    pub(crate) fn history_of(&self, conversation: &str) -> Result<Vec<Message>, EngineError> {
        self.store
            .scan_prefix(
                Tree::History,
                self.store.blind(conversation.as_bytes()).as_bytes(),
            )?
            .into_iter()
            .map(|(_, value)| self.open_message(&value))
            .collect()
    }

    /// The last `limit` entries of a conversation before history position
    /// `before` (`None`: the newest), oldest first, each with its position
    /// (pass the first one's as `before` for the page above). Reads only
    /// the page.
    pub(crate) fn history_page_of(
        &self,
        conversation: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, EngineError> {
        let prefix = self.store.blind(conversation.as_bytes());
        let before = before.map(|seq| [prefix.as_bytes().as_slice(), &seq.to_be_bytes()].concat());
        self.store
            .scan_last(Tree::History, prefix.as_bytes(), before.as_deref(), limit)?
            .into_iter()
            .map(|(key, value)| Ok((seq_of_key(&key).unwrap_or(0), self.open_message(&value)?)))
            .collect()
    }

    /// A page of my history with `peer`: see [`Engine::history`] and
    /// `history_page_of`.
    pub fn history_page(
        &self,
        peer: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, EngineError> {
        if !self.contacts.contains_key(peer) && self.history_head(peer)? == 0 {
            return Err(EngineError::UnknownContact(peer.to_owned()));
        }
        self.history_page_of(peer, before, limit)
    }

    /// Test hook (the desktop's figures bench): files `count` messages
    /// with `peer` straight into the history, as receiving and sending
    /// them would (history entry, message index, status record of my
    /// own), without any cryptography but the store's. Every third is
    /// mine (read); the others are `peer`'s, unread. Message IDs are
    /// `first_id + i`, so conversations filled with distinct `first_id`s
    /// do not share IDs; message `i` was sent at `start_ms + i` minutes.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn bench_import_history(
        &mut self,
        peer: &str,
        count: usize,
        first_id: u128,
        start_ms: u64,
    ) -> Result<(), EngineError> {
        const WORDS: [&str; 8] = [
            "deploy", "review", "lunch", "release", "incident", "design", "budget", "hiring",
        ];
        let me = self.device.handle.clone();
        let mut i = 0;
        while i < count {
            let mut batch = Batch::new();
            for i in i..count.min(i + 1000) {
                let id = (first_id + i as u128).to_be_bytes();
                let mine = i % 3 == 2;
                let text = format!(
                    "message {i}: about the {} and the weekly status of everything{}",
                    WORDS[i % WORDS.len()],
                    if i % 7 == 0 {
                        ", with a second sentence that makes this one wrap onto another line in a narrow window"
                    } else {
                        ""
                    }
                );
                let message = Message::plain(
                    hex::encode(id),
                    peer.to_owned(),
                    if mine { me.clone() } else { peer.to_owned() },
                    mine,
                    text,
                    start_ms + i as u64 * 60_000,
                    if mine { Status::Read } else { Status::Received },
                    None,
                );
                self.file_message(peer, &message, &id, &mut batch)?;
            }
            self.store.apply(batch)?;
            i += 1000;
        }
        Ok(self.store.flush()?)
    }

    /// One history entry, with the current status of my own messages.
    pub(crate) fn open_message(&self, value: &[u8]) -> Result<Message, EngineError> {
        let mut message = records::decode_message(value).map_err(corrupt)?;
        if message.from_me
            && let Ok(id) = hex::decode(&message.id)
            && let Some(record) = self
                .store
                .get(Tree::Seen, &[b"out".as_slice(), &id].concat())?
            && let (_, Some(status)) = split_status_record(&record).map_err(corrupt)?
        {
            message.status = status;
        }
        Ok(message)
    }
}

/// The Meta key of a conversation's unread count.
fn unread_key(conversation: &BlindId) -> Vec<u8> {
    [UNREAD_PREFIX, conversation.as_bytes()].concat()
}

/// A conversation's unread count as last counted: `count` messages from
/// others after read mark `mark`, up to history position `head`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct UnreadCount {
    mark: u64,
    head: u64,
    count: u64,
}

impl UnreadCount {
    fn encode(&self) -> [u8; 24] {
        let mut bytes = [0; 24];
        bytes[..8].copy_from_slice(&self.mark.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.head.to_be_bytes());
        bytes[16..].copy_from_slice(&self.count.to_be_bytes());
        bytes
    }

    /// `None` for anything but 24 bytes (counted again).
    fn decode(bytes: &[u8]) -> Option<Self> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        (bytes.len() == 24).then_some(())?;
        Some(Self {
            mark: word(0)?,
            head: word(8)?,
            count: word(16)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Change, MemoryStore, Received, Store};

    use crate::engine::tests::{NOW, deliver};
    const NOW_MS: u64 = NOW * 1000;

    fn pair() -> (Engine, Engine, Arc<dyn Store>) {
        let engine = |handle: &str| {
            let store: Arc<dyn Store> = Arc::new(MemoryStore::new().expect("memory store"));
            (
                Engine::create(store.clone(), handle, NOW).expect("engine"),
                store,
            )
        };
        let (mut alice, _) = engine("alice");
        let (mut bob, bob_store) = engine("bob");
        alice.import_card(&bob.export_card()).expect("card");
        bob.import_card(&alice.export_card()).expect("card");
        (alice, bob, bob_store)
    }

    fn send(from: &mut Engine, to: &mut Engine, count: usize, at_ms: u64) -> Vec<MessageId> {
        let peer = to.handle().to_owned();
        let ids = (0..count)
            .map(|i| {
                from.queue_text(&peer, &format!("text {i}"), at_ms + i as u64)
                    .expect("queued")
            })
            .collect();
        deliver(from, to);
        ids
    }

    /// Bob's unread count from alice, and the same counted afresh from
    /// the read mark (its kept count dropped first).
    fn unread_and_recounted(bob: &Engine, store: &dyn Store) -> (usize, usize) {
        let unread = bob.unread("alice").expect("unread");
        let key = unread_key(&store.blind(b"alice"));
        store.delete(Tree::Meta, &key).expect("drop the count");
        (unread, bob.unread("alice").expect("unread"))
    }

    #[test]
    fn the_unread_count_stays_right_across_receive_mark_read_delete_and_purge() {
        let (mut alice, mut bob, store) = pair();
        let key = unread_key(&store.blind(b"alice"));
        assert_eq!(bob.unread("alice").expect("unread"), 0);
        send(&mut alice, &mut bob, 3, NOW_MS);
        assert_eq!(bob.unread("alice").expect("unread"), 3);
        // Counted: the count is kept, and later counts read on from it.
        assert!(store.get(Tree::Meta, &key).expect("get").is_some());
        let ids = send(&mut alice, &mut bob, 2, NOW_MS + 10);
        // Bob's own messages are never unread.
        bob.queue_text("alice", "mine", NOW_MS + 20)
            .expect("queued");
        deliver(&mut bob, &mut alice);
        assert_eq!(unread_and_recounted(&bob, store.as_ref()), (5, 5));

        assert_eq!(bob.mark_read("alice", NOW_MS + 30).expect("read"), 5);
        assert_eq!(unread_and_recounted(&bob, store.as_ref()), (0, 0));
        let unread = send(&mut alice, &mut bob, 2, NOW_MS + 40);
        assert_eq!(unread_and_recounted(&bob, store.as_ref()), (2, 2));

        // A delete for everyone keeps a stub, which stays unread; so does
        // one of a message already read.
        for id in [&unread[0], &ids[0]] {
            alice
                .change_message(id, Change::Delete, NOW_MS + 50)
                .expect("delete");
        }
        alice
            .change_message(&unread[1], Change::Edit("edited".into()), NOW_MS + 50)
            .expect("delete");
        deliver(&mut alice, &mut bob);
        assert_eq!(unread_and_recounted(&bob, store.as_ref()), (2, 2));

        // Disappearing texts: counted while there, not once purged, and
        // the purge corrects the kept count instead of dropping it.
        alice.set_timer("bob", 300, NOW_MS + 60).expect("timer");
        deliver(&mut alice, &mut bob);
        send(&mut alice, &mut bob, 3, NOW_MS + 70);
        assert_eq!(bob.unread("alice").expect("unread"), 6);
        assert_eq!(bob.purge_expired(NOW_MS + 300_071).expect("purge"), 2);
        assert!(store.get(Tree::Meta, &key).expect("get").is_some());
        assert_eq!(unread_and_recounted(&bob, store.as_ref()), (4, 4));
        bob.mark_read("alice", NOW_MS + 80).expect("read");
        assert_eq!(bob.purge_expired(NOW_MS + 300_072).expect("purge"), 1);
        assert_eq!(unread_and_recounted(&bob, store.as_ref()), (0, 0));
    }

    #[test]
    fn any_history_delete_drops_the_kept_unread_count_and_the_next_count_is_right() {
        let (mut alice, mut bob, store) = pair();
        send(&mut alice, &mut bob, 3, NOW_MS);
        assert_eq!(bob.unread("alice").expect("unread"), 3);
        let key = unread_key(&store.blind(b"alice"));
        // A delete the count does not know about (as a group placeholder
        // dropped when its key arrives).
        let (last, _) = store
            .scan_last(Tree::History, store.blind(b"alice").as_bytes(), None, 1)
            .expect("scan")
            .remove(0);
        let mut batch = Batch::new();
        batch.delete(Tree::History, last);
        store.apply(batch).expect("apply");
        assert!(store.get(Tree::Meta, &key).expect("get").is_none());
        assert_eq!(bob.unread("alice").expect("unread"), 2);
    }

    #[test]
    fn marking_many_messages_read_sends_receipts_of_at_most_a_thousand_ids() {
        let (mut alice, mut bob, _) = pair();
        // 3,000 entries, two in three from alice: 2,000 to mark read.
        bob.bench_import_history("alice", 3000, 1 << 64, NOW_MS)
            .expect("import");
        assert_eq!(bob.unread("alice").expect("unread"), 2000);
        assert_eq!(bob.mark_read("alice", NOW_MS).expect("read"), 2000);
        let got = deliver(&mut bob, &mut alice);
        assert_eq!(got.len(), 2, "two receipts of 1,000");
        assert!(
            got.iter().all(|r| matches!(r, Received::Receipt)),
            "{got:?}"
        );
        // One more past the thousand: a third.
        bob.bench_import_history("alice", 2, 2 << 64, NOW_MS)
            .expect("import");
        bob.mark_read("alice", NOW_MS).expect("read");
        assert_eq!(deliver(&mut bob, &mut alice).len(), 1);
        assert_eq!(bob.unread("alice").expect("unread"), 0);
    }
}
