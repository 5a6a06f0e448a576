//! `optech serve` and `optech dev`: load the config, bind, start the [`Host`],
//! and run until SIGINT or SIGTERM. `dev` builds the plugins first, serves with
//! a secret made up for the run when none is set (kept in `data_dir` for
//! `optech send`, and answering only to this machine's address meanwhile),
//! rebuilds on save and prints a signed `curl` and where the console is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::build::{build_each, build_one, failures};
use crate::build::{self, BuildDirs, PluginSource};
use crate::config::{Config, TelemetryConfig, parse_optional_addr};
use crate::credentials::{self, Credentials, CredentialsError};
use crate::dev_watch::one_build_at_a_time;
use crate::signature::{self, Signer};
use crate::telemetry::{self, Tracing};
use crate::{Host, Identity};

/// Where `optech dev` keeps the secret it made up for this run (in the
/// config's `data_dir`), so `optech send` signs with it. Readable by the
/// owner only.
pub const DEV_SECRET_FILE: &str = "dev-secret";

/// Where `serve` and `dev` read their config and listen.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The config file; relative paths in it are resolved against its directory.
    #[arg(long, default_value = "optech.toml")]
    pub config: PathBuf,
    /// Address to listen on, overriding `[server] listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address of the admin listener (health details), overriding
    /// `[server] admin_listen`; port 0 picks a free port, "" turns it off.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
}

/// Starts the trace exporter when `[telemetry]` or the `OTEL_*` variables ask
/// for it; returns it with a line saying where spans go. A config that does
/// not load is reported by the serve that follows; here it only means no
/// `[telemetry]` section.
pub fn start_tracing(config: &Path) -> anyhow::Result<Option<(Tracing, String)>> {
    let file = crate::cli::quiet_config(config)
        .map(|c| c.telemetry)
        .unwrap_or_else(|_| TelemetryConfig::unset());
    let settings = match telemetry::resolve(&file, &|name| std::env::var(name).ok())
        .context("tracing settings")?
    {
        Ok(settings) => settings,
        Err(_off) => return Ok(None),
    };
    let tracing = Tracing::start(&settings).context("starting the trace exporter")?;
    let line = format!(
        "tracing on: {} spans to {} (service {}, sampler {}{})",
        settings.protocol.0.as_str(),
        settings.endpoint.0,
        settings.service_name.0,
        settings.sampler.0.as_str(),
        if settings.sampler.0.takes_ratio() {
            format!(" {}", settings.ratio)
        } else {
            String::new()
        }
    );
    Ok(Some((tracing, line)))
}

/// `optech serve`: needs the client secret from the environment or `.env`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let credentials = Credentials::load(Path::new(".env"))?;
    run(args, credentials, Dev::No).await
}

/// Whether the host runs as `optech dev`, and with whose secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dev {
    No,
    /// `optech dev` with the secret from the environment or `.env`.
    WithSecret,
    /// `optech dev` with a secret made up for this run.
    MadeUpSecret,
}

/// `optech dev`: build, watch the sources, serve (with the dev secret when none
/// is set), print a signed `curl`.
pub async fn dev(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let plugins_dir = config.server.plugins_dir.clone();
    let dirs = BuildDirs::beside(&plugins_dir);
    // The plugins the config serves are built before it listens, the others
    // (examples, work in progress) after, in the background: a toolchain that
    // installs on first use for one of those must not hold up the first
    // request. One broken plugin (or a language's missing toolchain) must not
    // stop work on the others: say so, and serve what there is.
    let (served, others): (Vec<PluginSource>, Vec<PluginSource>) =
        match build::discover(&plugins_dir) {
            Ok(found) if found.is_empty() => {
                let none = build::nothing_to_build(&plugins_dir);
                eprintln!("optech dev: {none}; serving the plugins that are built");
                (Vec::new(), Vec::new())
            }
            Ok(found) => found.into_iter().partition(|p| serves(&config, p)),
            Err(e) => {
                eprintln!("optech dev: {e:#}; serving the plugins that are built");
                (Vec::new(), Vec::new())
            }
        };
    // Watching from before the first build: a source saved meanwhile is rebuilt
    // after it, one build at a time.
    let _sources = crate::dev_watch::watch_sources(&plugins_dir, dirs.clone())?;
    let (dir, build_dirs) = (plugins_dir.clone(), dirs.clone());
    let built = tokio::task::spawn_blocking(move || {
        let _alone = one_build_at_a_time();
        build_each(&served, &dir, &build_dirs)
    })
    .await?;
    if let Err(e) = built {
        eprintln!("optech dev: {e:#}; serving the plugins that are built");
    }
    if !others.is_empty() {
        let names: Vec<&str> = others.iter().map(|p| p.name.as_str()).collect();
        eprintln!(
            "optech dev: building the plugins no key maps to in the background: {}",
            names.join(", ")
        );
        // One blocking task per plugin, from an async task: on shutdown the
        // runtime waits for the build under way, and starts no other.
        tokio::spawn(async move {
            let mut failed = Vec::new();
            for plugin in &others {
                let (one, dir, dirs) = (plugin.clone(), plugins_dir.clone(), dirs.clone());
                let built = tokio::task::spawn_blocking(move || {
                    let _alone = one_build_at_a_time();
                    build_one(&one, &dir, &dirs)
                });
                if !built.await.unwrap_or(false) {
                    failed.push(plugin.name.as_str());
                }
            }
            if let Err(e) = failures(&failed, others.len()) {
                eprintln!("optech dev: {e:#}");
            }
        });
    }
    let (credentials, dev) = match Credentials::load(Path::new(".env")) {
        Ok(credentials) => (credentials, Dev::WithSecret),
        Err(CredentialsError::MissingSecret) => {
            let path = config.server.data_dir.join(DEV_SECRET_FILE);
            let secret = made_up_secret(&path)?;
            eprintln!(
                "optech dev: {} is not set; signing with a secret made up for this run, \
                 kept in {} for `optech send` (it answers only to 127.0.0.1, [::1] and \
                 localhost meanwhile)",
                credentials::CLIENT_SECRET,
                path.display()
            );
            let credentials = Credentials {
                client_id: "dev".into(),
                secret,
                previous_secret: None,
            };
            (credentials, Dev::MadeUpSecret)
        }
        Err(e) => return Err(e.into()),
    };
    run(args, credentials, dev).await
}

