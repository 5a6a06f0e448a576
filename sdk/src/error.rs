use std::fmt;

use crate::bindings::optech::plugin::types::Error as WitError;

/// Why a handler produced no data; the host turns it into a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The inputs are wrong (missing, malformed, out of range): answered 400 `invalid_input`.
    InvalidInput(String),
    /// The handler could not do its job: answered 500 `plugin_error`.
    Failed(String),
}

impl Error {
    /// The request's inputs are wrong; retrying the same request will not help.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// The handler failed for a reason other than its inputs.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    pub(crate) fn into_wit(self) -> WitError {
        match self {
            Self::InvalidInput(m) => WitError::InvalidInput(m),
            Self::Failed(m) => WitError::Failed(m),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for Error {}
