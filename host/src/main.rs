//! The `optech` command line: parses the arguments, sets up logging and
//! dispatches to `optech_host::cli`, where each subcommand lives.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use optech_host::cli::{
    self, new::NewArgs, pull::PullArgs, push::PushArgs, send::SendArgs, serve::ServeArgs,
};
use optech_host::logging;

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
    /// Build the plugins keys map to, serve them (building the others in the
    /// background), rebuild on save; without a secret, use a printed dev secret.
    Dev(ServeArgs),
    /// Write a new plugin (default `plugins/NAME`) and map key NAME to it.
    New(NewArgs),
    /// Send a signed data request as the platform would, and wait for its answer.
    ///
    /// Exits 0 for verified data, 1 for an error answer, 2 when no answer
    /// could be verified.
    Send(SendArgs),
    /// Check a config and every plugin it maps, and list every problem.
    Check {
        #[arg(long, default_value = "optech.toml")]
        config: PathBuf,
    },
    /// Push a component to an OCI registry as a wasm artifact; prints its digest.
    Push(PushArgs),
    /// Pull a component from an OCI registry into a file; prints its digest.
    Pull(PullArgs),
}

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
    let format = match cli.log_format {
        LogFormat::Text => logging::Format::Text,
        LogFormat::Json => logging::Format::Json,
    };
    // Only a serving host exports traces; it decides from its config and the
    // environment before the log is set up, since the log carries the layer.
    let tracing = match &cli.command {
        Command::Serve(args) | Command::Dev(args) => cli::serve::start_tracing(&args.config)?,
        _ => None,
    };
    logging::init(format, tracing.as_ref().map(|(t, _)| t));
    if let Some((_, line)) = &tracing {
        tracing::info!("{line}");
    }
    let served = match cli.command {
        Command::Serve(args) => cli::serve::serve(args).await,
        Command::Dev(args) => cli::serve::dev(args).await,
        other => return dispatch(other).await,
    };
    if let Some((tracing, _)) = tracing {
        tracing.shutdown(std::time::Duration::from_secs(5)).await;
    }
    served
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => cli::serve::serve(args).await,
        Command::Dev(args) => cli::serve::dev(args).await,
        Command::Build { config } => cli::build::run(&cli::lenient_config(&config)?).await,
        Command::New(args) => cli::new::run(args),
        Command::Send(args) => {
            let verdict = cli::send::run(args).await?;
            std::process::exit(verdict as i32);
        }
        Command::Check { config } => {
            if !cli::check::run(&config).await {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Push(args) => cli::push::run(args).await,
        Command::Pull(args) => cli::pull::run(args).await,
    }
}
