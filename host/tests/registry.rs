//! Plugins from an OCI registry, against a real one: Debian's `docker-registry`
//! (Distribution 2.8) on a free port, started by each test. `optech push` and
//! `pull` run as the built binary; hosts are real, on ephemeral ports.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::registry::{self, Registry};
use common::{TestHost, counter, scrape, wait_until};
use optech_host::credentials::Environment;
use serde_json::{Value, json};

/// The example `echo` answers with its inputs; the test-only `testkit`, asked
/// under the key `version`, with `{"version": ...}`: two builds that answer the
/// same key differently.
fn echo_wasm() -> PathBuf {
    common::examples_dir().join("echo.wasm")
}

fn testkit_wasm() -> PathBuf {
    common::testkit_wasm()
}

/// Whether the test can run here (the registry and skopeo installed); builds the plugins.
fn built() -> bool {
    if !registry::available() {
        return false;
    }
    if let Err(e) = common::build_plugins() {
        panic!("building the plugins failed: {e}");
    }
    true
}

/// Runs `optech ARGS` with `env`; returns (exit code, stdout, stderr).
fn optech(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_optech"))
        .args(args)
        .env_remove("OPTECH_REGISTRY_USERNAME")
        .env_remove("OPTECH_REGISTRY_PASSWORD")
        .env_remove("OPTECH_REGISTRY_SERVER")
        .env_remove("DOCKER_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("running optech");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// One test's registry, the folder everything lives in, and the config that
/// lets `push` and `pull` talk plain HTTP to the registry.
struct Bench {
    dir: tempfile::TempDir,
    registry: Registry,
    cli: PathBuf,
}

/// A bench with an anonymous registry (`auth` false) or an htpasswd one; `None`
/// when the tools are missing here (the test is skipped, except in CI).
async fn bench(auth: bool) -> Option<Bench> {
    if !built() {
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("registry");
    let registry = if auth {
        Registry::start_with_auth(&root).await
    } else {
        Registry::start(&root).await
    };
    let cli = cli_config(dir.path(), &registry);
    Some(Bench { dir, registry, cli })
}

/// A config file for `push` and `pull` that lets them talk plain HTTP to `registry`.
fn cli_config(dir: &Path, registry: &Registry) -> PathBuf {
    let path = dir.join("cli.toml");
    std::fs::write(
        &path,
        format!("[server]\ninsecure_registries = [{:?}]\n", registry.addr),
    )
    .expect("writing the config");
    path
}

/// `optech push FILE REFERENCE --config CONFIG`: (exit code, stdout, stderr).
fn try_push(
    config: &Path,
    file: &Path,
    reference: &str,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    optech(
        &[
            "push",
            &file.display().to_string(),
            reference,
            "--config",
            &config.display().to_string(),
        ],
        env,
    )
}

/// `optech push FILE REFERENCE`; the digest it printed.
fn push(config: &Path, file: &Path, reference: &str, env: &[(&str, &str)]) -> String {
    let (code, stdout, stderr) = try_push(config, file, reference, env);
    assert_eq!(code, 0, "optech push failed: {stderr}");
    assert!(
        stdout.starts_with("sha256:") && stdout.len() == 71,
        "{stdout}"
    );
    stdout
}

/// The `[server]` lines and the plugin `echo` on `reference`, key `version`.
fn host_config(registry: &Registry, data_dir: &Path, source: &str, extra: &str) -> String {
    format!(
        "insecure_registries = [{:?}]\ndata_dir = {:?}\n{extra}\n\
         [keys]\nversion = \"echo\"\n\
         [plugins.echo]\nsource = {{ oci = {source:?} }}\n",
        registry.addr,
        data_dir.display().to_string(),
    )
}

/// `config` (from [`host_config`], whose last table is the plugin's) with the
/// tag refreshed every second.
fn refreshed(config: String) -> String {
    config + "refresh = \"1s\"\n"
}

/// `optech pull REFERENCE FILE`.
fn pull(cli: &Path, reference: &str, file: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let file = file.display().to_string();
    let cli = cli.display().to_string();
    optech(&["pull", reference, &file, "--config", &cli], env)
}

/// Why a host with `config` does not start (`what` it should have been refused for).
async fn start_error(config: &str, what: &str) -> String {
    match TestHost::try_start(&common::testkit_dir(), config, None).await {
        Ok(_) => panic!("{what}: the host started"),
        Err(error) => format!("{error:#}"),
    }
}

/// The console's Plugins table.
async fn plugins_page(host: &TestHost) -> String {
    reqwest::get(format!("{}/plugins/table", host.admin_url()))
        .await
        .expect("the console answers")
        .text()
        .await
        .expect("a page")
}

/// Which build answered: `echo` (inputs back) or `testkit` (a depth).
async fn which(host: &TestHost) -> &'static str {
    let answer = host.ask("version", json!({"probe": "x"})).await;
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    which_data(&answer.json())
}

fn which_data(body: &Value) -> &'static str {
    if body["data"]["probe"] == "x" {
        "echo"
    } else if body["data"]["version"].is_string() {
        "testkit"
    } else {
        panic!("neither build answered: {body}")
    }
}

async fn health_digest(host: &TestHost) -> Option<String> {
    let plugin = common::plugin_health(&host.admin_url(), "echo").await;
    plugin["registry"]["digest"].as_str().map(str::to_string)
}

async fn fetches(host: &TestHost, outcome: &str) -> f64 {
    let scrape = scrape(&host.admin_url()).await;
    counter(
        &scrape,
        "optech_registry_fetches_total",
        &[("plugin", "echo"), ("outcome", outcome)],
    )
}

async fn errors(host: &TestHost, kind: &str) -> f64 {
    let scrape = scrape(&host.admin_url()).await;
    counter(
        &scrape,
        "optech_registry_errors_total",
        &[("plugin", "echo"), ("outcome", kind)],
    )
}

/// Saves the host's config again with `lines` at its end (its last table is
/// the plugin's), as an editor would; the host reloads.
fn append_to_config(host: &TestHost, lines: &str) {
    let config_file = host.dir.path().join("optech.toml");
    let text = std::fs::read_to_string(&config_file).expect("the host's config");
    std::fs::write(&config_file, format!("{text}{lines}")).expect("saving the config");
}

async fn failed_reloads(host: &TestHost) -> f64 {
    let scrape = scrape(&host.admin_url()).await;
    counter(&scrape, "optech_reloads_total", &[("outcome", "failed")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pushed_plugin_serves_by_tag_and_a_moved_tag_swaps_under_load() {
    let Some(Bench { dir, registry, cli }) = bench(false).await else {
        return;
    };
    let reference = registry.reference("team/orders:live");

    let v1 = push(&cli, &echo_wasm(), &reference, &[]);
    assert_eq!(
        registry.tag_digest("team/orders", "live").as_deref(),
        Some(v1.as_str())
    );

    let config = refreshed(host_config(
        &registry,
        &dir.path().join("data"),
        &reference,
        "",
    ));
    let host = Arc::new(TestHost::start(&common::testkit_dir(), &config).await);
    assert_eq!(which(&host).await, "echo");
    assert_eq!(health_digest(&host).await.as_deref(), Some(v1.as_str()));
    assert_eq!(fetches(&host, "pulled").await, 1.0);

    // The console's Plugins page shows the reference and the digest serving.
    let table = plugins_page(&host).await;
    assert!(table.contains(&reference), "{table}");
    assert!(table.contains(&v1), "{table}");

    // Load: four clients ask without pause while the tag moves.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let new_seen = Arc::new(AtomicBool::new(false));
    let went_back = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (host, stop, failed, answered) =
            (host.clone(), stop.clone(), failed.clone(), answered.clone());
        let (new_seen, went_back) = (new_seen.clone(), went_back.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Read before asking: an old answer after this saw the new
                // one would mean the swap went back.
                let seen_before = new_seen.load(Ordering::SeqCst);
                let answer = host.ask("version", json!({"probe": "x"})).await;
                answered.fetch_add(1, Ordering::Relaxed);
                if answer.status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match which_data(&answer.json()) {
                    "testkit" => new_seen.store(true, Ordering::SeqCst),
                    _ if seen_before => {
                        went_back.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }));
    }
    wait_until("requests flowing", Duration::from_secs(30), || {
        let answered = answered.clone();
        async move { answered.load(Ordering::Relaxed) > 50 }
    })
    .await;

    let v2 = push(&cli, &testkit_wasm(), &reference, &[]);
    assert_ne!(v1, v2);
    // Counted from when the tag has moved: refreshes during the push itself
    // (a second or more on a busy machine) rightly saw v1.
    let unchanged_before = fetches(&host, "unchanged").await;
    wait_until("the new build answers", Duration::from_secs(60), || {
        let new_seen = new_seen.clone();
        async move { new_seen.load(Ordering::SeqCst) }
    })
    .await;
    // At most one refresh: every refresh after the push saw the move. One
    // that was under way when the push finished may still have seen v1.
    let unchanged_after = fetches(&host, "unchanged").await;
    assert!(
        unchanged_after - unchanged_before <= 1.0,
        "the host asked {} times before it saw the tag move",
        unchanged_after - unchanged_before
    );
    let settled = answered.load(Ordering::Relaxed);
    wait_until(
        "more requests after the swap",
        Duration::from_secs(30),
        || {
            let answered = answered.clone();
            async move { answered.load(Ordering::Relaxed) > settled + 50 }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client task");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the swap"
    );
    assert_eq!(
        went_back.load(Ordering::Relaxed),
        0,
        "an old answer after a new one"
    );
    assert!(answered.load(Ordering::Relaxed) > 100);
    assert_eq!(health_digest(&host).await.as_deref(), Some(v2.as_str()));
    assert_eq!(fetches(&host, "pulled").await, 2.0);

    // `optech pull` gets the bytes that were pushed, checked.
    let pulled = dir.path().join("pulled.wasm");
    let (code, stdout, stderr) = pull(&cli, &reference, &pulled, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, v2);
    assert_eq!(
        std::fs::read(&pulled).expect("pulled file"),
        std::fs::read(testkit_wasm()).expect("testkit.wasm")
    );
}

/// A host serving `echo`, pushed to `team/orders:live` (digest `v1`), the tag
/// refreshed every second, and its config.
struct Live {
    live: String,
    v1: String,
    host: TestHost,
    config: String,
}

async fn serving_echo_live(dir: &tempfile::TempDir, registry: &Registry, cli: &Path) -> Live {
    let live = registry.reference("team/orders:live");
    let v1 = push(cli, &echo_wasm(), &live, &[]);
    let config = refreshed(host_config(registry, &dir.path().join("data"), &live, ""));
    let host = TestHost::start(&common::testkit_dir(), &config).await;
    assert_eq!(which(&host).await, "echo");
    Live {
        live,
        v1,
        host,
        config,
    }
}

/// Waits until refreshes have found a refused version on the tag `at_least` times.
async fn rejected_refreshes(host: &TestHost, at_least: f64) {
    wait_until(
        "refreshes that find the refused version",
        Duration::from_secs(30),
        || async { errors(host, "rejected").await >= at_least },
    )
    .await;
}

#[tokio::test]
async fn a_layer_that_does_not_match_its_digest_is_refused_and_the_old_version_kept() {
    let Some(Bench { dir, registry, cli }) = bench(false).await else {
        return;
    };
    let Live { v1, host, .. } = serving_echo_live(&dir, &registry, &cli).await;

    // A new build under another tag; then its layer is damaged in the
    // registry's storage, and `live` moved to it without an upload.
    push(
        &cli,
        &testkit_wasm(),
        &registry.reference("team/orders:next"),
        &[],
    );
    let layer =
        optech_host::registry::layer_digest(&std::fs::read(testkit_wasm()).expect("testkit.wasm"));
    let blob = registry.blob_path(&layer);
    let mut damaged = std::fs::read(&blob).expect("the layer's blob");
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&blob, damaged).expect("damaging the blob");
    registry.retag("team/orders", "next", "live").await;

    wait_until(
        "the mismatch is counted",
        Duration::from_secs(30),
        || async { errors(&host, "digest_mismatch").await >= 1.0 },
    )
    .await;
    assert_eq!(which(&host).await, "echo", "the old version keeps serving");
    assert_eq!(health_digest(&host).await.as_deref(), Some(v1.as_str()));
    let plugin = common::plugin_health(&host.admin_url(), "echo").await;
    let error = plugin["registry"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("do not match its digest"), "{plugin}");
    assert!(error.contains(&layer), "{plugin}");
    let table = plugins_page(&host).await;
    assert!(table.contains("do not match its digest"), "{table}");

    // Not the version's fault: each refresh tries again, and nothing is
    // remembered as refused. Once the registry's blob is repaired (the tag
    // unmoved), the next refresh takes the new build.
    wait_until("another attempt", Duration::from_secs(30), || async {
        errors(&host, "digest_mismatch").await >= 2.0
    })
    .await;
    assert_eq!(errors(&host, "rejected").await, 0.0);
    let plugin = common::plugin_health(&host.admin_url(), "echo").await;
    assert!(plugin["registry"]["rejected"].is_null(), "{plugin}");
    std::fs::write(&blob, std::fs::read(testkit_wasm()).expect("testkit.wasm"))
        .expect("repairing the blob");
    wait_until("the repaired build", Duration::from_secs(30), || async {
        which(&host).await == "testkit"
    })
    .await;
}

/// A component with no exports: `optech push` takes it, the host cannot load it.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

#[tokio::test]
async fn a_build_that_does_not_load_is_tried_once_per_tag_move_not_once_per_refresh() {
    let Some(Bench {
        dir,
        mut registry,
        cli,
    }) = bench(false).await
    else {
        return;
    };
    let Live {
        live,
        v1,
        host,
        config,
    } = serving_echo_live(&dir, &registry, &cli).await;

    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, EMPTY_COMPONENT).expect("writing the component");
    let bad = push(&cli, &empty, &live, &[]);
    wait_until("the failed build", Duration::from_secs(30), || async {
        errors(&host, "not_loadable").await >= 1.0
    })
    .await;
    rejected_refreshes(&host, 2.0).await;
    assert_eq!(errors(&host, "not_loadable").await, 1.0, "built once");
    // ... and the refresh itself sees it, without reloading anything.
    let reloads_before = failed_reloads(&host).await;
    let rejected = errors(&host, "rejected").await;
    rejected_refreshes(&host, rejected + 2.0).await;
    assert_eq!(failed_reloads(&host).await, reloads_before, "no reload");
    assert_eq!(which(&host).await, "echo", "the old version keeps serving");
    let plugin = common::plugin_health(&host.admin_url(), "echo").await;
    let registry_status = &plugin["registry"];
    assert_eq!(registry_status["digest"], v1.as_str(), "{plugin}");
    assert_eq!(
        registry_status["rejected"]["digest"],
        bad.as_str(),
        "{plugin}"
    );
    let error = registry_status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("does not load") && error.contains(&bad) && error.contains("handle"),
        "{plugin}"
    );
    let table = plugins_page(&host).await;
    assert!(table.contains("does not load"), "{table}");
    assert!(table.contains(&bad[..19]), "{table}");

    // A refresh that cannot reach the registry says so; the next one that
    // finds the refused version again shows why it was refused.
    let error_contains = |text: &'static str| {
        let admin = host.admin_url();
        move || {
            let admin = admin.clone();
            async move {
                let plugin = common::plugin_health(&admin, "echo").await;
                plugin["registry"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(text))
            }
        }
    };
    registry.stop();
    wait_until(
        "a refresh that cannot reach the registry",
        Duration::from_secs(30),
        error_contains("cannot be reached"),
    )
    .await;
    registry.restart().await;
    wait_until(
        "the refusal's reason shown again",
        Duration::from_secs(30),
        error_contains("does not load"),
    )
    .await;

    // A change to the plugin's config tries the version again.
    append_to_config(&host, "timeout = \"9s\"\n");
    wait_until("the second attempt", Duration::from_secs(30), || async {
        errors(&host, "not_loadable").await >= 2.0
    })
    .await;
    assert_eq!(which(&host).await, "echo");

    // The refused version never became the cache's: restarted while the
    // registry is down, the host serves the last good one.
    host.host.shutdown().await.expect("shutdown");
    registry.stop();
    let host = TestHost::start(&common::testkit_dir(), &config).await;
    assert_eq!(which(&host).await, "echo");
    assert_eq!(health_digest(&host).await.as_deref(), Some(v1.as_str()));
    registry.restart().await;

    // A good build on the tag is taken within a refresh, and the refusal is cleared.
    push(&cli, &testkit_wasm(), &live, &[]);
    wait_until("the new build", Duration::from_secs(30), || async {
        which(&host).await == "testkit"
    })
    .await;
    let plugin = common::plugin_health(&host.admin_url(), "echo").await;
    assert!(plugin["registry"]["error"].is_null(), "{plugin}");
    assert!(plugin["registry"]["rejected"].is_null(), "{plugin}");
}

