//! TypeScript and JavaScript plugins: a folder with a `package.json` whose entry
//! (the file `main` names, else `src/index.ts`, else `src/index.js`) exports
//! `handle`, usually made with the `optech-sdk` npm package.
//!
//! A build installs the plugin's npm dependencies when they are missing (npm
//! writes and runs only inside the project: `npm`), bundles
//! the entry with esbuild into one ES module (the SDK's component backend picked
//! by the `optech-component` condition), and turns the bundle into a component
//! with componentize-js, against the WIT the plugin's SDK carries (world `js`:
//! the host's `plugin` plus the imports the SDK's `fetch` needs) or, for a
//! plugin without the SDK, the host's own (world `plugin`).
//!
//! The toolchain (componentize-js and esbuild, pinned by the lockfile in `js/`)
//! is installed once per version under the cache directory and shared by every
//! JS plugin of every project: it is hundreds of MB. componentize-js takes
//! seconds, esbuild milliseconds, so a bundle identical to the last one built
//! reuses its component. Never `--aot`: weval downloads a binary at build time.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};

use super::{BuildDirs, Builder, PluginSource};

mod npm;

use npm::Project;

/// The toolchain's manifest and lockfile: what `npm ci` installs, exactly.
const TOOLCHAIN_PACKAGE: &str = include_str!("js/package.json");
const TOOLCHAIN_LOCK: &str = include_str!("js/package-lock.json");
/// For messages; the lockfile is what pins them.
const COMPONENTIZE_JS: &str = "0.23.0";
const ESBUILD: &str = "0.25.12";
/// The host's contract, for plugins that do not use the SDK (which carries its own).
const HOST_WIT: &str = include_str!("../../../wit/plugin.wit");
/// The `wasi:keyvalue` package the host's world imports, written beside it.
const KEYVALUE_WIT: &str = include_str!("../../../wit/deps/keyvalue/keyvalue.wit");
/// Some of componentize-js's dependencies need Node 20.
const MIN_NODE: u32 = 20;
/// The condition under which `optech-sdk` resolves to its component backend.
const CONDITION: &str = "optech-component";

const NO_NODE: &str = "TypeScript and JavaScript plugins need Node.js 20 or later, with npm, \
    and `node` is not on the PATH: install it from https://nodejs.org \
    (or with your system's package manager, e.g. `apt-get install nodejs npm`)";

/// The TypeScript/JavaScript builder.
pub struct Js;

impl Builder for Js {
    fn language(&self) -> &'static str {
        "js"
    }

    fn detect(&self, dir: &Path) -> anyhow::Result<Option<String>> {
        if !dir.join("package.json").is_file() {
            return Ok(None);
        }
        Ok(Some(Manifest::read(dir)?.plugin_name(dir)))
    }

    fn prepare(&self, dirs: &BuildDirs) -> anyhow::Result<()> {
        check_node()?;
        Toolchain::ensure(&dirs.cache_dir).map(drop)
    }

    fn build(&self, plugin: &PluginSource, dirs: &BuildDirs, staging: &Path) -> anyhow::Result<()> {
        let toolchain = Toolchain::ensure(&dirs.cache_dir)?;
        // Every path from here on is resolved, as componentize-js needs them
        // (see `Toolchain::componentize`): a `target` that is a link elsewhere
        // hid the bundle from its sandbox.
        let dir = resolve(&plugin.dir)?;
        let manifest = Manifest::read(&dir)?;
        let work = dirs.target_dir.join("js").join(&plugin.name);
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let work = resolve(&work)?;
        // One build of a plugin at a time: two `optech build`s share the work folder.
        let _lock = lock(&work.join(".lock"))?;

        let project = Project::of(&plugin.dir)?;
        npm::install_dependencies(&dir, manifest.has_dependencies, &project)?;
        npm::build_linked_packages(&dir, &project)?;
        let entry = manifest.entry(&dir)?;
        let bundle = work.join("bundle.js");
        toolchain.bundle(&entry, &bundle)?;
        let (wit, world) = wit_for(&dir, &work)?;

        let fingerprint = fingerprint(&toolchain.id, &bundle, &wit, world)?;
        let component = work.join("component.wasm");
        let stamp = work.join("fingerprint");
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(fingerprint.as_str())
            && std::fs::copy(&component, staging).is_ok()
        {
            tracing::info!(plugin = %plugin.name, "bundle unchanged since its last build; reusing its component");
            return Ok(());
        }
        let fresh = work.join("component.wasm.tmp");
        toolchain.componentize(&bundle, &wit, world, &fresh)?;
        std::fs::rename(&fresh, &component)
            .with_context(|| format!("moving {} into place", component.display()))?;
        std::fs::write(&stamp, &fingerprint)
            .with_context(|| format!("writing {}", stamp.display()))?;
        std::fs::copy(&component, staging)
            .with_context(|| format!("copying {} to {}", component.display(), staging.display()))?;
        Ok(())
    }

    /// Everything in the folder but `node_modules`, hidden folders and
    /// `package-lock.json`: a plugin may import a JSON file or a sibling module,
    /// and a change that leaves the bundle as it was costs only the bundling.
    /// The lock file is the build's own output (`npm install` writes it); a
    /// change of dependencies comes with `package.json`.
    fn is_source(&self, plugin_dir: &Path, path: &Path) -> bool {
        let Ok(rest) = path.strip_prefix(plugin_dir) else {
            return false;
        };
        let Some(first) = rest.components().next() else {
            return false;
        };
        let first = first.as_os_str().to_string_lossy();
        first != "node_modules" && first != "package-lock.json" && !first.starts_with('.')
    }
}

