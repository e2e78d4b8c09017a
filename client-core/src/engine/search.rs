//! Local search and export over the history.
//!
//! **The search index** is a set of sealed *groups* in the Meta tree
//! (`store::SEARCH_PREFIX`): one per conversation and 256 consecutive
//! history positions, holding each live entry's position, send time and
//! lowercased text. A search opens one group instead of 256 history
//! entries, and the history entries of its hits only. Every group is
//! sealed by the store like any other value, under a key made of the
//! conversation's blind ID and a counter (no content in keys).
//!
//! The index is derived data and never trusted to be current by being
//! kept in step: any write to a history entry — a new message, an edit, a
//! reaction, a delete for everyone, a disappearing message purged, a
//! history transfer — drops the group covering that entry *in the same
//! atomic batch* (`Batch::put`/`delete` on the history do it, so no
//! writer can forget). A search rebuilds missing groups from the history,
//! and only groups whose 256 positions are all behind the conversation's
//! newest entry; the newer tail is read entry by entry. So a deleted or
//! expired text leaves the index in the write that deletes it, and a
//! search never shows a text the history no longer holds (each hit is
//! also re-read and re-matched from its history entry).
//!
//! The query is only ever compared as text: quotes, regex characters or
//! any unicode are just characters.

use std::collections::BTreeSet;

use zeroize::Zeroizing;

use super::{Engine, EngineError, Message, corrupt, seq_of_key};
use crate::store::{SEARCH_GROUP, SEARCH_PREFIX};
use crate::{Batch, BlindId, Tree, records};

/// Format version of a search group (first byte).
const GROUP_VERSION: u8 = 1;

/// The words of already lowercased `text`: runs of letters and digits.
fn words(text: &str) -> impl Iterator<Item = &str> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// A parsed search query.
#[derive(Debug, Clone)]
pub struct Query {
    /// Every word must start a word of the message (prefix match).
    words: Vec<String>,
    /// A query without letters or digits (`"?!"`) matches as a
    /// case-insensitive substring instead.
    raw: String,
}

impl Query {
    /// Parses what the user typed; any text is a valid query.
    pub fn new(text: &str) -> Self {
        let lowered = text.to_lowercase();
        Self {
            words: words(&lowered).map(str::to_owned).collect(),
            raw: lowered.trim().to_owned(),
        }
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        self.matches_lowered(&text.to_lowercase())
    }

    /// Whether `lowered` (a text already lowercased, as the index keeps
    /// it) matches. Allocates nothing.
    fn matches_lowered(&self, lowered: &str) -> bool {
        if self.words.is_empty() {
            return !self.raw.is_empty() && lowered.contains(&self.raw);
        }
        self.words.iter().all(|want| {
            // A word that starts a word of the text is in it somewhere:
            // the substring test is the fast way to rule most texts out.
            lowered.contains(want.as_str())
                && words(lowered).any(|word| word.starts_with(want.as_str()))
        })
    }
}

/// A history entry that matched: found in the index or read directly.
struct Hit {
    sent_at: u64,
    /// The history key (`blind || be64(seq)`).
    key: Vec<u8>,
}

/// One entry of a search group.
struct Indexed {
    seq: u64,
    sent_at: u64,
    lowered: String,
}

fn encode_group(entries: &[Indexed]) -> Zeroizing<Vec<u8>> {
    let size = entries.iter().map(|e| 20 + e.lowered.len()).sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(1 + size));
    out.push(GROUP_VERSION);
    for entry in entries {
        out.extend_from_slice(&entry.seq.to_be_bytes());
        out.extend_from_slice(&entry.sent_at.to_be_bytes());
        // A text is far below 4 GiB (blobs are fixed-size and small).
        let len = u32::try_from(entry.lowered.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry.lowered.as_bytes());
    }
    out
}

/// Calls `each(seq, sent_at, lowered)` for every entry of an encoded
/// group; `None` (after some calls, perhaps) when it is malformed.
fn each_in_group(bytes: &[u8], mut each: impl FnMut(u64, u64, &str)) -> Option<()> {
    let (&version, mut rest) = bytes.split_first()?;
    if version != GROUP_VERSION {
        return None;
    }
    while !rest.is_empty() {
        let (seq, tail) = rest.split_first_chunk::<8>()?;
        let (sent_at, tail) = tail.split_first_chunk::<8>()?;
        let (len, tail) = tail.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if tail.len() < len {
            return None;
        }
        let (text, tail) = tail.split_at(len);
        each(
            u64::from_be_bytes(*seq),
            u64::from_be_bytes(*sent_at),
            std::str::from_utf8(text).ok()?,
        );
        rest = tail;
    }
    Some(())
}

