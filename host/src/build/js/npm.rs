//! What runs npm for a plugin, and where it may: `npm install` in the plugin's
//! folder, and `npm install` and `npm run build` in a package it links from a
//! local folder (`"file:../../sdk-js"`) that was never built.
//!
//! npm writes and runs scripts wherever `node_modules` leads, so both stay in
//! the project: a `node_modules` that is a link out of it is refused, and a
//! linked package outside it is built only by its owner (the build says how).
//! Reading through links (esbuild bundling a linked package) is fine.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};

use super::{npm, run};

/// Written in `node_modules` after an install: the hash of the manifest and
/// lockfile it installed, so an unchanged plugin is not installed again.
const INSTALL_STAMP: &str = ".optech-installed";

/// Where npm may write and run for one plugin: the project (the folder that
/// holds the plugins folder, as `target/` is placed) and the plugin's own
/// folder, wherever that really is; both resolved.
#[derive(Debug)]
pub struct Project {
    root: PathBuf,
    plugin: PathBuf,
}

impl Project {
    /// The project of the plugin folder `plugin_dir` (as discovered: a
    /// folder of the plugins folder, not yet resolved).
    pub fn of(plugin_dir: &Path) -> anyhow::Result<Project> {
        let plugins = plugin_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let plugins = resolve(plugins)?;
        Ok(Project {
            root: plugins.parent().unwrap_or(&plugins).to_path_buf(),
            plugin: resolve(plugin_dir)?,
        })
    }

    fn contains(&self, path: &Path) -> bool {
        path.starts_with(&self.root) || path.starts_with(&self.plugin)
    }

    /// Refuses a `node_modules` in `dir` that leads out of the project (or
    /// nowhere): npm would install into it and run install scripts there.
    fn check_node_modules(&self, dir: &Path) -> anyhow::Result<()> {
        let modules = dir.join("node_modules");
        if std::fs::symlink_metadata(&modules).is_err() {
            return Ok(()); // none yet: npm makes a real folder
        }
        let Ok(target) = std::fs::canonicalize(&modules) else {
            bail!(
                "{} is a link that leads nowhere, and npm would install where it points: \
                 remove it (the build installs the dependencies in the plugin's folder)",
                modules.display()
            );
        };
        if !self.contains(&target) {
            bail!(
                "{} leads to {}, outside the project {}: npm would install into it and run \
                 install scripts there. Remove the link (the build installs the dependencies \
                 in the plugin's folder)",
                modules.display(),
                target.display(),
                self.root.display()
            );
        }
        Ok(())
    }
}

/// Runs `npm install` in the plugin's folder `dir` (resolved) when its
/// dependencies changed since the last install (or were never installed).
pub fn install_dependencies(
    dir: &Path,
    has_dependencies: bool,
    project: &Project,
) -> anyhow::Result<()> {
    // Checked even with nothing to install: the stamp is written through it,
    // and linked packages are found in it.
    project.check_node_modules(dir)?;
    if !has_dependencies {
        return Ok(());
    }
    let stamp = dir.join("node_modules").join(INSTALL_STAMP);
    if std::fs::read_to_string(&stamp).ok() == Some(dependencies_hash(dir)) {
        return Ok(());
    }
    tracing::info!("installing the npm dependencies of {}", dir.display());
    let mut install = npm();
    install
        .args(["install", "--no-audit", "--no-fund"])
        .current_dir(dir);
    run(install, &format!("`npm install` in {}", dir.display()))?;
    // npm may have written the lockfile: stamp what is there now.
    std::fs::write(&stamp, dependencies_hash(dir))
        .with_context(|| format!("writing {}", stamp.display()))
}

