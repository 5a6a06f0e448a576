//! `optech push FILE REFERENCE`: a component to a registry, as a wasm OCI
//! artifact; prints the manifest digest (on stdout, for scripts).

use std::path::PathBuf;

use anyhow::Context as _;

use super::registry_client;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The component (`.wasm`) to push.
    pub file: PathBuf,
    /// Where to: `registry.example.com/team/orders:1.4`.
    pub reference: String,
    /// Read `[server] insecure_registries` (and the registry limits) from here.
    #[arg(long, default_value = "optech.toml")]
    pub config: PathBuf,
}

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    let wasm = tokio::fs::read(&args.file)
        .await
        .with_context(|| format!("reading {}", args.file.display()))?;
    let registry = registry_client(&args.config)?;
    let pushed = registry
        .push(&args.reference, wasm)
        .await
        .with_context(|| format!("pushing {} to {}", args.file.display(), args.reference))?;
    eprintln!(
        "pushed {} ({} bytes, layer {}) to {}",
        args.file.display(),
        pushed.size,
        pushed.layer_digest,
        args.reference
    );
    println!("{}", pushed.manifest_digest);
    Ok(())
}
