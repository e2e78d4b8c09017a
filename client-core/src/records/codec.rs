//! Compact binary encodings of the engine's hot store records: history
//! [`Message`]s, outbox entries, contacts.
//!
//! These records are written for every message, and their first encoding
//! (serde_json) cost more than the cryptography around them: JSON writes a
//! `Vec<u8>` as an array of decimal numbers. A record is now
//! `FORMAT_V1 || fields`, each field either fixed-size (big-endian
//! integers, 32-byte keys) or length-prefixed (`u32` big-endian length,
//! then the bytes).
//!
//! **Compatibility:** homes written before this encoding hold JSON
//! records. A JSON document starts with `{`, `[` or whitespace, never with
//! the byte `0x01`, so readers look at the first byte and fall back to
//! serde_json for anything else. Old records are never rewritten just to
//! convert them; they turn binary when their slot is next written.
//!
//! Decoders take bytes from the disk: every length is checked, trailing
//! bytes are refused, and no input panics (see the proptests).

use zeroize::Zeroizing;

use super::{ContactRecord, Message, OutboxRecord, Status};

/// The first byte of every binary record. JSON never starts with it.
pub(crate) const FORMAT_V1: u8 = 0x01;

/// A record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// The record ends before all its fields.
    #[error("the record is truncated")]
    Truncated,
    /// The record has bytes after its last field.
    #[error("the record has trailing bytes")]
    Trailing,
    /// A text field is not UTF-8.
    #[error("a text field of the record is not UTF-8")]
    Utf8,
    /// A field holds a value no writer produces.
    #[error("the record holds an unknown {0}")]
    Unknown(&'static str),
    /// A legacy JSON record did not parse.
    #[error("the legacy JSON record does not parse: {0}")]
    Json(#[from] serde_json::Error),
}

/// Appends fields to a record. The buffer zeroizes on drop: some records
/// (contacts) hold secrets, and a plain `Vec` would leave copies behind.
pub(crate) struct Writer(Zeroizing<Vec<u8>>);

impl Writer {
    /// A record of about `capacity` bytes, its format byte written.
    pub(crate) fn new(capacity: usize) -> Self {
        let mut buf = Zeroizing::new(Vec::with_capacity(capacity + 1));
        buf.push(FORMAT_V1);
        Self(buf)
    }

    pub(crate) fn u8(&mut self, value: u8) -> &mut Self {
        self.0.push(value);
        self
    }

    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Fixed-size bytes, no length prefix.
    pub(crate) fn raw(&mut self, value: &[u8]) -> &mut Self {
        self.0.extend_from_slice(value);
        self
    }

    /// Length-prefixed bytes.
    pub(crate) fn bytes(&mut self, value: &[u8]) -> &mut Self {
        // Store values are capped at 16 MiB (`MAX_VALUE_LEN`), so a field
        // length always fits in 32 bits; a longer one is refused at `apply`.
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(value);
        self
    }

    pub(crate) fn str(&mut self, value: &str) -> &mut Self {
        self.bytes(value.as_bytes())
    }

    pub(crate) fn finish(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

/// Reads the fields of a binary record (after its format byte).
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A reader over `record` if it is binary; `None` for a legacy (JSON)
    /// record.
    pub(crate) fn binary(record: &'a [u8]) -> Option<Self> {
        match record.split_first() {
            Some((&FORMAT_V1, rest)) => Some(Self(rest)),
            _ => None,
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < len {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u64(&mut self) -> Result<u64, RecordError> {
        let bytes: [u8; 8] = self.array()?;
        Ok(u64::from_be_bytes(bytes))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        self.take(N)?.try_into().map_err(|_| RecordError::Truncated)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let len = u32::from_be_bytes(self.array()?);
        let len = usize::try_from(len).map_err(|_| RecordError::Truncated)?;
        self.take(len)
    }

    pub(crate) fn string(&mut self) -> Result<String, RecordError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| RecordError::Utf8)
    }

    /// Ends the record: anything left is an error.
    pub(crate) fn finish(self) -> Result<(), RecordError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Trailing)
        }
    }
}

