//! Shared by the integration tests: builds the plugins once (through the same
//! code as `optech build`), starts real hosts on ephemeral ports, signs requests.

#![allow(dead_code)]

pub mod otlp;
pub mod registry;
pub mod swap;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use optech_host::build::{self, BuildDirs};
use optech_host::config::Config;
use optech_host::signature::Signer;
use optech_host::{Host, Identity};
use serde_json::Value;

pub const SECRET: &str = "test-secret";
pub const CLIENT_ID: &str = "test-client";

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the Rust plugins of `plugins/` and `host/tests/plugins/` once per
/// test binary (the TypeScript ones need Node: [`build_js_plugins`]).
pub fn build_plugins() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| build_language("rust"))
}

/// Builds the TypeScript/JavaScript plugins of `plugins/` and
/// `host/tests/plugins/` once per test binary, against the SDK in `sdk-js/`
/// built from its source first.
pub fn build_js_plugins() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        build_sdk_js()?;
        build_language("js")
    })
}

/// Builds every plugin of one language, through `optech build`'s code.
fn build_language(language: &str) -> Result<(), String> {
    let dirs = BuildDirs::with_target(workspace().join("target/plugins"));
    for dir in [examples_dir(), testkit_dir()] {
        let plugins = build::discover(&dir).map_err(|e| format!("{e:#}"))?;
        for plugin in plugins.iter().filter(|p| p.language() == language) {
            build::build(plugin, &dirs, &dir)
                .map_err(|e| format!("building {}: {e:#}", plugin.name))?;
        }
    }
    Ok(())
}

/// The folder of the Python test plugin `pykit` (kept apart from
/// `host/tests/plugins`, so tests that need no Python do not build it).
pub fn pykit_dir() -> PathBuf {
    workspace().join("host/tests/python")
}

/// Builds `pykit` once per test binary, through `optech build`'s code, and
/// returns its folder (`pykit.wasm` is in it).
pub fn build_pykit() -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let dirs = BuildDirs::with_target(workspace().join("target/plugins"));
        build::build_all(&pykit_dir(), &dirs)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    });
    if let Err(e) = built {
        panic!("building the Python test plugin failed: {e}");
    }
    pykit_dir()
}

/// `npm ci` and `npm run build` in `sdk-js/`: the plugins in this repository
/// link the SDK's folder, so its `dist/` must be built from the current source.
pub fn build_sdk_js() -> Result<(), String> {
    let sdk = workspace().join("sdk-js");
    for args in [&["ci", "--no-audit", "--no-fund"][..], &["run", "build"]] {
        let out = std::process::Command::new("npm")
            .args(args)
            .current_dir(&sdk)
            .output()
            .map_err(|e| format!("running npm {args:?} in sdk-js: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm {args:?} in sdk-js failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// Whether Node.js is installed, for the tests of TypeScript plugins. Without it
/// they are skipped with a message, except in CI (`OPTECH_REQUIRE_NODE`), where
/// that is a failure.
pub fn node_available() -> bool {
    let found = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("OPTECH_REQUIRE_NODE").is_none(),
            "node is not installed, and CI requires the TypeScript plugin tests"
        );
        eprintln!("skipped: install Node.js 20+ (with npm) to run the TypeScript plugin tests");
    }
    found
}

/// The folder of the example plugins and their built `.wasm` files.
pub fn examples_dir() -> PathBuf {
    workspace().join("plugins")
}

/// The folder of the test-only plugins and their built `.wasm` files.
pub fn testkit_dir() -> PathBuf {
    workspace().join("host/tests/plugins")
}

pub fn testkit_wasm() -> PathBuf {
    testkit_dir().join("testkit.wasm")
}

/// A host started from a config text, serving on 127.0.0.1 at an ephemeral port.
pub struct TestHost {
    pub host: Host,
    pub url: String,
    pub client: reqwest::Client,
    pub signer: Signer,
    pub dir: tempfile::TempDir,
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `code` of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.json()))
            .to_string()
    }
}

pub fn config_text(plugins_dir: &Path, rest: &str) -> String {
    format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\nplugins_dir = {:?}\n{rest}",
        plugins_dir.display().to_string()
    )
}

