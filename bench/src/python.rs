//! The Python contenders: (h) a Python echo plugin (`bench/python/echo-py`,
//! built by `optech build`'s code) in a fresh instance per request, (h2) the
//! same with reused instances, and (i) the app it would replace: one uvicorn
//! worker running FastAPI (`bench/python/fastapi_echo.py`) that checks the
//! signature, echoes and signs, installed by the bench into a virtual
//! environment from `bench/python/requirements.txt`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::contenders::{Contender, Workload};

fn python_dir() -> PathBuf {
    crate::root().join("bench/python")
}

/// Builds `bench/python/echo-py` into `bench/python/echo-py.wasm`.
pub fn build_echo() -> anyhow::Result<()> {
    let root = crate::root();
    optech_host::build::build_all(
        &python_dir(),
        &optech_host::build::BuildDirs::with_target(root.join("target/plugins")),
    )?;
    Ok(())
}

/// A config serving `echo` with `echo-py.wasm`.
fn config(dir: &Path, extra: &str) -> anyhow::Result<PathBuf> {
    crate::contenders::big_plugin_config(dir, &python_dir(), "echo-py", extra)
}

/// (h) the host with the Python echo plugin, a fresh instance per request.
pub fn fresh(dir: &Path) -> anyhow::Result<Contender> {
    let dir = dir.join("python");
    std::fs::create_dir_all(&dir)?;
    Contender::custom("h. optech + echo-py.wasm (Python)", &config(&dir, "")?)
}

/// (h2) as (h), with `requests_per_instance = 1000`.
pub fn reused(dir: &Path) -> anyhow::Result<Contender> {
    let dir = dir.join("python-reused");
    std::fs::create_dir_all(&dir)?;
    let config = config(&dir, "requests_per_instance = 1000")?;
    Contender::custom(
        "h2. optech + echo-py.wasm (Python), reused instances",
        &config,
    )
}

/// (i) one uvicorn worker with FastAPI doing verify + echo + sign.
pub fn fastapi() -> anyhow::Result<Contender> {
    let python = venv()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(Contender::program(
        "i. FastAPI + uvicorn, 1 worker (verify + echo + sign)",
        python,
        [
            "-m",
            "uvicorn",
            "fastapi_echo:app",
            "--app-dir",
            &python_dir().display().to_string(),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--workers",
            "1",
            "--no-access-log",
        ]
        .map(String::from)
        .to_vec(),
        Workload::Echo,
    ))
}

/// `target/bench-python`, with FastAPI and uvicorn installed once.
fn venv() -> anyhow::Result<PathBuf> {
    let env = crate::root().join("target/bench-python");
    let python = env.join("bin/python");
    let requirements = python_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let stamp = env.join("optech-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&env);
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&env)
        .status()
        .context("running python3 -m venv (contender i needs Python 3)")?;
    if !status.success() {
        bail!("python3 -m venv {} failed", env.display());
    }
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("installing {} failed", requirements.display());
    }
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}
