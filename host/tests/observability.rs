//! What operators look at: request ids through answers, logs and deliveries;
//! JSON logs; metrics; readiness.

mod common;

use std::time::Duration;

use common::{Receiver, build_plugins, start_process_env, testkit_dir};
use serde_json::{Value, json};

fn write_config(dir: &std::path::Path, rest: &str) -> std::path::PathBuf {
    let path = dir.join("optech.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplugins_dir = {:?}\ndata_dir = {:?}\n{rest}",
        testkit_dir().display().to_string(),
        dir.join("data").display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

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
    let config = write_config(
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
