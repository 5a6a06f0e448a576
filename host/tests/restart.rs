//! The broker promise across process deaths: the real `optech` binary answers
//! 202, is killed with SIGKILL before delivering, starts again, and every answer
//! arrives exactly once. And SIGTERM drains instead of dropping.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Receiver, build_plugins, start_process as start, testkit_dir};
use serde_json::json;

fn write_config(dir: &Path, sleep_timeout: &str) -> std::path::PathBuf {
    let path = dir.join("optech.toml");
    let text = format!(
        r#"[server]
        listen = "127.0.0.1:0"
        plugins_dir = {:?}
        data_dir = {:?}
        shutdown_grace = "10s"
        [keys]
        sleep = "tk"
        [plugins.tk]
        source = "testkit.wasm"
        mode = "async"
        timeout = "{sleep_timeout}"
        "#,
        testkit_dir().display().to_string(),
        dir.join("data").display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn post(client: &reqwest::Client, url: &str, link: &str, ms: u64) -> u16 {
    let body = json!({"link": link, "key": "sleep", "inputs": {"ms": ms.to_string()}}).to_string();
    common::post_signed(client, url, body)
        .await
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_accepted_before_a_sigkill_arrive_once_after_restart() {
    build_plugins().as_ref().unwrap();
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "10s");
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();

    let mut first = start(&config);
    let links: Vec<String> = (0..N)
        .map(|i| receiver.link(&format!("kill-{i}")))
        .collect();
    for link in &links {
        assert_eq!(post(&client, &first.url, link, 2000).await, 202);
    }
    first.child.kill().unwrap(); // SIGKILL: no chance to clean up.
    first.child.wait().unwrap();
    assert_eq!(
        receiver.count(),
        0,
        "delivered before the kill; the test proves nothing"
    );

    let restarted = Instant::now();
    let mut second = start(&config);
    receiver.wait_for(N, Duration::from_secs(30)).await;
    eprintln!(
        "{N} of {N} answers arrived {:?} after the restart",
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for link in &links {
        let got = receiver.to(link);
        assert_eq!(got.len(), 1, "{link} arrived {} times", got.len());
        assert_eq!(got[0].json(), json!({"data": {"ms": "2000"}}));
    }
    assert_eq!(receiver.count(), N);
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_handlers_finish_and_deliver() {
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "10s");
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();

    let mut process = start(&config);
    let link = receiver.link("term");
    assert_eq!(post(&client, &process.url, &link, 800).await, 202);
    let pid = process.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = process.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        receiver.to(&link).len(),
        1,
        "the running handler's answer was not delivered"
    );

    // Nothing is left open: a new start sends nothing again.
    let mut again = start(&config);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.count(), 1);
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}
