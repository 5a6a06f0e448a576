//! A request's `link` is a bearer capability: whoever holds it can answer for
//! the request. The real `optech` binary, logging at trace level, is driven
//! through every path a link takes (delivered, retried, redirected, refused,
//! unreachable until expiry, duplicated, handler failure) and its whole log is
//! searched for the links' paths and queries.

mod common;

use std::time::Duration;

use common::{Receiver, build_plugins, start_process_with, testkit_dir};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_at_any_level_contains_a_links_path_or_query() {
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("optech.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
            listen = "127.0.0.1:0"
            admin_listen = "127.0.0.1:0"
            plugins_dir = {:?}
            data_dir = {:?}
            link_ttl = "3s"
            [keys]
            echo = "tk"
            fail = "tk"
            [plugins.tk]
            source = "testkit.wasm"
            mode = "async"
            "#,
            testkit_dir().display().to_string(),
            dir.path().join("data").display().to_string(),
        ),
    )
    .unwrap();
    let process = start_process_with(&config, "trace");
    let client = reqwest::Client::new();
    let receiver = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let link = |n: u32| {
        format!(
            "{}/ingest/PATHSECRET-{n}?token=QUERYSECRET-{n}",
            receiver.base
        )
    };

    receiver.script(&[(200, None), (500, None)]);
    receiver.script_reply(302, &[("location", &elsewhere.link("QUERYSECRET-moved"))]);
    receiver.script(&[(400, None)]);
    // Each with the status the protocol gives it: a non-http(s) link is refused.
    let requests = [
        ("echo", link(1), 202),
        ("echo", link(2), 202),
        ("echo", link(3), 202),
        ("echo", link(4), 202),
        ("fail", link(5), 202),
        ("echo", link(1), 202), // a duplicate
        (
            "echo",
            format!("http://127.0.0.1:{dead_port}/ingest/PATHSECRET-6?token=QUERYSECRET-6"),
            202,
        ),
        (
            "echo",
            "ftp://example.com/PATHSECRET-7?token=QUERYSECRET-7".to_string(),
            400,
        ),
    ];
    for (key, link, expected) in &requests {
        let body = json!({"link": link, "key": key, "inputs": {"a": "1"}}).to_string();
        let status = common::post_signed(&client, &process.url, body)
            .await
            .status();
        assert_eq!(status.as_u16(), *expected, "{key} {link}");
    }
    // Every record closes: delivered, failed, or expired (the dead port, after 3 s).
    let data = dir.path().join("data");
    common::wait_until("every record closed", Duration::from_secs(20), || async {
        common::open_records(&data) == 0
    })
    .await;
    assert_eq!(elsewhere.count(), 0);

    let lines = process.lines.lock().unwrap().clone();
    assert!(
        lines.len() > 20,
        "the log is too short to prove anything: {lines:?}"
    );
    for line in &lines {
        for secret in ["PATHSECRET", "QUERYSECRET", "/ingest/"] {
            assert!(!line.contains(secret), "a link leaked into the log: {line}");
        }
    }
    // The links are still told apart in the log, by origin and fingerprint.
    let tagged = format!("{}#", receiver.base);
    assert!(
        lines.iter().any(|l| l.contains(&tagged)),
        "no line names a link by its tag"
    );
    assert!(lines.iter().any(|l| l.contains("expired")));
}
