//! `OPTECH_CLIENT_ID` and `OPTECH_CLIENT_SECRET`, from the environment or `.env`.
//!
//! Invariant: the secret is never logged or formatted (`Debug` redacts it).

use std::collections::HashMap;
use std::path::Path;

use thiserror::Error;

pub const CLIENT_ID: &str = "OPTECH_CLIENT_ID";
pub const CLIENT_SECRET: &str = "OPTECH_CLIENT_SECRET";
pub const CLIENT_SECRET_PREVIOUS: &str = "OPTECH_CLIENT_SECRET_PREVIOUS";

#[derive(Debug, Error)]
pub enum CredentialsError {
    #[error(
        "{CLIENT_SECRET} is not set. Set it in the environment \
         (export {CLIENT_SECRET}=...) or in a .env file in the working directory \
         (a line {CLIENT_SECRET}=...), using the secret from your OpTech account"
    )]
    MissingSecret,
    #[error("could not read {path}: {source}")]
    DotEnv {
        path: String,
        source: dotenvy::Error,
    },
}

#[derive(Clone)]
pub struct Credentials {
    /// Sent as `authorization: Basic <id>` with async deliveries; may be empty in sync-only setups.
    pub client_id: String,
    pub secret: String,
    /// Still accepted for inbound requests while a rotation is under way.
    pub previous_secret: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .field(
                "previous_secret",
                &self.previous_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Credentials {
    /// Signs with the current secret and still accepts the previous one.
    pub fn signer(&self) -> crate::signature::Signer {
        crate::signature::Signer::new(
            self.secret.as_bytes(),
            self.previous_secret.as_deref().map(str::as_bytes),
        )
    }

    /// Reads the process environment, then `dotenv` (if it exists) for what the environment lacks.
    pub fn load(dotenv: &Path) -> Result<Self, CredentialsError> {
        Self::from_env(&Environment::load(dotenv)?)
    }

    pub fn from_env(env: &Environment) -> Result<Self, CredentialsError> {
        Ok(Self {
            client_id: env.get(CLIENT_ID).unwrap_or_default(),
            secret: env
                .get(CLIENT_SECRET)
                .ok_or(CredentialsError::MissingSecret)?,
            previous_secret: env.get(CLIENT_SECRET_PREVIOUS),
        })
    }
}

/// Where settings from outside the config come from: the process environment,
/// then a `.env` file for what the environment lacks. An empty value counts as unset.
#[derive(Clone, Default)]
pub struct Environment {
    process: bool,
    file: HashMap<String, String>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("process", &self.process)
            .field("dotenv_names", &self.file.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Environment {
    /// The process environment and, if it exists, the `.env` file at `dotenv`.
    pub fn load(dotenv: &Path) -> Result<Self, CredentialsError> {
        Ok(Self {
            process: true,
            file: read_dotenv(dotenv)?,
        })
    }

    /// The process environment alone.
    pub fn process() -> Self {
        Self {
            process: true,
            file: HashMap::new(),
        }
    }

    /// Fixed values and nothing else, for tests.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            process: false,
            file: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.process
            .then(|| std::env::var(name).ok())
            .flatten()
            .or_else(|| self.file.get(name).cloned())
            .filter(|v| !v.is_empty())
    }
}

fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, CredentialsError> {
    match dotenvy::from_path_iter(path) {
        Ok(iter) => iter
            .collect::<Result<HashMap<_, _>, _>>()
            .map_err(|source| CredentialsError::DotEnv {
                path: path.display().to_string(),
                source,
            }),
        Err(e) if e.not_found() => Ok(HashMap::new()),
        Err(source) => Err(CredentialsError::DotEnv {
            path: path.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials {
            client_id: "id".into(),
            secret: "s3cr3t".into(),
            previous_secret: Some("0ld".into()),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("0ld"),
            "{shown}"
        );
    }

    #[test]
    fn dotenv_is_parsed_and_missing_file_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        assert!(read_dotenv(&path).unwrap().is_empty());
        std::fs::write(&path, "A=1\n# comment\nB=\"two words\"\n").unwrap();
        let vars = read_dotenv(&path).unwrap();
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
    }
}
