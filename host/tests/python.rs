//! Python plugins, built from source by `optech build`'s code (componentize-py
//! in the shared toolchain) and served by real hosts: the SDK's contract
//! (inputs, data, the two errors, config, log), outbound HTTP through the
//! allowlist, hostile code, async mode, hot reload under `optech dev`, and the
//! author's path from `optech new --lang python` to `optech send`, with the
//! scaffold's, the example's and the SDK's own pytest suites.
//!
//! Every host here keeps its compiled components in one shared folder, so the
//! 18 MB components are compiled by Cranelift once per change, not per test.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use common::swap::SwapLoad;
use common::{CLIENT_ID, Receiver, SECRET, TestHost, pykit_dir};
use serde_json::{Value, json};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pykit() -> PathBuf {
    common::build_pykit()
}

/// `[server]` keys that give a host its own data folder, whose compiled
/// components live in the folder every test here shares.
fn data_dir(dir: &Path) -> String {
    let shared = workspace().join("target/python-tests/compiled");
    std::fs::create_dir_all(&shared).unwrap();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&shared, data.join("compiled")).unwrap();
    format!("data_dir = {:?}\n", data.display().to_string())
}

/// A host serving `pykit` under `keys` (each key is also its behaviour) with
/// `settings` added to its `[plugins.pykit]` table.
async fn pykit_host(keys: &[&str], settings: &str) -> (TestHost, tempfile::TempDir) {
    let plugins = pykit();
    let dir = tempfile::tempdir().unwrap();
    let mut rest = data_dir(dir.path());
    rest.push_str("[keys]\n");
    for key in keys {
        rest.push_str(&format!("{key:?} = \"pykit\"\n"));
    }
    rest.push_str(&format!("[plugins.pykit]\n{settings}\n"));
    (TestHost::start(&plugins, &rest).await, dir)
}

#[tokio::test]
async fn inputs_become_data_and_exceptions_become_the_two_errors() {
    let (host, _dir) = pykit_host(
        &[
            "echo", "typed", "require", "invalid", "fail", "bug", "nothing",
        ],
        "",
    )
    .await;

    // Written by hand: `json!` would sort the names.
    let answer = host
        .post(r#"{"key": "echo", "inputs": {"b": "2", "a": "é", "n": 7}}"#)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert_eq!(answer.json()["data"], json!({"b": "2", "a": "é", "n": "7"}));
    // Request order survives into the data.
    let body = String::from_utf8_lossy(&answer.body).to_string();
    let (b, a, n) = (body.find("\"b\""), body.find("\"a\""), body.find("\"n\""));
    assert!(b < a && a < n, "{body}");

    let answer = host.ask("typed", json!({})).await;
    assert_eq!(
        answer.json()["data"],
        json!({"flag": "true", "count": "12", "ratio": "1.5", "list": "[1,\"a\"]", "text": "as is"})
    );

    let answer = host.ask("require", json!({})).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "invalid_input");
    assert_eq!(answer.json()["error"]["message"], "missing input `name`");
    assert_eq!(
        host.ask("require", json!({"name": "Ada"})).await.json()["data"],
        json!({"name": "Ada"})
    );

    let answer = host.ask("invalid", json!({})).await;
    assert_eq!(
        (answer.status, answer.error_code()),
        (400, "invalid_input".into())
    );
    assert_eq!(answer.json()["error"]["message"], "that will not do");

    let answer = host.ask("fail", json!({})).await;
    assert_eq!(
        (answer.status, answer.error_code()),
        (500, "plugin_error".into())
    );
    assert_eq!(answer.json()["error"]["message"], "boom");

    let answer = host.ask("bug", json!({})).await;
    assert_eq!(
        (answer.status, answer.error_code()),
        (500, "plugin_error".into())
    );
    assert_eq!(answer.json()["error"]["message"], "KeyError: 'missing'");

    let answer = host.ask("nothing", json!({})).await;
    assert_eq!(answer.status, 400, "{}", answer.json());
}

