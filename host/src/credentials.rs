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
    /// Reads the process environment, then `dotenv` (if it exists) for what the environment lacks.
    pub fn load(dotenv: &Path) -> Result<Self, CredentialsError> {
        let file = read_dotenv(dotenv)?;
        let lookup = |name: &str| {
            std::env::var(name)
                .ok()
                .or_else(|| file.get(name).cloned())
                .filter(|v| !v.is_empty())
        };
        Ok(Self {
            client_id: lookup(CLIENT_ID).unwrap_or_default(),
            secret: lookup(CLIENT_SECRET).ok_or(CredentialsError::MissingSecret)?,
            previous_secret: lookup(CLIENT_SECRET_PREVIOUS),
        })
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
