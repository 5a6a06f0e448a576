//! The invariants every store backend keeps, as one test any backend runs.

use std::time::{Duration, SystemTime};

use super::{Backend, Limits, StoreError, Usage, Write};

const LIMITS: Limits = Limits {
    max_key_bytes: 64,
    max_value_bytes: 64,
    max_keys_per_bucket: 4,
    max_bytes_per_plugin: 40,
};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn w<'a>(owner: &'a str, bucket: &'a str, key: &'a str, now: SystemTime) -> Write<'a> {
    Write {
        owner,
        bucket,
        key,
        limits: &LIMITS,
        now,
    }
}

pub async fn run(b: &dyn Backend) {
    let t0 = at(0);

    // Set, get, overwrite, delete; buckets apart.
    b.set(w("p", "a", "k", t0), b"one", None).await.unwrap();
    b.set(w("p", "a", "k", t0), b"two", None).await.unwrap();
    assert_eq!(
        b.get("a", "k", t0).await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(b.get("other", "k", t0).await.unwrap(), None);
    assert!(b.delete(w("p", "a", "k", t0)).await.unwrap());
    assert!(!b.delete(w("p", "a", "k", t0)).await.unwrap());
    assert_eq!(b.get("a", "k", t0).await.unwrap(), None);

    // Expiry: absent at and after its time, overwritten as absent.
    b.set(w("p", "a", "ttl", t0), b"v", Some(at(10)))
        .await
        .unwrap();
    assert!(b.get("a", "ttl", at(9)).await.unwrap().is_some());
    assert_eq!(b.get("a", "ttl", at(10)).await.unwrap(), None);
    assert!(!b.delete(w("p", "a", "ttl", at(11))).await.unwrap());
    b.set(w("p", "a", "ttl", t0), b"v", Some(at(10)))
        .await
        .unwrap();
    assert!(
        b.compare_and_swap(w("p", "a", "ttl", at(11)), None, b"new", None)
            .await
            .unwrap(),
        "an expired key compares as absent"
    );
    assert_eq!(
        b.get("a", "ttl", at(99)).await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    b.delete(w("p", "a", "ttl", t0)).await.unwrap();

    // Increment: from absent, keeps the expiry, refuses text and overflow.
    assert_eq!(b.increment(w("p", "n", "c", t0), 5).await.unwrap(), 5);
    assert_eq!(b.increment(w("p", "n", "c", t0), -7).await.unwrap(), -2);
    assert_eq!(
        b.get("n", "c", t0).await.unwrap().as_deref(),
        Some(&b"-2"[..])
    );
    b.set(w("p", "n", "e", t0), b"1", Some(at(5)))
        .await
        .unwrap();
    assert_eq!(b.increment(w("p", "n", "e", t0), 1).await.unwrap(), 2);
    assert_eq!(
        b.get("n", "e", at(5)).await.unwrap(),
        None,
        "the expiry stays"
    );
    assert_eq!(b.increment(w("p", "n", "e", at(6)), 1).await.unwrap(), 1);
    b.set(w("p", "n", "t", t0), b"ten", None).await.unwrap();
    assert!(matches!(
        b.increment(w("p", "n", "t", t0), 1).await,
        Err(StoreError::NotAnInteger { .. })
    ));
    b.set(w("p", "n", "t", t0), i64::MAX.to_string().as_bytes(), None)
        .await
        .unwrap();
    assert!(matches!(
        b.increment(w("p", "n", "t", t0), 1).await,
        Err(StoreError::Overflow { .. })
    ));
    for key in ["c", "e", "t"] {
        b.delete(w("p", "n", key, t0)).await.unwrap();
    }

    // Compare-and-swap: only on the expected value.
    assert!(
        b.compare_and_swap(w("p", "a", "s", t0), None, b"1", None)
            .await
            .unwrap()
    );
    assert!(
        !b.compare_and_swap(w("p", "a", "s", t0), None, b"2", None)
            .await
            .unwrap()
    );
    assert!(
        !b.compare_and_swap(w("p", "a", "s", t0), Some(b"0"), b"2", None)
            .await
            .unwrap()
    );
    assert!(
        b.compare_and_swap(w("p", "a", "s", t0), Some(b"1"), b"2", None)
            .await
            .unwrap()
    );
    assert_eq!(
        b.get("a", "s", t0).await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    b.delete(w("p", "a", "s", t0)).await.unwrap();

    // Keys: by prefix, in order, paged, expired ones left out.
    for key in ["x1", "x2", "y1"] {
        b.set(w("p", "k", key, t0), b"", None).await.unwrap();
    }
    b.set(w("p", "k", "x0", t0), b"", Some(at(1)))
        .await
        .unwrap();
    assert_eq!(
        b.keys("k", "x", None, 10, at(2)).await.unwrap(),
        ["x1", "x2"]
    );
    assert_eq!(b.keys("k", "x", None, 1, at(2)).await.unwrap(), ["x1"]);
    assert_eq!(
        b.keys("k", "x", Some("x1"), 10, at(2)).await.unwrap(),
        ["x2"]
    );
    assert_eq!(
        b.keys("k", "", None, 10, at(2)).await.unwrap(),
        ["x1", "x2", "y1"]
    );
    assert!(b.keys("none", "", None, 10, t0).await.unwrap().is_empty());

    // Keys per bucket: a fifth key is refused, an overwrite is not; an expired
    // key makes room (pruned when the limit is reached).
    assert_eq!(b.usage("k").await.unwrap().keys, 4);
    assert_eq!(
        b.set(w("p", "k", "z", t0), b"", None).await,
        Err(StoreError::TooManyKeys {
            bucket: "k".into(),
            limit: 4
        })
    );
    b.set(w("p", "k", "x1", t0), b"v", None).await.unwrap();
    b.set(w("p", "k", "z", at(2)), b"", None).await.unwrap();
    assert_eq!(
        b.get("k", "z", at(2)).await.unwrap().as_deref(),
        Some(&b""[..])
    );
    for key in ["x1", "x2", "y1", "z"] {
        b.delete(w("p", "k", key, t0)).await.unwrap();
    }
    assert_eq!(b.usage("k").await.unwrap(), Usage::default());

    // Bytes per plugin (40): the writer pays; an overwrite pays the
    // difference; another plugin's bytes are its own; a refused write
    // changes nothing.
    b.set(w("p", "m", "key1", t0), &[b'v'; 16], None)
        .await
        .unwrap(); // 20
    b.set(w("p", "m", "key2", t0), &[b'v'; 16], None)
        .await
        .unwrap(); // 40
    assert_eq!(
        b.set(w("p", "m", "key3", t0), b"", None).await,
        Err(StoreError::PluginFull {
            plugin: "p".into(),
            limit: 40
        })
    );
    assert_eq!(b.get("m", "key3", t0).await.unwrap(), None);
    b.set(w("p", "m", "key2", t0), &[b'v'; 6], None)
        .await
        .unwrap(); // 30
    b.set(w("p", "m", "key3", t0), &[b'v'; 6], None)
        .await
        .unwrap(); // 40
    b.set(w("q", "m", "key4", t0), &[b'v'; 30], None)
        .await
        .unwrap();
    assert_eq!(b.usage("m").await.unwrap(), Usage { keys: 4, bytes: 74 });
    // q overwrites p's key: p's bytes are freed, q pays.
    assert!(matches!(
        b.set(w("q", "m", "key1", t0), &[b'v'; 16], None).await,
        Err(StoreError::PluginFull { .. })
    ));
    b.delete(w("q", "m", "key4", t0)).await.unwrap();
    b.set(w("q", "m", "key1", t0), &[b'v'; 16], None)
        .await
        .unwrap();
    b.set(w("p", "m", "key5", t0), &[b'v'; 16], None)
        .await
        .unwrap(); // p: 20 + 20
    for key in ["key1", "key2", "key3", "key5"] {
        b.delete(w("p", "m", key, t0)).await.unwrap();
    }

    // Prune: expired keys go, the others stay.
    b.set(w("p", "a", "old", t0), b"v", Some(at(1)))
        .await
        .unwrap();
    b.set(w("p", "a", "new", t0), b"v", Some(at(100)))
        .await
        .unwrap();
    assert_eq!(b.prune(at(50)).await.unwrap(), 1);
    assert_eq!(b.usage("a").await.unwrap().keys, 1);
    b.delete(w("p", "a", "new", t0)).await.unwrap();
}

/// Increments and compare-and-swaps at once from many tasks: every increment
/// counted, one swap wins.
pub async fn races(b: std::sync::Arc<dyn Backend>) {
    let limits = Limits::default();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let now = SystemTime::now();
                let w = |key| Write {
                    owner: "p",
                    bucket: "race",
                    key,
                    limits: &limits,
                    now,
                };
                let sum = b.increment(w("count"), 1).await.unwrap();
                let won = b
                    .compare_and_swap(w("first"), None, format!("{i}").as_bytes(), None)
                    .await
                    .unwrap();
                (sum, won)
            })
        })
        .collect();
    let mut sums = Vec::new();
    let mut winners = 0;
    for task in tasks {
        let (sum, won) = task.await.unwrap();
        sums.push(sum);
        winners += usize::from(won);
    }
    sums.sort_unstable();
    assert_eq!(
        sums,
        (1..=64).collect::<Vec<i64>>(),
        "each increment saw its own sum"
    );
    assert_eq!(winners, 1);
    let count = b.get("race", "count", SystemTime::now()).await.unwrap();
    assert_eq!(count.as_deref(), Some(&b"64"[..]));
}
