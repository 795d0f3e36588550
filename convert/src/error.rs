//! The converter's error: a message with an optional cause, so that `{:#}`
//! prints the whole chain ("context: cause: ...").

use std::fmt;

/// A conversion error.
#[derive(Debug)]
pub struct Error {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with `message` and no cause.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string(),
            source: None,
        }
    }

    fn with_source(
        message: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            message: message.to_string(),
            source: Some(Box::new(source)),
        }
    }
}

impl fmt::Display for Error {
    /// `{}`: this error's message; `{:#}`: it and every cause, `: `-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if f.alternate() {
            let mut cause = std::error::Error::source(self);
            while let Some(e) = cause {
                write!(f, ": {e}")?;
                cause = e.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<qwen3_tts::Error> for Error {
    fn from(e: qwen3_tts::Error) -> Self {
        // The runtime's errors carry their path in the message.
        Error {
            message: e.to_string(),
            source: None,
        }
    }
}

/// Adds context to errors, as `anyhow::Context` does.
pub trait Context<T> {
    fn context(self, message: impl fmt::Display) -> Result<T>;
    fn with_context<M: fmt::Display>(self, message: impl FnOnce() -> M) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for Result<T, E> {
    fn context(self, message: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::with_source(message, e))
    }
    fn with_context<M: fmt::Display>(self, message: impl FnOnce() -> M) -> Result<T> {
        self.map_err(|e| Error::with_source(message(), e))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, message: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::msg(message))
    }
    fn with_context<M: fmt::Display>(self, message: impl FnOnce() -> M) -> Result<T> {
        self.ok_or_else(|| Error::msg(message()))
    }
}

/// Returns early with an [`Error`] formatted like `format!`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::msg(format!($($arg)*)))
    };
}
pub(crate) use bail;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternate_display_prints_the_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Err::<(), _>(io).context("reading a.json").unwrap_err();
        let e = Err::<(), _>(e).context("converting").unwrap_err();
        assert_eq!(e.to_string(), "converting");
        assert_eq!(format!("{e:#}"), "converting: reading a.json: no such file");
        let e = None::<u8>
            .with_context(|| format!("missing {}", 3))
            .unwrap_err();
        assert_eq!(format!("{e:#}"), "missing 3");
    }
}
