//! What one request costs in heap allocations, counted by this binary's
//! global allocator: a unit that does not drift with the machine's speed or
//! load, so a budget can be asserted where a timing could not (BENCHMARKS.md
//! has the timings). Counted on the host's threads only, averaged over many
//! requests after as many to warm up.
//!
//! A budget is the count measured when it was set plus a little room. A change
//! that raises a count past its budget fails here; if the rise is meant, raise
//! the budget (here and in BENCHMARKS.md, "Allocation budgets") and say why in
//! the commit.
//!
//! A budget is a floor too: a count under [`FLOOR`] of its budget fails, as
//! work that moved off the counted threads reads near zero and would pass any
//! ceiling (if the drop is a real saving, lower the budget). The pipeline also
//! counts its handler's calls on the counted thread: each one must be there.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{build_plugins, examples_dir};
use optech_host::config::Config;
use optech_host::dispatch::{Call, Handler, HandlerFuture, Plugin};
use optech_host::loader::content_hash;
use optech_host::request_id::RequestId;
use optech_host::runtime::{Runtime, RuntimeOptions, WasmHandler};
use optech_host::signature::Signer;
use optech_host::{Host, Identity};

/// Requests measured, after as many to warm up.
const REQUESTS: u64 = 500;

/// A fresh instance of `echo.wasm` and one call of `handle` with two inputs:
/// the store and its WASI context, the instance, lowering and lifting.
const FRESH_CALL: Budget = Budget {
    allocations: 57.0,
    bytes: 19_500.0,
};
/// The same call on a kept instance (`requests_per_instance`).
const REUSED_CALL: Budget = Budget {
    allocations: 14.0,
    bytes: 2_100.0,
};
/// The HTTP pipeline around a handler: a signed echo request on a keep-alive
/// connection, read, checked, routed, admitted, run by a native handler,
/// answered signed, counted, logged as `optech serve` logs by default.
const PIPELINE: Budget = Budget {
    allocations: 45.0,
    bytes: 14_000.0,
};

struct Budget {
    allocations: f64,
    bytes: f64,
}

/// The least share of its budget a count may be.
const FLOOR: f64 = 0.5;

/// One measurement's counters.
#[derive(Default)]
struct Counts {
    allocations: AtomicU64,
    bytes: AtomicU64,
    /// Handler calls that ran on a counted thread.
    calls: AtomicU64,
}

impl Counts {
    fn read(&self) -> (u64, u64) {
        (
            self.allocations.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

thread_local! {
    /// Where this thread's allocations are counted: only the host's threads
    /// count, each test into its own counters (tests run in parallel).
    static COUNTING_INTO: Cell<Option<&'static Counts>> = const { Cell::new(None) };
}

struct CountingAllocator;

fn count(size: usize) {
    if let Ok(Some(counts)) = COUNTING_INTO.try_with(Cell::get) {
        counts.allocations.fetch_add(1, Ordering::Relaxed);
        counts.bytes.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Logging as `optech serve` does by default (into a sink), so the request
/// span's formatting is counted too; the same in every test of this binary.
fn log_as_optech_serve() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                .with_writer(std::io::sink)
                .finish(),
        )
        .unwrap();
    });
}

fn leak_counts() -> &'static Counts {
    Box::leak(Box::default())
}

/// Per request, over the measured requests.
fn per_request(before: (u64, u64), after: (u64, u64)) -> (f64, f64) {
    (
        (after.0 - before.0) as f64 / REQUESTS as f64,
        (after.1 - before.1) as f64 / REQUESTS as f64,
    )
}

fn check(what: &str, (allocations, bytes): (f64, f64), budget: &Budget) {
    println!(
        "{what}: {allocations:.1} allocations, {bytes:.0} bytes per request \
         (budget {}, {}; floor {:.1}, {:.0})",
        budget.allocations,
        budget.bytes,
        budget.allocations * FLOOR,
        budget.bytes * FLOOR
    );
    if cfg!(debug_assertions) {
        // The budgets were measured on the release build the README's test
        // command makes, and are meant for it only.
        println!("(a debug build: budgets not checked)");
        return;
    }
    assert!(
        allocations >= budget.allocations * FLOOR && bytes >= budget.bytes * FLOOR,
        "{what}: {allocations:.1} allocations and {bytes:.0} bytes per request, under {FLOOR} of \
         the budget ({}, {}): the work did not run on the counted threads, or the count fell \
         and the budget should come down with it (here and in BENCHMARKS.md).",
        budget.allocations,
        budget.bytes
    );
    assert!(
        allocations <= budget.allocations,
        "{what}: {allocations:.1} allocations per request, over its budget of {}. \
         If the rise is meant, raise the budget here and in BENCHMARKS.md and say why.",
        budget.allocations
    );
    assert!(
        bytes <= budget.bytes,
        "{what}: {bytes:.0} bytes allocated per request, over its budget of {}. \
         If the rise is meant, raise the budget here and in BENCHMARKS.md and say why.",
        budget.bytes
    );
}

/// A config serving `echo` from the example plugin; `extra` goes before `[keys]`.
fn echo_config(dir: &std::path::Path, extra: &str) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugins_dir = {:?}\ndata_dir = {:?}\nwatch = false\nadmin_listen = \"\"\n{extra}[keys]\necho = \"echo\"\n",
        examples_dir().display().to_string(),
        dir.join("data").display().to_string(),
    );
    Config::parse(&text, &dir.join("optech.toml")).unwrap()
}

