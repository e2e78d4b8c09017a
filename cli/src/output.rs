//! Printing results: human text or one JSON object per line.
//!
//! Commands print through an [`Output`], never to the process's stdout and
//! stderr directly: a command run by the profile's owner for another
//! `sotto` process (`cli.run` on the control socket) writes into buffers
//! that go back to that process, which prints them as its own.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use sotto_core::{Message, Status};

/// Where a command's output goes.
#[derive(Clone)]
enum Sink {
    /// This process's stdout and stderr.
    Std,
    /// Buffers, for a command run on behalf of another process.
    Buffer(Arc<Mutex<Captured>>),
}

/// What a command run into buffers printed.
#[derive(Default)]
pub(crate) struct Captured {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

/// How results are printed, and where.
#[derive(Clone)]
pub(crate) struct Output {
    pub(crate) json: bool,
    sink: Sink,
}

/// A message as the CLI prints it with `--json`, and as the control
/// protocol carries it: `id`, `from`, `to` (for my messages, else null),
/// `group` (null for 1:1), `text` (empty once deleted), `sent_at`,
/// `status`, `outgoing`, `reply_to` (hex ID or null), `reactions` (emoji →
/// count), `reacted_by` (emoji → handles), `edited`, `deleted`,
/// `mentions_me`, `expires_at` (unix ms when it disappears, or null), and
/// `file` (`{"id", "name", "size", "sha256", "media_type",
/// "has_thumbnail"}`, or null).
pub(crate) fn message_json(message: &Message) -> serde_json::Value {
    json!({
        "file": message.file.as_ref().map(|file| json!({
            "id": message.id,
            "name": file.name,
            "size": file.size,
            "sha256": file.sha256,
            "media_type": file.media_type,
            "has_thumbnail": file.has_thumbnail,
        })),
        "id": message.id,
        "from": message.from,
        "to": if message.from_me { Some(&message.peer) } else { None },
        "group": message.group,
        "text": message.text,
        "sent_at": message.sent_at,
        "status": message.status,
        "outgoing": message.from_me,
        "reply_to": message.reply_to,
        "reactions": message.reaction_counts(),
        "reacted_by": message.reactions,
        "edited": message.edited(),
        "deleted": message.deleted,
        "mentions_me": message.mentions_me,
        "expires_at": message.expires_at,
    })
}

/// The text a message shows: a deleted one shows the stub.
pub(crate) fn shown_text(message: &Message) -> &str {
    sotto_core::Engine::shown_text(message)
}

/// The message [`message_json`] printed, read back (to print a
/// notification from the owner as the CLI would).
pub(crate) fn message_from_json(value: &serde_json::Value) -> Option<Message> {
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let flag = |key: &str| value.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
    let from = text("from")?;
    let from_me = value.get("outgoing")?.as_bool()?;
    let peer = if from_me {
        text("to").unwrap_or_default()
    } else {
        from.clone()
    };
    Some(Message {
        id: text("id")?,
        peer,
        from,
        from_me,
        text: text("text")?,
        sent_at: value.get("sent_at")?.as_u64()?,
        status: serde_json::from_value(value.get("status")?.clone()).ok()?,
        group: text("group"),
        reply_to: text("reply_to"),
        reactions: value
            .get("reacted_by")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default(),
        // The time of the edit is not carried; that it was edited is.
        edited_at: flag("edited").then_some(0),
        deleted: flag("deleted"),
        mentions_me: flag("mentions_me"),
        expires_at: value.get("expires_at").and_then(|v| v.as_u64()),
        file: value.get("file").and_then(|file| {
            Some(sotto_core::FileRef {
                name: file.get("name")?.as_str()?.to_owned(),
                size: file.get("size")?.as_u64()?,
                sha256: file.get("sha256")?.as_str()?.to_owned(),
                media_type: file.get("media_type")?.as_str()?.to_owned(),
                chunks: 0,
                has_thumbnail: file
                    .get("has_thumbnail")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            })
        }),
    })
}

impl Output {
    /// Prints to this process's stdout and stderr.
    pub(crate) fn std(json: bool) -> Self {
        Self {
            json,
            sink: Sink::Std,
        }
    }

    /// Prints into buffers, returned with it.
    pub(crate) fn buffered(json: bool) -> (Self, Arc<Mutex<Captured>>) {
        let captured = Arc::new(Mutex::new(Captured::default()));
        (
            Self {
                json,
                sink: Sink::Buffer(captured.clone()),
            },
            captured,
        )
    }

