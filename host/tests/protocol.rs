//! The protocol end to end: a real host on an ephemeral port, real plugins,
//! every status of docs/protocol.md's table that applies to synchronous answers.

mod common;

use common::{Answer, TestHost, examples_dir, testkit_dir};
use serde_json::json;

async fn examples() -> TestHost {
    TestHost::start(
        &examples_dir(),
        r#"max_body = "4KiB"
        [keys]
        echo = "echo"
        quote = "quote"
        [plugins.quote.config]
        currency = "USD"
        "price.widget" = "2.50"
        "price.broken" = "two fifty"
        bulk_threshold = 100
        bulk_discount_percent = 10
        "#,
    )
    .await
}

async fn testkit() -> TestHost {
    let keys = [
        "echo", "fail", "invalid", "panic", "loop", "alloc", "recurse", "big", "config", "snoop",
    ];
    let mut text = String::from("[keys]\n");
    for key in keys {
        text.push_str(&format!("{key} = \"testkit\"\n"));
    }
    text.push_str("[plugins.testkit]\ntimeout = \"1s\"\nmemory = \"32MiB\"\nmax_output = \"64KiB\"\n[plugins.testkit.config]\ncolour = \"blue\"\n");
    TestHost::start(&testkit_dir(), &text).await
}

fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(
        answer.status,
        status,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.error_code(), code);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(answer.headers["content-type"], "application/json");
}

#[tokio::test]
async fn echo_returns_its_inputs_signed() {
    let host = examples().await;
    let body = r#"{"link":"https://api.optech.ai/ingest/abc","key":"echo","inputs":{"key1":"value1","key2":"value2"}}"#;
    let answer = host.post(body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!({"data": {"key1": "value1", "key2": "value2"}})
    );
    assert_eq!(answer.headers["content-type"], "application/json");
    let signature = answer.headers["x-optech-signature"].to_str().unwrap();
    assert_eq!(signature, host.signer.sign(&answer.body));
}

#[tokio::test]
async fn quote_validates_inputs_and_reads_config() {
    let host = examples().await;
    let ok = host
        .ask("quote", json!({"sku": "widget", "quantity": "120"}))
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.json()["data"],
        json!({"sku": "widget", "quantity": "120", "unit_price": "2.50", "discount_percent": "10", "total": "270.00", "currency": "USD"})
    );
    // A number where the protocol expects strings arrives as its JSON text and still parses.
    let numeric = host
        .ask("quote", json!({"sku": "widget", "quantity": 4}))
        .await;
    assert_eq!(numeric.json()["data"]["total"], "10.00");

    assert_error(
        &host.ask("quote", json!({"sku": "widget"})).await,
        400,
        "invalid_input",
    );
    assert_error(
        &host
            .ask("quote", json!({"sku": "widget", "quantity": "0"}))
            .await,
        400,
        "invalid_input",
    );
    assert_error(
        &host
            .ask("quote", json!({"sku": "widget", "quantity": "lots"}))
            .await,
        400,
        "invalid_input",
    );
    assert_error(
        &host
            .ask("quote", json!({"sku": "sprocket", "quantity": "1"}))
            .await,
        400,
        "invalid_input",
    );
    // A config value the plugin cannot use is the plugin's failure, not the caller's.
    assert_error(
        &host
            .ask("quote", json!({"sku": "broken", "quantity": "1"}))
            .await,
        500,
        "plugin_error",
    );
}

