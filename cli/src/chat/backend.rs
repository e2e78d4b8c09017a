//! What the chat needs from the process that owns the profile: control
//! protocol calls and the notifications a subscribed client gets (the
//! same JSON as on the control socket, docs/CLIENT_API.md). The `/`
//! commands whose flows the command line already has run through the
//! owner's `cli.run`, exactly as `sotto ARGS...` typed in another terminal
//! would. The chat is one more client of the owner; a fake stands in for
//! it in tests.

use std::future::Future;

use serde::Deserialize;
use serde_json::Value;
use sotto_core::Status;
use tokio::sync::broadcast;

use super::state::{ChatMessage, Kind};

/// A notification (`message`, `status`, `connection`), as a subscribed
/// socket client receives it.
pub(crate) use crate::owner::Notification as Event;

/// A failed call: the CLI's exit code and a sentence for the user.
#[derive(Clone, Debug)]
pub(crate) struct CallError {
    /// The CLI's exit code for this failure.
    pub(crate) code: i64,
    /// What went wrong and what to do.
    pub(crate) message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The owner of the profile, as the chat uses it.
pub(crate) trait ChatBackend: Clone + Send + Sync + 'static {
    /// One control-protocol method.
    fn call(
        &self,
        method: &str,
        params: Value,
    ) -> impl Future<Output = Result<Value, CallError>> + Send;
    /// The notifications, from now on.
    fn subscribe(&self) -> broadcast::Receiver<Event>;
}

/// Runs `sotto ARGS...` through the owner; returns whether it succeeded
/// and what it printed (stdout, then stderr, without QR codes).
pub(crate) async fn run_command<B: ChatBackend>(backend: &B, args: Vec<String>) -> (bool, String) {
    match backend
        .call("cli.run", serde_json::json!({ "argv": args }))
        .await
    {
        Ok(result) => {
            let field = |name: &str| result.get(name).and_then(Value::as_str).unwrap_or_default();
            let ok = result.get("exit_code").and_then(Value::as_i64) == Some(0);
            let text = format!("{}\n{}", field("stdout"), field("stderr"));
            (ok, readable(&text))
        }
        Err(error) => (false, error.message),
    }
}

impl ChatBackend for crate::owner::OwnerHandle {
    async fn call(&self, method: &str, params: Value) -> Result<Value, CallError> {
        crate::owner::OwnerHandle::call(self, method, params)
            .await
            .map_err(|error| CallError {
                code: error.code,
                message: error.message,
            })
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        crate::owner::OwnerHandle::subscribe(self)
    }
}

/// A message as the control protocol carries it (the object `--json`
/// prints).
#[derive(Debug, Deserialize)]
struct WireMessage {
    id: String,
    from: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    sent_at: u64,
    status: Status,
    #[serde(default)]
    outgoing: Option<bool>,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    reactions: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    edited: bool,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    file: Option<WireFile>,
}

/// The file of a message, as the control protocol carries it.
#[derive(Debug, Deserialize)]
struct WireFile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    media_type: String,
}

impl WireMessage {
    /// The line the chat shows: the text, or the stub of a deleted
    /// message, with what it replies to, "edited" and the reactions.
    fn shown(&self) -> String {
        if self.deleted {
            return format!("({})", sotto_core::DELETED_TEXT);
        }
        let mut shown = String::new();
        if let Some(reply_to) = self.reply_to.as_deref().and_then(|id| id.get(..8)) {
            shown.push_str(&format!("(re {reply_to}) "));
        }
        shown.push_str(&self.text);
        if self.edited {
            shown.push_str(" (edited)");
        }
        for (emoji, count) in &self.reactions {
            shown.push_str(&format!(" [{emoji} {count}]"));
        }
        shown
    }
}

/// The conversation and the message a `message` object stands for, or
/// None if it is not one.
pub(crate) fn parse_message(value: &Value, me: &str) -> Option<(Kind, ChatMessage)> {
    let wire = WireMessage::deserialize(value).ok()?;
    let outgoing = wire.outgoing.unwrap_or(wire.from == me);
    let kind = match (&wire.group, outgoing) {
        (Some(group), _) => Kind::Group(group.clone()),
        (None, true) => Kind::Contact(wire.to.clone().unwrap_or_else(|| wire.from.clone())),
        (None, false) => Kind::Contact(wire.from.clone()),
    };
    let file = match (&wire.file, wire.deleted) {
        (Some(file), false) => Some(super::state::FileCard {
            name: sotto_core::sanitize_name(&file.name),
            size: Some(file.size),
            media_type: file.media_type.clone(),
            caption: wire.text.clone(),
            ..super::state::FileCard::default()
        }),
        _ => None,
    };
    let text = match &file {
        Some(card) => {
            let mut shown = card.line(!outgoing);
            if let Some(reply_to) = wire.reply_to.as_deref().and_then(|id| id.get(..8)) {
                shown = format!("(re {reply_to}) {shown}");
            }
            shown
        }
        None => wire.shown(),
    };
    Some((
        kind,
        ChatMessage {
            id: wire.id,
            from: wire.from,
            outgoing,
            text,
            plain: if wire.deleted {
                String::new()
            } else {
                wire.text
            },
            deleted: wire.deleted,
            sent_at: wire.sent_at,
            status: wire.status,
            file: file.map(Box::new),
        },
    ))
}

