//! Errors of the runtime library.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The I/O error is part of the message rather than a `source`, so that
    // `{:#}` chains do not print it twice.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: not a valid GGUF file: {reason}")]
    InvalidGguf { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    WrongModel { path: PathBuf, reason: String },
    #[error("{path}: metadata key '{key}': {reason}")]
    Metadata {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("{path}: tensor '{name}': {reason}")]
    Tensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
}
