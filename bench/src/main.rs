//! `optech-bench`: one run that puts the optech host beside the same pipeline
//! with a native handler, and beside `wasmtime serve`, under the same load.
//!
//! Each contender runs as its own process on loopback; `wrk` drives it at fixed
//! concurrency with signed requests whose `link`s vary; the contender's peak RSS
//! is read from /proc. See BENCHMARKS.md for the command and the results.

mod contenders;
mod load;
mod scale;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::contenders::Contender;
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
    /// Skip `wasmtime serve` even when it is installed.
    #[arg(long)]
    pub no_wasmtime: bool,
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    load::check_wrk()?;
    let root = root();
    optech_host::plugin_build::build_all(&root.join("plugins"), &root.join("target/plugins"))?;
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
        "load: wrk, {} connections, {} threads, {}s warm-up, {}s measured, signed echo requests with 1,000 distinct links\n",
        options.connections, options.threads, args.warmup, args.duration
    );

    let mut contenders = vec![
        Contender::optech(work.path())?,
        Contender::native(work.path())?,
    ];
    match (args.no_wasmtime, Contender::wasmtime_serve(&root)) {
        (true, _) => println!("(wasmtime serve skipped)\n"),
        (false, Ok(Some(c))) => contenders.push(c),
        (false, Ok(None)) => println!(
            "(wasmtime serve not found: `cargo install wasmtime-cli --version 48.0.8 --locked` to include it)\n"
        ),
        (false, Err(e)) => println!("(wasmtime serve unavailable: {e:#})\n"),
    }

    let mut results: Vec<(String, LoadResult)> = Vec::new();
    println!("| contender | requests/s | p50 | p99 | p99.9 | errors | peak RSS |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for contender in &contenders {
        let result = contender.measure(&options, &work.path().join("wrk.lua"))?;
        println!("{}", result.row(&contender.name));
        results.push((contender.name.clone(), result));
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
    if let (Some(a), Some(c)) = (rps("a."), rps("c.")) {
        println!("a/c (optech vs wasmtime serve): {:.2}", a / c);
    }

    if args.scale {
        println!();
        scale::run(work.path(), &options)?;
    }
    Ok(())
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
