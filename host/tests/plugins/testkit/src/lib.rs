//! A test-only plugin whose request `key` picks what it does, from well-behaved
//! to hostile. The host's integration tests map keys to it in their configs.
//! A key may carry a suffix after a dot (`sleep.other`), so that several keys,
//! mapped to different plugins, can share one behaviour.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use optech_sdk::{Data, Error, Request, config, http, log};

mod kv;
mod marks;

static CALLS: AtomicU64 = AtomicU64::new(0);

fn handle(request: Request) -> Result<Data, Error> {
    let inputs = request.inputs();
    let behaviour = request.key().split('.').next().unwrap_or_default();
    match behaviour {
        "echo" => Ok(Data::from(request.inputs().clone())),
        "fail" => Err(Error::failed("the back end is down")),
        "invalid" => Err(Error::invalid_input("`x` must be positive")),
        "panic" => panic!("testkit was asked to panic"),
        "loop" => loop {
            black_box(());
        },
        "alloc" => {
            // Grows until the memory limit stops it.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                black_box(&hoard);
            }
        }
        "recurse" => Ok(Data::new().with("depth", recurse(black_box(1)))),
        "big" => {
            let bytes: usize = inputs.parse("bytes")?;
            Ok(Data::new().with("big", "x".repeat(bytes)))
        }
        "fields" => {
            // `n` distinct fields: the host's work on the answer must stay linear.
            let n: usize = inputs.parse("n")?;
            Ok((0..n).map(|i| (format!("field{i}"), "v")).collect())
        }
        "escapes" => {
            // `n` control characters: n raw bytes, 6n bytes once escaped as JSON.
            let n: usize = inputs.parse("n")?;
            Ok(Data::new().with("escaped", "\u{1}".repeat(n)))
        }
        "fetch" => {
            // A request to `url`; failures reach the caller through `?` as plugin errors.
            let response = outbound(inputs)?.send()?;
            Ok(Data::new()
                .with("status", response.status())
                .with("body", response.text()?))
        }
        "probe" => {
            // Like `fetch`, but says which kind of failure it met.
            match outbound(inputs)?.send() {
                Ok(response) => Ok(Data::new()
                    .with("status", response.status())
                    .with("bytes", response.bytes().len())),
                Err(error) => {
                    let kind = match &error {
                        http::Error::Denied { .. } => "denied",
                        http::Error::Timeout => "timeout",
                        http::Error::Connect => "connect",
                        http::Error::TooLarge => "too_large",
                        http::Error::Other => "other",
                    };
                    Ok(Data::new().with("error", kind).with("message", error))
                }
            }
        }
        "sleep" => {
            let ms: u64 = inputs.parse("ms")?;
            std::thread::sleep(Duration::from_millis(ms));
            Ok(Data::from(request.inputs().clone()))
        }
        "spin" => {
            // Busy for `ms` milliseconds of wall-clock time, never yielding.
            let ms: u64 = inputs.parse("ms")?;
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_millis(ms) {
                black_box(());
            }
            Ok(Data::new().with("spun_ms", ms))
        }
        "config" => {
            let name = inputs.require("name")?;
            Ok(Data::new().with("value", config(name).unwrap_or_else(|| "<unset>".into())))
        }
        "log" => {
            let lines: u32 = inputs.parse("lines")?;
            for i in 0..lines {
                log::info(&format!("log line {i}"));
                println!("stdout line {i}");
                eprintln!("stderr line {i}");
            }
            Ok(Data::new().with("logged", lines))
        }
        "flood" => {
            // More than the console keeps of one request: `lines` log lines of
            // `width` bytes, then a line of `width` bytes on stdout and on
            // stderr; the answer is the inputs (as big as the caller made them).
            let lines: usize = inputs.parse("lines")?;
            let width: usize = inputs.parse("width")?;
            let line = "f".repeat(width);
            for _ in 0..lines {
                log::info(&line);
            }
            println!("{line}");
            eprintln!("{line}");
            Ok(Data::from(request.inputs().clone()))
        }
        "say" => {
            // Says `text` (plus the value of config `secret`, if named) in the
            // log, on stdout and on stderr; with `fail`, also as its error.
            let mut text = inputs.require("text")?.to_string();
            if let Some(name) = inputs.get("secret") {
                text.push_str(&config(name).unwrap_or_default());
            }
            log::info(&text);
            println!("{text}");
            eprintln!("{text}");
            if inputs.get("fail").is_some() {
                return Err(Error::failed(text));
            }
            Ok(Data::new().with("said", text.len()))
        }
        "snoop" => {
            // Everything here must fail inside the sandbox.
            let file = std::fs::read_to_string("/etc/passwd")
                .map(|_| "read")
                .unwrap_or("denied");
            let dir = std::fs::read_dir(".").map(|_| "listed").unwrap_or("denied");
            let env = std::env::var("HOME").map(|_| "read").unwrap_or("denied");
            let vars = std::env::vars().count();
            let target = inputs.get("addr").unwrap_or("127.0.0.1:80");
            let socket = std::net::TcpStream::connect(target)
                .map(|_| "connected")
                .unwrap_or("denied");
            Ok(Data::new()
                .with("file", file)
                .with("dir", dir)
                .with("env", env)
                .with("env_vars", vars)
                .with("socket", socket))
        }
        "count" => {
            // Calls this instance has served: 1 every time unless the host reuses instances.
            let served = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
            Ok(Data::new().with("served", served))
        }
        "marks" => marks::marks(inputs),
        "kv" => kv::kv(inputs),
        "version" => Ok(Data::new().with("version", option_env!("TESTKIT_VERSION").unwrap_or("1"))),
        other => Err(Error::invalid_input(format!(
            "testkit has no behaviour {other:?}"
        ))),
    }
}

/// The request `inputs` describe: `url`, and optional `method` and `body`; it
/// carries `authorization: Bearer <config token>` when the config has a token.
fn outbound(inputs: &optech_sdk::Inputs) -> Result<http::RequestBuilder, Error> {
    let url = inputs.require("url")?;
    let mut request = http::request(inputs.get("method").unwrap_or("GET"), url);
    if let Some(token) = config("token") {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    if let Some(body) = inputs.get("body") {
        request = request.json(body);
    }
    Ok(request)
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let pad = black_box([depth; 64]);
    recurse(black_box(depth + 1)) + pad[0]
}

optech_sdk::export!(handle);
