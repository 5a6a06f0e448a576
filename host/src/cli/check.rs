//! `optech check`: everything wrong with a config and the plugins it maps, all
//! at once, without serving: unknown or malformed settings, unset secrets,
//! missing or unreadable plugin files, components that do not match the WIT.
//! For a user's own CI.

use std::path::Path;

use crate::config::Config;
use crate::credentials::Environment;
use crate::loader;
use crate::runtime::{Runtime, RuntimeOptions};

/// What `check` found.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    /// Not wrong, but risky: said, without failing the check.
    pub warnings: Vec<String>,
    /// Plugins that loaded and match the WIT.
    pub plugins_ok: usize,
    pub keys: usize,
}

/// `optech check`: the report on stderr (ok on stdout); false when there are problems.
pub async fn run(config: &Path) -> bool {
    let report = check(config).await;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if report.problems.is_empty() {
        println!(
            "{}: ok: {} key(s), {} plugin(s) loaded and matching the WIT",
            config.display(),
            report.keys,
            report.plugins_ok
        );
        true
    } else {
        eprintln!("{} problem(s):", report.problems.len());
        for problem in &report.problems {
            eprintln!("  {problem}");
        }
        false
    }
}

/// Checks `config_path`; secrets come from the environment or `.env` in the
/// working directory, as `serve` reads them.
pub async fn check(config_path: &Path) -> Report {
    let mut report = Report::default();
    let env = match Environment::load(Path::new(".env")) {
        Ok(env) => env,
        Err(e) => {
            report.problems.push(e.to_string());
            Environment::process()
        }
    };
    let (config, problems) = match Config::check(config_path, &env) {
        Ok(checked) => checked,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    let shown = config_path.display();
    report.problems.extend(
        problems
            .iter()
            .map(|p| format!("{shown}: {}: {}", p.key, p.message)),
    );
    report.keys = config.keys.len();
    // Compiles in memory only: a check writes nothing.
    let runtime = match Runtime::new(&RuntimeOptions {
        max_instances: 1,
        max_idle: 0,
        ..RuntimeOptions::default()
    }) {
        Ok(runtime) => runtime,
        Err(e) => {
            report.problems.push(format!("{e:#}"));
            return report;
        }
    };
    match loader::load_all(&runtime, &config).await {
        Ok(plugins) => report.plugins_ok = plugins.len(),
        Err(errors) => {
            report.plugins_ok = config.plugins.len().saturating_sub(errors.len());
            report
                .problems
                .extend(errors.iter().map(|e| format!("{shown}: {e}")));
        }
    }
    report
}
