//! `optech-bench`: one run that puts the optech host beside the same pipeline
//! with a native handler, and beside `wasmtime serve`, under the same load.
//!
//! Each contender runs as its own process on loopback; `wrk` drives it at fixed
//! concurrency with signed requests whose `link`s vary; the contender's peak RSS
//! is read from /proc. See BENCHMARKS.md for the command and the results.

mod accepts;
mod backend;
mod collector;
mod contenders;
mod js;
mod load;
mod python;
mod scale;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::contenders::{Contender, Scripts};
use crate::load::{LoadOptions, Result as LoadResult};

pub const SECRET: &str = "bench-secret";

#[derive(Parser, Clone)]
#[command(about = "Benchmark the optech host against a native handler and wasmtime serve")]
pub struct Args {
    /// Seconds of measured load per contender.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of warm-up load before each measurement.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Also measure thread and connection scaling, RSS with 1,000 async handlers
    /// in flight, and start-up with 50 plugins.
    #[arg(long)]
    pub scale: bool,
    /// Rounds over all contenders, interleaved; each row is its contender's
    /// median round, so drift on a shared machine hits every contender alike.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Skip `wasmtime serve` even when it is installed.
    #[arg(long)]
    pub no_wasmtime: bool,
    /// Skip the contenders that call a back end (d, d2, d3, e).
    #[arg(long)]
    pub no_outbound: bool,
    /// Skip the Python contenders (h, h2, i).
    #[arg(long)]
    pub no_python: bool,
    /// Skip the JavaScript contenders (f, f2, g), which need Node.js.
    #[arg(long)]
    pub no_js: bool,
    /// Run only these contenders, by letter (`--only a,d,e`).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Measure async requests accepted per second instead, on SQLite and, given
    /// a URL (or OPTECH_TEST_POSTGRES), on PostgreSQL.
    #[arg(long)]
    pub accepts: bool,
    /// The PostgreSQL outbox for `--accepts`.
    #[arg(long, env = "OPTECH_TEST_POSTGRES")]
    pub postgres: Option<String>,
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    load::check_wrk()?;
    let root = root();
    // The Rust examples (echo, orders); the other languages' contenders build their own.
    let dirs = optech_host::build::BuildDirs::with_target(root.join("target/plugins"));
    for plugin in optech_host::build::discover(&root.join("plugins"))? {
        if plugin.language() == "rust" {
            optech_host::build::build(&plugin, &dirs, &root.join("plugins"))?;
        }
    }
    let work = tempfile::tempdir()?;
    let options = LoadOptions {
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup),
        connections: args.connections,
        threads: args.threads,
    };

    println!("# optech benchmark\n");
    println!("{}\n", machine());
    println!(
        "load: wrk, {} connections, {} threads, {}s warm-up, {}s measured, signed echo requests with 1,000 distinct links; median of {} interleaved rounds\n",
        options.connections, options.threads, args.warmup, args.duration, args.rounds
    );

    if args.accepts {
        return accepts::run(
            work.path(),
            args.postgres.as_deref(),
            args.duration,
            args.rounds,
        );
    }
    let scripts = Scripts::write(work.path())?;
    let mut contenders = vec![
        Contender::optech(work.path())?,
        Contender::optech_console_off(work.path())?,
        Contender::optech_reusing(work.path())?,
        Contender::native(work.path())?,
        Contender::native_console_off(work.path())?,
    ];
    // Kept alive for the whole run: d, d2 and e call it.
    let back_end = if args.no_outbound {
        None
    } else {
        Some(backend::BackEnd::start()?)
    };
    if let Some(back_end) = &back_end {
        let base = back_end.base_url();
        contenders.push(Contender::orders(work.path(), &base, false)?);
        contenders.push(Contender::orders(work.path(), &base, true)?);
        contenders.push(Contender::orders_reusing(work.path(), &base)?);
        contenders.push(Contender::native_orders(work.path(), &base)?);
        contenders.push(Contender::orders_token(work.path(), &base, true)?);
        contenders.push(Contender::orders_token(work.path(), &base, false)?);
        let collector = std::sync::Arc::new(collector::Collector::start()?);
        contenders.push(Contender::orders_traced(
            work.path(),
            &base,
            collector.clone(),
            true,
        )?);
        contenders.push(Contender::orders_traced(
            work.path(),
            &base,
            collector,
            false,
        )?);
        println!(
            "traced (t1, t0): as d, exporting OTLP/HTTP to a collector on loopback (its own process thread, decoding every export) with the default batch settings; t1 samples every request (5 spans each), t0 none\n"
        );
        println!(
            "outbound (d, d2, e): \"order status\" requests, each one GET with a bearer token to a back end on loopback (its own process thread) answering a small JSON order; d4 and d5 take the token by OAuth 2 client credentials from the same back end, d4 keeping it in the store (SQLite) until it expires, d5 fetching one per request\n"
        );
    }
    if args.no_python {
        println!("(Python contenders skipped)\n");
    } else {
        python::build_echo()?;
        contenders.push(python::fresh(work.path())?);
        contenders.push(python::reused(work.path())?);
        contenders.push(python::fastapi()?);
        println!(
            "Python (h, h2, i): the same signed echo requests; h and h2 a Python plugin built with componentize-py, i FastAPI on one uvicorn worker (uvloop, httptools) doing the signature check, the echo and the signed answer\n"
        );
    }
    if args.no_js {
        println!("(JavaScript contenders f, f2, g skipped)\n");
    } else {
        js::build_echo()?;
        contenders.push(js::fresh(work.path())?);
        contenders.push(js::reused(work.path())?);
        contenders.push(js::express()?);
    }
    if args.no_wasmtime {
        println!("(wasmtime serve skipped)\n");
    } else {
        match Contender::wasmtime_serve(&root) {
            Ok(Some(c)) => contenders.push(c),
            Ok(None) => println!(
                "(wasmtime serve not found: `cargo install wasmtime-cli --version 48.0.8 --locked` to include it)\n"
            ),
            Err(e) => println!("(wasmtime serve unavailable: {e:#})\n"),
        }
    }

    if !args.only.is_empty() {
        contenders.retain(|c| {
            let letter = c.name.split('.').next().unwrap_or_default();
            args.only.iter().any(|o| o == letter)
        });
    }
    let mut rounds: Vec<Vec<LoadResult>> = vec![Vec::new(); contenders.len()];
    // What the back end served each contender, per round (d4 and d5 are checked on it).
    let mut served: Vec<Vec<backend::Served>> = vec![Vec::new(); contenders.len()];
    for round in 1..=args.rounds.max(1) {
        // Every other round runs backwards, so no contender always runs right
        // after the same neighbour or at the same point of a round: a pair
        // compared on a few percent (a against a0) must not differ by its order.
        let mut order: Vec<usize> = (0..contenders.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for i in order {
            let (contender, results) = (&contenders[i], &mut rounds[i]);
            let before = back_end.as_ref().map(|b| b.served()).unwrap_or_default();
            let result = contender.measure(&options, &scripts)?;
            let after = back_end.as_ref().map(|b| b.served()).unwrap_or_default();
            served[i].push(after - before);
            eprintln!(
                "round {round}: {} {:.0} req/s",
                contender.name,
                result.rps()
            );
            results.push(result);
        }
    }
    let results: Vec<(String, LoadResult)> = contenders
        .iter()
        .zip(rounds)
        .map(|(contender, mut results)| {
            results.sort_by(|x, y| x.rps().total_cmp(&y.rps()));
            let median = results.swap_remove(results.len() / 2);
            (contender.name.clone(), median)
        })
        .collect();
    println!("| contender | requests/s | p50 | p99 | p99.9 | errors | peak RSS |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, result) in &results {
        println!("{}", result.row(name));
    }
    println!();
    let rps = |name: &str| {
        results
            .iter()
            .find(|(n, _)| n.starts_with(name))
            .map(|(_, r)| r.rps())
    };
    if let (Some(a), Some(b)) = (rps("a."), rps("b.")) {
        println!(
            "a/b (WASM echo vs native echo, same pipeline): {:.2}",
            a / b
        );
    }
    if let (Some(a0), Some(b0)) = (rps("a0."), rps("b0.")) {
        println!("a0/b0 (the same, console keeping nothing): {:.2}", a0 / b0);
    }
    if let (Some(a), Some(a0)) = (rps("a."), rps("a0.")) {
        println!("a/a0 (console recording vs not, WASM echo): {:.2}", a / a0);
    }
    if let (Some(b), Some(b0)) = (rps("b."), rps("b0.")) {
        println!(
            "b/b0 (console recording vs not, native echo): {:.2}",
            b / b0
        );
    }
    if let (Some(a), Some(c)) = (rps("a."), rps("c.")) {
        println!("a/c (optech vs wasmtime serve): {:.2}", a / c);
    }
    if let (Some(a2), Some(b)) = (rps("a2."), rps("b.")) {
        println!("a2/b (reused instances vs native echo): {:.2}", a2 / b);
    }
    if let (Some(a2), Some(c)) = (rps("a2."), rps("c.")) {
        println!("a2/c (reused instances vs wasmtime serve): {:.2}", a2 / c);
    }
    if let (Some(d), Some(e)) = (rps("d."), rps("e.")) {
        println!(
            "d/e (plugin GET vs native GET, same pooled client): {:.2}",
            d / e
        );
    }
    if let (Some(d3), Some(e)) = (rps("d3."), rps("e.")) {
        println!(
            "d3/e (plugin GET on reused instances vs native GET): {:.2}",
            d3 / e
        );
    }
    if let (Some(d), Some(d2)) = (rps("d."), rps("d2.")) {
        println!(
            "d/d2 (pooled connections vs a new connection per request): {:.2}",
            d / d2
        );
    }

    if let (Some(f), Some(g)) = (rps("f."), rps("g.")) {
        println!(
            "f/g (fresh JS instance per request vs one Node + Express process): {:.2}",
            f / g
        );
    }
    if let (Some(f2), Some(g)) = (rps("f2."), rps("g.")) {
        println!(
            "f2/g (reused JS instances vs Node + Express): {:.2}",
            f2 / g
        );
    }
    if let (Some(h), Some(i)) = (rps("h."), rps("i.")) {
        println!(
            "h/i (fresh Python instance per request vs FastAPI on one uvicorn worker): {:.2}",
            h / i
        );
    }
    if let (Some(h2), Some(i)) = (rps("h2."), rps("i.")) {
        println!("h2/i (reused Python instances vs FastAPI): {:.2}", h2 / i);
    }
    if let (Some(d4), Some(d5)) = (rps("d4."), rps("d5.")) {
        println!(
            "d4/d5 (OAuth token kept in the store vs fetched per request): {:.2}",
            d4 / d5
        );
    }
    if let (Some(t1), Some(d)) = (rps("t1."), rps("d.")) {
        println!("t1/d (traced at sampling 1.0 vs not traced): {:.2}", t1 / d);
    }
    if let (Some(t0), Some(d)) = (rps("t0."), rps("d.")) {
        println!(
            "t0/d (tracing on at sampling 0 vs not traced): {:.2}",
            t0 / d
        );
    }
    let mut token_failures = check_tokens(&contenders, &served, options.connections);
    token_failures.extend(check_traces(&contenders, options.connections));
    if args.scale {
        println!();
        scale::run(work.path(), &options, &scripts)?;
    }
    // A benchmark of wrong answers measures nothing: after the tables, fail loudly.
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, r)| r.errors + r.non_2xx > 0)
        .map(|(name, r)| format!("{name}: {} errors, {} non-2xx", r.errors, r.non_2xx))
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("requests failed:\n  {}", failed.join("\n  "));
    }
    if !token_failures.is_empty() {
        anyhow::bail!("token counts are wrong:\n  {}", token_failures.join("\n  "));
    }
    Ok(())
}

