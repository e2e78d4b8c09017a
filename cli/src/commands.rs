//! One function per command; each opens the home, does its work through
//! [`App`], and prints.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;
use sotto_core::{App, KeySource, RelayTarget, system_clock};

use crate::errors::UsageError;
use crate::output::{Output, line, qr};
use crate::{Cli, Command, DeviceCommand, GroupCommand, TeamCommand};

/// `$XDG_DATA_HOME/sotto`, or `~/.local/share/sotto`.
fn default_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("sotto");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/sotto"),
        None => PathBuf::from("sotto-home"),
    }
}

/// The store key: a passphrase from `SOTTO_PASSPHRASE`, else the 0600 key
/// file in the home directory.
fn key_source(home: &Path) -> KeySource {
    match std::env::var("SOTTO_PASSPHRASE") {
        Ok(passphrase) if !passphrase.is_empty() => KeySource::passphrase(passphrase),
        _ => KeySource::key_file_in(home),
    }
}

/// Parses `30m`, `12h`, `7d`, `90s` or plain seconds.
fn parse_duration(text: &str) -> Result<u64, UsageError> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let number: u64 = number.parse().map_err(|_| {
        UsageError(format!(
            "\"{text}\" is not a duration; use e.g. 30m, 12h or 7d"
        ))
    })?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => {
            return Err(UsageError(format!(
                "\"{text}\": the unit must be s, m, h or d"
            )));
        }
    };
    Ok(number.saturating_mul(unit))
}

fn parse_fingerprint(text: &str) -> Result<[u8; 32], UsageError> {
    hex::decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            UsageError("the fingerprint must be 64 hex digits, as sotto-relay printed it".into())
        })
}

async fn open(home: &Path) -> anyhow::Result<App> {
    Ok(App::open(home, key_source(home), system_clock()).await?)
}