impl Status {
    /// The status's byte in binary records. Never renumber.
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Status::Queued => 0,
            Status::Sent => 1,
            Status::Delivered => 2,
            Status::Read => 3,
            Status::Received => 4,
            Status::Waiting => 5,
            Status::Withheld => 6,
            Status::Unsent => 7,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Result<Self, RecordError> {
        Ok(match byte {
            0 => Status::Queued,
            1 => Status::Sent,
            2 => Status::Delivered,
            3 => Status::Read,
            4 => Status::Received,
            5 => Status::Waiting,
            6 => Status::Withheld,
            7 => Status::Unsent,
            _ => return Err(RecordError::Unknown("message status")),
        })
    }
}

const FROM_ME: u8 = 1;
const IN_GROUP: u8 = 2;
/// Deleted for everyone by its author.
const DELETED: u8 = 4;
/// Mentions me.
const MENTIONS_ME: u8 = 8;
/// A reply, edit or reactions follow the group name (see
/// [`encode_message`]).
const EXTRA: u8 = 16;
/// A file follows everything else (issue 21): `name, size, sha256,
/// media type, chunks, thumbnail flag`.
const FILE: u8 = 32;

/// A history entry: `status, flags, sent_at, id, peer, from, text[, group]
/// [, reply_to, edited, edited_at, reaction count, (emoji, handle count,
/// handles)*, expires, expires_at]`; the last part only with the `EXTRA` flag, so entries
/// without replies, edits or reactions keep their first encoding.
pub(crate) fn encode_message(message: &Message) -> Zeroizing<Vec<u8>> {
    let mut flags = 0;
    if message.from_me {
        flags |= FROM_ME;
    }
    if message.group.is_some() {
        flags |= IN_GROUP;
    }
    if message.deleted {
        flags |= DELETED;
    }
    if message.mentions_me {
        flags |= MENTIONS_ME;
    }
    let extra = message.reply_to.is_some()
        || message.edited_at.is_some()
        || !message.reactions.is_empty()
        || message.expires_at.is_some();
    if extra {
        flags |= EXTRA;
    }
    if message.file.is_some() {
        flags |= FILE;
    }
    let group = message.group.as_deref().unwrap_or_default();
    let mut w = Writer::new(
        26 + message.id.len()
            + message.peer.len()
            + message.from.len()
            + message.text.len()
            + group.len(),
    );
    w.u8(message.status.to_byte())
        .u8(flags)
        .u64(message.sent_at)
        .str(&message.id)
        .str(&message.peer)
        .str(&message.from)
        .str(&message.text);
    if message.group.is_some() {
        w.str(group);
    }
    if extra {
        w.u8(u8::from(message.reply_to.is_some()))
            .str(message.reply_to.as_deref().unwrap_or_default())
            .u8(u8::from(message.edited_at.is_some()))
            .u64(message.edited_at.unwrap_or_default())
            .u64(message.reactions.len() as u64);
        for (emoji, by) in &message.reactions {
            w.str(emoji).u64(by.len() as u64);
            for handle in by {
                w.str(handle);
            }
        }
        w.u8(u8::from(message.expires_at.is_some()))
            .u64(message.expires_at.unwrap_or_default());
    }
    if let Some(file) = &message.file {
        w.str(&file.name)
            .u64(file.size)
            .str(&file.sha256)
            .str(&file.media_type)
            .u64(file.chunks)
            .u8(u8::from(file.has_thumbnail));
    }
    w.finish()
}

