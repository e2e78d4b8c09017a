//! Printing results: human text or one JSON object per line.

use std::io::Write;

use serde_json::json;
use sotto_core::{Message, Status};

/// How results are printed.
#[derive(Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    /// A message as scripts and people read it. JSON carries at least `id`,
    /// `from`, `group` (null for 1:1), `text`, `sent_at` (DESIGN §10).
    pub(crate) fn message(&self, message: &Message) {
        if self.json {
            line(json!({
                "id": message.id,
                "from": message.from,
                "to": if message.from_me { Some(&message.peer) } else { None },
                "group": message.group,
                "text": message.text,
                "sent_at": message.sent_at,
                "status": message.status,
            }));
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
                _ => message.text.clone(),
            };
            line(format_args!("[{}] {arrow}: {text}", clock(message.sent_at)));
        }
    }

    /// A result with one human line and one JSON object.
    pub(crate) fn result(&self, human: impl std::fmt::Display, json: serde_json::Value) {
        if self.json {
            line(&json);
        } else {
            line(&human);
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

/// Writes one line to stdout. When stdout is closed (`sotto sync | head`)
/// the command ends quietly, as Unix tools do, instead of panicking.
pub(crate) fn line(text: impl std::fmt::Display) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}