#[tokio::test]
async fn the_store_through_the_sdk_and_the_hosts_wasi_keyvalue() {
    let (host, _dir) = pykit_host(&["kv"], "stores = [\"own\"]").await;
    let answer = host.ask("kv", json!({"bucket": "own"})).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert_eq!(
        answer.json()["data"],
        json!({"token": "abc", "missing": "None", "count": "2", "swapped": "true",
               "lost": "false", "raw": "0,255", "gone": "true", "keys": "count,leader,token"})
    );
    let again = host.ask("kv", json!({"bucket": "own"})).await;
    assert_eq!(
        again.json()["data"]["count"],
        "4",
        "the count outlived the instance"
    );
    let denied = host.ask("kv", json!({"bucket": "other"})).await;
    let message = denied.json()["data"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("bucket `other` is not granted") && message.contains("`stores`"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_log_and_print_reach_the_host_log() {
    pykit();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("optech.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplugins_dir = {:?}\n{}\
             [keys]\nconfig = \"pykit\"\n[plugins.pykit.config]\ngreeting = \"bonjour\"\n",
            pykit_dir().display().to_string(),
            data_dir(dir.path())
        ),
    )
    .unwrap();
    let process = common::start_process_with(&config, "info");
    let client = reqwest::Client::new();
    let body = json!({"key": "config", "inputs": {"name": "Ada"}}).to_string();
    let response = common::post_signed(&client, &process.url, body).await;
    let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        answer["data"],
        json!({"greeting": "bonjour", "absent": "None"})
    );
    for line in [
        "pykit log line for Ada",
        "pykit warn line",
        "pykit printed line",
    ] {
        process.wait_for_log(line, Duration::from_secs(10)).await;
    }
    let lines = process.lines.lock().unwrap().clone();
    let logged = lines.iter().find(|l| l.contains("pykit log line")).unwrap();
    assert!(
        logged.contains("INFO") && logged.contains("pykit"),
        "the line carries its level and plugin: {logged}"
    );
    let warned = lines
        .iter()
        .find(|l| l.contains("pykit warn line"))
        .unwrap();
    assert!(warned.contains("WARN"), "{warned}");
}

/// Path and `authorization` of each request a back end got.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A back end on loopback that records what it gets.
struct BackEnd {
    addr: SocketAddr,
    seen: Seen,
}

impl BackEnd {
    async fn start() -> BackEnd {
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new()
            .route(
                "/orders/{id}",
                axum::routing::get(|| async {
                    (
                        [("content-type", "application/json")],
                        r#"{"status":"shipped"}"#,
                    )
                }),
            )
            .route(
                "/items",
                axum::routing::post(|headers: HeaderMap, body: String| async move {
                    let kind = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    (axum::http::StatusCode::CREATED, format!("{kind} {body}"))
                }),
            )
            .route(
                "/big",
                axum::routing::get(|| async { vec![b'x'; 64 << 10] }),
            )
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let record = record.clone();
                    async move {
                        let auth = request
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        record
                            .lock()
                            .unwrap()
                            .push((request.uri().path().to_string(), auth));
                        next.run(request).await
                    }
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        BackEnd { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A back end that reads a request and never answers; notes when the client hangs up.
async fn stalling_back_end() -> (SocketAddr, Arc<AtomicBool>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let flag = flag.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut request = Vec::new();
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let hung_up =
                    tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buf)).await;
                if matches!(hung_up, Ok(Ok(0)) | Ok(Err(_))) {
                    flag.store(true, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, closed)
}

#[tokio::test]
async fn http_reaches_an_allowed_back_end_with_the_bearer_token() {
    let back_end = BackEnd::start().await;
    let (host, _dir) = pykit_host(
        &["fetch", "post"],
        &format!(
            "allowed_hosts = [{:?}]\n[plugins.pykit.config]\nbase_url = {:?}\ntoken = \"s3cret\"\n",
            back_end.url(),
            back_end.url()
        ),
    )
    .await;
    let answer = host.ask("fetch", json!({"path": "/orders/A-17"})).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert_eq!(
        answer.json()["data"],
        json!({"status": "200", "body": "{\"status\":\"shipped\"}", "type": "application/json"})
    );
    assert_eq!(
        back_end.seen.lock().unwrap().as_slice(),
        [(
            "/orders/A-17".to_string(),
            Some("Bearer s3cret".to_string())
        )]
    );

    let answer = host.ask("post", json!({"name": "é"})).await;
    assert_eq!(
        answer.json()["data"],
        json!({"status": "201", "body": "application/json {\"name\":\"é\"}"})
    );
}

#[tokio::test]
async fn a_refused_host_is_never_reached_and_the_error_says_denied() {
    let allowed = BackEnd::start().await;
    let (refused, connections) = common::counting_listener().await;
    let (host, _dir) = pykit_host(
        &["fetch", "classify"],
        &format!(
            "allowed_hosts = [{:?}]\n[plugins.pykit.config]\nbase_url = \"http://{refused}\"\n",
            allowed.url()
        ),
    )
    .await;
    let answer = host.ask("fetch", json!({"path": "/orders/A-17"})).await;
    assert_eq!(
        (answer.status, answer.error_code()),
        (500, "plugin_error".into())
    );
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        message,
        format!("request to {refused} denied: not in allowed_hosts")
    );

    let caught = host
        .ask("classify", json!({"url": format!("http://{refused}/x")}))
        .await;
    assert_eq!(
        caught.json()["data"]["error"],
        "Denied",
        "{}",
        caught.json()
    );
    assert_eq!(caught.json()["data"]["host"], refused.to_string());
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a refused host was reached"
    );
    assert!(allowed.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_hosts_http_errors_arrive_as_their_classes() {
    let back_end = BackEnd::start().await;
    let (stalling, _) = stalling_back_end().await;
    // A port with no listener: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (host, _dir) = pykit_host(
        &["classify"],
        "allowed_hosts = [\"http://127.0.0.1:*\"]\nmax_http_response = \"16KiB\"\nhttp_timeout = \"10s\"\n",
    )
    .await;
    let cases = [
        (format!("{}/big", back_end.url()), "30", "TooLarge"),
        (format!("http://{stalling}/stall"), "0.3", "Timeout"),
        (format!("http://{closed}/x"), "30", "ConnectError"),
        ("http://10.0.0.1/x".to_string(), "30", "Denied"),
        ("ftp://127.0.0.1/x".to_string(), "30", "Error"),
    ];
    for (url, timeout, class) in cases {
        let answer = host
            .ask("classify", json!({"url": url, "timeout": timeout}))
            .await;
        assert_eq!(answer.status, 200, "{url}: {}", answer.json());
        assert_eq!(
            answer.json()["data"]["error"],
            class,
            "{url}: {}",
            answer.json()
        );
    }
}

#[tokio::test]
async fn a_stalled_back_end_is_a_504_at_the_calls_timeout() {
    let (stalling, closed) = stalling_back_end().await;
    let (host, _dir) = pykit_host(
        &["fetch"],
        &format!(
            "timeout = \"1s\"\nhttp_timeout = \"30s\"\nallowed_hosts = [\"http://{stalling}\"]\n\
             [plugins.pykit.config]\nbase_url = \"http://{stalling}\"\n"
        ),
    )
    .await;
    let started = Instant::now();
    let answer = host.ask("fetch", json!({"path": "/stall"})).await;
    let took = started.elapsed();
    eprintln!(
        "a back end stalling 30 s under a 1 s timeout: {} after {took:?}",
        answer.status
    );
    assert_eq!(answer.status, 504, "{}", answer.json());
    assert!(took >= Duration::from_secs(1), "answered after {took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    common::wait_until(
        "the back end sees the connection closed",
        Duration::from_secs(5),
        || async { closed.load(Ordering::SeqCst) },
    )
    .await;
}

#[tokio::test]
async fn an_endless_loop_is_a_504_and_the_next_request_is_served() {
    let (host, _dir) = pykit_host(&["spin", "echo"], "timeout = \"1s\"\n").await;
    let started = Instant::now();
    let answer = host.ask("spin", json!({})).await;
    let took = started.elapsed();
    eprintln!(
        "`while True: pass` under a 1 s timeout: {} after {took:?}",
        answer.status
    );
    assert_eq!(answer.status, 504, "{}", answer.json());
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    let next = host.ask("echo", json!({"after": "spin"})).await;
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["data"], json!({"after": "spin"}));
}

#[tokio::test]
async fn a_large_allocation_fails_only_that_request() {
    let (host, _dir) = pykit_host(&["alloc", "echo"], "memory = \"64MiB\"\n").await;
    let answer = host.ask("alloc", json!({})).await;
    assert_eq!(answer.status, 500, "{}", answer.json());
    eprintln!("1 GiB under memory = 64MiB: {}", answer.json());
    let next = host.ask("echo", json!({"after": "alloc"})).await;
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["data"], json!({"after": "alloc"}));
}