/// Decodes a history entry, binary or legacy JSON.
pub(crate) fn decode_message(record: &[u8]) -> Result<Message, RecordError> {
    let Some(mut r) = Reader::binary(record) else {
        return Ok(serde_json::from_slice(record)?);
    };
    let status = Status::from_byte(r.u8()?)?;
    let flags = r.u8()?;
    if flags & !(FROM_ME | IN_GROUP | DELETED | MENTIONS_ME | EXTRA | FILE) != 0 {
        return Err(RecordError::Unknown("message flag"));
    }
    let sent_at = r.u64()?;
    let mut message = Message::plain(
        r.string()?,
        r.string()?,
        r.string()?,
        flags & FROM_ME != 0,
        r.string()?,
        sent_at,
        status,
        None,
    );
    if flags & IN_GROUP != 0 {
        message.group = Some(r.string()?);
    }
    message.deleted = flags & DELETED != 0;
    message.mentions_me = flags & MENTIONS_ME != 0;
    if flags & EXTRA != 0 {
        let has_reply = flag(r.u8()?)?;
        let reply_to = r.string()?;
        message.reply_to = has_reply.then_some(reply_to);
        let has_edit = flag(r.u8()?)?;
        let edited_at = r.u64()?;
        message.edited_at = has_edit.then_some(edited_at);
        let count = r.u64()?;
        for _ in 0..count {
            let emoji = r.string()?;
            let by = message.reactions.entry(emoji).or_default();
            for _ in 0..r.u64()? {
                by.insert(r.string()?);
            }
        }
        let has_expiry = flag(r.u8()?)?;
        let expires_at = r.u64()?;
        message.expires_at = has_expiry.then_some(expires_at);
    }
    if flags & FILE != 0 {
        message.file = Some(super::FileRef {
            name: r.string()?,
            size: r.u64()?,
            sha256: r.string()?,
            media_type: r.string()?,
            chunks: r.u64()?,
            has_thumbnail: flag(r.u8()?)?,
        });
    }
    r.finish()?;
    Ok(message)
}

fn flag(byte: u8) -> Result<bool, RecordError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(RecordError::Unknown("flag byte")),
    }
}

/// An outbox entry's flag: a relay TTL follows.
const HAS_TTL: u8 = 4;

/// An outbox entry: `flags, peer, envelope, message_id[, group][, ttl]`.
pub(crate) fn encode_outbox(record: &OutboxRecord) -> Zeroizing<Vec<u8>> {
    let group = record.group.as_deref().unwrap_or_default();
    let mut w = Writer::new(
        22 + record.peer.len() + record.envelope.len() + record.message_id.len() + group.len(),
    );
    let mut flags = if record.group.is_some() { IN_GROUP } else { 0 };
    if record.ttl_secs > 0 {
        flags |= HAS_TTL;
    }
    w.u8(flags)
        .str(&record.peer)
        .bytes(&record.envelope)
        .bytes(&record.message_id);
    if record.group.is_some() {
        w.str(group);
    }
    if record.ttl_secs > 0 {
        w.u64(u64::from(record.ttl_secs));
    }
    w.finish()
}

/// Decodes an outbox entry, binary or legacy JSON.
pub(crate) fn decode_outbox(record: &[u8]) -> Result<OutboxRecord, RecordError> {
    let Some(mut r) = Reader::binary(record) else {
        return Ok(serde_json::from_slice(record)?);
    };
    let flags = r.u8()?;
    if flags & !(IN_GROUP | HAS_TTL) != 0 {
        return Err(RecordError::Unknown("outbox flag"));
    }
    let mut record = OutboxRecord {
        peer: r.string()?,
        envelope: r.bytes()?.to_vec(),
        message_id: r.bytes()?.to_vec(),
        group: if flags & IN_GROUP != 0 {
            Some(r.string()?)
        } else {
            None
        },
        ttl_secs: 0,
    };
    if flags & HAS_TTL != 0 {
        record.ttl_secs = u32::try_from(r.u64()?)
            .ok()
            .filter(|&ttl| ttl > 0)
            .ok_or(RecordError::Unknown("outbox TTL"))?;
    }
    r.finish()?;
    Ok(record)
}

/// A contact: `signed_card, their_inbox, my_inbox_seed`. Holds a secret
/// (the seed of my pairwise inbox key), hence the zeroizing buffer.
pub(crate) fn encode_contact(record: &ContactRecord) -> Zeroizing<Vec<u8>> {
    let mut w = Writer::new(68 + record.signed_card.len());
    w.bytes(&record.signed_card)
        .raw(&record.their_inbox)
        .raw(&record.my_inbox_seed);
    w.finish()
}

