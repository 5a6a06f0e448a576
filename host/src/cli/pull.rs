//! `optech pull REFERENCE [FILE]`: a wasm OCI artifact's component to a file,
//! checked against its digest; prints the manifest digest (on stdout).

use std::path::PathBuf;

use anyhow::Context as _;

use super::registry_client;

#[derive(clap::Args)]
pub struct PullArgs {
    /// What to pull: `registry.example.com/team/orders:1.4` or `...@sha256:...`.
    pub reference: String,
    /// Where to write the component (default: the repository's last name, `.wasm`).
    pub file: Option<PathBuf>,
    /// Read `[server] insecure_registries`, `registry_ca` and the registry
    /// limits from here (default: `optech.toml` if there is one).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub async fn run(args: PullArgs) -> anyhow::Result<()> {
    let registry = registry_client(args.config.as_deref())?;
    let (bytes, resolved) = registry
        .pull(&args.reference)
        .await
        .with_context(|| format!("pulling {}", args.reference))?;
    let file = args.file.unwrap_or_else(|| default_file(&args.reference));
    // A partial file never takes the component's name.
    let partial = file.with_extension("wasm.partial");
    tokio::fs::write(&partial, &bytes)
        .await
        .with_context(|| format!("writing {}", partial.display()))?;
    tokio::fs::rename(&partial, &file)
        .await
        .with_context(|| format!("writing {}", file.display()))?;
    eprintln!(
        "pulled {} ({} bytes, layer {}) to {}",
        args.reference,
        bytes.len(),
        resolved.layer_digest,
        file.display()
    );
    println!("{}", resolved.manifest_digest);
    Ok(())
}

/// `registry/team/orders:1.4` -> `orders.wasm`.
fn default_file(reference: &str) -> PathBuf {
    let path = reference.split(['@']).next().unwrap_or(reference);
    let last = path.rsplit('/').next().unwrap_or(path);
    let name = last
        .split(':')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("plugin");
    PathBuf::from(format!("{name}.wasm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_named_after_the_repository() {
        assert_eq!(
            default_file("r.example:5000/team/orders:1.4"),
            PathBuf::from("orders.wasm")
        );
        assert_eq!(
            default_file("r.example/orders@sha256:abc"),
            PathBuf::from("orders.wasm")
        );
        assert_eq!(
            default_file("127.0.0.1:5000/echo"),
            PathBuf::from("echo.wasm")
        );
    }
}
