//! `optech build`: every plugin folder under a directory becomes `<dir>/<name>.wasm`,
//! whatever language it is written in.
//!
//! One [`Builder`] per language detects its folders and turns one into a
//! component; this module finds the folders, hands each to its builder, and puts
//! the result in place. The same code builds the example plugins, the test
//! plugins in `host/tests/plugins`, and a user's own (`optech build`, `optech
//! dev`, the tests' fixtures). A builder writes its component to a staging file
//! beside the output, which is then renamed into place, so a running host never
//! sees half a file.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

pub mod js;
pub mod python;
pub mod rust;

/// One language's way from a plugin folder to a component.
pub trait Builder: Send + Sync {
    /// The language's name, as progress output shows it.
    fn language(&self) -> &'static str;

    /// The plugin's name if `dir` is a plugin folder of this language, `None` if
    /// it is not one. An error means it is one but cannot be read.
    fn detect(&self, dir: &Path) -> anyhow::Result<Option<String>>;

    /// Makes sure the language's toolchain is there (installing what the project
    /// can install itself); an error names what the user must install.
    fn prepare(&self, dirs: &BuildDirs) -> anyhow::Result<()>;

    /// Builds the plugin in `plugin.dir` and writes its component to `staging`.
    fn build(&self, plugin: &PluginSource, dirs: &BuildDirs, staging: &Path) -> anyhow::Result<()>;

    /// Whether a change to `path` (absolute) changes the plugin in `plugin_dir`
    /// (absolute): its sources and manifests, never build output.
    fn is_source(&self, plugin_dir: &Path, path: &Path) -> bool;
}

/// The builders, in the order they are asked: the first that recognises a folder builds it.
fn builders() -> [&'static dyn Builder; 3] {
    [&rust::Rust, &js::Js, &python::Python]
}

/// Where builds keep what they share between plugins and runs.
#[derive(Debug, Clone)]
pub struct BuildDirs {
    /// Cargo's target directory, shared by all Rust plugins.
    pub target_dir: PathBuf,
    /// Installed toolchains shared by all plugins of a language, and across projects.
    pub cache_dir: PathBuf,
}

impl BuildDirs {
    /// The defaults for the plugins folder `plugins_dir`: `target/plugins` beside
    /// it, and the user's cache directory (see [`default_cache_dir`]).
    pub fn beside(plugins_dir: &Path) -> BuildDirs {
        // `plugins/orders-py/..` is `plugins`, whose parent is the project, not
        // `plugins/orders-py`: resolve before looking up.
        let resolved = std::fs::canonicalize(plugins_dir).ok();
        let plugins_dir = resolved.as_deref().unwrap_or(plugins_dir);
        let target_dir = plugins_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("target/plugins");
        BuildDirs {
            cache_dir: default_cache_dir().unwrap_or_else(|| target_dir.join("cache")),
            target_dir,
        }
    }

    /// `target_dir` for cargo, and the user's cache directory.
    pub fn with_target(target_dir: PathBuf) -> BuildDirs {
        BuildDirs {
            cache_dir: default_cache_dir().unwrap_or_else(|| target_dir.join("cache")),
            target_dir,
        }
    }
}

/// `$OPTECH_CACHE_DIR`, else `$XDG_CACHE_HOME/optech`, else `~/.cache/optech`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("OPTECH_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("optech"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".cache/optech"))
}

/// One plugin folder and the builder that builds it.
#[derive(Clone)]
pub struct PluginSource {
    pub dir: PathBuf,
    /// The plugin name, which is also the `.wasm` file's stem.
    pub name: String,
    builder: &'static dyn Builder,
}

impl std::fmt::Debug for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSource")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .field("language", &self.language())
            .finish()
    }
}

impl PluginSource {
    /// The language it is written in, as progress output names it.
    pub fn language(&self) -> &'static str {
        self.builder.language()
    }

    /// Whether a change to `path` changes this plugin (both absolute).
    pub fn is_source(&self, path: &Path) -> bool {
        self.builder.is_source(&self.dir, path)
    }
}

/// Finds the plugin folders directly under `dir`, sorted by name. Two folders
/// that would write the same `.wasm` are an error naming both.
pub fn discover(dir: &Path) -> anyhow::Result<Vec<PluginSource>> {
    let mut plugins: Vec<PluginSource> = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut folders = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.is_dir() {
            folders.push(path);
        }
    }
    folders.sort();
    for folder in folders {
        for builder in builders() {
            if let Some(name) = builder.detect(&folder)? {
                if let Some(other) = plugins.iter().find(|p| p.name == name) {
                    bail!(
                        "{} and {} are both plugin `{name}`: each would write {name}.wasm; rename one",
                        other.dir.display(),
                        folder.display()
                    );
                }
                plugins.push(PluginSource {
                    dir: folder,
                    name,
                    builder,
                });
                break;
            }
        }
    }
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(plugins)
}

/// Builds one plugin (preparing its language's toolchain first) into
/// `out_dir/<name>.wasm`, written beside and renamed into place; returns that path.
pub fn build(plugin: &PluginSource, dirs: &BuildDirs, out_dir: &Path) -> anyhow::Result<PathBuf> {
    plugin.builder.prepare(dirs)?;
    let out = out_dir.join(format!("{}.wasm", plugin.name));
    let staging = out_dir.join(format!(".{}.wasm.tmp", plugin.name));
    let built = plugin.builder.build(plugin, dirs, &staging);
    if let Err(e) = built {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    std::fs::rename(&staging, &out)
        .with_context(|| format!("moving {} into place", out.display()))?;
    Ok(out)
}

/// Builds every plugin under `dir` into `dir/<name>.wasm`, stopping at the first
/// failure; returns the files written.
pub fn build_all(dir: &Path, dirs: &BuildDirs) -> anyhow::Result<Vec<PathBuf>> {
    let plugins = discover(dir)?;
    if plugins.is_empty() {
        bail!("{}", nothing_to_build(dir));
    }
    plugins.iter().map(|p| build(p, dirs, dir)).collect()
}

/// The error for a plugins folder without plugins.
pub fn nothing_to_build(dir: &Path) -> String {
    format!(
        "no plugin folders under {} (a Rust crate with a Cargo.toml, a TypeScript/JavaScript package with a package.json, or a Python folder with an app.py)",
        dir.display()
    )
}

/// A folder holding `files` (paths relative to it, with their text): a
/// plugin's sources for the builders' unit tests.
#[cfg(test)]
pub(crate) fn folder_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (path, text) in files {
        let path = dir.path().join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("creating a folder");
        }
        std::fs::write(path, text).expect("writing a file");
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn discovers_plugin_folders_by_name_and_skips_others() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("b/Cargo.toml"),
            "[package]\nname = \"beta\"\n",
        );
        write(
            &dir.path().join("a/Cargo.toml"),
            "[package]\nname = \"zeta\"\n",
        );
        write(&dir.path().join("notes/readme.txt"), "not a plugin");
        write(&dir.path().join("x.wasm"), "");
        let found = discover(dir.path()).unwrap();
        let names: Vec<_> = found.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["beta", "zeta"]);
        assert!(found.iter().all(|p| p.language() == "rust"));
    }

    #[test]
    fn two_folders_with_one_name_are_an_error_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("a/Cargo.toml"),
            "[package]\nname = \"x\"\n",
        );
        write(
            &dir.path().join("b/Cargo.toml"),
            "[package]\nname = \"x\"\n",
        );
        let err = discover(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("/a") && err.contains("/b") && err.contains("x.wasm"),
            "{err}"
        );
    }
}
