//! The broker promise across process deaths: the real `optech` binary answers
//! 202, is killed with SIGKILL before delivering (while its handlers run, or
//! once a result is recorded but its link not yet reached), starts again, and
//! every answer arrives exactly once, a recorded one without its handler
//! running again. And SIGTERM drains instead of dropping.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Receiver, build_plugins, start_process as start, testkit_dir};
use serde_json::json;

fn write_config(dir: &Path, sleep_timeout: &str) -> std::path::PathBuf {
    write_config_with(dir, sleep_timeout, "")
}

fn write_config_with(dir: &Path, sleep_timeout: &str, server: &str) -> std::path::PathBuf {
    let path = dir.join("optech.toml");
    let text = format!(
        r#"[server]
        {server}
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
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
    // Once every record is closed, nothing more can be sent.
    let data = dir.path().join("data");
    common::wait_until("every record closed", Duration::from_secs(10), || async {
        common::open_records(&data) == 0
    })
    .await;
    for link in &links {
        let got = receiver.to(link);
        assert_eq!(got.len(), 1, "{link} arrived {} times", got.len());
        assert_eq!(got[0].json(), json!({"data": {"ms": "2000"}}));
    }
    assert_eq!(receiver.count(), N);
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

/// The record of `link` in the SQLite outbox under `data`: its state, its
/// recorded result, and how many delivery attempts it made.
fn record(data: &Path, link: &str) -> Option<(String, Option<Vec<u8>>, i64)> {
    let db = rusqlite::Connection::open_with_flags(
        data.join("outbox.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    db.query_row(
        "SELECT state, result, attempts FROM requests WHERE link = ?1",
        [link],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_recorded_but_not_delivered_before_a_sigkill_is_delivered_once_without_rerunning()
{
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "10s");
    let client = reqwest::Client::new();
    // The link's port, with nothing listening on it yet: every POST is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let link = format!("http://127.0.0.1:{port}/ingest/answered");

    let mut first = start(&config);
    assert_eq!(post(&client, &first.url, &link, 10).await, 202);
    // Its result recorded and its link tried (and refused): killed now.
    common::wait_until(
        "the answer is recorded and its link tried",
        Duration::from_secs(10),
        || async {
            record(&data, &link)
                .is_some_and(|(state, _, attempts)| state == "answered" && attempts >= 1)
        },
    )
    .await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let (state, recorded, attempts) = record(&data, &link).unwrap();
    assert_eq!(state, "answered");
    let recorded = recorded.expect("a recorded result");

    // The link is up now; the host starts again.
    let receiver = Receiver::start_on(port).await;
    let restarted = Instant::now();
    let second = start(&config);
    receiver.wait_for(1, Duration::from_secs(30)).await;
    common::wait_until("the record is closed", Duration::from_secs(10), || async {
        common::open_records(&data) == 0
    })
    .await;
    let got = receiver.to(&link);
    eprintln!(
        "an answer recorded after {attempts} refused attempt(s), then SIGKILL: delivered {} time(s), \
         {:?} after the restart",
        got.len(),
        got.first().map(|d| d.at.duration_since(restarted))
    );
    assert_eq!(got.len(), 1, "delivered {} times", got.len());
    assert_eq!(
        String::from_utf8_lossy(&got[0].body),
        String::from_utf8_lossy(&recorded),
        "the body delivered is not the one recorded"
    );
    assert_eq!(record(&data, &link).unwrap().0, "delivered");
    // The handler did not run again: the new process made no call.
    assert_eq!(
        second.plugin_health("tk").await["calls"],
        0,
        "the handler ran again after the restart"
    );
    assert!(second.log_contains("re-delivering an answer recorded earlier"));
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

    // Nothing is left open, so a new start has nothing to send again.
    assert_eq!(common::open_records(&dir.path().join("data")), 0);
    let mut again = start(&config);
    assert_eq!(receiver.count(), 1);
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_over_ten_thousand_open_records_listens_at_once_and_resumes_within_its_caps() {
    build_plugins().as_ref().unwrap();
    const N: usize = 10_000;
    const CAP: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start().await;
    // An outbox as a crashed host leaves it: N accepted records, no results, no live owner.
    drop(
        optech_host::outbox::SqliteOutbox::open(&data)
            .await
            .unwrap(),
    );
    let mut db = rusqlite::Connection::open(data.join("outbox.sqlite3")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let tx = db.transaction().unwrap();
    for i in 0..N {
        // The oldest row is corrupt: it comes up in the first batch.
        let inputs = if i == 0 {
            "not json".to_string()
        } else {
            json!([["ms", "20"], ["n", i.to_string()]]).to_string()
        };
        tx.execute(
            "INSERT INTO requests (link, key, inputs, accepted_at, expires_at, state)
             VALUES (?1, 'sleep', ?2, ?3, ?4, 'accepted')",
            rusqlite::params![
                receiver.link(&format!("backlog-{i}")),
                inputs,
                now - 60_000 + i as i64,
                now + 600_000
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(db);

    let config = dir.path().join("optech.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
            listen = "127.0.0.1:0"
            admin_listen = "127.0.0.1:0"
            plugins_dir = {:?}
            data_dir = {:?}
            [keys]
            sleep = "tk"
            [plugins.tk]
            source = "testkit.wasm"
            mode = "async"
            max_in_flight = {CAP}
            "#,
            testkit_dir().display().to_string(),
            data.display().to_string(),
        ),
    )
    .unwrap();
    let spawned = Instant::now();
    let process = start(&config);
    let listening = spawned.elapsed();
    // It listens first and resumes after: when it says it listens, almost
    // the whole backlog is still open (a count, not a time, so a busy
    // machine cannot fail it).
    let open_when_listening = common::open_records(&data);
    eprintln!(
        "listening {listening:?} after the process started, over {N} open records \
         ({open_when_listening} still open then)"
    );
    assert!(
        open_when_listening + 500 >= N,
        "only {open_when_listening} of {N} open when it listened: it resumed first"
    );

    // While it resumes: never more than the plugin's cap at once, memory bounded.
    let pid = process.child.id();
    let sampling = Instant::now();
    let (mut most_running, mut most_rss) = (0, 0.0f64);
    while sampling.elapsed() < Duration::from_secs(4) {
        let running = process.plugin_health("tk").await["running"]
            .as_u64()
            .unwrap();
        most_running = most_running.max(running);
        most_rss = most_rss.max(common::process_stats(pid).0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, peak, _) = common::process_stats(pid);
    let delivered = receiver.count();
    eprintln!(
        "in 4 s of resuming: {delivered} delivered, at most {most_running} running (cap {CAP}), \
         RSS at most {most_rss:.1} MiB sampled, peak {peak:.1} MiB"
    );
    assert!(
        most_running <= CAP,
        "{most_running} calls ran at once over a cap of {CAP}"
    );
    assert!(most_running >= 1, "nothing was resumed");
    assert!(delivered > 0, "nothing was delivered");
    assert!(peak < 200.0, "peak RSS {peak:.1} MiB");
    // A live request meets the same caps: while resumed work fills the plugin,
    // it is refused with 503 `overloaded` rather than queued. (A slot freed
    // between two resumed calls may take one in; the backlog refills it at once.)
    let client = reqwest::Client::new();
    let mut refused = None;
    for n in 0..50 {
        let live = json!({"link": receiver.link(&format!("live-{n}")), "key": "sleep", "inputs": {"ms": "0"}});
        let answer = common::post_signed(&client, &process.url, live.to_string()).await;
        match answer.status().as_u16() {
            202 => continue,
            503 => {
                refused = Some(
                    serde_json::from_slice::<serde_json::Value>(&answer.bytes().await.unwrap())
                        .unwrap(),
                );
                break;
            }
            other => panic!("a live request got {other}"),
        }
    }
    let refused = refused.expect("50 live requests all found a free slot under a full backlog");
    assert_eq!(refused["error"]["code"], "overloaded", "{refused}");
    // The corrupt row was logged and skipped; the host kept going past it.
    assert!(
        process.log_contains("quarantined"),
        "the corrupt row was not reported"
    );
    let db = rusqlite::Connection::open(data.join("outbox.sqlite3")).unwrap();
    let quarantined: String = db
        .query_row(
            "SELECT state FROM requests WHERE link = ?1",
            [receiver.link("backlog-0")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(quarantined, "quarantined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_that_cannot_write_refuses_new_work_and_loses_nothing() {
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A 1 MiB outbox fills up while its handlers run; their results (which
    // echo 60 KB of inputs) then cannot be recorded.
    let config = write_config_with(dir.path(), "10s", "outbox_max_size = \"1MiB\"");
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();
    let mut process = start(&config);
    let pad = "x".repeat(60_000);
    let mut accepted = Vec::new();
    loop {
        let link = receiver.link(&format!("full-{}", accepted.len()));
        let body = json!({"link": link, "key": "sleep", "inputs": {"ms": "1500", "pad": pad}});
        let answer = common::post_signed(&client, &process.url, body.to_string()).await;
        match answer.status().as_u16() {
            202 => accepted.push(link),
            503 => {
                let error: serde_json::Value =
                    serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
                assert_eq!(error["error"]["code"], "store_unavailable", "{error}");
                break;
            }
            other => panic!("{other} while filling the outbox"),
        }
        assert!(
            accepted.len() < 40,
            "a 1 MiB outbox took 40 records of 60 KB"
        );
    }
    assert!(
        accepted.len() >= 5,
        "only {} accepted before full",
        accepted.len()
    );
    // Full: new work is refused at once, and the host says it is not ready.
    assert_eq!(
        post(&client, &process.url, &receiver.link("small"), 0).await,
        503
    );
    let admin = process.admin.clone().unwrap();
    assert_eq!(
        reqwest::get(format!("{admin}/readyz"))
            .await
            .unwrap()
            .status(),
        503
    );
    // The handlers finish; their results cannot be recorded, so nothing is sent.
    process
        .wait_for_log("recording the result failed", Duration::from_secs(10))
        .await;
    common::wait_until(
        "every handler finished",
        Duration::from_secs(10),
        || async { process.plugin_health("tk").await["running"] == 0 },
    )
    .await;
    assert_eq!(
        receiver.count(),
        0,
        "a result was sent before it was recorded"
    );

    // Stopped, then started with room: every accepted request arrives once.
    let pid = process.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(process.child.wait().unwrap().success());
    let config = write_config(dir.path(), "10s");
    let mut again = start(&config);
    let data = dir.path().join("data");
    common::wait_until("every record closed", Duration::from_secs(30), || async {
        common::open_records(&data) == 0
    })
    .await;
    for link in &accepted {
        assert_eq!(receiver.to(link).len(), 1, "{link}");
    }
    assert_eq!(receiver.count(), accepted.len());
    eprintln!(
        "a full outbox: {} accepted, then 503 and /readyz 503; 0 sent while results could not be \
         recorded; after a restart with room, {} delivered once each",
        accepted.len(),
        receiver.count()
    );
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}
