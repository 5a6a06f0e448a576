//! The command line's subcommands, one file each: `serve` (and `dev`),
//! `build`, `new` (with `new_js` and `new_python`), `send` and `check`.
//! `main.rs` parses the command line and dispatches; these do the work, and
//! print what a user reads (`send`: the answer on stdout, timings and
//! verdicts on stderr).

pub mod build;
pub mod check;
pub mod new;
pub mod new_js;
pub mod new_python;
pub mod send;
pub mod serve;

use std::path::Path;

use crate::config::Config;
use crate::credentials::Environment;

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
