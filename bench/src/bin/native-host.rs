//! Contenders (b) and (e) of the benchmark: the optech host (HTTP, signature,
//! routing, admission, signed response) with a native handler in place of
//! every plugin: an echo (b), or the `orders` plugin's GET to its back end
//! through the host's own pooled outbound client (e). Everything but the
//! sandbox, so `optech / native-host` is the price of WebAssembly. Uses
//! `Host::start_with_plugins`, the dispatch seam, and logs as `optech serve`
//! does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use http_body_util::BodyExt;
use optech_host::config::Config;
use optech_host::dispatch::{Call, Handler, HandlerError, HandlerFuture, Plugin};
use optech_host::outbound::{Outbound, PluginEgress};
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

/// What `plugins/orders` does, natively: `GET {base_url}/orders/{id}` with a
/// bearer token, through the same egress (allowlist, guard, pooled client)
/// the host gives the plugin, and the order's strings as data.
struct NativeOrders {
    egress: Arc<PluginEgress>,
    base_url: String,
    authorization: String,
}

impl Handler for NativeOrders {
    fn call(&self, call: Call) -> HandlerFuture<'_> {
        Box::pin(async move {
            let id = call
                .inputs
                .iter()
                .rev()
                .find(|(k, _)| k == "order_id")
                .map(|(_, v)| v.clone())
                .ok_or_else(|| HandlerError::InvalidInput("missing input `order_id`".into()))?;
            let request = http::Request::get(format!("{}/orders/{id}", self.base_url))
                .header("authorization", &self.authorization)
                .header("accept", "application/json")
                .body(
                    http_body_util::Empty::new()
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .map_err(|e| HandlerError::Failed(e.to_string()))?;
            let response = self
                .egress
                .clone()
                .send(request, None, call.deadline)
                .await
                .map_err(|e| HandlerError::Failed(format!("http: {e}")))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| HandlerError::Failed(format!("http: {e}")))?
                .to_bytes();
            if status != 200 {
                return Err(HandlerError::Failed(format!(
                    "the orders back end answered {status}"
                )));
            }
            let order: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| HandlerError::Failed(format!("not JSON: {e}")))?;
            let mut data = vec![("order_id".to_string(), id)];
            for (name, value) in order.as_object().into_iter().flatten() {
                match value {
                    serde_json::Value::String(text) => data.push((name.clone(), text.clone())),
                    serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                        data.push((name.clone(), value.to_string()))
                    }
                    _ => {}
                }
            }
            Ok(data)
        })
    }
}

#[derive(Parser)]
struct Args {
    #[arg(long)]
    config: PathBuf,
    /// `echo` (contender b) or `orders` (contender e).
    #[arg(long, default_value = "echo")]
    handler: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Logs as `optech serve` does (the same variable, default and format), so
    // the request span costs this pipeline what it costs the host's: then
    // only the sandbox differs between the contenders.
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPTECH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let config = Config::load(&args.config)?;
    let secret =
        std::env::var("OPTECH_CLIENT_SECRET").context("OPTECH_CLIENT_SECRET is not set")?;
    // No plugin is compiled; the runtime is only there because the host owns one,
    // and it holds the host's metrics.
    let runtime = Runtime::new(&RuntimeOptions {
        max_instances: 1,
        max_idle: 0,
        ..RuntimeOptions::default()
    })?;
    let outbound = Outbound::default();
    let mut plugins: BTreeMap<String, Arc<Plugin>> = BTreeMap::new();
    for settings in config.plugins.values() {
        let handler: Arc<dyn Handler> = match args.handler.as_str() {
            "echo" => Arc::new(NativeEcho),
            "orders" => {
                let value = |name: &str| {
                    settings
                        .config
                        .get(name)
                        .map(|v| v.expose().to_string())
                        .with_context(|| {
                            format!("plugin {}: no `{name}` in its config", settings.name)
                        })
                };
                Arc::new(NativeOrders {
                    egress: outbound.for_plugin(&settings.name, &settings.egress),
                    base_url: value("base_url")?,
                    authorization: format!("Bearer {}", value("token")?),
                })
            }
            other => anyhow::bail!("no native handler {other:?}: echo or orders"),
        };
        let plugin = Plugin::new(
            settings.clone(),
            handler,
            "native".into(),
            runtime.metrics(),
        );
        plugins.insert(settings.name.clone(), Arc::new(plugin));
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    let identity = Identity::new(Signer::new(secret.as_bytes(), None), "");
    let host = Host::start_with_plugins(&config, identity, listener, runtime, plugins).await?;
    println!("native-host listening on http://{}", host.addr());
    host.wait().await
}