/// What the build needs from a plugin's `package.json`.
struct Manifest {
    name: Option<String>,
    main: Option<String>,
    has_dependencies: bool,
}

impl Manifest {
    fn read(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join("package.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let text_of = |key: &str| doc.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let has_dependencies = ["dependencies", "devDependencies", "optionalDependencies"]
            .iter()
            .any(|key| {
                doc.get(key)
                    .and_then(|d| d.as_object())
                    .is_some_and(|d| !d.is_empty())
            });
        Ok(Manifest {
            name: text_of("name"),
            main: text_of("main"),
            has_dependencies,
        })
    }

    /// The package's name without its `@scope/`, else the folder's name.
    fn plugin_name(&self, dir: &Path) -> String {
        match &self.name {
            Some(name) if !name.is_empty() => name
                .rsplit_once('/')
                .map_or(name.as_str(), |(_, n)| n)
                .to_string(),
            _ => dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// The file `main` names if it exists, else `src/index.ts`, else `src/index.js`.
    fn entry(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let named = self.main.iter().map(|m| dir.join(m));
        let usual = [
            "src/index.ts",
            "src/index.js",
            "src/index.mts",
            "src/index.mjs",
        ]
        .iter()
        .map(|f| dir.join(f));
        named.chain(usual).find(|p| p.is_file()).with_context(|| {
            format!(
                "{} has no entry: write src/index.ts (or src/index.js), or name the file in package.json's \"main\"",
                dir.display()
            )
        })
    }
}

/// Says what to install when `node` is missing or too old.
fn check_node() -> anyhow::Result<()> {
    let out = match Command::new("node").arg("--version").output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("{NO_NODE}"),
        Err(e) => return Err(e).context("running `node --version`"),
    };
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(major) if major >= MIN_NODE => Ok(()),
        _ => bail!(
            "Node.js {version} is too old for TypeScript and JavaScript plugins: they need {MIN_NODE} or later (https://nodejs.org)"
        ),
    }
}

fn npm() -> Command {
    Command::new(if cfg!(windows) { "npm.cmd" } else { "npm" })
}

/// Runs a tool with its output on our stderr (stdout is for `optech`'s own).
fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    command.stdout(Stdio::from(std::io::stderr()));
    let status = match command.status() {
        Ok(status) => status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{what}: {NO_NODE} (`npm` or `node` was not found)")
        }
        Err(e) => return Err(e).with_context(|| what.to_string()),
    };
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `path` with every link resolved.
fn resolve(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))
}

/// An exclusive lock on `path` (created if needed), held until dropped.
fn lock(path: &Path) -> anyhow::Result<File> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// componentize-js and esbuild, installed once per lockfile.
struct Toolchain {
    /// Names this lockfile: a new pin installs beside the old one.
    id: String,
    dir: PathBuf,
}

