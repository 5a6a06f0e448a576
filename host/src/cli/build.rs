//! `optech build`: every plugin folder under the plugins directory, one at a
//! time, saying which (and in which language) and how long; the toolchain's own
//! output shows through, and one plugin's failure does not stop the others.

use std::path::Path;

use anyhow::bail;

use crate::build::{self, BuildDirs, PluginSource};
use crate::config::Config;

/// `optech build`: every plugin under the config's plugins folder, built
/// beside it, off the async runtime's threads.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let dir = config.server.plugins_dir.clone();
    tokio::task::spawn_blocking(move || build_all(&dir, &BuildDirs::beside(&dir))).await?
}

/// Builds every plugin under `plugins_dir`, printing progress on stderr.
pub fn build_all(plugins_dir: &Path, dirs: &BuildDirs) -> anyhow::Result<()> {
    let plugins = build::discover(plugins_dir)?;
    if plugins.is_empty() {
        bail!("{}", build::nothing_to_build(plugins_dir));
    }
    build_each(&plugins, plugins_dir, dirs)
}

/// Builds `plugins` one at a time into `plugins_dir`, printing progress on
/// stderr; one failure does not stop the others, and the error names them all.
pub fn build_each(
    plugins: &[PluginSource],
    plugins_dir: &Path,
    dirs: &BuildDirs,
) -> anyhow::Result<()> {
    let failed: Vec<&str> = plugins
        .iter()
        .filter(|plugin| !build_one(plugin, plugins_dir, dirs))
        .map(|plugin| plugin.name.as_str())
        .collect();
    failures(&failed, plugins.len())
}

/// Builds one plugin into `plugins_dir`, saying on stderr which, how long it
/// took or why it failed; whether it was built.
pub fn build_one(plugin: &PluginSource, plugins_dir: &Path, dirs: &BuildDirs) -> bool {
    eprintln!(
        "building plugin `{}` ({}, {})",
        plugin.name,
        plugin.language(),
        plugin.dir.display()
    );
    let started = std::time::Instant::now();
    match build::build(plugin, dirs, plugins_dir) {
        Ok(path) => {
            eprintln!(
                "built `{}` in {:.1}s -> {}",
                plugin.name,
                started.elapsed().as_secs_f64(),
                path.display()
            );
            true
        }
        Err(e) => {
            eprintln!("plugin `{}` failed to build: {e:#}", plugin.name);
            false
        }
    }
}

/// The error naming the plugins in `failed` of `of`, if any failed.
pub fn failures(failed: &[&str], of: usize) -> anyhow::Result<()> {
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} of {of} plugin(s) failed to build: {}",
            failed.len(),
            failed.join(", ")
        )
    }
}
