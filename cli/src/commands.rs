//! One function per command; each opens the home, does its work through
//! [`App`], and prints.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;
use sotto_core::{App, KeySource, RelayTarget, system_clock};

use crate::errors::UsageError;
use crate::output::{Output, qr};
use crate::{AdminCommand, Cli, Command, DeviceCommand, FileCommand, GroupCommand, TeamCommand};

/// The platform's data directory joined with `sotto`: on Linux
/// `$XDG_DATA_HOME/sotto` (an absolute `XDG_DATA_HOME` only, as the XDG
/// spec says), else `~/.local/share/sotto`; `./sotto-home` with no home
/// directory at all. `--home` and `$SOTTO_HOME` come first (clap).
#[must_use]
pub fn default_home() -> PathBuf {
    directories::BaseDirs::new()
        .map(|dirs| dirs.data_dir().join("sotto"))
        .unwrap_or_else(|| PathBuf::from("sotto-home"))
}

/// The store key: a passphrase from `SOTTO_PASSPHRASE`, else the 0600 key
/// file in the home directory.
fn key_source(home: &Path) -> KeySource {
    key_source_with(home, None)
}

/// The store key with a passphrase a window asked for: it wins over
/// `SOTTO_PASSPHRASE`; without one the CLI's rules hold.
fn key_source_with(home: &Path, passphrase: Option<&str>) -> KeySource {
    match passphrase {
        Some(passphrase) if !passphrase.is_empty() => KeySource::passphrase(passphrase),
        _ => match std::env::var("SOTTO_PASSPHRASE") {
            Ok(passphrase) if !passphrase.is_empty() => KeySource::passphrase(passphrase),
            _ => KeySource::key_file_in(home),
        },
    }
}

/// Whether `SOTTO_PASSPHRASE` gives the store key (a window then asks
/// for none).
#[must_use]
pub fn passphrase_from_env() -> bool {
    std::env::var("SOTTO_PASSPHRASE").is_ok_and(|p| !p.is_empty())
}

/// Whether `error` means the store is locked by a passphrase that was not
/// given or is wrong (a window then asks for it).
#[must_use]
pub fn needs_passphrase(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sotto_core::AppError>(),
            Some(sotto_core::AppError::Store(
                sotto_core::StoreError::WrongPassphrase
                    | sotto_core::StoreError::KeySourceMismatch {
                        expected: "passphrase",
                        ..
                    }
            ))
        )
    })
}

/// Parses a duration in whole seconds: plain seconds (`90`), or a number
/// with a unit (`90s`, `30m`, `12h`, `7d`, `2w`, also combined: `1h 30m`).
pub(crate) fn parse_duration(text: &str) -> Result<u64, UsageError> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    let duration = humantime::parse_duration(text).map_err(|error| {
        UsageError(format!(
            "\"{text}\" is not a duration ({error}); use e.g. 30m, 12h or 7d"
        ))
    })?;
    if duration.subsec_nanos() != 0 {
        return Err(UsageError(format!(
            "\"{text}\": durations are whole seconds; use e.g. 30m, 12h or 7d"
        )));
    }
    Ok(duration.as_secs())
}

fn parse_fingerprint(text: &str) -> Result<[u8; 32], UsageError> {
    hex::decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            UsageError("the fingerprint must be 64 hex digits, as sotto-relay printed it".into())
        })
}

/// Opens the profile in `home`. A store database locked by a process that
/// does not take part in the owner protocol is reported as such, never as
/// the database's own error.
pub(crate) async fn open(home: &Path) -> anyhow::Result<App> {
    open_with(home, None).await
}

/// [`open`] with a passphrase a window asked for.
pub(crate) async fn open_with(home: &Path, passphrase: Option<&str>) -> anyhow::Result<App> {
    match App::open(home, key_source_with(home, passphrase), system_clock()).await {
        Ok(app) => Ok(app),
        Err(error) => {
            let error = anyhow::Error::from(error);
            if crate::errors::is_database_lock(&error) {
                return Err(crate::errors::OwnedError::DatabaseLocked {
                    home: home.display().to_string(),
                }
                .into());
            }
            Err(error)
        }
    }
}

/// Creates `home` (and its parents) with the home itself 0700: it holds
/// the store key and the control socket.
pub(crate) fn create_home(home: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(home)
        .with_context(|| format!("cannot create {}", home.display()))
}

