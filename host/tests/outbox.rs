//! The outbox's promises, checked on the backend several replicas share
//! (PostgreSQL): a link recorded once whichever replica sees it, leases that
//! hold while renewed and lapse when not, completion fenced to the current
//! holder, released claims taken at once, corrupt rows quarantined, pruning.
//! The SQLite backend's own tests sit beside it (`outbox/sqlite.rs`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::Backend;
use optech_host::outbox::{Accepted, Claim, NewRecord, Outbox, PostgresOutbox, State};

/// Two replicas' handles on one fresh database, or `None` (skipped) without PostgreSQL.
async fn replicas(lease: Duration) -> Option<(String, PostgresOutbox, PostgresOutbox)> {
    let Backend::Postgres(url) = Backend::postgres().await? else {
        return None;
    };
    let a = PostgresOutbox::open(&url, lease).await.unwrap();
    let b = PostgresOutbox::open(&url, lease).await.unwrap();
    assert_ne!(a.owner(), b.owner());
    Some((url, a, b))
}

fn record<'a>(link: &'a str, inputs: &'a Vec<(String, String)>) -> NewRecord<'a> {
    NewRecord {
        link,
        key: "k",
        inputs,
        expires_at: SystemTime::now() + Duration::from_secs(600),
        request_id: "req-1",
        traceparent: None,
        tracestate: None,
    }
}

fn claim(accepted: Accepted) -> Claim {
    match accepted {
        Accepted::New(claim) => claim,
        Accepted::Duplicate => panic!("a duplicate"),
    }
}

#[tokio::test]
async fn a_link_is_recorded_once_whichever_replica_sees_it() {
    let Some((_, a, b)) = replicas(Duration::from_secs(30)).await else {
        return;
    };
    let (a, b) = (Arc::new(a), Arc::new(b));
    let inputs = vec![("x".to_string(), "1".to_string())];
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let outbox = if i % 2 == 0 { a.clone() } else { b.clone() };
            let inputs = inputs.clone();
            tokio::spawn(async move {
                outbox
                    .accept(&record("http://l/same", &inputs))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut new = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Accepted::New(_)) {
            new += 1;
        }
    }
    assert_eq!(new, 1, "one link recorded {new} times");
    assert!(b.contains("http://l/same").await.unwrap());
}

#[tokio::test]
async fn a_renewed_claim_holds_and_a_lapsed_one_passes_to_another_replica_fenced() {
    let lease = Duration::from_millis(800);
    let Some((_, a, b)) = replicas(lease).await else {
        return;
    };
    let inputs = vec![];
    let first = claim(a.accept(&record("http://l/1", &inputs)).await.unwrap());
    // While A renews, B finds nothing to take.
    for _ in 0..3 {
        tokio::time::sleep(lease / 2).await;
        assert_eq!(
            a.renew(std::slice::from_ref(&first)).await.unwrap(),
            vec![first.link.clone()]
        );
        assert!(
            b.claim_stale(10).await.unwrap().is_empty(),
            "a live claim was taken"
        );
    }
    // A stops renewing (dead, or paused): once the lease runs out, B takes it.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let taken = b.claim_stale(10).await.unwrap();
    assert_eq!(taken.len(), 1);
    let second = taken[0].claim.clone();
    assert_eq!(second.token, first.token + 1);
    assert_eq!(taken[0].request_id.as_deref(), Some("req-1"));
    // A, waking up, can no longer answer, close or keep it.
    assert!(!a.answer(&first, b"stale").await.unwrap());
    assert!(!a.close(&first, State::Delivered).await.unwrap());
    assert!(
        a.renew(std::slice::from_ref(&first))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(b.answer(&second, b"{\"data\":{}}").await.unwrap());
    assert_eq!(
        b.result(&second).await.unwrap().as_deref(),
        Some(&b"{\"data\":{}}"[..])
    );
    assert!(b.close(&second, State::Delivered).await.unwrap());
    assert_eq!(b.state("http://l/1").await.unwrap(), Some(State::Delivered));
}

#[tokio::test]
async fn released_claims_are_announced_and_taken_at_once() {
    let Some((_, a, b)) = replicas(Duration::from_secs(30)).await else {
        return;
    };
    let b = Arc::new(b);
    // B is listening before A lets go: its first wait opens the LISTEN
    // connection, which then holds what is announced until B waits again.
    b.wait_for_work(Duration::from_millis(1)).await;
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            b.wait_for_work(Duration::from_secs(20)).await;
            started.elapsed()
        })
    };
    let inputs = vec![];
    let held = claim(
        a.accept(&record("http://l/released", &inputs))
            .await
            .unwrap(),
    );
    assert!(b.claim_stale(10).await.unwrap().is_empty());
    a.release(&[held]).await.unwrap();
    let waited = waiter.await.unwrap();
    assert!(
        waited < Duration::from_secs(5),
        "the release was not heard: waited {waited:?}"
    );
    let taken = b.claim_stale(10).await.unwrap();
    assert_eq!(taken.len(), 1, "a released claim was not free to take");
}

