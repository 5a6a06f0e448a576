//! Contender (b) of the benchmark: the optech host (HTTP, signature, routing,
//! admission, signed response) with a native echo handler in place of every
//! plugin. Everything but the sandbox, so `optech / native-host` is the price
//! of WebAssembly. Uses `Host::start_with_plugins`, the dispatch seam.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use optech_host::config::Config;
use optech_host::dispatch::{Call, Handler, HandlerFuture, Plugin};
use optech_host::runtime::{Runtime, RuntimeOptions};
use optech_host::signature::Signer;
use optech_host::{Host, Identity};

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
    let plugins: BTreeMap<String, Arc<Plugin>> = config
        .plugins
        .values()
        .map(|s| {
            (
                s.name.clone(),
                Arc::new(Plugin::new(
                    s.clone(),
                    Arc::new(NativeEcho),
                    "native".into(),
                )),
            )
        })
        .collect();
    // No plugin is compiled; the runtime is only there because the host owns one.
    let runtime = Runtime::new(&RuntimeOptions {
        max_instances: 1,
        max_idle: 0,
        ..RuntimeOptions::default()
    })?;
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    let identity = Identity::new(Signer::new(secret.as_bytes(), None), "");
    let host = Host::start_with_plugins(&config, identity, listener, runtime, plugins).await?;
    println!("native-host listening on http://{}", host.addr());
    host.wait().await
}
