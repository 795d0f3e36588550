//! Errors of the runtime library: each variant says what a caller can do
//! about it (fix the request, the model file, the audio, the path).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request the model cannot serve as asked: `field` names the request
    /// field or option (`text`, `voice`, `language`, `temperature`, …).
    #[error("{field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },
    // The I/O error is part of the message rather than a `source`, so that
    // `{:#}` chains do not print it twice.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: not a valid GGUF file: {reason}")]
    InvalidGguf { path: PathBuf, reason: String },
    /// A readable file that is not what was asked for (wrong architecture,
    /// a tokenizer of another model, a voice of another model size).
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
    /// Audio that cannot be used: unreadable, unsupported, too short or too
    /// long. `what` names the file (or "audio" for samples in memory).
    #[error("{what}: {reason}")]
    BadAudio { what: String, reason: String },
    /// An output file that exists already and may not be replaced.
    #[error("{path}: already exists (use --force to overwrite)")]
    OutputExists { path: PathBuf },
    /// ggml failed to allocate or compute a graph (out of memory, most likely).
    #[error("computation failed: {0}")]
    Compute(String),
    /// The caller cancelled the generation (see `GenerateOptions::cancel`).
    #[error("cancelled")]
    Cancelled,
    /// A broken invariant of this library (a bug: please report it).
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidRequest {
            field,
            reason: reason.into(),
        }
    }

    pub fn bad_audio(what: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Error::BadAudio {
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}
