//! Async answers against a real link receiver on loopback: 202 at once, then a
//! signed POST to `link`, retried through faults until it lands or the link expires.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, CLIENT_ID, Receiver, TestHost, testkit_dir};
use optech_host::outbox::State;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(20);

/// A host whose keys `echo`, `fail`, `loop` and `sleep` go to the testkit in `mode`.
async fn host(backend: &Backend, mode: &str, link_ttl: &str) -> TestHost {
    TestHost::start(
        &testkit_dir(),
        &format!(
            r#"{}link_ttl = "{link_ttl}"
            [keys]
            echo = "tk"
            fail = "tk"
            loop = "tk"
            sleep = "tk"
            [plugins.tk]
            source = "testkit.wasm"
            mode = "{mode}"
            timeout = "3s"
            sync_budget = "300ms"
            "#,
            backend.server_keys()
        ),
    )
    .await
}

async fn send(host: &TestHost, link: &str, key: &str, inputs: Value) -> common::Answer {
    host.post(&json!({"link": link, "key": key, "inputs": inputs}).to_string())
        .await
}

async fn state(host: &TestHost, link: &str) -> Option<State> {
    host.host.record_state(link).await.unwrap()
}

/// Waits for a record to reach `want` (closing it is a synced write: give it time).
async fn wait_state(host: &TestHost, link: &str, want: State) {
    let started = Instant::now();
    while state(host, link).await != Some(want) {
        assert!(
            started.elapsed() < LONG,
            "{link} never became {want:?}: {:?}",
            state(host, link).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn delivery_is_signed_with_the_protocol_headers(backend: &Backend) {
    let host = host(backend, "async", "10m").await;
    let receiver = Receiver::start().await;
    let link = receiver.link("a1");
    let sent = Instant::now();
    let answer = send(&host, &link, "echo", json!({"q": "où?"})).await;
    assert_eq!(answer.status, 202);
    let answered = sent.elapsed();
    receiver.wait_for(1, LONG).await;
    let delivery = &receiver.to(&link)[0];
    eprintln!(
        "202 after {answered:?}; delivered {:?} after the 202",
        delivery.at - sent - answered
    );
    assert_eq!(delivery.json(), json!({"data": {"q": "où?"}}));
    assert_eq!(delivery.headers["content-type"], "application/json");
    assert_eq!(
        delivery.headers["authorization"],
        format!("Basic {CLIENT_ID}")
    );
    assert_eq!(
        delivery.headers["x-optech-signature"].to_str().unwrap(),
        host.signer.sign(&delivery.body)
    );
    wait_state(&host, &link, State::Delivered).await;
}

async fn a_request_without_link_is_refused_for_an_async_plugin(backend: &Backend) {
    let host = host(backend, "async", "10m").await;
    let answer = host.ask("echo", json!({})).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "link_required");
    let answer = send(&host, "ftp://example/x", "echo", json!({})).await;
    assert_eq!(answer.status, 400);
}

async fn failures_are_retried_until_the_receiver_takes_it(backend: &Backend) {
    let host = host(backend, "async", "10m").await;
    let receiver = Receiver::start().await;
    receiver.script(&[(500, None), (503, None), (502, None), (408, None)]);
    let link = receiver.link("retry");
    assert_eq!(
        send(&host, &link, "echo", json!({"n": "1"})).await.status,
        202
    );
    receiver.wait_for(5, LONG).await;
    let attempts = receiver.to(&link);
    // Chat answers are due in 10 s: four retries must fit well inside that.
    let span = attempts[4].at - attempts[0].at;
    assert!(span < Duration::from_secs(8), "retries took {span:?}");
    // Closed once delivered: nothing more can be sent.
    wait_state(&host, &link, State::Delivered).await;
    assert_eq!(receiver.count(), 5, "nothing more after success");
}

async fn a_receiver_that_is_down_then_up_gets_the_answer(backend: &Backend) {
    let host = host(backend, "async", "10m").await;
    // Take a free port, close it, and point the link there: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let link = format!("http://127.0.0.1:{port}/ingest/down");
    assert_eq!(
        send(&host, &link, "echo", json!({"k": "v"})).await.status,
        202
    );
    // Two attempts have failed and been set to retry...
    let admin = host.admin_url();
    common::wait_until("two failed attempts", LONG, || async {
        let scrape = common::scrape(&admin).await;
        common::value(
            &scrape,
            "optech_delivery_attempts_total",
            &[("outcome", "retry")],
        ) >= 2.0
    })
    .await;
    // ...and the record is still open.
    let open = state(&host, &link).await;
    assert!(
        matches!(open, Some(State::Answered | State::Accepted)),
        "{open:?}"
    );
    let receiver = Receiver::start_on(port).await;
    receiver.wait_for(1, LONG).await;
    assert_eq!(receiver.to(&link)[0].json(), json!({"data": {"k": "v"}}));
}

async fn retry_after_is_honoured_on_429(backend: &Backend) {
    let host = host(backend, "async", "10m").await;
    let receiver = Receiver::start().await;
    receiver.script(&[(429, Some("2"))]);
    let link = receiver.link("slow-down");
    assert_eq!(send(&host, &link, "echo", json!({})).await.status, 202);
    receiver.wait_for(2, LONG).await;
    let attempts = receiver.to(&link);
    let gap = attempts[1].at - attempts[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "retried after {gap:?}, before Retry-After"
    );
}

/// `Retry-After: 0` (or any wait shorter than the backoff) does not make the
/// host retry in a tight loop: each gap is at least the backoff's floor (half
/// its step, 0.125 s doubling), so a link that says `0` forever gets tens of
/// POSTs in a link's ten minutes, not thousands a second.
async fn retry_after_zero_keeps_the_backoff(backend: &Backend) {
    const REFUSALS: usize = 5;
    let host = host(backend, "async", "10m").await;
    let receiver = Receiver::start().await;
    receiver.script(&[(503, Some("0")); REFUSALS]);
    let link = receiver.link("retry-now");
    assert_eq!(send(&host, &link, "echo", json!({})).await.status, 202);
    wait_state(&host, &link, State::Delivered).await;
    let attempts = receiver.to(&link);
    assert_eq!(
        attempts.len(),
        REFUSALS + 1,
        "refused 5 times, then delivered"
    );
    let first = optech_host::delivery::RetryPolicy::default().first_delay;
    for (n, pair) in attempts.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        // The n-th retry's step is first_delay * 2^n; the jitter keeps at least half.
        let floor = first * (1 << n) / 2;
        assert!(
            gap >= floor.mul_f64(0.95),
            "retry {} came {gap:?} after the last, under the backoff's floor {floor:?}",
            n + 1
        );
    }
}

async fn other_4xx_are_final(backend: &Backend) {
    let host = host(backend, "async", "10m").await;
    let receiver = Receiver::start().await;
    receiver.script(&[(400, None)]);
    let link = receiver.link("refused");
    assert_eq!(send(&host, &link, "echo", json!({})).await.status, 202);
    wait_state(&host, &link, State::Failed).await;
    assert_eq!(receiver.count(), 1, "a final 4xx was retried");
}

async fn nothing_is_sent_after_the_link_expires(backend: &Backend) {
    let host = host(backend, "async", "2s").await;
    let receiver = Receiver::start().await;
    receiver.script(&[(503, None); 100]);
    let link = receiver.link("expiring");
    let sent = Instant::now();
    assert_eq!(send(&host, &link, "echo", json!({})).await.status, 202);
    wait_state(&host, &link, State::Expired).await;
    let attempts = receiver.to(&link);
    assert!(attempts.len() >= 2, "{} attempts", attempts.len());
    assert!(
        attempts
            .iter()
            .all(|a| a.at - sent < Duration::from_millis(2100)),
        "an attempt after expiry"
    );
}

async fn handler_failures_are_delivered_as_error_bodies(backend: &Backend) {
    let host = host(backend, "async", "10m").await;
    let receiver = Receiver::start().await;
    let (fail, timeout) = (receiver.link("fail"), receiver.link("timeout"));
    assert_eq!(send(&host, &fail, "fail", json!({})).await.status, 202);
    assert_eq!(send(&host, &timeout, "loop", json!({})).await.status, 202);
    receiver.wait_for(2, LONG).await;
    let body = receiver.to(&fail)[0].json();
    assert_eq!(body["error"]["code"], "plugin_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("back end")
    );
    let delivery = &receiver.to(&timeout)[0];
    assert_eq!(delivery.json()["error"]["code"], "plugin_timeout");
    assert_eq!(
        delivery.headers["x-optech-signature"].to_str().unwrap(),
        host.signer.sign(&delivery.body)
    );
}

async fn a_duplicate_request_is_not_run_twice(backend: &Backend) {
    let host = host(backend, "async", "10m").await;
    let receiver = Receiver::start().await;
    let link = receiver.link("twice");
    let first = send(&host, &link, "sleep", json!({"ms": "300"})).await;
    let second = send(&host, &link, "sleep", json!({"ms": "300"})).await;
    assert_eq!((first.status, second.status), (202, 202));
    wait_state(&host, &link, State::Delivered).await;
    let third = send(&host, &link, "sleep", json!({"ms": "300"})).await;
    assert_eq!(third.status, 202);
    // Every call starts synchronously with its 202: the plugin ran once in all.
    let health = common::plugin_health(&host.admin_url(), "tk").await;
    assert_eq!(health["calls"], 1, "{health}");
    assert_eq!(receiver.count(), 1);
}

async fn a_redirecting_link_gets_nothing_at_its_location_and_is_retried(backend: &Backend) {
    let host = host(backend, "async", "10m").await;
    let link_host = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    let link = link_host.link("moved");
    link_host.script_reply(302, &[("location", &elsewhere.link("stolen"))]);
    link_host.script_reply(307, &[("location", &elsewhere.link("stolen"))]);
    assert_eq!(
        send(&host, &link, "echo", json!({"q": "1"})).await.status,
        202
    );
    wait_state(&host, &link, State::Delivered).await;
    let attempts = link_host.to(&link);
    assert_eq!(
        attempts.len(),
        3,
        "two redirects, each a failed attempt, then a 200"
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.json() == json!({"data": {"q": "1"}}))
    );
    assert_eq!(elsewhere.count(), 0, "a redirect was followed");
}

