//! The plugins' key-value store through the real host: the test plugin's `kv`
//! behaviour makes one store call per request (`testkit/src/kv.rs`), as
//! plugins `a` and `b` with their own grants.

mod common;

use std::time::Duration;

use common::{TestHost, testkit_dir, wait_until};
use serde_json::{Value, json};

/// Plugin `a` has `own` and `shared`; plugin `b` has `shared` only.
fn config(server: &str, rest: &str) -> String {
    format!(
        "{server}\n[keys]\nkv = \"a\"\n\"kv.b\" = \"b\"\n\
         [plugins.a]\nsource = \"testkit.wasm\"\nstores = [\"own\", \"shared\"]\n\
         [plugins.b]\nsource = \"testkit.wasm\"\nstores = [\"shared\"]\n{rest}"
    )
}

async fn kv(host: &TestHost, key: &str, inputs: Value) -> Value {
    let answer = host.ask(key, inputs).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    answer.json()["data"].clone()
}

#[tokio::test]
async fn a_plugin_sees_only_its_grants_and_the_buckets_it_shares() {
    let host = TestHost::start(&testkit_dir(), &config("", "")).await;
    let set = kv(
        &host,
        "kv",
        json!({"op": "set", "bucket": "own", "key": "token", "value": "secret"}),
    )
    .await;
    assert_eq!(set["ok"], "true");
    assert_eq!(
        kv(
            &host,
            "kv",
            json!({"op": "get", "bucket": "own", "key": "token"})
        )
        .await["value"],
        "secret"
    );

    // `b` is not granted `own`: refused, naming the grant to add.
    let refused = kv(
        &host,
        "kv.b",
        json!({"op": "get", "bucket": "own", "key": "token"}),
    )
    .await;
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.contains("bucket `own` is not granted") && message.contains("`stores`"),
        "{message}"
    );

    // A shared bucket is one bucket for both.
    kv(
        &host,
        "kv",
        json!({"op": "set", "bucket": "shared", "key": "n", "value": "from a"}),
    )
    .await;
    assert_eq!(
        kv(
            &host,
            "kv.b",
            json!({"op": "get", "bucket": "shared", "key": "n"})
        )
        .await["value"],
        "from a"
    );
    assert_eq!(
        kv(
            &host,
            "kv.b",
            json!({"op": "get", "bucket": "shared", "key": "token"})
        )
        .await["found"],
        "false",
        "a key of `own` is not in `shared`"
    );
    let scrape = common::scrape(&host.admin_url()).await;
    let refusals = common::counter(
        &scrape,
        "optech_store_calls_total",
        &[("plugin", "b"), ("outcome", "refused")],
    );
    assert_eq!(refusals, 1.0, "the refused grant is counted");
    let calls = common::counter(
        &scrape,
        "optech_store_calls_total",
        &[("plugin", "a"), ("outcome", "ok")],
    );
    assert_eq!(calls, 3.0, "a's three calls are counted");

    // The console's Plugins page says what each bucket holds.
    let page = host
        .client
        .get(format!("{}/plugins/table", host.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let bucket = |name: &str| {
        let start = page
            .find(&format!("data-bucket=\"{name}\""))
            .unwrap_or_else(|| panic!("no bucket {name} in {page}"));
        let end = start + page[start..].find("</div>").unwrap();
        page[start..end].to_string()
    };
    let own = bucket("own");
    assert!(
        own.contains(">1</span> keys, <span class=\"num\">11</span> bytes"),
        "{own}"
    );
    let shared = bucket("shared");
    assert!(
        shared.contains(">1</span> keys, <span class=\"num\">7</span> bytes"),
        "{shared}"
    );
}

#[tokio::test]
async fn each_limit_refuses_naming_its_setting_and_writes_nothing() {
    let limits = "[store]\nmax_key_size = \"8B\"\nmax_value_size = \"16B\"\n\
                  max_keys_per_bucket = 2\nmax_bytes_per_plugin = \"40B\"\n";
    let host = TestHost::start(&testkit_dir(), &config("", limits)).await;
    let error = |data: Value| data["error"].as_str().unwrap_or_default().to_string();

    let long_key = kv(
        &host,
        "kv",
        json!({"op": "set", "bucket": "own", "key": "123456789", "value": "v"}),
    )
    .await;
    assert!(error(long_key).contains("store.max_key_size"));
    let big_value = kv(
        &host,
        "kv",
        json!({"op": "set", "bucket": "own", "key": "k", "value": "x".repeat(17)}),
    )
    .await;
    assert!(error(big_value).contains("store.max_value_size"));

    for key in ["k1", "k2"] {
        let ok = kv(
            &host,
            "kv",
            json!({"op": "set", "bucket": "own", "key": key, "value": "v"}),
        )
        .await;
        assert_eq!(ok["ok"], "true", "{ok}");
    }
    let third = kv(
        &host,
        "kv",
        json!({"op": "set", "bucket": "own", "key": "k3", "value": "v"}),
    )
    .await;
    assert!(error(third).contains("store.max_keys_per_bucket"));

    // 6 bytes held in `own`; 16 + 2 more in `shared` fit 40, another 18 do not.
    let fits = kv(
        &host,
        "kv",
        json!({"op": "set", "bucket": "shared", "key": "s1", "value": "x".repeat(16)}),
    )
    .await;
    assert_eq!(fits["ok"], "true", "{fits}");
    let full = kv(
        &host,
        "kv",
        json!({"op": "set", "bucket": "shared", "key": "s2", "value": "x".repeat(16)}),
    )
    .await;
    assert!(error(full).contains("store.max_bytes_per_plugin"));

    let keys = kv(&host, "kv", json!({"op": "keys", "bucket": "own"})).await;
    assert_eq!(keys["keys"], "k1,k2", "nothing refused was written");
    let keys = kv(&host, "kv", json!({"op": "keys", "bucket": "shared"})).await;
    assert_eq!(keys["keys"], "s1");
}

#[tokio::test]
async fn a_key_with_a_time_to_live_expires() {
    let host = TestHost::start(&testkit_dir(), &config("", "")).await;
    let set = kv(
        &host,
        "kv",
        json!({"op": "set", "bucket": "own", "key": "token", "value": "t", "ttl": "1"}),
    )
    .await;
    assert_eq!(set["ok"], "true");
    assert_eq!(
        kv(
            &host,
            "kv",
            json!({"op": "exists", "bucket": "own", "key": "token"})
        )
        .await["exists"],
        "true"
    );
    wait_until("the key expires", Duration::from_secs(5), || async {
        kv(
            &host,
            "kv",
            json!({"op": "get", "bucket": "own", "key": "token"}),
        )
        .await["found"]
            == "false"
    })
    .await;
    let zero = kv(
        &host,
        "kv",
        json!({"op": "set", "bucket": "own", "key": "token", "value": "t", "ttl": "0"}),
    )
    .await;
    assert!(
        zero["error"]
            .as_str()
            .unwrap()
            .contains("at least 1 second")
    );
}

#[tokio::test]
async fn keys_outlive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = format!("data_dir = {:?}", data.path().display().to_string());
    let first = TestHost::start(&testkit_dir(), &config(&server, "")).await;
    kv(
        &first,
        "kv",
        json!({"op": "incr", "bucket": "own", "key": "runs", "by": "5"}),
    )
    .await;
    first.host.shutdown().await.unwrap();
    assert!(data.path().join("store.sqlite3").is_file());

    let second = TestHost::start(&testkit_dir(), &config(&server, "")).await;
    let runs = kv(
        &second,
        "kv",
        json!({"op": "incr", "bucket": "own", "key": "runs"}),
    )
    .await;
    assert_eq!(runs["value"], "6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_sum_and_a_compare_and_swap_race_has_one_winner() {
    let host = TestHost::start(&testkit_dir(), &config("", "")).await;
    let increments = (0..64).map(|_| {
        kv(
            &host,
            "kv",
            json!({"op": "incr", "bucket": "own", "key": "hits"}),
        )
    });
    futures_util::future::join_all(increments).await;
    assert_eq!(
        kv(
            &host,
            "kv",
            json!({"op": "get", "bucket": "own", "key": "hits"})
        )
        .await["value"],
        "64"
    );

    let racers = (0..16).map(|i| {
        let host = &host;
        async move {
            let plugin = if i % 2 == 0 { "kv" } else { "kv.b" };
            kv(
                host,
                plugin,
                json!({"op": "cas", "bucket": "shared", "key": "leader", "expected": "-", "value": format!("racer {i}")}),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(racers).await;
    let winners: Vec<&Value> = results.iter().filter(|r| r["swapped"] == "true").collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let leader = kv(
        &host,
        "kv",
        json!({"op": "get", "bucket": "shared", "key": "leader"}),
    )
    .await;
    assert!(leader["value"].as_str().unwrap().starts_with("racer "));
    // From the value it read, a swap wins again.
    let again = kv(
        &host,
        "kv",
        json!({"op": "cas", "bucket": "shared", "key": "leader", "expected": leader["value"], "value": "next"}),
    )
    .await;
    assert_eq!(again["swapped"], "true");
}

/// The `orders` example's stand-in back end (`plugins/orders/backend/server.py`),
/// killed on drop.
struct OrdersBackEnd {
    child: std::process::Child,
    url: String,
}

impl OrdersBackEnd {
    fn start(token_ttl: u64) -> Self {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new("python3")
            .arg(common::workspace().join("plugins/orders/backend/server.py"))
            .args(["--port", "0", "--token-ttl", &token_ttl.to_string()])
            .env("ORDERS_CLIENT_SECRET", "test-client-secret")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the stand-in back end");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the back end said {line:?}"))
            .to_string();
        Self { child, url }
    }

    async fn tokens_issued(&self) -> u64 {
        let body = reqwest::get(format!("{}/stats", self.url))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let stats: Value = serde_json::from_slice(&body).unwrap();
        stats["tokens_issued"].as_u64().unwrap()
    }
}

impl Drop for OrdersBackEnd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_orders_example_fetches_its_token_once_until_it_expires() {
    let back_end = OrdersBackEnd::start(3);
    let url = &back_end.url;
    let config = format!(
        "[keys]\n\"order status\" = \"orders\"\n\
         [plugins.orders]\nallowed_hosts = [{url:?}]\nstores = [\"tokens\"]\n\
         [plugins.orders.config]\nbase_url = {url:?}\ntoken_url = \"{url}/oauth/token\"\n\
         client_id = \"optech\"\nclient_secret = \"test-client-secret\"\n"
    );
    let host = TestHost::start(&common::examples_dir(), &config).await;
    let order = || async {
        let answer = host.ask("order status", json!({"order_id": "A-17"})).await;
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        assert_eq!(answer.json()["data"]["status"], "shipped");
    };
    for _ in 0..10 {
        order().await;
    }
    assert_eq!(
        back_end.tokens_issued().await,
        1,
        "one token for 10 requests"
    );
    // Kept for its 3 s of life: then the next request fetches another.
    wait_until(
        "a new token after expiry",
        Duration::from_secs(15),
        || async {
            order().await;
            back_end.tokens_issued().await >= 2
        },
    )
    .await;
}

/// Two hosts on one PostgreSQL, as two replicas: their plugins share buckets.
async fn replicas(url: &str, rest: &str) -> (TestHost, TestHost) {
    let server = format!("outbox = {url:?}");
    let one = TestHost::start(&testkit_dir(), &config(&server, rest)).await;
    let two = TestHost::start(&testkit_dir(), &config(&server, rest)).await;
    (one, two)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_sum_concurrent_increments_and_one_swap_wins() {
    let Some(common::Backend::Postgres(url)) = common::Backend::postgres().await else {
        return;
    };
    let (one, two) = replicas(&url, "").await;
    let increments = (0..64).map(|i| {
        let host = if i % 2 == 0 { &one } else { &two };
        kv(
            host,
            "kv",
            json!({"op": "incr", "bucket": "shared", "key": "hits"}),
        )
    });
    let sums: Vec<Value> = futures_util::future::join_all(increments).await;
    let mut seen: Vec<i64> = sums
        .iter()
        .map(|s| s["value"].as_str().unwrap().parse().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=64).collect::<Vec<i64>>(),
        "each increment saw its own sum"
    );
    assert_eq!(
        kv(
            &two,
            "kv.b",
            json!({"op": "get", "bucket": "shared", "key": "hits"})
        )
        .await["value"],
        "64"
    );

    let racers = (0..16).map(|i| {
        let host = if i % 2 == 0 { &one } else { &two };
        kv(
            host,
            "kv",
            json!({"op": "cas", "bucket": "shared", "key": "leader", "expected": "-", "value": format!("racer {i}")}),
        )
    });
    let results = futures_util::future::join_all(racers).await;
    let winners = results.iter().filter(|r| r["swapped"] == "true").count();
    assert_eq!(winners, 1, "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_an_error_to_the_plugin_within_its_deadline() {
    let Some(cluster) = common::PrivateCluster::start() else {
        return;
    };
    let url = common::fresh_database(&cluster.url).await;
    let server = format!("outbox = {url:?}");
    let host = TestHost::start(&testkit_dir(), &config(&server, "")).await;
    let set = kv(
        &host,
        "kv",
        json!({"op": "set", "bucket": "own", "key": "k", "value": "v"}),
    )
    .await;
    assert_eq!(set["ok"], "true", "{set}");

    cluster.crash();
    // The plugin's own answer (200, not a 504): its store call came back
    // with an error before the deadline (10 s by default).
    let down = kv(
        &host,
        "kv",
        json!({"op": "get", "bucket": "own", "key": "k"}),
    )
    .await;
    let message = down["error"].as_str().unwrap_or_default();
    assert!(message.contains("the store is unavailable"), "{down}");
    let echo = host.ask("echo", json!({"still": "up"})).await;
    assert_eq!(
        echo.status, 404,
        "the host answers on: an unmapped key is still a 404"
    );
    let scrape = common::scrape(&host.admin_url()).await;
    let unavailable = common::counter(
        &scrape,
        "optech_store_calls_total",
        &[("plugin", "a"), ("outcome", "unavailable")],
    );
    assert!(unavailable >= 1.0, "counted as unavailable: {unavailable}");

    cluster.restart();
    wait_until("the store is back", Duration::from_secs(30), || async {
        kv(
            &host,
            "kv",
            json!({"op": "get", "bucket": "own", "key": "k"}),
        )
        .await["value"]
            == "v"
    })
    .await;
}
