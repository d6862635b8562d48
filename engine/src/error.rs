//! The engine's one error type, split by who must act.
//!
//! * [`ErrorKind::InvalidInput`]: the caller passed something the engine cannot accept (a vector
//!   of the wrong length, a NaN, an unsupported bit width). Fix the request.
//! * [`ErrorKind::NotFound`] / [`ErrorKind::AlreadyExists`]: a collection is missing or taken.
//! * [`ErrorKind::Io`]: the operating system refused a read or write (disk full, permissions);
//!   the error names the file.
//! * [`ErrorKind::Corruption`]: a file's bytes are not what Gyre wrote (bad magic, checksum,
//!   truncation); the error names the file. Nothing is guessed or skipped silently.
//! * [`ErrorKind::Unavailable`]: the data directory is held by another process.
//! * [`ErrorKind::Cancelled`]: the caller cancelled a search or its deadline passed.
//! * [`ErrorKind::Internal`]: an invariant of the engine broke (a poisoned lock, a panicked
//!   background thread). A bug, not the caller's fault; the message says what broke.
//!
//! Errors never carry vector data, only positions and sizes, so they are cheap to build and safe
//! to log.

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who has to act on an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller sent a request the engine refuses; retrying it unchanged fails again.
    InvalidInput,
    /// A named collection does not exist.
    NotFound,
    /// A collection with that name already exists.
    AlreadyExists,
    /// Another writer got there first (a conditional put lost, a lease is held); re-read and
    /// retry, or stop the other writer.
    Conflict,
    /// An operating-system I/O error.
    Io,
    /// Stored data failed a check: a file is damaged or was not written by Gyre.
    Corruption,
    /// The resource is held by someone else (another process has the data directory).
    Unavailable,
    /// An internal invariant broke: a bug in Gyre (report it), never the caller's input.
    Internal,
    /// The caller cancelled the work, or its deadline passed, before it finished.
    Cancelled,
}

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A vector's length differs from the dimension of the quantizer or index.
    #[error("dimension mismatch: expected a vector of {expected} components, got {actual}")]
    DimensionMismatch {
        /// The dimension the index was built with.
        expected: usize,
        /// The length of the vector that was passed.
        actual: usize,
    },
    /// A component is NaN or infinite.
    #[error("vector component {index} is {value}: every component must be a finite number")]
    NonFinite {
        /// Position of the first offending component.
        index: usize,
        /// The offending value (NaN or ±inf).
        value: f32,
    },
    /// The vector is all zeros (or its norm underflows), so it has no direction to quantize.
    #[error(
        "the vector has zero norm: TurboQuant encodes a direction and a norm, and a zero vector has no direction"
    )]
    ZeroVector,
    /// The vector's norm is outside [`MIN_NORM`]..=[`MAX_NORM`], where f32 scores stay exact.
    #[error(
        "the vector's norm ({norm:e}) is outside [1e-10, 1e15], the range Gyre scores without underflow or overflow: scale the vector (cosine similarity does not depend on its length)"
    )]
    NormOutOfRange {
        /// The norm computed in f64.
        norm: f64,
    },
    /// The bit width is outside 1..=8.
    #[error("unsupported bit width {bits}: TurboQuant codes use 1 to 8 bits per coordinate")]
    InvalidBits {
        /// The requested bits per coordinate.
        bits: u8,
    },
    /// The dimension cannot be used.
    #[error("unsupported dimension {dim}: {reason}")]
    InvalidDimension {
        /// The requested dimension.
        dim: usize,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A parameter of a call is out of range (k = 0, a buffer of the wrong size, ...).
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// The parameter's name as the API spells it.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A payload field or a filter condition on it is refused: an unknown field, a value of
    /// another type than the field holds, a malformed value.
    #[error("payload field {}: {reason}", clip(.field))]
    PayloadField {
        /// The field's name.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// No collection has this name.
    #[error("collection {} not found", clip(.name))]
    CollectionNotFound {
        /// The name asked for.
        name: String,
    },
    /// A collection with this name exists already.
    #[error("collection {} already exists{detail}", clip(.name))]
    CollectionExists {
        /// The name asked for.
        name: String,
        /// Extra context (for instance that its configuration differs), may be empty.
        detail: String,
    },
    /// No snapshot of this collection has this name.
    #[error("snapshot {} of collection {} not found", clip(.name), clip(.collection))]
    SnapshotNotFound {
        /// The collection the snapshot was asked of.
        collection: String,
        /// The snapshot's name.
        name: String,
    },
    /// A snapshot of this collection with this name exists already.
    #[error("snapshot {} of collection {} already exists", clip(.name), clip(.collection))]
    SnapshotExists {
        /// The collection.
        collection: String,
        /// The snapshot's name.
        name: String,
    },
    /// An operating-system I/O error on a file.
    #[error("I/O error on {path}: {message}")]
    Io {
        /// The file or directory.
        path: String,
        /// The operating system's message.
        message: String,
        /// The error's kind, for callers that branch on it.
        io_kind: std::io::ErrorKind,
    },
    /// A stored file failed a check.
    #[error("corrupt file {path}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: String,
        /// What check failed.
        reason: String,
    },
    /// A conditional write lost to another writer (an object that must be written once exists
    /// already, a manifest moved on, a lease is held).
    #[error("conflict on {key}: {detail}")]
    Conflict {
        /// The object or file that was raced for.
        key: String,
        /// What the other side did.
        detail: String,
    },
    /// Another process holds the data directory.
    #[error(
        "data directory {path} is locked by another process ({holder}); stop it or use another directory"
    )]
    Locked {
        /// The lock file.
        path: String,
        /// What the lock file says about its holder.
        holder: String,
    },
    /// A search was cancelled through its [`Cancel`](crate::Cancel) handle or ran past its
    /// deadline; it returned nothing.
    #[error("cancelled: {reason}")]
    Cancelled {
        /// Cancelled by the caller, or past the deadline.
        reason: &'static str,
    },
    /// An internal invariant broke (a poisoned lock, a panicked background thread).
    #[error("internal error: {reason}")]
    Internal {
        /// What broke.
        reason: String,
    },
}

