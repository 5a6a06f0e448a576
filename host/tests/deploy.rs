//! The deployment files parse and say what the README promises: every
//! Kubernetes manifest is valid YAML of a known kind; the Deployment probes
//! readiness on `/readyz` and liveness on `/healthz`, runs as non-root and
//! takes its secrets from the Secret; the ConfigMap's `optech.toml` is a valid
//! config with the admin token from the Secret; the NetworkPolicy admits the
//! admin port only from the monitoring namespace; the Dockerfile is
//! multi-stage, non-root, and serves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn manifests() -> BTreeMap<String, Yaml> {
    let mut by_kind = BTreeMap::new();
    for entry in std::fs::read_dir(deploy().join("kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
        for doc in docs {
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no kind", path.display()))
                .to_string();
            assert!(
                doc["apiVersion"].as_str().is_some(),
                "{}: no apiVersion",
                path.display()
            );
            assert!(
                doc["metadata"]["name"].as_str().is_some(),
                "{}: no name",
                path.display()
            );
            by_kind.insert(kind, doc);
        }
    }
    by_kind
}

#[test]
fn every_manifest_parses_and_the_set_is_complete() {
    let manifests = manifests();
    let kinds: Vec<&str> = manifests.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Secret",
            "Service"
        ]
    );
}

#[test]
fn the_deployment_probes_readiness_and_liveness_and_runs_as_non_root() {
    let manifests = manifests();
    let pod = &manifests["Deployment"]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"].as_str(),
        manifests["Secret"]["metadata"]["name"].as_str()
    );
    let secret = &manifests["Secret"]["stringData"];
    for key in [
        "OPTECH_CLIENT_SECRET",
        "OPTECH_CLIENT_ID",
        "OPTECH_OUTBOX_URL",
        "OPTECH_ADMIN_TOKEN",
    ] {
        assert!(secret[key].as_str().is_some(), "the Secret has no {key}");
    }
    // Shutdown has time to drain: the grace outlasts the host's own.
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(grace > 25, "{grace}");
    // The Service publishes the data port only, not the admin listener.
    let ports = manifests["Service"]["spec"]["ports"].as_vec().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["targetPort"].as_str(), Some("http"));
    assert_eq!(
        manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"].as_str(),
        Some("optech")
    );
}

#[test]
fn the_configmaps_config_is_valid_with_the_secrets_outbox() {
    let manifests = manifests();
    let text = manifests["ConfigMap"]["data"]["optech.toml"]
        .as_str()
        .unwrap();
    let registry_server = manifests["Secret"]["stringData"]["OPTECH_REGISTRY_SERVER"]
        .as_str()
        .expect("the Secret names the registry its login is for")
        .to_string();
    let env = optech_host::credentials::Environment::from_pairs([
        (
            "OPTECH_OUTBOX_URL",
            "postgres://optech:password@postgres:5432/optech",
        ),
        ("OPTECH_ADMIN_TOKEN", "a-token-from-the-secret-0123456789"),
        ("OPTECH_REGISTRY_USERNAME", "robot"),
        ("OPTECH_REGISTRY_PASSWORD", "a-registry-token"),
        ("OPTECH_REGISTRY_SERVER", &registry_server),
    ]);
    let config =
        optech_host::config::Config::parse_with(text, Path::new("/srv/optech/optech.toml"), &env)
            .unwrap_or_else(|e| panic!("the ConfigMap's optech.toml: {e}"));
    // Plugins come from a registry, by a tag every replica refreshes: a push
    // reaches them all with no new image.
    for plugin in config.plugins.values() {
        let oci = plugin
            .source
            .oci()
            .unwrap_or_else(|| panic!("plugin {} is not from a registry", plugin.name));
        assert!(
            oci.refresh.is_some(),
            "{} is never refreshed",
            oci.reference
        );
    }
    let login = config
        .server
        .registry
        .login
        .as_ref()
        .expect("a registry login");
    for plugin in config.plugins.values() {
        let oci = plugin.source.oci().expect("from a registry");
        let registry = oci.registry().expect("a registry");
        assert!(
            login.applies_to(&registry),
            "the Secret's login is not for {registry}"
        );
    }
    let secret = &manifests["Secret"]["stringData"];
    for name in ["OPTECH_REGISTRY_USERNAME", "OPTECH_REGISTRY_PASSWORD"] {
        assert!(secret[name].as_str().is_some(), "the Secret has no {name}");
    }
    assert!(
        config.server.outbox.is_some(),
        "the replicas would not share an outbox"
    );
    // The admin port listens beyond loopback: the token from the Secret guards it.
    assert!(config.server.admin_beyond_loopback());
    assert_eq!(
        config.server.admin.token.as_ref().map(|t| t.expose()),
        Some("a-token-from-the-secret-0123456789")
    );
    assert_eq!(config.server.listen.port(), 8080);
    let container_config = std::fs::read_to_string(deploy().join("optech.toml")).unwrap();
    optech_host::config::Config::parse_with(
        &container_config,
        Path::new("/srv/optech/optech.toml"),
        &env,
    )
    .unwrap_or_else(|e| panic!("deploy/optech.toml: {e}"));
}

#[test]
fn the_admin_port_is_reachable_only_from_the_monitoring_namespace() {
    let manifests = manifests();
    let policy = &manifests["NetworkPolicy"]["spec"];
    let pod_labels = &manifests["Deployment"]["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        policy["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
        pod_labels["app.kubernetes.io/name"].as_str()
    );
    let types: Vec<&str> = policy["policyTypes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(types, ["Ingress"]);
    let port_of = |rule: &Yaml| -> Vec<String> {
        rule["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|p| match &p["port"] {
                Yaml::String(name) => name.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    };
    let rules = policy["ingress"].as_vec().unwrap();
    let admin_rules: Vec<&Yaml> = rules
        .iter()
        .filter(|r| port_of(r).iter().any(|p| p == "admin" || p == "9091"))
        .collect();
    assert_eq!(admin_rules.len(), 1, "{rules:?}");
    let from = admin_rules[0]["from"]
        .as_vec()
        .expect("the admin port needs a `from`");
    assert_eq!(from.len(), 1);
    assert_eq!(
        from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str(),
        Some("monitoring")
    );
    assert!(from[0]["podSelector"].is_badvalue(), "{from:?}");
    // The data port stays open; no other rule opens the admin port.
    assert!(
        rules
            .iter()
            .any(|r| port_of(r) == ["http"] && r["from"].is_badvalue())
    );
    // The container's ports carry the names the policy uses, and the probes
    // use the data port (the admin port needs the token).
    let container = &manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0];
    let names: Vec<&str> = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["http", "admin"]);
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some("http"),
            "{probe}"
        );
    }
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_and_serves() {
    let text = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "not multi-stage");
    let user = text
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("no USER");
    assert_ne!(user.trim(), "root");
    let entrypoint = text
        .lines()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .expect("no ENTRYPOINT");
    assert!(entrypoint.contains("\"optech\", \"serve\""), "{entrypoint}");
    // The config it copies in exists.
    assert!(deploy().join("optech.toml").is_file());
}
