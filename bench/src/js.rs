//! The JavaScript contenders: (f) a TypeScript echo plugin (`bench/js/echo-js`,
//! built by `optech build`'s code) in a fresh instance per request, (f2) the
//! same with reused instances, and (g) the app it would replace: one Node
//! process with Express (`bench/node/express_echo.mjs`) that checks the
//! signature, echoes and signs, installed by the bench from npm with its
//! lockfile.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::contenders::{Contender, Workload};

fn js_dir() -> PathBuf {
    crate::root().join("bench/js")
}

fn node_dir() -> PathBuf {
    crate::root().join("bench/node")
}

fn npm(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| {
            format!(
                "running npm {args:?} in {} (f and g need Node.js 20+)",
                dir.display()
            )
        })?;
    if !status.success() {
        bail!("npm {args:?} in {} failed", dir.display());
    }
    Ok(())
}

/// Builds `bench/js/echo-js` into `bench/js/echo-js.wasm`, against the SDK
/// in `sdk-js/` built from its source.
pub fn build_echo() -> anyhow::Result<()> {
    let sdk = crate::root().join("sdk-js");
    npm(&sdk, &["ci", "--no-audit", "--no-fund"])?;
    npm(&sdk, &["run", "build"])?;
    optech_host::build::build_all(
        &js_dir(),
        &optech_host::build::BuildDirs::with_target(crate::root().join("target/plugins")),
    )?;
    Ok(())
}

/// A config serving `echo` with `echo-js.wasm`.
fn config(dir: &Path, extra: &str) -> anyhow::Result<PathBuf> {
    crate::contenders::big_plugin_config(dir, &js_dir(), "echo-js", extra)
}

/// (f) the host with the TypeScript echo plugin, a fresh instance per request.
pub fn fresh(dir: &Path) -> anyhow::Result<Contender> {
    let dir = dir.join("js");
    std::fs::create_dir_all(&dir)?;
    Contender::custom("f. optech + echo-js.wasm (TypeScript)", &config(&dir, "")?)
}

/// (f2) as (f), with `requests_per_instance = 1000`.
pub fn reused(dir: &Path) -> anyhow::Result<Contender> {
    let dir = dir.join("js-reused");
    std::fs::create_dir_all(&dir)?;
    let config = config(&dir, "requests_per_instance = 1000")?;
    Contender::custom(
        "f2. optech + echo-js.wasm (TypeScript), reused instances",
        &config,
    )
}

/// (g) one Node process with Express doing verify + echo + sign.
pub fn express() -> anyhow::Result<Contender> {
    let dir = node_dir();
    if !dir.join("node_modules/express/package.json").is_file() {
        npm(&dir, &["ci", "--no-audit", "--no-fund"])?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut contender = Contender::program(
        "g. Node 20 + Express, 1 process (verify + echo + sign)",
        PathBuf::from("node"),
        vec![dir.join("express_echo.mjs").display().to_string()],
        Workload::Echo,
    );
    contender.set_env("PORT", &port.to_string());
    Ok(contender)
}
