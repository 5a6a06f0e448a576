//! Where the optech checkout holding a folder keeps an SDK, if one does: a
//! plugin made inside the repository (the examples, the tests) depends on the
//! SDK beside it; anywhere else on its published version. Shared by the Rust
//! and TypeScript scaffolds of `optech new`.

use std::path::Path;

use anyhow::Context as _;

/// The relative path from `dir` to the SDK folder `sdk` of the optech checkout
/// holding `dir` (its `manifest` names the SDK by `marker`), if one does.
pub(super) fn sdk_in_checkout(
    dir: &Path,
    sdk: &str,
    manifest: &str,
    marker: &str,
) -> anyhow::Result<Option<String>> {
    let dir = std::path::absolute(dir).context("resolving the plugin's folder")?;
    for ancestor in dir.ancestors().skip(1) {
        let is_sdk = std::fs::read_to_string(ancestor.join(sdk).join(manifest))
            .is_ok_and(|text| text.contains(marker))
            && ancestor.join("wit/plugin.wit").is_file();
        if is_sdk {
            let depth = dir
                .strip_prefix(ancestor)
                .map(|rest| rest.components().count())
                .unwrap_or(0);
            return Ok(Some(format!("{}{sdk}", "../".repeat(depth))));
        }
    }
    Ok(None)
}