/// Where a command's stdin comes from.
pub(crate) enum Input {
    /// This process's stdin.
    Own,
    /// What the process that asked the owner read from its stdin, if it
    /// read any.
    Given(Option<String>),
}

/// The most a message read from stdin may hold (the control socket's
/// 1 MiB line must fit it, JSON-escaped).
pub(crate) const MAX_STDIN: u64 = 256 * 1024;

/// What one command needs around it, and what it leaves behind for the
/// owner (who passes sent IDs and new messages on to its subscribers).
pub(crate) struct Ctx {
    pub(crate) out: Output,
    pub(crate) stdin: Input,
    /// 1:1 messages sent: (hex ID, recipient, status).
    pub(crate) sent: Vec<(String, String, sotto_core::Status)>,
    /// Whether a sync ran (receipts may have come in).
    pub(crate) synced: bool,
    /// Messages a sync brought in.
    pub(crate) received: Vec<sotto_core::Message>,
    /// Members whose messages were shown and marked read: a live owner
    /// sends the receipts with its next answer.
    pub(crate) read: Vec<String>,
}

impl Ctx {
    pub(crate) fn new(out: Output, stdin: Input) -> Self {
        Self {
            out,
            stdin,
            sent: Vec::new(),
            synced: false,
            received: Vec::new(),
            read: Vec::new(),
        }
    }

    /// Notes a 1:1 message sent to `handle` (for the status lines at the
    /// end of a command): sent if the relay took it, else queued.
    pub(crate) fn record_sent(&mut self, sent: &sotto_core::Sent, handle: &str) {
        self.sent.push((
            hex::encode(sent.id),
            handle.to_owned(),
            if sent.delivered {
                sotto_core::Status::Sent
            } else {
                sotto_core::Status::Queued
            },
        ));
    }

    /// The message text: `text` itself, or stdin when it is absent or `-`
    /// (so that it stays out of shell history and `ps`). One trailing
    /// newline (from `echo` or a heredoc) is not part of the message.
    pub(crate) fn message_text(&mut self, text: Option<String>) -> anyhow::Result<String> {
        if let Some(text) = text.filter(|t| t != "-") {
            return Ok(text);
        }
        let mut text = match &mut self.stdin {
            Input::Own => {
                use std::io::{IsTerminal, Read};
                let stdin = std::io::stdin();
                if stdin.is_terminal() {
                    self.out
                        .err("Type the message; end it with Ctrl-D on a line of its own.");
                }
                let mut text = String::new();
                stdin
                    .lock()
                    .take(MAX_STDIN + 1)
                    .read_to_string(&mut text)
                    .map_err(|e| UsageError(format!("cannot read the message from stdin: {e}")))?;
                text
            }
            Input::Given(given) => given.take().ok_or_else(|| {
                UsageError("no message text: give it on stdin (or as an argument)".into())
            })?,
        };
        if text.len() as u64 > MAX_STDIN {
            return Err(UsageError(format!(
                "the message on stdin is longer than {} KiB",
                MAX_STDIN / 1024
            ))
            .into());
        }
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if text.is_empty() {
            return Err(UsageError("the message is empty".into()).into());
        }
        Ok(text)
    }
}

/// Whether `command` reads its message from stdin.
pub(crate) fn reads_stdin(command: &Command) -> bool {
    let absent = |text: &Option<String>| text.as_deref().is_none_or(|t| t == "-");
    match command {
        Command::Send { file: Some(_), .. }
        | Command::Group(GroupCommand::Send { file: Some(_), .. }) => false,
        Command::Send { text, .. } | Command::Edit { text, .. } => absent(text),
        Command::Group(GroupCommand::Send { text, .. }) => absent(text),
        _ => false,
    }
}

/// Whether `command` works on an existing profile (and so runs through
/// its owner when there is one).
pub(crate) fn uses_profile(command: &Command) -> bool {
    !matches!(
        command,
        Command::Team(_)
            | Command::Join { .. }
            | Command::Demo
            | Command::Completions { .. }
            | Command::Listen
            | Command::Daemon
            | Command::Chat { .. }
    )
}

