//! `optech check`: everything wrong with a config and the plugins it maps, all
//! at once, without serving: unknown or malformed settings, unset secrets,
//! missing or unreadable plugin files, components that do not match the WIT,
//! bucket grants that are malformed; and which plugin may open which bucket
//! of the store, with a warning where plugins share one; and where traces go
//! (`[telemetry]` resolved against the `OTEL_*` variables, each value with its
//! source). For a user's own CI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::config::{Config, REGISTRY_PASSWORD_ENV, REGISTRY_SERVER_ENV, REGISTRY_USERNAME_ENV};
use crate::credentials::Environment;
use crate::loader;
use crate::registry::Registry;
use crate::runtime::{Runtime, RuntimeOptions};
use crate::telemetry;

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
    /// Whether traces are exported, and where: one line each.
    pub tracing: Vec<String>,
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
        for line in &report.tracing {
            println!("  {line}");
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
    tracing(&config, &mut report, &|name| std::env::var(name).ok());
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
    registries(&config, &mut report);
    // No cache either: a registry plugin is pulled into memory.
    let registry = match Registry::new(&config.server.registry, None, None) {
        Ok(registry) => registry,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    match loader::load_all(&runtime, &registry, &config).await {
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

/// Says whether traces are exported and with what, as `serve` would resolve
/// it; a bad `OTEL_*` variable is a problem, as it stops `serve`.
fn tracing(config: &Config, report: &mut Report, env: &dyn Fn(&str) -> Option<String>) {
    match telemetry::resolve(&config.telemetry, env) {
        Err(e) => report.problems.extend(e.0),
        Ok(Err(off)) => report.tracing.push(format!("tracing: {off}")),
        Ok(Ok(s)) => {
            let ratio = if s.sampler.0.takes_ratio() {
                format!(" {}", s.ratio)
            } else {
                String::new()
            };
            report.tracing.extend([
                format!(
                    "tracing: on, {} to {} ({})",
                    s.protocol.0.as_str(),
                    s.endpoint.0,
                    s.endpoint.1
                ),
                format!("  service.name {} ({})", s.service_name.0, s.service_name.1),
                format!(
                    "  sampler {}{ratio} ({})",
                    s.sampler.0.as_str(),
                    s.sampler.1
                ),
                format!(
                    "  incoming traceparent: {}; outbound requests {}",
                    s.incoming.as_str(),
                    if s.propagate {
                        "carry traceparent"
                    } else {
                        "carry no trace context"
                    }
                ),
            ]);
            if !s.headers.is_empty() {
                // Names only: header values are API keys.
                let names: Vec<&str> = s.headers.keys().map(String::as_str).collect();
                report
                    .tracing
                    .push(format!("  export headers: {}", names.join(", ")));
            }
        }
    }
}

/// Warns of a registry tag that is never refreshed: replicas started at
/// different times may then run different versions of one tag for good; and
/// of the environment's login offered to several registries.
fn registries(config: &Config, report: &mut Report) {
    let used: BTreeSet<String> = config
        .plugins
        .values()
        .filter_map(|p| p.source.oci()?.registry())
        .collect();
    if let Some(login) = &config.server.registry.login
        && login.servers.is_empty()
        && used.len() > 1
    {
        report.warnings.push(format!(
            "{REGISTRY_USERNAME_ENV}/{REGISTRY_PASSWORD_ENV} are offered to every registry the \
             plugins come from ({}); set {REGISTRY_SERVER_ENV} to the one they are for",
            used.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(login) = &config.server.registry.login
        && !login.servers.is_empty()
        && !used.is_empty()
        && !used.iter().any(|registry| login.applies_to(registry))
    {
        report.warnings.push(format!(
            "{REGISTRY_SERVER_ENV} names {}, which no plugin comes from ({}): the login is never used",
            login.servers.join(", "),
            used.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    for (name, plugin) in &config.plugins {
        if let Some(oci) = plugin.source.oci()
            && !oci.is_digest()
            && oci.refresh.is_none()
        {
            report.warnings.push(format!(
                "plugin `{name}`: {} is a tag without `refresh`: it is resolved once at start, \
                 so replicas started at different times may run different versions; add \
                 refresh = \"60s\" or pin a digest (@sha256:...)",
                oci.reference
            ));
        }
    }
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
    async fn a_tag_without_refresh_is_warned_of_and_a_digest_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optech.toml");
        std::fs::write(
            &path,
            "[keys]
a = \"a\"
b = \"b\"
             [plugins.a]
source = { oci = \"r.example/team/a:1.4\" }
             [plugins.b]
source = { oci = \"r.example/team/b@sha256:9575310caa5c43bd207d9ef30f04c6d24fbb34cff3b8967c3163f868febb2005\" }
",
        )
        .unwrap();
        let (config, problems) = Config::check(&path, &Environment::process()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let mut report = Report::default();
        registries(&config, &mut report);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("r.example/team/a:1.4"));
        assert!(report.warnings[0].contains("refresh"));
    }

    #[test]
    fn a_login_offered_to_several_registries_is_warned_of_unless_scoped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optech.toml");
        std::fs::write(
            &path,
            "[keys]\na = \"a\"\nb = \"b\"\n\
             [plugins.a]\nsource = { oci = \"r.example/team/a:1.4\" }\nrefresh = \"60s\"\n\
             [plugins.b]\nsource = { oci = \"ghcr.io/other/b:2\" }\nrefresh = \"60s\"\n",
        )
        .unwrap();
        let login = [
            (REGISTRY_USERNAME_ENV, "ci"),
            (REGISTRY_PASSWORD_ENV, "a-password"),
        ];
        let warnings = |env: Environment| {
            let (config, problems) = Config::check(&path, &env).unwrap();
            assert!(problems.is_empty(), "{problems:?}");
            let mut report = Report::default();
            registries(&config, &mut report);
            report.warnings
        };
        let unscoped = warnings(Environment::from_pairs(login));
        assert_eq!(unscoped.len(), 1, "{unscoped:?}");
        assert!(
            unscoped[0].contains("ghcr.io, r.example") && unscoped[0].contains(REGISTRY_SERVER_ENV),
            "{unscoped:?}"
        );
        assert!(!unscoped[0].contains("a-password"));
        let scoped = login
            .into_iter()
            .chain([(REGISTRY_SERVER_ENV, "r.example")]);
        assert!(warnings(Environment::from_pairs(scoped)).is_empty());
        let elsewhere = login.into_iter().chain([(REGISTRY_SERVER_ENV, "quay.io")]);
        let unused = warnings(Environment::from_pairs(elsewhere));
        assert_eq!(unused.len(), 1, "{unused:?}");
        assert!(
            unused[0].contains("quay.io") && unused[0].contains("never used"),
            "{unused:?}"
        );
    }

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

    #[test]
    fn tracing_is_listed_with_where_each_value_comes_from() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optech.toml");
        std::fs::write(
            &path,
            "[telemetry]\nendpoint = \"http://collector:4318\"\nheaders = { \"x-api-key\" = \"secret-key\" }\n",
        )
        .unwrap();
        let (config, _) = Config::check(&path, &Environment::process()).unwrap();
        let mut report = Report::default();
        let env = |name: &str| (name == "OTEL_SERVICE_NAME").then(|| "orders-host".to_string());
        tracing(&config, &mut report, &env);
        let text = report.tracing.join("\n");
        assert!(
            text.contains("http/protobuf to http://collector:4318/v1/traces (from [telemetry])"),
            "{text}"
        );
        assert!(
            text.contains("service.name orders-host (from OTEL_SERVICE_NAME)"),
            "{text}"
        );
        assert!(text.contains("export headers: x-api-key"), "{text}");
        assert!(
            !text.contains("secret-key"),
            "a header value is listed: {text}"
        );

        let mut report = Report::default();
        tracing(&config, &mut report, &|name| {
            (name == "OTEL_TRACES_SAMPLER").then(|| "sometimes".to_string())
        });
        assert!(
            report.problems[0].contains("OTEL_TRACES_SAMPLER"),
            "{:?}",
            report.problems
        );
    }
}
