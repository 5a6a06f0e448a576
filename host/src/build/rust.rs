//! Rust plugins: a folder with a `Cargo.toml` whose package builds a cdylib.
//! `cargo build --release --target wasm32-wasip2` emits a component directly;
//! all Rust plugins share one cargo target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use super::{BuildDirs, Builder, PluginSource};

pub const TARGET: &str = "wasm32-wasip2";

/// The Rust builder.
pub struct Rust;

impl Builder for Rust {
    fn language(&self) -> &'static str {
        "rust"
    }

    fn detect(&self, dir: &Path) -> anyhow::Result<Option<String>> {
        Ok(manifest(dir)?.map(|m| m.name))
    }

    fn prepare(&self, _dirs: &BuildDirs) -> anyhow::Result<()> {
        ensure_target()
    }

    fn build(&self, plugin: &PluginSource, dirs: &BuildDirs, staging: &Path) -> anyhow::Result<()> {
        let path = plugin.dir.join("Cargo.toml");
        let Some(manifest) = manifest(&plugin.dir)? else {
            bail!("{} has no [package] name any more", path.display());
        };
        let status = Command::new(cargo())
            .args(["build", "--release", "--target", TARGET, "--manifest-path"])
            .arg(&path)
            .arg("--target-dir")
            .arg(&dirs.target_dir)
            // Settings meant for the host build must not leak into the plugin build.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .with_context(|| format!("running cargo for {}", path.display()))?;
        if !status.success() {
            bail!(
                "building plugin `{}` ({}) failed",
                plugin.name,
                path.display()
            );
        }
        let artifact = dirs
            .target_dir
            .join(TARGET)
            .join("release")
            .join(&manifest.artifact);
        std::fs::copy(&artifact, staging)
            .with_context(|| format!("copying {} to {}", artifact.display(), staging.display()))?;
        Ok(())
    }

    /// Only `src/` and `Cargo.toml`: the `.wasm` files builds write, and build
    /// output, never count.
    fn is_source(&self, plugin_dir: &Path, path: &Path) -> bool {
        path.starts_with(plugin_dir.join("src")) || path == plugin_dir.join("Cargo.toml")
    }
}

/// What the build needs from a plugin crate's manifest.
struct Manifest {
    /// The package name, which is also the plugin name.
    name: String,
    /// The file name cargo gives the artifact (`-` becomes `_`).
    artifact: String,
}

/// The crate's manifest, or `None` if `dir` has no `Cargo.toml` with a package.
fn manifest(dir: &Path) -> anyhow::Result<Option<Manifest>> {
    let path = dir.join("Cargo.toml");
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let Some(name) = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
    else {
        return Ok(None);
    };
    let lib_name = doc
        .get("lib")
        .and_then(|l| l.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or(name);
    Ok(Some(Manifest {
        name: name.to_string(),
        artifact: format!("{}.wasm", lib_name.replace('-', "_")),
    }))
}

/// Installs the wasm32-wasip2 target through rustup when the toolchain lacks it.
pub fn ensure_target() -> anyhow::Result<()> {
    let sysroot = Command::new(rustc())
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot (is Rust installed? https://rustup.rs)")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_src_and_the_manifest_are_sources() {
        let dir = Path::new("/p/echo");
        assert!(Rust.is_source(dir, Path::new("/p/echo/src/lib.rs")));
        assert!(Rust.is_source(dir, Path::new("/p/echo/Cargo.toml")));
        assert!(!Rust.is_source(dir, Path::new("/p/echo/target/x")));
        assert!(!Rust.is_source(dir, Path::new("/p/echo.wasm")));
        assert!(!Rust.is_source(dir, Path::new("/p/echo2/src/lib.rs")));
    }

    #[test]
    fn the_artifact_follows_the_lib_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"my-plugin\"\n[lib]\nname = \"other-name\"\n",
        )
        .unwrap();
        let m = manifest(dir.path()).unwrap().unwrap();
        assert_eq!(
            (m.name.as_str(), m.artifact.as_str()),
            ("my-plugin", "other_name.wasm")
        );
    }
}