/// Prints what the traced contenders' collector received, round by round,
/// and returns what is wrong: at sampling 1.0 every answered request's spans
/// arrived or were counted as dropped, plus at most those of the requests in
/// flight when wrk stopped (twice: warm-up and measurement: a request cut off
/// by its client leaving still ends its spans, but is not counted as
/// answered); at 0 none was made.
fn check_traces(contenders: &[Contender], connections: u32) -> Vec<String> {
    let mut wrong = Vec::new();
    for contender in contenders {
        let Some(traced) = &contender.traced else {
            continue;
        };
        let rounds = traced.rounds.lock().unwrap_or_else(|p| p.into_inner());
        for (round, c) in rounds.iter().enumerate() {
            let (expected, slack) = if traced.sampled {
                let per = traced.spans_per_request;
                (c.requests * per, 2 * u64::from(connections) * per)
            } else {
                (0, 0)
            };
            println!(
                "{} round {}: {} requests, {} spans received, {} dropped, {} expected",
                contender.name,
                round + 1,
                c.requests,
                c.received,
                c.dropped,
                expected
            );
            if c.requests == 0 {
                wrong.push(format!(
                    "{} round {}: no request answered 2xx",
                    contender.name,
                    round + 1
                ));
            } else if !(expected..=expected + slack).contains(&(c.received + c.dropped)) {
                wrong.push(format!(
                    "{} round {}: {} spans received + {} dropped, not {expected} to {expected} + {slack}",
                    contender.name,
                    round + 1,
                    c.received,
                    c.dropped
                ));
            }
        }
    }
    wrong
}