/// Decodes a contact, binary or legacy JSON.
pub(crate) fn decode_contact(record: &[u8]) -> Result<ContactRecord, RecordError> {
    let Some(mut r) = Reader::binary(record) else {
        return Ok(serde_json::from_slice(record)?);
    };
    let record = ContactRecord {
        signed_card: r.bytes()?.to_vec(),
        their_inbox: r.array()?,
        my_inbox_seed: r.array()?,
    };
    r.finish()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn status() -> impl Strategy<Value = Status> {
        (0u8..8).prop_map(|b| Status::from_byte(b).expect("in range"))
    }

    prop_compose! {
        fn message()(
            id in ".*", peer in ".*", from in ".*", text in ".*",
            from_me: bool, sent_at: u64, status in status(),
            group in proptest::option::of(".*"),
            reply_to in proptest::option::of("[0-9a-f]{32}"),
            edited_at in proptest::option::of(any::<u64>()),
            deleted: bool, mentions_me: bool,
            expires_at in proptest::option::of(any::<u64>()),
            reactions in proptest::collection::btree_map(
                ".{1,4}", proptest::collection::btree_set("[a-z]{1,8}", 1..4), 0..4),
            file in proptest::option::of((".*", any::<u64>(), "[0-9a-f]{64}", ".*", any::<u64>(), any::<bool>())),
        ) -> Message {
            let file = file.map(|(name, size, sha256, media_type, chunks, has_thumbnail)| {
                crate::records::FileRef { name, size, sha256, media_type, chunks, has_thumbnail }
            });
            Message {
                id, peer, from, from_me, text, sent_at, status, group,
                reply_to, edited_at, deleted, mentions_me, reactions, expires_at, file,
            }
        }
    }

    proptest! {
        #[test]
        fn message_round_trips(message in message()) {
            let bytes = encode_message(&message);
            prop_assert_eq!(decode_message(&bytes).expect("decodes"), message);
        }

        #[test]
        fn legacy_json_message_still_loads(message in message()) {
            let json = serde_json::to_vec(&message).expect("json");
            prop_assert_eq!(decode_message(&json).expect("decodes"), message);
        }

        #[test]
        fn message_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_message(&bytes);
        }

        #[test]
        fn truncated_message_is_refused(message in message(), cut in 1usize..20) {
            let bytes = encode_message(&message);
            let cut = bytes.len().saturating_sub(cut).max(1);
            prop_assert!(decode_message(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn a_json_record_from_an_old_home_loads() {
        // Byte for byte what the JSON encoding wrote.
        let old = br#"{"id":"00112233445566778899aabbccddeeff","peer":"bob","from":"alice","from_me":true,"text":"hi","sent_at":1800000000000,"status":"delivered"}"#;
        let message = decode_message(old).expect("old record loads");
        assert_eq!(message.status, Status::Delivered);
        assert_eq!(message.text, "hi");
        assert_eq!(message.group, None);
    }

    #[test]
    fn outbox_entries_keep_their_ttl_and_old_ones_read_as_default() {
        for ttl_secs in [0, 3600, 1_209_600] {
            let record = OutboxRecord {
                peer: "bob".into(),
                envelope: vec![1, 2, 3],
                group: Some("ab".into()),
                message_id: vec![7; 16],
                ttl_secs,
            };
            let decoded = decode_outbox(&encode_outbox(&record)).expect("decodes");
            assert_eq!(decoded.ttl_secs, ttl_secs);
            assert_eq!(decoded.envelope, record.envelope);
        }
        // An entry written before TTLs: no flag, the relay's default.
        let old = [FORMAT_V1, 0, 0, 0, 0, 1, b'b', 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode_outbox(&old).expect("decodes").ttl_secs, 0);
        assert_eq!(crate::records::ttl_for(0), 0);
        assert_eq!(crate::records::ttl_for(300), 3600);
        assert_eq!(crate::records::ttl_for(3600), 3600);
        assert_eq!(crate::records::ttl_for(7200), 86_400);
        assert_eq!(crate::records::ttl_for(28 * 86_400), 1_209_600);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let message = Message::plain(
            "id".into(),
            "bob".into(),
            "alice".into(),
            true,
            "hi".into(),
            1,
            Status::Queued,
            None,
        );
        let mut bytes = encode_message(&message).to_vec();
        bytes.push(0);
        assert!(matches!(decode_message(&bytes), Err(RecordError::Trailing)));
    }
}
