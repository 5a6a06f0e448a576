//! `optech push FILE REFERENCE`: a component to a registry, as a wasm OCI
//! artifact; prints the manifest digest (on stdout, for scripts).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;

use super::registry_client;
use crate::registry::CREATED;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The component (`.wasm`) to push.
    pub file: PathBuf,
    /// Where to: `registry.example.com/team/orders:1.4`.
    pub reference: String,
    /// Read `[server] insecure_registries`, `registry_ca` and the registry
    /// limits from here (default: `optech.toml` if there is one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A manifest annotation, `KEY=VALUE`; repeat for more. E.g.
    /// `org.opencontainers.image.source=https://github.com/acme/orders`
    /// (GHCR links the package to that repository), `...image.version`,
    /// `...image.revision`. `org.opencontainers.image.created` set here
    /// (a build's time) makes pushes of one build give one digest.
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE", value_parser = annotation)]
    pub annotations: Vec<(String, String)>,
}

/// `KEY=VALUE`, the key not empty; a creation time in RFC 3339.
fn annotation(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
        return Err(format!("{text:?} is not KEY=VALUE"));
    };
    let key = key.trim();
    if key == CREATED && chrono::DateTime::parse_from_rfc3339(value).is_err() {
        return Err(format!(
            "{key}: {value:?} is not an RFC 3339 time like 2026-01-01T00:00:00Z"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    let wasm = tokio::fs::read(&args.file)
        .await
        .with_context(|| format!("reading {}", args.file.display()))?;
    let registry = registry_client(args.config.as_deref())?;
    let annotations: BTreeMap<String, String> = args.annotations.into_iter().collect();
    let pushed = registry
        .push(&args.reference, wasm, annotations)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_are_key_value_pairs_and_a_creation_time_is_checked() {
        assert_eq!(
            annotation("org.opencontainers.image.version=1.4=rc"),
            Ok(("org.opencontainers.image.version".into(), "1.4=rc".into()))
        );
        assert!(annotation("no-value").is_err());
        assert!(annotation("=x").is_err());
        assert!(annotation(&format!("{CREATED}=yesterday")).is_err());
        assert!(annotation(&format!("{CREATED}=2026-01-01T00:00:00Z")).is_ok());
        // As `git log -1 --format=%cI` prints it.
        assert!(annotation(&format!("{CREATED}=2026-12-06T21:18:55+01:00")).is_ok());
    }
}
