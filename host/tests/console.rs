//! The admin console over HTTP: what the public port refuses to serve, who may
//! open the console, what it records of each request, and that its memory
//! stays bounded. `console_browser.rs` drives the same pages in Chromium.

mod common;

use std::time::Duration;

use common::{Receiver, TestHost, testkit_dir, wait_until};
use optech_host::config::Config;
use optech_host::credentials::Environment;
use optech_host::signature::Signer;
use optech_host::{Host, Identity};
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
    if let Err(e) = common::build_plugins() {
        panic!("building the plugins failed: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optech.toml");
    let text = format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\nplugins_dir = {:?}\ndata_dir = {:?}\n{server}\n{rest}",
        testkit_dir().display().to_string(),
        dir.path().join("data").display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    let env = Environment::from_pairs([(TOKEN_ENV, TOKEN), ("TESTKIT_TOKEN", PLUGIN_SECRET)]);
    let config = Config::load_with(&path, &env).unwrap();
    let signer = Signer::new(common::SECRET.as_bytes(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = Host::start(
        &config,
        Identity::new(signer.clone(), common::CLIENT_ID),
        listener,
    )
    .await
    .unwrap();
    TestHost {
        url: format!("http://{}", host.addr()),
        host,
        client: reqwest::Client::new(),
        signer,
        dir,
    }
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
    let body = body.to_string();
    host.client
        .post(&host.url)
        .header("content-type", "application/json")
        .header("x-optech-signature", host.signer.sign(body.as_bytes()))
        .header("x-request-id", id)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
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

/// The ring and the charts use bounded memory: after 100,000 requests the
/// host's RSS is within 20 MiB of where 1,000 left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_memory_is_bounded() {
    if let Err(e) = common::build_plugins() {
        panic!("building the plugins failed: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(
        dir.path(),
        "[keys]\n\"log\" = \"testkit\"\n[plugins.testkit]\nsource = \"testkit.wasm\"\n",
    );
    let process = common::start_process_with(&config, "info,plugin=warn");
    let pid = process.child.id();
    let client = reqwest::Client::new();
    let url = process.url.clone();
    let send = |from: usize, to: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            let workers = 16;
            for w in 0..workers {
                let (client, url) = (client.clone(), url.clone());
                tasks.spawn(async move {
                    let mut i = from + w;
                    while i < to {
                        // Distinct ids, log lines and inputs: each entry holds all it may.
                        let body =
                            json!({"key": "log", "inputs": {"lines": "3", "pad": "x".repeat(64)}})
                                .to_string();
                        let response = common::try_post_signed(&client, &url, body).await;
                        assert_eq!(response.map(|r| r.status().as_u16()).ok(), Some(200));
                        i += workers;
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
        }
    };
    send(0, 1_000).await;
    let (after_1k, _, _) = common::process_stats(pid);
    send(1_000, 100_000).await;
    let (after_100k, _, _) = common::process_stats(pid);
    eprintln!("RSS after 1,000 requests: {after_1k:.1} MiB; after 100,000: {after_100k:.1} MiB");
    assert!(
        after_100k - after_1k < 20.0,
        "RSS grew from {after_1k:.1} MiB to {after_100k:.1} MiB"
    );
    // And the console still shows the newest ones.
    let admin = process.admin.clone().unwrap();
    let rows = client
        .get(format!("{admin}/requests/rows"))
        .send()
        .await
        .unwrap();
    assert!(rows.text().await.unwrap().contains("testkit"));
}
