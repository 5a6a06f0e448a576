//! A plugin's outbound HTTP settings: `allowed_hosts`, `http_timeout`,
//! `max_http_response`, `max_http_in_flight`.

use std::time::Duration;

use super::read::{Reader, Section};
use crate::outbound::allowlist::{AllowedHost, Allowlist};

pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_HTTP_RESPONSE: u64 = 4 * 1024 * 1024;
pub const DEFAULT_MAX_HTTP_IN_FLIGHT: usize = 16;

/// The keys of `[plugins.NAME]` read here.
pub(super) const KNOWN: &[&str] = &[
    "allowed_hosts",
    "http_timeout",
    "max_http_response",
    "max_http_in_flight",
];

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

pub(super) fn read(reader: &mut Reader<'_>, section: &Section<'_>) -> EgressSettings {
    let mut allowed = Vec::new();
    for (entry, span) in section.strings(reader, "allowed_hosts") {
        match AllowedHost::parse(&entry) {
            Ok(host) => allowed.push(host),
            Err(why) => reader.problem(
                section.key("allowed_hosts"),
                span,
                format!("{entry:?}: {why}"),
            ),
        }
    }
    EgressSettings {
        allowed_hosts: Allowlist::new(allowed),
        timeout: section.duration(reader, "http_timeout", DEFAULT_HTTP_TIMEOUT),
        max_response: section
            .size(reader, "max_http_response")
            .unwrap_or(DEFAULT_MAX_HTTP_RESPONSE),
        max_in_flight: section
            .count(reader, "max_http_in_flight", 1, "")
            .map_or(DEFAULT_MAX_HTTP_IN_FLIGHT, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
    }
}
