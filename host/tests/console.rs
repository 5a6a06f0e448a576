//! The admin console over HTTP: what the public port refuses to serve, who may
//! open the console, what it records of each request, and that its memory
//! stays bounded. `console_browser.rs` drives the same pages in Chromium.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Receiver, TestHost, testkit_dir, wait_until};
use optech_host::credentials::Environment;
use optech_host::signature::Signer;
use serde_json::json;

const TOKEN: &str = "console-test-token-0123456789";
const TOKEN_ENV: &str = "OPTECH_TEST_ADMIN_TOKEN";
const PLUGIN_SECRET: &str = "plugin-s3cr3t-value";

/// Every GET route of the console, with a request id in the detail routes.
const CONSOLE_PATHS: &[&str] = &[
    "/",
    "/requests/rows",
    "/requests/some-id",
    "/requests/some-id/detail",
    "/charts",
    "/charts/data",
    "/deliveries",
    "/deliveries/table",
    "/plugins",
    "/plugins/table",
    "/try",
    "/assets/htmx.min.js",
    "/assets/uPlot.iife.min.js",
    "/assets/console.js",
    "/assets/console.css",
];

/// A host over the test plugins whose config may name the admin token and
/// plugin secrets (given here, not through the process environment).
async fn start(server: &str, rest: &str) -> TestHost {
    let env = Environment::from_pairs([(TOKEN_ENV, TOKEN), ("TESTKIT_TOKEN", PLUGIN_SECRET)]);
    TestHost::start_with_env(&testkit_dir(), &format!("{server}\n{rest}"), &env).await
}

const KEYS: &str = r#"
[keys]
"log" = "testkit"
"invalid" = "testkit"
"config" = "testkit"
"echo.async" = "testkit-async"
[plugins.testkit]
source = "testkit.wasm"
[plugins.testkit.config]
token = { env = "TESTKIT_TOKEN" }
[plugins.testkit-async]
source = "testkit.wasm"
mode = "async"
"#;

async fn get(client: &reqwest::Client, url: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.text().await.unwrap(), headers)
}

/// POSTs a signed request with a known request id.
async fn ask(host: &TestHost, id: &str, body: serde_json::Value) -> u16 {
    host.ask_with_id(id, body).await
}

#[tokio::test]
async fn the_public_port_serves_no_console_path() {
    let host = start("", KEYS).await;
    let admin = host.admin_url();
    for path in CONSOLE_PATHS {
        let (status, body, _) = get(&host.client, &format!("{}{path}", host.url)).await;
        assert_eq!(status, 404, "public {path}: {body}");
        assert!(!body.contains("<html"), "public {path}: {body}");
        let (status, _, _) = get(&host.client, &format!("{admin}{path}")).await;
        assert_eq!(status, 200, "admin {path}");
    }
}

