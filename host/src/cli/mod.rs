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
/// config at `path` (problems elsewhere in it said on stderr), or the
/// defaults when there is no such file; the login from the environment.
pub fn registry_client(path: &Path) -> anyhow::Result<Registry> {
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
