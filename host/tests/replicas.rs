//! Several replicas on one PostgreSQL outbox, as real `optech serve`
//! processes, under the faults a deployment meets:
//! - one of 3 replicas killed with SIGKILL while it holds about 100 running
//!   claims: every answer arrives once, signed, the dead replica's within
//!   [`RECOVERY`] of the kill; the same link sent to two replicas at once runs
//!   once;
//! - the database crashed for twice the lease while 2 replicas hold 60
//!   requests in flight, then started again: 503s and a 503 `/readyz` while it
//!   is down, nothing delivered while it is down, both replicas accept again
//!   within 5 s of its restart, and every accepted request is delivered
//!   exactly once;
//! - a replica paused (SIGSTOP) for twice the lease while it holds work, then
//!   resumed: the other finishes its work, and once the resumed one has come
//!   to each of its held deliveries and declined it, it has sent nothing twice.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{
    Backend, PrivateCluster, Receiver, build_plugins, fresh_database, start_process_env,
    testkit_dir,
};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(3);
const REQUESTS: usize = 300;
/// How long each handler of the kill test sleeps.
const HANDLER: Duration = Duration::from_secs(3);
/// The kill test's bound, from the kill to the dead replica's last answer
/// delivered: its claims lapse within a lease of the kill (renewed every
/// quarter lease until then), another replica claims them at its next poll (a
/// tenth of the lease) and runs each handler again, whole; 2 s more cover the
/// poll and making, running and delivering 100 instances on a busy 2-core
/// machine (measured: 6.2 s in all, about 0.2 s of it not waiting on a clock).
const RECOVERY: Duration = LEASE
    .saturating_add(HANDLER)
    .saturating_add(Duration::from_secs(2));

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("optech.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplugins_dir = {:?}\n\
             data_dir = {:?}\noutbox_lease = \"{}s\"\nshutdown_grace = \"1s\"\n\
             [keys]\nsleep = \"tk\"\necho = \"quick\"\n[plugins.tk]\nsource = \"testkit.wasm\"\nmode = \"async\"\n\
             [plugins.quick]\nsource = \"testkit.wasm\"\nmode = \"auto\"\n",
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

    // 300 requests, round-robin, each handler sleeping HANDLER: the kill
    // comes while every handler of replica 0 still runs.
    let mut accepted_by: HashMap<String, usize> = HashMap::new();
    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let link = receiver.link(&format!("r{i}"));
        let replica = i % 3;
        accepted_by.insert(link.clone(), replica);
        let (client, url) = (client.clone(), replicas[replica].url.clone());
        tasks.push(tokio::spawn(async move {
            let ms = HANDLER.as_millis().to_string();
            let body = json!({"link": link, "key": "sleep", "inputs": {"ms": ms}}).to_string();
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
            assert_eq!(
                delivery.json()["data"]["ms"],
                HANDLER.as_millis().to_string()
            );
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
         ({} of its 100 delivered before the kill); delivered {}, lost {lost}, duplicated {}; \
         its work finished {recovered:?} after the kill (lease {LEASE:?}, bound {RECOVERY:?})",
        delivered_before_kill,
        per_link.len() - lost,
        duplicated.len(),
    );
    assert_eq!(
        delivered_before_kill, 0,
        "replica 0 delivered before the kill: the test proves less"
    );
    assert_eq!(lost, 0);
    assert!(duplicated.is_empty(), "delivered twice: {duplicated:?}");
    assert!(
        held >= 90,
        "replica 0 held only {held} calls at the kill: the test proves less"
    );
    assert!(
        recovered <= RECOVERY,
        "the dead replica's work was finished {recovered:?} after the kill: over the {RECOVERY:?} bound"
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

/// A signed async `sleep` request for `link`, its handler sleeping `ms`.
async fn ask_later(client: &reqwest::Client, url: &str, link: &str, ms: u64) -> u16 {
    let body = json!({"link": link, "key": "sleep", "inputs": {"ms": ms.to_string()}}).to_string();
    match common::try_post_signed(client, url, body).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

async fn readyz(client: &reqwest::Client, process: &common::Process) -> u16 {
    let admin = process.admin.as_deref().expect("the admin listener is on");
    match client.get(format!("{admin}/readyz")).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// How many times each link was delivered; every delivery checked for its signature.
fn deliveries_per_link<'a>(
    receiver: &Receiver,
    links: &'a [String],
) -> BTreeMap<&'a String, usize> {
    let signer = optech_host::signature::Signer::new(common::SECRET.as_bytes(), None);
    links
        .iter()
        .map(|link| {
            let deliveries = receiver.to(link);
            for delivery in &deliveries {
                assert_eq!(
                    delivery.headers["x-optech-signature"].to_str().unwrap(),
                    signer.sign(&delivery.body),
                    "an unsigned delivery"
                );
            }
            (link, deliveries.len())
        })
        .collect()
}

/// Waits until no record of the outbox is open (every accepted request closed).
async fn wait_all_closed(url: &str, limit: Duration) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    common::wait_until("every outbox record closed", limit, || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM optech_requests WHERE state IN ('accepted', 'answered')",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(i64::MAX);
        open == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_lease_loses_nothing_and_sends_nothing_twice() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    build_plugins().as_ref().unwrap();
    let url = fresh_database(&cluster.url).await;
    let work = tempfile::tempdir().unwrap();
    let replicas: Vec<common::Process> = (0..2)
        .map(|i| {
            let config = config(&work.path().join(format!("replica-{i}")));
            start_process_env(&config, "info", &[("OPTECH_OUTBOX_URL", &url)])
        })
        .collect();
    let receiver = Receiver::start().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // 60 requests in flight over the two replicas, each handler taking 2 s.
    let mut links: Vec<String> = (0..60).map(|i| receiver.link(&format!("o{i}"))).collect();
    let sends: Vec<_> = links
        .iter()
        .enumerate()
        .map(|(i, link)| {
            let (client, url, link) = (client.clone(), replicas[i % 2].url.clone(), link.clone());
            tokio::spawn(async move { ask_later(&client, &url, &link, 2000).await })
        })
        .collect();
    for send in sends {
        assert_eq!(send.await.unwrap(), 202);
    }
    let mut in_flight = 0;
    for replica in &replicas {
        in_flight += replica.plugin_health("tk").await["running"]
            .as_u64()
            .unwrap();
    }

    // The database crashes while the handlers run.
    let delivered_before_crash = receiver.count();
    cluster.crash();
    let crashed = Instant::now();
    for replica in &replicas {
        common::wait_until(
            "/readyz is 503 while the outbox is down",
            Duration::from_secs(5),
            || async { readyz(&client, replica).await == 503 },
        )
        .await;
        let refused = ask_later(&client, &replica.url, &receiver.link("refused"), 10).await;
        assert_eq!(refused, 503, "a request accepted while the outbox is down");
        // An `auto` answer ready in time does not need the outbox.
        let quick = json!({"link": receiver.link("quick"), "key": "echo", "inputs": {"a": "1"}});
        let answer = common::post_signed(&client, &replica.url, quick.to_string()).await;
        assert_eq!(
            answer.status().as_u16(),
            200,
            "an auto answer ready in time"
        );
        // Metrics answer at once, with the outbox gauges as last read.
        let admin = replica.admin.as_deref().unwrap();
        let scraped = client
            .get(format!("{admin}/metrics"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .expect("/metrics answers within 1 s while the database is down");
        assert_eq!(scraped.status().as_u16(), 200);
    }
    let readyz_down_after = crashed.elapsed();
    // Down for twice the lease: every claim lapses, nothing may be sent.
    tokio::time::sleep((2 * LEASE).saturating_sub(crashed.elapsed())).await;
    let delivered_while_down = receiver.count() - delivered_before_crash;
    cluster.restart();
    let restarted = Instant::now();

    // Both replicas take work again on their own within 5 s.
    let mut back_after = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        for n in 0.. {
            let link = receiver.link(&format!("after-{i}-{n}"));
            if ask_later(&client, &replica.url, &link, 10).await == 202 {
                links.push(link);
                break;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(5),
                "replica {i} does not accept 5 s after the database is back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        back_after.push(restarted.elapsed());
        assert_eq!(readyz(&client, replica).await, 200);
    }

    // Every accepted request is delivered exactly once.
    wait_all_closed(&url, LEASE + Duration::from_secs(30)).await;
    let per_link = deliveries_per_link(&receiver, &links);
    let lost = per_link.values().filter(|n| **n == 0).count();
    let duplicated = per_link.values().filter(|n| **n > 1).count();
    eprintln!(
        "outage test: 2 replicas, {in_flight} handlers running (2 s each) when PostgreSQL crashed for {:?} \
         (lease {LEASE:?}); /readyz 503 within {readyz_down_after:?}; {delivered_before_crash} delivered before it, \
         {delivered_while_down} while it was down; accepting again {back_after:?} after the restart; {} accepted in all: lost {lost}, \
         duplicated {duplicated}",
        restarted.duration_since(crashed),
        links.len(),
    );
    // Results could not be recorded and leases not confirmed: nothing may go out.
    assert_eq!(
        delivered_while_down, 0,
        "delivered while the database was down"
    );
    assert_eq!(lost, 0, "accepted but never delivered");
    assert_eq!(duplicated, 0, "delivered twice");
    assert!(
        in_flight >= 50,
        "only {in_flight} handlers ran at the crash: the test proves less"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_sends_nothing_that_another_has_taken() {
    let Some(Backend::Postgres(url)) = Backend::postgres().await else {
        return;
    };
    build_plugins().as_ref().unwrap();
    const N: usize = 20;
    let work = tempfile::tempdir().unwrap();
    let replicas: Vec<common::Process> = (0..2)
        .map(|i| {
            let config = config(&work.path().join(format!("replica-{i}")));
            start_process_env(&config, "info", &[("OPTECH_OUTBOX_URL", &url)])
        })
        .collect();
    let receiver = Receiver::start().await;
    // Every first delivery is refused for now (retry in 2 s): replica 0 then
    // holds N recorded answers, each about to be POSTed again.
    receiver.script(&[(503, Some("2")); N]);
    let client = reqwest::Client::new();
    let links: Vec<String> = (0..N).map(|i| receiver.link(&format!("p{i}"))).collect();
    for link in &links {
        assert_eq!(ask_later(&client, &replicas[0].url, link, 50).await, 202);
    }
    receiver.wait_for(N, Duration::from_secs(10)).await;
    let admin = replicas[0].admin.clone().unwrap();
    let held = common::value(
        &common::scrape(&admin).await,
        "optech_outbox_claims_held",
        &[],
    );
    // Replica 0 stops dead before its retries, for twice the lease.
    let pid = replicas[0].child.id().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {pid}");
    };
    signal("-STOP");
    let paused = Instant::now();
    let delivered = |link: &String| receiver.to(link).iter().any(|d| d.status == 200);
    common::wait_until(
        "replica 1 delivers what replica 0 held",
        2 * LEASE + Duration::from_secs(10),
        || async { links.iter().all(delivered) },
    )
    .await;
    let taken_over = paused.elapsed();
    tokio::time::sleep((2 * LEASE).saturating_sub(paused.elapsed())).await;
    signal("-CONT");
    // Replica 0 wakes with its retries overdue, under claims another replica
    // has taken: it must find out and send nothing. Nothing is counted before
    // it has come to every one of them: each held delivery ends with a line
    // in its log, "lost before delivery" where its check declined it, or
    // "another holder" where it was sent and only its close was fenced.
    let lines = |needle: &str| {
        replicas[0]
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    };
    const DECLINED: &str = "the claim was lost before delivery";
    const FENCED: &str = "closing the record: another holder has this record now";
    common::wait_until(
        "replica 0 comes to each of its held deliveries",
        Duration::from_secs(10),
        || async { lines(DECLINED) + lines(FENCED) >= N },
    )
    .await;
    let declined = lines(DECLINED);
    common::wait_until(
        "replica 0 lets go of every claim",
        Duration::from_secs(10),
        || async {
            common::value(
                &common::scrape(&admin).await,
                "optech_outbox_claims_held",
                &[],
            ) == 0.0
        },
    )
    .await;
    wait_all_closed(&url, Duration::from_secs(10)).await;
    let duplicated: Vec<&String> = links
        .iter()
        .filter(|l| receiver.to(l).iter().filter(|d| d.status == 200).count() > 1)
        .collect();
    let lost = links.iter().filter(|l| !delivered(l)).count();
    eprintln!(
        "pause test: replica 0 paused for {:?} (lease {LEASE:?}) holding {held} claims whose first \
         delivery was refused; replica 1 delivered them all {taken_over:?} after the pause; after \
         replica 0 resumed it declined {declined} of them at its check: lost {lost}, duplicated {}",
        2 * LEASE,
        duplicated.len()
    );
    assert_eq!(held, N as f64);
    assert_eq!(lost, 0);
    assert!(
        duplicated.is_empty(),
        "a paused replica sent what another had taken: {duplicated:?}"
    );
    assert_eq!(
        declined, N,
        "replica 0 declined only {declined} of its {N} held deliveries at its check"
    );
}
