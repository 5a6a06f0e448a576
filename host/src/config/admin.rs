//! `[server] admin_token`, `console_requests` and `console_payloads`: who may
//! use the admin listener, and what its console keeps.

use std::fmt;

use super::read::{Reader, Section};
use crate::credentials::Environment;

/// Requests the console remembers by default.
pub const DEFAULT_CONSOLE_REQUESTS: usize = 1_000;
/// The most the console may be asked to remember (each entry is a few hundred
/// bytes, up to about 10 KiB with log lines).
pub const MAX_CONSOLE_REQUESTS: usize = 100_000;
/// A token shorter than this is too easy to guess.
pub const MIN_ADMIN_TOKEN: usize = 16;

pub(super) const KNOWN: &[&str] = &["admin_token", "console_requests", "console_payloads"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// When set, every admin route needs `authorization: Bearer <token>` (or
    /// the console's cookie made from it).
    pub token: Option<AdminToken>,
    /// Requests the console remembers (a ring: the oldest goes first); 0 keeps none.
    pub console_requests: usize,
    /// Keep each request's inputs and data (known secret values redacted).
    pub console_payloads: bool,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            token: None,
            console_requests: DEFAULT_CONSOLE_REQUESTS,
            console_payloads: false,
        }
    }
}

/// The admin token, from the environment: never formatted.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, to compare a caller's with.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<admin token>")
    }
}

/// Reads the admin keys of `[server]`. The token is only `{ env = "NAME" }`,
/// so it stays out of the file; a problem never shows its value.
pub(super) fn read(
    reader: &mut Reader<'_>,
    section: &Section<'_>,
    env: &Environment,
) -> AdminSettings {
    let mut token = None;
    if let Some((item, span)) = section.get("admin_token") {
        let key = section.key("admin_token");
        let var = item
            .as_table_like()
            .filter(|t| t.len() == 1)
            .and_then(|t| t.get("env"))
            .and_then(|v| v.as_str());
        match var {
            None => reader.problem(
                key,
                span,
                "must be { env = \"NAME\" }: keep the token out of the file",
            ),
            Some(var) => match env.get(var) {
                None => reader.problem(
                    key,
                    span,
                    format!("environment variable {var} is not set (nor in .env)"),
                ),
                Some(value) if value.chars().count() < MIN_ADMIN_TOKEN => reader.problem(
                    key,
                    span,
                    format!(
                        "${var} is shorter than {MIN_ADMIN_TOKEN} characters: too easy to guess"
                    ),
                ),
                Some(value) => token = Some(AdminToken::new(value)),
            },
        }
    }
    let console_requests = section
        .count(reader, "console_requests", 0, "")
        .map_or(DEFAULT_CONSOLE_REQUESTS, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    if console_requests > MAX_CONSOLE_REQUESTS {
        let span = section.get("console_requests").and_then(|(_, span)| span);
        reader.problem(
            section.key("console_requests"),
            span,
            format!("must be at most {MAX_CONSOLE_REQUESTS} (0 keeps none)"),
        );
    }
    AdminSettings {
        token,
        console_requests: console_requests.min(MAX_CONSOLE_REQUESTS),
        console_payloads: section.bool(reader, "console_payloads", false),
    }
}
