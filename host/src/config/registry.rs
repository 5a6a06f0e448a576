//! How the host talks to OCI registries: the `[server]` keys that bound a pull
//! (`max_artifact_size`, `pull_timeout`, `max_concurrent_pulls`), the registries
//! reached over plain HTTP (`insecure_registries`), the certificate authorities
//! trusted besides the public ones (`registry_ca`), and the login read from
//! `OPTECH_REGISTRY_USERNAME` / `OPTECH_REGISTRY_PASSWORD`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::read::{Reader, Section};
use crate::credentials::Environment;

pub const KNOWN: &[&str] = &[
    "insecure_registries",
    "max_artifact_size",
    "pull_timeout",
    "max_concurrent_pulls",
    "registry_ca",
];

/// A TypeScript or Python component is 12-18 MB; four times that leaves room.
pub const DEFAULT_MAX_ARTIFACT_SIZE: u64 = 64 << 20;
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_MAX_CONCURRENT_PULLS: usize = 2;
pub const USERNAME_ENV: &str = "OPTECH_REGISTRY_USERNAME";
pub const PASSWORD_ENV: &str = "OPTECH_REGISTRY_PASSWORD";
/// The registries (`host[:port]`, comma-separated) the login is for; unset, every one.
pub const SERVER_ENV: &str = "OPTECH_REGISTRY_SERVER";

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
    /// From the environment; used before the Docker config, for the
    /// registries it names (every one when it names none).
    pub login: Option<Login>,
    /// Certificate authorities trusted for registries besides the public ones
    /// (a registry behind a private CA), read at load.
    pub ca: Option<CaBundle>,
}

/// The certificates of a `registry_ca` PEM file, each as DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub path: PathBuf,
    pub certificates: Vec<Vec<u8>>,
}

impl CaBundle {
    /// Reads every certificate in the PEM file at `path`; an error says why
    /// there is none to trust.
    pub fn read(path: &Path) -> Result<Self, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .map(|cert| cert.map(|der| der.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{} is not a PEM file of certificates: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "{} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
                path.display()
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            certificates,
        })
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            insecure: Vec::new(),
            max_artifact_size: DEFAULT_MAX_ARTIFACT_SIZE,
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            max_concurrent_pulls: DEFAULT_MAX_CONCURRENT_PULLS,
            login: None,
            ca: None,
        }
    }
}

/// A registry user name and password, and the registries they are for. The
/// password is never formatted.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    password: String,
    /// `host[:port]` as references write them; empty: every registry.
    pub servers: Vec<String>,
}

impl Login {
    /// A login for every registry.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            servers: Vec::new(),
        }
    }

    /// The same login, only for `servers`.
    pub fn for_servers(mut self, servers: Vec<String>) -> Self {
        self.servers = servers;
        self
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Whether this login is sent to `registry` (`host[:port]`): a password
    /// meant for one registry is never offered to another when servers are named.
    pub fn applies_to(&self, registry: &str) -> bool {
        self.servers.is_empty()
            || self
                .servers
                .iter()
                .any(|server| canonical(server).eq_ignore_ascii_case(canonical(registry)))
    }
}

/// Docker Hub goes by several names (host names are compared without case).
fn canonical(registry: &str) -> &str {
    const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    if DOCKER_HUB
        .iter()
        .any(|name| name.eq_ignore_ascii_case(registry))
    {
        "docker.io"
    } else {
        registry
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Login({:?}, <password from ${PASSWORD_ENV}>, {:?})",
            self.username, self.servers
        )
    }
}

