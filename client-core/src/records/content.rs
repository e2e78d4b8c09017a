//! The versioned message content (`Content` in the payload proto), as
//! typed values: a text that may reply, a reaction, an edit, a delete for
//! everyone, or a kind this version does not know.
//!
//! Parse, don't validate: [`Content::from_proto`] is the one place wire
//! content becomes a [`Content`]; a target ID that is not 16 bytes or a
//! reaction that is not one short grapheme never gets past it.

use sotto_proto::Message as _;
use sotto_proto::client::{self as proto, content};
use unicode_segmentation::UnicodeSegmentation;

use super::MessageId;

/// The content version this client speaks.
pub const CONTENT_VERSION: u32 = 1;
/// The longest reaction, in bytes (one grapheme: a flag or a family emoji
/// with modifiers fits).
pub const MAX_REACTION_LEN: usize = 32;
/// The most distinct emoji one message keeps reactions for: bounds the
/// history entry a busy group can grow.
pub const MAX_REACTIONS: usize = 32;
/// What a message of a kind this version does not know shows.
pub const UNSUPPORTED_TEXT: &str = "unsupported message, update sotto";
/// The shortest disappearing-message timer: 5 minutes.
pub const MIN_TIMER_SECS: u64 = 300;
/// The longest disappearing-message timer: 4 weeks.
pub const MAX_TIMER_SECS: u64 = 28 * 86_400;
/// What a message deleted for everyone shows.
pub const DELETED_TEXT: &str = "message deleted";

/// One message's content, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A text, maybe a reply.
    Text {
        /// The text.
        body: String,
        /// The message it replies to.
        reply_to: Option<MessageId>,
        /// Seconds after it was sent at which it disappears (0: never).
        expires_in_secs: u64,
    },
    /// A reaction added (or taken back, `remove`).
    React {
        /// The message reacted to.
        target: MessageId,
        /// One grapheme of at most [`MAX_REACTION_LEN`] bytes.
        emoji: String,
        /// Taken back.
        remove: bool,
    },
    /// A new text for one of the sender's messages.
    Edit {
        /// The message edited.
        target: MessageId,
        /// Its new text.
        body: String,
    },
    /// One of the sender's messages, deleted for everyone.
    Delete {
        /// The message deleted.
        target: MessageId,
    },
    /// The conversation's disappearing-message timer (0: off).
    Timer {
        /// Seconds, [`MIN_TIMER_SECS`] to [`MAX_TIMER_SECS`], or 0.
        secs: u64,
    },
    /// A file or image (issue 21): key, mailbox, size, hash, name.
    File(Box<crate::files::FileInfo>),
    /// A kind this version does not know (a newer sender).
    Unsupported,
}

/// Content that no sender of this format writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// The bytes are not a `Content` message.
    #[error("the content does not decode")]
    Decode,
    /// A message ID is not 16 bytes.
    #[error("a message ID in the content is not 16 bytes")]
    BadId,
    /// A timer outside 5 minutes … 4 weeks (and not 0).
    #[error("a disappearing-message timer is 5 minutes to 4 weeks, or off")]
    BadTimer,
    /// A reaction is empty, longer than one grapheme or too long.
    #[error("a reaction must be one emoji (one grapheme of at most {MAX_REACTION_LEN} bytes)")]
    BadReaction,
    /// A file message that breaks the format (key or hash not 32 bytes,
    /// a mailbox the key does not derive, a chunk count that is not the
    /// size's, a field too long).
    #[error("a file message is malformed")]
    BadFile,
}

/// A reply, reaction, edit or delete that cannot be made (sending), or was
/// refused (receiving: logged, never applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// No message with that ID in the local history.
    #[error("no message with ID {0} in your history; `sotto history` shows the IDs")]
    UnknownMessage(String),
    /// An ID that is not 32 hex digits.
    #[error("\"{0}\" is not a message ID (8 to 32 hex digits, from `sotto history`)")]
    BadId(String),
    /// Several messages have IDs that start so.
    #[error("several messages have IDs starting with {0}; give more of it")]
    AmbiguousId(String),
    /// The target is in another conversation than the action.
    #[error("that message is in another conversation")]
    OtherConversation,
    /// Only a message's author edits or deletes it.
    #[error("only its author can edit or delete a message")]
    NotAuthor,
    /// The message was deleted for everyone: nothing left to change.
    #[error("that message was deleted")]
    Deleted,
    /// The message is not readable here (its group key never came).
    #[error("that message is not readable here")]
    Unreadable,
    /// A bad reaction.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The message has reactions with as many different emoji as it keeps.
    #[error("that message has reactions with {MAX_REACTIONS} different emoji already")]
    TooManyReactions,
    /// An edit to an empty text.
    #[error("an edit needs a text; to take a message back use `sotto delete`")]
    EmptyEdit,
}

