//! What operators look at: request ids through answers, logs and deliveries;
//! JSON logs; metrics; readiness.

mod common;

use std::time::Duration;

use common::{Receiver, build_plugins, counter, scrape, start_process_env, value};
use serde_json::{Value, json};

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Value,
    request_id: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let body = body.to_string();
    let signature =
        optech_host::signature::Signer::new(common::SECRET.as_bytes(), None).sign(body.as_bytes());
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-optech-signature", signature)
        .body(body);
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_follows_the_request_into_the_answer_the_log_and_the_delivery() {
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(
        dir.path(),
        "[keys]\nlog = \"tk\"\nfail = \"tk\"\n\"echo.later\" = \"later\"\n\
         [plugins.tk]\nsource = \"testkit.wasm\"\n\
         [plugins.later]\nsource = \"testkit.wasm\"\nmode = \"async\"\n",
    );
    let process = start_process_env(&config, "info", &[("OPTECH_LOG_FORMAT", "json")]);
    let client = reqwest::Client::new();

    // Sync: the answer's header, and every log line of the request, plugin lines included.
    let (status, headers, _) = post(
        &client,
        &process.url,
        json!({"key": "log", "inputs": {"lines": "2"}}),
        Some("trace-me-42"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "trace-me-42");
    process
        .wait_for_log("stdout line 1", Duration::from_secs(5))
        .await;
    let lines: Vec<Value> = process
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "the log is not JSON lines");
    let of_request: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["id"] == "trace-me-42")
        .collect();
    for needle in ["log line 0", "stdout line 1", "stderr line 1"] {
        let line = of_request
            .iter()
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(needle))
            })
            .unwrap_or_else(|| panic!("no {needle:?} line in the request's span: {of_request:?}"));
        assert_eq!(line["span"]["key"], "log");
        assert_eq!(line["span"]["plugin"], "tk");
    }

    // An error body quotes the id; without one sent, one is made up.
    let (status, headers, body) = post(&client, &process.url, json!({"key": "fail"}), None).await;
    assert_eq!(status, 500);
    let made_up = headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made_up.len(), 32);
    assert_eq!(body["error"]["request_id"], made_up.as_str());

    // Async: the delivery carries the id.
    let receiver = Receiver::start().await;
    let link = receiver.link("with-id");
    let (status, headers, _) = post(
        &client,
        &process.url,
        json!({"link": link, "key": "echo.later", "inputs": {"a": "1"}}),
        Some("async-id-7"),
    )
    .await;
    assert_eq!(
        (status, headers["x-request-id"].to_str().unwrap()),
        (202, "async-id-7")
    );
    receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(receiver.to(&link)[0].headers["x-request-id"], "async-id-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_have_every_series_and_count_known_traffic_exactly() {
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let back_end = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let back_end_addr = back_end.local_addr().unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { "fine" });
        axum::serve(back_end, app).await
    });
    let config = common::process_config(
        dir.path(),
        &format!(
            "max_in_flight = 64\n[keys]\necho = \"tk\"\nfail = \"tk\"\nprobe = \"tk\"\n\"echo.later\" = \"later\"\n\
             [plugins.tk]\nsource = \"testkit.wasm\"\nallowed_hosts = [\"http://{back_end_addr}\"]\n\
             [plugins.later]\nsource = \"testkit.wasm\"\nmode = \"async\"\n"
        ),
    );
    let process = start_process_env(&config, "info", &[]);
    let admin = process.admin.clone().unwrap();
    let client = reqwest::Client::new();
    let before = scrape(&admin).await;

    // Known traffic: 5 echoes, 2 failures, 3 unsigned, 1 unknown key, 2 outbound
    // (one allowed, one denied), and 1 async answer delivered.
    for i in 0..5 {
        let (status, ..) = post(
            &client,
            &process.url,
            json!({"key": "echo", "inputs": {"i": i.to_string()}}),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    for _ in 0..2 {
        let (status, ..) = post(&client, &process.url, json!({"key": "fail"}), None).await;
        assert_eq!(status, 500);
    }
    for _ in 0..3 {
        let response = client.post(&process.url).body("{}").send().await.unwrap();
        assert_eq!(response.status(), 401);
    }
    let (status, ..) = post(&client, &process.url, json!({"key": "nope"}), None).await;
    assert_eq!(status, 404);
    for url in [
        format!("http://{back_end_addr}/"),
        "http://127.0.0.1:1/".to_string(),
    ] {
        let (status, _, body) = post(
            &client,
            &process.url,
            json!({"key": "probe", "inputs": {"url": url}}),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let receiver = Receiver::start().await;
    let (status, ..) = post(
        &client,
        &process.url,
        json!({"link": receiver.link("m"), "key": "echo.later", "inputs": {}}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    receiver.wait_for(1, Duration::from_secs(10)).await;
    // The record closes just after the receiver's 200.
    let mut after = scrape(&admin).await;
    for _ in 0..200 {
        if value(
            &after,
            "optech_deliveries_total",
            &[("outcome", "delivered")],
        ) > 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        after = scrape(&admin).await;
    }

    // After the traffic every series below exists; before it, those labelled
    // with a key or plugin may not have yet.
    let delta = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - counter(&before, metric, labels)
    };
    assert_eq!(
        delta(
            "optech_requests_total",
            &[("key", "echo"), ("status_class", "2xx")]
        ),
        5.0
    );
    assert_eq!(
        delta(
            "optech_requests_total",
            &[("key", "fail"), ("status_class", "5xx")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "optech_requests_total",
            &[("key", "(none)"), ("status_class", "4xx")]
        ),
        4.0
    );
    assert_eq!(
        delta(
            "optech_requests_total",
            &[("key", "probe"), ("status_class", "2xx")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "optech_requests_total",
            &[("key", "echo.later"), ("status_class", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        delta("optech_handler_duration_seconds_count", &[("plugin", "tk")]),
        9.0
    );
    assert_eq!(
        delta(
            "optech_handler_duration_seconds_count",
            &[("plugin", "later")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "optech_instantiation_duration_seconds_count",
            &[("plugin", "tk")]
        ),
        9.0
    );
    assert_eq!(
        delta(
            "optech_outbound_requests_total",
            &[("plugin", "tk"), ("outcome", "response")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "optech_outbound_requests_total",
            &[("plugin", "tk"), ("outcome", "denied")]
        ),
        1.0
    );
    assert_eq!(
        delta("optech_deliveries_total", &[("outcome", "delivered")]),
        1.0
    );
    assert_eq!(
        delta(
            "optech_delivery_attempts_total",
            &[("outcome", "delivered")]
        ),
        1.0
    );
    assert_eq!(value(&after, "optech_outbox_open_records", &[]), 0.0);
    assert_eq!(value(&after, "optech_in_flight_requests", &[]), 0.0);
    // The instances that served are gone; their slots stay warm, each keeping
    // the few pages its instance touched.
    let warm = value(&after, "optech_pool_warm_slots", &[]);
    let warm_bytes = value(&after, "optech_pool_warm_bytes", &[]);
    assert!(warm >= 1.0, "{warm} warm slots");
    assert!(
        warm_bytes > 0.0 && warm_bytes <= warm * 16.0 * 1024.0 * 1024.0,
        "{warm_bytes} bytes in {warm} warm slots"
    );

    // Every series the host promises is there.
    let names: std::collections::BTreeSet<&str> =
        after.samples.iter().map(|s| s.metric.as_str()).collect();
    for metric in [
        "optech_requests_total",
        "optech_handler_duration_seconds",
        "optech_handler_duration_seconds_count",
        "optech_handler_duration_seconds_sum",
        "optech_instantiation_duration_seconds",
        "optech_instantiation_duration_seconds_count",
        "optech_unavailable_total",
        "optech_reloads_total",
        "optech_tls_reloads_total",
        "optech_deliveries_total",
        "optech_delivery_attempts_total",
        "optech_outbox_open_records",
        "optech_outbox_oldest_open_age_seconds",
        "optech_in_flight_requests",
        "optech_plugin_in_flight_calls",
        "optech_outbound_requests_total",
        "optech_pool_warm_slots",
        "optech_pool_warm_bytes",
    ] {
        assert!(names.contains(metric), "no {metric} in {names:?}");
    }
    // Label values come from the config, never from requests.
    for sample in &after.samples {
        for (name, value) in sample.labels.iter() {
            assert!(
                !value.contains("127.0.0.1") && !value.contains("nope"),
                "{name}={value} in {}",
                sample.metric
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_ready_while_serving_and_503_while_draining() {
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(
        dir.path(),
        "shutdown_grace = \"10s\"\n[keys]\nsleep = \"tk\"\n[plugins.tk]\nsource = \"testkit.wasm\"\n",
    );
    let mut process = start_process_env(&config, "info", &[]);
    let admin = process.admin.clone().unwrap();
    for base in [&process.url, &admin] {
        let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(response.status(), 200, "{base}");
    }
    // A slow request keeps the host draining after SIGTERM.
    let client = reqwest::Client::new();
    let slow = {
        let (client, url) = (client.clone(), process.url.clone());
        tokio::spawn(async move {
            post(
                &client,
                &url,
                json!({"key": "sleep", "inputs": {"ms": "2000"}}),
                None,
            )
            .await
            .0
        })
    };
    common::wait_until("the slow call runs", Duration::from_secs(5), || async {
        process.plugin_health("tk").await["running"] == 1
    })
    .await;
    let pid = process.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    common::wait_until(
        "readyz answers 503 while draining",
        Duration::from_secs(5),
        || async {
            reqwest::get(format!("{admin}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 503)
        },
    )
    .await;
    assert_eq!(
        slow.await.unwrap(),
        200,
        "the request in flight was not finished"
    );
    assert!(process.child.wait().unwrap().success());
}
