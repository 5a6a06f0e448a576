//! Scale figures: worker threads, connections, RSS with many async handlers in
//! flight, and start-up time with 50 plugins, cold and cached.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use optech_host::signature::Signer;

use crate::contenders::{Contender, Scripts, rss_kib};
use crate::load::{self, LoadOptions};

pub fn run(dir: &Path, options: &LoadOptions, scripts: &Scripts) -> anyhow::Result<()> {
    let script = scripts.echo.clone();
    let optech = Contender::optech(dir)?;

    println!(
        "## optech + echo.wasm: worker threads ({} connections)\n",
        options.connections
    );
    println!("| worker threads | requests/s | p99 |\n| ---: | ---: | ---: |");
    for threads in [1, 2, 4] {
        let running = optech.start_with(&[("TOKIO_WORKER_THREADS", &threads.to_string())])?;
        let r = load::warm_then_measure(&running.url, &script, options, options.connections)?;
        println!(
            "| {threads} | {:.0} | {:.2} ms |",
            r.rps(),
            r.p99_us as f64 / 1000.0
        );
    }

    println!("\n## optech + echo.wasm: connections\n");
    println!(
        "| connections | requests/s | p50 | p99 | p99.9 |\n| ---: | ---: | ---: | ---: | ---: |"
    );
    for connections in [16, 64, 256] {
        let running = optech.start()?;
        let r = load::warm_then_measure(&running.url, &script, options, connections)?;
        let ms = |us: u64| us as f64 / 1000.0;
        println!(
            "| {connections} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |",
            r.rps(),
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.p999_us)
        );
    }

    println!();
    async_rss(dir)?;
    println!();
    startup(dir)?;
    Ok(())
}

/// RSS of the host with 1,000 async handlers sleeping in flight.
fn async_rss(dir: &Path) -> anyhow::Result<()> {
    let root = crate::root();
    let testkit_dir = root.join("host/tests/plugins");
    optech_host::build::build_all(
        &testkit_dir,
        &optech_host::build::BuildDirs::with_target(root.join("target/plugins")),
    )?;
    let work = dir.join("async");
    std::fs::create_dir_all(&work)?;
    let config = work.join("optech.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"\"\nplugins_dir = {:?}\nmax_in_flight = 2000\nwatch = false\n[keys]\nsleep = \"tk\"\n[plugins.tk]\nsource = \"testkit.wasm\"\nmode = \"async\"\ntimeout = \"60s\"\n",
            testkit_dir.display().to_string()
        ),
    )?;
    let contender = Contender::custom("optech, async", &config)?;
    let running = contender.start()?;
    let idle = rss_kib(running.child.id());
    let tokio = tokio::runtime::Runtime::new()?;
    let url = running.url.clone();
    let accepted = tokio.block_on(async move {
        let client = reqwest::Client::new();
        let signer = Signer::new(crate::SECRET.as_bytes(), None);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..1000 {
            let body = serde_json::json!({"link": format!("http://127.0.0.1:9/ingest/{i}"), "key": "sleep", "inputs": {"ms": "20000"}}).to_string();
            let request = client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-optech-signature", signer.sign(body.as_bytes()))
                .body(body);
            tasks.spawn(async move { request.send().await.map(|r| r.status().as_u16()).unwrap_or(0) });
        }
        let mut accepted = 0;
        while let Some(status) = tasks.join_next().await {
            if status.unwrap_or(0) == 202 {
                accepted += 1;
            }
        }
        accepted
    });
    std::thread::sleep(Duration::from_secs(2));
    let busy = rss_kib(running.child.id());
    println!("## RSS with async handlers in flight\n");
    println!(
        "idle: {:.1} MiB; with {accepted} async handlers sleeping in flight: {:.1} MiB ({:.1} KiB per handler)",
        idle as f64 / 1024.0,
        busy as f64 / 1024.0,
        (busy.saturating_sub(idle)) as f64 / accepted.max(1) as f64
    );
    Ok(())
}

/// Start-up with 50 distinct plugins, with an empty compile cache and a warm one.
fn startup(dir: &Path) -> anyhow::Result<()> {
    let work = dir.join("fifty");
    let plugins = work.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    let echo = std::fs::read(crate::root().join("plugins/echo.wasm")).context("echo.wasm")?;
    let mut keys = String::new();
    for i in 0..50 {
        // A custom section makes each copy a distinct component with its own hash.
        let mut bytes = echo.clone();
        let name = format!("copy-{i}");
        let payload_len = 1 + name.len();
        bytes.push(0);
        bytes.push(payload_len as u8);
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name.as_bytes());
        std::fs::write(plugins.join(format!("p{i}.wasm")), bytes)?;
        keys.push_str(&format!("k{i} = \"p{i}\"\n"));
    }
    let config = work.join("optech.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"\"\nwatch = false\n[keys]\n{keys}"
        ),
    )?;
    let contender = Contender::custom("optech, 50 plugins", &config)?;
    let _ = std::fs::remove_dir_all(work.join("data"));
    let cold = contender.start()?.started_in;
    let cached = contender.start()?.started_in;
    println!("## Start-up with 50 plugins (process start to listening)\n");
    println!(
        "cold (empty compile cache): {:.0} ms; cached: {:.0} ms",
        ms(cold),
        ms(cached)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
