//! `optech build`: every plugin crate under a directory becomes `<dir>/<name>.wasm`.
//!
//! The same code builds the example plugins, the test plugins in
//! `host/tests/plugins`, and a user's own: `cargo build --release --target
//! wasm32-wasip2`, which emits a component directly. Output files are written
//! beside and then renamed into place, so a running host never sees half a file.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

pub const TARGET: &str = "wasm32-wasip2";

/// One plugin crate: a directory with a `Cargo.toml` whose package builds a cdylib.
#[derive(Debug, Clone)]
pub struct PluginCrate {
    pub dir: PathBuf,
    /// The package name, which is also the plugin name and the `.wasm` file's stem.
    pub name: String,
    /// The file name cargo gives the artifact (`-` becomes `_`).
    artifact: String,
}

/// Finds plugin crates directly under `dir`, sorted by name.
pub fn discover(dir: &Path) -> anyhow::Result<Vec<PluginCrate>> {
    let mut crates = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let manifest = path.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let doc: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
        let Some(name) = doc
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
        else {
            continue;
        };
        let lib_name = doc
            .get("lib")
            .and_then(|l| l.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or(name);
        crates.push(PluginCrate {
            dir: path.clone(),
            name: name.to_string(),
            artifact: format!("{}.wasm", lib_name.replace('-', "_")),
        });
    }
    crates.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(crates)
}

/// Installs the wasm32-wasip2 target through rustup when the toolchain lacks it.
pub fn ensure_target() -> anyhow::Result<()> {
    let sysroot = Command::new(rustc())
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot (is Rust installed?)")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        return Ok(());
    }
    tracing::info!("installing the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .context("running `rustup target add wasm32-wasip2`: install rustup, or add the target to your toolchain")?;
    if !status.success() {
        bail!("`rustup target add {TARGET}` failed ({status})");
    }
    Ok(())
}

/// Builds one crate in release mode and moves its component to `out_dir/<name>.wasm`.
pub fn build(krate: &PluginCrate, target_dir: &Path, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = krate.dir.join("Cargo.toml");
    let status = Command::new(cargo())
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        // Settings meant for the host build must not leak into the plugin build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .with_context(|| format!("running cargo for {}", manifest.display()))?;
    if !status.success() {
        bail!(
            "building plugin `{}` ({}) failed",
            krate.name,
            manifest.display()
        );
    }
    let artifact = target_dir
        .join(TARGET)
        .join("release")
        .join(&krate.artifact);
    let out = out_dir.join(format!("{}.wasm", krate.name));
    let staging = out_dir.join(format!(".{}.wasm.tmp", krate.name));
    std::fs::copy(&artifact, &staging)
        .with_context(|| format!("copying {} to {}", artifact.display(), staging.display()))?;
    std::fs::rename(&staging, &out)
        .with_context(|| format!("moving {} into place", out.display()))?;
    Ok(out)
}

/// Builds every plugin crate under `dir` into `dir/<name>.wasm`; returns the files written.
pub fn build_all(dir: &Path, target_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    ensure_target()?;
    let crates = discover(dir)?;
    if crates.is_empty() {
        bail!(
            "no plugin crates (directories with a Cargo.toml) under {}",
            dir.display()
        );
    }
    crates.iter().map(|k| build(k, target_dir, dir)).collect()
}

fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "cargo".into())
}

fn rustc() -> PathBuf {
    std::env::var_os("RUSTC")
        .map(PathBuf::from)
        .unwrap_or_else(|| "rustc".into())
}