#[tokio::test]
async fn modules_come_from_the_build_and_reused_instances_keep_module_state() {
    let (host, _dir) = pykit_host(
        &["imported", "lazy", "calls", "version"],
        "requests_per_instance = 100\n",
    )
    .await;
    let answer = host.ask("imported", json!({})).await;
    assert_eq!(answer.json()["data"], json!({"year": "2026"}));
    // A component has no files at run time: a module first imported on a
    // request is not there, and the error says what to do.
    let answer = host.ask("lazy", json!({})).await;
    assert_eq!(answer.status, 500, "{}", answer.json());
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with("ModuleNotFoundError: No module named 'decimal'")
            && message.contains("import it at the top of app.py"),
        "{message}"
    );
    let version = host.ask("version", json!({})).await.json();
    eprintln!("inside the component: {}", version["data"]);
    assert_eq!(version["data"]["platform"], "wasi");
    // One instance at a time serves these in turn, so its module state grows.
    let mut counts = Vec::new();
    for _ in 0..3 {
        let data = host.ask("calls", json!({})).await.json()["data"].clone();
        counts.push(data["calls"].as_str().unwrap().parse::<u64>().unwrap());
    }
    assert!(counts.windows(2).all(|w| w[1] > w[0]), "{counts:?}");
}

#[tokio::test]
async fn async_mode_delivers_the_signed_answer() {
    let (host, _dir) = pykit_host(&["echo"], "mode = \"async\"\n").await;
    let receiver = Receiver::start().await;
    let link = receiver.link("py1");
    let answer = host
        .post(&json!({"link": link, "key": "echo", "inputs": {"q": "où?"}}).to_string())
        .await;
    assert_eq!(
        answer.status,
        202,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    receiver.wait_for(1, Duration::from_secs(30)).await;
    let delivery = &receiver.to(&link)[0];
    assert_eq!(delivery.json(), json!({"data": {"q": "où?"}}));
    let signature = delivery.headers["x-optech-signature"].as_bytes();
    host.signer.verify(Some(signature), &delivery.body).unwrap();
}

// --- The author's path: `optech new`, `build`, `send`, `dev`, pytest -----------

/// A project folder inside this checkout, with an empty `[keys]` table.
fn project() -> tempfile::TempDir {
    let parent = workspace().join("target/cli-tests");
    std::fs::create_dir_all(&parent).unwrap();
    let dir = tempfile::tempdir_in(parent).unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::write(
        dir.path().join("optech.toml"),
        format!(
            "# a project made by the test\n[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}\n[keys]\n",
            data_dir(dir.path())
        ),
    )
    .unwrap();
    dir
}

fn optech(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_optech"))
        .args(args)
        .current_dir(dir)
        .env("OPTECH_CLIENT_SECRET", SECRET)
        .env("OPTECH_CLIENT_ID", CLIENT_ID)
        .env("NO_COLOR", "1")
        .output()
        .expect("running optech")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A Python with pytest and mypy for the suites below, made once in
/// `target/python-test-env` (the SDK comes from `sdk-py/src` on PYTHONPATH).
fn test_python() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY
        .get_or_init(|| {
            let env = workspace().join("target/python-test-env");
            let python = env.join("bin/python");
            let ready = env.join("optech-ready");
            if !ready.is_file() {
                let _ = std::fs::remove_dir_all(&env);
                let made = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&env)
                    .output();
                let made = made.expect("running python3 (Python 3 is needed for these tests)");
                assert!(made.status.success(), "{}", text(&made));
                let pip = Command::new(&python)
                    .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                    .args(["pytest==8.3.4", "mypy==1.14.1"])
                    .output()
                    .unwrap();
                assert!(pip.status.success(), "{}", text(&pip));
                std::fs::write(&ready, "").unwrap();
            }
            python
        })
        .clone()
}

