//! TypeScript plugins, built by `optech build`'s code from this checkout (the
//! SDK from its source) and served by the real binary: data, errors, config
//! and log, `fetch()` through the allowlist, hostile code, async mode; the
//! author's path (`optech new --lang ts`, `npm test`, `build`, `send`) against
//! the packaged SDK; hot reload of a saved source under `optech dev`; a missing
//! Node.js. Each needs Node.js 20+ and npm (skipped without, except in CI).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use common::swap::SwapLoad;
use common::{CLIENT_ID, Process, Receiver, SECRET, examples_dir, testkit_dir, workspace};
use serde_json::{Value, json};

/// Long enough for a cold build or compile on a busy 2-core machine.
const LONG: Duration = Duration::from_secs(600);

/// A back end on loopback: orders (echoing the bearer token), a body echo, and
/// `/together`, which answers only once three requests wait on it at once.
#[derive(Clone)]
struct BackEnd {
    addr: SocketAddr,
    /// The most `/together` requests that were waiting at once.
    together_max: Arc<AtomicUsize>,
}

impl BackEnd {
    async fn start() -> BackEnd {
        let waiting = Arc::new(AtomicUsize::new(0));
        let together_max = Arc::new(AtomicUsize::new(0));
        let max = together_max.clone();
        let app = axum::Router::new()
            .route(
                "/orders/{id}",
                get(
                    |axum::extract::Path(id): axum::extract::Path<String>, headers: HeaderMap| async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        if id == "A-17" {
                            axum::Json(json!({"id": id, "status": "shipped", "items": 3, "auth": auth}))
                                .into_response()
                        } else {
                            (axum::http::StatusCode::NOT_FOUND, "no such order").into_response()
                        }
                    },
                ),
            )
            .route("/echo-body", post(|body: String| async move { body }))
            .route(
                "/together",
                get(move || {
                    let (waiting, max) = (waiting.clone(), max.clone());
                    async move {
                        let now = waiting.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        // Answer when three wait at once; one at a time never gets there.
                        let deadline = Instant::now() + Duration::from_secs(5);
                        while max.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        waiting.fetch_sub(1, Ordering::SeqCst);
                        "done"
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        BackEnd { addr, together_max }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A back end that takes connections and never answers.
async fn stalling_listener() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// An answer from a host process.
struct Reply {
    status: u16,
    body: Value,
    raw: String,
}

impl Reply {
    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

async fn ask(url: &str, key: &str, inputs: Value) -> Reply {
    ask_body(url, json!({"key": key, "inputs": inputs})).await
}

async fn ask_body(url: &str, body: Value) -> Reply {
    let client = reqwest::Client::new();
    let response = common::post_signed(&client, url, body.to_string()).await;
    let status = response.status().as_u16();
    let raw = response.text().await.unwrap();
    let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Reply { status, body, raw }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn js_plugins_built() -> bool {
    if !common::node_available() {
        return false;
    }
    if let Err(e) = common::build_js_plugins() {
        panic!("building the TypeScript plugins failed: {e}");
    }
    true
}

/// The test plugin (`host/tests/plugins/jskit`) and the `orders-ts` example,
/// served by one `optech serve`: they compile once, whatever the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typescript_plugin_served_by_the_host() {
    if !js_plugins_built() {
        return;
    }
    let back_end = BackEnd::start().await;
    let (refused, refused_hits) = common::counting_listener().await;
    let stall = stalling_listener().await;
    let receiver = Receiver::start().await;
    let work = tempfile::tempdir().unwrap();
    let jskit = testkit_dir().join("jskit.wasm");
    let orders = examples_dir().join("orders-ts.wasm");
    let config = work.path().join("optech.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
admin_listen = ""
plugins_dir = {plugins:?}
data_dir = {data:?}

[keys]
echo = "js"
data = "js"
require = "js"
invalid = "js"
throw = "js"
async-echo = "js"
async-invalid = "js"
config = "js"
fetch = "js"
fetch-url = "js"
probe = "js"
post = "js"
parallel = "js"
kv = "js"
"hostile:kv" = "hostile"
"hostile:loop" = "hostile"
"hostile:alloc" = "hostile"
"hostile:never" = "hostile"
"hostile:echo" = "hostile"
"stall:fetch" = "stall"
"async:echo" = "async"
"order status" = "orders-ts"

[plugins.js]
source = {jskit:?}
allowed_hosts = ["{back_end}"]
stores = ["own"]
[plugins.js.config]
base_url = "{back_end}"
token = "tok-123"
greeting = "bonjour"

[plugins.hostile]
source = {jskit:?}
timeout = "1s"
memory = "64MiB"

[plugins.stall]
source = {jskit:?}
timeout = "1s"
http_timeout = "30s"
allowed_hosts = ["http://{stall}"]
[plugins.stall.config]
base_url = "http://{stall}"

[plugins.async]
source = {jskit:?}
mode = "async"

[plugins.orders-ts]
source = {orders:?}
allowed_hosts = ["{back_end}"]
[plugins.orders-ts.config]
base_url = "{back_end}"
token = "tok-456"
"#,
            plugins = testkit_dir().display().to_string(),
            data = work.path().join("data").display().to_string(),
            jskit = jskit.display().to_string(),
            orders = orders.display().to_string(),
            back_end = back_end.url(),
        ),
    )
    .unwrap();
    let host = common::start_process(&config);
    let url = host.url.clone();

    // Inputs in, data out, in order; non-strings as their JSON text.
    let echo = ask(&url, "echo", json!({"a": "1", "b": "two"})).await;
    assert_eq!(echo.status, 200, "{}", echo.raw);
    assert!(
        echo.raw.contains(r#"{"key":"echo","a":"1","b":"two"}"#),
        "order: {}",
        echo.raw
    );
    assert_eq!(
        echo.body["data"],
        json!({"key": "echo", "a": "1", "b": "two"})
    );
    // The store through the SDK and the host's wasi:keyvalue: every call once.
    let kv = ask(&url, "kv", json!({"bucket": "own"})).await;
    assert_eq!(
        kv.body["data"],
        json!({"token": "abc", "missing": "null", "count": "2", "swapped": "true",
               "lost": "false", "raw": "0,255", "gone": "true", "keys": "count,leader,token"}),
        "{}",
        kv.raw
    );
    let again = ask(&url, "kv", json!({"bucket": "own"})).await;
    assert_eq!(
        again.body["data"]["count"], "4",
        "the count outlived the instance"
    );
    let denied = ask(&url, "hostile:kv", json!({"bucket": "own"})).await;
    let message = denied.body["data"]["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("bucket `own` is not granted") && message.contains("`stores`"),
        "{}",
        denied.raw
    );

    let data = ask(&url, "data", json!({})).await;
    assert_eq!(
        data.body["data"],
        json!({"text": "as is", "number": "12", "yes": "true", "list": "[1,\"two\"]", "nothing": "null"}),
        "{}",
        data.raw
    );
    assert!(
        data.raw
            .contains(r#"{"text":"as is","number":"12","yes":"true""#),
        "order: {}",
        data.raw
    );

    // A missing input is a 400 naming it; InvalidInput a 400; any other throw a 500.
    let missing = ask(&url, "require", json!({})).await;
    assert_eq!(missing.status, 400, "{}", missing.raw);
    assert_eq!(missing.body["error"]["code"], "invalid_input");
    assert_eq!(missing.message(), "missing input `order_id`");
    let invalid = ask(&url, "invalid", json!({"order_id": "7"})).await;
    assert_eq!((invalid.status, invalid.message()), (400, "no order 7"));
    let thrown = ask(&url, "throw", json!({})).await;
    assert_eq!(thrown.status, 500, "{}", thrown.raw);
    assert_eq!(thrown.body["error"]["code"], "plugin_error");
    assert_eq!(thrown.message(), "the back end is on fire");
    // The same from a handler that returns a promise (the SDK's async path).
    let later = ask(&url, "async-echo", json!({"a": "1"})).await;
    assert_eq!(
        later.body["data"],
        json!({"key": "async-echo", "a": "1"}),
        "{}",
        later.raw
    );
    let invalid_later = ask(&url, "async-invalid", json!({})).await;
    assert_eq!(
        (invalid_later.status, invalid_later.message()),
        (400, "no order, after a wait")
    );

    // Config in; log and console.log lines out, into the host's log.
    let config_answer = ask(&url, "config", json!({"name": "greeting"})).await;
    assert_eq!(config_answer.body["data"]["value"], "bonjour");
    host.wait_for_log("config asked for greeting", Duration::from_secs(10))
        .await;
    host.wait_for_log("a console.log line", Duration::from_secs(10))
        .await;

    // fetch() to an allowed back end: its body, with the bearer token.
    let fetched = ask(&url, "fetch", json!({"path": "/orders/A-17"})).await;
    assert_eq!(fetched.body["data"]["status"], "200", "{}", fetched.raw);
    let order: Value =
        serde_json::from_str(fetched.body["data"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(order["auth"], "Bearer tok-123");
    assert_eq!(order["status"], "shipped");

    // A refused host is never reached, and the plugin's error says denied.
    let denied = ask(
        &url,
        "fetch-url",
        json!({"url": format!("http://{refused}/x")}),
    )
    .await;
    assert_eq!(denied.status, 500, "{}", denied.raw);
    assert!(
        denied.message().contains("denied by allowed_hosts"),
        "{}",
        denied.raw
    );
    let probe = ask(&url, "probe", json!({"url": format!("http://{refused}/x")})).await;
    assert_eq!(probe.body["data"]["reason"], "denied", "{}", probe.raw);
    assert_eq!(
        refused_hits.load(Ordering::SeqCst),
        0,
        "a refused host was reached"
    );

    // A body of several chunks goes out whole; requests run at once, timers fire.
    let posted = ask(&url, "post", json!({"size": "20000"})).await;
    assert_eq!(
        posted.body["data"],
        json!({"status": "200", "sent": "20011", "same": "true"}),
        "{}",
        posted.raw
    );
    let parallel = ask(&url, "parallel", json!({})).await;
    assert_eq!(
        parallel.body["data"],
        json!({"bodies": "done,done,done", "ticked": "true"}),
        "{}",
        parallel.raw
    );
    assert_eq!(back_end.together_max.load(Ordering::SeqCst), 3);

    // A back end that stalls for 30 s under timeout = "1s": a 504 within 1.5 s.
    let started = Instant::now();
    let stalled = ask(&url, "stall:fetch", json!({"path": "/x"})).await;
    let took = started.elapsed();
    assert_eq!(stalled.status, 504, "{}", stalled.raw);
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );

    // Hostile code fails its own request only.
    let looped = ask(&url, "hostile:loop", json!({})).await;
    assert_eq!(looped.status, 504, "{}", looped.raw);
    assert_eq!(looped.body["error"]["code"], "plugin_timeout");
    let next = ask(&url, "hostile:echo", json!({"after": "loop"})).await;
    assert_eq!(next.status, 200, "{}", next.raw);
    let alloc = ask(&url, "hostile:alloc", json!({})).await;
    assert_eq!(
        alloc.status, 500,
        "a 1 GiB allocation under 64 MiB: {}",
        alloc.raw
    );
    let next = ask(&url, "hostile:echo", json!({"after": "alloc"})).await;
    assert_eq!(next.body["data"]["after"], "alloc", "{}", next.raw);
    let never = ask(&url, "hostile:never", json!({})).await;
    assert_eq!(never.status, 504, "{}", never.raw);
    assert_eq!(never.body["error"]["code"], "plugin_timeout");
    let next = ask(&url, "hostile:echo", json!({"after": "never"})).await;
    assert_eq!(next.status, 200, "{}", next.raw);

    // Async mode: 202, then the signed delivery to the link.
    let link = receiver.link("js-async");
    let accepted = ask_body(
        &url,
        json!({"key": "async:echo", "inputs": {"q": "où?"}, "link": link}),
    )
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.raw);
    receiver.wait_for(1, Duration::from_secs(30)).await;
    let delivery = &receiver.to(&link)[0];
    assert_eq!(
        delivery.json(),
        json!({"data": {"key": "async:echo", "q": "où?"}})
    );
    let signer = optech_host::signature::Signer::new(SECRET.as_bytes(), None);
    assert_eq!(
        delivery.headers["x-optech-signature"].to_str().unwrap(),
        signer.sign(&delivery.body)
    );

    // The orders-ts example against the same back end.
    let order = ask(&url, "order status", json!({"order_id": "A-17"})).await;
    assert_eq!(order.status, 200, "{}", order.raw);
    assert_eq!(order.body["data"]["status"], "shipped");
    assert_eq!(order.body["data"]["items"], "3");
    assert_eq!(order.body["data"]["auth"], "Bearer tok-456");
    let unknown = ask(&url, "order status", json!({"order_id": "Z-9"})).await;
    assert_eq!((unknown.status, unknown.message()), (400, "no order Z-9"));
}

/// `npm pack` of `sdk-js/`, as it would be published; returns the tarball.
fn pack_sdk(into: &Path) -> PathBuf {
    common::build_sdk_js().unwrap();
    let out = Command::new("npm")
        .args(["pack", "--json", "--pack-destination"])
        .arg(into)
        .current_dir(workspace().join("sdk-js"))
        .output()
        .unwrap();
    assert!(out.status.success(), "npm pack: {}", text(&out));
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<&str> = listing[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for wanted in [
        "package.json",
        "README.md",
        "dist/index.js",
        "dist/index.d.ts",
        "dist/testing.js",
        "dist/testing.d.ts",
        "dist/backend/component.js",
        "wit/plugin.wit",
        "wit/js.wit",
        "wit/deps/http.wit",
        "wit/deps/keyvalue.wit",
        "dist/store.js",
    ] {
        assert!(files.contains(&wanted), "{wanted} not packed: {files:?}");
    }
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("src/") || f.starts_with("test/")),
        "{files:?}"
    );
    into.join(listing[0]["filename"].as_str().unwrap())
}

fn run_in(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {program} {args:?}: {e}"))
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

/// Outside this repository, as a user would: `optech new --lang ts` (and `js`),
/// `npm test`, `optech build`, `optech send` against a running host, with the
/// SDK from its packed tarball (it is not on npm yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_test_build_and_send_a_typescript_plugin() {
    if !common::node_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tarball = pack_sdk(work.path());
    let project = work.path().join("project");
    std::fs::create_dir_all(project.join("plugins")).unwrap();
    std::fs::write(
        project.join("optech.toml"),
        "# my host\n[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"\"\n\n[keys]\n",
    )
    .unwrap();

    for (name, lang) in [("greeter", "ts"), ("plain", "js")] {
        let out = optech(&project, &["new", name, "--lang", lang]);
        assert!(out.status.success(), "{}", text(&out));
        let plugin = project.join("plugins").join(name);
        let manifest = std::fs::read_to_string(plugin.join("package.json")).unwrap();
        assert!(
            manifest.contains(&format!(
                "\"optech-sdk\": \"^{}\"",
                env!("CARGO_PKG_VERSION")
            )),
            "{manifest}"
        );
        // Not on npm yet: point the dependency at the packed SDK.
        let out = run_in(
            &plugin,
            "npm",
            &[
                "pkg",
                "set",
                &format!("dependencies.optech-sdk=file:{}", tarball.display()),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        for args in [&["install", "--no-audit", "--no-fund"][..], &["test"]] {
            let out = run_in(&plugin, "npm", args);
            assert!(out.status.success(), "{lang}: npm {args:?}: {}", text(&out));
        }
    }
    let config = std::fs::read_to_string(project.join("optech.toml")).unwrap();
    assert!(
        config.contains("# my host") && config.contains("greeter = \"greeter\""),
        "{config}"
    );
    // Only the TypeScript one is built and served: one compile is enough.
    std::fs::remove_dir_all(project.join("plugins/plain")).unwrap();
    std::fs::write(
        project.join("optech.toml"),
        config.replace("plain = \"plain\"\n", ""),
    )
    .unwrap();

    let out = optech(&project, &["build"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("building plugin `greeter` (js,") && said.contains("built `greeter` in"),
        "{said}"
    );
    assert!(project.join("plugins/greeter.wasm").is_file());

    let host = common::start_process(&project.join("optech.toml"));
    let out = optech(
        &project,
        &["send", "greeter", "name=Ada", "--url", &host.url],
    );
    assert!(out.status.success(), "{}", text(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["data"],
        json!({"message": "hello, Ada!", "key": "greeter"})
    );
    let out = optech(&project, &["send", "greeter", "--url", &host.url]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("missing input `name`"));
}

/// A project whose `target/` is a link to a folder elsewhere (a build disk, a
/// shared cache) builds its TypeScript plugin: componentize-js's sandbox sees
/// only the folder it maps and follows no link out of it, so it must be handed
/// resolved paths (it answered "Error loading module target/plugins/js/...:
/// Operation not permitted").
#[cfg(unix)]
#[test]
fn a_typescript_plugin_builds_when_target_is_a_link_elsewhere() {
    if !common::node_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (project, elsewhere) = (work.path().join("project"), work.path().join("elsewhere"));
    let plugin = project.join("plugins/linked");
    std::fs::create_dir_all(plugin.join("src")).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, project.join("target")).unwrap();
    std::fs::write(
        plugin.join("package.json"),
        r#"{"name": "linked", "private": true, "type": "module"}"#,
    )
    .unwrap();
    // No SDK: the host's own world, so nothing needs installing.
    std::fs::write(
        plugin.join("src/index.ts"),
        "export function handle(key: string, inputs: [string, string][]): [string, string][] {\n  return [[\"key\", key], ...inputs];\n}\n",
    )
    .unwrap();
    std::fs::write(project.join("optech.toml"), "[keys]\nlinked = \"linked\"\n").unwrap();

    let out = optech(&project, &["build"]);
    assert!(out.status.success(), "{}", text(&out));
    let wasm = std::fs::read(project.join("plugins/linked.wasm")).unwrap();
    // A component (layer 1), not a core module.
    assert_eq!(&wasm[..8], b"\0asm\x0d\0\x01\0", "not a component");
    // The build's folder is the link's target.
    assert!(elsewhere.join("plugins/js/linked/bundle.js").is_file());
}

/// Saving a TypeScript source under `optech dev` serves the new code, and while
/// the plugin is rebuilt and swapped every answer is exactly the old version's
/// or the new one's: the old until the save, never the old once the new one
/// has been served (`common::swap`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_typescript_source_is_served_under_dev_with_no_failed_request() {
    if !js_plugins_built() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let plugin = work.path().join("plugins/hot");
    std::fs::create_dir_all(plugin.join("src")).unwrap();
    std::fs::write(
        plugin.join("package.json"),
        json!({
            "name": "hot",
            "private": true,
            "type": "module",
            "dependencies": {"optech-sdk": format!("file:{}", workspace().join("sdk-js").display())}
        })
        .to_string(),
    )
    .unwrap();
    let source = |version: &str| {
        format!(
            "import {{ handler }} from \"optech-sdk\";\nexport const handle = handler((req) => ({{ version: \"{version}\", name: req.inputs.get(\"name\") }}));\n"
        )
    };
    std::fs::write(plugin.join("src/index.ts"), source("one")).unwrap();
    let config = work.path().join("optech.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"\"\n[keys]\nhot = \"hot\"\n",
    )
    .unwrap();
    let dev: Process = common::start_dev(&config);
    let url = dev.url.clone();
    let first = ask(&url, "hot", json!({"name": "b"})).await;
    assert_eq!(
        (first.status, &first.body),
        (200, &json!({"data": {"version": "one", "name": "b"}})),
        "{}",
        first.raw
    );
    // The exact bodies the load accepts: the old version's and the new one's.
    let old = first.raw.clone();
    let new = old.replace(r#""version":"one""#, r#""version":"two""#);

    let load = {
        let url = url.clone();
        SwapLoad::start(old, new, Duration::from_millis(10), move || {
            let url = url.clone();
            async move {
                let body = json!({"key": "hot", "inputs": {"name": "b"}}).to_string();
                common::swap::signed_answer(&url, body).await
            }
        })
    };
    load.wait_for_old(LONG).await;
    load.saving();
    let saved = Instant::now();
    std::fs::write(plugin.join("src/index.ts"), source("two")).unwrap();
    load.wait_for_new(LONG).await;
    let took = saved.elapsed().saturating_sub(load.tally().new_for());
    let tally = load.finish().await;
    eprintln!(
        "hot reload of a TypeScript plugin: new code served {took:?} after the save; \
         {} old and {} new answers, none other",
        tally.old, tally.new
    );
}

/// Without Node.js a TypeScript plugin fails to build with a message that
/// says what to install; nothing else is needed to see it.
#[test]
fn a_missing_node_is_an_error_that_says_what_to_install() {
    let work = tempfile::tempdir().unwrap();
    let plugin = work.path().join("plugins/x");
    std::fs::create_dir_all(plugin.join("src")).unwrap();
    std::fs::write(plugin.join("package.json"), r#"{"name": "x"}"#).unwrap();
    std::fs::write(plugin.join("src/index.js"), "export function handle() {}").unwrap();
    std::fs::write(work.path().join("optech.toml"), "[keys]\nx = \"x\"\n").unwrap();
    let empty = work.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_optech"))
        .arg("build")
        .current_dir(work.path())
        .env("PATH", &empty)
        .env("OPTECH_CACHE_DIR", work.path().join("cache"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("plugin `x` failed to build")
            && said.contains("Node.js 20 or later")
            && said.contains("https://nodejs.org"),
        "{said}"
    );
}
