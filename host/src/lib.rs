//! optech: a host for OpTech data requests, answered by sandboxed WebAssembly plugins.
//!
//! See ARCHITECTURE.md for the map of these modules.

pub mod build;
pub mod cli;
pub mod config;
pub mod console;
pub mod credentials;
pub mod delivery;
pub mod dev_watch;
pub mod dispatch;
pub mod host;
pub mod jobs;
pub mod link;
pub mod loader;
pub mod logging;
pub mod metrics;
mod migrations;
pub mod outbound;
pub mod outbox;
pub mod protocol;
pub mod rebinding;
pub mod recent;
pub mod redact;
pub mod registry;
pub mod reload;
pub mod request_id;
pub mod router;
pub mod runtime;
pub mod server;
pub mod signature;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use host::{Host, Identity};