fn echo_handler(runtime: &Runtime, config: &Config) -> WasmHandler {
    let settings = &config.plugins["echo"];
    let bytes = std::fs::read(settings.source.file().expect("a file source")).unwrap();
    WasmHandler::load(runtime, settings, &bytes, &content_hash(&bytes)).unwrap()
}

/// Calls `handler` directly, as the criterion bench does, on a thread that counts.
fn direct_calls(handler: WasmHandler) -> (f64, f64) {
    let counts = leak_counts();
    std::thread::spawn(move || {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let call = || Call {
            request_id: RequestId::generate(),
            key: "echo".into(),
            inputs: vec![
                ("key1".into(), "value1".into()),
                ("key2".into(), "value2".into()),
            ],
            deadline: Instant::now() + Duration::from_secs(10),
            trace: None,
        };
        COUNTING_INTO.set(Some(counts));
        for _ in 0..REQUESTS {
            tokio.block_on(handler.call(call())).unwrap();
        }
        let before = counts.read();
        for _ in 0..REQUESTS {
            tokio.block_on(handler.call(call())).unwrap();
        }
        COUNTING_INTO.set(None);
        per_request(before, counts.read())
    })
    .join()
    .unwrap()
}

#[test]
fn a_fresh_instance_call_stays_within_its_allocation_budget() {
    log_as_optech_serve();
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = echo_config(dir.path(), "");
    let runtime = Runtime::new(&RuntimeOptions::default()).unwrap();
    let counted = direct_calls(echo_handler(&runtime, &config));
    check("fresh instance + call", counted, &FRESH_CALL);
}

#[test]
fn a_reused_instance_call_stays_within_its_allocation_budget() {
    log_as_optech_serve();
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = echo_config(
        dir.path(),
        "[plugins.echo]\nrequests_per_instance = 1000000\n",
    );
    let runtime = Runtime::new(&RuntimeOptions::default()).unwrap();
    let counted = direct_calls(echo_handler(&runtime, &config));
    check("call on a reused instance", counted, &REUSED_CALL);
}

/// Answers with the inputs, as `echo.wasm` does, without a sandbox.
struct NativeEcho;

impl Handler for NativeEcho {
    fn call(&self, call: Call) -> HandlerFuture<'_> {
        if let Ok(Some(counts)) = COUNTING_INTO.try_with(Cell::get) {
            counts.calls.fetch_add(1, Ordering::Relaxed);
        }
        Box::pin(async move { Ok(call.inputs) })
    }
}

#[test]
fn the_http_pipeline_stays_within_its_allocation_budget() {
    log_as_optech_serve();
    let dir = tempfile::tempdir().unwrap();
    let config = echo_config(dir.path(), "");
    let counts = leak_counts();
    // One worker, as its threads are the ones that count.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || COUNTING_INTO.set(Some(counts)))
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new(&RuntimeOptions {
        max_instances: 1,
        max_idle: 0,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let settings = config.plugins["echo"].clone();
    let plugin = Plugin::new(
        settings,
        Arc::new(NativeEcho),
        "native".into(),
        runtime.metrics(),
    );
    let plugins = BTreeMap::from([("echo".to_string(), Arc::new(plugin))]);
    let host = tokio
        .block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let identity = Identity::new(Signer::new(common::SECRET.as_bytes(), None), "");
            Host::start_with_plugins(&config, identity, listener, runtime, plugins).await
        })
        .unwrap();

    let signer = Signer::new(common::SECRET.as_bytes(), None);
    let addr = host.addr();
    let requests: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            let body = format!(
                r#"{{"link":"https://api.optech.ai/ingest/{i:08x}","key":"echo","inputs":{{"key1":"value1","key2":"value-{i}"}}}}"#
            );
            format!(
                "POST / HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
                 x-optech-signature: {}\r\ncontent-length: {}\r\n\r\n{body}",
                signer.sign(body.as_bytes()),
                body.len()
            )
            .into_bytes()
        })
        .collect();
    // The client runs on a thread that does not count.
    let counted = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut send = |i: u64| {
            stream.write_all(&requests[(i % 100) as usize]).unwrap();
            read_ok(&mut stream, &mut buffer);
        };
        for i in 0..REQUESTS {
            send(i);
        }
        let before = counts.read();
        for i in 0..REQUESTS {
            send(i);
        }
        per_request(before, counts.read())
    })
    .join()
    .unwrap();
    tokio.block_on(host.shutdown()).unwrap();
    // Every request's handler ran where allocations are counted.
    assert_eq!(
        counts.calls.load(Ordering::Relaxed),
        2 * REQUESTS,
        "handler calls on the counted thread"
    );
    check("HTTP pipeline, native echo", counted, &PIPELINE);
}

/// Reads one answer (head and `content-length` body) and checks it is a 200.
fn read_ok(stream: &mut TcpStream, buffer: &mut [u8]) {
    let mut filled = 0;
    let (end, length) = loop {
        let read = stream.read(&mut buffer[filled..]).unwrap();
        assert!(read > 0, "the host closed the connection");
        filled += read;
        if let Some(end) = buffer[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a content-length");
            break (end, length);
        }
    };
    while filled < end + 4 + length {
        let read = stream.read(&mut buffer[filled..]).unwrap();
        assert!(read > 0, "the host closed the connection mid-body");
        filled += read;
    }
}