async fn a_handler_parked_in_a_wasi_sleep_has_its_timeout_delivered_at_the_deadline(
    backend: &Backend,
) {
    let host = TestHost::start(
        &testkit_dir(),
        &format!(
            "{}[keys]\nsleep = \"tk\"\n[plugins.tk]\nsource = \"testkit.wasm\"\nmode = \"async\"\ntimeout = \"1s\"\n",
            backend.server_keys()
        ),
    )
    .await;
    let receiver = Receiver::start().await;
    let link = receiver.link("sleepy");
    let sent = Instant::now();
    assert_eq!(
        send(&host, &link, "sleep", json!({"ms": "30000"}))
            .await
            .status,
        202
    );
    receiver.wait_for(1, LONG).await;
    let delivery = &receiver.to(&link)[0];
    let after = delivery.at - sent;
    eprintln!(
        "the timeout of a 30 s sleep under a 1 s timeout was delivered {after:?} after the request"
    );
    assert_eq!(delivery.json()["error"]["code"], "plugin_timeout");
    // At the 1 s deadline, not when the 30 s sleep ends: the bound leaves a
    // loaded machine 5 s of slack (1.65 s was seen under a parallel build)
    // and is still far from 30 s.
    assert!(
        after >= Duration::from_secs(1) && after < Duration::from_secs(6),
        "delivered after {after:?}"
    );
}