/// Parses a hex message ID as the CLI and the history show it.
pub fn parse_message_id(hex_id: &str) -> Result<MessageId, ActionError> {
    hex::decode(hex_id.trim())
        .ok()
        .and_then(|bytes| MessageId::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| ActionError::BadId(hex_id.to_owned()))
}

/// Checks a reaction: exactly one grapheme, at most [`MAX_REACTION_LEN`]
/// bytes, no control characters or whitespace.
pub fn check_reaction(emoji: &str) -> Result<(), ContentError> {
    let one = emoji.graphemes(true).count() == 1;
    let plain = !emoji.chars().any(|c| c.is_control() || c.is_whitespace());
    if one && plain && emoji.len() <= MAX_REACTION_LEN {
        Ok(())
    } else {
        Err(ContentError::BadReaction)
    }
}

/// Checks a disappearing-message timer: 0 (off) or 5 minutes … 4 weeks.
pub fn check_timer(secs: u64) -> Result<u64, ContentError> {
    if secs == 0 || (MIN_TIMER_SECS..=MAX_TIMER_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(ContentError::BadTimer)
    }
}

fn id(bytes: &[u8]) -> Result<MessageId, ContentError> {
    MessageId::try_from(bytes).map_err(|_| ContentError::BadId)
}

impl Content {
    /// A plain text of the first format (`Payload.text`).
    pub fn from_text(text: proto::Text) -> Self {
        Self::Text {
            body: text.body,
            reply_to: None,
            expires_in_secs: 0,
        }
    }

    /// Decodes encoded `Content` bytes (the fuzzed entry point).
    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        let content = proto::Content::decode(bytes).map_err(|_| ContentError::Decode)?;
        Self::from_proto(content)
    }

    /// Checks wire content. A kind this version does not know is
    /// [`Content::Unsupported`], never an error: the user is told to update.
    pub fn from_proto(content: proto::Content) -> Result<Self, ContentError> {
        Ok(match content.kind {
            Some(content::Kind::Post(post)) => Self::Text {
                body: post.body,
                reply_to: if post.reply_to.is_empty() {
                    None
                } else {
                    Some(id(&post.reply_to)?)
                },
                expires_in_secs: check_timer(post.expires_in_secs)?,
            },
            Some(content::Kind::Reaction(reaction)) => {
                check_reaction(&reaction.emoji)?;
                Self::React {
                    target: id(&reaction.target)?,
                    emoji: reaction.emoji,
                    remove: reaction.remove,
                }
            }
            Some(content::Kind::Edit(edit)) => Self::Edit {
                target: id(&edit.target)?,
                body: edit.body,
            },
            Some(content::Kind::Delete(delete)) => Self::Delete {
                target: id(&delete.target)?,
            },
            Some(content::Kind::Timer(timer)) => Self::Timer {
                secs: check_timer(timer.secs)?,
            },
            Some(content::Kind::File(file)) => Self::File(Box::new(
                crate::files::FileInfo::from_proto(file).map_err(|_| ContentError::BadFile)?,
            )),
            None => Self::Unsupported,
        })
    }

    /// The wire form; `None` for [`Content::Unsupported`], which no sender
    /// writes.
    pub fn to_proto(&self) -> Option<proto::Content> {
        let kind = match self {
            Self::Text {
                body,
                reply_to,
                expires_in_secs,
            } => content::Kind::Post(proto::Post {
                body: body.clone(),
                reply_to: reply_to.map(|id| id.to_vec()).unwrap_or_default().into(),
                expires_in_secs: *expires_in_secs,
            }),
            Self::React {
                target,
                emoji,
                remove,
            } => content::Kind::Reaction(proto::Reaction {
                target: target.to_vec().into(),
                emoji: emoji.clone(),
                remove: *remove,
            }),
            Self::Edit { target, body } => content::Kind::Edit(proto::Edit {
                target: target.to_vec().into(),
                body: body.clone(),
            }),
            Self::Delete { target } => content::Kind::Delete(proto::Delete {
                target: target.to_vec().into(),
            }),
            Self::Timer { secs } => content::Kind::Timer(proto::Timer { secs: *secs }),
            Self::File(file) => content::Kind::File(file.to_proto()),
            Self::Unsupported => return None,
        };
        Some(proto::Content {
            version: CONTENT_VERSION,
            kind: Some(kind),
        })
    }

    /// The message it changes, for a reaction, edit or delete.
    pub fn target(&self) -> Option<&MessageId> {
        match self {
            Self::React { target, .. } | Self::Edit { target, .. } | Self::Delete { target } => {
                Some(target)
            }
            Self::Text { .. } | Self::Timer { .. } | Self::File(_) | Self::Unsupported => None,
        }
    }
}

