//! A request the relay refuses: a typed error code and a sentence.

use sotto_proto::wire::{self, ErrorCode};

/// Why a request was refused. Becomes an `Error` response frame; nothing
/// was changed by the refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A sentence for logs and users.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The error response to request `id`.
    pub fn into_response(self, id: u64) -> wire::Response {
        wire::Response {
            id,
            result: Some(wire::response::Result::Error(wire::Error {
                code: self.code as i32,
                message: self.message,
            })),
        }
    }
}

/// A storage failure, reported to the client without details.
impl From<crate::storage::StoreError> for Refusal {
    fn from(error: crate::storage::StoreError) -> Self {
        tracing::error!(%error, "storage error");
        Refusal::new(
            ErrorCode::Internal,
            "the relay's storage failed; nothing was changed, try again",
        )
    }
}