/// Runs one command. A store database locked by a process outside the
/// owner protocol is reported as such, whatever the command.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = cli.home.clone().unwrap_or_else(default_home);
    run_in(cli, &home).await.map_err(|error| {
        if crate::errors::is_database_lock(&error) {
            crate::errors::OwnedError::DatabaseLocked {
                home: home.display().to_string(),
            }
            .into()
        } else {
            error
        }
    })
}

async fn run_in(cli: Cli, home: &Path) -> anyhow::Result<()> {
    let out = Output::std(cli.json);
    let home = home.to_owned();
    match cli.command {
        Command::Team(TeamCommand::Create {
            bootstrap_code,
            handle,
            name,
            relay,
            fingerprint,
        }) => {
            let team = NewTeam {
                bootstrap_code,
                handle,
                name,
                relay,
                fingerprint,
            };
            let (team, handle) = create_team(&home, &team, None).await?;
            out.result(
                format!("Team \"{team}\" created; you are {handle} (admin). Invite members with `sotto invite HANDLE`."),
                json!({"team": team, "handle": handle, "admin": true}),
            );
        }
        Command::Join { code, link, name } => {
            create_home(&home)?;
            let _lock = crate::owner::lock_for_setup(&home).await?;
            join(&home, code, link, name, &out).await?;
        }
        Command::Listen => crate::owner::listen(&home, &out).await?,
        Command::Daemon => crate::owner::daemon(&home, &out).await?,
        Command::Chat { bell, notify } => {
            crate::chat::run(&home, crate::chat::Options { bell, notify }).await?;
        }
        Command::Demo => crate::demo::run(&out).await?,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "sotto", &mut std::io::stdout());
        }
        command => match crate::owner::claim(&home).await? {
            crate::owner::Claim::Mine(lock) => {
                let mut app = open(&home).await?;
                let mut ctx = Ctx::new(out, Input::Own);
                let result = exec(&mut app, command, &mut ctx).await;
                drop(app);
                drop(lock);
                result?;
            }
            crate::owner::Claim::Owner(owner) => {
                crate::owner::remote::forward(owner, &command, &out).await?;
            }
        },
    }
    Ok(())
}

async fn join(
    home: &Path,
    code: String,
    link: Option<String>,
    name: Option<String>,
    out: &Output,
) -> anyhow::Result<()> {
    match join_profile(home, key_source(home), code, link, name).await? {
        Joined::Linking {
            team,
            handle,
            confirm,
        } => {
            out.err(format_args!(
                "This device asked to join {handle}'s devices. On the device that printed the link code, run:\n\n    sotto device approve {confirm}\n\nthen run `sotto sync` here."
            ));
            out.result(
                format!("confirm: {confirm}"),
                json!({"team": team, "handle": handle, "confirm": confirm}),
            );
        }
        Joined::Member { team, handle } => {
            out.result(
                format!("Joined team \"{team}\" as {handle}."),
                json!({"team": team, "handle": handle}),
            );
        }
    }
    Ok(())
}

/// What joining a team did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Joined {
    /// A member's first device: joined with an invite code.
    Member {
        /// The team's name.
        team: String,
        /// My handle.
        handle: String,
    },
    /// Another device of a member: waits until one of the member's
    /// devices approves it with `confirm`.
    Linking {
        /// The team's name.
        team: String,
        /// The member's handle.
        handle: String,
        /// The confirmation code to type into the device that printed the
        /// link code (`sotto device approve CODE`).
        confirm: String,
    },
}

/// Joins a team in `home` with an invite code, or links this device with
/// a link code (`code` tells which; `link` gives both at once). The home
/// must hold no identity yet.
async fn join_profile(
    home: &Path,
    keys: KeySource,
    code: String,
    link: Option<String>,
    name: Option<String>,
) -> anyhow::Result<Joined> {
    let (link, admin_code) = match link {
        Some(link) => (Some(link), Some(code)),
        None if code.trim().starts_with(sotto_core::team::LINK_PREFIX) => (Some(code), None),
        None => (None, Some(code)),
    };
    match (link, admin_code) {
        (Some(link), admin_code) => {
            let (app, confirm) = App::join_link(
                home,
                keys,
                &link,
                admin_code.as_deref(),
                name.as_deref(),
                system_clock(),
            )
            .await?;
            Ok(Joined::Linking {
                team: app.team_name().to_owned(),
                handle: app.handle().to_owned(),
                confirm,
            })
        }
        (None, Some(code)) => {
            let app = App::join(home, keys, &code, system_clock()).await?;
            Ok(Joined::Member {
                team: app.team_name().to_owned(),
                handle: app.handle().to_owned(),
            })
        }
        (None, None) => Err(UsageError("give an invite code or a link code".into()).into()),
    }
}