/// Runs one command.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    let home = cli.home.clone().unwrap_or_else(default_home);
    match cli.command {
        Command::Team(TeamCommand::Create {
            bootstrap_code,
            handle,
            name,
            relay,
            fingerprint,
        }) => {
            let target = RelayTarget {
                addr: relay,
                fingerprint: parse_fingerprint(&fingerprint)?,
            };
            std::fs::create_dir_all(&home)
                .with_context(|| format!("cannot create {}", home.display()))?;
            let app = App::create_team(
                &home,
                key_source(&home),
                target,
                &bootstrap_code,
                &name,
                &handle,
                system_clock(),
            )
            .await?;
            out.result(
                format!("Team \"{}\" created; you are {} (admin). Invite members with `sotto invite HANDLE`.", app.team_name(), app.handle()),
                json!({"team": app.team_name(), "handle": app.handle(), "admin": true}),
            );
        }
        Command::Invite {
            handle,
            expires,
            device,
            replace,
        } => {
            let valid = parse_duration(&expires)?;
            let mut app = open(&home).await?;
            let code = if device {
                app.invite_device(&handle, valid).await?
            } else if replace {
                app.invite_replace(&handle, valid).await?
            } else {
                app.invite(&handle, valid).await?
            };
            if out.json {
                line(format_args!(
                    "{}",
                    json!({"handle": handle, "code": code, "expires_in_secs": valid})
                ));
            } else {
                line(&code);
            }
            if let Some(qr) = qr(&code) {
                eprintln!("{qr}");
            }
            if device {
                eprintln!(
                    "A device invite: relay access only. On the new device, {handle} runs: sotto join CODE --link LINK_CODE (LINK_CODE from `sotto device add` on one of their devices)"
                );
            } else {
                eprintln!(
                    "Give this code to {handle} (like a password: whoever holds it can join as {handle}, once). They run: sotto join CODE"
                );
            }
        }
        Command::Join { code, link, name } => {
            std::fs::create_dir_all(&home)
                .with_context(|| format!("cannot create {}", home.display()))?;
            let (link, admin_code) = match link {
                Some(link) => (Some(link), Some(code)),
                None if code.trim().starts_with(sotto_core::team::LINK_PREFIX) => {
                    (Some(code), None)
                }
                None => (None, Some(code)),
            };
            match (link, admin_code) {
                (Some(link), admin_code) => {
                    let (app, confirm) = App::join_link(
                        &home,
                        key_source(&home),
                        &link,
                        admin_code.as_deref(),
                        name.as_deref(),
                        system_clock(),
                    )
                    .await?;
                    eprintln!(
                        "This device asked to join {}'s devices. On the device that printed the link code, run:\n\n    sotto device approve {confirm}\n\nthen run `sotto sync` here.",
                        app.handle()
                    );
                    out.result(
                        format!("confirm: {confirm}"),
                        json!({"team": app.team_name(), "handle": app.handle(), "confirm": confirm}),
                    );
                }
                (None, Some(code)) => {
                    let app = App::join(&home, key_source(&home), &code, system_clock()).await?;
                    out.result(
                        format!("Joined team \"{}\" as {}.", app.team_name(), app.handle()),
                        json!({"team": app.team_name(), "handle": app.handle()}),
                    );
                }
                (None, None) => unreachable!("a code is always given"),
            }
        }
        Command::Device(command) => device(&home, command, out).await?,
        Command::Devices { pending } => {
            let mut app = open(&home).await?;
            if pending {
                // Requests arrive as messages: fetch them first.
                app.sync().await?;
            }
            for device in app.devices(pending)? {
                let human = format!(
                    "{}  {}{}{}",
                    device.id,
                    if device.name.is_empty() {
                        "(unnamed)"
                    } else {
                        &device.name
                    },
                    if device.this { "  (this device)" } else { "" },
                    match (&device.confirm, device.added, device.last_seen) {
                        (Some(code), _, _) => format!("  waiting for approval, shows {code}"),
                        (None, added, seen) => format!(
                            "{}{}",
                            added
                                .map(|a| format!("  added {}", day(a)))
                                .unwrap_or_default(),
                            seen.map(|s| format!("  last seen {}", day(s / 1000)))
                                .unwrap_or_default()
                        ),
                    }
                );
                out.result(human, serde_json::to_value(&device)?);
            }
        }
        Command::Revoke { handle } => {
            let mut app = open(&home).await?;
            app.revoke(&handle).await?;
            out.result(
                format!("{handle} was removed from the team."),
                json!({"revoked": handle}),
            );
        }
        Command::Members => {
            let mut app = open(&home).await?;
            for member in app.members().await? {
                out.result(&member, json!({"handle": member}));
            }
        }
        Command::Send { handle, text } => {
            let mut app = open(&home).await?;
            let sent = app.send(&handle, &text).await?;
            let status = if sent.delivered { "sent" } else { "queued" };
            out.result(
                if sent.delivered {
                    format!("sent to {handle}")
                } else {
                    format!(
                        "queued for {handle}: the relay is unreachable; `sotto sync` sends it later"
                    )
                },
                json!({"id": hex::encode(sent.id), "to": handle, "status": status}),
            );
        }
        Command::Sync => {
            let mut app = open(&home).await?;
            // A new device's first sync may bring its history in parts.
            let bar = indicatif::ProgressBar::hidden();
            let shown = bar.clone();
            app.client().set_history_progress(move |part, of, _| {
                if shown.is_hidden() {
                    shown.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    shown.set_length(u64::from(of));
                    if let Ok(style) =
                        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] part {pos}/{len}")
                    {
                        shown.set_style(style);
                    }
                    shown.set_message("history from your other device");
                }
                shown.set_position(u64::from(part));
            });
            let report = app.sync().await;
            bar.finish_and_clear();
            let report = report?;
            let periods = app.client().engine().token_key_warnings()?;
            if !periods.is_empty() {
                eprintln!(
                    "sotto: warning: the relay showed members different access-token keys for {} period(s); \
                     it may be telling members apart. Tell your admin.",
                    periods.len()
                );
            }
            for message in &report.messages {
                out.message(message);
            }
            if let Some((index, total)) = report.history_parts {
                eprintln!(
                    "history from your other device: part {index} of {total} ({} messages) — `sotto history HANDLE` shows it",
                    report.history_messages
                );
            }
            if report.link_requests > 0 {
                eprintln!(
                    "a new device asks to be linked to you: `sotto devices --pending` shows its code; approve with `sotto device approve CODE` only if it is the code on your new device's screen"
                );
            }
            for notice in app.take_notices()? {
                eprintln!("sotto: notice: {notice}");
            }
            if let Some(code) = app.awaiting_approval() {
                eprintln!(
                    "this device waits for approval: on one of your devices run `sotto device approve {code}`"
                );
            }
            if !out.json && report.messages.is_empty() {
                eprintln!("no new messages");
            }
        }
        Command::Listen => listen(&home, out).await?,
        Command::History { handle } => {
            let app = open(&home).await?;
            for message in app.history(&handle)? {
                out.message(&message);
            }
        }
        Command::Verify {
            handle,
            sas,
            timeout,
        } => {
            let mut app = open(&home).await?;
            app.ensure_contact(&handle).await?;
            if sas {
                verify_sas(&mut app, &handle, timeout, out).await?;
            } else {
                let number = app.safety_number(&handle)?;
                let verified = app.is_verified(&handle)?;
                out.result(
                    format!(
                        "Safety number with {handle}{}:\n{number}\nCompare it with {handle} in person or on a call; it is the same on both sides unless someone is in the middle.",
                        if verified { " (verified)" } else { "" }
                    ),
                    json!({"handle": handle, "safety_number": number, "verified": verified}),
                );
            }
        }
        Command::Group(command) => group(&home, command, out).await?,
        Command::Whoami => {
            let app = open(&home).await?;
            out.result(
                format!(
                    "{} in team \"{}\"{}",
                    app.handle(),
                    app.team_name(),
                    if app.is_admin() { " (admin)" } else { "" }
                ),
                json!({"handle": app.handle(), "team": app.team_name(), "admin": app.is_admin()}),
            );
        }
        Command::Chat { bell, notify } => {
            let app = open(&home).await?;
            crate::chat::run(&home, app, crate::chat::Options { bell, notify }).await?;
        }
        Command::Demo => crate::demo::run(out).await?,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "sotto", &mut std::io::stdout());
        }
    }
    Ok(())
}

