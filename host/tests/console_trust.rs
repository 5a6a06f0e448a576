//! What the admin listener and its console trust, and what they do not: a
//! request nobody signed, a request id the caller chose, a `Host` header, a
//! reverse proxy, a secret that JSON spells with escapes.

mod common;

use std::time::Duration;

use common::{Receiver, TestHost, testkit_dir};
use optech_host::config::Config;
use optech_host::credentials::Environment;
use optech_host::signature::Signer;
use optech_host::{Host, Identity};
use serde_json::json;

/// A secret with every character JSON escapes; its four words must never show.
const AWKWARD_SECRET: &str = "ALPHAWORD\"BRAVOWORD\\CHARLIEWORD\u{1}DELTAWORD\nEND";
const SECRET_WORDS: [&str; 4] = ["ALPHAWORD", "BRAVOWORD", "CHARLIEWORD", "DELTAWORD"];

/// A host over the testkit, with the awkward secret in its config.
async fn start(server: &str) -> TestHost {
    let rest = format!(
        "{server}\n[keys]\necho = \"testkit\"\nconfig = \"testkit\"\n\"echo.async\" = \"later\"\n\
         [plugins.testkit]\nsource = \"testkit.wasm\"\n\
         [plugins.testkit.config]\ntoken = {{ env = \"AWKWARD_TOKEN\" }}\n\
         [plugins.later]\nsource = \"testkit.wasm\"\nmode = \"async\"\n"
    );
    let env = Environment::from_pairs([("AWKWARD_TOKEN", AWKWARD_SECRET)]);
    TestHost::start_with_env(&testkit_dir(), &rest, &env).await
}

async fn ask(host: &TestHost, id: &str, body: serde_json::Value) -> u16 {
    host.ask_with_id(id, body).await
}

async fn get(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// The entry numbers the Requests rows link to for request id `id`, newest first.
async fn entries_of(host: &TestHost, id: &str) -> Vec<u64> {
    let rows = get(
        &host.client,
        &format!("{}/requests/rows?id={id}", host.admin_url()),
    )
    .await;
    rows.split("href=\"/requests/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect::<std::collections::BTreeSet<u64>>()
        .into_iter()
        .rev()
        .collect()
}

/// A thousand anonymous requests leave the signed ones in the ring: they are
/// counted on the Requests page, not listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_requests_are_counted_not_kept() {
    let host = start("console_requests = 10\n").await;
    assert_eq!(ask(&host, "signed-1", json!({"key": "echo"})).await, 200);
    for i in 0..1_000 {
        let request = if i % 2 == 0 {
            host.client.get(&host.url)
        } else {
            host.client
                .post(&host.url)
                .header("x-request-id", "signed-1")
                .header("x-optech-signature", "00")
                .body("{}")
        };
        let status = request.send().await.unwrap().status().as_u16();
        assert!(status == 404 || status == 401, "{status}");
    }
    let admin = host.admin_url();
    let page = get(&host.client, &format!("{admin}/")).await;
    assert!(
        page.contains("signed-1"),
        "the signed request is still listed"
    );
    assert!(
        page.contains("1000 request(s) refused before their signature was checked"),
        "{page}"
    );
    assert!(page.contains("invalid_signature") && page.contains("not_found"));
    assert_eq!(
        entries_of(&host, "signed-1").await.len(),
        1,
        "the forged id made no entry"
    );
}

/// A request id names nothing for certain: two signed requests with the same
/// id get two entries, each page is found by its number, and the first one's
/// delivery attempts stay on the first entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_found_by_their_number_not_by_a_request_id() {
    let host = start("").await;
    let receiver = Receiver::start().await;
    receiver.script(&[(503, None), (503, None)]);
    let link = receiver.link("shadowed");
    let body = json!({"key": "echo.async", "link": link, "inputs": {"n": "1"}});
    assert_eq!(ask(&host, "same-id", body).await, 202);
    assert_eq!(ask(&host, "same-id", json!({"key": "echo"})).await, 200);
    receiver.wait_for(3, Duration::from_secs(20)).await;
    let admin = host.admin_url();
    let entries = entries_of(&host, "same-id").await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (newer, older) = (entries[0], entries[1]);
    common::wait_until(
        "the delivery is shown on the async request's own entry",
        Duration::from_secs(20),
        || {
            let client = host.client.clone();
            let url = format!("{admin}/requests/{older}/detail");
            async move { get(&client, &url).await.contains("delivered") }
        },
    )
    .await;
    let shadow = get(&host.client, &format!("{admin}/requests/{newer}")).await;
    assert!(
        !shadow.contains("delivered") && !shadow.contains("retry"),
        "the later request with the same id got no attempt: {shadow}"
    );
    let missing = get(&host.client, &format!("{admin}/requests/same-id")).await;
    assert!(missing.contains("not in the console"), "{missing}");
}