/// Runs `python -m ARGS` in `dir` with the SDK from this checkout.
fn python_module(dir: &Path, args: &[&str]) -> Output {
    Command::new(test_python())
        .arg("-m")
        .args(args)
        .current_dir(dir)
        .env("PYTHONPATH", workspace().join("sdk-py/src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap()
}

#[test]
fn the_sdks_and_the_examples_unit_tests_pass_and_the_sdk_type_checks() {
    for dir in [
        workspace().join("sdk-py"),
        workspace().join("plugins/orders-py"),
    ] {
        let out = python_module(&dir, &["pytest", "-q", "-p", "no:cacheprovider"]);
        assert!(out.status.success(), "{}: {}", dir.display(), text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(" passed"),
            "{}",
            text(&out)
        );
    }
    let out = python_module(&workspace().join("sdk-py"), &["mypy", "--no-incremental"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_build_send_and_pytest_for_a_python_plugin() {
    let project = project();
    let dir = project.path();
    let out = optech(dir, &["new", "greeter", "--lang", "python"]);
    assert!(out.status.success(), "{}", text(&out));
    let config = std::fs::read_to_string(dir.join("optech.toml")).unwrap();
    assert!(config.contains("# a project made by the test"), "{config}");
    assert!(config.contains("greeter = \"greeter\""), "{config}");
    for file in ["app.py", "test_app.py", "requirements.txt", ".gitignore"] {
        assert!(dir.join("plugins/greeter").join(file).is_file(), "{file}");
    }

    // The scaffold's unit tests pass with plain pytest, no WebAssembly.
    let out = python_module(
        &dir.join("plugins/greeter"),
        &["pytest", "-q", "-p", "no:cacheprovider"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 passed"),
        "{}",
        text(&out)
    );

    let out = optech(dir, &["build"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("building plugin `greeter`") && said.contains("built `greeter` in"),
        "{said}"
    );
    assert!(dir.join("plugins/greeter.wasm").is_file());

    let process = common::start_process(&dir.join("optech.toml"));
    let out = optech(dir, &["send", "greeter", "name=Ada", "--url", &process.url]);
    assert!(out.status.success(), "{}", text(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["data"],
        json!({"message": "hello, Ada!", "key": "greeter"})
    );
    let out = optech(dir, &["send", "greeter", "--url", &process.url]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("missing input `name`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_error_names_the_plugin_and_python_says_why() {
    let project = project();
    let dir = project.path();
    let plugin = dir.join("plugins/broken");
    std::fs::create_dir_all(&plugin).unwrap();
    std::fs::write(plugin.join("app.py"), "def handle(req):\n    return {}\n").unwrap();
    let out = optech(dir, &["build"]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("building plugin `broken`"), "{said}");
    assert!(
        said.contains("no handler") && said.contains("@optech_sdk.handler"),
        "{said}"
    );
    assert!(said.contains("plugin `broken` failed to build"), "{said}");
}

/// Saving a Python plugin under `optech dev` serves the new code, and while it
/// is rebuilt and swapped every answer is exactly the old version's or the new
/// one's: the old until the save, never the old once the new one has been
/// served (`common::swap`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_hot_swaps_a_saved_python_plugin_with_no_failed_request() {
    let project = project();
    let dir = project.path();
    let out = optech(dir, &["new", "hot", "--lang", "python"]);
    assert!(out.status.success(), "{}", text(&out));
    let dev = common::start_dev(&dir.join("optech.toml"));
    let url = dev.url.clone();
    let ask = move |url: String| async move {
        let body = json!({"key": "hot", "inputs": {"name": "Ada"}}).to_string();
        common::swap::signed_answer(&url, body).await
    };
    let (status, old) = ask(url.clone()).await.unwrap();
    let first: Value = serde_json::from_str(&old).unwrap_or_default();
    assert_eq!(
        (status, first),
        (
            200,
            json!({"data": {"message": "hello, Ada!", "key": "hot"}})
        ),
        "{old}"
    );
    // The exact bodies the load accepts: the old version's and the new one's.
    let new = old.replace("hello, Ada!", "hi, Ada!");

    let load = {
        let url = url.clone();
        SwapLoad::start(old, new, Duration::ZERO, move || ask(url.clone()))
    };
    let app = dir.join("plugins/hot/app.py");
    let source = std::fs::read_to_string(&app).unwrap();
    let edited = source.replace("\"hello\"", "\"hi\"");
    assert_ne!(
        source, edited,
        "the scaffold's default greeting is \"hello\""
    );
    let limit = Duration::from_secs(600);
    load.wait_for_old(limit).await;
    load.saving();
    let saved = Instant::now();
    std::fs::write(&app, edited).unwrap();
    load.wait_for_new(limit).await;
    let took = saved.elapsed().saturating_sub(load.tally().new_for());
    let tally = load.finish().await;
    eprintln!(
        "a saved Python plugin served its new code {took:?} after the save; {} old and {} new \
         answers meanwhile, none other",
        tally.old, tally.new
    );
}