impl TestHost {
    /// Starts a host whose `[server]` table gets `plugins_dir` and then `rest` (which may add
    /// more `[server]` keys first, then other tables).
    pub async fn start(plugins_dir: &Path, rest: &str) -> TestHost {
        Self::try_start(plugins_dir, rest, None)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub async fn try_start(
        plugins_dir: &Path,
        rest: &str,
        previous_secret: Option<&str>,
    ) -> anyhow::Result<TestHost> {
        Self::try_start_with(plugins_dir, rest, previous_secret, None).await
    }

    /// [`TestHost::start`] with the config's `{ env = ... }` values (an admin
    /// token, plugin secrets) taken from `env`, not the process environment.
    pub async fn start_with_env(
        plugins_dir: &Path,
        rest: &str,
        env: &optech_host::credentials::Environment,
    ) -> TestHost {
        Self::try_start_with(plugins_dir, rest, None, Some(env))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`TestHost::start_with_env`] that returns the error instead of panicking.
    pub async fn try_start_env(
        plugins_dir: &Path,
        rest: &str,
        env: &optech_host::credentials::Environment,
    ) -> anyhow::Result<TestHost> {
        Self::try_start_with(plugins_dir, rest, None, Some(env)).await
    }

    async fn try_start_with(
        plugins_dir: &Path,
        rest: &str,
        previous_secret: Option<&str>,
        env: Option<&optech_host::credentials::Environment>,
    ) -> anyhow::Result<TestHost> {
        if let Err(e) = build_plugins() {
            panic!("building the plugins failed: {e}");
        }
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("optech.toml");
        std::fs::write(&path, config_text(plugins_dir, rest))?;
        let config = match env {
            Some(env) => Config::load_with(&path, env)?,
            None => Config::load(&path)?,
        };
        let signer = Signer::new(SECRET.as_bytes(), previous_secret.map(str::as_bytes));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let host = Host::start(&config, Identity::new(signer.clone(), CLIENT_ID), listener).await?;
        let url = format!("http://{}", host.addr());
        Ok(TestHost {
            host,
            url,
            client: reqwest::Client::new(),
            signer,
            dir,
        })
    }

    /// The admin listener's base URL.
    pub fn admin_url(&self) -> String {
        format!(
            "http://{}",
            self.host.admin_addr().expect("the admin listener is on")
        )
    }

    /// POSTs `body` to `/` signed with the test secret.
    pub async fn post(&self, body: &str) -> Answer {
        let signature = self.signer.sign(body.as_bytes());
        self.send(
            self.client
                .post(&self.url)
                .header("content-type", "application/json")
                .header("x-optech-signature", signature)
                .body(body.to_string()),
        )
        .await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request failed");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("reading body").to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// POSTs `body` signed, with the request id `id`; the status.
    pub async fn ask_with_id(&self, id: &str, body: Value) -> u16 {
        let body = body.to_string();
        self.client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-optech-signature", self.signer.sign(body.as_bytes()))
            .header("x-request-id", id)
            .body(body)
            .send()
            .await
            .expect("request failed")
            .status()
            .as_u16()
    }

    /// POSTs `{"key": key, "inputs": inputs}` signed.
    pub async fn ask(&self, key: &str, inputs: Value) -> Answer {
        self.post(&serde_json::json!({ "key": key, "inputs": inputs }).to_string())
            .await
    }
}

/// One POST a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: String,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
    /// What the receiver answered.
    pub status: u16,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("delivery body is JSON")
    }
}

/// A stand-in for the platform's `link` endpoint: records every POST and answers
/// from a script (then 200).
/// Replies a [`Receiver`] gives, in order: a status and headers.
type Script =
    std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<(u16, Vec<(String, String)>)>>>;