/// Without a token every admin route, monitoring ones included, answers only
/// to this machine's address and to no reverse proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_every_admin_route_checks_host_and_proxy() {
    let host = start("").await;
    let admin = host.admin_url();
    for path in ["/healthz", "/metrics", "/readyz", "/", "/plugins"] {
        let url = format!("{admin}{path}");
        let ok = host.client.get(&url).send().await.unwrap();
        assert_eq!(ok.status(), 200, "{path}");
        let rebound = host
            .client
            .get(&url)
            .header("host", "rebind.example:9091")
            .send()
            .await
            .unwrap();
        assert_eq!(rebound.status(), 403, "{path} under a DNS name");
        for (name, value) in [
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=203.0.113.7"),
            ("via", "1.1 nginx"),
        ] {
            let proxied = host
                .client
                .get(&url)
                .header(name, value)
                .send()
                .await
                .unwrap();
            assert_eq!(proxied.status(), 403, "{path} through a proxy ({name})");
        }
    }
}

/// An admin listener beyond loopback needs a token: the host does not start
/// without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_listener_beyond_loopback_needs_a_token() {
    common::build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optech.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nadmin_listen = \"0.0.0.0:0\"\nplugins_dir = {:?}\n[keys]\necho = \"testkit\"\n\
             [plugins.testkit]\nsource = \"testkit.wasm\"\n",
            testkit_dir().display().to_string()
        ),
    )
    .unwrap();
    let err = Config::load_with(&path, &Environment::from_pairs([]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server.admin_listen") && err.contains("admin_token"),
        "{err}"
    );
    // The same through `--admin-listen`, after the file was read.
    std::fs::write(
        &path,
        format!(
            "[server]\nplugins_dir = {:?}\n[keys]\necho = \"testkit\"\n\
             [plugins.testkit]\nsource = \"testkit.wasm\"\n",
            testkit_dir().display().to_string()
        ),
    )
    .unwrap();
    let mut config = Config::load_with(&path, &Environment::from_pairs([])).unwrap();
    config.server.admin_listen = Some("0.0.0.0:0".parse().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let signer = Signer::new(common::SECRET.as_bytes(), None);
    let refused = Host::start(&config, Identity::new(signer, "c"), listener).await;
    let err = refused
        .err()
        .expect("no admin listener beyond loopback without a token");
    assert!(err.to_string().contains("admin_token"), "{err}");
}

/// A secret with quotes, backslashes and control characters is written
/// escaped in JSON: it is still redacted in the inputs and data the console
/// keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_that_json_escapes_are_redacted_in_payloads() {
    let host = start("console_payloads = true\n").await;
    let inputs = json!({"name": "token", "echoed": AWKWARD_SECRET});
    assert_eq!(
        ask(&host, "awkward", json!({"key": "config", "inputs": inputs})).await,
        200
    );
    let entries = entries_of(&host, "awkward").await;
    let page = get(
        &host.client,
        &format!("{}/requests/{}", host.admin_url(), entries[0]),
    )
    .await;
    assert!(page.contains("[redacted]"), "{page}");
    for word in SECRET_WORDS {
        assert!(!page.contains(word), "{word} is on the page: {page}");
    }
}
