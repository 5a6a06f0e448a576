//! Contender (b) of the benchmark: the optech pipeline (HTTP, signature,
//! routing, admission, signed response) with a native echo handler in place of
//! every plugin. Everything but the sandbox, so `optech / native-host` is the
//! price of WebAssembly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use optech_host::config::Config;
use optech_host::delivery::{Deliverer, RetryPolicy};
use optech_host::dispatch::{Call, Handler, HandlerFuture};
use optech_host::jobs::Jobs;
use optech_host::reload::Reloader;
use optech_host::router::{Plugin, Router, Routes};
use optech_host::runtime::{Runtime, RuntimeOptions};
use optech_host::server::{self, AppState};
use optech_host::signature::Signer;

/// Answers with the inputs, like `plugins/echo`, without a sandbox.
struct NativeEcho;

impl Handler for NativeEcho {
    fn call(&self, call: Call) -> HandlerFuture<'_> {
        Box::pin(async move { Ok(call.inputs) })
    }
}

#[derive(Parser)]
struct Args {
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(&args.config)?;
    let secret =
        std::env::var("OPTECH_CLIENT_SECRET").context("OPTECH_CLIENT_SECRET is not set")?;
    let signer = Signer::new(secret.as_bytes(), None);
    let plugins: BTreeMap<String, Arc<Plugin>> = config
        .plugins
        .values()
        .map(|settings| {
            (
                settings.name.clone(),
                Arc::new(Plugin::new(
                    settings.clone(),
                    Arc::new(NativeEcho),
                    "native".into(),
                )),
            )
        })
        .collect();
    let router = Arc::new(Router::new(Routes::new(&config.keys, &plugins)));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(config.server.max_in_flight));
    let deliverer = Deliverer::new(signer.clone(), "", RetryPolicy::default())?;
    let jobs = Arc::new(Jobs::new(
        config.server.data_dir.clone(),
        deliverer,
        router.clone(),
        in_flight.clone(),
        config.server.link_ttl,
    ));
    // The reloader is only there because the app state shows its status; it never runs.
    let runtime = Runtime::new(&RuntimeOptions {
        max_instances: 1,
        cache_dir: None,
    })?;
    let reloader = Reloader::new(config.clone(), plugins, runtime, router.clone());
    let state = Arc::new(AppState {
        router,
        signer,
        max_body: config.server.max_body,
        in_flight,
        jobs,
        reloader,
    });
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    println!("native-host listening on http://{}", listener.local_addr()?);
    axum::serve(listener, server::app(state)).await?;
    Ok(())
}