/// `secs` as people say it: "5 min", "1 h", "4 weeks".
pub fn describe_secs(secs: u64) -> String {
    match secs {
        s if s % 604_800 == 0 => plural(s / 604_800, "week"),
        s if s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s % 3600 == 0 => plural(s / 3600, "hour"),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Whether `text` mentions `handle`: `@handle` not followed by another
/// handle character (`@bobby` does not mention bob).
pub fn mentions(text: &str, handle: &str) -> bool {
    if handle.is_empty() {
        return false;
    }
    let handle_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    let needle = format!("@{handle}");
    text.match_indices(&needle).any(|(at, _)| {
        let before_ok = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !handle_char(c) && c != '@');
        let after = &text[at + needle.len()..];
        // A sentence may end right after the handle: "thanks @bob."
        let mut rest = after.chars();
        let after_ok = match rest.next() {
            None => true,
            Some('.') => rest.next().is_none_or(|c| !handle_char(c)),
            Some(c) => !handle_char(c),
        };
        before_ok && after_ok
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_unknown_kind_is_unsupported_not_an_error() {
        let bytes = proto::Content {
            version: 9,
            kind: None,
        }
        .encode_to_vec();
        // A newer kind: field 99, which this version does not know.
        let mut newer = bytes.clone();
        newer.extend_from_slice(&[0x9a, 0x06, 0x02, 0x08, 0x01]);
        assert_eq!(Content::decode(&newer), Ok(Content::Unsupported));
        assert_eq!(Content::decode(&bytes), Ok(Content::Unsupported));
    }

    #[test]
    fn reactions_are_one_short_grapheme() {
        for good in ["👍", "❤️", "🇨🇭", "👨‍👩‍👧", "a"] {
            assert_eq!(check_reaction(good), Ok(()), "{good}");
        }
        for bad in ["", "👍👍", "ab", " ", "\n", "👍 ", &"é".repeat(40)] {
            assert_eq!(check_reaction(bad), Err(ContentError::BadReaction), "{bad}");
        }
        // One grapheme, but huge: a base with hundreds of combining marks.
        let zalgo = format!("a{}", "\u{301}".repeat(200));
        assert_eq!(zalgo.graphemes(true).count(), 1);
        assert_eq!(check_reaction(&zalgo), Err(ContentError::BadReaction));
    }

    #[test]
    fn targets_must_be_16_bytes() {
        let content = proto::Content {
            version: 1,
            kind: Some(content::Kind::Delete(proto::Delete {
                target: vec![1; 15].into(),
            })),
        };
        assert_eq!(Content::from_proto(content), Err(ContentError::BadId));
    }

    #[test]
    fn mentions_match_whole_handles() {
        assert!(mentions("hi @bob", "bob"));
        assert!(mentions("@bob: look", "bob"));
        assert!(mentions("thanks @bob.", "bob"));
        assert!(!mentions("hi @bobby", "bob"));
        assert!(!mentions("mail bob@bob.example", "bob"));
        assert!(!mentions("hi bob", "bob"));
        assert!(mentions("@bob.smith", "bob.smith"));
        assert!(!mentions("@bob.smith", "bob"));
    }

    fn content() -> impl Strategy<Value = Content> {
        let id = proptest::array::uniform16(any::<u8>());
        prop_oneof![
            (
                ".*",
                proptest::option::of(id),
                prop_oneof![Just(0u64), 300u64..=2_419_200]
            )
                .prop_map(|(body, reply_to, expires_in_secs)| Content::Text {
                    body,
                    reply_to,
                    expires_in_secs
                }),
            prop_oneof![Just(0u64), 300u64..=2_419_200].prop_map(|secs| Content::Timer { secs }),
            (id, "[a-z]|👍|❤️", any::<bool>()).prop_map(|(target, emoji, remove)| {
                Content::React {
                    target,
                    emoji,
                    remove,
                }
            }),
            (id, ".*").prop_map(|(target, body)| Content::Edit { target, body }),
            id.prop_map(|target| Content::Delete { target }),
        ]
    }

    proptest! {
        #[test]
        fn content_round_trips(content in content()) {
            let bytes = content.to_proto().expect("a kind senders write").encode_to_vec();
            prop_assert_eq!(Content::decode(&bytes), Ok(content));
        }

        #[test]
        fn content_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Content::decode(&bytes);
        }

        #[test]
        fn mentions_never_panic(text in ".*", handle in "[a-z.]{0,6}") {
            let _ = mentions(&text, &handle);
        }
    }
}