/// For a graphical client: joins a team in `home` (created 0700 if
/// missing) with an invite code or a device-link code, as `sotto join
/// CODE` does (the store key as for the CLI: `SOTTO_PASSPHRASE`, else a
/// key file in the home).
///
/// # Errors
/// The code is not valid, expired or used; the relay cannot be reached;
/// the home already holds an identity. [`describe`] words any of them for
/// the user.
pub async fn join_team(
    home: &Path,
    code: &str,
    passphrase: Option<&str>,
) -> anyhow::Result<Joined> {
    create_home(home)?;
    let _lock = crate::owner::lock_for_setup(home).await?;
    join_profile(
        home,
        key_source_with(home, passphrase),
        code.trim().to_owned(),
        None,
        None,
    )
    .await
}

/// What creating a team takes: the relay's one-time bootstrap code and
/// where the relay is, as `sotto-relay` printed them on its first start.
#[derive(Clone, Debug, Default)]
pub struct NewTeam {
    /// The one-time bootstrap code.
    pub bootstrap_code: String,
    /// The admin's handle.
    pub handle: String,
    /// The team's name.
    pub name: String,
    /// The relay as members reach it, host:port.
    pub relay: String,
    /// The relay certificate's fingerprint (64 hex digits).
    pub fingerprint: String,
}

/// Creates a team in `home` (the admin's first device), as
/// `sotto team create` does; `passphrase` locks the store with it
/// (else the CLI's rules). Returns the team's name and the handle.
///
/// # Errors
/// A bad fingerprint, a relay that cannot be reached or refuses the code,
/// a home that already holds a profile.
pub async fn create_team(
    home: &Path,
    team: &NewTeam,
    passphrase: Option<&str>,
) -> anyhow::Result<(String, String)> {
    let target = RelayTarget {
        addr: team.relay.trim().to_owned(),
        fingerprint: parse_fingerprint(&team.fingerprint)?,
    };
    create_home(home)?;
    let _lock = crate::owner::lock_for_setup(home).await?;
    let app = App::create_team(
        home,
        key_source_with(home, passphrase),
        target,
        team.bootstrap_code.trim(),
        team.name.trim(),
        team.handle.trim(),
        system_clock(),
    )
    .await?;
    Ok((app.team_name().to_owned(), app.handle().to_owned()))
}

/// Whether `error` means the home holds no identity yet (a graphical
/// client then offers to join).
#[must_use]
pub fn is_not_joined(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sotto_core::AppError>(),
            Some(sotto_core::AppError::NotJoined(_))
        )
    })
}

/// One sentence for the user about `error`, as `sotto` prints it.
#[must_use]
pub fn describe(error: &anyhow::Error) -> String {
    crate::errors::describe(error)
}

/// Runs a command line for another process, inside the owner, against its
/// App: `argv` without the program name. Returns (stdout, stderr, exit
/// code) as that process would have printed and exited.
pub(crate) async fn run_captured(
    app: &mut App,
    argv: &[String],
    stdin: Option<String>,
) -> (Vec<u8>, Vec<u8>, u8, Ctx) {
    let parsed = <Cli as clap::Parser>::try_parse_from(
        std::iter::once("sotto".to_owned()).chain(argv.iter().cloned()),
    );
    let cli = match parsed {
        Ok(cli) => cli,
        Err(error) => {
            // Plain text: the asking process's terminal is not known here.
            let text = error.render().to_string().into_bytes();
            let code = u8::try_from(error.exit_code()).unwrap_or(crate::errors::USAGE);
            let (out, _) = Output::buffered(false);
            let ctx = Ctx::new(out, Input::Given(None));
            return if error.use_stderr() {
                (Vec::new(), text, code, ctx)
            } else {
                (text, Vec::new(), code, ctx)
            };
        }
    };
    let (out, captured) = Output::buffered(cli.json);
    let mut ctx = Ctx::new(out, Input::Given(stdin));
    let result = if !uses_profile(&cli.command) {
        Err(UsageError(
            "this command does not run through the profile's owner; run it without one".into(),
        )
        .into())
    } else if matches!(cli.command, Command::Verify { sas: true, .. }) {
        Err(crate::errors::OwnedError::Interactive.into())
    } else {
        exec(app, cli.command, &mut ctx).await
    };
    let code = match &result {
        Ok(()) => 0,
        Err(error) => {
            ctx.out
                .err(format_args!("sotto: {}", crate::errors::describe(error)));
            crate::errors::exit_code(error)
        }
    };
    let (stdout, stderr) = match captured.lock() {
        Ok(mut captured) => (
            std::mem::take(&mut captured.stdout),
            std::mem::take(&mut captured.stderr),
        ),
        Err(_) => (Vec::new(), Vec::new()),
    };
    (stdout, stderr, code, ctx)
}

