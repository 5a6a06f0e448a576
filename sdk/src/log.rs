//! Lines for the host's log, tagged by the host with the plugin and the request.
//!
//! Outside the host (a handler's unit tests on the build machine) they go to
//! stderr, so tests of a handler that logs run as they are.

#[cfg(target_arch = "wasm32")]
use crate::bindings::optech::plugin::host::{self, Level};

/// A line at `trace` level: the finest detail, off unless an operator asks.
pub fn trace(message: &str) {
    write(Severity::Trace, message);
}

/// A line at `debug` level.
pub fn debug(message: &str) {
    write(Severity::Debug, message);
}

/// A line at `info` level.
pub fn info(message: &str) {
    write(Severity::Info, message);
}

/// A line at `warn` level: something an operator should look at.
pub fn warn(message: &str) {
    write(Severity::Warn, message);
}

/// A line at `error` level.
pub fn error(message: &str) {
    write(Severity::Error, message);
}

#[derive(Debug, Clone, Copy)]
enum Severity {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[cfg(target_arch = "wasm32")]
fn write(severity: Severity, message: &str) {
    let level = match severity {
        Severity::Trace => Level::Trace,
        Severity::Debug => Level::Debug,
        Severity::Info => Level::Info,
        Severity::Warn => Level::Warn,
        Severity::Error => Level::Error,
    };
    host::log(level, message);
}

#[cfg(not(target_arch = "wasm32"))]
fn write(severity: Severity, message: &str) {
    eprintln!("[{severity:?}] {message}");
}
