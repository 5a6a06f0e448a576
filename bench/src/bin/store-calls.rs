//! What one call of the plugins' key-value store costs, by backend: memory
//! (the floor), SQLite (`<data_dir>/store.sqlite3`) and PostgreSQL (the
//! replicas' shared store, with `--postgres URL`). Calls go through a
//! plugin's `Bucket` (grant, limits, then the backend), as the host's
//! `wasi:keyvalue` calls do, minus the WebAssembly boundary.
//!
//! For each: `get`, `set` and `increment` one after another (µs per call),
//! then `--tasks` tasks incrementing one key at once (calls per second). The
//! sum of those increments is checked, so a lost update fails the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use optech_host::store::memory::MemoryBackend;
use optech_host::store::postgres::PostgresBackend;
use optech_host::store::sqlite::SqliteBackend;
use optech_host::store::{Backend, Bucket, Limits, Stores};

#[derive(Parser)]
#[command(about = "Time the plugins' key-value store calls on each backend")]
struct Args {
    /// Calls of each kind, one after another.
    #[arg(long, default_value_t = 5000)]
    calls: u32,
    /// Tasks incrementing one key at once.
    #[arg(long, default_value_t = 64)]
    tasks: u32,
    /// Increments per task.
    #[arg(long, default_value_t = 200)]
    per_task: u32,
    /// A PostgreSQL database to include (an empty one: the store's tables are made there).
    #[arg(long)]
    postgres: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut backends: Vec<(&str, Arc<dyn Backend>)> = vec![
        ("memory", Arc::new(MemoryBackend::default())),
        ("SQLite", Arc::new(SqliteBackend::new(dir.path()))),
    ];
    if let Some(url) = &args.postgres {
        let backend = PostgresBackend::new(url).context("the PostgreSQL store")?;
        backends.push(("PostgreSQL", Arc::new(backend)));
    }
    println!(
        "| backend | get | set | increment | {} tasks incrementing one key |",
        args.tasks
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, backend) in backends {
        let bucket = Stores::new(backend, Limits::default())
            .grant("bench", ["bench".to_string()])
            .open("bench")?;
        bucket
            .set("key", b"a value of some 32 bytes, say...", None)
            .await?;
        let get = per_call(args.calls, || async { bucket.get("key").await.map(|_| ()) }).await?;
        let set = per_call(args.calls, || async {
            bucket
                .set("key", b"another value of 32 bytes, say..", None)
                .await
        })
        .await?;
        let increment = per_call(args.calls, || async {
            bucket.increment("counter", 1).await.map(|_| ())
        })
        .await?;
        let rate = concurrent(&bucket, args.tasks, args.per_task).await?;
        println!(
            "| {name} | {} | {} | {} | {rate:.0} calls/s |",
            micros(get),
            micros(set),
            micros(increment)
        );
    }
    Ok(())
}

/// Mean time of `calls` calls made one after another.
async fn per_call<F, Fut>(calls: u32, mut call: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), optech_host::store::StoreError>>,
{
    let started = Instant::now();
    for _ in 0..calls {
        call().await?;
    }
    Ok(started.elapsed() / calls.max(1))
}

/// Calls per second of `tasks` tasks incrementing one key; fails unless the
/// key ends at exactly the number of increments.
async fn concurrent(bucket: &Bucket, tasks: u32, per_task: u32) -> anyhow::Result<f64> {
    bucket.delete("shared").await?;
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let bucket = bucket.clone();
        running.spawn(async move {
            for _ in 0..per_task {
                bucket.increment("shared", 1).await?;
            }
            Ok::<_, optech_host::store::StoreError>(())
        });
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    let took = started.elapsed();
    let total = u64::from(tasks) * u64::from(per_task);
    let sum = bucket.increment("shared", 0).await?;
    if u64::try_from(sum).ok() != Some(total) {
        bail!("{total} increments summed to {sum}: an update was lost");
    }
    Ok(total as f64 / took.as_secs_f64())
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
