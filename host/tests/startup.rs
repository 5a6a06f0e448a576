//! Start-up refuses bad configs and bad plugins with a message naming the file,
//! the plugin and the problem; the CLI refuses to serve without a secret.

mod common;

use std::process::Command;

use common::TestHost;

async fn start_error(files: &[(&str, &[u8])], rest: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    match TestHost::try_start(dir.path(), rest, None).await {
        Ok(_) => panic!("the host started"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_missing_plugin_file_is_named() {
    let message = start_error(&[], "[keys]\nk = \"ghost\"\n").await;
    assert!(
        message.contains("plugin `ghost`") && message.contains("ghost.wasm"),
        "{message}"
    );
}

#[tokio::test]
async fn garbage_and_core_modules_are_not_components() {
    let message = start_error(&[("junk.wasm", b"hello, world")], "[keys]\nk = \"junk\"\n").await;
    assert!(
        message.contains("plugin `junk`") && message.contains("not a WebAssembly component"),
        "{message}"
    );
    let core: &[u8] = b"\0asm\x01\0\0\0";
    let message = start_error(&[("core.wasm", core)], "[keys]\nk = \"core\"\n").await;
    assert!(message.contains("core wasm module"), "{message}");
}

#[tokio::test]
async fn a_component_without_handle_does_not_match_the_wit() {
    // The smallest valid component: it exports nothing.
    let empty: &[u8] = b"\0asm\x0d\0\x01\0";
    let message = start_error(&[("empty.wasm", empty)], "[keys]\nk = \"empty\"\n").await;
    assert!(
        message.contains("plugin `empty`") && message.contains("handle"),
        "{message}"
    );
}

#[tokio::test]
async fn every_bad_plugin_is_listed() {
    let message = start_error(
        &[("junk.wasm", b"x")],
        "[keys]\na = \"junk\"\nb = \"ghost\"\n",
    )
    .await;
    assert!(
        message.contains("`junk`") && message.contains("`ghost`"),
        "{message}"
    );
}

fn optech(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_optech"))
        .args(args)
        .current_dir(dir)
        .env_remove("OPTECH_CLIENT_SECRET")
        .env_remove("OPTECH_CLIENT_SECRET_PREVIOUS")
        .output()
        .expect("running optech")
}

#[test]
fn serve_refuses_without_a_secret_and_says_how_to_set_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("optech.toml"), "[keys]\n").unwrap();
    let out = optech(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OPTECH_CLIENT_SECRET is not set") && stderr.contains(".env"),
        "{stderr}"
    );
}

#[test]
fn serve_reads_the_secret_from_dotenv_and_reports_config_errors_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "OPTECH_CLIENT_SECRET=from-dotenv\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("optech.toml"),
        "[keys]\nk = \"p\"\n[plugins.p]\ntimeout = \"forever\"\n",
    )
    .unwrap();
    let out = optech(dir.path(), &["serve"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("optech.toml") && stderr.contains("plugins.p.timeout"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("from-dotenv"),
        "the secret leaked: {stderr}"
    );
}

#[tokio::test]
async fn compiled_plugins_are_cached_on_disk_and_a_bad_entry_is_recompiled() {
    let rest = "[keys]\necho = \"echo\"\n";
    let first = TestHost::start(&common::examples_dir(), rest).await;
    let compiled = first.dir.path().join("data/compiled");
    // One compiled component, beside Cranelift's function cache (`functions/`).
    let entries: Vec<_> = std::fs::read_dir(&compiled)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "functions"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].extension().is_some_and(|e| e == "cwasm"));
    assert!(compiled.join("functions").is_dir());
    first.host.shutdown().await.unwrap();

    // A second host on the same data directory loads the cached code and serves.
    let config = optech_host::config::Config::load(&first.dir.path().join("optech.toml")).unwrap();
    let start = |config: optech_host::config::Config| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let signer = optech_host::signature::Signer::new(common::SECRET.as_bytes(), None);
        optech_host::Host::start(&config, optech_host::Identity::new(signer, "id"), listener)
            .await
            .unwrap()
    };
    let second = start(config.clone()).await;
    let body = r#"{"key":"echo","inputs":{"a":"1"}}"#;
    let post = |addr: std::net::SocketAddr| async move {
        let url = format!("http://{addr}/");
        common::post_signed(&reqwest::Client::new(), &url, body.to_string())
            .await
            .status()
            .as_u16()
    };
    assert_eq!(post(second.addr()).await, 200);
    second.shutdown().await.unwrap();

    // A damaged entry is ignored and replaced, never trusted.
    std::fs::write(&entries[0], b"garbage").unwrap();
    let third = start(config).await;
    assert_eq!(post(third.addr()).await, 200);
    assert!(
        std::fs::read(&entries[0]).unwrap().len() > 1000,
        "the bad entry was not rewritten"
    );
}

#[test]
fn an_admin_port_already_taken_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("optech.toml"), "[keys]\n").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_optech"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", &addr])
        .current_dir(dir.path())
        .env("OPTECH_CLIENT_SECRET", "s")
        .output()
        .expect("running optech");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr)
            && stderr.contains("admin listener")
            && stderr.contains("admin_listen"),
        "{stderr}"
    );
}

#[test]
fn the_admin_listener_can_pick_a_free_port_or_be_turned_off() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("optech.toml"), "[keys]\n").unwrap();
    for (flag, want) in [
        ("127.0.0.1:0", "admin listener on http://127.0.0.1:"),
        ("", "admin listener is off"),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_optech"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", flag])
            .current_dir(dir.path())
            .env("OPTECH_CLIENT_SECRET", "s")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("running optech");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines
            .map_while(Result::ok)
            .find(|l| l.contains("admin listener"))
            .expect("a line about the admin listener");
        let _ = child.kill();
        let _ = child.wait();
        assert!(line.contains(want), "{line}");
        if let Some(rest) = line.split("admin listener on http://").nth(1) {
            let port: u16 = rest
                .split(|c: char| !c.is_ascii_digit() && c != '.' && c != ':')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .expect("a port");
            assert_ne!(port, 0, "{line}");
        }
    }
}
