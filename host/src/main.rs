//! The `optech` command line: `serve`, `build`, `dev`, `new`, `send` and `check`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use optech_host::build::BuildDirs;
use optech_host::config::Config;
use optech_host::credentials::{self, Credentials, CredentialsError};
use optech_host::signature::{self, Signer};
use optech_host::{Host, Identity, cli, logging};

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
    /// Build every plugin folder under the plugins directory into `<name>.wasm`.
    Build {
        #[arg(long, default_value = "optech.toml")]
        config: PathBuf,
    },
    /// Build the plugins, then serve; without a secret, use a printed dev secret.
    Dev(ServeArgs),
    /// Write a new plugin (default `plugins/NAME`) and map key NAME to it.
    New {
        /// The plugin's name: lowercase letters, digits, `-` and `_`.
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum, default_value = "rust")]
        lang: cli::new::Lang,
        /// Where to put the plugin instead of `<plugins_dir>/NAME`.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "optech.toml")]
        config: PathBuf,
    },
    /// Send a signed data request as the platform would, and wait for its answer.
    ///
    /// Exits 0 for verified data, 1 for an error answer, 2 when no answer
    /// could be verified.
    Send {
        /// The request's key.
        key: String,
        /// Inputs, as name=value.
        inputs: Vec<String>,
        /// More inputs from a JSON object in a file (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        inputs_json: Option<PathBuf>,
        /// Where to send it; default: the config's `listen` address.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value = "optech.toml")]
        config: PathBuf,
        /// How long to wait for an answer given later.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
    /// Check a config and every plugin it maps, and list every problem.
    Check {
        #[arg(long, default_value = "optech.toml")]
        config: PathBuf,
    },
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
    logging::init(match cli.log_format {
        LogFormat::Text => logging::Format::Text,
        LogFormat::Json => logging::Format::Json,
    });
    match cli.command {
        Command::Serve(args) => {
            let credentials = Credentials::load(Path::new(".env"))?;
            serve(args, credentials, false).await
        }
        Command::Build { config } => build(&lenient_config(&config)?).await,
        Command::Dev(args) => {
            let config = Config::load(&args.config)?;
            // One broken plugin (or a language's missing toolchain) must not
            // stop work on the others: say so, and serve what there is.
            if let Err(e) = build(&config).await {
                eprintln!("optech dev: {e:#}; serving the plugins that are built");
            }
            let credentials = dev_credentials("optech dev")?;
            let dirs = BuildDirs::beside(&config.server.plugins_dir);
            let _sources = optech_host::dev_watch::watch_sources(&config.server.plugins_dir, dirs)?;
            serve(args, credentials, true).await
        }
        Command::New {
            name,
            lang,
            dir,
            config,
        } => new_plugin(&name, lang, dir, &config),
        Command::Send {
            key,
            inputs,
            inputs_json,
            url,
            config,
            wait,
        } => {
            let inputs = cli::send::inputs(&inputs, inputs_json.as_deref())?;
            let url = match url {
                Some(url) => url,
                None => {
                    let listen = lenient_config(&config)
                        .map(|c| c.server.listen)
                        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)));
                    let ip = if listen.ip().is_unspecified() {
                        std::net::IpAddr::from([127, 0, 0, 1])
                    } else {
                        listen.ip()
                    };
                    format!("http://{}/", SocketAddr::new(ip, listen.port()))
                }
            };
            let credentials = dev_credentials("optech send")?;
            let signer = Signer::new(
                credentials.secret.as_bytes(),
                credentials.previous_secret.as_deref().map(str::as_bytes),
            );
            let verdict = cli::send::send(cli::send::SendOptions {
                url,
                key,
                inputs,
                signer,
                client_id: credentials.client_id,
                wait,
            })
            .await?;
            std::process::exit(verdict as i32);
        }
        Command::Check { config } => {
            let report = cli::check::check(&config).await;
            for warning in &report.warnings {
                eprintln!("warning: {warning}");
            }
            if report.problems.is_empty() {
                println!(
                    "{}: ok: {} key(s), {} plugin(s) loaded and matching the WIT",
                    config.display(),
                    report.keys,
                    report.plugins_ok
                );
                Ok(())
            } else {
                eprintln!("{} problem(s):", report.problems.len());
                for problem in &report.problems {
                    eprintln!("  {problem}");
                }
                std::process::exit(1);
            }
        }
    }
}

