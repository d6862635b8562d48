//! Errors of the dataset readers: every one names the file it is about.

use std::path::{Path, PathBuf};

/// Result alias for dataset operations.
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;

/// What went wrong reading or writing a dataset file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file's contents do not follow its format (truncated, wrong header, inconsistent).
    #[error("{path}: malformed {format} file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The format it was read as.
        format: &'static str,
        /// What is wrong, with the byte offset where it helps.
        reason: String,
    },
    /// The file is valid but uses something Gyre does not read (another dtype, Fortran order).
    #[error("{path}: unsupported {format} file: {reason}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The format it was read as.
        format: &'static str,
        /// What is not supported.
        reason: String,
    },
    /// The engine refused the data (a NaN in a vector, a zero vector under the angular
    /// distance, ...).
    #[error(transparent)]
    Engine(#[from] Box<EngineError>),
}

/// An engine error met while computing on a dataset (ground truth).
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct EngineError {
    /// What was being done.
    pub context: String,
    /// The engine's error.
    #[source]
    pub source: gyre::Error,
}

impl DatasetError {
    /// Wraps an engine error with what was being done.
    pub fn engine(context: impl Into<String>, source: gyre::Error) -> Self {
        DatasetError::Engine(Box::new(EngineError {
            context: context.into(),
            source,
        }))
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DatasetError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// `path` does not follow `format`.
    pub fn malformed(path: &Path, format: &'static str, reason: impl Into<String>) -> Self {
        DatasetError::Malformed {
            path: path.to_path_buf(),
            format,
            reason: reason.into(),
        }
    }

    /// `path` uses something of `format` that Gyre does not read or write.
    pub fn unsupported(path: &Path, format: &'static str, reason: impl Into<String>) -> Self {
        DatasetError::Unsupported {
            path: path.to_path_buf(),
            format,
            reason: reason.into(),
        }
    }
}
