//! Exit codes and messages people can act on: no stack traces, no
//! `Error: Io(...)`.

use sotto_core::team::TeamError;
use sotto_core::{AppError, EngineError, NetError, StoreError, TokenError};

/// Exit code: usage error (clap uses it too).
pub(crate) const USAGE: u8 = 2;
/// Exit code: the relay could not be reached or is not the pinned one.
pub(crate) const NETWORK: u8 = 3;
/// Exit code: the operation was refused.
pub(crate) const REFUSED: u8 = 4;
/// Exit code: local state (not joined, wrong passphrase, damaged store).
pub(crate) const LOCAL: u8 = 5;

fn net_code(error: &NetError) -> u8 {
    match error {
        NetError::Refused { .. } => REFUSED,
        _ => NETWORK,
    }
}

/// The exit code for `error`.
pub(crate) fn exit_code(error: &anyhow::Error) -> u8 {
    if let Some(app) = error.downcast_ref::<AppError>() {
        return match app {
            AppError::Net(net) => net_code(net),
            AppError::Resolve(_) => NETWORK,
            AppError::Team(TeamError::Net(net)) => net_code(net),
            AppError::Team(TeamError::Store(_) | TeamError::Corrupt(_)) => LOCAL,
            AppError::Team(_) | AppError::Invite(_) | AppError::Myself => REFUSED,
            AppError::VerificationTimedOut(_) | AppError::VerificationInvalid(_) => REFUSED,
            AppError::Token(TokenError::Net(net)) => net_code(net),
            AppError::Token(TokenError::Store(_)) => LOCAL,
            AppError::Token(_) => REFUSED,
            AppError::Engine(
                EngineError::UnknownContact(_)
                | EngineError::UnknownGroup(_)
                | EngineError::AmbiguousGroup { .. }
                | EngineError::GroupNameTaken(_)
                | EngineError::NotGroupAdmin(_)
                | EngineError::NotInGroup(_)
                | EngineError::GroupChange(_)
                | EngineError::Action(_),
            ) => REFUSED,
            AppError::Engine(_) | AppError::Store(_) => LOCAL,
            AppError::NotJoined(_) | AppError::AlreadyJoined(_) => LOCAL,
            AppError::File(sotto_core::FileError::Net(net)) => net_code(net),
            AppError::File(sotto_core::FileError::Io(_)) => LOCAL,
            AppError::File(_) => REFUSED,
            AppError::NoRelayAccess
            | AppError::NoSuchLinkRequest(_)
            | AppError::UnknownDevice(_)
            | AppError::AmbiguousDevice(_)
            | AppError::RemoveThisDevice => REFUSED,
        };
    }
    if error.downcast_ref::<UsageError>().is_some() {
        return USAGE;
    }
    if let Some(Exited(code)) = error.downcast_ref::<Exited>() {
        return *code;
    }
    if let Some(owned) = error.downcast_ref::<OwnedError>() {
        return match owned {
            OwnedError::Interactive | OwnedError::AlreadyOwned { .. } => REFUSED,
            _ => LOCAL,
        };
    }
    1
}

/// A command the profile's owner ran for this process ended with this exit
/// code; its message is printed already.
#[derive(Debug, thiserror::Error)]
#[error("exit code {0}")]
pub(crate) struct Exited(pub(crate) u8);

/// Something else holds the profile, or its files are not private.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OwnedError {
    /// Another sotto process is running a command on this profile and did
    /// not finish in time.
    #[error(
        "the profile in {home} is busy: {holder} is using it; wait for it to finish (or stop it) and try again"
    )]
    Busy { home: String, holder: String },
    /// A long-running owner already serves this profile.
    #[error(
        "the profile in {home} is already owned by {holder}; other commands run through it — stop it first to start another owner"
    )]
    AlreadyOwned { home: String, holder: String },
    /// The store database is locked by a process that does not take part
    /// in the owner protocol (an older sotto, a backup tool).
    #[error(
        "the profile in {home} is open in another program (its database is locked); close that program, or stop the other sotto process, and try again"
    )]
    DatabaseLocked { home: String },
    /// A directory or the socket is readable or writable by others.
    #[error(
        "{path} is accessible by other users (mode {mode:03o}); the control socket lets whoever reaches it use your identity — run `chmod {want:o} {path}` and try again"
    )]
    Permissions { path: String, mode: u32, want: u32 },
    /// The owner's control socket failed.
    #[error("the profile's owner ({holder}) did not answer on its control socket: {reason}")]
    Socket { holder: String, reason: String },
    /// `verify --sas` needs this terminal.
    #[error(
        "`verify --sas` asks its question on a terminal: in `cli.run` it cannot; run `sotto verify HANDLE --sas` in a terminal (it goes through the owner by the verify.sas methods)"
    )]
    Interactive,
}

/// Whether `error` is the store database's lock held by another process
/// (sled reports `WouldBlock` when it cannot take its file lock).
pub(crate) fn is_database_lock(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let database = matches!(
            cause.downcast_ref::<StoreError>(),
            Some(StoreError::Database { .. })
        ) || matches!(
            cause.downcast_ref::<AppError>(),
            Some(AppError::Store(StoreError::Database { .. }))
        );
        if !database {
            return false;
        }
        let text = cause.to_string();
        text.contains("could not acquire lock") || text.contains("WouldBlock")
    })
}

/// A usage problem found after parsing (a bad duration, a bad fingerprint).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// The message for `error`: the top-level sentence plus causes.
pub(crate) fn describe(error: &anyhow::Error) -> String {
    if let Some(AppError::Store(StoreError::WrongPassphrase)) = error.downcast_ref::<AppError>() {
        return "the store passphrase is wrong (check SOTTO_PASSPHRASE)".into();
    }
    format!("{error:#}")
}
