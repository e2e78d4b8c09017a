//! `sotto`: the command line of the sotto messenger, a thin layer over
//! `sotto-core`'s [`App`](sotto_core::App).
//!
//! Machine-readable results go to stdout (one JSON object per line with
//! `--json`); QR codes, progress and hints go to stderr. Exit codes: 0 ok,
//! 2 usage, 3 network (relay unreachable, certificate mismatch), 4 refused
//! (not a member, not admin, invite expired or used, unknown handle), 5 local
//! (not joined yet, store passphrase wrong), 1 anything else.
//!
//! One process owns a profile at a time (`owner`): `sotto daemon` or
//! `sotto listen` serve `<home>/control.sock`, and every other command on
//! that home runs inside them (docs/CLIENT_API.md).

mod chat;
mod commands;
mod demo;
mod errors;
mod files;
mod messages;
mod output;
mod owner;

pub use chat::HISTORY_PAGE;
pub use chat::session::{
    Arrival, CliOutput, FileCard, FileDetails, Line, Row, Session, Ticket, Transfer,
};
pub use commands::{
    Joined, NewTeam, create_team, default_home, describe, is_not_joined, join_team,
    needs_passphrase, passphrase_from_env,
};
pub use files::human_size;
pub use sotto_core::Status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// sotto: end-to-end encrypted team messaging whose relay learns almost
/// nothing — not the content, not the length, not who talks to whom.
///
/// Start with `sotto demo` to see a whole team on an embedded relay. For a
/// real team: the admin runs `sotto-relay`, then `sotto team create`, and
/// `sotto invite HANDLE` for each member, who runs `sotto join CODE`.
#[derive(Parser, Debug)]
#[command(name = "sotto", version, about, long_about)]
pub(crate) struct Cli {
    /// Directory holding this identity (keys, contacts, history), so several
    /// identities can live on one machine [default: $XDG_DATA_HOME/sotto].
    #[arg(long, global = true, env = "SOTTO_HOME")]
    home: Option<PathBuf>,
    /// Machine-readable output: one JSON object per line on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Team administration: create a team on a fresh relay.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Admin: invite a member; prints the invite code (stdout) and a QR code (stderr).
    Invite {
        /// The member's handle (1-32 of a-z 0-9 . - _).
        handle: String,
        /// How long the code stays valid: 30m, 12h, 7d, or seconds.
        #[arg(long, default_value = "7d")]
        expires: String,
        /// A device invite: relay access (no trust) for one more device of
        /// a joined member; the device is trusted only once the member
        /// approves it with their link code.
        #[arg(long, conflicts_with = "replace")]
        device: bool,
        /// Re-invite a member who lost every device: a new user key; every
        /// other member sees "key changed" and must verify again.
        #[arg(long)]
        replace: bool,
    },
    /// Join a team: with an invite code (a member's first device), or with
    /// a device-link code from `sotto device add` (another device of yours;
    /// prints the confirmation code to type into that device).
    Join {
        /// A `sotto-invite:` code from your admin, or a `sotto-link:` code
        /// from one of your devices.
        code: String,
        /// With a device invite from the admin as CODE: the `sotto-link:`
        /// code from one of your devices.
        #[arg(long)]
        link: Option<String>,
        /// A name for this device (shown by `sotto devices`).
        #[arg(long)]
        name: Option<String>,
    },
    /// Your devices: add, approve, remove.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// List your approved devices.
    Devices {
        /// Also list new devices waiting for approval.
        #[arg(long)]
        pending: bool,
    },
    /// Admin: remove a member from the team.
    Revoke {
        /// The member's handle.
        handle: String,
    },
    /// List the team's members.
    Members,
    /// Team admins: name another admin, remove one, list them, read the
    /// admin log.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Send a message to a member; the text is read from stdin.
    ///
    /// `echo hi | sotto send bob`: from stdin, the text stays out of shell
    /// history and `ps`. The message is queued locally first; nothing is
    /// lost if the relay is down — `sotto sync` retries.
    Send {
        /// The recipient's handle.
        handle: String,
        /// The message; without it (or with `-`) it is read from stdin,
        /// which keeps it out of shell history and `ps`.
        text: Option<String>,
        /// Reply to this message (its ID, or its first 8+ hex digits, from
        /// `sotto history`).
        #[arg(long, value_name = "ID")]
        reply_to: Option<String>,
        /// Send this file (the text, if given, is its caption): uploaded
        /// once, in 64 KiB chunks, to every device of the member.
        #[arg(long, value_name = "PATH", conflicts_with = "reply_to")]
        file: Option<std::path::PathBuf>,
    },
    /// Files: save one you received (or sent) to disk.
    #[command(subcommand)]
    File(FileCommand),
    /// List the files of a conversation (or of all of them).
    Files {
        /// A member's handle.
        handle: Option<String>,
        /// A group's name instead.
        #[arg(long, value_name = "NAME", conflicts_with = "handle")]
        group: Option<String>,
    },
    /// Fetch everything pending, print new messages, and send what is queued.
    Sync,
    /// Stay connected and print messages as they arrive.
    ///
    /// Reconnects by itself. While it runs it owns the profile: other
    /// `sotto` commands on this home run through it (see `sotto daemon`).
    Listen,
    /// Own the profile headless, for bots and always-on machines.
    ///
    /// Stays connected to the relay and serves <home>/control.sock, through
    /// which every other `sotto` command on this home runs and bots talk
    /// JSON-RPC 2.0 (docs/CLIENT_API.md). Stops cleanly on SIGTERM or
    /// Ctrl-C. A systemd --user unit: packaging/systemd/user/sotto.service.
    Daemon,
    /// Show the local history with one member, and mark what they sent
    /// read.
    ///
    /// With read receipts on (`sotto settings`), the member learns it with
    /// your next sync, or within seconds while a chat, daemon or listen
    /// runs: receipts go out with other traffic, never the moment you look.
    History {
        /// The member's handle.
        handle: String,
    },
    /// This profile's settings: shown without options, changed with them.
    Settings {
        /// Tell members when you have read their messages (on by default).
        /// Off: you still see when yours were read by members who have it
        /// on.
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        read_receipts: Option<bool>,
        /// Fetch received files under this many MiB as they arrive (0: off,
        /// the default); `sotto file save` fetches the others.
        #[arg(long, value_name = "MIB")]
        auto_fetch_mib: Option<u64>,
    },
    /// Verify a member: show the safety number to compare in person, or
    /// with --sas compare emoji interactively (both run it at the same time).
    Verify {
        /// The member's handle.
        handle: String,
        /// Interactive emoji comparison through the relay (asks for y/N on stdin).
        #[arg(long)]
        sas: bool,
        /// How long to wait for the other side, in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Group conversations: one upload per message, whatever the group's
    /// size; membership changes rotate every key.
    #[command(subcommand)]
    Group(GroupCommand),
    /// A terminal chat client: conversations and groups with unread
    /// counts, live updates, `/` commands (`/help`). Other `sotto` commands
    /// go through it while it runs.
    Chat {
        /// Ring the terminal bell when a message arrives in a conversation
        /// that is not open (or while the terminal is in the background).
        #[arg(long)]
        bell: bool,
        /// Also ask the terminal for a desktop notification (OSC 777 / OSC 9;
        /// the sender's name only, never the text).
        #[arg(long)]
        notify: bool,
    },
    /// Who am I: handle, team, relay.
    Whoami,
    /// A whole team on an embedded relay in a temp dir: no setup, no arguments.
    Demo,
    // ---- messages: react, edit, delete, search, export (issue 22) ----
    /// React to a message with one emoji; the same emoji again takes it back.
    React {
        /// The message's ID (or its first 8+ hex digits) from `sotto history`.
        id: String,
        /// One emoji.
        emoji: String,
    },
    /// Edit a message you sent; the new text is read from stdin. Everyone
    /// sees it marked "edited".
    Edit {
        /// The message's ID (or its first 8+ hex digits).
        id: String,
        /// The new text; without it (or with `-`) it is read from stdin.
        text: Option<String>,
    },
    /// Delete a message you sent, for everyone: every device removes its
    /// text and shows "message deleted". The relay's copy expires as usual.
    Delete {
        /// The message's ID (or its first 8+ hex digits).
        id: String,
    },
    /// Search the local history: every word of QUERY must start a word of
    /// the message; newest first.
    Search {
        /// What to look for (any text; nothing in it is a pattern).
        query: String,
        /// Only the conversation with this member.
        #[arg(long, conflicts_with = "group")]
        with: Option<String>,
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// At most this many results.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Export the local history (what you can read; never a key).
    Export {
        /// Only the conversation with this member.
        #[arg(long, conflicts_with = "group")]
        with: Option<String>,
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// jsonl (one message per line) or markdown.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Only messages sent on or after this day (YYYY-MM-DD, UTC).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Write to this file (created, 0600) instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Disappearing messages in a conversation: every device deletes a
    /// message this long after it was sent (5m … 4w), or `off`. Any member
    /// sets it; everyone sees who did.
    Disappear {
        /// The member (without --group), then the duration: 1h, 7d, off.
        #[arg(required = true, num_args = 1..=2, value_name = "HANDLE DURATION")]
        args: Vec<String>,
        /// The group instead of a member.
        #[arg(long)]
        group: Option<String>,
    },
    // ---- end of messages ----
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// How `sotto export` writes the history.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExportFormat {
    /// One JSON object per message and line.
    Jsonl,
    /// A readable document.
    Markdown,
}

/// `on` or `off`, for a setting.
fn on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(format!("\"{value}\" is neither on nor off")),
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum GroupCommand {
    /// Create a group with you as its admin.
    Create {
        /// The group's name (yours to choose; members see it).
        name: String,
        /// The members' handles.
        #[arg(required = true)]
        handles: Vec<String>,
        /// Each member starts a new encryption session after this many
        /// messages (a leaked session key exposes at most these).
        #[arg(long, default_value_t = sotto_core::DEFAULT_ROTATE_MESSAGES)]
        rotate_messages: u32,
        /// ... or after this long: 30m, 12h, 7d, or seconds.
        #[arg(long, default_value = "7d")]
        rotate_after: String,
    },
    /// Admin: add members; they see only messages sent from now on.
    Add {
        /// The group's name (or the start of its ID).
        name: String,
        /// The handles to add.
        #[arg(required = true)]
        handles: Vec<String>,
    },
    /// Admin: remove members; they can neither find nor read anything sent
    /// after this.
    Remove {
        /// The group's name (or the start of its ID).
        name: String,
        /// The handles to remove.
        #[arg(required = true)]
        handles: Vec<String>,
    },
    /// Admin: change a group's settings.
    Set {
        /// The group's name (or the start of its ID).
        name: String,
        /// Whether only an admin may set the disappearing-message timer
        /// (members' devices ignore anyone else's).
        #[arg(long, value_name = "on|off", value_parser = on_off, action = clap::ArgAction::Set, required = true)]
        timer_admins_only: bool,
    },
    /// Leave a group you do not administer; its admin's device removes you.
    Leave {
        /// The group's name (or the start of its ID).
        name: String,
    },
    /// Send a message to a group; the text is read from stdin.
    ///
    /// Queued locally first, like `send`.
    Send {
        /// The group's name (or the start of its ID).
        name: String,
        /// The message; without it (or with `-`) it is read from stdin.
        text: Option<String>,
        /// Reply to this message of the group (its ID or ID start).
        #[arg(long, value_name = "ID")]
        reply_to: Option<String>,
        /// Send this file to the group (the text, if given, is its
        /// caption): one upload, whatever the group's size.
        #[arg(long, value_name = "PATH", conflicts_with = "reply_to")]
        file: Option<std::path::PathBuf>,
    },
    /// Show a group's local history.
    History {
        /// The group's name (or the start of its ID).
        name: String,
    },
    /// List your groups and their members.
    List,
}

#[derive(Subcommand, Debug)]
pub(crate) enum FileCommand {
    /// Fetch a file (if not yet; an interrupted fetch resumes) and write
    /// it, after checking its SHA-256. Into PATH if it is a directory
    /// (the current one by default) under its sanitized name, else to
    /// PATH itself; never over an existing file.
    Save {
        /// The message's ID (or its first 8+ hex digits), from `sotto files`.
        id: String,
        /// Where to write it.
        path: Option<std::path::PathBuf>,
    },
    /// Write the small JPEG that came inline with an image (exit 4 if it
    /// came without one); never over an existing file.
    Thumbnail {
        /// The message's ID (or its first 8+ hex digits).
        id: String,
        /// Where to write it.
        path: std::path::PathBuf,
    },
    /// Delete a file you sent from the relay now, before its TTL: those
    /// who have not fetched it yet no longer can.
    Delete {
        /// The message's ID (or its first 8+ hex digits).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AdminCommand {
    /// Admin: name a joined member admin; their devices get the team key
    /// at their next sync, and they can invite and revoke.
    Add {
        /// The member's handle.
        handle: String,
    },
    /// Admin: a member is no longer admin (they stay a member). The last
    /// admin cannot be removed.
    Remove {
        /// The admin's handle.
        handle: String,
    },
    /// List the team's admins.
    List,
    /// Admin: every admin action, newest first, each checked against the
    /// admin who signed it; an entry that does not check is shown as
    /// refused, never as an action.
    Log,
}

#[derive(Subcommand, Debug)]
pub(crate) enum DeviceCommand {
    /// Print a device-link code for a new device of yours (stdout; QR on
    /// stderr). On the new device: `sotto join LINK_CODE`.
    Add,
    /// Approve the new device that shows CONFIRM: it gets your keys,
    /// contacts and groups (syncs first to find its request).
    Approve {
        /// The confirmation code the new device printed (e.g. 1234-5678).
        confirm: String,
        /// Also send it your history of this long: 30d, 12h, ... (as 64 KiB
        /// sealed blobs).
        #[arg(long)]
        history: Option<String>,
    },
    /// Remove one of your devices: it gets nothing new, 1:1 or group, and
    /// loses relay access; your user key moves to a new one.
    Remove {
        /// The device's ID (or its start), from `sotto devices`.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TeamCommand {
    /// Create a team (the admin's first device), using the relay's one-time
    /// bootstrap code.
    Create {
        /// The bootstrap code `sotto-relay` printed on its first start.
        bootstrap_code: String,
        /// Your handle in the team.
        #[arg(long)]
        handle: String,
        /// The team's name.
        #[arg(long, default_value = "team")]
        name: String,
        /// The relay as members reach it, host:port.
        #[arg(long)]
        relay: String,
        /// The relay certificate fingerprint `sotto-relay` printed (hex).
        #[arg(long)]
        fingerprint: String,
    },
}

/// The `sotto` command line: parses the arguments, runs the command and
/// returns its exit code (`src/bin/sotto.rs` is only this call).
#[must_use]
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SOTTO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sotto: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Background tasks (an owner's socket server) end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The owner ran the command and printed its message already.
        Err(error) if error.downcast_ref::<errors::Exited>().is_some() => {
            ExitCode::from(errors::exit_code(&error))
        }
        Err(error) => {
            eprintln!("sotto: {}", errors::describe(&error));
            ExitCode::from(errors::exit_code(&error))
        }
    }
}