#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    pub deliveries: std::sync::Arc<std::sync::Mutex<Vec<Delivery>>>,
    script: Script,
    task: std::sync::Arc<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener)
    }

    /// Starts on a given port (e.g. one a link already points at).
    pub async fn start_on(port: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        Self::serve(listener)
    }

    fn serve(listener: tokio::net::TcpListener) -> Receiver {
        use axum::response::IntoResponse;
        let base = format!("http://{}", listener.local_addr().unwrap());
        let deliveries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let script: Script = Default::default();
        let (d, s) = (deliveries.clone(), script.clone());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (d, s) = (d.clone(), s.clone());
                async move {
                    let (status, reply_headers) =
                        s.lock().unwrap().pop_front().unwrap_or((200, Vec::new()));
                    d.lock().unwrap().push(Delivery {
                        path: uri.path().to_string(),
                        headers,
                        body: body.to_vec(),
                        at: std::time::Instant::now(),
                        status,
                    });
                    let mut response = axum::http::StatusCode::from_u16(status)
                        .unwrap()
                        .into_response();
                    for (name, value) in reply_headers {
                        let name = axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
                        response.headers_mut().insert(name, value.parse().unwrap());
                    }
                    response
                }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            base,
            deliveries,
            script,
            task: std::sync::Arc::new(task),
        }
    }

    /// Queues answers for the next POSTs: a status and an optional Retry-After.
    pub fn script(&self, replies: &[(u16, Option<&str>)]) {
        let mut script = self.script.lock().unwrap();
        for (status, retry_after) in replies {
            let headers = retry_after
                .map(|v| vec![("retry-after".to_string(), v.to_string())])
                .unwrap_or_default();
            script.push_back((*status, headers));
        }
    }

    /// Queues one answer with any headers (a redirect's `location`, say).
    pub fn script_reply(&self, status: u16, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.script.lock().unwrap().push_back((status, headers));
    }

    pub fn link(&self, id: &str) -> String {
        format!("{}/ingest/{id}", self.base)
    }

    pub fn count(&self) -> usize {
        self.deliveries.lock().unwrap().len()
    }

    pub fn to(&self, link: &str) -> Vec<Delivery> {
        let path = link.trim_start_matches(&self.base).to_string();
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.path == path)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` POSTs arrived, or panics after `limit`.
    pub async fn wait_for(&self, n: usize, limit: std::time::Duration) {
        let start = std::time::Instant::now();
        while self.count() < n {
            if start.elapsed() > limit {
                panic!(
                    "only {} of {n} deliveries arrived within {limit:?}",
                    self.count()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

/// The real `optech serve` binary, started as a child process.
pub struct Process {
    pub child: std::process::Child,
    pub url: String,
    /// The admin listener's base URL, if it is on.
    pub admin: Option<String>,
    /// Everything it has printed to stdout (its log), line by line.
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Everything it has printed to stderr, line by line (also passed on to
    /// the test's own stderr).
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    pub fn log_contains(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Waits until a log line contains `needle`, or panics after `limit`.
    pub async fn wait_for_log(&self, needle: &str, limit: std::time::Duration) {
        let start = std::time::Instant::now();
        while !self.log_contains(needle) {
            assert!(
                start.elapsed() < limit,
                "no {needle:?} in the log within {limit:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The admin `/healthz` entry of plugin `name`.
    pub async fn plugin_health(&self, name: &str) -> Value {
        plugin_health(
            self.admin.as_deref().expect("the admin listener is on"),
            name,
        )
        .await
    }
}

/// The admin `/healthz` entry of plugin `name`, from the admin listener at `admin`.
pub async fn plugin_health(admin: &str, name: &str) -> Value {
    let body = reqwest::get(format!("{admin}/healthz"))
        .await
        .expect("admin healthz")
        .bytes()
        .await
        .expect("reading admin healthz");
    let health: Value = serde_json::from_slice(&body).expect("admin healthz is JSON");
    health["plugins"]
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no plugin {name} in {health}"))
}

/// Waits until `check` holds, polling every 10 ms, or panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `optech serve --config <config>` with the test credentials and waits
/// for its "listening on" line.
pub fn start_process(config: &Path) -> Process {
    start_process_with(config, "info")
}

/// [`start_process`] with a log filter (`OPTECH_LOG`).
pub fn start_process_with(config: &Path, log: &str) -> Process {
    start_process_env(config, log, &[])
}

/// [`start_process_with`] with more environment variables.
pub fn start_process_env(config: &Path, log: &str, env: &[(&str, &str)]) -> Process {
    start_optech("serve", config, log, env)
}

/// `optech dev` (build, serve, rebuild on save) from the folder of `config`.
pub fn start_dev(config: &Path) -> Process {
    start_optech("dev", config, "info", &[])
}

/// Runs `optech SUBCOMMAND --config CONFIG` and waits until it listens.
fn start_optech(subcommand: &str, config: &Path, log: &str, env: &[(&str, &str)]) -> Process {
    use std::io::{BufRead, BufReader};
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_optech"));
    command.args([subcommand, "--config"]).arg(config);
    if subcommand == "dev" {
        // Where an author runs it: the project folder.
        let config = std::fs::canonicalize(config).expect("the config file exists");
        command.current_dir(config.parent().unwrap_or(Path::new("/")));
    }
    command
        .env("OPTECH_CLIENT_SECRET", SECRET)
        .env("OPTECH_CLIENT_ID", CLIENT_ID)
        .env("OPTECH_LOG", log)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("starting optech");
    // Drained from the start, so the child never blocks on a full pipe.
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = BufReader::new(child.stderr.take().unwrap());
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in errors.lines().map_while(Result::ok) {
            eprintln!("{line}");
            sink.lock().unwrap().push(line);
        }
    });
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout).lines();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut url = None;
    let admin = loop {
        let line = reader
            .next()
            .expect("optech exited before listening")
            .unwrap();
        lines.lock().unwrap().push(line.clone());
        if let Some(rest) = line.split("optech listening on ").nth(1) {
            url = Some(rest.split_whitespace().next().unwrap().to_string());
        }
        if let Some(rest) = line.split("admin listener on ").nth(1) {
            break Some(rest.split_whitespace().next().unwrap().to_string());
        }
        if line.contains("admin listener is off") {
            break None;
        }
    };
    let url = url.expect("the listening line comes before the admin line");
    // Keep draining stdout so the child never blocks on a full pipe.
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in reader.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Process {
        child,
        url,
        admin,
        lines,
        stderr,
    }
}

/// POSTs `body` to `url` as JSON, signed with the test secret, the way the platform does.
pub async fn post_signed(client: &reqwest::Client, url: &str, body: String) -> reqwest::Response {
    try_post_signed(client, url, body)
        .await
        .expect("request failed")
}

/// [`post_signed`], for tests where the request itself may fail.
pub async fn try_post_signed(
    client: &reqwest::Client,
    url: &str,
    body: String,
) -> Result<reqwest::Response, reqwest::Error> {
    let signature = Signer::new(SECRET.as_bytes(), None).sign(body.as_bytes());
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-optech-signature", signature)
        .body(body)
        .send()
        .await
}

/// How many records in the SQLite outbox under `data_dir` are still open, read
/// the way an operator would, with SQL.
pub fn open_records(data_dir: &Path) -> usize {
    let db = rusqlite::Connection::open_with_flags(
        data_dir.join("outbox.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("opening the outbox");
    db.query_row(
        "SELECT count(*) FROM requests WHERE state IN ('accepted', 'answered')",
        [],
        |row| row.get::<_, i64>(0),
    )
    .expect("counting open records") as usize
}

/// Where a test host keeps its outbox.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// A fresh database of its own on the test PostgreSQL.
    Postgres(String),
}

impl Backend {
    /// A fresh database on the PostgreSQL named by `OPTECH_TEST_POSTGRES`.
    /// Without one, the test is skipped with a message, except in CI
    /// (`OPTECH_REQUIRE_POSTGRES`), where that is a failure.
    pub async fn postgres() -> Option<Backend> {
        let base = Self::postgres_available()?;
        Some(Backend::Postgres(fresh_database(&base).await))
    }

    /// `OPTECH_TEST_POSTGRES`, or `None` (skipped with a message) where it is
    /// not set, except in CI (`OPTECH_REQUIRE_POSTGRES`), where that is a failure.
    pub fn postgres_available() -> Option<String> {
        let Ok(base) = std::env::var("OPTECH_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("OPTECH_REQUIRE_POSTGRES").is_none(),
                "OPTECH_TEST_POSTGRES is not set, and CI requires the PostgreSQL tests"
            );
            eprintln!(
                "skipped: set OPTECH_TEST_POSTGRES=postgres://... (`.ci/postgres` starts a throw-away server) to run the PostgreSQL tests"
            );
            return None;
        };
        Some(base)
    }

    /// What a config's `[server]` table needs for this backend.
    pub fn server_keys(&self) -> String {
        match self {
            Backend::Sqlite => String::new(),
            Backend::Postgres(url) => format!("outbox = {url:?}\noutbox_lease = \"2s\"\n"),
        }
    }
}

/// A PostgreSQL server of the test's own (`.ci/postgres`), which it may crash
/// and restart without disturbing the tests that share `OPTECH_TEST_POSTGRES`.
/// Stopped and removed on drop.
pub struct PrivateCluster {
    pub url: String,
    dir: String,
}

impl PrivateCluster {
    /// Starts one where PostgreSQL is available (`OPTECH_TEST_POSTGRES` is
    /// set); `None`, skipping, where it is not (a failure in CI).
    pub fn start() -> Option<PrivateCluster> {
        Backend::postgres_available()?;
        let out = std::process::Command::new(repo_root().join(".ci/postgres"))
            .output()
            .expect("running .ci/postgres");
        assert!(
            out.status.success(),
            ".ci/postgres failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("no {name} from .ci/postgres: {text}"))
                .to_string()
        };
        Some(PrivateCluster {
            url: value("OPTECH_TEST_POSTGRES"),
            dir: value("OPTECH_PG_DIR"),
        })
    }

    fn ctl(&self, action: &str) {
        let out = std::process::Command::new(repo_root().join(".ci/postgres"))
            .args([action, &self.dir])
            .output()
            .expect("running .ci/postgres");
        assert!(
            out.status.success(),
            ".ci/postgres {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server at once, without a checkpoint, as a crash would.
    pub fn crash(&self) {
        self.ctl("crash");
    }

    /// Starts it again after [`PrivateCluster::crash`], on the same port.
    pub fn restart(&self) {
        self.ctl("restart");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo_root().join(".ci/postgres"))
            .args(["stop", &self.dir])
            .output();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate is in the workspace")
        .to_path_buf()
}

/// Creates an empty database on the server at `base` and returns its URL.
pub async fn fresh_database(base: &str) -> String {
    use sqlx::Connection as _;
    let name = format!("optech_test_{:016x}", rand_u64());
    let mut admin = sqlx::PgConnection::connect(base)
        .await
        .unwrap_or_else(|e| panic!("connecting to OPTECH_TEST_POSTGRES: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("creating a test database");
    let mut url = reqwest::Url::parse(base).expect("OPTECH_TEST_POSTGRES is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// Resident and peak memory (MiB) and thread count of a process, from /proc.
pub fn process_stats(pid: u32) -> (f64, f64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        field("VmRSS:") / 1024.0,
        field("VmHWM:") / 1024.0,
        field("Threads:") as u64,
    )
}

/// Writes `<dir>/optech.toml` for a real `optech serve` over the test plugins:
/// free ports, its own data folder, then `rest` (more `[server]` keys first).
pub fn process_config(dir: &Path, rest: &str) -> PathBuf {
    let path = dir.join("optech.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplugins_dir = {:?}\ndata_dir = {:?}\n{rest}",
        testkit_dir().display().to_string(),
        dir.join("data").display().to_string(),
    );
    std::fs::write(&path, text).expect("writing the config");
    path
}

/// The admin listener's `/metrics`, parsed with a Prometheus text-format parser.
pub async fn scrape(admin: &str) -> prometheus_parse::Scrape {
    let response = reqwest::get(format!("{admin}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not the Prometheus text format ({e}): {text}"))
}

/// The value of one series; a series that is not there fails the test (the
/// host creates every series with a fixed set of labels at start, at zero).
pub fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    find(scrape, metric, labels)
        .unwrap_or_else(|| panic!("no series {metric}{labels:?} in the scrape"))
}

/// A counter labelled with a key or plugin from the config: prometheus-client
/// writes such a series from its first increment on, so until then it is
/// absent, and counts 0. Anything else is read with [`value`].
pub fn counter(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    find(scrape, metric, labels).unwrap_or(0.0)
}

fn find(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

/// A listener on loopback that only counts the connections made to it: where
/// a refused destination points, to prove nothing reached it.
pub async fn counting_listener() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (addr, count)
}