/// Whether `entry` is a registry as a reference writes it: `host` or
/// `host:port`, no scheme, no path.
fn is_registry_name(entry: &str) -> bool {
    !entry.is_empty()
        && !entry.contains("://")
        && !entry.contains('/')
        && entry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// The login `OPTECH_REGISTRY_USERNAME`, `_PASSWORD` and `_SERVER` give, if
/// any; or every problem with them.
pub fn login(env: &Environment) -> Result<Option<Login>, Vec<String>> {
    let mut problems = Vec::new();
    let servers: Vec<String> = env
        .get(SERVER_ENV)
        .map(|list| {
            list.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    // Set but blank (an empty Secret key) must not mean "every registry".
    if env.get(SERVER_ENV).is_some() && servers.is_empty() {
        problems.push(format!(
            "{SERVER_ENV} is set but names no registry (leave it out to use the login for every one)"
        ));
    }
    for server in servers.iter().filter(|s| !is_registry_name(s)) {
        problems.push(format!(
            "{SERVER_ENV}: {server:?} is not a registry like \"registry.example.com\" or \"127.0.0.1:5000\" (no scheme, no path)"
        ));
    }
    let login = match (env.get(USERNAME_ENV), env.get(PASSWORD_ENV)) {
        (Some(user), Some(password)) => Some(Login::new(user, password).for_servers(servers)),
        (None, None) => {
            if !servers.is_empty() {
                problems.push(format!(
                    "{SERVER_ENV} is set without {USERNAME_ENV} and {PASSWORD_ENV}"
                ));
            }
            None
        }
        (Some(_), None) | (None, Some(_)) => {
            problems.push(format!(
                "{USERNAME_ENV} and {PASSWORD_ENV} must be set together"
            ));
            None
        }
    };
    if problems.is_empty() {
        Ok(login)
    } else {
        Err(problems)
    }
}

pub(super) fn read(
    reader: &mut Reader<'_>,
    section: &Section<'_>,
    base: &Path,
    env: &Environment,
) -> RegistrySettings {
    let mut insecure = Vec::new();
    for (entry, span) in section.strings(reader, "insecure_registries") {
        if is_registry_name(&entry) {
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
    let login = match login(env) {
        Ok(login) => login,
        Err(problems) => {
            for problem in problems {
                reader.problem("environment", None, problem);
            }
            None
        }
    };
    let ca = section
        .string(reader, "registry_ca")
        .and_then(|(path, span)| match CaBundle::read(&base.join(path)) {
            Ok(bundle) => Some(bundle),
            Err(message) => {
                reader.problem(section.key("registry_ca"), span, message);
                None
            }
        });
    RegistrySettings {
        insecure,
        max_artifact_size,
        pull_timeout: section.duration(reader, "pull_timeout", DEFAULT_PULL_TIMEOUT),
        max_concurrent_pulls,
        login,
        ca,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_holds_every_certificate_of_its_file_or_says_why_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pem: String = (0..2)
            .map(|_| {
                let key = rcgen::KeyPair::generate().expect("key");
                let params =
                    rcgen::CertificateParams::new(vec!["ca.internal".to_string()]).expect("params");
                params.self_signed(&key).expect("certificate").pem()
            })
            .collect();
        let bundle_path = dir.path().join("bundle.pem");
        std::fs::write(&bundle_path, pem).expect("writing");
        let bundle = CaBundle::read(&bundle_path).expect("a bundle");
        assert_eq!(bundle.certificates.len(), 2);

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("writing");
        let error = CaBundle::read(&empty).expect_err("no certificate");
        assert!(error.contains("no PEM certificate"), "{error}");

        let missing = dir.path().join("missing.pem");
        let error = CaBundle::read(&missing).expect_err("no file");
        assert!(
            error.contains("cannot read") && error.contains("missing.pem"),
            "{error}"
        );
    }

    #[test]
    fn a_login_for_named_servers_is_offered_to_those_only() {
        let everywhere = Login::new("ci", "pw");
        assert!(everywhere.applies_to("ghcr.io"));
        let scoped = Login::new("ci", "pw")
            .for_servers(vec!["registry.example.com".into(), "docker.io".into()]);
        assert!(scoped.applies_to("registry.example.com"));
        assert!(
            scoped.applies_to("index.docker.io"),
            "Docker Hub by another name"
        );
        assert!(!scoped.applies_to("ghcr.io"));
        assert!(
            !scoped.applies_to("registry.example.com:5000"),
            "another port"
        );
        assert!(
            scoped.applies_to("Registry.Example.com"),
            "host names have no case"
        );
    }

    #[test]
    fn the_login_is_read_with_the_servers_it_is_for_and_mistakes_are_said() {
        let env =
            |pairs: &[(&'static str, &'static str)]| Environment::from_pairs(pairs.iter().copied());
        let user = (USERNAME_ENV, "ci");
        let password = (PASSWORD_ENV, "pw");
        assert_eq!(login(&env(&[])), Ok(None));
        let everywhere = login(&env(&[user, password])).unwrap().unwrap();
        assert!(everywhere.servers.is_empty());
        let scoped = login(&env(&[
            user,
            password,
            (SERVER_ENV, "r.example, 127.0.0.1:5000"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(scoped.servers, ["r.example", "127.0.0.1:5000"]);

        let problems = login(&env(&[
            user,
            password,
            (SERVER_ENV, "https://r.example/v2"),
        ]))
        .unwrap_err();
        assert!(problems[0].contains("https://r.example/v2"), "{problems:?}");
        let problems = login(&env(&[user, password, (SERVER_ENV, " , ")])).unwrap_err();
        assert!(problems[0].contains("names no registry"), "{problems:?}");
        let problems = login(&env(&[(SERVER_ENV, "r.example")])).unwrap_err();
        assert!(problems[0].contains("without"), "{problems:?}");
        let problems = login(&env(&[user])).unwrap_err();
        assert!(problems[0].contains("together"), "{problems:?}");
    }

    #[test]
    fn the_password_is_never_formatted() {
        let login = Login::new("ci", "hunter2-registry");
        let shown = format!("{login:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("ci"), "{shown}");
    }
}