/// A new random secret, written to `path` (owner-only) for `optech send`.
fn made_up_secret(path: &Path) -> anyhow::Result<String> {
    let secret = format!("dev-{:032x}", rand::random::<u128>());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing the dev secret to {}", path.display()))?;
    #[cfg(unix)]
    {
        // An older file keeps its mode through `open`: make it owner-only too.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} owner-only", path.display()))?;
    }
    std::io::Write::write_all(&mut file, secret.as_bytes())
        .with_context(|| format!("writing the dev secret to {}", path.display()))?;
    Ok(secret)
}

/// The secret from the environment or `.env`; else the one a running
/// `optech dev` made up, from `data_dir` of the config at `config`.
pub fn send_credentials(config: &Path) -> anyhow::Result<Credentials> {
    match Credentials::load(Path::new(".env")) {
        Ok(c) => Ok(c),
        Err(CredentialsError::MissingSecret) => {
            let data_dir = super::lenient_config(config)
                .map(|c| c.server.data_dir)
                .unwrap_or_else(|_| config.parent().unwrap_or(Path::new(".")).join("data"));
            let path = data_dir.join(DEV_SECRET_FILE);
            let secret = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not set, and there is no secret of a running `optech dev` in {} \
                     ({e}): set {} to the host's secret, or start `optech dev` with this config",
                    credentials::CLIENT_SECRET,
                    path.display(),
                    credentials::CLIENT_SECRET,
                )
            })?;
            Ok(Credentials {
                client_id: "dev".into(),
                secret: secret.trim().to_string(),
                previous_secret: None,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a key of `config` maps to the `.wasm` that `plugin` builds.
fn serves(config: &Config, plugin: &PluginSource) -> bool {
    let wasm = config
        .server
        .plugins_dir
        .join(format!("{}.wasm", plugin.name));
    config
        .plugins
        .values()
        .any(|p| p.source.file() == Some(wasm.as_path()))
}

async fn run(args: ServeArgs, credentials: Credentials, dev: Dev) -> anyhow::Result<()> {
    let mut config = Config::load(&args.config)?;
    if let Some(text) = &args.admin_listen {
        config.server.admin_listen = parse_optional_addr(text).with_context(|| {
            format!("--admin-listen {text:?} is not an address like 127.0.0.1:9091, or \"\"")
        })?;
    }
    let listen = args.listen.unwrap_or(config.server.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let signer = credentials.signer();
    let started = std::time::Instant::now();
    let mut identity = Identity::new(signer.clone(), credentials.client_id.clone());
    identity.dev_secret = dev == Dev::MadeUpSecret;
    let host = Host::start(&config, identity, listener).await?;
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
    if dev != Dev::No {
        print_sample_curl(&config, &signer, host.addr());
        match host.admin_addr() {
            Some(admin) => println!("Console: http://{}/\n", local(admin)),
            None => println!("Console: off ([server] admin_listen = \"\")\n"),
        }
    }
    let stop = host.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stop.send(true);
    });
    host.wait().await
}

/// An address to open from this machine: an unspecified one (0.0.0.0) as loopback.
fn local(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let loopback = match addr {
            SocketAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
            SocketAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    }
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
        "curl -sS http://{}/ -H 'content-type: application/json' -H '{}: {signature}' -d '{body}'\n",
        local(addr),
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
