//! The `optech` command line: `serve`, `build` and `dev`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use optech_host::config::Config;
use optech_host::credentials::{self, Credentials, CredentialsError};
use optech_host::signature::{self, Signer};
use optech_host::{Host, Identity, plugin_build};
use tracing_subscriber::EnvFilter;

/// Serve OpTech data requests with sandboxed WebAssembly plugins.
#[derive(Parser)]
#[command(name = "optech", version, about)]
struct Cli {
    /// Log lines as readable text (the default) or as JSON objects, one per line.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "OPTECH_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve data requests with the plugins mapped in the config.
    Serve(ServeArgs),
    /// Build every plugin crate under the plugins directory into `<name>.wasm`.
    Build {
        #[arg(long, default_value = "optech.toml")]
        config: PathBuf,
    },
    /// Build the plugins, then serve; without a secret, use a printed dev secret.
    Dev(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// The config file; relative paths in it are resolved against its directory.
    #[arg(long, default_value = "optech.toml")]
    config: PathBuf,
    /// Address to listen on, overriding `[server] listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of the admin listener (health details), overriding
    /// `[server] admin_listen`; port 0 picks a free port, "" turns it off.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
}

/// Used by `optech dev` when no secret is configured. Never used by `serve`.
const DEV_SECRET: &str = "optech-dev-secret";

fn main() -> anyhow::Result<()> {
    // Errors made on a plugin's behalf (a failed outbound read, a trap) must
    // not capture backtraces: a plugin could make the host symbolize its own
    // binary over and over (about 100 MiB and much CPU each time). Panics keep
    // their backtraces (RUST_BACKTRACE); only library captures are turned off,
    // unless the operator asks for them.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet: the runtime starts below.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("OPTECH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        // One object per line; the request's span (id, key, plugin) is a field of each.
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .init(),
    }
    match cli.command {
        Command::Serve(args) => {
            let credentials = Credentials::load(Path::new(".env"))?;
            serve(args, credentials, false).await
        }
        Command::Build { config } => {
            let config = Config::load(&config)?;
            build(&config).await
        }
        Command::Dev(args) => {
            let config = Config::load(&args.config)?;
            build(&config).await?;
            let credentials = match Credentials::load(Path::new(".env")) {
                Ok(c) => c,
                Err(CredentialsError::MissingSecret) => {
                    eprintln!(
                        "optech dev: {} is not set; using the dev secret {DEV_SECRET:?}",
                        credentials::CLIENT_SECRET
                    );
                    Credentials {
                        client_id: "dev".into(),
                        secret: DEV_SECRET.into(),
                        previous_secret: None,
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let target_dir = plugin_target_dir(&config);
            let _sources =
                optech_host::dev_watch::watch_sources(&config.server.plugins_dir, target_dir)?;
            serve(args, credentials, true).await
        }
    }
}

async fn build(config: &Config) -> anyhow::Result<()> {
    let dir = config.server.plugins_dir.clone();
    let target_dir = plugin_target_dir(config);
    let built =
        tokio::task::spawn_blocking(move || plugin_build::build_all(&dir, &target_dir)).await??;
    for path in built {
        tracing::info!("built {}", path.display());
    }
    Ok(())
}

/// Where plugin builds go: `target/plugins` beside the plugins folder, shared by
/// all plugins and by every config that builds the same folder.
fn plugin_target_dir(config: &Config) -> std::path::PathBuf {
    config
        .server
        .plugins_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("target/plugins")
}

async fn serve(args: ServeArgs, credentials: Credentials, print_curl: bool) -> anyhow::Result<()> {
    let mut config = Config::load(&args.config)?;
    if let Some(text) = &args.admin_listen {
        config.server.admin_listen =
            optech_host::config::parse_optional_addr(text).with_context(|| {
                format!("--admin-listen {text:?} is not an address like 127.0.0.1:9091, or \"\"")
            })?;
    }
    let listen = args.listen.unwrap_or(config.server.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let signer = Signer::new(
        credentials.secret.as_bytes(),
        credentials.previous_secret.as_deref().map(str::as_bytes),
    );
    let started = std::time::Instant::now();
    let host = Host::start(
        &config,
        Identity::new(signer.clone(), credentials.client_id.clone()),
        listener,
    )
    .await?;
    tracing::info!(
        "optech listening on http://{} with {} plugin(s), {} key(s), ready in {:?}",
        host.addr(),
        config.plugins.len(),
        config.keys.len(),
        started.elapsed()
    );
    match host.admin_addr() {
        Some(admin) => {
            tracing::info!("admin listener on http://{admin} (health details; keep it private)")
        }
        None => tracing::info!("admin listener is off"),
    }
    if print_curl {
        print_sample_curl(&config, &signer, host.addr());
    }
    let stop = host.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stop.send(true);
    });
    host.wait().await
}

fn print_sample_curl(config: &Config, signer: &Signer, addr: SocketAddr) {
    let key = if config.keys.contains_key("echo") {
        "echo".to_string()
    } else {
        match config.keys.keys().next() {
            Some(k) => k.clone(),
            None => return,
        }
    };
    let body = serde_json::json!({ "key": key, "inputs": { "hello": "world" } }).to_string();
    let signature = signer.sign(body.as_bytes());
    println!("\nTry it:\n");
    println!(
        "curl -sS http://{addr}/ -H 'content-type: application/json' -H '{}: {signature}' -d '{body}'\n",
        signature::SIGNATURE_HEADER
    );
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