/// The history key at position `seq` of the conversation `prefix`.
fn history_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    [prefix, &seq.to_be_bytes()].concat()
}

/// The key to scan the history after to start at group `group`.
fn before_group(prefix: &[u8], group: u64) -> Vec<u8> {
    match (group * SEARCH_GROUP).checked_sub(1) {
        Some(seq) => history_key(prefix, seq),
        None => prefix.to_vec(),
    }
}

impl Engine {
    /// Messages matching `query` in `conversation` (a handle or a group's
    /// conversation; `None`: every conversation), newest first, at most
    /// `limit`. Deleted messages never match. Groups of the search index
    /// found missing are rebuilt and written (not flushed: they are
    /// derived, and a lost one is rebuilt again).
    pub fn search(
        &self,
        query: &Query,
        conversation: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Message>, EngineError> {
        let prefixes = match conversation {
            Some(conversation) => vec![
                self.store
                    .blind(conversation.as_bytes())
                    .as_bytes()
                    .to_vec(),
            ],
            None => self.history_prefixes()?,
        };
        let mut hits = Vec::new();
        let mut built = Batch::new();
        for prefix in &prefixes {
            self.search_conversation(query, prefix, &mut hits, &mut built)?;
        }
        if !built.is_empty() {
            self.store.apply(built)?;
        }
        hits.sort_by_key(|hit| std::cmp::Reverse(hit.sent_at));
        let mut found = Vec::new();
        for hit in hits {
            if found.len() >= limit {
                break;
            }
            let Some(value) = self.store.get(Tree::History, &hit.key)? else {
                continue;
            };
            let message = self.open_message(&value)?;
            if !message.deleted && query.matches(&message.text) {
                found.push(message);
            }
        }
        Ok(found)
    }

    /// The blind prefix of every conversation in the history, newest
    /// prefix first: one entry opened per conversation.
    fn history_prefixes(&self) -> Result<Vec<Vec<u8>>, EngineError> {
        let mut prefixes: Vec<Vec<u8>> = Vec::new();
        loop {
            let before = prefixes.last().map(Vec::as_slice);
            let Some((key, _)) = self
                .store
                .scan_last(Tree::History, &[], before, 1)?
                .into_iter()
                .next()
            else {
                break;
            };
            let Some(prefix) = key.get(..BlindId::LEN) else {
                break;
            };
            prefixes.push(prefix.to_vec());
        }
        Ok(prefixes)
    }

    /// Adds the matches of the conversation `prefix` to `hits`: from the
    /// index's groups, from groups rebuilt now (written in `built`), and
    /// from the newest entries read one by one.
    fn search_conversation(
        &self,
        query: &Query,
        prefix: &[u8],
        hits: &mut Vec<Hit>,
        built: &mut Batch,
    ) -> Result<(), EngineError> {
        let Some(head) = self
            .store
            .last_key(Tree::History, prefix)?
            .as_deref()
            .and_then(seq_of_key)
        else {
            return Ok(());
        };
        // Groups 0..full lie wholly at or behind the newest entry.
        let full = head.saturating_add(1) / SEARCH_GROUP;
        let group_prefix = [SEARCH_PREFIX, prefix].concat();
        let mut present = BTreeSet::new();
        for (key, value) in self.store.scan_prefix(Tree::Meta, &group_prefix)? {
            let group = match key.len() == group_prefix.len() + 8 {
                true => seq_of_key(&key),
                false => None,
            };
            let Some(group) = group.filter(|group| *group < full) else {
                // Not a group this layout writes, or one over the tail
                // (left by a purge): dropped, rebuilt when full.
                built.delete(Tree::Meta, key);
                continue;
            };
            let mut matched = Vec::new();
            let intact = each_in_group(&value, |seq, sent_at, lowered| {
                if query.matches_lowered(lowered) {
                    matched.push(Hit {
                        sent_at,
                        key: history_key(prefix, seq),
                    });
                }
            });
            // A malformed group counts as missing and is rebuilt.
            if intact.is_some() {
                hits.extend(matched);
                present.insert(group);
            }
        }
        // The missing groups, region by region between present ones.
        let mut from = 0;
        for upto in present.iter().copied().chain([full]) {
            if from < upto {
                self.rebuild_groups(query, prefix, from, upto, hits, built)?;
            }
            from = upto.saturating_add(1);
        }
        // The tail, newer than every full group.
        for (key, value) in self.store.scan_after(
            Tree::History,
            prefix,
            &before_group(prefix, full),
            usize::MAX,
        )? {
            let message = records::decode_message(&value).map_err(corrupt)?;
            if !message.deleted && query.matches(&message.text) {
                hits.push(Hit {
                    sent_at: message.sent_at,
                    key,
                });
            }
        }
        Ok(())
    }

    /// Rebuilds groups `from..upto` of the conversation `prefix` from its
    /// history entries (empty groups are not written), matching as it
    /// goes.
    fn rebuild_groups(
        &self,
        query: &Query,
        prefix: &[u8],
        from: u64,
        upto: u64,
        hits: &mut Vec<Hit>,
        built: &mut Batch,
    ) -> Result<(), EngineError> {
        let end = upto.saturating_mul(SEARCH_GROUP);
        let mut after = before_group(prefix, from);
        let mut group: Option<(u64, Vec<Indexed>)> = None;
        let flush = |group: Option<(u64, Vec<Indexed>)>, built: &mut Batch| {
            if let Some((number, entries)) = group {
                let key = [SEARCH_PREFIX, prefix, &number.to_be_bytes()].concat();
                built.put(Tree::Meta, key, &encode_group(&entries));
            }
        };
        // The first read is of one entry: a region with no entries left
        // (purged) costs one opened value past its end, not a page.
        let mut limit = 1;
        'scan: loop {
            let page = self
                .store
                .scan_after(Tree::History, prefix, &after, limit)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            let last = last.clone();
            let full_page = page.len() == limit;
            limit = SEARCH_GROUP as usize;
            for (key, value) in page {
                let Some(seq) = seq_of_key(&key).filter(|seq| *seq < end) else {
                    break 'scan;
                };
                let number = seq / SEARCH_GROUP;
                if group.as_ref().is_some_and(|(n, _)| *n != number) {
                    flush(group.take(), built);
                }
                let entries = &mut group.get_or_insert_with(|| (number, Vec::new())).1;
                let message = records::decode_message(&value).map_err(corrupt)?;
                if message.deleted || message.text.is_empty() {
                    continue;
                }
                let lowered = message.text.to_lowercase();
                if query.matches_lowered(&lowered) {
                    hits.push(Hit {
                        sent_at: message.sent_at,
                        key: key.clone(),
                    });
                }
                entries.push(Indexed {
                    seq,
                    sent_at: message.sent_at,
                    lowered,
                });
            }
            if !full_page {
                break;
            }
            after = last;
        }
        flush(group, built);
        Ok(())
    }

