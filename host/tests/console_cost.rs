//! What recording a request for the console costs the request path, counted
//! (not timed): heap allocations per request with the console on and off, in
//! the same process, through the whole pipeline with a native handler. A
//! request that succeeds and logs nothing must be recorded without one; and
//! with the console on, every request measured must really be recorded (a
//! console that dropped them would cost nothing too).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use optech_host::config::Config;
use optech_host::dispatch::{Call, Handler, HandlerFuture, Plugin};
use optech_host::runtime::{Runtime, RuntimeOptions};
use optech_host::signature::Signer;
use optech_host::{Host, Identity};

/// Counts every allocation of the process (this test binary runs one test).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Echo;

impl Handler for Echo {
    fn call(&self, call: Call) -> HandlerFuture<'_> {
        Box::pin(async move { Ok(call.inputs) })
    }
}

/// The most the two console-off runs may differ by, in allocations per
/// request, for the comparison to mean anything (they measured the same).
const MAX_NOISE: f64 = 0.2;

/// One run: allocations per request, and what its console recorded.
struct Run {
    per_request: f64,
    /// Changes the console recorded (its pages' version).
    changes: u64,
    /// Rows on the Requests page, filtered to `echo` answered 200.
    rows: usize,
}

/// Allocations per request over `n` requests, after `warm_up` requests; then
/// what the console holds, read from the admin listener (idle while counting).
async fn allocations_per_request(console_requests: usize, warm_up: usize, n: usize) -> Run {
    let data = tempfile::tempdir().unwrap();
    let config = Config::parse(
        &format!(
            "[server]\ndata_dir = {:?}\nwatch = false\nadmin_listen = \"127.0.0.1:0\"\nconsole_requests = {console_requests}\n[keys]\necho = \"native\"\n",
            data.path().display().to_string()
        ),
        Path::new("optech.toml"),
    )
    .unwrap();
    let runtime = Runtime::new(&RuntimeOptions {
        max_instances: 1,
        max_idle: 0,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let plugin = Arc::new(Plugin::new(
        config.plugins["native"].clone(),
        Arc::new(Echo),
        "native".into(),
        runtime.metrics(),
    ));
    let signer = Signer::new(b"secret", None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = Host::start_with_plugins(
        &config,
        Identity::new(signer.clone(), "id"),
        listener,
        runtime,
        BTreeMap::from([("native".to_string(), plugin)]),
    )
    .await
    .unwrap();
    let url = format!("http://{}/", host.addr());
    let client = reqwest::Client::new();
    let body = r#"{"key":"echo","inputs":{"a":"1"}}"#;
    let signature = signer.sign(body.as_bytes());
    let send = || async {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-optech-signature", &signature)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    };
    for _ in 0..warm_up {
        send().await;
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..n {
        send().await;
    }
    let per_request = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / n as f64;

    let admin = format!("http://{}", host.admin_addr().unwrap());
    let page = client
        .get(format!("{admin}/requests/rows?key=echo&status=200"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows = page.matches("data-request-id=").count();
    // The page's version: bumped on every change the console records.
    let changes = page
        .split("/requests/rows?v=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {page}"));
    host.shutdown().await.unwrap();
    Run {
        per_request,
        changes,
        rows,
    }
}

#[tokio::test]
async fn recording_a_request_allocates_nothing() {
    // Past the ring's size, so every entry written replaces one.
    let (warm_up, n) = (300, 2_000);
    let ring = 100;
    let off = allocations_per_request(0, warm_up, n).await;
    let recorded = allocations_per_request(ring, warm_up, n).await;
    let off_again = allocations_per_request(0, warm_up, n).await;
    let on = recorded.per_request;
    let (off, off_again) = (off.per_request, off_again.per_request);
    eprintln!(
        "allocations per request (client and host): console off {off:.2}, on {on:.2}, off again {off_again:.2}; \
         with it on, {} changes recorded and {} rows kept",
        recorded.changes, recorded.rows
    );
    // The console on recorded what it was given: a change (at least) for
    // every request, and the newest `ring` of them in the ring.
    assert!(
        recorded.changes >= (warm_up + n) as u64,
        "the console recorded {} changes over {} requests",
        recorded.changes,
        warm_up + n
    );
    assert_eq!(
        recorded.rows, ring,
        "the console's ring shows {} of the last {ring} requests",
        recorded.rows
    );
    let noise = (off - off_again).abs();
    assert!(
        noise <= MAX_NOISE,
        "two runs with the console off differ by {noise:.2} allocations per request \
         ({off:.2} / {off_again:.2}): too noisy to tell what recording costs (at most {MAX_NOISE})"
    );
    assert!(
        on - off.max(off_again) <= noise + 0.1,
        "the console adds {:.2} allocations per request (off {off:.2} / {off_again:.2}, on {on:.2})",
        on - off.max(off_again)
    );
}
