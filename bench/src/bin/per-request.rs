//! `per-request`: what one request costs, in units that do not depend on the
//! machine's speed or load: heap allocations and bytes (counted by this
//! binary's global allocator, on the host's threads only), and instructions
//! when run under `valgrind --tool=callgrind --separate-threads=yes` (the
//! host's threads are named `host`, the client's `client`).
//!
//! Modes: `fresh` and `reused` call `echo.wasm` through `WasmHandler` (a fresh
//! instance per call, or one kept instance), as the criterion bench does;
//! `http-native`, `http-fresh` and `http-reused` send signed echo requests over
//! loopback, one at a time on one keep-alive connection, to a host started
//! in-process (contenders b, a and a2 of `optech-bench`). The pool is sized
//! for two instances, so valgrind can reserve it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use optech_host::config::Config;
use optech_host::dispatch::{Call, Handler, HandlerFuture, Plugin};
use optech_host::loader::content_hash;
use optech_host::request_id::RequestId;
use optech_host::runtime::{Runtime, RuntimeOptions, WasmHandler};
use optech_host::signature::Signer;
use optech_host::{Host, Identity};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Only the host's threads count: the client's work is not the host's cost.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
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
static GLOBAL: Counting = Counting;

#[derive(Parser)]
#[command(about = "Allocations (and, under callgrind, instructions) per request")]
struct Args {
    /// fresh, reused, http-native, http-fresh or http-reused.
    mode: String,
    /// Requests measured, after as many again to warm up.
    #[arg(long, default_value_t = 1000)]
    requests: u64,
    /// Log as `optech serve` does under `optech-bench` (`warn,optech=info`).
    #[arg(long)]
    log: bool,
    /// The console's ring size (`[server] console_requests`); 0 turns its
    /// recording off, to count what recording costs a request.
    #[arg(long, default_value_t = 1000)]
    console_requests: usize,
    /// The component to serve as `echo` instead of `plugins/echo.wasm`: say
    /// `bench/js/echo-js.wasm` or `bench/python/echo-py.wasm` (built by
    /// `optech-bench`), to count what a big component's instance costs.
    #[arg(long)]
    wasm: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    // As `optech serve` does: errors made and handled inside wasmtime (a full
    // pool slot, say) must not walk the stack.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let args = Args::parse();
    if args.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn,optech=info"))
            .init();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = root.join("plugins");
    let dir = tempfile::tempdir()?;
    let reuse = if args.mode.ends_with("reused") {
        "requests_per_instance = 1000000\n"
    } else {
        ""
    };
    let source = match &args.wasm {
        Some(path) => format!(
            "source = {:?}\n",
            std::path::absolute(path)?.display().to_string()
        ),
        None => String::new(),
    };
    let plugin = if reuse.is_empty() && source.is_empty() {
        String::new()
    } else {
        format!("[plugins.echo]\n{reuse}{source}")
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugins_dir = {:?}\ndata_dir = {:?}\nwatch = false\nadmin_listen = \"\"\nconsole_requests = {}\n{plugin}[keys]\necho = \"echo\"\n",
        plugins.display().to_string(),
        dir.path().join("data").display().to_string(),
        args.console_requests,
    );
    let config = Config::parse(&text, &dir.path().join("optech.toml"))?;
    let settings = &config.plugins["echo"];
    let runtime = Runtime::new(&RuntimeOptions {
        max_instances: 2,
        max_idle: 2,
        // Compiling under valgrind takes a while: once is enough.
        cache_dir: Some(root.join("target/per-request-cache")),
        ..RuntimeOptions::default()
    })?;
    let handler: Arc<dyn Handler> = if args.mode == "http-native" {
        Arc::new(NativeEcho)
    } else {
        let file = settings
            .source
            .file()
            .context("the bench's plugins are files")?;
        let bytes = std::fs::read(file)
            .with_context(|| format!("{} (run `optech build`)", file.display()))?;
        Arc::new(WasmHandler::load(
            &runtime,
            settings,
            &bytes,
            &content_hash(&bytes),
        )?)
    };
    let metrics = runtime.metrics().clone();
    let (allocations, bytes) = match args.mode.as_str() {
        "fresh" | "reused" => {
            let before = instantiations(&metrics)?;
            let started = Instant::now();
            let counts = calls(handler, args.requests)?;
            let took = started.elapsed();
            let after = instantiations(&metrics)?;
            // Wall time on one thread, warm-up included: a figure for the
            // machine it ran on, beside the counts that are not.
            println!(
                "{}: {:.1} µs per call, of which {:.1} µs instantiating ({} instances for {} calls)",
                args.mode,
                took.as_secs_f64() * 1e6 / (2 * args.requests) as f64,
                (after.1 - before.1) * 1e6 / (after.0 - before.0).max(1.0),
                after.0 - before.0,
                2 * args.requests,
            );
            counts
        }
        "http-native" | "http-fresh" | "http-reused" => {
            http(&config, runtime, handler, args.requests)?
        }
        other => bail!("unknown mode {other:?}"),
    };
    println!(
        "{}: {:.1} allocations, {:.0} bytes per request ({} requests)",
        args.mode,
        allocations as f64 / args.requests as f64,
        bytes as f64 / args.requests as f64,
        args.requests
    );
    Ok(())
}