fn dependencies_hash(dir: &Path) -> String {
    let mut hash = Sha256::new();
    for file in ["package.json", "package-lock.json"] {
        hash.update(std::fs::read(dir.join(file)).unwrap_or_default());
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

/// A dependency linked from a local folder (`"file:../sdk-js"`, as plugins
/// inside the optech checkout have the SDK) is its source, not a package
/// built for publishing: if it was never installed there, install and build
/// it, so a fresh clone builds; but only inside the project.
pub fn build_linked_packages(dir: &Path, project: &Project) -> anyhow::Result<()> {
    let modules = dir.join("node_modules");
    let Ok(entries) = std::fs::read_dir(&modules) else {
        return Ok(());
    };
    let mut links = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('@') && path.is_dir() {
            links.extend(
                std::fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else {
            links.push(path);
        }
    }
    for link in links {
        let is_link = std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink());
        let Ok(target) = std::fs::canonicalize(&link) else {
            continue;
        };
        if !is_link || target.join("node_modules").exists() {
            continue;
        }
        let builds = std::fs::read_to_string(target.join("package.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .is_some_and(|doc| doc.pointer("/scripts/build").is_some());
        if !builds {
            continue;
        }
        if !project.contains(&target) {
            bail!(
                "{} links to {}, outside the project {}, which was never built; the build runs \
                 npm only inside the project: build it there first (`npm install && npm run \
                 build` in {}), or move it into the project",
                link.display(),
                target.display(),
                project.root.display(),
                target.display()
            );
        }
        project.check_node_modules(&target)?;
        tracing::info!(
            "installing and building the linked package in {}",
            target.display()
        );
        let mut install = npm();
        install
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(&target);
        run(install, &format!("`npm install` in {}", target.display()))?;
        let mut build = npm();
        build.args(["run", "build"]).current_dir(&target);
        run(build, &format!("`npm run build` in {}", target.display()))?;
    }
    Ok(())
}

fn resolve(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A project folder with a plugin folder `plugins/p` in it, and a folder
    /// beside the project (outside it): (root, project, plugin, outside).
    #[cfg(unix)]
    fn project_and_outside() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let project = root.path().join("project");
        let plugin = project.join("plugins/p");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(&plugin).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        (root, project, plugin, outside)
    }

    #[cfg(unix)]
    #[test]
    fn a_node_modules_linked_out_of_the_project_is_refused_before_npm_runs() {
        let (_root, _project, plugin, outside) = project_and_outside();
        std::fs::write(
            plugin.join("package.json"),
            r#"{"name": "p", "private": true, "dependencies": {"dep": "file:dep"}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(plugin.join("dep")).unwrap();
        std::fs::write(
            plugin.join("dep/package.json"),
            r#"{"name": "dep", "version": "1.0.0"}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(&outside, plugin.join("node_modules")).unwrap();
        let said = format!(
            "{:#}",
            install_dependencies(&plugin, true, &Project::of(&plugin).unwrap()).unwrap_err()
        );
        assert!(
            said.contains("node_modules") && said.contains("outside the project"),
            "{said}"
        );
        let written: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
        assert!(written.is_empty(), "npm wrote outside: {written:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_linked_package_outside_the_project_is_not_installed_or_built_there() {
        let (_root, _project, plugin, outside) = project_and_outside();
        let lib = outside.join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(
            lib.join("package.json"),
            r#"{"name": "lib", "version": "1.0.0", "scripts": {"build": "node -e \"require('fs').writeFileSync('built', '')\""}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(plugin.join("node_modules")).unwrap();
        std::os::unix::fs::symlink(&lib, plugin.join("node_modules/lib")).unwrap();
        let said = format!(
            "{:#}",
            build_linked_packages(&plugin, &Project::of(&plugin).unwrap()).unwrap_err()
        );
        assert!(
            said.contains("outside the project") && said.contains("npm run build"),
            "{said}"
        );
        assert!(!lib.join("built").exists(), "`npm run build` ran outside");
        assert!(
            !lib.join("package-lock.json").exists(),
            "`npm install` ran outside"
        );
    }

    #[cfg(unix)]
    #[test]
    fn node_modules_may_be_a_folder_or_lead_inside_the_project() {
        let (_root, project, plugin, outside) = project_and_outside();
        let check = |p: &Path| Project::of(p).unwrap().check_node_modules(p);
        check(&plugin).unwrap(); // none yet
        std::fs::create_dir_all(plugin.join("node_modules")).unwrap();
        check(&plugin).unwrap();
        std::fs::remove_dir(plugin.join("node_modules")).unwrap();
        std::fs::create_dir_all(project.join("shared_modules")).unwrap();
        std::os::unix::fs::symlink(project.join("shared_modules"), plugin.join("node_modules"))
            .unwrap();
        check(&plugin).unwrap();
        std::fs::remove_dir_all(project.join("shared_modules")).unwrap();
        let said = format!("{:#}", check(&plugin).unwrap_err());
        assert!(said.contains("leads nowhere"), "{said}");
        // A plugin folder that is itself a link elsewhere keeps its own node_modules.
        let real = outside.join("q");
        std::fs::create_dir_all(real.join("node_modules")).unwrap();
        let linked = project.join("plugins/q");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        let q = Project::of(&linked).unwrap();
        q.check_node_modules(&resolve(&linked).unwrap()).unwrap();
        assert_eq!(q.root, resolve(&project).unwrap());
    }
}