/// Prints the tokens d4 and d5 took per order and returns what is wrong: d5
/// must take one per order (and per request still in flight when the load
/// stops: at most one per connection more); d4 at most one per connection
/// per round (instances that miss the cache together each fetch one),
/// whatever the number of orders.
fn check_tokens(
    contenders: &[Contender],
    served: &[Vec<backend::Served>],
    connections: u32,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for (contender, rounds) in contenders.iter().zip(served) {
        let cached = contender.name.starts_with("d4.");
        if !cached && !contender.name.starts_with("d5.") {
            continue;
        }
        let tokens: u64 = rounds.iter().map(|s| s.tokens).sum();
        let orders: u64 = rounds.iter().map(|s| s.orders).sum();
        println!(
            "{}: {tokens} tokens for {orders} orders over {} rounds",
            contender.name.split('.').next().unwrap_or_default(),
            rounds.len()
        );
        for (round, s) in rounds.iter().enumerate() {
            let ok = if cached {
                s.tokens <= u64::from(connections) && s.orders > s.tokens
            } else {
                s.orders > 0 && (s.orders..=s.orders + u64::from(connections)).contains(&s.tokens)
            };
            if !ok {
                wrong.push(format!(
                    "{} round {}: {} tokens for {} orders",
                    contender.name,
                    round + 1,
                    s.tokens,
                    s.orders
                ));
            }
        }
    }
    wrong
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "machine: {cpu}, {cores} cores, {} GiB RAM, Linux {}",
        mem / 1024 / 1024,
        kernel.trim()
    )
}