impl Toolchain {
    fn ensure(cache_dir: &Path) -> anyhow::Result<Toolchain> {
        let mut hash = Sha256::new();
        hash.update(TOOLCHAIN_PACKAGE);
        hash.update(TOOLCHAIN_LOCK);
        let id = hex::encode(&hash.finalize()[..6]);
        let root = cache_dir.join("js");
        let toolchain = Toolchain {
            dir: root.join(format!("toolchain-{id}")),
            id,
        };
        if toolchain.installed() {
            return Ok(toolchain);
        }
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let _lock = lock(&root.join(".install.lock"))?;
        if toolchain.installed() {
            return Ok(toolchain); // another build installed it while we waited
        }
        let staging = root.join(format!(
            ".toolchain-{}.{}.tmp",
            toolchain.id,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("creating {}", staging.display()))?;
        for (file, text) in [
            ("package.json", TOOLCHAIN_PACKAGE),
            ("package-lock.json", TOOLCHAIN_LOCK),
        ] {
            let path = staging.join(file);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        tracing::info!(
            "installing the JavaScript toolchain (componentize-js {COMPONENTIZE_JS}, esbuild {ESBUILD}) into {}; once, for every JS plugin",
            toolchain.dir.display()
        );
        check_node()?;
        let mut ci = npm();
        // No install scripts: none is needed (esbuild's only checks its binary).
        ci.args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
        ])
        .current_dir(&staging);
        let installed = run(ci, "installing the JavaScript toolchain with `npm ci`");
        if let Err(e) = installed {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        // A folder left by an install that was cut short.
        let _ = std::fs::remove_dir_all(&toolchain.dir);
        std::fs::rename(&staging, &toolchain.dir)
            .with_context(|| format!("moving {} into place", toolchain.dir.display()))?;
        Ok(toolchain)
    }

    fn installed(&self) -> bool {
        self.esbuild().is_file() && self.componentize_js().is_file()
    }

    fn esbuild(&self) -> PathBuf {
        self.dir.join("node_modules/esbuild/bin/esbuild")
    }

    fn componentize_js(&self) -> PathBuf {
        self.dir
            .join("node_modules/@bytecodealliance/componentize-js/src/cli.js")
    }

    /// One ES module with every dependency in it; the host's and WASI's
    /// interfaces stay imports, for componentize-js to bind.
    fn bundle(&self, entry: &Path, out: &Path) -> anyhow::Result<()> {
        let mut esbuild = Command::new("node");
        esbuild
            .arg(self.esbuild())
            .arg(entry)
            .args([
                "--bundle",
                "--format=esm",
                "--platform=neutral",
                "--target=es2022",
                "--main-fields=module,main",
                "--external:optech:*",
                "--external:wasi:*",
                "--define:process.env.NODE_ENV=\"production\"",
                "--legal-comments=none",
                "--log-level=warning",
            ])
            .arg(format!("--conditions={CONDITION}"))
            .arg(format!("--outfile={}", out.display()));
        run(
            esbuild,
            &format!("bundling {} with esbuild", entry.display()),
        )
    }

    /// Every path must be resolved. componentize-js runs the bundle in a
    /// sandbox (wizer) that maps one folder, the current one if the bundle is
    /// under it, else the bundle's, and follows no link out of it: run from
    /// the bundle's folder, the sandbox sees that folder and nothing else.
    fn componentize(
        &self,
        bundle: &Path,
        wit: &Path,
        world: &str,
        out: &Path,
    ) -> anyhow::Result<()> {
        let folder = bundle
            .parent()
            .with_context(|| format!("{} has no folder", bundle.display()))?;
        let mut componentize = Command::new("node");
        componentize
            .arg(self.componentize_js())
            .arg(bundle)
            .arg("--wit")
            .arg(wit)
            .args(["--world-name", world, "--out"])
            .arg(out)
            .current_dir(folder);
        run(componentize, "componentize-js")
    }
}

/// The WIT folder and world to build against: the SDK's `js` world when the
/// plugin has the SDK, else the host's `plugin` world (written into `work`).
fn wit_for(plugin_dir: &Path, work: &Path) -> anyhow::Result<(PathBuf, &'static str)> {
    let sdk_wit = plugin_dir.join("node_modules/optech-sdk/wit");
    if sdk_wit.join("js.wit").is_file() {
        return Ok((sdk_wit, "js"));
    }
    let wit = work.join("wit");
    let deps = wit.join("deps");
    std::fs::create_dir_all(&deps).with_context(|| format!("creating {}", deps.display()))?;
    for (file, text) in [
        (wit.join("plugin.wit"), HOST_WIT),
        (deps.join("keyvalue.wit"), KEYVALUE_WIT),
    ] {
        if std::fs::read_to_string(&file).ok().as_deref() != Some(text) {
            std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        }
    }
    Ok((wit, "plugin"))
}

/// Everything the component depends on: the toolchain, the world, the WIT, the bundle.
fn fingerprint(toolchain: &str, bundle: &Path, wit: &Path, world: &str) -> anyhow::Result<String> {
    let mut hash = Sha256::new();
    for part in [toolchain, world] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let mut files = Vec::new();
    collect_files(wit, &mut files)?;
    files.sort();
    for file in files {
        hash.update(
            file.strip_prefix(wit)
                .unwrap_or(&file)
                .to_string_lossy()
                .as_bytes(),
        );
        hash.update([0]);
        hash.update(std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?);
        hash.update([0]);
    }
    hash.update(std::fs::read(bundle).with_context(|| format!("reading {}", bundle.display()))?);
    Ok(hex::encode(hash.finalize()))
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::folder_with as folder;

    #[test]
    fn the_plugin_name_is_the_package_name_without_its_scope_else_the_folder() {
        let dir = folder(&[("package.json", r#"{"name": "@acme/orders-ts"}"#)]);
        assert_eq!(Js.detect(dir.path()).unwrap().as_deref(), Some("orders-ts"));
        let dir = folder(&[("package.json", "{}")]);
        let folder_name = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(Js.detect(dir.path()).unwrap(), Some(folder_name));
        let dir = folder(&[("Cargo.toml", "")]);
        assert_eq!(Js.detect(dir.path()).unwrap(), None);
        let dir = folder(&[("package.json", "{not json")]);
        assert!(Js.detect(dir.path()).is_err());
    }

    #[test]
    fn the_entry_is_main_if_it_exists_then_src_index_ts_then_js() {
        let dir = folder(&[
            ("package.json", r#"{"main": "lib/main.js"}"#),
            ("lib/main.js", ""),
            ("src/index.ts", ""),
        ]);
        let manifest = Manifest::read(dir.path()).unwrap();
        assert_eq!(
            manifest.entry(dir.path()).unwrap(),
            dir.path().join("lib/main.js")
        );
        // `npm init` writes "main": "index.js" whether or not the file exists.
        let dir = folder(&[
            ("package.json", r#"{"main": "index.js"}"#),
            ("src/index.ts", ""),
            ("src/index.js", ""),
        ]);
        let manifest = Manifest::read(dir.path()).unwrap();
        assert_eq!(
            manifest.entry(dir.path()).unwrap(),
            dir.path().join("src/index.ts")
        );
        let dir = folder(&[("package.json", "{}"), ("src/index.js", "")]);
        let manifest = Manifest::read(dir.path()).unwrap();
        assert_eq!(
            manifest.entry(dir.path()).unwrap(),
            dir.path().join("src/index.js")
        );
        let dir = folder(&[("package.json", "{}")]);
        let err = Manifest::read(dir.path())
            .unwrap()
            .entry(dir.path())
            .unwrap_err();
        assert!(err.to_string().contains("src/index.ts"), "{err}");
    }

    #[test]
    fn sources_are_all_but_node_modules_and_hidden_folders() {
        let dir = Path::new("/p/orders-ts");
        for source in [
            "src/index.ts",
            "src/lib/a.ts",
            "package.json",
            "tsconfig.json",
            "data.json",
        ] {
            assert!(Js.is_source(dir, &dir.join(source)), "{source}");
        }
        for other in [
            "node_modules/x/index.js",
            "node_modules",
            "package-lock.json",
            ".git/HEAD",
            ".cache/x",
            "",
        ] {
            assert!(!Js.is_source(dir, &dir.join(other)), "{other}");
        }
        assert!(!Js.is_source(dir, Path::new("/p/orders-ts.wasm")));
        assert!(!Js.is_source(dir, Path::new("/p/orders-ts2/src/index.ts")));
    }

    #[test]
    fn dependencies_count_only_when_listed() {
        let none = folder(&[("package.json", r#"{"dependencies": {}}"#)]);
        assert!(!Manifest::read(none.path()).unwrap().has_dependencies);
        let some = folder(&[("package.json", r#"{"devDependencies": {"tsx": "4"}}"#)]);
        assert!(Manifest::read(some.path()).unwrap().has_dependencies);
    }

    #[test]
    fn the_fingerprint_follows_the_bundle_and_the_wit() {
        let dir = folder(&[
            ("bundle.js", "a"),
            ("wit/plugin.wit", "w"),
            ("wit/deps/x.wit", "x"),
        ]);
        let (bundle, wit) = (dir.path().join("bundle.js"), dir.path().join("wit"));
        let first = fingerprint("t", &bundle, &wit, "js").unwrap();
        assert_eq!(first, fingerprint("t", &bundle, &wit, "js").unwrap());
        assert_ne!(first, fingerprint("t", &bundle, &wit, "plugin").unwrap());
        assert_ne!(first, fingerprint("t2", &bundle, &wit, "js").unwrap());
        std::fs::write(dir.path().join("wit/deps/x.wit"), "y").unwrap();
        let after_wit = fingerprint("t", &bundle, &wit, "js").unwrap();
        assert_ne!(first, after_wit);
        std::fs::write(&bundle, "b").unwrap();
        assert_ne!(after_wit, fingerprint("t", &bundle, &wit, "js").unwrap());
    }
}
