//! Lines for the host's log, tagged by the host with the plugin and the request.

use crate::bindings::optech::plugin::host::{self, Level};

pub fn trace(message: &str) {
    host::log(Level::Trace, message);
}
pub fn debug(message: &str) {
    host::log(Level::Debug, message);
}
pub fn info(message: &str) {
    host::log(Level::Info, message);
}
pub fn warn(message: &str) {
    host::log(Level::Warn, message);
}
pub fn error(message: &str) {
    host::log(Level::Error, message);
}
