//! The one place engine errors become gRPC statuses.

use gyre::{Error, ErrorKind};
use tonic::Status;

/// Maps an engine error to a status: bad input → INVALID_ARGUMENT (the message names the
/// field), unknown collection → NOT_FOUND, duplicate create → ALREADY_EXISTS, damaged files →
/// DATA_LOSS, I/O and broken invariants → INTERNAL, a locked directory → UNAVAILABLE, a lost conditional write → ABORTED, a
/// cancelled search → DEADLINE_EXCEEDED or CANCELLED. Storage failures are logged
/// with their path; the client sees the same message.
pub fn to_status(e: Error) -> Status {
    let msg = e.to_string();
    match e.kind() {
        ErrorKind::InvalidInput => Status::invalid_argument(msg),
        ErrorKind::NotFound => Status::not_found(msg),
        ErrorKind::AlreadyExists => Status::already_exists(msg),
        ErrorKind::Corruption => {
            tracing::error!(error = %msg, "storage corruption");
            Status::data_loss(msg)
        }
        ErrorKind::Io => {
            tracing::error!(error = %msg, "storage I/O error");
            Status::internal(msg)
        }
        ErrorKind::Unavailable => Status::unavailable(msg),
        ErrorKind::Conflict => Status::aborted(msg),
        // The server cancels the engine's work when the deadline passes or the client leaves.
        ErrorKind::Cancelled if msg.contains("deadline") => Status::deadline_exceeded(msg),
        ErrorKind::Cancelled => Status::cancelled(msg),
        ErrorKind::Internal => {
            tracing::error!(error = %msg, "internal invariant broken");
            Status::internal(msg)
        }
    }
}

/// INVALID_ARGUMENT naming the request field.
pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid argument `{field}`: {reason}"))
}