#[tokio::test]
async fn front_door_statuses() {
    let host = examples().await;
    let signed = |body: &str| host.signer.sign(body.as_bytes());

    // 404: a GET reads nothing here (the console is on the admin listener only).
    for path in [
        "/",
        "/requests",
        "/charts",
        "/try",
        "/assets/htmx.min.js",
        "/login",
    ] {
        let get = host
            .send(host.client.get(format!("{}{path}", host.url)))
            .await;
        assert_error(&get, 404, "not_found");
    }
    // 405: any other method but POST.
    let put = host
        .send(host.client.put(format!("{}/healthz", host.url)).body("{}"))
        .await;
    assert_error(&put, 405, "method_not_allowed");
    assert_eq!(put.headers["allow"], "POST");

    // 413: over max_body (4KiB here), signed or not.
    let big = format!(
        r#"{{"key":"echo","inputs":{{"x":"{}"}}}}"#,
        "a".repeat(5000)
    );
    let answer = host
        .send(
            host.client
                .post(&host.url)
                .header("content-type", "application/json")
                .header("x-optech-signature", signed(&big))
                .body(big.clone()),
        )
        .await;
    assert_error(&answer, 413, "body_too_large");

    // 401: signature missing, malformed, or for other bytes.
    let body = r#"{"key":"echo","inputs":{}}"#;
    let post = || {
        host.client
            .post(&host.url)
            .header("content-type", "application/json")
            .body(body)
    };
    assert_error(&host.send(post()).await, 401, "invalid_signature");
    assert_error(
        &host
            .send(post().header("x-optech-signature", "nothex"))
            .await,
        401,
        "invalid_signature",
    );
    assert_error(
        &host
            .send(post().header("x-optech-signature", signed("{}")))
            .await,
        401,
        "invalid_signature",
    );
    let other_secret =
        optech_host::signature::Signer::new(b"not the secret", None).sign(body.as_bytes());
    assert_error(
        &host
            .send(post().header("x-optech-signature", other_secret))
            .await,
        401,
        "invalid_signature",
    );
    // Accepted forms: upper case and a sha256= prefix.
    let upper = signed(body).to_uppercase();
    assert_eq!(
        host.send(post().header("x-optech-signature", upper))
            .await
            .status,
        200
    );
    let prefixed = format!("sha256={}", signed(body));
    assert_eq!(
        host.send(post().header("x-optech-signature", prefixed))
            .await
            .status,
        200
    );

    // 415: signed, but not JSON by content type.
    let answer = host
        .send(
            host.client
                .post(&host.url)
                .header("content-type", "text/plain")
                .header("x-optech-signature", signed(body))
                .body(body),
        )
        .await;
    assert_error(&answer, 415, "unsupported_media_type");
    let answer = host
        .send(
            host.client
                .post(&host.url)
                .header("x-optech-signature", signed(body))
                .body(body),
        )
        .await;
    assert_error(&answer, 415, "unsupported_media_type");

    // 400: bad envelopes.
    for bad in [
        "{not json",
        "[1,2]",
        r#"{"inputs":{}}"#,
        r#"{"key":7,"inputs":{}}"#,
        r#"{"key":"echo","inputs":["a"]}"#,
        r#"{"key":"echo","inputs":"a=b"}"#,
        r#"{"key":"echo","link":42,"inputs":{}}"#,
    ] {
        assert_error(&host.post(bad).await, 400, "invalid_request");
    }

    // 404: no plugin for the key.
    let answer = host.ask("nope", json!({})).await;
    assert_error(&answer, 404, "unknown_key");
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
}

#[tokio::test]
async fn unsigned_requests_learn_nothing() {
    let host = examples().await;
    // Wrong key, bad JSON and wrong content type all look the same without a signature.
    for body in [
        r#"{"key":"nope","inputs":{}}"#,
        "{not json",
        r#"{"key":"echo"}"#,
    ] {
        let answer = host
            .send(
                host.client
                    .post(&host.url)
                    .header("content-type", "text/plain")
                    .body(body),
            )
            .await;
        assert_error(&answer, 401, "invalid_signature");
    }
}

