//! The local history: filing messages, statuses (receipts, read marks),
//! reading a conversation, and the store keys' sequence numbers.

use super::{
    Engine, EngineError, Message, MessageId, Status, be64_or_zero, corrupt, seq_of_key,
    split_status_record, status_record,
};
use crate::{Batch, Tree, records};

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
    /// what lies after the old mark.
    pub(crate) fn advance_read_mark(
        &mut self,
        conversation: &str,
        upto: u64,
    ) -> Result<Vec<MessageId>, EngineError> {
        let prefix = self.store.blind(conversation.as_bytes());
        let read_key = [READ_UPTO_PREFIX, prefix.as_bytes()].concat();
        let marked = be64_or_zero(self.store.get(Tree::Meta, &read_key)?);
        if upto <= marked {
            return Ok(Vec::new());
        }
        let mut ids = Vec::new();
        let mut newest = marked;
        let from = [prefix.as_bytes().as_slice(), &marked.to_be_bytes()].concat();
        for (key, value) in
            self.store
                .scan_after(Tree::History, prefix.as_bytes(), &from, usize::MAX)?
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
        self.store
            .put(Tree::Meta, &read_key, &newest.to_be_bytes())?;
        self.store.flush()?;
        Ok(ids)
    }

    /// How many messages from others `conversation` holds past its read
    /// mark. Reads only what lies after the mark.
    pub(crate) fn unread_in(&self, conversation: &str) -> Result<usize, EngineError> {
        let prefix = self.store.blind(conversation.as_bytes());
        let read_key = [READ_UPTO_PREFIX, prefix.as_bytes()].concat();
        let marked = be64_or_zero(self.store.get(Tree::Meta, &read_key)?);
        let from = [prefix.as_bytes().as_slice(), &marked.to_be_bytes()].concat();
        let mut unread = 0;
        for (_, value) in
            self.store
                .scan_after(Tree::History, prefix.as_bytes(), &from, usize::MAX)?
        {
            if !records::decode_message(&value).map_err(corrupt)?.from_me {
                unread += 1;
            }
        }
        Ok(unread)
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
