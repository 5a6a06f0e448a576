//! The command line's subcommands, one file each: `serve` (and `dev`),
//! `build`, `new` (with `new_js` and `new_python`), `send`, `check`, `push`
//! and `pull`.
//! `main.rs` parses the command line and dispatches; these do the work, and
//! print what a user reads (`send`: the answer on stdout, timings and
//! verdicts on stderr).

pub mod build;
pub mod check;
mod checkout;
pub mod new;
pub mod new_js;
pub mod new_python;
pub mod pull;
pub mod push;
pub mod send;
pub mod serve;

use std::path::Path;

use anyhow::Context as _;

use crate::config::{Config, RegistrySettings, registry_login};
use crate::credentials::Environment;
use crate::registry::Registry;

/// The config as far as it reads, problems unsaid (another step reports them).
pub fn quiet_config(path: &Path) -> anyhow::Result<Config> {
    let env = Environment::load(Path::new(".env"))?;
    Ok(Config::check(path, &env)?.0)
}

/// The config's layout (where the plugins are, where to listen) even when some
/// of its values are wrong, each said on stderr: building or sending needs no
/// secrets.
pub fn lenient_config(path: &Path) -> anyhow::Result<Config> {
    let env = Environment::load(Path::new(".env"))?;
    let (config, problems) = Config::check(path, &env)?;
    for problem in problems {
        eprintln!("{}: {}: {}", path.display(), problem.key, problem.message);
    }
    Ok(config)
}

/// A registry client for `push` and `pull`: the registry settings of the
/// config at `path` (problems elsewhere in it said on stderr; a file named
/// but missing is an error), else of `optech.toml` when there is one, else
/// the defaults; the login from the environment.
pub fn registry_client(path: Option<&Path>) -> anyhow::Result<Registry> {
    if let Some(path) = path {
        let found = path
            .try_exists()
            .with_context(|| format!("reading {}", path.display()))?;
        anyhow::ensure!(found, "the config {} does not exist", path.display());
    }
    let path = path.unwrap_or(Path::new("optech.toml"));
    let settings = if path.exists() {
        lenient_config(path)?.server.registry
    } else {
        let env = Environment::load(Path::new(".env"))?;
        let login =
            registry_login(&env).map_err(|problems| anyhow::anyhow!(problems.join("; ")))?;
        RegistrySettings {
            login,
            ..RegistrySettings::default()
        }
    };
    Ok(Registry::new(&settings, None, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_named_but_missing_is_an_error_not_the_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("optech.toml");
        let error = registry_client(Some(&missing))
            .err()
            .expect("a missing config");
        assert!(error.to_string().contains("does not exist"), "{error}");
    }
}