async fn auto_mode_answers_fast_handlers_now_and_slow_ones_later(backend: &Backend) {
    let host = host(backend, "auto", "10m").await;
    let receiver = Receiver::start().await;
    let fast = send(&host, &receiver.link("fast"), "echo", json!({"x": "1"})).await;
    assert_eq!(fast.status, 200);
    assert_eq!(fast.json(), json!({"data": {"x": "1"}}));

    let link = receiver.link("slow");
    let sent = Instant::now();
    let slow = send(&host, &link, "sleep", json!({"ms": "1000"})).await;
    assert_eq!(slow.status, 202);
    assert!(
        sent.elapsed() < Duration::from_millis(900),
        "202 took {:?}",
        sent.elapsed()
    );
    receiver.wait_for(1, LONG).await;
    assert_eq!(
        receiver.to(&link)[0].json(),
        json!({"data": {"ms": "1000"}})
    );
    assert_eq!(
        receiver.count(),
        1,
        "the fast answer must not be delivered too"
    );

    // Without a link, a slow handler's answer can only be synchronous.
    let answer = host.ask("sleep", json!({"ms": "600"})).await;
    assert_eq!(answer.status, 200);
}

async fn closed_records_are_pruned_while_the_host_runs(backend: &Backend) {
    let host = TestHost::start(
        &testkit_dir(),
        &format!(
            "{}outbox_retention = \"1s\"\n[keys]\necho = \"tk\"\n[plugins.tk]\nsource = \"testkit.wasm\"\nmode = \"async\"\n",
            backend.server_keys()
        ),
    )
    .await;
    let receiver = Receiver::start().await;
    let delivered = receiver.link("pruned");
    // A link nobody answers: its record stays open, and open records are never pruned.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let open = format!("http://127.0.0.1:{port}/ingest/open");
    assert_eq!(send(&host, &delivered, "echo", json!({})).await.status, 202);
    assert_eq!(send(&host, &open, "echo", json!({})).await.status, 202);
    wait_state(&host, &delivered, State::Delivered).await;
    let started = Instant::now();
    while state(&host, &delivered).await.is_some() {
        assert!(
            started.elapsed() < LONG,
            "the closed record was never pruned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "a closed record was pruned {:?} after it was seen delivered",
        started.elapsed()
    );
    assert!(matches!(
        state(&host, &open).await,
        Some(State::Accepted | State::Answered)
    ));
}

/// Every test above, once per outbox backend: `sqlite::...` and `postgres::...`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(backend) = super::Backend::postgres().await {
                        super::$name(&backend).await
                    }
                }
            )*
        }
    };
}

on_both_backends!(
    delivery_is_signed_with_the_protocol_headers,
    a_request_without_link_is_refused_for_an_async_plugin,
    failures_are_retried_until_the_receiver_takes_it,
    a_receiver_that_is_down_then_up_gets_the_answer,
    retry_after_is_honoured_on_429,
    retry_after_zero_keeps_the_backoff,
    other_4xx_are_final,
    nothing_is_sent_after_the_link_expires,
    handler_failures_are_delivered_as_error_bodies,
    a_duplicate_request_is_not_run_twice,
    a_redirecting_link_gets_nothing_at_its_location_and_is_retried,
    a_handler_parked_in_a_wasi_sleep_has_its_timeout_delivered_at_the_deadline,
    auto_mode_answers_fast_handlers_now_and_slow_ones_later,
    closed_records_are_pruned_while_the_host_runs
);
