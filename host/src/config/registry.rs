//! How the host talks to OCI registries: the `[server]` keys that bound a pull
//! (`max_artifact_size`, `pull_timeout`, `max_concurrent_pulls`), the registries
//! reached over plain HTTP (`insecure_registries`), and the login read from
//! `OPTECH_REGISTRY_USERNAME` / `OPTECH_REGISTRY_PASSWORD`.

use std::fmt;
use std::time::Duration;

use super::read::{Reader, Section};
use crate::credentials::Environment;

pub const KNOWN: &[&str] = &[
    "insecure_registries",
    "max_artifact_size",
    "pull_timeout",
    "max_concurrent_pulls",
];

/// A TypeScript or Python component is 12-18 MB; four times that leaves room.
pub const DEFAULT_MAX_ARTIFACT_SIZE: u64 = 64 << 20;
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_MAX_CONCURRENT_PULLS: usize = 2;
pub const USERNAME_ENV: &str = "OPTECH_REGISTRY_USERNAME";
pub const PASSWORD_ENV: &str = "OPTECH_REGISTRY_PASSWORD";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Registries (`host` or `host:port`, as a reference writes them) reached
    /// over plain HTTP; every other one over HTTPS.
    pub insecure: Vec<String>,
    /// The largest layer a pull accepts, declared or streamed.
    pub max_artifact_size: u64,
    /// The longest a whole pull (manifest and layer) may take.
    pub pull_timeout: Duration,
    /// Layer downloads at once, over all plugins.
    pub max_concurrent_pulls: usize,
    /// From the environment; used for every registry, before the Docker config.
    pub login: Option<Login>,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            insecure: Vec::new(),
            max_artifact_size: DEFAULT_MAX_ARTIFACT_SIZE,
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            max_concurrent_pulls: DEFAULT_MAX_CONCURRENT_PULLS,
            login: None,
        }
    }
}

/// A registry user name and password. The password is never formatted.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    password: String,
}

impl Login {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Login({:?}, <password from ${PASSWORD_ENV}>)",
            self.username
        )
    }
}

pub(super) fn read(
    reader: &mut Reader<'_>,
    section: &Section<'_>,
    env: &Environment,
) -> RegistrySettings {
    let mut insecure = Vec::new();
    for (entry, span) in section.strings(reader, "insecure_registries") {
        let valid = !entry.is_empty()
            && !entry.contains("://")
            && !entry.contains('/')
            && entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if valid {
            insecure.push(entry);
        } else {
            reader.problem(
                section.key("insecure_registries"),
                span,
                format!("{entry:?} is not a registry like \"127.0.0.1:5000\" or \"registry.internal\" (no scheme, no path)"),
            );
        }
    }
    let max_artifact_size = section
        .size(reader, "max_artifact_size")
        .unwrap_or(DEFAULT_MAX_ARTIFACT_SIZE);
    let max_concurrent_pulls = section
        .count(reader, "max_concurrent_pulls", 1, "")
        .map_or(DEFAULT_MAX_CONCURRENT_PULLS, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    let login = match (env.get(USERNAME_ENV), env.get(PASSWORD_ENV)) {
        (Some(user), Some(password)) => Some(Login::new(user, password)),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            reader.problem(
                "environment",
                None,
                format!("{USERNAME_ENV} and {PASSWORD_ENV} must be set together"),
            );
            None
        }
    };
    RegistrySettings {
        insecure,
        max_artifact_size,
        pull_timeout: section.duration(reader, "pull_timeout", DEFAULT_PULL_TIMEOUT),
        max_concurrent_pulls,
        login,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_formatted() {
        let login = Login::new("ci", "hunter2-registry");
        let shown = format!("{login:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("ci"), "{shown}");
    }
}