/// Runs one command that works on the profile, against `app`.
pub(crate) async fn exec(app: &mut App, command: Command, ctx: &mut Ctx) -> anyhow::Result<()> {
    let out = ctx.out.clone();
    match command {
        Command::Invite {
            handle,
            expires,
            device,
            replace,
        } => {
            let valid = parse_duration(&expires)?;
            let code = if device {
                app.invite_device(&handle, valid).await?
            } else if replace {
                app.invite_replace(&handle, valid).await?
            } else {
                app.invite(&handle, valid).await?
            };
            if out.json {
                out.line(json!({"handle": handle, "code": code, "expires_in_secs": valid}));
            } else {
                out.line(&code);
            }
            if let Some(qr) = qr(&code) {
                out.err(qr);
            }
            if device {
                out.err(format_args!(
                    "A device invite: relay access only. On the new device, {handle} runs: sotto join CODE --link LINK_CODE (LINK_CODE from `sotto device add` on one of their devices)"
                ));
            } else {
                out.err(format_args!(
                    "Give this code to {handle} (like a password: whoever holds it can join as {handle}, once). They run: sotto join CODE"
                ));
            }
        }
        Command::Device(command) => device(app, command, &out).await?,
        Command::Devices { pending } => {
            if pending {
                // Requests arrive as messages: fetch them first.
                let report = app.sync().await?;
                ctx.synced = true;
                ctx.received.extend(report.messages);
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
            app.revoke(&handle).await?;
            out.result(
                format!("{handle} was removed from the team."),
                json!({"revoked": handle}),
            );
            // What the revocation did besides (invites withdrawn because
            // they carry the old directory key): now, not at the next sync.
            for notice in app.take_notices()? {
                out.err(format_args!("sotto: notice: {notice}"));
            }
        }
        Command::Admin(command) => {
            admin(app, command, &out).await?;
            for notice in app.take_notices()? {
                out.err(format_args!("sotto: notice: {notice}"));
            }
        }
        Command::Members => {
            for member in app.members().await? {
                out.result(&member, json!({"handle": member}));
            }
        }
        Command::Send {
            handle,
            text,
            file: Some(path),
            ..
        } => {
            let caption = text.unwrap_or_default();
            crate::files::send(
                app,
                ctx,
                sotto_core::FileTarget::Member(handle),
                &path,
                caption,
            )
            .await?;
        }
        Command::File(FileCommand::Save { id, path }) => {
            crate::files::save(app, ctx, &id, path).await?;
        }
        Command::File(FileCommand::Thumbnail { id, path }) => {
            crate::files::thumbnail(app, ctx, &id, &path)?;
        }
        Command::File(FileCommand::Delete { id }) => {
            let id = app.resolve_message_id(&id)?;
            let deleted = app.delete_file(&id).await?;
            out.result(
                format!("deleted the file's {deleted} chunks from the relay"),
                json!({"id": hex::encode(id), "deleted_blobs": deleted}),
            );
        }
        Command::Files { handle, group } => {
            crate::files::list(app, ctx, handle.as_deref(), group.as_deref())?;
        }
        Command::Send {
            handle,
            text,
            reply_to,
            file: None,
        } => {
            let text = ctx.message_text(text)?;
            let reply_to = match reply_to {
                Some(id) => Some(app.resolve_message_id(&id)?),
                None => None,
            };
            let sent = app.send_reply(&handle, &text, reply_to.as_ref()).await?;
            ctx.record_sent(&sent, &handle);
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
        Command::Sync => sync(app, ctx).await?,
        Command::History { handle } => {
            app.purge_expired()?;
            for message in app.history(&handle)? {
                out.message(&message);
            }
            // Shown: read. The receipt waits for the next delivery.
            app.mark_read(&handle)?;
            ctx.read.push(handle);
        }
        Command::Settings {
            read_receipts,
            auto_fetch_mib,
        } => {
            if let Some(on) = read_receipts {
                app.set_read_receipts(on)?;
            }
            if let Some(mib) = auto_fetch_mib {
                app.set_auto_fetch_bytes(mib.saturating_mul(1024 * 1024))?;
            }
            let on = app.read_receipts()?;
            let mib = app.auto_fetch_bytes()? / (1024 * 1024);
            out.result(
                format!(
                    "read receipts: {}\nfetch files as they arrive: {}",
                    if on { "on" } else { "off" },
                    if mib == 0 {
                        "off".to_owned()
                    } else {
                        format!("under {mib} MiB")
                    }
                ),
                json!({"read_receipts": on, "auto_fetch_mib": mib}),
            );
        }
        Command::Verify {
            handle,
            sas,
            timeout,
        } => {
            app.ensure_contact(&handle).await?;
            if sas {
                verify_sas(app, &handle, timeout, &out).await?;
            } else {
                let number = app.safety_number(&handle)?;
                let verified = app.is_verified(&handle)?;
                let post_quantum = app
                    .client()
                    .engine()
                    .is_post_quantum(&handle)
                    .unwrap_or(false);
                out.result(
                    format!(
                        "Safety number with {handle}{}:\n{number}\nCompare it with {handle} in person or on a call; it is the same on both sides unless someone is in the middle.\n{}",
                        if verified { " (verified)" } else { "" },
                        envelope_line(&handle, post_quantum),
                    ),
                    json!({"handle": handle, "safety_number": number, "verified": verified, "post_quantum": post_quantum}),
                );
            }
        }
        Command::Group(command) => group(app, command, ctx).await?,
        command @ (Command::React { .. }
        | Command::Edit { .. }
        | Command::Delete { .. }
        | Command::Search { .. }
        | Command::Export { .. }
        | Command::Disappear { .. }) => crate::messages::run(app, command, ctx).await?,
        Command::Whoami => {
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
        Command::Team(_)
        | Command::Join { .. }
        | Command::Listen
        | Command::Daemon
        | Command::Chat { .. }
        | Command::Demo
        | Command::Completions { .. } => {
            return Err(UsageError("this command does not work on an open profile".into()).into());
        }
    }
    Ok(())
}

/// What `verify` says about the envelopes exchanged with `handle`.
fn envelope_line(handle: &str, post_quantum: bool) -> String {
    if post_quantum {
        "Envelopes: post-quantum hybrid (ML-KEM-768 and X25519).".to_owned()
    } else {
        format!(
            "Envelopes: classical only (X25519): {handle}'s sotto predates post-quantum envelopes; they become hybrid once {handle} updates."
        )
    }
}

async fn sync(app: &mut App, ctx: &mut Ctx) -> anyhow::Result<()> {
    let out = ctx.out.clone();
    // A new device's first sync may bring its history in parts.
    let bar = indicatif::ProgressBar::hidden();
    if out.is_std() {
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
    }
    let report = app.sync().await;
    bar.finish_and_clear();
    let report = report?;
    let periods = app.client().engine().token_key_warnings()?;
    if !periods.is_empty() {
        out.err(format_args!(
            "sotto: warning: the relay showed members different access-token keys for {} period(s); \
             it may be telling members apart. Tell your admin.",
            periods.len()
        ));
    }
    for message in &report.messages {
        out.message(message);
    }
    crate::files::auto_fetch(app, &out, &report.messages).await?;
    // Messages a reaction, edit or delete changed, as they are now.
    for message in &report.updated {
        if out.json {
            out.line(json!({ "updated": crate::output::message_json(message) }));
        } else {
            out.message(message);
        }
    }
    if let Some((index, total)) = report.history_parts {
        out.err(format_args!(
            "history from your other device: part {index} of {total} ({} messages) — `sotto history HANDLE` shows it",
            report.history_messages
        ));
    }
    if report.link_requests > 0 {
        out.err(
            "a new device asks to be linked to you: `sotto devices --pending` shows its code; approve with `sotto device approve CODE` only if it is the code on your new device's screen",
        );
    }
    for notice in app.take_notices()? {
        out.err(format_args!("sotto: notice: {notice}"));
    }
    if let Some(code) = app.awaiting_approval() {
        out.err(format_args!(
            "this device waits for approval: on one of your devices run `sotto device approve {code}`"
        ));
    }
    if !out.json && report.messages.is_empty() && report.updated.is_empty() {
        out.err("no new messages");
    }
    ctx.synced = true;
    ctx.received.extend(report.messages);
    Ok(())
}

/// `sotto group ...`.
/// `YYYY-MM-DD` of a unix-seconds time (UTC); the plain number for a time
/// past the calendar's range (year 9999), which no clock of ours writes.
fn day(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|time| {
            time.format(time::macros::format_description!("[year]-[month]-[day]"))
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} (unix seconds)"))
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a unix-seconds time.
fn moment(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|time| {
            time.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| format!("{secs} (unix seconds)"))
}

/// `sotto admin ...`.
async fn admin(app: &mut App, command: AdminCommand, out: &Output) -> anyhow::Result<()> {
    use sotto_core::team::AdminLogLine;
    match command {
        AdminCommand::Add { handle } => {
            app.admin_add(&handle).await?;
            out.result(
                format!("{handle} is now a team admin; their devices take the team key at their next sync."),
                json!({"admin_added": handle}),
            );
        }
        AdminCommand::Remove { handle } => {
            app.admin_remove(&handle).await?;
            out.result(
                format!("{handle} is no longer a team admin."),
                json!({"admin_removed": handle}),
            );
        }
        AdminCommand::List => {
            for admin in app.admins().await? {
                out.result(&admin, json!({"admin": admin}));
            }
        }
        AdminCommand::Log => {
            let lines = app.admin_log().await?;
            let refused = lines
                .iter()
                .filter(|line| matches!(line, AdminLogLine::Refused { .. }))
                .count();
            for line in lines {
                match line {
                    AdminLogLine::Valid(action) => out.result(
                        format!(
                            "#{}  {}  {}  {}{}",
                            action.index,
                            moment(action.at),
                            action.actor,
                            action.action,
                            if action.subject.is_empty() {
                                String::new()
                            } else {
                                format!(" {}", action.subject)
                            }
                        ),
                        json!({
                            "index": action.index,
                            "at": action.at,
                            "actor": action.actor,
                            "action": action.action,
                            "subject": action.subject,
                            "valid": true,
                        }),
                    ),
                    AdminLogLine::Refused { index, reason } => out.result(
                        format!("#{index}  REFUSED: {reason}"),
                        json!({"index": index, "valid": false, "refused": reason.to_string()}),
                    ),
                }
            }
            if refused > 0 {
                out.err(format_args!(
                    "sotto: warning: {refused} admin log entr{} did not verify and {} not shown as actions; the relay or someone holding the team key altered the log",
                    if refused == 1 { "y" } else { "ies" },
                    if refused == 1 { "is" } else { "are" },
                ));
            }
        }
    }
    Ok(())
}

async fn device(app: &mut App, command: DeviceCommand, out: &Output) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Add => {
            let link = app.device_add().await?;
            if out.json {
                out.line(
                    json!({"code": link.code, "relay_access": link.relay_access, "expires_at": link.expires_at}),
                );
            } else {
                out.line(&link.code);
            }
            if let Some(qr) = qr(&link.code) {
                out.err(qr);
            }
            if link.relay_access {
                out.err(
                    "On the new device run: sotto join LINK_CODE — it then shows a confirmation code; type it here with `sotto device approve CODE`. The code works for an hour."
                );
            } else {
                out.err(format_args!(
                    "Your relay does not let members register devices themselves: ask your admin for `sotto invite {} --device`, then on the new device run: sotto join ADMIN_CODE --link LINK_CODE",
                    app.handle()
                ));
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

async fn group(app: &mut App, command: GroupCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    let out = ctx.out.clone();
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
                "timer_admins_only": info.timer_admins_only,
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
            let info = app.group_create(&name, &handles, rotation).await?;
            show(&info, "created");
        }
        GroupCommand::Add { name, handles } => {
            let info = app.group_add(&name, &handles).await?;
            show(&info, "updated");
        }
        GroupCommand::Remove { name, handles } => {
            let info = app.group_remove(&name, &handles).await?;
            show(&info, "updated");
        }
        GroupCommand::Set {
            name,
            timer_admins_only,
        } => {
            let info = app
                .group_set_timer_admins_only(&name, timer_admins_only)
                .await?;
            let who = if info.timer_admins_only {
                "admins only"
            } else {
                "any member"
            };
            show(&info, &format!("timer set by {who} in"));
        }
        GroupCommand::Leave { name } => {
            let info = app.group_leave(&name).await?;
            show(&info, "left");
        }
        GroupCommand::Send {
            name,
            text,
            file: Some(path),
            ..
        } => {
            let caption = text.unwrap_or_default();
            crate::files::send(
                app,
                ctx,
                sotto_core::FileTarget::Group(name),
                &path,
                caption,
            )
            .await?;
        }
        GroupCommand::Send {
            name,
            text,
            reply_to,
            file: None,
        } => {
            let text = ctx.message_text(text)?;
            let reply_to = match reply_to {
                Some(id) => Some(app.resolve_message_id(&id)?),
                None => None,
            };
            let sent = app
                .group_send_reply(&name, &text, reply_to.as_ref())
                .await?;
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
            app.purge_expired()?;
            for message in app.group_history(&name)? {
                out.message(&message);
            }
            // Shown: read (here only; groups get no read receipts).
            app.mark_group_read(&name)?;
        }
        GroupCommand::List => {
            let groups = app.groups();
            if groups.is_empty() && !out.json {
                out.err("no groups yet; `sotto group create NAME HANDLE...` makes one");
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
async fn verify_sas(app: &mut App, handle: &str, timeout: u64, out: &Output) -> anyhow::Result<()> {
    sas_waiting(out, handle, app.handle());
    let outcome = app
        .verify_sas(handle, std::time::Duration::from_secs(timeout), |code| {
            let emoji: Vec<&str> = code.emoji.iter().map(|(_, name)| *name).collect();
            let decimals = [code.decimals.0, code.decimals.1, code.decimals.2];
            sas_ask(out, handle, &emoji, decimals, &code.to_string())
        })
        .await?;
    sas_outcome(out, handle, outcome);
    Ok(())
}

/// The first line of a SAS verification.
pub(crate) fn sas_waiting(out: &Output, handle: &str, me: &str) {
    out.err(format_args!(
        "Waiting for {handle} (they run `sotto verify {me} --sas` now)..."
    ));
}

/// Shows the code and asks on stdin whether it matches the other screen.
pub(crate) fn sas_ask(
    out: &Output,
    handle: &str,
    emoji: &[&str],
    decimals: [u16; 3],
    text: &str,
) -> bool {
    if out.json {
        out.line(json!({"handle": handle, "sas_emoji": emoji, "sas_decimals": decimals}));
    } else {
        out.line(format_args!("Compare with {handle}'s screen:\n{text}"));
    }
    out.err_raw("Do they match exactly? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && answer.trim().eq_ignore_ascii_case("y")
}

/// How a SAS verification ended, as the user reads it.
pub(crate) fn sas_outcome(out: &Output, handle: &str, outcome: sotto_core::SasOutcome) {
    use sotto_core::SasOutcome;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("7d").unwrap(), 7 * 86_400);
        assert_eq!(parse_duration("12h").unwrap(), 12 * 3600);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration(" 7d ").unwrap(), 7 * 86_400);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86_400);
        assert_eq!(parse_duration("1h 30m").unwrap(), 5400);
    }

    #[test]
    fn bad_durations_are_clear_usage_errors() {
        for (text, says) in [
            ("soon", "is not a duration"),
            ("7x", "is not a duration"),
            ("", "is not a duration"),
            ("-5m", "is not a duration"),
            ("99999999999999999999d", "is not a duration"),
            ("1500ms", "whole seconds"),
        ] {
            let UsageError(message) = parse_duration(text).unwrap_err();
            assert!(message.contains(says), "{text:?}: {message}");
            assert!(
                message.contains("e.g. 30m, 12h or 7d"),
                "{text:?}: {message}"
            );
        }
    }

    #[test]
    fn days_are_utc_calendar_dates() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(951_782_400), "2000-02-29");
        assert_eq!(day(1_700_000_000), "2023-11-14");
        assert_eq!(day(253_402_300_799), "9999-12-31");
        assert_eq!(day(u64::MAX), format!("{} (unix seconds)", u64::MAX));
    }
}
