//! Python plugins: a folder with an `app.py` whose handler is marked with the
//! SDK's `@handler`, turned into a component by componentize-py.
//!
//! The toolchain is one virtual environment with componentize-py (pinned),
//! created the first time a Python plugin is built, in the cache directory, and
//! shared by every Python plugin and project after that; Python 3 is the only
//! thing the user installs. The SDK the component is built with is the one
//! compiled into this binary (`sdk-py/`), so it always matches the host's
//! contract; a copy of `optech-sdk` a plugin lists for its own tests is left
//! out of the build. Pure-Python dependencies listed in the plugin's
//! `requirements.txt` or `pyproject.toml` (`[project] dependencies`) are
//! installed once per distinct list, as wheels for any platform; the list is
//! checked first, so that no line of it can make pip build from source
//! (`requirements`).
//!
//! A build whose inputs (sources, dependency list, SDK, componentize-py) did
//! not change reuses the last component instead of running componentize-py
//! again (about 20 CPU seconds).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};

use super::{BuildDirs, Builder, PluginSource};

mod requirements;

use requirements::Requirements;

/// The componentize-py every Python plugin is built with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The CPython inside componentize-py 0.25's components: dependencies are
/// chosen for it, not for the Python that runs the build.
const TARGET_PYTHON: &str = "3.14";
/// The SDK's world: the host's `plugin` plus `wasi:http/outgoing-handler`.
const WORLD: &str = "optech:plugin/python";
/// The oldest Python that runs componentize-py (its wheels are `cp39-abi3`).
const MIN_PYTHON: (u32, u32) = (3, 9);
/// The module componentize-py starts from: it imports the plugin's `app` and
/// fails the build when no function is marked `@handler`.
const ENTRY_MODULE: &str = "_optech_main";
const ENTRY: &str = r#""""Written by `optech build`: the plugin's `app` module, and the export
componentize-py instantiates around its @handler."""

import gc

import app  # noqa: F401  (its @handler marks the plugin's function)

from optech_sdk._component import WitWorld  # noqa: F401
from optech_sdk._core import registered

registered()  # no @handler in app.py: a build error, not a failed request

# Everything imported so far is in every instance's starting memory: keep the
# collector off it, so a request never walks (and so touches) those pages.
gc.freeze()
"#;

macro_rules! sdk_files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../../sdk-py/src/", $path)))),*]
    };
}

/// The Python SDK (`sdk-py/src`), as built into every Python plugin. A test
/// checks that the list names every file of the package.
const SDK: &[(&str, &str)] = sdk_files![
    "optech_sdk/__init__.py",
    "optech_sdk/_backend.py",
    "optech_sdk/_component.py",
    "optech_sdk/_core.py",
    "optech_sdk/_errors.py",
    "optech_sdk/_memory.py",
    "optech_sdk/_request.py",
    "optech_sdk/componentize-py.toml",
    "optech_sdk/http.py",
    "optech_sdk/log.py",
    "optech_sdk/py.typed",
    "optech_sdk/store.py",
    "optech_sdk/testing.py",
    "optech_sdk/wit/deps/README.md",
    "optech_sdk/wit/deps/cli/cli.wit",
    "optech_sdk/wit/deps/clocks/clocks.wit",
    "optech_sdk/wit/deps/filesystem/filesystem.wit",
    "optech_sdk/wit/deps/http/http.wit",
    "optech_sdk/wit/deps/io/io.wit",
    "optech_sdk/wit/deps/keyvalue/keyvalue.wit",
    "optech_sdk/wit/deps/random/random.wit",
    "optech_sdk/wit/deps/sockets/sockets.wit",
    "optech_sdk/wit/plugin.wit",
    "optech_sdk/wit/python.wit",
];

/// The Python builder.
pub struct Python;

impl Builder for Python {
    fn language(&self) -> &'static str {
        "python"
    }

    fn detect(&self, dir: &Path) -> anyhow::Result<Option<String>> {
        if !dir.join("app.py").is_file() {
            return Ok(None);
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{}: a plugin folder's name must be UTF-8", dir.display()))?;
        Ok(Some(name.to_string()))
    }

    fn prepare(&self, dirs: &BuildDirs) -> anyhow::Result<()> {
        Toolchain::ensure(&dirs.cache_dir).map(|_| ())
    }

    fn build(&self, plugin: &PluginSource, dirs: &BuildDirs, staging: &Path) -> anyhow::Result<()> {
        let toolchain = Toolchain::ensure(&dirs.cache_dir)?;
        let requirements = Requirements::read(&plugin.dir)?;
        let sources = sources(&plugin.dir)?;
        let fingerprint = fingerprint(&toolchain, &requirements, &plugin.dir, &sources)?;
        let cached = toolchain.build_cache(&plugin.dir);
        if std::fs::read_to_string(cached.join("fingerprint"))
            .ok()
            .as_deref()
            == Some(&fingerprint)
            && std::fs::copy(cached.join("component.wasm"), staging).is_ok()
        {
            tracing::info!(plugin = %plugin.name, "unchanged since its last build");
            return Ok(());
        }
        let deps = toolchain.dependencies(&requirements, &plugin.dir)?;
        let mut command = Command::new(&toolchain.componentize);
        command
            .args(["-q", "-w", WORLD, "componentize", ENTRY_MODULE, "-p"])
            .arg(&toolchain.entry)
            .arg("-p")
            .arg(&plugin.dir);
        if let Some(deps) = &deps {
            command.arg("-p").arg(deps);
        }
        command
            .arg("-p")
            .arg(&toolchain.sdk)
            .arg("-o")
            .arg(staging)
            // componentize-py adds the site-packages of an active virtual
            // environment (or of the system's python3) to the component's
            // path: give it an empty one, so only the paths above count.
            .env("VIRTUAL_ENV", &toolchain.empty_env)
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME");
        let status = command
            .status()
            .with_context(|| format!("running {}", toolchain.componentize.display()))?;
        if !status.success() {
            bail!(
                "building plugin `{}` ({}) failed: componentize-py says why above",
                plugin.name,
                plugin.dir.join("app.py").display()
            );
        }
        // Kept for the next build of the same inputs; losing it only costs time.
        let kept = std::fs::create_dir_all(&cached)
            .and_then(|()| std::fs::copy(staging, cached.join("component.wasm")))
            .and_then(|_| std::fs::write(cached.join("fingerprint"), &fingerprint));
        if let Err(e) = kept {
            tracing::debug!(plugin = %plugin.name, "not keeping the build for next time: {e}");
        }
        Ok(())
    }

    /// Every file of the folder but tests, bytecode, hidden files and built
    /// components: a data file `app.py` reads at import is built in too.
    fn is_source(&self, plugin_dir: &Path, path: &Path) -> bool {
        match path.strip_prefix(plugin_dir) {
            Ok(relative) if relative.as_os_str().is_empty() => false,
            Ok(relative) => counts(relative),
            Err(_) => false,
        }
    }
}

/// Whether a file at `relative` (to the plugin folder) goes into the component.
fn counts(relative: &Path) -> bool {
    let parts: Vec<&str> = relative.iter().filter_map(|p| p.to_str()).collect();
    let Some(file) = parts.last() else {
        return false;
    };
    let skipped_dir = |d: &&str| {
        d.starts_with('.')
            || matches!(
                *d,
                "__pycache__" | "tests" | "node_modules" | "target" | "venv"
            )
    };
    let test = (file.starts_with("test_") && file.ends_with(".py"))
        || file.ends_with("_test.py")
        || *file == "conftest.py";
    // Bytecode, components, and a host config beside the plugin (as in
    // plugins/orders-py) are not part of it.
    let output = file.ends_with(".pyc") || file.ends_with(".wasm") || *file == "optech.toml";
    // A folder's own event (made by the build, as `__pycache__` is) names it
    // last: judged as a folder too.
    !file.starts_with('.') && !parts.iter().any(skipped_dir) && !test && !output
}

/// The plugin's source files (relative, sorted), for the build's fingerprint.
fn sources(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                // A directory is walked unless its own name rules it out.
                if counts(&relative.join("x")) {
                    walk(root, &path, found)?;
                }
            } else if counts(&relative) {
                found.push(relative);
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found)?;
    found.sort();
    Ok(found)
}

/// A hash of everything that goes into the component.
fn fingerprint(
    toolchain: &Toolchain,
    requirements: &Requirements,
    dir: &Path,
    sources: &[PathBuf],
) -> anyhow::Result<String> {
    let mut hash = Sha256::new();
    for part in [
        COMPONENTIZE_PY,
        &toolchain.sdk_hash,
        ENTRY,
        &requirements.key(),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    for relative in sources {
        let path = dir.join(relative);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        hash.update(relative.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(hex::encode(hash.finalize()))
}

/// The installed toolchain: componentize-py in its virtual environment, the
/// SDK, the entry module, all under `<cache>/python`.
struct Toolchain {
    root: PathBuf,
    venv_python: PathBuf,
    componentize: PathBuf,
    sdk: PathBuf,
    sdk_hash: String,
    entry: PathBuf,
    empty_env: PathBuf,
}

impl Toolchain {
    /// Installs what is missing (once: later calls only look), holding a lock
    /// so concurrent builds install it once.
    fn ensure(cache_dir: &Path) -> anyhow::Result<Toolchain> {
        let root = cache_dir.join("python");
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let venv = root.join(format!("componentize-py-{COMPONENTIZE_PY}"));
        let (bin, exe) = if cfg!(windows) {
            ("Scripts", ".exe")
        } else {
            ("bin", "")
        };
        let sdk_hash = sdk_hash();
        let toolchain = Toolchain {
            venv_python: venv.join(bin).join(format!("python{exe}")),
            componentize: venv.join(bin).join(format!("componentize-py{exe}")),
            sdk: root.join(format!("sdk-{}", &sdk_hash[..16])),
            entry: root.join("entry"),
            empty_env: root.join("empty-env"),
            sdk_hash,
            root,
        };
        let ready = venv.join("optech-ready");
        let lock = File::create(toolchain.root.join("install.lock"))
            .with_context(|| format!("creating {}", toolchain.root.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", toolchain.root.display()))?;
        if !ready.is_file() {
            install_componentize(&venv)?;
            std::fs::write(&ready, COMPONENTIZE_PY)
                .with_context(|| format!("writing {}", ready.display()))?;
        }
        toolchain.write_support_files()?;
        drop(lock);
        Ok(toolchain)
    }

    /// The SDK, the entry module and the empty environment, when missing.
    fn write_support_files(&self) -> anyhow::Result<()> {
        if !self.sdk.is_dir() {
            let staging = self.root.join(format!(".sdk-{}.tmp", std::process::id()));
            let _ = std::fs::remove_dir_all(&staging);
            for (path, text) in SDK {
                let file = staging.join(path);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                std::fs::write(&file, text)
                    .with_context(|| format!("writing {}", file.display()))?;
            }
            std::fs::rename(&staging, &self.sdk)
                .with_context(|| format!("moving the SDK to {}", self.sdk.display()))?;
        }
        let entry = self.entry.join(format!("{ENTRY_MODULE}.py"));
        if std::fs::read_to_string(&entry).ok().as_deref() != Some(ENTRY) {
            std::fs::create_dir_all(&self.entry)
                .with_context(|| format!("creating {}", self.entry.display()))?;
            std::fs::write(&entry, ENTRY)
                .with_context(|| format!("writing {}", entry.display()))?;
        }
        let site = self.empty_env.join("lib/python/site-packages");
        std::fs::create_dir_all(&site).with_context(|| format!("creating {}", site.display()))?;
        Ok(())
    }

    /// Where the last build of the plugin in `dir` is kept.
    fn build_cache(&self, dir: &Path) -> PathBuf {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let key = hex::encode(Sha256::digest(dir.to_string_lossy().as_bytes()));
        self.root.join("builds").join(&key[..16])
    }

    /// The folder with the plugin's dependencies installed, once per distinct
    /// list; `None` when it lists none.
    fn dependencies(
        &self,
        requirements: &Requirements,
        plugin_dir: &Path,
    ) -> anyhow::Result<Option<PathBuf>> {
        if requirements.is_empty() {
            return Ok(None);
        }
        let key = hex::encode(Sha256::digest(requirements.key().as_bytes()));
        let deps = self.root.join("deps").join(&key[..16]);
        if deps.is_dir() {
            return Ok(Some(deps));
        }
        let staging =
            self.root
                .join("deps")
                .join(format!(".{}.{}.tmp", &key[..16], std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("creating {}", staging.display()))?;
        let list = staging.join("optech-requirements.txt");
        std::fs::write(&list, requirements.pip_text())
            .with_context(|| format!("writing {}", list.display()))?;
        let constraints = match requirements.constraints_text() {
            Some(text) => {
                let file = staging.join("optech-constraints.txt");
                std::fs::write(&file, text)
                    .with_context(|| format!("writing {}", file.display()))?;
                Some(file)
            }
            None => None,
        };
        tracing::info!(
            "installing the dependencies of {} (pure-Python wheels)",
            plugin_dir.display()
        );
        let mut pip = Command::new(&self.venv_python);
        pip.args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "--no-compile",
        ])
        // Wheels that run anywhere, for the component's CPython: pip
        // refuses a package that has only native wheels or an sdist.
        .args([
            "--only-binary=:all:",
            "--platform",
            "any",
            "--implementation",
            "py",
            "--abi",
            "none",
        ])
        .args(["--python-version", TARGET_PYTHON, "--target"])
        .arg(&staging)
        .arg("-r")
        .arg(&list)
        // The list names no file (included files are inlined), so
        // nothing in the plugin folder can pass for a requirement.
        .current_dir(&staging);
        if let Some(constraints) = &constraints {
            pip.arg("-c").arg(constraints);
        }
        let status = pip
            .status()
            .with_context(|| format!("running pip in {}", self.venv_python.display()))?;
        if !status.success() {
            let _ = std::fs::remove_dir_all(&staging);
            bail!(
                "installing the dependencies of {} failed (pip says why above); a plugin can use \
                 pure-Python packages that publish wheels, not native extensions",
                plugin_dir.display()
            );
        }
        match std::fs::rename(&staging, &deps) {
            Ok(()) => {}
            // Another build installed the same list meanwhile.
            Err(_) if deps.is_dir() => {
                let _ = std::fs::remove_dir_all(&staging);
            }
            Err(e) => {
                return Err(e).with_context(|| format!("moving {} into place", deps.display()));
            }
        }
        Ok(Some(deps))
    }
}

/// Creates the virtual environment and installs componentize-py into it.
fn install_componentize(venv: &Path) -> anyhow::Result<()> {
    let python = find_python()?;
    tracing::info!(
        "installing componentize-py {COMPONENTIZE_PY} into {} (once, for every Python plugin)",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(venv);
    let status = Command::new(&python)
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .with_context(|| format!("running {python} -m venv"))?;
    if !status.success() {
        bail!(
            "`{python} -m venv {}` failed: Python plugins need Python's venv module \
             (on Debian and Ubuntu: apt install python3-venv)",
            venv.display()
        );
    }
    let venv_python = venv
        .join(if cfg!(windows) { "Scripts" } else { "bin" })
        .join(if cfg!(windows) {
            "python.exe"
        } else {
            "python"
        });
    let status = Command::new(&venv_python)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
        .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
        .status()
        .with_context(|| format!("running pip in {}", venv.display()))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(venv);
        bail!("installing componentize-py {COMPONENTIZE_PY} from PyPI failed (pip says why above)");
    }
    Ok(())
}

/// The Python that creates the toolchain: `$OPTECH_PYTHON`, else `python3`,
/// else `python`, at least [`MIN_PYTHON`].
fn find_python() -> anyhow::Result<String> {
    let candidates: Vec<String> = match std::env::var("OPTECH_PYTHON") {
        Ok(path) if !path.is_empty() => vec![path],
        _ => vec!["python3".into(), "python".into()],
    };
    let mut found = Vec::new();
    for candidate in &candidates {
        let Ok(output) = Command::new(candidate)
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
            .output()
        else {
            continue;
        };
        let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() && version_at_least(&version, MIN_PYTHON) {
            return Ok(candidate.clone());
        }
        found.push(format!("{candidate} is Python {version}"));
    }
    let (major, minor) = MIN_PYTHON;
    bail!(
        "Python plugins need Python {major}.{minor} or later to build, and {}: install Python 3 \
         (python3 on the PATH), or set OPTECH_PYTHON to its path",
        if found.is_empty() {
            format!("there is no {} on the PATH", candidates.join(" or "))
        } else {
            found.join(", ")
        }
    )
}

fn version_at_least(version: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

fn sdk_hash() -> String {
    let mut hash = Sha256::new();
    for (path, text) in SDK {
        hash.update(path.as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_sdk_is_the_whole_package() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk-py/src");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.join("optech_sdk")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if name == "__pycache__" {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                } else {
                    on_disk.push(
                        path.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .to_string(),
                    );
                }
            }
        }
        on_disk.sort();
        let embedded: Vec<String> = SDK.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(
            embedded, on_disk,
            "add the SDK's new files to SDK in build/python.rs"
        );
    }

    #[test]
    fn sources_are_the_files_a_component_is_built_from() {
        let dir = Path::new("/p/orders");
        for yes in [
            "app.py",
            "lib/util.py",
            "prices.json",
            "requirements.txt",
            "pyproject.toml",
        ] {
            assert!(Python.is_source(dir, &dir.join(yes)), "{yes}");
        }
        for no in [
            "test_app.py",
            "app_test.py",
            "conftest.py",
            "tests/test_x.py",
            "__pycache__/app.cpython-314.pyc",
            "__pycache__",
            ".venv/lib/site.py",
            ".pytest_cache/v",
            "target/plugins/x",
            "venv/lib/x.py",
            "optech.toml",
            "orders.wasm",
            "",
        ] {
            assert!(!Python.is_source(dir, &dir.join(no)), "{no}");
        }
        assert!(!Python.is_source(dir, Path::new("/p/other/app.py")));
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(version_at_least("3.11", (3, 9)));
        assert!(version_at_least("3.9", (3, 9)));
        assert!(!version_at_least("3.8", (3, 9)));
        assert!(!version_at_least("2.7", (3, 9)));
        assert!(!version_at_least("", (3, 9)));
    }
}
