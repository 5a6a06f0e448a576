//! `optech check`: everything wrong with a config and the plugins it maps, all
//! at once, without serving: unknown or malformed settings, unset secrets,
//! missing or unreadable plugin files, components that do not match the WIT,
//! bucket grants that are malformed; and which plugin may open which bucket
//! of the store, with a warning where plugins share one. For a user's own CI.

use std::collections::BTreeMap;
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
    /// `plugin: bucket, bucket` for every plugin granted buckets of the store.
    pub grants: Vec<String>,
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
        for grant in &report.grants {
            println!("  stores of {grant}");
        }
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
    grants(&config, &mut report);
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

/// Lists each plugin's buckets, and warns of a bucket granted to several:
/// they read and overwrite each other's keys there, which must be meant.
fn grants(config: &Config, report: &mut Report) {
    let mut holders: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, plugin) in &config.plugins {
        if plugin.stores.is_empty() {
            continue;
        }
        let buckets: Vec<&str> = plugin.stores.iter().map(String::as_str).collect();
        report
            .grants
            .push(format!("{name}: {}", buckets.join(", ")));
        for bucket in buckets {
            holders.entry(bucket).or_default().push(name);
        }
    }
    for (bucket, plugins) in holders {
        if plugins.len() > 1 {
            report.warnings.push(format!(
                "bucket `{bucket}` is granted to {}: each reads and overwrites the others' keys in it",
                plugins.join(", ")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grants_are_listed_and_a_shared_bucket_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optech.toml");
        std::fs::write(
            &path,
            "[keys]\na = \"a\"\nb = \"b\"\n\
             [plugins.a]\nstores = [\"tokens\", \"shared\"]\n\
             [plugins.b]\nstores = [\"shared\"]\n",
        )
        .unwrap();
        let (config, problems) = Config::check(&path, &Environment::process()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let mut report = Report::default();
        grants(&config, &mut report);
        assert_eq!(report.grants, ["a: shared, tokens", "b: shared"]);
        assert_eq!(
            report.warnings,
            [
                "bucket `shared` is granted to a, b: each reads and overwrites the others' keys in it"
            ]
        );
    }
}