/// `sotto group ...`.
/// `YYYY-MM-DD` of a unix-seconds time (UTC).
fn day(secs: u64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

async fn device(home: &Path, command: DeviceCommand, out: Output) -> anyhow::Result<()> {
    let mut app = open(home).await?;
    match command {
        DeviceCommand::Add => {
            let link = app.device_add().await?;
            if out.json {
                line(
                    json!({"code": link.code, "relay_access": link.relay_access, "expires_at": link.expires_at}),
                );
            } else {
                line(&link.code);
            }
            if let Some(qr) = qr(&link.code) {
                eprintln!("{qr}");
            }
            if link.relay_access {
                eprintln!(
                    "On the new device run: sotto join LINK_CODE — it then shows a confirmation code; type it here with `sotto device approve CODE`. The code works for an hour."
                );
            } else {
                eprintln!(
                    "Your relay does not let members register devices themselves: ask your admin for `sotto invite {} --device`, then on the new device run: sotto join ADMIN_CODE --link LINK_CODE",
                    app.handle()
                );
            }
        }
        DeviceCommand::Approve { confirm, history } => {
            let since = match history {
                Some(window) => {
                    let secs = parse_duration(&window)?;
                    Some(system_clock()().saturating_sub(secs.saturating_mul(1000)))
                }
                None => None,
            };
            let approved = app.device_approve(&confirm, since).await?;
            out.result(
                format!(
                    "Approved {} ({}){}. On it, run `sotto sync`.",
                    approved.id,
                    approved.name,
                    if approved.history_chunks > 0 {
                        format!("; sent your history in {} part(s)", approved.history_chunks)
                    } else {
                        String::new()
                    }
                ),
                json!({"id": approved.id, "name": approved.name, "history_parts": approved.history_chunks}),
            );
        }
        DeviceCommand::Remove { id } => {
            let removed = app.device_remove(&id).await?;
            out.result(
                format!(
                    "Removed {} ({}): it gets nothing new and lost its relay access; your contacts stop encrypting to it at their next sync.",
                    removed.id, removed.name
                ),
                json!({"removed": removed.id}),
            );
        }
    }
    Ok(())
}

async fn group(home: &Path, command: GroupCommand, out: Output) -> anyhow::Result<()> {
    let show = |info: &sotto_core::GroupInfo, what: &str| {
        out.result(
            format!(
                "{what} \"{}\" ({}): {}{}",
                info.name,
                &info.id[..8],
                info.members.join(", "),
                if info.active {
                    ""
                } else {
                    " — you were removed"
                }
            ),
            json!({
                "group": info.name,
                "id": info.id,
                "members": info.members,
                "admins": info.admins,
                "generation": info.generation,
                "active": info.active,
            }),
        );
    };
    match command {
        GroupCommand::Create {
            name,
            handles,
            rotate_messages,
            rotate_after,
        } => {
            let rotation = sotto_core::Rotation {
                messages: rotate_messages.max(1),
                secs: parse_duration(&rotate_after)?.max(1),
            };
            let mut app = open(home).await?;
            let info = app.group_create(&name, &handles, rotation).await?;
            show(&info, "created");
        }
        GroupCommand::Add { name, handles } => {
            let mut app = open(home).await?;
            let info = app.group_add(&name, &handles).await?;
            show(&info, "updated");
        }
        GroupCommand::Remove { name, handles } => {
            let mut app = open(home).await?;
            let info = app.group_remove(&name, &handles).await?;
            show(&info, "updated");
        }
        GroupCommand::Leave { name } => {
            let mut app = open(home).await?;
            let info = app.group_leave(&name).await?;
            show(&info, "left");
        }
        GroupCommand::Send { name, text } => {
            let mut app = open(home).await?;
            let sent = app.group_send(&name, &text).await?;
            let status = if sent.delivered { "sent" } else { "queued" };
            out.result(
                if sent.delivered {
                    format!("sent to {name}")
                } else {
                    format!(
                        "queued for {name}: the relay is unreachable; `sotto sync` sends it later"
                    )
                },
                json!({"id": hex::encode(sent.id), "group": name, "status": status}),
            );
        }
        GroupCommand::History { name } => {
            let app = open(home).await?;
            for message in app.group_history(&name)? {
                out.message(&message);
            }
        }
        GroupCommand::List => {
            let app = open(home).await?;
            let groups = app.groups();
            if groups.is_empty() && !out.json {
                eprintln!("no groups yet; `sotto group create NAME HANDLE...` makes one");
            }
            for info in &groups {
                show(info, "group");
            }
        }
    }
    Ok(())
}

/// `sotto verify HANDLE --sas`: shows the emoji and numbers, asks the
/// person whether they match the other device, and reports the outcome.
async fn verify_sas(app: &mut App, handle: &str, timeout: u64, out: Output) -> anyhow::Result<()> {
    use sotto_core::SasOutcome;
    eprintln!(
        "Waiting for {handle} (they run `sotto verify {} --sas` now)...",
        app.handle()
    );
    let outcome = app
        .verify_sas(handle, std::time::Duration::from_secs(timeout), |code| {
            if out.json {
                let emoji: Vec<&str> = code.emoji.iter().map(|(_, name)| *name).collect();
                line(json!({"handle": handle, "sas_emoji": emoji, "sas_decimals": [code.decimals.0, code.decimals.1, code.decimals.2]}));
            } else {
                line(format_args!("Compare with {handle}'s screen:\n{code}"));
            }
            eprint!("Do they match exactly? [y/N] ");
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer).is_ok() && answer.trim().eq_ignore_ascii_case("y")
        })
        .await?;
    match outcome {
        SasOutcome::Verified => out.result(
            format!("{handle} is verified."),
            json!({"handle": handle, "verified": true}),
        ),
        SasOutcome::Rejected => {
            out.result(
                format!("Not verified: the codes differ. Someone may be between you and {handle}; do not trust this device until you find out why."),
                json!({"handle": handle, "verified": false, "reason": "codes differ"}),
            );
        }
        SasOutcome::Mismatch => {
            out.result(
                format!("Not verified: {handle} did not confirm in time, or their confirmation did not check."),
                json!({"handle": handle, "verified": false, "reason": "no matching confirmation"}),
            );
        }
    }
    Ok(())
}

/// `sotto listen`: prints messages as they arrive; on network errors it
/// reconnects with exponential backoff (1 s up to 30 s) until Ctrl-C.
async fn listen(home: &Path, out: Output) -> anyhow::Result<()> {
    let mut app = open(home).await?;
    let mut backoff = 1u64;
    loop {
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match app.listen(|message| out.message(message), stop).await {
            Ok(()) => return Ok(()),
            Err(error) if error.is_network() => {
                eprintln!("sotto: {error}; reconnecting in {backoff}s");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(backoff)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
                backoff = (backoff * 2).min(30);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("7d").unwrap(), 7 * 86_400);
        assert_eq!(parse_duration("12h").unwrap(), 12 * 3600);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