/// Instances made so far and the seconds they took, from the host's own
/// `optech_instantiation_duration_seconds` histogram.
fn instantiations(metrics: &optech_host::metrics::Metrics) -> anyhow::Result<(f64, f64)> {
    let text = metrics.encode()?;
    let sum = |suffix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("optech_instantiation_duration_seconds_{suffix}")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok((sum("count"), sum("sum")))
}

struct NativeEcho;

impl Handler for NativeEcho {
    fn call(&self, call: Call) -> HandlerFuture<'_> {
        Box::pin(async move { Ok(call.inputs) })
    }
}

/// Calls the handler directly, as the criterion bench does.
fn calls(handler: Arc<dyn Handler>, n: u64) -> anyhow::Result<(u64, u64)> {
    std::thread::Builder::new()
        .name("host".into())
        .spawn(move || {
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
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
            COUNTED.set(true);
            for _ in 0..n {
                tokio.block_on(handler.call(call()))?;
            }
            let before = (
                ALLOCATIONS.load(Ordering::Relaxed),
                BYTES.load(Ordering::Relaxed),
            );
            for _ in 0..n {
                tokio.block_on(handler.call(call()))?;
            }
            COUNTED.set(false);
            Ok((
                ALLOCATIONS.load(Ordering::Relaxed) - before.0,
                BYTES.load(Ordering::Relaxed) - before.1,
            ))
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the calling thread panicked"))?
}

/// Starts a host on loopback and sends it `n` signed requests (after `n` to warm up).
fn http(
    config: &Config,
    runtime: Runtime,
    handler: Arc<dyn Handler>,
    n: u64,
) -> anyhow::Result<(u64, u64)> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("host")
        .on_thread_start(|| COUNTED.set(true))
        .enable_all()
        .build()?;
    let settings = config.plugins["echo"].clone();
    let host = tokio.block_on(async {
        let plugin = Plugin::new(settings, handler, "sha".into(), runtime.metrics());
        let plugins = BTreeMap::from([("echo".to_string(), Arc::new(plugin))]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let identity = Identity::new(Signer::new(b"secret", None), "");
        Host::start_with_plugins(config, identity, listener, runtime, plugins).await
    })?;
    let addr = host.addr();
    let signer = Signer::new(b"secret", None);
    let requests: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            let body = format!(
                r#"{{"link":"https://api.optech.ai/ingest/{i:08x}","key":"echo","inputs":{{"key1":"value1","key2":"value-{i}"}}}}"#
            );
            format!(
                "POST / HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nx-optech-signature: {}\r\ncontent-length: {}\r\n\r\n{body}",
                signer.sign(body.as_bytes()),
                body.len()
            )
            .into_bytes()
        })
        .collect();
    let client = std::thread::Builder::new().name("client".into()).spawn(
        move || -> anyhow::Result<(u64, u64)> {
            let mut stream = TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            let mut buffer = vec![0u8; 64 * 1024];
            let mut send = |i: u64| -> anyhow::Result<()> {
                stream.write_all(&requests[(i % 100) as usize])?;
                read_answer(&mut stream, &mut buffer)
            };
            for i in 0..n {
                send(i)?;
            }
            let before = (
                ALLOCATIONS.load(Ordering::Relaxed),
                BYTES.load(Ordering::Relaxed),
            );
            for i in 0..n {
                send(i)?;
            }
            Ok((
                ALLOCATIONS.load(Ordering::Relaxed) - before.0,
                BYTES.load(Ordering::Relaxed) - before.1,
            ))
        },
    )?;
    let counts = client
        .join()
        .map_err(|_| anyhow::anyhow!("the client panicked"))??;
    tokio.block_on(host.shutdown())?;
    Ok(counts)
}

/// Reads one answer (headers and a `content-length` body) and checks it is a 200.
fn read_answer(stream: &mut TcpStream, buffer: &mut [u8]) -> anyhow::Result<()> {
    let mut filled = 0;
    loop {
        let read = stream.read(&mut buffer[filled..])?;
        if read == 0 {
            bail!("the host closed the connection");
        }
        filled += read;
        let Some(end) = buffer[..filled].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buffer[..end])?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("not a 200: {head}");
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .context("no content-length")?;
        while filled < end + 4 + length {
            let read = stream.read(&mut buffer[filled..])?;
            if read == 0 {
                bail!("the host closed the connection mid-body");
            }
            filled += read;
        }
        return Ok(());
    }
}