#[tokio::test]
async fn extra_fields_missing_link_and_missing_inputs_are_fine() {
    let host = examples().await;
    let answer = host
        .post(r#"{"key":"echo","inputs":{"a":"b"},"request_id":"r1","meta":{"x":1}}"#)
        .await;
    assert_eq!(answer.json(), json!({"data": {"a": "b"}}));
    let answer = host.post(r#"{"key":"echo"}"#).await;
    assert_eq!(answer.json(), json!({"data": {}}));
}

#[tokio::test]
async fn non_string_inputs_arrive_as_json_text() {
    let host = examples().await;
    let answer = host
        .ask(
            "echo",
            json!({"n": 3, "f": 1.5, "o": {"a": 1}, "t": true, "z": null, "l": [1, "x"]}),
        )
        .await;
    assert_eq!(
        answer.json()["data"],
        json!({"n": "3", "f": "1.5", "o": "{\"a\":1}", "t": "true", "z": "null", "l": "[1,\"x\"]"})
    );
}

#[tokio::test]
async fn unicode_survives_the_round_trip() {
    let host = examples().await;
    let inputs =
        json!({"名前": "Zoë 🚀", "rtl": "שלום", "nul": "a\u{0}b", "esc": "\"quoted\" \\ \n"});
    let answer = host.ask("echo", inputs.clone()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["data"], inputs);
}

#[tokio::test]
async fn plugin_errors_and_traps_get_their_status_and_the_host_keeps_serving() {
    let host = testkit().await;
    assert_error(&host.ask("fail", json!({})).await, 500, "plugin_error");
    assert_error(&host.ask("invalid", json!({})).await, 400, "invalid_input");
    assert_error(&host.ask("panic", json!({})).await, 500, "plugin_trapped");
    assert_error(&host.ask("recurse", json!({})).await, 500, "plugin_trapped");
    assert_error(&host.ask("alloc", json!({})).await, 500, "plugin_trapped");
    assert_error(&host.ask("loop", json!({})).await, 504, "plugin_timeout");
    assert_error(
        &host.ask("big", json!({"bytes": "100000"})).await,
        500,
        "output_too_large",
    );
    assert_eq!(host.ask("big", json!({"bytes": "1000"})).await.status, 200);
    let answer = host.ask("echo", json!({"still": "here"})).await;
    assert_eq!(answer.json(), json!({"data": {"still": "here"}}));
}

#[tokio::test]
async fn each_request_gets_a_fresh_sandboxed_instance() {
    let host = testkit().await;
    let answer = host.ask("config", json!({"name": "colour"})).await;
    assert_eq!(answer.json()["data"]["value"], "blue");
    let answer = host.ask("snoop", json!({})).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert_eq!(
        answer.json()["data"],
        json!({"file": "denied", "dir": "denied", "env": "denied", "env_vars": "0", "socket": "denied"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_requests() {
    let host = examples().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (client, url, signer) = (host.client.clone(), host.url.clone(), host.signer.clone());
        tasks.spawn(async move {
            let body = json!({"key": "echo", "inputs": {"i": i.to_string()}}).to_string();
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-optech-signature", signer.sign(body.as_bytes()))
                .body(body)
                .send()
                .await
                .expect("request failed");
            let status = response.status().as_u16();
            let body: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            (i, status, body)
        });
    }
    let mut seen = 0;
    while let Some(result) = tasks.join_next().await {
        let (i, status, body) = result.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, json!({"data": {"i": i.to_string()}}));
        seen += 1;
    }
    assert_eq!(seen, 100);
}

#[tokio::test]
async fn public_healthz_tells_nothing_and_the_admin_listener_has_the_details() {
    let host = examples().await;
    let public = host
        .send(host.client.get(format!("{}/healthz", host.url)))
        .await;
    assert_eq!(public.status, 200);
    assert_eq!(public.json(), json!({"status": "ok"}));
    let text = String::from_utf8_lossy(&public.body);
    for secret in ["echo", "quote", "sha256", ".wasm", "/"] {
        assert!(
            !text.contains(secret),
            "the public healthz shows {secret:?}: {text}"
        );
    }

    let admin = host
        .send(host.client.get(format!("{}/healthz", host.admin_url())))
        .await;
    assert_eq!(admin.status, 200);
    let plugins = admin.json()["plugins"].as_array().unwrap().clone();
    let names: Vec<&str> = plugins
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "quote"]);
    assert_eq!(plugins[0]["keys"], json!(["echo"]));
    assert_eq!(plugins[0]["sha256"].as_str().unwrap().len(), 64);
    // The admin listener serves no data requests: a POST there is refused by
    // the console's cross-site guard, and even one from the console's own
    // script finds no POST route at `/`.
    let body = r#"{"key":"echo","inputs":{}}"#;
    let answer = host
        .send(
            host.client
                .post(format!("{}/", host.admin_url()))
                .body(body),
        )
        .await;
    assert_eq!(
        answer.status,
        403,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let answer = host
        .send(
            host.client
                .post(format!("{}/", host.admin_url()))
                .header("hx-request", "true")
                .body(body),
        )
        .await;
    assert_eq!(
        answer.status,
        405,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
}

#[tokio::test]
async fn inputs_reach_the_plugin_and_come_back_in_request_order() {
    let host = examples().await;
    let answer = host
        .post(r#"{"key":"echo","inputs":{"zeta":"1","alpha":"2","mid":"3"}}"#)
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&answer.body),
        r#"{"data":{"zeta":"1","alpha":"2","mid":"3"}}"#
    );
}

#[tokio::test]
async fn secret_rotation_accepts_both_and_signs_with_current() {
    let host = TestHost::try_start(
        &examples_dir(),
        "[keys]\necho = \"echo\"\n",
        Some("old-secret"),
    )
    .await
    .unwrap();
    let body = r#"{"key":"echo","inputs":{"a":"1"}}"#;
    let old = optech_host::signature::Signer::new(b"old-secret", None).sign(body.as_bytes());
    let answer = host
        .send(
            host.client
                .post(&host.url)
                .header("content-type", "application/json")
                .header("x-optech-signature", old)
                .body(body),
        )
        .await;
    assert_eq!(answer.status, 200);
    let current = optech_host::signature::Signer::new(common::SECRET.as_bytes(), None);
    assert_eq!(
        answer.headers["x-optech-signature"].to_str().unwrap(),
        current.sign(&answer.body)
    );
    assert_eq!(host.post(body).await.status, 200);
}
