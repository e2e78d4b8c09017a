//! `sotto react`, `edit`, `delete`, `search` and `export`: what people do
//! with messages besides sending them (issue 22).

use std::io::Write;

use serde_json::json;
use sotto_core::{App, Change, Message};

use crate::commands::Ctx;
use crate::errors::UsageError;
use crate::output::{message_json, shown_text};
use crate::{Command, ExportFormat};

/// Runs one of this module's commands.
pub(crate) async fn run(app: &mut App, command: Command, ctx: &mut Ctx) -> anyhow::Result<()> {
    let out = ctx.out.clone();
    let changed = |message: &Message, delivered: bool, what: &str| {
        out.result(
            format!(
                "{what}{}",
                if delivered {
                    ""
                } else {
                    " (queued: the relay is unreachable; `sotto sync` sends it later)"
                }
            ),
            json!({
                "message": message_json(message),
                "status": if delivered { "sent" } else { "queued" },
            }),
        );
    };
    match command {
        Command::React { id, emoji } => {
            let (message, delivered) = app.change_message(&id, Change::React(emoji)).await?;
            changed(&message, delivered, "reaction changed");
        }
        Command::Edit { id, text } => {
            let text = ctx.message_text(text)?;
            let (message, delivered) = app.change_message(&id, Change::Edit(text)).await?;
            changed(&message, delivered, "edited");
        }
        Command::Delete { id } => {
            let (message, delivered) = app.change_message(&id, Change::Delete).await?;
            changed(&message, delivered, "deleted for everyone");
        }
        Command::Search {
            query,
            with,
            group,
            limit,
        } => {
            app.purge_expired()?;
            let found = app.search(&query, with.as_deref(), group.as_deref(), limit)?;
            if found.is_empty() && !out.json {
                out.err("no message matches");
            }
            for message in &found {
                out.message(message);
            }
        }
        Command::Export {
            with,
            group,
            format,
            since,
            output,
        } => {
            let since_ms = match since {
                Some(date) => day_start_ms(&date).ok_or_else(|| {
                    UsageError(format!("\"{date}\" is not a date like 2026-12-03"))
                })?,
                None => 0,
            };
            app.purge_expired()?;
            let messages = app.export(with.as_deref(), group.as_deref(), since_ms)?;
            let text = render(&messages, format);
            match output {
                Some(path) => {
                    let mut options = std::fs::OpenOptions::new();
                    options.write(true).create(true).truncate(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                    let mut file = options.open(&path)?;
                    file.write_all(text.as_bytes())?;
                    file.sync_all()?;
                    out.result(
                        format!("{} messages written to {}", messages.len(), path.display()),
                        json!({"messages": messages.len(), "path": path}),
                    );
                }
                None => {
                    let text = text.strip_suffix('\n').unwrap_or(&text);
                    if !text.is_empty() {
                        out.line(text);
                    }
                }
            }
        }
        Command::Disappear { args, group } => {
            let (with, duration) = match (group.as_deref(), args.as_slice()) {
                (Some(_), [duration]) => (None, duration),
                (None, [handle, duration]) => (Some(handle.as_str()), duration),
                (Some(_), _) => {
                    return Err(UsageError("with --group, give only the duration".into()).into());
                }
                (None, _) => {
                    return Err(UsageError("give a member's handle and a duration".into()).into());
                }
            };
            let secs = if duration == "off" {
                0
            } else {
                crate::commands::parse_duration(duration)?
            };
            let delivered = app.set_timer(with, group.as_deref(), secs).await?;
            let shown = if secs == 0 {
                "off".to_owned()
            } else {
                sotto_core::describe_secs(secs)
            };
            out.result(
                format!(
                    "disappearing messages: {shown}{}",
                    if delivered { "" } else { " (queued)" }
                ),
                json!({"with": with, "group": group, "secs": secs, "status": if delivered { "sent" } else { "queued" }}),
            );
        }
        _ => return Err(UsageError("not a message command".into()).into()),
    }
    Ok(())
}

/// The export of `messages` (oldest first) in `format`.
fn render(messages: &[Message], format: ExportFormat) -> String {
    let mut text = String::new();
    match format {
        ExportFormat::Jsonl => {
            for message in messages {
                text.push_str(&message_json(message).to_string());
                text.push('\n');
            }
        }
        ExportFormat::Markdown => {
            let mut conversation = None;
            for message in messages {
                let name = match &message.group {
                    Some(group) => format!("#{group}"),
                    None => message.peer.clone(),
                };
                if conversation.as_ref() != Some(&name) {
                    text.push_str(&format!("\n## {name}\n\n"));
                    conversation = Some(name);
                }
                let mut line = format!(
                    "- **{}** ({}): {}",
                    markdown_escape(&message.from),
                    iso_time(message.sent_at),
                    markdown_escape(shown_text(message)).replace('\n', "  \n  ")
                );
                if message.edited() && !message.deleted {
                    line.push_str(" _(edited)_");
                }
                for (emoji, count) in message.reaction_counts() {
                    line.push_str(&format!(" {emoji}{count}"));
                }
                text.push_str(&line);
                text.push('\n');
            }
        }
    }
    text
}

/// Escapes what Markdown would read as markup.
fn markdown_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\`*_{}[]()#+-.!|<>".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds at 00:00 UTC of `YYYY-MM-DD`.
fn day_start_ms(date: &str) -> Option<u64> {
    let mut parts = date.trim().splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let max_day = *days_in_month.get(usize::try_from(month - 1).ok()?)?;
    if !(1970..=9999).contains(&year) || !(1..=max_day).contains(&day) {
        return None;
    }
    u64::try_from(days_from_civil(year, month, day) * 86_400_000).ok()
}

/// `YYYY-MM-DD HH:MM` UTC of unix milliseconds.
fn iso_time(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    // civil_from_days (the inverse of days_from_civil).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rest / 3600,
        (rest / 60) % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_to_utc_midnight() {
        assert_eq!(day_start_ms("1970-01-01"), Some(0));
        assert_eq!(day_start_ms("2026-12-03"), Some(1_796_256_000_000));
        assert_eq!(iso_time(1_796_256_000_000 + 61_000), "2026-12-03 00:01");
        for bad in [
            "2026-13-01",
            "2026-02-30",
            "yesterday",
            "",
            "2026-1",
            "1969-12-31",
        ] {
            assert_eq!(day_start_ms(bad), None, "{bad}");
        }
        assert_eq!(
            day_start_ms("2024-02-29").map(|ms| ms % 86_400_000),
            Some(0)
        );
    }

    #[test]
    fn markdown_export_escapes_markup() {
        assert_eq!(markdown_escape("*hi* [x](y)"), "\\*hi\\* \\[x\\]\\(y\\)");
    }
}
