//! Hot reload under load: plugin files and the key mapping change while
//! requests flow; none fails, each answer comes wholly from one version, and
//! bad drops leave the last good version serving.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestHost, config_text, examples_dir, testkit_wasm};
use serde_json::{Value, json};

/// Version A is the echo example: it answers `{"version": "echo"}` to our inputs.
/// Version B is the testkit: its `version` behaviour answers `{"version": "1"}`.
fn version_a() -> PathBuf {
    examples_dir().join("echo.wasm")
}

fn answer_of(wasm: &Path) -> Value {
    if wasm == version_a() {
        json!({"version": "echo"})
    } else {
        json!({"version": "1"})
    }
}

/// Drops a file the way the README says to: copy beside, then rename.
fn drop_atomically(from: &Path, to: &Path) {
    let staging = to.with_extension("wasm.partial");
    std::fs::copy(from, &staging).unwrap();
    std::fs::rename(&staging, to).unwrap();
}

async fn setup(keys: &str) -> (TestHost, tempfile::TempDir, PathBuf) {
    let plugins = tempfile::tempdir().unwrap();
    common::build_plugins().as_ref().unwrap();
    let swap = plugins.path().join("swap.wasm");
    std::fs::copy(version_a(), &swap).unwrap();
    let host = TestHost::start(plugins.path(), keys).await;
    (host, plugins, swap)
}

async fn version(host: &TestHost, key: &str) -> (u16, Option<Value>) {
    let answer = host.ask(key, json!({"version": "echo"})).await;
    let data = (answer.status == 200).then(|| answer.json()["data"].clone());
    (answer.status, data)
}

/// Polls until `key` answers `want` (a data value, or a status when `None`).
async fn wait_until(host: &TestHost, key: &str, want: Option<&Value>, status: u16) -> Duration {
    let started = Instant::now();
    loop {
        let (got_status, data) = version(host, key).await;
        if got_status == status && data.as_ref() == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{key} never became {want:?}/{status}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_and_mapping_edits_under_load_fail_no_request() {
    let (host, plugins, swap) = setup("[keys]\nversion = \"swap\"\n").await;
    let host = Arc::new(host);
    let allowed = [answer_of(&version_a()), answer_of(&testkit_wasm())];

    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (host, stop, allowed) = (host.clone(), stop.clone(), allowed.clone());
            tokio::spawn(async move {
                let (mut served, mut failed) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match version(&host, "version").await {
                        (200, Some(data)) if allowed.contains(&data) => served += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (served, failed)
            })
        })
        .collect();

    let mut latencies = Vec::new();
    for i in 0..50 {
        let next = if i % 2 == 0 {
            testkit_wasm()
        } else {
            version_a()
        };
        drop_atomically(&next, &swap);
        latencies.push(wait_until(&host, "version", Some(&answer_of(&next)), 200).await);
    }

    let config_path = host.dir.path().join("optech.toml");
    for i in 0..10 {
        let keys = if i % 2 == 0 {
            "[keys]\nversion = \"swap\"\nextra = \"swap\"\n"
        } else {
            "[keys]\nversion = \"swap\"\n"
        };
        let staging = config_path.with_extension("toml.partial");
        std::fs::write(&staging, config_text(plugins.path(), keys)).unwrap();
        std::fs::rename(&staging, &config_path).unwrap();
        if i % 2 == 0 {
            // The file currently holds version A (50 swaps ended on it).
            wait_until(&host, "extra", Some(&answer_of(&version_a())), 200).await;
        } else {
            wait_until(&host, "extra", None, 404).await;
        }
    }

    stop.store(true, Ordering::Relaxed);
    let (mut served, mut failed) = (0, Vec::new());
    for task in load {
        let (s, f) = task.await.unwrap();
        served += s;
        failed.extend(f);
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let worst = latencies[latencies.len() - 1];
    eprintln!(
        "50 swaps + 10 mapping edits: {served} requests served under load, {} failed; \
         rename -> first new answer: median {median:?}, worst {worst:?}",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed requests: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(served > 100, "the load did not run ({served})");
}

async fn problems(host: &TestHost) -> Vec<String> {
    let answer = host
        .send(host.client.get(format!("{}/healthz", host.admin_url())))
        .await;
    let json = answer.json();
    json["reload"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn bad_drops_leave_the_last_good_version_serving() {
    let (host, plugins, swap) = setup("[keys]\nversion = \"swap\"\n").await;
    let a = answer_of(&version_a());
    let b = answer_of(&testkit_wasm());
    // Waits until a reload reports a problem mentioning `needle`.
    let reported = |needle: &'static str| {
        let host = &host;
        async move {
            common::wait_until(
                &format!("a reload problem about {needle:?}"),
                Duration::from_secs(10),
                || async { problems(host).await.iter().any(|p| p.contains(needle)) },
            )
            .await
        }
    };

    // A slow, plain copy: the first half, a pause longer than the debounce, then the rest.
    let bytes = std::fs::read(testkit_wasm()).unwrap();
    std::fs::write(&swap, &bytes[..bytes.len() / 2]).unwrap();
    reported("swap.wasm").await;
    assert_eq!(
        version(&host, "version").await,
        (200, Some(a.clone())),
        "a half-written file replaced the old version"
    );
    std::fs::write(&swap, &bytes).unwrap();
    wait_until(&host, "version", Some(&b), 200).await;
    assert!(problems(&host).await.is_empty());

    // Not a component at all.
    std::fs::write(&swap, b"this is not wasm").unwrap();
    reported("not a WebAssembly component").await;
    assert_eq!(version(&host, "version").await, (200, Some(b.clone())));

    // A component that does not match the WIT (exports nothing).
    std::fs::write(&swap, b"\0asm\x0d\0\x01\0").unwrap();
    reported("handle").await;
    assert_eq!(version(&host, "version").await, (200, Some(b.clone())));

    // The file removed while the config still maps it: the last good version stays.
    std::fs::remove_file(&swap).unwrap();
    reported("cannot read").await;
    assert_eq!(version(&host, "version").await, (200, Some(b.clone())));

    // A config with an error: the old mapping keeps routing.
    let config_path = host.dir.path().join("optech.toml");
    std::fs::write(
        &config_path,
        config_text(
            plugins.path(),
            "[keys]\nversion = \"swap\"\n[plugins.swap]\ntimeout = \"never\"\n",
        ),
    )
    .unwrap();
    reported("plugins.swap.timeout").await;
    assert_eq!(version(&host, "version").await, (200, Some(b.clone())));

    // A good config without the key: it stops routing; the plugin's problem goes away with it.
    std::fs::write(
        &config_path,
        config_text(plugins.path(), "[keys]\nother = \"swap2\"\n"),
    )
    .unwrap();
    wait_until(&host, "version", None, 404).await;
    let answer = host
        .send(host.client.get(format!("{}/healthz", host.admin_url())))
        .await;
    assert!(answer.json()["reload"]["last_error"]["message"].is_string());
}
