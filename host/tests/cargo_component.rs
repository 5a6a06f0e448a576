//! The second build path the README documents: `cargo component build`, which
//! compiles for wasm32-wasip1 and adapts the module into a component. The
//! test-only plugin is built that way and served by a real host.
//!
//! It needs cargo-component. Without it the test says so and passes, unless
//! `OPTECH_REQUIRE_CARGO_COMPONENT` is set: `.ci/run` installs the tool and sets
//! it, so CI cannot skip this.

mod common;

use std::path::Path;
use std::process::Command;

use common::{TestHost, testkit_dir};
use serde_json::json;

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn cargo_component_installed() -> bool {
    Command::new(cargo())
        .args(["component", "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::test]
async fn a_plugin_built_with_cargo_component_runs_in_the_host() {
    if !cargo_component_installed() {
        assert!(
            std::env::var_os("OPTECH_REQUIRE_CARGO_COMPONENT").is_none(),
            "OPTECH_REQUIRE_CARGO_COMPONENT is set but `cargo component` is not installed"
        );
        eprintln!(
            "skipped: cargo-component is not installed (cargo install cargo-component --locked)"
        );
        return;
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cargo-component");
    let manifest = testkit_dir().join("testkit/Cargo.toml");
    let status = Command::new(cargo())
        .args(["component", "build", "--release", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("running cargo component build");
    assert!(status.success(), "cargo component build failed: {status}");

    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        target.join("wasm32-wasip1/release/testkit.wasm"),
        plugins.path().join("testkit.wasm"),
    )
    .unwrap();
    let config = "[keys]\necho = \"testkit\"\nconfig = \"testkit\"\npanic = \"testkit\"\n\
                  [plugins.testkit.config]\nregion = \"eu\"\n";
    let host = TestHost::start(plugins.path(), config).await;

    let answer = host.ask("echo", json!({"hello": "world"})).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!({"data": {"hello": "world"}}));
    let answer = host.ask("config", json!({"name": "region"})).await;
    assert_eq!(answer.json(), json!({"data": {"value": "eu"}}));
    // The preview1 adapter's path for a panic still ends in a clean trap.
    let answer = host.ask("panic", json!({})).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (500, "plugin_trapped")
    );
}
