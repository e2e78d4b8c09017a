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
                | EngineError::GroupChange(_),
            ) => REFUSED,
            AppError::Engine(_) | AppError::Store(_) => LOCAL,
            AppError::NotJoined(_) | AppError::AlreadyJoined(_) => LOCAL,
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
    1
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
