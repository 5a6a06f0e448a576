//! `optech dev` as a new user runs it, with no secret set: a secret made up
//! for the run and kept where `optech send` finds it, a public listener that
//! answers only to this machine's address meanwhile, a plain log when stdout
//! is not a terminal, and where the console is.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use optech_host::signature::Signer;

const BODY: &str = r#"{"key":"echo","inputs":{"hello":"world"}}"#;

/// `optech dev` in `dir`, as a user's shell would start it: no secret, no
/// NO_COLOR, stdout to a pipe.
fn start_dev(dir: &Path) -> (std::process::Child, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_optech"))
        .args(["dev", "--config", "optech.toml"])
        .current_dir(dir)
        .env_remove("OPTECH_CLIENT_SECRET")
        .env_remove("OPTECH_CLIENT_SECRET_PREVIOUS")
        .env_remove("OPTECH_CLIENT_ID")
        .env_remove("NO_COLOR")
        .env("OPTECH_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
    }
    (child, lines)
}

fn find(lines: &Mutex<Vec<String>>, after: &str) -> Option<String> {
    lines
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| l.split(after).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|s| s.trim_end_matches('/').to_string())
}

async fn post(url: &str, secret: &str, host: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header(
            "x-optech-signature",
            Signer::new(secret.as_bytes(), None).sign(BODY.as_bytes()),
        )
        .body(BODY);
    if let Some(host) = host {
        request = request.header("host", host);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_without_a_secret_makes_one_up_and_answers_only_this_machine() {
    common::build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(
        common::testkit_wasm(),
        dir.path().join("plugins/testkit.wasm"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("optech.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [keys]\necho = \"testkit\"\n[plugins.testkit]\nsource = \"testkit.wasm\"\n",
    )
    .unwrap();
    let (mut child, lines) = start_dev(dir.path());
    common::wait_until(
        "optech dev says where its console is",
        Duration::from_secs(60),
        || {
            let found = find(&lines, "Console: ").is_some();
            async move { found }
        },
    )
    .await;
    let url = find(&lines, "optech listening on ").expect("the listening line");
    let console = find(&lines, "Console: ").unwrap();
    let shown = lines.lock().unwrap().join("\n");
    assert!(
        !shown.contains('\u{1b}'),
        "colour codes in a log that is not a terminal:\n{shown}"
    );
    let page = reqwest::get(format!("{console}/")).await.unwrap();
    assert_eq!(page.status(), 200, "the console is where it says");

    let path = dir.path().join("data").join("dev-secret");
    let secret = std::fs::read_to_string(&path).expect("the secret is kept for `optech send`");
    assert!(secret.len() >= 32, "{secret}");
    assert!(!shown.contains(&secret), "the secret is not printed");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner-only: {mode:o}");
    }

    assert_eq!(post(&url, &secret, None).await.0, 200);
    assert_eq!(
        post(&url, "optech-dev-secret", None).await.0,
        401,
        "the old fixed dev secret signs nothing"
    );
    for host in ["localhost", "[::1]:8080", "127.0.0.1"] {
        assert_eq!(post(&url, &secret, Some(host)).await.0, 200, "{host}");
    }
    // A page on a DNS name rebound to 127.0.0.1 sends its own name.
    let (status, body) = post(&url, &secret, Some("rebind.example:8080")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("host_not_allowed"), "{body}");

    // `optech send` finds the secret without being told.
    let sent = Command::new(env!("CARGO_BIN_EXE_optech"))
        .args(["send", "echo", "hello=world", "--url", &url])
        .current_dir(dir.path())
        .env_remove("OPTECH_CLIENT_SECRET")
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&sent.stdout),
        String::from_utf8_lossy(&sent.stderr)
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// With the platform's secret set (as `serve` always has, and `dev` when it
/// is set), any `Host` is answered, as a tunnel or a load balancer needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_secret_answers_any_host() {
    common::build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(
        dir.path(),
        "[keys]\necho = \"tk\"\n[plugins.tk]\nsource = \"testkit.wasm\"\n",
    );
    let process = common::start_process(&config);
    let (status, _) = post(&process.url, common::SECRET, Some("tunnel.example.com")).await;
    assert_eq!(status, 200);
    assert!(!dir.path().join("data").join("dev-secret").exists());
}