/// The secret from the environment or `.env`, or the dev secret when none is
/// set (what `optech dev` serves with), said on stderr.
fn dev_credentials(command: &str) -> anyhow::Result<Credentials> {
    match Credentials::load(Path::new(".env")) {
        Ok(c) => Ok(c),
        Err(CredentialsError::MissingSecret) => {
            eprintln!(
                "{command}: {} is not set; using the dev secret {DEV_SECRET:?}",
                credentials::CLIENT_SECRET
            );
            Ok(Credentials {
                client_id: "dev".into(),
                secret: DEV_SECRET.into(),
                previous_secret: None,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The config's layout (where the plugins are, where to listen) even when some
/// of its values are wrong: building or sending needs no secrets.
fn lenient_config(path: &Path) -> anyhow::Result<Config> {
    let env = optech_host::credentials::Environment::load(Path::new(".env"))?;
    let (config, problems) = Config::check(path, &env)?;
    for problem in problems {
        eprintln!("{}: {}: {}", path.display(), problem.key, problem.message);
    }
    Ok(config)
}

fn new_plugin(
    name: &str,
    lang: cli::new::Lang,
    dir: Option<PathBuf>,
    config_path: &Path,
) -> anyhow::Result<()> {
    let plugins_dir = lenient_config(config_path)
        .map(|c| c.server.plugins_dir)
        .unwrap_or_else(|_| PathBuf::from("plugins"));
    let dir = dir.unwrap_or_else(|| plugins_dir.join(name));
    let created = cli::new::create(name, &dir, config_path, lang)?;
    println!(
        "created plugin `{name}` in {} (optech-sdk = {})",
        created.dir.display(),
        created.sdk
    );
    if created.mapped {
        println!("mapped key \"{name}\" to it in {}", config_path.display());
    }
    println!("\nnext:");
    let inside = std::path::absolute(&created.dir)
        .ok()
        .zip(std::path::absolute(&plugins_dir).ok())
        .is_some_and(|(d, p)| d.parent() == Some(p.as_path()));
    use cli::new::Lang;
    let (tests, needs) = match lang {
        Lang::Rust => ("cargo test", ""),
        Lang::Ts | Lang::Js => ("npm install && npm test", " (needs Node.js 20+)"),
        Lang::Python => ("pytest", " (needs Python 3)"),
    };
    println!(
        "  (cd {} && {tests})   # the handler's unit tests{}",
        created.dir.display(),
        if lang == Lang::Python {
            " (pip install optech-sdk pytest)"
        } else {
            ""
        }
    );
    if inside {
        println!(
            "  optech build                         # -> {}{needs}",
            plugins_dir.join(format!("{name}.wasm")).display()
        );
    } else if lang == Lang::Rust {
        println!(
            "  (cd {} && cargo build --release --target wasm32-wasip2)",
            created.dir.display()
        );
        println!(
            "  cp {}/target/wasm32-wasip2/release/{}.wasm {}/",
            created.dir.display(),
            name.replace('-', "_"),
            plugins_dir.display()
        );
    } else {
        println!(
            "  move {} into {}, then optech build{needs}",
            created.dir.display(),
            plugins_dir.display()
        );
    }
    println!(
        "  optech send {name} name=Ada            # against a running `optech serve` or `optech dev`"
    );
    Ok(())
}

/// Builds every plugin under the plugins folder (see `cli::build`).
async fn build(config: &Config) -> anyhow::Result<()> {
    let dir = config.server.plugins_dir.clone();
    tokio::task::spawn_blocking(move || cli::build::build_all(&dir, &BuildDirs::beside(&dir)))
        .await?
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
