//! Async requests accepted per second (`202`s): the outbox's write on the
//! request path, SQLite against PostgreSQL, in interleaved rounds. Every
//! request has a link of its own (a repeated link is a duplicate and writes
//! nothing), so each `202` is one synced insert.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use optech_host::signature::Signer;

use crate::contenders::Contender;

/// Concurrent clients.
const CLIENTS: usize = 64;

pub fn run(dir: &Path, postgres: Option<&str>, seconds: u64, rounds: u32) -> anyhow::Result<()> {
    let tokio = tokio::runtime::Runtime::new()?;
    // Deliveries go here and are answered at once.
    let receiver = tokio.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let app = axum::Router::new().fallback(|| async { "ok" });
            axum::serve(listener, app).await
        });
        anyhow::Ok(addr)
    })?;
    let mut backends: Vec<(&str, Contender)> = vec![("SQLite", contender(dir, "sqlite", None)?)];
    if let Some(url) = postgres {
        backends.push(("PostgreSQL", contender(dir, "postgres", Some(url))?));
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); backends.len()];
    for round in 1..=rounds.max(1) {
        for ((name, contender), results) in backends.iter().zip(&mut results) {
            let running = contender.start()?;
            let rate = tokio.block_on(drive(
                &running.url,
                receiver,
                round,
                Duration::from_secs(seconds),
            ))?;
            eprintln!("round {round}: {name} {rate:.0} accepts/s");
            results.push(rate);
        }
    }
    println!(
        "## Async requests accepted per second ({CLIENTS} clients, {seconds}s, median of {rounds} rounds)\n"
    );
    println!("| outbox | 202s per second |\n| --- | ---: |");
    for ((name, _), mut rates) in backends.into_iter().zip(results) {
        rates.sort_by(f64::total_cmp);
        println!("| {name} | {:.0} |", rates[rates.len() / 2]);
    }
    Ok(())
}

fn contender(dir: &Path, name: &str, postgres: Option<&str>) -> anyhow::Result<Contender> {
    let dir = dir.join(format!("accepts-{name}"));
    std::fs::create_dir_all(&dir)?;
    let outbox = postgres
        .map(|url| format!("outbox = {url:?}\n"))
        .unwrap_or_default();
    let config = crate::contenders::echo_config(
        &dir,
        &format!("{outbox}[plugins.echo]\nmode = \"async\"\n"),
    )?;
    Contender::custom(&format!("optech, async echo, {name} outbox"), &config)
}

/// Sends signed requests with unique links from `CLIENTS` tasks for `time`;
/// returns 202s per second.
async fn drive(
    url: &str,
    receiver: std::net::SocketAddr,
    round: u32,
    time: Duration,
) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()?;
    let signer = Arc::new(Signer::new(crate::SECRET.as_bytes(), None));
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CLIENTS {
        let (client, url, signer, accepted) = (
            client.clone(),
            url.to_string(),
            signer.clone(),
            accepted.clone(),
        );
        tasks.spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < time {
                n += 1;
                let body = serde_json::json!({
                    "link": format!("http://{receiver}/ingest/{round}-{worker}-{n}-{:x}", rand_suffix()),
                    "key": "echo",
                    "inputs": {"n": n.to_string()}
                })
                .to_string();
                let status = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-optech-signature", signer.sign(body.as_bytes()))
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if status == 202 {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(accepted.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}
