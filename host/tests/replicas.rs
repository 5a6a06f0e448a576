//! Several replicas on one PostgreSQL outbox: 3 real `optech serve`
//! processes, 300 async requests spread round-robin over them with a handler
//! that takes a second, one replica killed with SIGKILL while it holds about
//! 100 claims. Every answer must still arrive, signed; a duplicate is allowed
//! only for work the dead replica had claimed; its work must be finished by
//! the others within a lease and 5 seconds. And the same link sent to two
//! replicas at once runs once.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{Backend, Receiver, build_plugins, start_process_env, testkit_dir};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(3);
const REQUESTS: usize = 300;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("optech.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplugins_dir = {:?}\n\
             data_dir = {:?}\noutbox_lease = \"{}s\"\nshutdown_grace = \"1s\"\n\
             [keys]\nsleep = \"tk\"\n[plugins.tk]\nsource = \"testkit.wasm\"\nmode = \"async\"\n",
            testkit_dir().display().to_string(),
            dir.join("data").display().to_string(),
            LEASE.as_secs(),
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_work_is_finished_by_the_others() {
    let Some(Backend::Postgres(url)) = Backend::postgres().await else {
        return;
    };
    build_plugins().as_ref().unwrap();
    // A password in the URL (trust auth ignores it) that must never reach a log.
    let mut with_password = reqwest::Url::parse(&url).unwrap();
    with_password
        .set_password(Some("hunter2-never-logged"))
        .unwrap();
    let outbox_url = with_password.to_string();

    let work = tempfile::tempdir().unwrap();
    let mut replicas: Vec<common::Process> = (0..3)
        .map(|i| {
            let config = config(&work.path().join(format!("replica-{i}")));
            start_process_env(&config, "info", &[("OPTECH_OUTBOX_URL", &outbox_url)])
        })
        .collect();
    let receiver = Receiver::start().await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(400)
        .build()
        .unwrap();

    // 300 requests, round-robin, each handler sleeping 1 s.
    let mut accepted_by: HashMap<String, usize> = HashMap::new();
    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let link = receiver.link(&format!("r{i}"));
        let replica = i % 3;
        accepted_by.insert(link.clone(), replica);
        let (client, url) = (client.clone(), replicas[replica].url.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"link": link, "key": "sleep", "inputs": {"ms": "1000"}}).to_string();
            common::post_signed(&client, &url, body)
                .await
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 202);
    }
    // Replica 0 holds its ~100 claims, their handlers still sleeping: kill it.
    let held = replicas[0].plugin_health("tk").await["running"]
        .as_u64()
        .unwrap();
    replicas[0].child.kill().unwrap();
    let killed = Instant::now();
    replicas[0].child.wait().unwrap();
    let dead_links: Vec<&String> = accepted_by
        .iter()
        .filter(|(_, r)| **r == 0)
        .map(|(l, _)| l)
        .collect();
    let delivered_before_kill = dead_links
        .iter()
        .filter(|l| !receiver.to(l).is_empty())
        .count();

    // Every request gets its answer.
    common::wait_until(
        "every request delivered",
        LEASE + Duration::from_secs(20),
        || async { accepted_by.keys().all(|link| !receiver.to(link).is_empty()) },
    )
    .await;
    let recovered = dead_links
        .iter()
        .map(|l| receiver.to(l)[0].at)
        .max()
        .map(|last| last.duration_since(killed))
        .unwrap_or_default();
    let signer = optech_host::signature::Signer::new(common::SECRET.as_bytes(), None);
    let mut per_link: BTreeMap<&String, usize> = BTreeMap::new();
    for link in accepted_by.keys() {
        let deliveries = receiver.to(link);
        for delivery in &deliveries {
            assert_eq!(
                delivery.headers["x-optech-signature"].to_str().unwrap(),
                signer.sign(&delivery.body),
                "an unsigned delivery"
            );
            assert_eq!(delivery.json()["data"]["ms"], "1000");
        }
        per_link.insert(link, deliveries.len());
    }
    let lost = per_link.values().filter(|n| **n == 0).count();
    let duplicated: Vec<&&String> = per_link
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(l, _)| l)
        .collect();
    eprintln!(
        "replica test: {REQUESTS} requests over 3 replicas; replica 0 killed holding {held} running calls \
         ({} of its 100 delivered before the kill); delivered {}, lost {lost}, duplicated {} \
         (all from the dead replica: {}); its work finished {recovered:?} after the kill (lease {LEASE:?})",
        delivered_before_kill,
        per_link.len() - lost,
        duplicated.len(),
        duplicated.iter().all(|l| accepted_by[**l] == 0),
    );
    assert_eq!(lost, 0);
    assert!(
        duplicated.iter().all(|l| accepted_by[**l] == 0),
        "a duplicate of work the dead replica never held"
    );
    assert!(
        held >= 90,
        "replica 0 held only {held} calls at the kill: the test proves less"
    );
    assert!(
        recovered <= LEASE + Duration::from_secs(5),
        "recovered after {recovered:?}"
    );

    // The same link sent to two live replicas at once runs once.
    let twice = receiver.link("twice");
    let sends: Vec<_> = [1, 2]
        .into_iter()
        .map(|r| {
            let (client, url, link) = (client.clone(), replicas[r].url.clone(), twice.clone());
            tokio::spawn(async move {
                let body =
                    json!({"link": link, "key": "sleep", "inputs": {"ms": "100"}}).to_string();
                common::post_signed(&client, &url, body)
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for send in sends {
        assert_eq!(send.await.unwrap(), 202);
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    common::wait_until(
        "the twice-sent request is closed",
        Duration::from_secs(10),
        || async {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM optech_requests WHERE link = $1")
                    .bind(&twice)
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            state.as_deref() == Some("delivered")
        },
    )
    .await;
    assert_eq!(receiver.to(&twice).len(), 1, "a link sent twice ran twice");

    // The outbox's password never reached a log line.
    for replica in &replicas {
        for line in replica.lines.lock().unwrap().iter() {
            assert!(
                !line.contains("hunter2"),
                "the outbox password leaked: {line}"
            );
        }
    }
    // It is shown, without its password.
    assert!(replicas[1].log_contains("outbox: PostgreSQL at postgres://optech:***@127.0.0.1"));
}
