//! The seam between the HTTP pipeline and whatever runs a handler.
//!
//! The server only knows [`Handler`]: the WebAssembly runtime implements it,
//! and so can a native handler (the benchmark's baseline) or a test double.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use thiserror::Error;

use crate::protocol::Fields;

/// One call of a handler.
#[derive(Debug, Clone)]
pub struct Call {
    /// Tags the handler's log lines; unique per host process.
    pub request_id: u64,
    pub key: String,
    pub inputs: Fields,
}

/// Why a handler produced no data. Each kind has its own status and error code.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum HandlerError {
    /// The handler refused the inputs.
    #[error("{0}")]
    InvalidInput(String),
    /// The handler reported a failure of its own.
    #[error("{0}")]
    Failed(String),
    /// The handler crashed: a trap, a panic, an out-of-memory abort.
    #[error("the plugin crashed: {0}")]
    Trapped(String),
    /// The handler ran past its deadline and was stopped.
    #[error("the plugin did not finish within {0:?}")]
    TimedOut(Duration),
    /// The handler's answer is bigger than the plugin's `max_output`.
    #[error("the plugin's answer is {size} bytes, over its limit of {limit} bytes")]
    OutputTooLarge { size: u64, limit: u64 },
    /// No instance could be made right now (all instance slots are busy).
    #[error("no capacity to run the plugin: {0}")]
    Unavailable(String),
}

impl HandlerError {
    /// The snake_case `code` of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "invalid_input",
            Self::Failed(_) => "plugin_error",
            Self::Trapped(_) => "plugin_trapped",
            Self::TimedOut(_) => "plugin_timeout",
            Self::OutputTooLarge { .. } => "output_too_large",
            Self::Unavailable(_) => "overloaded",
        }
    }
}

pub type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Fields, HandlerError>> + Send + 'a>>;

/// Something that answers data requests.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, call: Call) -> HandlerFuture<'_>;
}

static NEXT_REQUEST_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A process-wide unique id, to tag one request's log lines.
pub fn next_request_id() -> u64 {
    NEXT_REQUEST_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
