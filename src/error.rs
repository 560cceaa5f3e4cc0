//! One error type for the whole crate. Each kind maps to one negative
//! `evr_status` in the C ABI, so the kind is part of the contract; the
//! message is for humans and names what was wrong.

use std::fmt;

/// What class of problem an [`Error`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Input bytes are not valid UTF-8.
    InvalidUtf8,
    /// Input is not valid JSON.
    InvalidJson,
    /// A subscription (or unsubscription) request was refused.
    InvalidSubscription,
    /// A Redis channel name is not one evroute knows.
    InvalidChannel,
    /// An event or channel message is well-formed JSON but not a valid event.
    InvalidEvent,
    /// An event is above the engine's `max_event_bytes`.
    TooLarge,
    /// An engine or subscriber configuration value is wrong.
    InvalidConfig,
    /// An operating-system call failed (for example creating a readiness fd).
    Io,
    /// An event id given to resume is not `<epoch>:<seq>`.
    InvalidId,
}

/// An error with its kind and a message that names the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn json(message: impl fmt::Display) -> Self {
        Error::new(ErrorKind::InvalidJson, format!("invalid JSON: {message}"))
    }

    pub(crate) fn utf8(err: std::str::Utf8Error) -> Self {
        Error::new(ErrorKind::InvalidUtf8, format!("invalid UTF-8 at byte {}", err.valid_up_to()))
    }

    pub(crate) fn event(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidEvent, message)
    }

    pub(crate) fn subscription(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidSubscription, message)
    }

    pub(crate) fn channel(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidChannel, message)
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidConfig, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