/// The messages of a `history` or `sync` result.
pub(crate) fn parse_messages(result: &Value, me: &str) -> Vec<ChatMessage> {
    result
        .get("messages")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .filter_map(|m| parse_message(m, me).map(|(_, m)| m))
                .collect()
        })
        .unwrap_or_default()
}

/// The handles of a `members` result (plain strings or objects with a
/// `handle`).
pub(crate) fn parse_members(result: &Value) -> Vec<String> {
    names(result, "members", "handle")
}

/// The names of a `groups` result.
pub(crate) fn parse_groups(result: &Value) -> Vec<String> {
    names(result, "groups", "name")
}

/// The unread counts of a `conversations` result.
pub(crate) fn parse_unread(result: &Value) -> Vec<(Kind, usize)> {
    result
        .get("conversations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let unread = usize::try_from(c.get("unread")?.as_u64()?).ok()?;
            let kind = match (c.get("with"), c.get("group")) {
                (Some(Value::String(with)), _) => Kind::Contact(with.clone()),
                (_, Some(Value::String(group))) => Kind::Group(group.clone()),
                _ => return None,
            };
            Some((kind, unread))
        })
        .collect()
}

/// The strings of `result[list]`, or each element's `field`.
pub(crate) fn names(result: &Value, list: &str, field: &str) -> Vec<String> {
    result
        .get(list)
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    other => other.get(field).and_then(Value::as_str).map(str::to_owned),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The control-protocol params naming a conversation.
pub(crate) fn target_params(kind: &Kind) -> Option<(&'static str, Value)> {
    match kind {
        Kind::Console => None,
        Kind::Contact(handle) => Some(("with", Value::String(handle.clone()))),
        Kind::Group(name) => Some(("group", Value::String(name.clone()))),
    }
}

/// Keeps what a person should read of a command's output: QR codes (the
/// code itself is printed beside them) and blank lines are dropped.
pub(crate) fn readable(output: &str) -> String {
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| !line.chars().any(|c| matches!(c, '█' | '▀' | '▄')))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

#[cfg(test)]
pub(crate) mod fake {
    //! An owner in memory: records every call, answers from canned
    //! members, groups and histories, and sends notifications on demand.

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};
    use tokio::sync::broadcast;

    use super::{CallError, ChatBackend, Event};

    #[derive(Default)]
    pub(crate) struct Inner {
        pub(crate) calls: Vec<(String, Value)>,
        pub(crate) commands: Vec<Vec<String>>,
        pub(crate) histories: HashMap<String, Value>,
        pub(crate) refuse_sends: Option<String>,
        pub(crate) relay_down: bool,
        pub(crate) notices: Vec<String>,
        /// The `conversations` answer (none: the method is unknown, as
        /// with an older owner).
        pub(crate) conversations: Option<Value>,
    }

    #[derive(Clone)]
    pub(crate) struct FakeOwner {
        pub(crate) inner: Arc<Mutex<Inner>>,
        events: broadcast::Sender<Event>,
    }

    impl FakeOwner {
        pub(crate) fn new() -> Self {
            Self {
                inner: Arc::default(),
                events: broadcast::channel(64).0,
            }
        }

        pub(crate) fn notify(&self, method: &str, params: Value) {
            let _ = self.events.send(Event {
                method: method.into(),
                params,
            });
        }

        pub(crate) fn calls(&self, method: &str) -> Vec<Value> {
            self.inner
                .lock()
                .unwrap()
                .calls
                .iter()
                .filter(|(m, _)| m == method)
                .map(|(_, p)| p.clone())
                .collect()
        }
    }

    impl ChatBackend for FakeOwner {
        async fn call(&self, method: &str, params: Value) -> Result<Value, CallError> {
            let mut inner = self.inner.lock().unwrap();
            inner.calls.push((method.to_owned(), params.clone()));
            match method {
                "whoami" => Ok(json!({"handle": "alice", "team": "acme", "admin": true})),
                "members" if inner.relay_down => Err(CallError {
                    code: 3,
                    message: "cannot reach the relay".into(),
                }),
                "members" => Ok(json!({"members": [
                    {"handle": "alice", "verified": false},
                    {"handle": "bob", "verified": true},
                    {"handle": "carol", "verified": false},
                ]})),
                "groups" => Ok(json!({"groups": [{"name": "ops", "members": ["alice", "bob"]}]})),
                "sync" => Ok(json!({"messages": [], "notices": inner.notices.clone()})),
                "conversations" => inner.conversations.clone().ok_or_else(|| CallError {
                    code: -32601,
                    message: "no method \"conversations\"".into(),
                }),
                "read" => Ok(params.clone()),
                "history" => {
                    let key = params
                        .get("with")
                        .or_else(|| params.get("group"))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    Ok(inner
                        .histories
                        .get(key)
                        .cloned()
                        .unwrap_or_else(|| json!({"messages": []})))
                }
                "cli.run" => {
                    let argv: Vec<String> = serde_json::from_value(params["argv"].clone()).unwrap();
                    let text = format!("ran sotto {}", argv.join(" "));
                    inner.commands.push(argv);
                    Ok(
                        json!({"stdout": text, "stderr": "█▀█ a QR code\nGive this code", "exit_code": 0}),
                    )
                }
                "react" | "edit" | "delete" => {
                    // The message of a fake history, changed as asked.
                    let found = inner
                        .histories
                        .values()
                        .filter_map(|h| h["messages"].as_array())
                        .flatten()
                        .find(|m| m["id"] == params["id"])
                        .cloned();
                    let Some(mut message) = found else {
                        return Err(CallError {
                            code: 2,
                            message: "no message has this ID".into(),
                        });
                    };
                    match method {
                        "react" => {
                            message["reactions"] =
                                json!({params["emoji"].as_str().unwrap_or_default(): 1})
                        }
                        "edit" => {
                            message["text"] = params["text"].clone();
                            message["edited"] = json!(true);
                        }
                        _ => message["deleted"] = json!(true),
                    }
                    Ok(json!({"message": message, "status": "sent"}))
                }
                "file.send" => {
                    let size = params["path"]
                        .as_str()
                        .and_then(|path| std::fs::metadata(path).ok())
                        .map_or(0, |m| m.len());
                    Ok(
                        json!({"id": format!("f{}", inner.calls.len()), "status": "sent", "size": size}),
                    )
                }
                "file.save" => {
                    let path = params["path"].as_str().unwrap_or("/downloads/file");
                    Ok(json!({"id": params["id"], "path": path}))
                }
                "file.info" => Ok(
                    json!({"id": params["id"], "name": "report.pdf", "size": 2048, "media_type": "application/pdf", "downloaded": false, "thumbnail": null}),
                ),
                "send" | "group.send" => match &inner.refuse_sends {
                    Some(message) => Err(CallError {
                        code: 4,
                        message: message.clone(),
                    }),
                    None => Ok(json!({"id": format!("id{}", inner.calls.len()), "status": "sent"})),
                },
                _ => Err(CallError {
                    code: 2,
                    message: format!("unknown method {method}"),
                }),
            }
        }

        fn subscribe(&self) -> broadcast::Receiver<Event> {
            self.events.subscribe()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn messages_parse_into_their_conversation_from_either_side() {
        let (kind, m) = parse_message(
            &json!({"id": "1", "from": "bob", "to": null, "group": null, "text": "hi", "sent_at": 5, "status": "received"}),
            "alice",
        )
        .unwrap();
        assert_eq!(kind, Kind::Contact("bob".into()));
        assert!(!m.outgoing);
        let (kind, m) = parse_message(
            &json!({"id": "2", "from": "alice", "to": "bob", "group": null, "text": "yo", "sent_at": 6, "status": "delivered"}),
            "alice",
        )
        .unwrap();
        assert_eq!(kind, Kind::Contact("bob".into()));
        assert!(m.outgoing);
        assert_eq!(m.status, Status::Delivered);
        let (kind, _) = parse_message(
            &json!({"id": "3", "from": "bob", "group": "ops", "text": "all", "sent_at": 7, "status": "received"}),
            "alice",
        )
        .unwrap();
        assert_eq!(kind, Kind::Group("ops".into()));
        assert!(parse_message(&json!({"id": 3}), "alice").is_none());
        assert!(
            parse_message(
                &json!({"id": "4", "from": "bob", "status": "exploded"}),
                "alice"
            )
            .is_none()
        );
    }

    #[test]
    fn member_and_group_lists_take_strings_or_objects() {
        assert_eq!(
            parse_members(&json!({"members": ["a", {"handle": "b"}, 3]})),
            vec!["a", "b"]
        );
        assert_eq!(
            parse_groups(&json!({"groups": [{"name": "ops"}]})),
            vec!["ops"]
        );
        assert!(parse_groups(&json!({})).is_empty());
    }

    #[test]
    fn qr_codes_are_dropped_from_command_output() {
        assert_eq!(
            readable("sotto-invite:abc\n\n█▀▀█\n▀▀▀▀\n   \nGive this code"),
            "sotto-invite:abc\nGive this code"
        );
    }
}
