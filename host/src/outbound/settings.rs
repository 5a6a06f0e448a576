//! What one plugin's outbound HTTP runs under, and the defaults. Defined
//! here, beside what enforces it; `config` reads it from `[plugins.NAME]`.

use std::time::Duration;

use super::allowlist::Allowlist;

pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_HTTP_RESPONSE: u64 = 4 * 1024 * 1024;
pub const DEFAULT_MAX_HTTP_IN_FLIGHT: usize = 16;

/// What one plugin's requests run under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSettings {
    pub allowed_hosts: Allowlist,
    pub timeout: Duration,
    pub max_response: u64,
    pub max_in_flight: usize,
}

impl Default for EgressSettings {
    /// Nothing allowed; the default limits.
    fn default() -> Self {
        Self {
            allowed_hosts: Allowlist::default(),
            timeout: DEFAULT_HTTP_TIMEOUT,
            max_response: DEFAULT_MAX_HTTP_RESPONSE,
            max_in_flight: DEFAULT_MAX_HTTP_IN_FLIGHT,
        }
    }
}