#[tokio::test]
async fn with_a_token_only_the_form_shows_and_every_data_route_answers_401() {
    let host = start(&format!("admin_token = {{ env = \"{TOKEN_ENV}\" }}"), KEYS).await;
    let admin = host.admin_url();
    let client = &host.client;

    // A browser without the cookie: the token form and nothing else.
    let page = client
        .get(format!("{admin}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 401);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let form = page.text().await.unwrap();
    assert!(form.contains(r#"name="token""#), "{form}");
    for hidden in ["Requests", "Deliveries", "<table", "testkit"] {
        assert!(!form.contains(hidden), "{hidden} in {form}");
    }
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    // Every data route, and the monitoring ones.
    let data_routes = CONSOLE_PATHS
        .iter()
        .filter(|p| !p.starts_with("/assets/"))
        .chain(&["/healthz", "/metrics", "/readyz", "/try/00ff"]);
    for path in data_routes.clone() {
        let (status, body, _) = get(client, &format!("{admin}{path}")).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(!body.contains("testkit"), "{path}: {body}");
    }
    let send = client
        .post(format!("{admin}/try"))
        .header("hx-request", "true")
        .form(&[("key", "log"), ("inputs", "{}")])
        .send()
        .await
        .unwrap();
    assert_eq!(send.status(), 401);
    // The scripts and styles the form needs are not secret.
    let (status, _, _) = get(client, &format!("{admin}/assets/htmx.min.js")).await;
    assert_eq!(status, 200);

    // The bearer token opens everything.
    for path in data_routes {
        let response = client
            .get(format!("{admin}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }

    // The form: a wrong token gets no cookie, the right one an HttpOnly,
    // SameSite=Strict cookie that opens the console.
    let login = |token: &'static str| {
        client
            .post(format!("{admin}/login"))
            .header("hx-request", "true")
            .header("origin", admin.clone())
            .form(&[("token", token)])
            .send()
    };
    let wrong = login("not-the-token").await.unwrap();
    assert!(wrong.headers().get("set-cookie").is_none());
    let right = login(TOKEN).await.unwrap();
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(TOKEN), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    let page = client
        .get(format!("{admin}/"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<h1>Requests</h1>"));
}

#[tokio::test]
async fn send_is_refused_from_another_site_and_pages_only_answer_to_addresses() {
    let host = start("", KEYS).await;
    let admin = host.admin_url();
    let client = &host.client;
    let post = |headers: &[(&str, &str)]| {
        let mut request = client
            .post(format!("{admin}/try"))
            .form(&[("key", "log"), ("inputs", r#"{"lines": "1"}"#)]);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let refused: &[&[(&str, &str)]] = &[
        &[],
        &[("hx-request", "true"), ("origin", "http://evil.example")],
        &[("hx-request", "true"), ("sec-fetch-site", "cross-site")],
    ];
    for headers in refused {
        let response = post(headers).await.unwrap();
        assert_eq!(response.status(), 403, "{headers:?}");
    }
    let sent = post(&[
        ("hx-request", "true"),
        ("origin", &admin),
        ("sec-fetch-site", "same-origin"),
    ])
    .await
    .unwrap();
    assert_eq!(sent.status(), 200);
    let result = sent.text().await.unwrap();
    assert!(result.contains("200 OK"), "{result}");
    assert!(result.contains("Signature verified"), "{result}");

    // A page asked for by a DNS name (rebinding) is refused; by address it is served.
    let port = host.host.admin_addr().unwrap().port();
    let rebound = client
        .get(format!("{admin}/"))
        .header("host", format!("rebind.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
}

#[tokio::test]
async fn requests_are_recorded_with_timings_logs_errors_and_deliveries() {
    let host = start("console_payloads = true\nlink_ttl = \"1m\"", KEYS).await;
    let admin = host.admin_url();
    let receiver = Receiver::start().await;
    assert_eq!(
        ask(
            &host,
            "req-log-1",
            json!({"key": "log", "inputs": {"lines": "2"}})
        )
        .await,
        200
    );
    assert_eq!(
        ask(&host, "req-bad-1", json!({"key": "invalid", "inputs": {}})).await,
        400
    );
    assert_eq!(
        ask(
            &host,
            "req-async-1",
            json!({"key": "echo.async", "inputs": {"a": "1"}, "link": receiver.link("a1")})
        )
        .await,
        202
    );
    assert_eq!(
        ask(
            &host,
            "req-secret-1",
            json!({"key": "config", "inputs": {"name": "token"}})
        )
        .await,
        200
    );
    receiver.wait_for(1, Duration::from_secs(10)).await;
    // A page names an entry by its number: found from its row, by request id.
    let detail = |id: &'static str| {
        let admin = admin.clone();
        let client = host.client.clone();
        async move {
            let rows = get(&client, &format!("{admin}/requests/rows?id={id}"))
                .await
                .1;
            let href = rows
                .split("href=\"/requests/")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no row for {id} in {rows}"));
            assert!(href.parse::<u64>().is_ok(), "{href} is an entry number");
            get(&client, &format!("{admin}/requests/{href}")).await.1
        }
    };
    // The receiver has the delivery before the host has recorded its outcome:
    // wait for that too, so nothing changes the listing below.
    wait_until(
        "the async delivery is shown",
        Duration::from_secs(10),
        || async { detail("req-async-1").await.contains("delivered") },
    )
    .await;

    let rows = |query: &'static str| {
        let url = format!("{admin}/requests/rows{query}");
        let client = host.client.clone();
        async move { get(&client, &url).await.1 }
    };
    let all = rows("").await;
    for id in ["req-log-1", "req-bad-1", "req-async-1", "req-secret-1"] {
        assert!(all.contains(id), "{id} missing in {all}");
    }
    let by_key = rows("?key=invalid").await;
    assert!(
        by_key.contains("req-bad-1") && !by_key.contains("req-log-1"),
        "{by_key}"
    );
    let by_status = rows("?status=4xx").await;
    assert!(by_status.contains("req-bad-1") && !by_status.contains("req-async-1"));
    let by_id = rows("?id=async").await;
    assert!(by_id.contains("req-async-1") && !by_id.contains("req-bad-1"));

    // Nothing new since the version the page shows: 204, and htmx keeps the rows.
    let version = all
        .split("/requests/rows?v=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let unchanged = host
        .client
        .get(format!("{admin}/requests/rows?v={version}"))
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), 204);

    let log = detail("req-log-1").await;
    for needle in [
        "log line 0",
        "log line 1",
        "stdout line 1",
        "stderr line 0",
        "Instantiate",
        "Handler",
    ] {
        assert!(log.contains(needle), "{needle} missing in {log}");
    }
    assert!(
        log.contains("lines"),
        "inputs are kept with console_payloads: {log}"
    );
    let bad = detail("req-bad-1").await;
    assert!(
        bad.contains("invalid_input") && bad.contains("must be positive"),
        "{bad}"
    );
    let secret = detail("req-secret-1").await;
    assert!(!secret.contains(PLUGIN_SECRET), "{secret}");
    assert!(secret.contains("[redacted]"), "{secret}");

    let (_, charts, _) = get(&host.client, &format!("{admin}/charts/data")).await;
    let charts: serde_json::Value = serde_json::from_str(&charts).unwrap();
    let keys: Vec<&str> = charts["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"log") && keys.contains(&"echo.async"),
        "{charts}"
    );
    assert!(
        charts["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == "invalid_input"),
        "{charts}"
    );
    let (_, plugins, _) = get(&host.client, &format!("{admin}/plugins")).await;
    assert!(
        plugins.contains("testkit-async") && plugins.contains("echo.async"),
        "{plugins}"
    );
    let (status, deliveries, _) = get(&host.client, &format!("{admin}/deliveries")).await;
    assert_eq!(status, 200);
    assert!(deliveries.contains("<h1>Deliveries</h1>"), "{deliveries}");
}

/// A link that refuses each request's first [`REFUSALS`] POSTs (503) and takes
/// the next: every async answer makes more attempts than an entry keeps.
#[derive(Clone)]
struct StubbornLink {
    base: String,
    posts: Arc<Mutex<HashMap<String, u32>>>,
    delivered: Arc<AtomicUsize>,
}

/// One more attempt than the console keeps of a request.
const REFUSALS: u32 = optech_host::recent::MAX_ATTEMPTS as u32;

impl StubbornLink {
    async fn start() -> StubbornLink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let link = StubbornLink {
            base,
            posts: Arc::default(),
            delivered: Arc::default(),
        };
        let state = link.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let state = state.clone();
            async move {
                let mut posts = state.posts.lock().unwrap();
                let n = posts.entry(uri.path().to_string()).or_default();
                *n += 1;
                if *n <= REFUSALS {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    if *n == REFUSALS + 1 {
                        state.delivered.fetch_add(1, Ordering::SeqCst);
                    }
                    axum::http::StatusCode::OK
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        link
    }

    async fn wait_delivered(&self, n: usize) {
        wait_until(
            &format!("{n} async answers delivered after {REFUSALS} refusals each"),
            Duration::from_secs(120),
            || async { self.delivered.load(Ordering::SeqCst) >= n },
        )
        .await;
    }
}

/// What [`flood`] sends.
#[derive(Clone, Copy, PartialEq)]
enum Size {
    /// Far more than an entry keeps (100 log lines of 4,000 bytes, 60 KB of
    /// inputs echoed back as data), so an entry whose caps failed would show
    /// in the memory; every tenth async, to the [`StubbornLink`].
    BigSomeAsync,
    /// Just past every cap (5 log lines of 3,000 bytes, 5 KB of inputs and data).
    PastTheCaps,
}

/// Sends requests `from..to` (16 at a time), each with request id `mem-NNNNNN`.
async fn flood(url: &str, link: &StubbornLink, from: usize, to: usize, size: Size) {
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 16;
    for w in 0..workers {
        let (client, url, link) = (client.clone(), url.to_string(), link.base.clone());
        tasks.spawn(async move {
            let signer = Signer::new(common::SECRET.as_bytes(), None);
            let (lines, width, pad) = if size != Size::PastTheCaps {
                ("100", "4000", 60_000)
            } else {
                ("5", "3000", 5_000)
            };
            let mut i = from + w;
            while i < to {
                let later = size == Size::BigSomeAsync && i.is_multiple_of(10);
                let inputs = json!({"lines": lines, "width": width, "pad": format!("{i:06}{}", "p".repeat(pad))});
                let body = if later {
                    json!({"key": "flood.async", "inputs": inputs, "link": format!("{link}/ingest/{i}")})
                } else {
                    json!({"key": "flood", "inputs": inputs})
                }
                .to_string();
                let status = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-optech-signature", signer.sign(body.as_bytes()))
                    .header("x-request-id", format!("mem-{i:06}"))
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                let want = if later { 202 } else { 200 };
                assert_eq!(status.ok(), Some(want), "request {i}");
                i += workers;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// The console's detail of request `mem-NNNNNN`, found through the Requests
/// page's filter.
async fn entry_detail(admin: &str, i: usize) -> String {
    let id = format!("mem-{i:06}");
    let rows = reqwest::get(format!("{admin}/requests/rows?id={id}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let href = rows
        .split("data-href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no row for {id}: {rows}"));
    reqwest::get(format!("{admin}{href}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The ring and the charts use bounded memory, with every entry as large as
/// the console lets it be (payloads kept, logs, inputs and data past their
/// caps, delivery attempts past theirs): after 100,000 requests the host's
/// RSS is within 20 MiB of where the first 1,000 left it, and what those
/// 1,000 cost over the same host with the console off is within what the
/// per-entry caps allow, and at least half of what they hold whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_memory_is_bounded() {
    use optech_host::recent::{MAX_ATTEMPTS, MAX_LOG_BYTES, MAX_LOG_LINES, MAX_PAYLOAD};
    if let Err(e) = common::build_plugins() {
        panic!("building the plugins failed: {e}");
    }
    let keys = "link_ttl = \"5m\"\n[keys]\n\"flood\" = \"testkit\"\n\"flood.async\" = \"testkit-async\"\n\
                [plugins.testkit]\nsource = \"testkit.wasm\"\n\
                [plugins.testkit-async]\nsource = \"testkit.wasm\"\nmode = \"async\"\n";
    let (on_dir, off_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let on_config =
        common::process_config(on_dir.path(), &format!("console_payloads = true\n{keys}"));
    let off_config =
        common::process_config(off_dir.path(), &format!("console_requests = 0\n{keys}"));
    let on = common::start_process_with(&on_config, "info,plugin=warn");
    let off = common::start_process_with(&off_config, "info,plugin=warn");
    let capacity = optech_host::config::DEFAULT_CONSOLE_REQUESTS;
    let link = StubbornLink::start().await;

    // The first 1,000 fill the ring, on both hosts, every tenth async: their
    // answers make all their attempts before the count (and so the outbox
    // and delivery have done their work on both hosts, as by the last count).
    let started = std::time::Instant::now();
    tokio::join!(
        flood(&on.url, &link, 0, capacity, Size::BigSomeAsync),
        flood(
            &off.url,
            &link,
            1_000_000,
            1_000_000 + capacity,
            Size::BigSomeAsync
        ),
    );
    link.wait_delivered(2 * capacity / 10).await;
    let (on_1k, _, _) = common::process_stats(on.child.id());
    let (off_1k, _, _) = common::process_stats(off.child.id());
    drop(off);
    let filled = started.elapsed();
    // 98,000 more just past the caps, then 1,000 more like the first.
    flood(&on.url, &link, capacity, 99_000, Size::PastTheCaps).await;
    let churned = started.elapsed();
    flood(&on.url, &link, 99_000, 100_000, Size::BigSomeAsync).await;
    link.wait_delivered(3 * capacity / 10).await;
    let (on_100k, _, _) = common::process_stats(on.child.id());

    // What one entry may hold at most: its log and payload bytes, the log
    // lines' and attempts' own records, the entry's box.
    let entry_max = MAX_LOG_BYTES + 2 * MAX_PAYLOAD + MAX_LOG_LINES * 64 + MAX_ATTEMPTS * 128 + 512;
    let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    let ceiling = mib(capacity * entry_max) * 1.5 + 10.0;
    let floor = mib(capacity * (MAX_LOG_BYTES + 2 * MAX_PAYLOAD)) / 2.0;
    let held = on_1k - off_1k;
    eprintln!(
        "RSS after 1,000 requests: {on_1k:.1} MiB with the console, {off_1k:.1} MiB without \
         ({held:.1} MiB for {capacity} entries: at least {floor:.1}, at most {ceiling:.1}); \
         after 100,000: {on_100k:.1} MiB (filled and delivered in {filled:.0?}, 98,000 more in \
         {:.0?}, the last 1,000 delivered {:.0?} later)",
        churned - filled,
        started.elapsed() - churned
    );
    assert!(
        on_100k - on_1k < 20.0,
        "RSS grew from {on_1k:.1} MiB to {on_100k:.1} MiB"
    );
    assert!(
        held <= ceiling,
        "{capacity} entries cost {held:.1} MiB: over the {ceiling:.1} MiB their caps allow"
    );
    assert!(
        held >= floor,
        "{capacity} entries cost {held:.1} MiB: under {floor:.1} MiB, so they were not kept whole"
    );

    // The newest entries are there, each as full as the caps let it be.
    let admin = on.admin.clone().unwrap();
    // A log line is cut at 2 KiB.
    let line = |n: usize| "f".repeat(n);
    let sync = entry_detail(&admin, 99_999).await;
    let delivered = entry_detail(&admin, 99_990).await;
    for (what, page) in [("sync", &sync), ("async", &delivered)] {
        assert!(
            page.contains(&line(2048)) && !page.contains(&line(2049)),
            "{what}: log lines are cut at 2 KiB"
        );
        assert!(
            page.contains("more line(s) were not kept"),
            "{what}: the log is full"
        );
        let payloads = page.matches(&"p".repeat(MAX_PAYLOAD - 100)).count();
        assert_eq!(payloads, 2, "{what}: inputs and data, each cut");
        assert!(
            !page.contains(&"p".repeat(MAX_PAYLOAD)),
            "{what}: a payload not cut"
        );
    }
    assert!(
        delivered.contains(&format!("{} attempts in all", REFUSALS + 1)),
        "async: every attempt counted"
    );
    assert_eq!(
        delivered.matches("o-retry").count(),
        MAX_ATTEMPTS - 1,
        "async: the latest {MAX_ATTEMPTS} attempts kept"
    );
    assert_eq!(delivered.matches("o-delivered").count(), 1);
}