#[tokio::test]
async fn a_host_restarted_while_its_registry_is_down_serves_from_the_cache() {
    let Some(Bench {
        dir,
        mut registry,
        cli,
    }) = bench(false).await
    else {
        return;
    };
    let reference = registry.reference("team/orders:1.4");
    let digest = push(&cli, &echo_wasm(), &reference, &[]);
    let data = dir.path().join("data");
    let config = host_config(&registry, &data, &reference, "");

    let host = TestHost::start(&common::testkit_dir(), &config).await;
    assert_eq!(which(&host).await, "echo");
    host.host.shutdown().await.expect("shutdown");

    registry.stop();
    let host = TestHost::start(&common::testkit_dir(), &config).await;
    assert_eq!(which(&host).await, "echo");
    assert_eq!(fetches(&host, "offline").await, 1.0);
    let plugin = common::plugin_health(&host.admin_url(), "echo").await;
    assert_eq!(plugin["registry"]["offline"], true, "{plugin}");
    assert_eq!(plugin["registry"]["digest"], digest.as_str(), "{plugin}");
    let error = plugin["registry"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot be reached"), "{plugin}");

    // A reload meanwhile (the config saved again) keeps serving, and says so still.
    append_to_config(&host, "\n");
    wait_until("the reload", Duration::from_secs(30), || async {
        let health: Value = reqwest::get(format!("{}/healthz", host.admin_url()))
            .await
            .expect("healthz")
            .json()
            .await
            .expect("JSON");
        health["reload"]["last_reload_at"].is_string()
    })
    .await;
    assert_eq!(which(&host).await, "echo");
    let plugin = common::plugin_health(&host.admin_url(), "echo").await;
    assert_eq!(plugin["registry"]["offline"], true, "{plugin}");
    assert!(plugin["registry"]["error"].is_string(), "{plugin}");

    // A reference never pulled here is a clear error that names it.
    let other = registry.reference("team/other:1.0");
    let message = start_error(
        &host_config(&registry, &data, &other, ""),
        "a reference never pulled cannot start",
    )
    .await;
    assert!(
        message.contains(&other) && message.contains("never pulled"),
        "{message}"
    );
}

#[tokio::test]
async fn credentials_come_from_the_environment_or_the_docker_config_and_wrong_ones_are_said() {
    let Some(Bench { dir, registry, cli }) = bench(true).await else {
        return;
    };
    let reference = registry.reference("team/orders:1.4");
    let good = [
        ("OPTECH_REGISTRY_USERNAME", registry::USER),
        ("OPTECH_REGISTRY_PASSWORD", registry::PASSWORD),
    ];

    // Anonymous and wrong: refused, with what to do.
    for env in [
        vec![],
        vec![
            ("OPTECH_REGISTRY_USERNAME", registry::USER),
            ("OPTECH_REGISTRY_PASSWORD", "not-the-password"),
        ],
    ] {
        let (code, _, stderr) = try_push(&cli, &echo_wasm(), &reference, &env);
        assert_ne!(code, 0);
        assert!(stderr.contains("refused the credentials"), "{stderr}");
        assert!(!stderr.contains("not-the-password"), "{stderr}");
    }
    push(&cli, &echo_wasm(), &reference, &good);

    // A login for another registry is not offered to this one; one for it is.
    let (code, _, stderr) = try_push(
        &cli,
        &echo_wasm(),
        &reference,
        &[
            good[0],
            good[1],
            ("OPTECH_REGISTRY_SERVER", "registry.example.com"),
        ],
    );
    assert_ne!(code, 0, "the login went to a registry it is not for");
    assert!(
        stderr.contains("refused the credentials (anonymous)"),
        "{stderr}"
    );
    let scoped = [good[0], good[1], ("OPTECH_REGISTRY_SERVER", &registry.addr)];
    // (A push writes a new config, `created` included: a new manifest digest.)
    let digest = push(&cli, &echo_wasm(), &reference, &scoped);

    // The Docker config file's entry for the registry, as `docker login` writes it.
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).expect("docker dir");
    let auth = base64(&format!("{}:{}", registry::USER, registry::PASSWORD));
    std::fs::write(
        docker.join("config.json"),
        json!({"auths": {registry.addr.clone(): {"auth": auth}}}).to_string(),
    )
    .expect("docker config");
    let pulled = dir.path().join("pulled.wasm");
    let (code, stdout, stderr) = pull(
        &cli,
        &reference,
        &pulled,
        &[("DOCKER_CONFIG", &docker.display().to_string())],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, digest);

    // A host with wrong credentials says so, naming the registry, and starts not.
    let data = dir.path().join("data");
    let config = host_config(&registry, &data, &reference, "");
    let wrong = Environment::from_pairs([
        ("OPTECH_REGISTRY_USERNAME", registry::USER),
        ("OPTECH_REGISTRY_PASSWORD", "not-the-password"),
    ]);
    let error = start_with_env(&config, &wrong)
        .await
        .err()
        .expect("wrong credentials");
    let message = format!("{error:#}");
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(message.contains(&registry.addr), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
    let right = Environment::from_pairs(good);
    let host = start_with_env(&config, &right)
        .await
        .expect("right credentials");
    assert_eq!(which(&host).await, "echo");
}

async fn start_with_env(config: &str, env: &Environment) -> anyhow::Result<TestHost> {
    TestHost::try_start_env(&common::testkit_dir(), config, env).await
}

#[tokio::test]
async fn an_artifact_pushed_with_skopeo_loads_by_digest() {
    let Some(Bench { dir, registry, .. }) = bench(false).await else {
        return;
    };
    let wasm = std::fs::read(echo_wasm()).expect("echo.wasm");
    let digest = registry::push_wasm_with_skopeo(
        &registry.addr,
        "team/by-skopeo:1.0",
        &wasm,
        &dir.path().join("layout"),
        None,
    )
    .expect("skopeo copies the artifact");
    let by_digest = registry.reference(&format!("team/by-skopeo@{digest}"));
    let host = TestHost::start(
        &common::testkit_dir(),
        &host_config(&registry, &dir.path().join("data"), &by_digest, ""),
    )
    .await;
    assert_eq!(which(&host).await, "echo");
    assert_eq!(health_digest(&host).await.as_deref(), Some(digest.as_str()));
}

#[tokio::test]
async fn two_replicas_converge_on_one_digest() {
    let Some(Bench { dir, registry, cli }) = bench(false).await else {
        return;
    };
    let reference = registry.reference("team/orders:live");
    push(&cli, &echo_wasm(), &reference, &[]);
    let replica = |n: u32| {
        let data = dir.path().join(format!("data{n}"));
        refreshed(host_config(&registry, &data, &reference, ""))
    };
    let a = TestHost::start(&common::testkit_dir(), &replica(1)).await;
    let b = TestHost::start(&common::testkit_dir(), &replica(2)).await;
    assert_eq!((which(&a).await, which(&b).await), ("echo", "echo"));

    let v2 = push(&cli, &testkit_wasm(), &reference, &[]);
    // Counted from when the tag has moved (see the test above).
    let (before_a, before_b) = (
        fetches(&a, "unchanged").await,
        fetches(&b, "unchanged").await,
    );
    for (host, before) in [(&a, before_a), (&b, before_b)] {
        wait_until(
            "the replica serves the new digest",
            Duration::from_secs(60),
            || async { health_digest(host).await.as_deref() == Some(v2.as_str()) },
        )
        .await;
        assert_eq!(which(host).await, "testkit");
        // Within one refresh (one under way when the push finished may have seen v1).
        assert!(fetches(host, "unchanged").await - before <= 1.0);
    }
}

#[tokio::test]
async fn an_oversized_or_silent_registry_is_refused() {
    let Some(Bench { dir, registry, cli }) = bench(false).await else {
        return;
    };
    let reference = registry.reference("team/orders:1.4");
    push(&cli, &echo_wasm(), &reference, &[]);
    let message = start_error(
        &host_config(
            &registry,
            &dir.path().join("data"),
            &reference,
            "max_artifact_size = \"16KiB\"",
        ),
        "over the limit",
    )
    .await;
    assert!(message.contains("over max_artifact_size"), "{message}");

    // A registry that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let config = format!(
        "insecure_registries = [{addr:?}]\ndata_dir = {:?}\npull_timeout = \"1s\"\n\
         [keys]\nversion = \"echo\"\n\
         [plugins.echo]\nsource = {{ oci = \"{addr}/team/orders:1.4\" }}\n",
        dir.path().join("data").display().to_string()
    );
    let message = start_error(&config, "a silent registry").await;
    assert!(
        message.contains(&format!("{addr}/team/orders:1.4")),
        "{message}"
    );
    assert!(message.contains("never pulled"), "{message}");
    held.abort();
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn a_registry_behind_a_private_ca_is_trusted_through_registry_ca() {
    if !built() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::start_with_tls(&dir.path().join("registry")).await;
    let ca = registry.ca.clone().expect("a TLS registry has a CA");
    let reference = registry.reference("team/orders:1.4");

    // Not trusted by default: refused, and the error says what to set.
    let untrusting = dir.path().join("untrusting.toml");
    std::fs::write(&untrusting, "[server]\n").expect("writing the config");
    let (code, _, stderr) = try_push(&untrusting, &echo_wasm(), &reference, &[]);
    assert_ne!(code, 0, "pushed to a registry whose CA is not trusted");
    assert!(stderr.contains("registry_ca"), "{stderr}");

    // Trusted through `registry_ca`: `push`, then a host serves it over HTTPS.
    let trusting = dir.path().join("trusting.toml");
    std::fs::write(&trusting, format!("[server]\nregistry_ca = {ca:?}\n")).expect("writing");
    let digest = push(&trusting, &echo_wasm(), &reference, &[]);
    let plugin =
        format!("[keys]\nversion = \"echo\"\n[plugins.echo]\nsource = {{ oci = {reference:?} }}\n");
    let data = dir.path().join("data").display().to_string();
    let config = format!("registry_ca = {ca:?}\ndata_dir = {data:?}\n{plugin}");
    let host = TestHost::start(&common::testkit_dir(), &config).await;
    assert_eq!(which(&host).await, "echo");
    assert_eq!(health_digest(&host).await.as_deref(), Some(digest.as_str()));

    // A file that holds no certificate is a config problem with its key.
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").expect("writing");
    let message = start_error(
        &format!("registry_ca = {not_pem:?}\ndata_dir = {data:?}\n{plugin}"),
        "a registry_ca without certificates",
    )
    .await;
    assert!(
        message.contains("server.registry_ca") && message.contains("no PEM certificate"),
        "{message}"
    );
}

#[tokio::test]
async fn annotations_reach_the_manifest_and_a_build_time_makes_a_push_reproducible() {
    let Some(Bench {
        dir: _dir,
        registry,
        cli,
    }) = bench(false).await
    else {
        return;
    };
    let reference = registry.reference("team/orders:1.4");
    let push_annotated = || {
        let (code, stdout, stderr) = optech(
            &[
                "push",
                &echo_wasm().display().to_string(),
                &reference,
                "--config",
                &cli.display().to_string(),
                "--annotation",
                "org.opencontainers.image.source=https://github.com/acme/orders",
                "-a",
                "org.opencontainers.image.created=2026-01-01T00:00:00Z",
            ],
            &[],
        );
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let first = push_annotated();
    assert_eq!(push_annotated(), first, "one build, one digest");
    let manifest = registry.manifest("team/orders", "1.4").await;
    let annotations = &manifest["annotations"];
    assert_eq!(
        annotations["org.opencontainers.image.source"], "https://github.com/acme/orders",
        "{manifest}"
    );
    assert_eq!(
        annotations["org.opencontainers.image.created"], "2026-01-01T00:00:00Z",
        "{manifest}"
    );
    // Without a build time, each push is its own.
    assert_ne!(push(&cli, &echo_wasm(), &reference, &[]), first);
}
