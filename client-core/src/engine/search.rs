//! Local search and export over the history.
//!
//! There is no index on disk: a search reads the conversation's (or every
//! conversation's) history entries, each opened by the store like any
//! other read, and matches words in memory. So a deleted or edited text
//! is gone from search the moment its entry is rewritten, and nothing
//! else on disk holds message words (docs/DECISIONS.md, "Search without
//! an index"). The query is only ever compared as text: quotes, regex
//! characters or any unicode are just characters.

use super::{Engine, EngineError, Message};
use crate::Tree;

/// The words of `text`, lowercased: runs of letters and digits.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
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
        Self {
            words: words(text).collect(),
            raw: text.trim().to_lowercase(),
        }
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        if self.words.is_empty() {
            return !self.raw.is_empty() && text.to_lowercase().contains(&self.raw);
        }
        let have: Vec<String> = words(text).collect();
        self.words
            .iter()
            .all(|want| have.iter().any(|word| word.starts_with(want.as_str())))
    }
}

impl Engine {
    /// Messages matching `query` in `conversation` (a handle or a group's
    /// conversation; `None`: every conversation), newest first, at most
    /// `limit`. Deleted messages never match.
    pub fn search(
        &self,
        query: &Query,
        conversation: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Message>, EngineError> {
        let mut found = Vec::new();
        self.each_message(conversation, |message| {
            if !message.deleted && query.matches(&message.text) {
                found.push(message);
            }
        })?;
        found.sort_by_key(|m| std::cmp::Reverse(m.sent_at));
        found.truncate(limit);
        Ok(found)
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
    }

    proptest! {
        #[test]
        fn any_query_is_safe(query in ".*", text in ".*") {
            let _ = Query::new(&query).matches(&text);
        }
    }
}