    /// Every message of `conversation` (`None`: of every conversation)
    /// sent at or after `since_ms`, oldest first: what an export writes.
    pub fn messages_since(
        &self,
        conversation: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<Message>, EngineError> {
        let mut all = Vec::new();
        self.each_message(conversation, |message| {
            if message.sent_at >= since_ms {
                all.push(message);
            }
        })?;
        all.sort_by_key(|m| m.sent_at);
        Ok(all)
    }

    /// The history conversation of group `group` (name or ID start).
    pub fn group_conversation_of(&self, group: &str) -> Result<String, EngineError> {
        let info = self.find_group(group)?;
        Ok(format!("group/{}", info.id))
    }

    /// Test hook: files `count` messages from `peer` into the history of
    /// the conversation with `peer`, word `i` of `words` in message `i`,
    /// without any cryptography but the store's (for the search bench).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn bench_fill_history(
        &mut self,
        peer: &str,
        words: &[&str],
        count: usize,
    ) -> Result<(), EngineError> {
        for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
            let mut batch = crate::Batch::new();
            for &i in chunk {
                let id: [u8; 16] = (i as u128).to_be_bytes();
                let text = format!(
                    "message {i} about {} and the weekly status of everything",
                    words.get(i % words.len().max(1)).unwrap_or(&"nothing")
                );
                let message = Message::plain(
                    hex::encode(id),
                    peer.to_owned(),
                    peer.to_owned(),
                    false,
                    text,
                    1_800_000_000_000 + i as u64,
                    super::Status::Received,
                    None,
                );
                self.file_message(peer, &message, &id, &mut batch)?;
            }
            self.store.apply(batch)?;
        }
        Ok(self.store.flush()?)
    }

    /// Test hook: drops every group of the search index (for the bench's
    /// first search).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn bench_drop_search_index(&self) -> Result<(), EngineError> {
        let mut batch = Batch::new();
        for (key, _) in self.store.scan_prefix(Tree::Meta, SEARCH_PREFIX)? {
            batch.delete(Tree::Meta, key);
        }
        Ok(self.store.apply(batch)?)
    }

    fn each_message(
        &self,
        conversation: Option<&str>,
        mut each: impl FnMut(Message),
    ) -> Result<(), EngineError> {
        let prefix = match conversation {
            Some(conversation) => self
                .store
                .blind(conversation.as_bytes())
                .as_bytes()
                .to_vec(),
            None => Vec::new(),
        };
        for (_, value) in self.store.scan_prefix(Tree::History, &prefix)? {
            each(self.open_message(&value)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    use std::sync::Arc;

    use crate::{MemoryStore, Store};

    const NOW: u64 = 1_800_000_000;
    const WORDS: [&str; 4] = ["deploy", "lunch", "relay", "invoice"];

    /// An engine whose history with bob holds `count` messages (see
    /// `bench_fill_history`: message `i` says "message {i} about …").
    fn filled(count: usize) -> (Engine, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new().expect("memory store"));
        let mut engine = Engine::create(store.clone(), "alice", NOW).expect("engine");
        engine
            .bench_fill_history("bob", &WORDS, count)
            .expect("filled");
        (engine, store)
    }

    /// The search index's groups, opened.
    fn groups(store: &dyn Store) -> Vec<Vec<u8>> {
        store
            .scan_prefix(Tree::Meta, SEARCH_PREFIX)
            .expect("scan")
            .into_iter()
            .map(|(_, value)| value.to_vec())
            .collect()
    }

    fn holds(values: &[Vec<u8>], text: &str) -> bool {
        values
            .iter()
            .any(|v| v.windows(text.len()).any(|w| w == text.as_bytes()))
    }

    /// What a search must return: every entry opened and matched.
    fn brute_force(engine: &Engine, query: &Query, limit: usize) -> Vec<String> {
        let mut all: Vec<Message> = engine
            .history_of("bob")
            .expect("history")
            .into_iter()
            .filter(|m| !m.deleted && query.matches(&m.text))
            .collect();
        all.sort_by_key(|m| std::cmp::Reverse(m.sent_at));
        all.into_iter().take(limit).map(|m| m.id).collect()
    }

    /// The ID `bench_fill_history` gives message `i`.
    fn id(i: u128) -> String {
        hex::encode(i.to_be_bytes())
    }

    fn ids(found: Vec<Message>) -> Vec<String> {
        found.into_iter().map(|m| m.id).collect()
    }

    /// Rewrites history entry `i` of the filled conversation with `change`
    /// through a batch, as every writer of the history does (with its
    /// expiry index entry if it now disappears).
    fn rewrite(engine: &Engine, store: &dyn Store, i: u64, change: impl FnOnce(&mut Message)) {
        let key = history_key(store.blind(b"bob").as_bytes(), i + 1);
        let value = store.get(Tree::History, &key).expect("get").expect("entry");
        let mut message = engine.open_message(&value).expect("open");
        change(&mut message);
        let mut batch = Batch::new();
        Engine::index_expiry(&key, &message, &mut batch);
        batch.put(Tree::History, key, &records::encode_message(&message));
        store.apply(batch).expect("apply");
    }

    #[test]
    fn the_index_answers_as_reading_every_entry_does_and_is_sealed_in_groups() {
        let (engine, store) = filled(1000);
        assert!(
            groups(store.as_ref()).is_empty(),
            "no index before a search"
        );
        for text in [
            "depl",
            "weekly invoice",
            "message 99",
            "zebra",
            "?!",
            "MESSAGE 7",
        ] {
            let query = Query::new(text);
            let want = brute_force(&engine, &query, 50);
            assert_eq!(
                ids(engine.search(&query, Some("bob"), 50).expect("search")),
                want,
                "{text}"
            );
            assert_eq!(
                ids(engine.search(&query, None, 50).expect("search")),
                want,
                "{text}"
            );
        }
        // History positions 1..=1000: groups 0, 1 and 2 are full (up to
        // position 767), the tail is read entry by entry.
        assert_eq!(groups(store.as_ref()).len(), 3);
        assert!(holds(&groups(store.as_ref()), "message 500 about"));
        // Sealed at rest like every value: the raw bytes hold no text.
        let raw: Vec<Vec<u8>> = store
            .scan_prefix(Tree::Meta, SEARCH_PREFIX)
            .expect("scan")
            .into_iter()
            .map(|(key, _)| store.get_raw(Tree::Meta, &key))
            .collect();
        assert_eq!(raw.len(), 3);
        assert!(!holds(&raw, "message 500 about"));
        assert!(!holds(&raw, "weekly"));
    }

    #[test]
    fn a_deleted_or_edited_entry_leaves_the_index_in_the_same_write() {
        let (engine, store) = filled(600);
        let query = Query::new("message 10");
        assert_eq!(
            engine.search(&query, Some("bob"), 5).expect("search").len(),
            5
        );
        assert!(holds(&groups(store.as_ref()), "message 10 about"));
        // Deleted for everyone (stub kept): group 0 goes in that write.
        rewrite(&engine, store.as_ref(), 10, |m| {
            m.text.clear();
            m.deleted = true;
        });
        assert!(!holds(&groups(store.as_ref()), "message 10 about"));
        assert_eq!(groups(store.as_ref()).len(), 1, "only group 1 is left");
        let found = ids(engine
            .search(&Query::new("message 10 about"), None, 50)
            .expect("search"));
        assert!(!found.is_empty());
        assert!(!found.contains(&id(10)), "{found:?}");
        assert!(!holds(&groups(store.as_ref()), "message 10 about"));
        assert_eq!(groups(store.as_ref()).len(), 2, "group 0 rebuilt");
        // Edited: the old words go, the new ones are found.
        rewrite(&engine, store.as_ref(), 20, |m| {
            m.text = "now about zanzibar".into()
        });
        assert!(!holds(&groups(store.as_ref()), "message 20 about"));
        let found = ids(engine
            .search(&Query::new("zanz"), Some("bob"), 50)
            .expect("search"));
        assert_eq!(found, [id(20)]);
        let found = ids(engine
            .search(&Query::new("message 20 about"), None, 50)
            .expect("search"));
        assert!(!found.contains(&id(20)), "{found:?}");
        for text in ["depl", "message 1", "about"] {
            let query = Query::new(text);
            assert_eq!(
                ids(engine.search(&query, None, 700).expect("search")),
                brute_force(&engine, &query, 700),
                "{text}"
            );
        }
    }

    #[test]
    fn purged_messages_leave_the_index_and_a_damaged_group_is_rebuilt() {
        let (mut engine, store) = filled(600);
        for i in 0..300 {
            rewrite(&engine, store.as_ref(), i, |m| {
                m.expires_at = Some(NOW * 1000)
            });
        }
        let query = Query::new("message 3");
        let before = ids(engine.search(&query, None, 600).expect("search"));
        assert_eq!(before, brute_force(&engine, &query, 600));
        assert!(holds(&groups(store.as_ref()), "message 30 about"));
        assert_eq!(engine.purge_expired(NOW * 1000).expect("purge"), 300);
        // Group 0 (positions 0..=255) and group 1 (256..=511) both held
        // purged entries: gone with them.
        assert!(groups(store.as_ref()).is_empty());
        let after = ids(engine.search(&query, None, 600).expect("search"));
        assert_eq!(after, brute_force(&engine, &query, 600));
        assert!(after.len() < before.len());
        assert!(!holds(&groups(store.as_ref()), "message 30 about"));
        // Group 0 has no entry left, so only group 1 is written.
        assert_eq!(groups(store.as_ref()).len(), 1);
        // A damaged group counts as missing.
        let key = [
            SEARCH_PREFIX,
            store.blind(b"bob").as_bytes(),
            &1u64.to_be_bytes(),
        ]
        .concat();
        store.put(Tree::Meta, &key, b"\x01\x00\x00").expect("put");
        assert_eq!(
            ids(engine.search(&query, None, 600).expect("search")),
            after
        );
        assert!(holds(&groups(store.as_ref()), "message 400 about"));
    }

    /// Every byte of every file under `dir`.
    fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                out.extend(all_bytes(&path));
            } else {
                out.extend(std::fs::read(&path).expect("read"));
            }
        }
        out
    }

    #[test]
    fn a_disappeared_text_is_in_no_store_file_and_no_opened_value_after_the_purge() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(
            crate::SledStore::open(dir.path(), crate::KeySource::key_file_in(dir.path()))
                .expect("sled store"),
        );
        let mut engine = Engine::create(store.clone(), "alice", NOW).expect("engine");
        engine
            .bench_fill_history("bob", &WORDS, 600)
            .expect("filled");
        rewrite(&engine, store.as_ref(), 5, |m| {
            m.text = "The secret word is SWORDFISH".into();
            m.expires_at = Some(NOW * 1000);
        });
        // Found, so the index holds it too (group 0, lowercased).
        let query = Query::new("swordfish");
        assert_eq!(engine.search(&query, None, 5).expect("search").len(), 1);
        assert!(holds(&groups(store.as_ref()), "swordfish"));
        let history_key = [
            &[Tree::History.tag()][..],
            &history_key(store.blind(b"bob").as_bytes(), 6),
        ]
        .concat();
        let sealed = store
            .raw_tree()
            .get(&history_key)
            .expect("raw get")
            .expect("the entry")
            .to_vec();
        store.flush().expect("flush");
        let files = all_bytes(dir.path());
        // The scan sees the store's values (the entry's sealed bytes) ...
        assert!(files.windows(sealed.len()).any(|w| w == sealed.as_slice()));
        // ... and no file holds the text, in either case.
        for text in [&b"SWORDFISH"[..], b"swordfish"] {
            assert!(!files.windows(text.len()).any(|w| w == text));
        }

        assert_eq!(engine.purge_expired(NOW * 1000).expect("purge"), 1);
        store.flush().expect("flush");
        assert!(
            store
                .raw_tree()
                .get(&history_key)
                .expect("raw get")
                .is_none()
        );
        assert!(engine.search(&query, None, 5).expect("search").is_empty());
        // No opened value of any tree holds it: history, index, seen.
        for tree in Tree::ALL {
            for (_, value) in store.scan_prefix(tree, &[]).expect("scan") {
                for text in [&b"SWORDFISH"[..], b"swordfish"] {
                    assert!(!value.windows(text.len()).any(|w| w == text), "{tree}");
                }
            }
        }
        drop(engine);
        drop(store);
        let files = all_bytes(dir.path());
        for text in [&b"SWORDFISH"[..], b"swordfish"] {
            assert!(!files.windows(text.len()).any(|w| w == text));
        }
        // What sled does not promise: the entry's old sealed bytes may
        // still be in its files here (they were when this test was
        // written); they open only with the store key (docs/DECISIONS.md,
        // "What deletion means on disk").
    }

    #[test]
    fn words_match_by_prefix_in_any_order() {
        let query = Query::new("depl fri");
        assert!(query.matches("Friday: deploy the relay"));
        assert!(!query.matches("deploy on monday"));
        assert!(Query::new("ÉTÉ").matches("un été chaud"));
        assert!(Query::new("?!").matches("what?!"));
        assert!(!Query::new("").matches("anything"));
        assert!(Query::new("a.*b").matches("a b"));
        assert!(!Query::new("a.*b").matches("xyz"));
        assert!(Query::new("İstanbul").matches("İSTANBUL'da"));
    }

    proptest! {
        #[test]
        fn any_query_is_safe(query in ".*", text in ".*") {
            let _ = Query::new(&query).matches(&text);
        }

        #[test]
        fn any_group_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = each_in_group(&bytes, |_, _, _| {});
        }

        #[test]
        fn groups_read_back_what_was_written(texts in proptest::collection::vec(".*", 0..8)) {
            let entries: Vec<Indexed> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| Indexed { seq: i as u64, sent_at: 7 * i as u64, lowered: t.clone() })
                .collect();
            let mut back = Vec::new();
            let intact = each_in_group(&encode_group(&entries), |seq, sent_at, text| {
                back.push((seq, sent_at, text.to_owned()));
            });
            prop_assert!(intact.is_some());
            let want: Vec<_> = entries.into_iter().map(|e| (e.seq, e.sent_at, e.lowered)).collect();
            prop_assert_eq!(back, want);
        }
    }
}
