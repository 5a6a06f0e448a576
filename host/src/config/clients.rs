//! `[server]` keys that bound what one client may hold of the public
//! listener before it has proved anything: connections, the time to send a
//! request's headers and its body, the time to take an answer, and the body
//! bytes held by requests whose signature is not checked yet.
//!
//! The defaults are what a reverse proxy in front of a small JSON API would
//! pick: seconds, not minutes (the platform sends a whole request at once), and
//! room for thousands of idle connections.

use std::time::Duration;

use super::read::{Reader, Section};

/// Open connections on the public listener; past it a new one is answered 503 and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// To send a request's headers, and how long a keep-alive connection may sit idle.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// To send a request's body, from the end of its headers.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// For a client to take (read) any part of an answer.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Body bytes held at once by requests whose signature is not checked yet.
pub const DEFAULT_MAX_UNVERIFIED: u64 = 64 * 1024 * 1024;

pub(super) const KNOWN: &[&str] = &[
    "max_connections",
    "header_timeout",
    "body_timeout",
    "send_timeout",
    "max_unverified",
];

/// What a client may hold of the public listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    pub max_connections: usize,
    /// To send a request's headers (and a TLS handshake); also how long a
    /// keep-alive connection may wait for its next request.
    pub header_timeout: Duration,
    /// To send a whole body once the headers are in: past it, `408` and the
    /// connection is closed.
    pub body_timeout: Duration,
    /// The longest a write to the client may wait for it to read: past it the
    /// connection is closed.
    pub send_timeout: Duration,
    /// Body bytes held at once over all requests not yet verified: past it a
    /// request is answered 503 before more of its body is read.
    pub max_unverified: u64,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            max_unverified: DEFAULT_MAX_UNVERIFIED,
        }
    }
}

/// Reads the client limits of `[server]`; `max_body` is the largest body, which
/// `max_unverified` must hold at least.
pub(super) fn read(reader: &mut Reader<'_>, section: &Section<'_>, max_body: u64) -> ClientLimits {
    let max_connections = section
        .count(reader, "max_connections", 1, "")
        .map_or(DEFAULT_MAX_CONNECTIONS, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    let max_unverified = section
        .size(reader, "max_unverified")
        .unwrap_or(DEFAULT_MAX_UNVERIFIED);
    if max_unverified < max_body {
        let span = section.get("max_unverified").and_then(|(_, span)| span);
        reader.problem(
            section.key("max_unverified"),
            span,
            format!(
                "must be at least max_body ({max_body} bytes): a request of the largest \
                 size allowed could never be read"
            ),
        );
    }
    ClientLimits {
        max_connections,
        header_timeout: section.duration(reader, "header_timeout", DEFAULT_HEADER_TIMEOUT),
        body_timeout: section.duration(reader, "body_timeout", DEFAULT_BODY_TIMEOUT),
        send_timeout: section.duration(reader, "send_timeout", DEFAULT_SEND_TIMEOUT),
        max_unverified,
    }
}
