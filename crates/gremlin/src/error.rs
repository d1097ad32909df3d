//! Query errors: parse errors carry the position they refer to.

use std::fmt;

/// A parse or evaluation error. `position` is a byte offset in the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
    pub position: Option<usize>,
    /// The limit the evaluation hit, when that is why it stopped (see [`crate::Limits`]).
    pub limit: Option<LimitHit>,
}

/// Which limit stopped an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// More elements in a step's result than [`crate::Limits::max_elements`].
    Elements,
    /// Past [`crate::Limits::deadline`].
    Time,
    /// The client went away.
    Cancelled,
}

impl Error {
    /// An error about the text at byte offset `pos`.
    pub fn at(pos: usize, message: String) -> Self {
        Error {
            message,
            position: Some(pos),
            limit: None,
        }
    }

    /// An error not tied to a position (most evaluation errors).
    pub fn msg(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            position: None,
            limit: None,
        }
    }

    /// The evaluation stopped at a limit.
    pub fn limit(hit: LimitHit, message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            position: None,
            limit: Some(hit),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{} at column {}", self.message, p + 1),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
