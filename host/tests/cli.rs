//! The author's first ten minutes, with the real `optech` binary: `new`, its
//! unit tests, `build`, `send` against `serve` (sync and async), `dev` with a
//! crate created while it runs, `check`; and a crate made outside the
//! repository, built against the packaged SDK.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{CLIENT_ID, SECRET};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `optech ARGS` run in `dir` with the test credentials.
fn optech_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_optech"));
    command
        .args(args)
        .current_dir(dir)
        .env("OPTECH_CLIENT_SECRET", SECRET)
        .env("OPTECH_CLIENT_ID", CLIENT_ID)
        .env("NO_COLOR", "1");
    command
}

fn optech(dir: &Path, args: &[&str]) -> Output {
    optech_command(dir, args).output().expect("running optech")
}

/// [`optech`] with `input` on its stdin.
fn optech_with_stdin(dir: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write as _;
    let mut child = optech_command(dir, args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running optech");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A project folder inside this checkout (so `optech new` finds the SDK by path).
fn project() -> tempfile::TempDir {
    let parent = workspace().join("target/cli-tests");
    std::fs::create_dir_all(&parent).unwrap();
    let dir = tempfile::tempdir_in(parent).unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::write(
        dir.path().join("optech.toml"),
        "# a project made by the test\n[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[keys]\n",
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_build_and_send_for_a_sync_and_an_async_plugin() {
    let project = project();
    let dir = project.path();

    let out = optech(dir, &["new", "demo"]);
    assert!(out.status.success(), "{}", text(&out));
    let config = std::fs::read_to_string(dir.join("optech.toml")).unwrap();
    assert!(config.contains("# a project made by the test"), "{config}");
    assert!(config.contains("demo = \"demo\""), "{config}");
    let manifest = std::fs::read_to_string(dir.join("plugins/demo/Cargo.toml")).unwrap();
    assert!(manifest.contains("path = \""), "{manifest}");

    // Its unit tests run on the build machine with a plain `cargo test`.
    let tests = Command::new(cargo())
        .args(["test", "--quiet"])
        .current_dir(dir.join("plugins/demo"))
        .env("CARGO_TARGET_DIR", dir.join("target/host"))
        .output()
        .unwrap();
    assert!(tests.status.success(), "{}", text(&tests));

    let out = optech(dir, &["build"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("building plugin `demo`") && said.contains("built `demo` in"),
        "{said}"
    );
    assert!(dir.join("plugins/demo.wasm").is_file());

    for mode in ["sync", "async"] {
        std::fs::write(
            dir.join("optech.toml"),
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[keys]\ndemo = \"demo\"\n[plugins.demo]\nmode = \"{mode}\"\n"
            ),
        )
        .unwrap();
        let process = common::start_process(&dir.join("optech.toml"));
        let out = optech(dir, &["send", "demo", "name=x", "--url", &process.url]);
        assert!(out.status.success(), "{mode}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(answer["data"]["message"], "hello, x!", "{mode}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = if mode == "sync" {
            "200 OK in"
        } else {
            "202 Accepted in"
        };
        assert!(
            stderr.contains(expected) && stderr.contains("verified"),
            "{mode}: {stderr}"
        );

        // A refusal is reported and is not a success.
        let out = optech(dir, &["send", "demo", "--url", &process.url]);
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("invalid_input"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_and_builds_a_crate_created_while_it_runs() {
    let project = project();
    let dir = project.path();
    let out = optech(dir, &["new", "demo"]);
    assert!(out.status.success(), "{}", text(&out));
    // A plugin folder that no key maps to: the config as it was before it.
    let config = std::fs::read_to_string(dir.join("optech.toml")).unwrap();
    let out = optech(dir, &["new", "unmapped"]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(dir.join("optech.toml"), config).unwrap();
    // `optech dev` builds the crate a key maps to before it listens, and the
    // other after, in the background.
    let dev = common::start_dev(&dir.join("optech.toml"));
    assert!(dir.join("plugins/demo.wasm").is_file());

    // Inputs from a JSON file, and from stdin.
    std::fs::write(dir.join("inputs.json"), r#"{"name": "Ada"}"#).unwrap();
    let url = dev.url.as_str();
    let out = optech(
        dir,
        &["send", "demo", "--inputs-json", "inputs.json", "--url", url],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello, Ada!"));
    let out = optech_with_stdin(
        dir,
        &["send", "demo", "--inputs-json", "-", "--url", url],
        r#"{"name": "Grace"}"#,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello, Grace!"));
    common::wait_until(
        "the plugin no key maps to is built",
        Duration::from_secs(300),
        || async { dir.join("plugins/unmapped.wasm").is_file() },
    )
    .await;

    // A crate made while it runs is built and served, without a restart.
    let out = optech(dir, &["new", "second"]);
    assert!(out.status.success(), "{}", text(&out));
    dev.wait_for_log("new plugin; building it", Duration::from_secs(30))
        .await;
    common::wait_until(
        "the new crate is built",
        Duration::from_secs(300),
        || async {
            dev.lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("built ") && l.contains("second.wasm"))
        },
    )
    .await;
    common::wait_until(
        "the new crate's key answers",
        Duration::from_secs(30),
        || async {
            let out = optech(dir, &["send", "second", "name=Lin", "--url", url]);
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("hello, Lin!")
        },
    )
    .await;
}

#[test]
fn check_lists_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // `echo` is mapped by no key: that is said, and so are its own problems.
    std::fs::write(
        dir.path().join("optech.toml"),
        "[keys]\na = \"ghost\"\nb = \"slow\"\n\
         [plugins.slow]\ntimeout = \"forever\"\n\
         [plugins.slow.config]\ntoken = { env = \"CHECK_TEST_UNSET_TOKEN\" }\n\
         [plugins.echo]\nmode = \"sometimes\"\ntimeout = \"-1s\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_optech"))
        .args(["check"])
        .current_dir(dir.path())
        .env_remove("CHECK_TEST_UNSET_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "plugins.slow.timeout",
        "plugins.slow.config.token",
        "CHECK_TEST_UNSET_TOKEN",
        "plugin `ghost`",
        "ghost.wasm",
        "plugins.echo: no key in [keys] maps to this plugin",
        "plugins.echo.mode: \"sometimes\" is not a mode",
        "plugins.echo.timeout",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in {stderr}");
    }
    assert!(stderr.contains("7 problem(s)"), "{stderr}");

    // A good config passes.
    common::build_plugins().as_ref().unwrap();
    std::fs::write(
        dir.path().join("optech.toml"),
        format!(
            "[server]\nplugins_dir = {:?}\n[keys]\necho = \"echo\"\n",
            common::examples_dir().display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_optech"))
        .args(["check"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("warning"), "{}", text(&out));

    // An admin listener beyond loopback needs a token: without one it is a
    // problem (serve would not start), with one the check passes.
    let exposed = |token: &str| {
        format!(
            "[server]\nplugins_dir = {:?}\nadmin_listen = \"0.0.0.0:9091\"\n{token}[keys]\necho = \"echo\"\n",
            common::examples_dir().display().to_string()
        )
    };
    for (token, passes) in [
        ("", false),
        ("admin_token = { env = \"CHECK_TEST_ADMIN_TOKEN\" }\n", true),
    ] {
        std::fs::write(dir.path().join("optech.toml"), exposed(token)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_optech"))
            .args(["check"])
            .current_dir(dir.path())
            .env("CHECK_TEST_ADMIN_TOKEN", "a-long-enough-admin-token")
            .output()
            .unwrap();
        assert_eq!(out.status.success(), passes, "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.contains("server.admin_listen") && stderr.contains("admin_token"),
            !passes,
            "{stderr}"
        );
    }
}

#[test]
fn a_crate_made_outside_the_repository_builds_against_the_packaged_sdk() {
    let work = tempfile::tempdir().unwrap();
    // What would be published: `cargo package`, unpacked.
    let package = Command::new(cargo())
        .args([
            "package",
            "-p",
            "optech-sdk",
            "--allow-dirty",
            "--no-verify",
            "--target-dir",
        ])
        .arg(work.path().join("package-target"))
        .current_dir(workspace())
        .output()
        .unwrap();
    assert!(package.status.success(), "{}", text(&package));
    let crate_file = std::fs::read_dir(work.path().join("package-target/package"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "crate"))
        .expect("a .crate file");
    let unpacked = work.path().join("sdk");
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = Command::new("tar")
        .arg("xzf")
        .arg(&crate_file)
        .arg("-C")
        .arg(&unpacked)
        .arg("--strip-components=1")
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", text(&tar));
    assert!(
        unpacked.join("wit/plugin.wit").is_file(),
        "the package lacks its WIT"
    );

    let plugin = work.path().join("elsewhere/greeter");
    let out = optech(
        work.path(),
        &["new", "greeter", "--dir", plugin.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let manifest_path = plugin.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let version = format!("optech-sdk = \"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(manifest.contains(&version), "{manifest}");
    // Not on crates.io yet: point the version at the package.
    std::fs::write(
        &manifest_path,
        format!(
            "{manifest}\n[patch.crates-io]\noptech-sdk = {{ path = {:?} }}\n",
            unpacked.display().to_string()
        ),
    )
    .unwrap();
    optech_host::build::rust::ensure_target().unwrap();
    for args in [
        &["build", "--release", "--target", "wasm32-wasip2", "--quiet"][..],
        &["test", "--quiet"][..],
    ] {
        let out = Command::new(cargo())
            .args(args)
            .current_dir(&plugin)
            .env("CARGO_TARGET_DIR", work.path().join("target"))
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo {args:?}: {}", text(&out));
    }
    assert!(
        work.path()
            .join("target/wasm32-wasip2/release/greeter.wasm")
            .is_file()
    );
}
