//! Who the host is to a registry: `OPTECH_REGISTRY_USERNAME`/`_PASSWORD` when
//! set (and `OPTECH_REGISTRY_SERVER`, if set, names the registry), else what
//! the Docker config file (`$DOCKER_CONFIG/config.json`, or
//! `~/.docker/config.json`) holds for that registry, its credential helpers
//! included, else nobody (anonymous).
//!
//! Invariant: a password or token is never logged or put in an error.

use std::time::Duration;

use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;

use crate::config::Login;

/// A credential helper is a program the Docker config names; it may hang.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a registry's credentials came from, for logs and `optech check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Environment,
    DockerConfig,
    Anonymous,
}

impl CredentialSource {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Environment => "OPTECH_REGISTRY_USERNAME/OPTECH_REGISTRY_PASSWORD",
            Self::DockerConfig => "the Docker config file",
            Self::Anonymous => "anonymous",
        }
    }
}

/// The credentials for `registry` (as a reference writes it, `host[:port]`).
pub async fn credentials(
    registry: &str,
    login: Option<&Login>,
) -> (RegistryAuth, CredentialSource) {
    if let Some(auth) = from_environment(registry, login) {
        return (auth, CredentialSource::Environment);
    }
    // Docker keys Docker Hub's entry by its old v1 URL.
    let server = match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".to_string()
        }
        other => other.to_string(),
    };
    let lookup = tokio::task::spawn_blocking(move || docker_credential::get_credential(&server));
    match tokio::time::timeout(HELPER_TIMEOUT, lookup).await {
        Ok(Ok(Ok(DockerCredential::UsernamePassword(user, password)))) => (
            RegistryAuth::Basic(user, password),
            CredentialSource::DockerConfig,
        ),
        Ok(Ok(Ok(DockerCredential::IdentityToken(_)))) => {
            tracing::warn!(
                registry,
                "the Docker config holds an identity token for this registry, which optech \
                 cannot use; pulling anonymously (set OPTECH_REGISTRY_USERNAME/_PASSWORD)"
            );
            (RegistryAuth::Anonymous, CredentialSource::Anonymous)
        }
        Ok(Ok(Err(
            CredentialRetrievalError::ConfigNotFound
            | CredentialRetrievalError::ConfigReadError
            | CredentialRetrievalError::NoCredentialConfigured,
        ))) => (RegistryAuth::Anonymous, CredentialSource::Anonymous),
        Ok(Ok(Err(CredentialRetrievalError::HelperFailure { helper, .. }))) => {
            // The helper's output may hold a secret: only its name is logged.
            tracing::warn!(
                registry,
                "the Docker credential helper `{helper}` failed; pulling anonymously"
            );
            (RegistryAuth::Anonymous, CredentialSource::Anonymous)
        }
        Ok(Ok(Err(e))) => {
            tracing::warn!(
                registry,
                "the Docker config's credentials: {e}; pulling anonymously"
            );
            (RegistryAuth::Anonymous, CredentialSource::Anonymous)
        }
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(
                registry,
                "the Docker credential lookup did not finish within {HELPER_TIMEOUT:?}; pulling anonymously"
            );
            (RegistryAuth::Anonymous, CredentialSource::Anonymous)
        }
    }
}

/// The environment's login, if it is for `registry`.
fn from_environment(registry: &str, login: Option<&Login>) -> Option<RegistryAuth> {
    let login = login.filter(|l| l.applies_to(registry))?;
    Some(RegistryAuth::Basic(
        login.username.clone(),
        login.password().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_environment_comes_first() {
        let login = Login::new("ci", "from-env");
        let (auth, source) = credentials("registry.example.com", Some(&login)).await;
        assert_eq!(source, CredentialSource::Environment);
        assert!(
            matches!(auth, RegistryAuth::Basic(user, password) if user == "ci" && password == "from-env")
        );
    }

    #[test]
    fn a_login_for_another_registry_is_not_sent() {
        let login = Login::new("ci", "from-env").for_servers(vec!["registry.example.com".into()]);
        assert!(from_environment("ghcr.io", Some(&login)).is_none());
        assert!(from_environment("registry.example.com", Some(&login)).is_some());
    }
}