impl Error {
    /// Who must act on this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::DimensionMismatch { .. }
            | Error::NonFinite { .. }
            | Error::ZeroVector
            | Error::NormOutOfRange { .. }
            | Error::InvalidBits { .. }
            | Error::InvalidDimension { .. }
            | Error::InvalidArgument { .. }
            | Error::PayloadField { .. } => ErrorKind::InvalidInput,
            Error::CollectionNotFound { .. } | Error::SnapshotNotFound { .. } => {
                ErrorKind::NotFound
            }
            Error::CollectionExists { .. } | Error::SnapshotExists { .. } => {
                ErrorKind::AlreadyExists
            }
            Error::Io { .. } => ErrorKind::Io,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Corrupt { .. } => ErrorKind::Corruption,
            Error::Locked { .. } => ErrorKind::Unavailable,
            Error::Internal { .. } => ErrorKind::Internal,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
        }
    }

    /// An I/O error on `path` (public for [`Directory`](crate::directory::Directory)
    /// implementations outside the engine).
    pub fn io(path: &std::path::Path, e: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
            io_kind: e.kind(),
        }
    }

    /// A failed check of the file at `path`.
    pub fn corrupt(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }

    /// A broken invariant.
    pub fn internal(reason: impl Into<String>) -> Self {
        Error::Internal {
            reason: reason.into(),
        }
    }

    /// A refused payload field.
    pub(crate) fn field(field: &str, reason: impl Into<String>) -> Self {
        Error::PayloadField {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_argument(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }
}

/// Checks that `v` has `dim` components, all finite.
pub(crate) fn check_vector(v: &[f32], dim: usize) -> Result<()> {
    if v.len() != dim {
        return Err(Error::DimensionMismatch {
            expected: dim,
            actual: v.len(),
        });
    }
    if let Some(index) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite {
            index,
            value: v[index],
        });
    }
    Ok(())
}

/// Longest part of a caller's value an error message repeats.
const CLIP: usize = 64;

/// `s` quoted for an error message, cut to its first [`CLIP`] characters (and its length)
/// when longer: a caller's megabyte of input never comes back in an error.
pub(crate) fn clip(s: &str) -> String {
    match s.char_indices().nth(CLIP) {
        None => format!("{s:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &s[..end], s.len()),
    }
}

/// Smallest L2 norm a stored vector or a query may have. Below it the f32 products of two
/// vectors' components fall into the subnormal range and scores lose their precision (a query
/// of 384 × 1e-25 found the wrong points); every real embedding is far above it.
pub const MIN_NORM: f64 = 1e-10;
/// Largest L2 norm a stored vector or a query may have: the f32 inner product and squared
/// distance of two such vectors stay below `f32::MAX`.
pub const MAX_NORM: f64 = 1e15;

/// Checks the L2 norm of a finite vector against [`MIN_NORM`]..=[`MAX_NORM`] (computed in f64,
/// so no finite input overflows or underflows here) and returns it. A zero vector is
/// [`Error::ZeroVector`] unless `allow_zero` (an L2 query: the distance to the origin is well
/// defined).
pub(crate) fn check_norm(v: &[f32], allow_zero: bool) -> Result<f64> {
    let norm = crate::kernels::squared_norm_f64(v).sqrt();
    if norm == 0.0 {
        return if allow_zero {
            Ok(0.0)
        } else {
            Err(Error::ZeroVector)
        };
    }
    if !(MIN_NORM..=MAX_NORM).contains(&norm) {
        return Err(Error::NormOutOfRange { norm });
    }
    Ok(norm)
}

/// Checks that `values` is a whole number of `dim`-long rows; `name` is the parameter's name.
pub(crate) fn check_rows(values: &[f32], dim: usize, name: &'static str) -> Result<()> {
    if dim == 0 || !values.len().is_multiple_of(dim) {
        return Err(Error::invalid_argument(
            name,
            format!(
                "{} floats is not a whole number of {dim}-dimensional rows",
                values.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_clipped_in_messages() {
        assert_eq!(clip("docs"), "\"docs\"");
        let long = "é".repeat(100_000);
        let msg = Error::CollectionNotFound { name: long.clone() }.to_string();
        assert!(msg.len() < 300, "{} bytes", msg.len());
        assert!(msg.contains("(200000 bytes)"), "{msg}");
        assert_eq!(clip(&"a".repeat(64)), format!("{:?}", "a".repeat(64)));
    }
}