    /// Whether this prints to the process's own terminal streams (progress
    /// bars and prompts only make sense then).
    pub(crate) fn is_std(&self) -> bool {
        matches!(self.sink, Sink::Std)
    }

    /// A message as scripts and people read it. JSON carries at least `id`,
    /// `from`, `group` (null for 1:1), `text`, `sent_at` (DESIGN §10).
    pub(crate) fn message(&self, message: &Message) {
        if self.json {
            self.line(message_json(message));
        } else {
            let arrow = match (&message.group, message.from_me) {
                (Some(group), true) => format!("#{group} me"),
                (Some(group), false) => format!("#{group} {}", message.from),
                (None, true) => format!("me -> {}", message.peer),
                (None, false) => message.from.clone(),
            };
            let text = match message.status {
                Status::Waiting => {
                    "(waiting for the sender's key; it was asked for and the message appears when it arrives)".to_owned()
                }
                Status::Withheld => {
                    "(not readable: sent before you joined, the sender withheld its key)".to_owned()
                }
                Status::Unsent => format!(
                    "{} (not sent: you were removed from the group first)",
                    message.text
                ),
                _ if message.deleted => format!("({})", shown_text(message)),
                _ => message.text.clone(),
            };
            let mut line = format!("[{}]", clock(message.sent_at));
            // The ID's start: enough for `sotto react`, `edit`, `delete`
            // and `send --reply-to`.
            if let Some(short) = message.id.get(..8) {
                line.push_str(&format!(" {short}"));
            }
            if message.mentions_me {
                line.push_str(" (@you)");
            }
            line.push_str(&format!(" {arrow}: "));
            if let Some(reply_to) = message.reply_to.as_deref().and_then(|id| id.get(..8)) {
                line.push_str(&format!("(re {reply_to}) "));
            }
            line.push_str(&text);
            if message.edited() && !message.deleted {
                line.push_str(" (edited)");
            }
            if message.expires_at.is_some() {
                line.push_str(" (disappears)");
            }
            for (emoji, count) in message.reaction_counts() {
                line.push_str(&format!(" [{emoji} {count}]"));
            }
            if let Some(file) = &message.file
                && !message.deleted
            {
                line.push_str(&format!(
                    " [file {} ({}), `sotto file save {}`]",
                    sotto_core::sanitize_name(&file.name),
                    crate::files::human_size(file.size),
                    message.id.get(..8).unwrap_or_default()
                ));
            }
            self.line(line);
        }
    }

    /// A result with one human line and one JSON object.
    pub(crate) fn result(&self, human: impl std::fmt::Display, json: serde_json::Value) {
        if self.json {
            self.line(&json);
        } else {
            self.line(&human);
        }
    }

    /// Writes one line to stdout. When this process's stdout is closed
    /// (`sotto sync | head`) the command ends quietly, as Unix tools do,
    /// instead of panicking.
    pub(crate) fn line(&self, text: impl std::fmt::Display) {
        match &self.sink {
            Sink::Std => {
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{text}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    std::process::exit(0);
                }
            }
            Sink::Buffer(captured) => {
                if let Ok(mut captured) = captured.lock() {
                    let _ = writeln!(captured.stdout, "{text}");
                }
            }
        }
    }

    /// Writes one line to stderr (hints, QR codes, notices).
    pub(crate) fn err(&self, text: impl std::fmt::Display) {
        self.err_raw(format_args!("{text}\n"));
    }

    /// Writes to stderr without a newline (a prompt).
    pub(crate) fn err_raw(&self, text: impl std::fmt::Display) {
        match &self.sink {
            Sink::Std => {
                let mut stderr = std::io::stderr().lock();
                let _ = write!(stderr, "{text}");
                let _ = stderr.flush();
            }
            Sink::Buffer(captured) => {
                if let Ok(mut captured) = captured.lock() {
                    let _ = write!(captured.stderr, "{text}");
                }
            }
        }
    }
}

/// `HH:MM` UTC of a unix-milliseconds time.
fn clock(millis: u64) -> String {
    let secs = millis / 1000;
    format!("{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60)
}

/// Renders `text` as a QR code for a terminal (two rows per line).
pub(crate) fn qr(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
    )
}
