//! Plugins calling their back ends through `wasi:http`, against real back-end
//! servers on loopback: the allowlist, redirects, timeouts, the response cap,
//! concurrency, hot reload of the allowlist, and secrets from the environment.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use common::{TestHost, build_plugins, start_process_env, testkit_dir};
use serde_json::{Value, json};

/// Path and `authorization` header of each request a back end got, in order.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A back end on loopback that records every request it gets, and counts
/// every connection it accepts (a refused request must not even connect).
#[derive(Clone)]
struct BackEnd {
    addr: SocketAddr,
    seen: Seen,
    connections: Arc<AtomicUsize>,
}

impl BackEnd {
    async fn start() -> Self {
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new()
            .route("/orders/{id}", get(order))
            .route("/big", get(|| async { vec![b'x'; 50 << 20] }))
            .route("/big-chunked", get(big_chunked))
            .route("/redirect", get(redirect))
            .route(
                "/echo-body",
                axum::routing::post(|headers: HeaderMap, body: String| async move {
                    let kind = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    format!("{kind} {body}")
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "done"
                }),
            )
            .fallback(|| async { "hello" })
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
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            accepted.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            seen,
            connections,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn order(UrlPath(id): UrlPath<String>, headers: HeaderMap) -> axum::response::Response {
    let _ = headers;
    if id == "A-17" {
        axum::Json(json!({"id": "A-17", "status": "shipped", "eta": "2026-11-28"})).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

/// 50 MiB in 1 MiB chunks, without a content-length: the cap must cut it off while streaming.
async fn big_chunked() -> axum::response::Response {
    let chunks = futures_util::stream::iter(
        (0..50).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 1 << 20]))),
    );
    axum::body::Body::from_stream(chunks).into_response()
}

async fn redirect(uri: axum::http::Uri) -> axum::response::Response {
    let to = uri
        .query()
        .and_then(|q| q.strip_prefix("to="))
        .unwrap_or("/")
        .to_string();
    (StatusCode::FOUND, [("location", to)]).into_response()
}

/// A back end that reads a request, never answers, and notes when the client hangs up.
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
                // Stall: never answer; a read of 0 bytes means the client closed.
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

fn keys() -> &'static str {
    "[keys]\nfetch = \"tk\"\nprobe = \"tk\"\n"
}

fn plugin(allowed: &[String], extra: &str) -> String {
    format!(
        "{}[plugins.tk]\nsource = \"testkit.wasm\"\nallowed_hosts = {}\n{extra}\n",
        keys(),
        serde_json::to_string(allowed).unwrap()
    )
}

