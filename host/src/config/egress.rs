//! A plugin's outbound HTTP settings: `allowed_hosts`, `http_timeout`,
//! `max_http_response`, `max_http_in_flight`.

use super::read::{Reader, Section};
use crate::outbound::allowlist::{AllowedHost, Allowlist};
pub use crate::outbound::settings::{
    DEFAULT_HTTP_TIMEOUT, DEFAULT_MAX_HTTP_IN_FLIGHT, DEFAULT_MAX_HTTP_RESPONSE, EgressSettings,
};

/// The keys of `[plugins.NAME]` read here.
pub(super) const KNOWN: &[&str] = &[
    "allowed_hosts",
    "http_timeout",
    "max_http_response",
    "max_http_in_flight",
];

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
