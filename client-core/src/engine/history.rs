//! The local history: filing messages, statuses (receipts, read marks),
//! reading a conversation, and the store keys' sequence numbers.

use super::{
    Engine, EngineError, Message, MessageId, Status, be64_or_zero, corrupt, seq_of_key,
    split_status_record, status_record,
};
use crate::{Batch, Tree, records};

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

    /// Queues a read receipt for every message from `peer` not yet marked
    /// read; returns how many.
    pub fn mark_read(&mut self, peer: &str, now_ms: u64) -> Result<usize, EngineError> {
        let read_key = [
            b"read-upto/".as_slice(),
            self.store.blind(peer.as_bytes()).as_bytes(),
        ]
        .concat();
        let upto = be64_or_zero(self.store.get(Tree::Meta, &read_key)?);
        let prefix = self.store.blind(peer.as_bytes());
        let mut ids = Vec::new();
        let mut newest = upto;
        for (key, value) in self.store.scan_prefix(Tree::History, prefix.as_bytes())? {
            let seq = seq_of_key(&key).unwrap_or(0);
            if seq <= upto {
                continue;
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
        self.queue_receipt(peer, &ids, true, now_ms)?;
        self.store
            .put(Tree::Meta, &read_key, &newest.to_be_bytes())?;
        self.store.flush()?;
        Ok(ids.len())
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
            .map(|(_, value)| {
                let mut message = records::decode_message(&value).map_err(corrupt)?;
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
            })
            .collect()
    }
}