#[tokio::test]
async fn a_json_body_reaches_the_back_end_whole() {
    let back_end = BackEnd::start().await;
    let host = TestHost::start(&testkit_dir(), &plugin(&[back_end.url("")], "")).await;
    // Larger than one 4 KiB write, so the body crosses in several chunks.
    let body = format!("{{\"note\":\"{}\"}}", "é".repeat(3000));
    let answer = host
        .ask(
            "fetch",
            json!({"url": back_end.url("/echo-body"), "method": "POST", "body": body}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert_eq!(
        answer.json()["data"],
        json!({"status": "200", "body": format!("application/json {body}")})
    );
}

#[tokio::test]
async fn requests_outside_the_allowlist_are_denied_and_never_sent() {
    let allowed = BackEnd::start().await;
    let other = BackEnd::start().await;
    let host = TestHost::start(&testkit_dir(), &plugin(&[allowed.url("")], "")).await;

    let ok = host
        .ask("fetch", json!({"url": allowed.url("/hello")}))
        .await;
    assert_eq!(ok.json()["data"], json!({"status": "200", "body": "hello"}));

    let port = allowed.addr.port();
    for refused in [
        other.url("/x"),                       // another port
        format!("https://127.0.0.1:{port}/x"), // another scheme
        format!("http://localhost:{port}/x"),  // another host
    ] {
        let probe = host.ask("probe", json!({"url": refused})).await;
        assert_eq!(
            probe.json()["data"]["error"],
            "denied",
            "{refused}: {:?}",
            probe.json()
        );
    }
    // Through `?`, a refusal is the plugin's error, and it names the host.
    let failed = host.ask("fetch", json!({"url": other.url("/x")})).await;
    assert_eq!(failed.status, 500);
    assert_eq!(failed.error_code(), "plugin_error");
    let message = failed.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains(&other.addr.to_string()), "{message}");
    assert_eq!(
        other.connections(),
        0,
        "a refused request reached its server"
    );
    assert_eq!(allowed.hits(), 1);
}

#[tokio::test]
async fn nothing_is_allowed_without_an_allowlist() {
    let back_end = BackEnd::start().await;
    let host = TestHost::start(
        &testkit_dir(),
        &format!("{}[plugins.tk]\nsource = \"testkit.wasm\"\n", keys()),
    )
    .await;
    let probe = host.ask("probe", json!({"url": back_end.url("/")})).await;
    assert_eq!(probe.json()["data"]["error"], "denied");
    assert_eq!(back_end.hits(), 0);
}

#[tokio::test]
async fn a_redirect_is_handed_to_the_plugin_and_never_followed() {
    let allowed = BackEnd::start().await;
    let refused = BackEnd::start().await;
    let host = TestHost::start(&testkit_dir(), &plugin(&[allowed.url("")], "")).await;
    let to = refused.url("/stolen");
    let answer = host
        .ask(
            "fetch",
            json!({"url": allowed.url(&format!("/redirect?to={to}"))}),
        )
        .await;
    assert_eq!(answer.json()["data"]["status"], "302");
    assert_eq!(refused.hits(), 0, "the host followed a redirect");
}

#[tokio::test]
async fn no_spelling_of_an_internal_address_passes_a_wildcard() {
    let back_end = BackEnd::start().await;
    let port = back_end.addr.port();
    // `*` allows any host, but no internal address and no internal name.
    let wildcard = TestHost::start(&testkit_dir(), &plugin(&["http://*:*".to_string()], "")).await;
    for host in [
        "127.0.0.1",
        "2130706433",
        "127.1",
        "0x7f000001",
        "0177.0.0.1",
        "127.0.0.1.",
        "localhost",
        "[::ffff:127.0.0.1]",
        "0.0.0.0",
        "[::]",
        "[::1]",
    ] {
        let probe = wildcard
            .ask("probe", json!({"url": format!("http://{host}:{port}/")}))
            .await;
        assert_eq!(
            probe.json()["data"]["error"],
            "denied",
            "{host}: {:?}",
            probe.json()
        );
    }
    assert_eq!(
        back_end.connections(),
        0,
        "a refused request connected to the back end"
    );
}

#[tokio::test]
async fn localhost_and_internal_addresses_only_through_entries_naming_them() {
    let back_end = BackEnd::start().await;
    let other = BackEnd::start().await;
    let port = back_end.addr.port();
    let by_name = TestHost::start(
        &testkit_dir(),
        &plugin(
            &[format!("http://localhost:{port}"), "http://*:*".to_string()],
            "",
        ),
    )
    .await;
    let answer = by_name
        .ask("fetch", json!({"url": format!("http://localhost:{port}/")}))
        .await;
    assert_eq!(
        answer.json()["data"]["status"],
        "200",
        "{:?}",
        answer.json()
    );
    // The named `localhost` is its entry's port only, wildcard or not.
    let probe = by_name
        .ask(
            "probe",
            json!({"url": format!("http://localhost:{}/", other.addr.port())}),
        )
        .await;
    assert_eq!(probe.json()["data"]["error"], "denied");

    // A literal address reaches that one port, in any spelling, and no other.
    let literal = TestHost::start(
        &testkit_dir(),
        &plugin(&[back_end.url(""), "http://*:*".to_string()], ""),
    )
    .await;
    let answer = literal
        .ask(
            "fetch",
            json!({"url": format!("http://2130706433:{port}/")}),
        )
        .await;
    assert_eq!(answer.json()["data"]["status"], "200");
    let probe = literal.ask("probe", json!({"url": other.url("/")})).await;
    assert_eq!(probe.json()["data"]["error"], "denied");
    assert_eq!(back_end.hits(), 2);
    assert_eq!(other.connections(), 0);
}

#[tokio::test]
async fn a_stalled_back_end_is_cut_off_at_the_plugins_deadline() {
    let (addr, closed) = stalling_back_end().await;
    let host = TestHost::start(
        &testkit_dir(),
        &plugin(
            &[format!("http://{addr}")],
            "timeout = \"1s\"\nhttp_timeout = \"30s\"",
        ),
    )
    .await;
    let started = Instant::now();
    let answer = host
        .ask("fetch", json!({"url": format!("http://{addr}/stall")}))
        .await;
    let took = started.elapsed();
    eprintln!(
        "a back end stalling 30 s under a 1 s timeout: {} after {took:?}",
        answer.status
    );
    assert_eq!(answer.status, 504);
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
async fn http_timeout_bounds_one_request_within_the_call() {
    let (addr, _) = stalling_back_end().await;
    let host = TestHost::start(
        &testkit_dir(),
        &plugin(
            &[format!("http://{addr}")],
            "timeout = \"10s\"\nhttp_timeout = \"500ms\"",
        ),
    )
    .await;
    let started = Instant::now();
    let probe = host
        .ask("probe", json!({"url": format!("http://{addr}/stall")}))
        .await;
    assert_eq!(
        probe.json()["data"]["error"],
        "timeout",
        "{:?}",
        probe.json()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

async fn ask(client: &reqwest::Client, url: &str, key: &str, inputs: Value) -> (u16, Value) {
    let body = json!({"key": key, "inputs": inputs}).to_string();
    let response = common::post_signed(client, url, body).await;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_response_fails_the_plugins_read_and_the_host_stays_small() {
    build_plugins().as_ref().unwrap();
    let back_end = BackEnd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(
        dir.path(),
        &plugin(&[back_end.url("")], "max_http_response = \"4MiB\""),
    );
    // With backtraces on, as an operator debugging might run it: a plugin's
    // failed read must still not make the host symbolize itself.
    let process = start_process_env(&config, "info", &[("RUST_BACKTRACE", "1")]);
    let client = reqwest::Client::new();
    for path in ["/big", "/big-chunked"] {
        let (status, body) = ask(
            &client,
            &process.url,
            "probe",
            json!({"url": back_end.url(path)}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["data"]["error"], "too_large", "{path}: {body}");
    }
    let (rss, peak, _) = common::process_stats(process.child.id());
    eprintln!("after two 50 MiB responses under a 4 MiB cap: RSS {rss:.1} MiB, peak {peak:.1} MiB");
    assert!(peak < 200.0, "peak RSS {peak:.1} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_plugins_waiting_on_a_back_end_hold_no_threads() {
    build_plugins().as_ref().unwrap();
    let back_end = BackEnd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(
        dir.path(),
        &format!(
            "max_in_flight = 512\n{}",
            plugin(
                &[back_end.url("")],
                "max_in_flight = 512\nmax_http_in_flight = 512"
            )
        ),
    );
    let process = start_process_env(&config, "info", &[]);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(600)
        .build()
        .unwrap();
    // Warm the host up (compile caches, pools), then measure.
    let (status, _) = ask(
        &client,
        &process.url,
        "fetch",
        json!({"url": back_end.url("/")}),
    )
    .await;
    assert_eq!(status, 200);
    let pid = process.child.id();
    let most_threads = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (most, sampling) = (most_threads.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut most_rss = 0.0f64;
            while sampling.load(Ordering::SeqCst) {
                let (rss, _, threads) = common::process_stats(pid);
                most.fetch_max(threads as usize, Ordering::SeqCst);
                most_rss = most_rss.max(rss);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most_rss
        })
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let (client, url, target) =
                (client.clone(), process.url.clone(), back_end.url("/slow"));
            tokio::spawn(async move { ask(&client, &url, "fetch", json!({"url": target})).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status == 200 && body["data"]["body"] == "done" {
            ok += 1;
        }
    }
    let took = started.elapsed();
    sampling.store(false, Ordering::SeqCst);
    let most_rss = sampler.await.unwrap();
    let (_, peak, _) = common::process_stats(pid);
    let threads = most_threads.load(Ordering::SeqCst);
    eprintln!(
        "500 requests each waiting 1 s on the back end: {ok} answered in {took:?}; \
         host threads at most {threads}, RSS at most {most_rss:.1} MiB sampled, peak {peak:.1} MiB"
    );
    assert_eq!(ok, 500);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(threads < 40, "{threads} threads");
    assert!(peak < 400.0, "peak RSS {peak:.1} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_back_end_and_nothing_else() {
    build_plugins().as_ref().unwrap();
    const TOKEN: &str = "tok-7f3a9c-very-secret";
    let back_end = BackEnd::start().await;
    let other = BackEnd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(
        dir.path(),
        &plugin(
            &[back_end.url("")],
            "[plugins.tk.config]\ntoken = { env = \"TEST_ORDERS_TOKEN\" }\nregion = \"eu\"",
        ),
    );
    let process = start_process_env(&config, "trace", &[("TEST_ORDERS_TOKEN", TOKEN)]);
    let client = reqwest::Client::new();

    let (status, body) = ask(
        &client,
        &process.url,
        "fetch",
        json!({"url": back_end.url("/orders/A-17")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["body"].as_str().unwrap().contains("shipped"));
    let seen = back_end.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].1.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // Error answers: a refused host, a back end that is not there.
    let mut answers = vec![body.to_string()];
    for url in [other.url("/x"), "http://127.0.0.1:1/x".to_string()] {
        let (status, body) = ask(&client, &process.url, "fetch", json!({"url": url})).await;
        assert_eq!(status, 500, "{body}");
        answers.push(body.to_string());
    }
    let admin = reqwest::get(format!("{}/healthz", process.admin.as_deref().unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let public = reqwest::get(format!("{}/healthz", process.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for text in answers.iter().chain([&admin, &public]) {
        assert!(!text.contains(TOKEN), "the secret leaked: {text}");
    }
    let lines = process.lines.lock().unwrap().clone();
    assert!(lines.len() > 10, "the log is too short to prove anything");
    for line in &lines {
        assert!(
            !line.contains(TOKEN),
            "the secret leaked into the log: {line}"
        );
    }
}

#[test]
fn a_missing_secret_stops_start_up_naming_the_plugin_and_key() {
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(
        dir.path(),
        &plugin(
            &[],
            "[plugins.tk.config]\ntoken = { env = \"TEST_ABSENT_TOKEN\" }",
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_optech"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .env("OPTECH_CLIENT_SECRET", "s")
        .env_remove("TEST_ABSENT_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugins.tk.config.token") && stderr.contains("TEST_ABSENT_TOKEN"),
        "{stderr}"
    );
}

#[tokio::test]
async fn editing_allowed_hosts_takes_effect_for_the_next_request_without_failures() {
    let first = BackEnd::start().await;
    let second = BackEnd::start().await;
    let host = TestHost::start(&testkit_dir(), &plugin(&[first.url("")], "")).await;
    let config_path = host.dir.path().join("optech.toml");
    let rewrite = |allowed: &[String]| {
        let staging = config_path.with_extension("tmp");
        std::fs::write(
            &staging,
            common::config_text(&testkit_dir(), &plugin(allowed, "")),
        )
        .unwrap();
        std::fs::rename(&staging, &config_path).unwrap();
    };
    // Steady load on the first back end all along.
    let stop = Arc::new(AtomicBool::new(false));
    let (client, url, target) = (host.client.clone(), host.url.clone(), first.url("/"));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                match ask(&client, &url, "fetch", json!({"url": target})).await {
                    (200, _) => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    let second_status = || async {
        host.ask("probe", json!({"url": second.url("/")}))
            .await
            .json()["data"]
            .clone()
    };
    assert_eq!(second_status().await["error"], "denied");
    rewrite(&[first.url(""), second.url("")]);
    common::wait_until(
        "the second back end is allowed",
        Duration::from_secs(10),
        || async { second_status().await["status"] == "200" },
    )
    .await;
    rewrite(&[first.url("")]);
    common::wait_until(
        "the second back end is refused again",
        Duration::from_secs(10),
        || async { second_status().await["error"] == "denied" },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = load.await.unwrap();
    eprintln!("{ok} requests served across two allowlist edits, {failed} failed");
    assert!(ok > 0);
    assert_eq!(failed, 0);
}

#[test]
fn a_plugin_that_never_calls_out_does_not_import_wasi_http() {
    build_plugins().as_ref().unwrap();
    let engine = wasmtime::Engine::default();
    let imports = |path: &Path| -> Vec<String> {
        let component = wasmtime::component::Component::from_file(&engine, path).unwrap();
        component
            .component_type()
            .imports(&engine)
            .map(|(name, _)| name.to_string())
            .collect()
    };
    let echo = imports(&common::examples_dir().join("echo.wasm"));
    assert!(!echo.is_empty());
    assert!(!echo.iter().any(|i| i.starts_with("wasi:http")), "{echo:?}");
    let testkit = imports(&common::testkit_wasm());
    assert!(
        testkit
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler")),
        "{testkit:?}"
    );
}