#[tokio::test]
async fn a_corrupt_row_is_quarantined_and_the_rest_resumed() {
    let lease = Duration::from_millis(300);
    let Some((url, a, b)) = replicas(lease).await else {
        return;
    };
    let inputs = vec![];
    for link in ["http://l/a", "http://l/bad", "http://l/c"] {
        claim(a.accept(&record(link, &inputs)).await.unwrap());
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE optech_requests SET inputs = 'garbage' WHERE link = 'http://l/bad'")
        .execute(&pool)
        .await
        .unwrap();
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let mut links: Vec<String> = b
        .claim_stale(10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.claim.link)
        .collect();
    links.sort();
    assert_eq!(links, ["http://l/a", "http://l/c"]);
    assert_eq!(
        b.state("http://l/bad").await.unwrap(),
        Some(State::Quarantined)
    );
    let stats = b.open_stats().await.unwrap();
    assert_eq!(stats.open, 2);
}

#[tokio::test]
async fn closed_records_are_pruned_and_open_ones_kept() {
    let Some((_, a, b)) = replicas(Duration::from_secs(30)).await else {
        return;
    };
    let inputs = vec![];
    let closed = claim(a.accept(&record("http://l/closed", &inputs)).await.unwrap());
    assert!(a.close(&closed, State::Expired).await.unwrap());
    claim(a.accept(&record("http://l/open", &inputs)).await.unwrap());
    assert_eq!(
        b.prune(SystemTime::now() - Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        b.prune(SystemTime::now() + Duration::from_secs(1))
            .await
            .unwrap(),
        1
    );
    assert!(b.contains("http://l/open").await.unwrap());
    assert!(!b.contains("http://l/closed").await.unwrap());
}

#[tokio::test]
async fn migrations_run_once_however_many_replicas_start() {
    let Some(Backend::Postgres(url)) = Backend::postgres().await else {
        return;
    };
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                PostgresOutbox::open(&url, Duration::from_secs(30))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for open in opens {
        open.await.unwrap().unwrap();
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    let files = std::fs::read_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres"),
    )
    .unwrap()
    .count();
    assert_eq!(applied, files as i64, "each migration applied once");
}

#[tokio::test]
async fn the_console_listing_shows_open_and_failed_records_and_their_holder() {
    let Some((_, a, b)) = replicas(Duration::from_secs(30)).await else {
        return;
    };
    let inputs = vec![];
    let open = claim(
        a.accept(&record("http://l/open?token=s3cr3t", &inputs))
            .await
            .unwrap(),
    );
    a.attempted(&open, "retry: 503").await.unwrap();
    let failed = claim(a.accept(&record("http://l/f", &inputs)).await.unwrap());
    assert!(a.close(&failed, State::Failed).await.unwrap());
    let done = claim(a.accept(&record("http://l/d", &inputs)).await.unwrap());
    assert!(a.close(&done, State::Delivered).await.unwrap());

    // Any replica's console sees the shared outbox, with who holds each record.
    let listing = b.console_listing(10).await.unwrap();
    assert_eq!(listing.open.len(), 1, "{listing:?}");
    let first = &listing.open[0];
    assert_eq!(
        (first.attempts, first.last_outcome.as_deref()),
        (1, Some("retry: 503"))
    );
    assert_eq!(first.request_id.as_deref(), Some("req-1"));
    assert_eq!(first.owner.as_deref(), Some(a.owner()));
    assert!(!first.link.to_string().contains("s3cr3t"));
    assert_eq!(listing.failed.len(), 1, "{listing:?}");
    assert_eq!(listing.failed[0].state, Some(State::Failed));
    assert!(listing.failed[0].closed_at.is_some());
}
