//! Watching a hot swap from outside: requests one after another while a
//! plugin is saved, rebuilt and swapped, each answer required to be exactly
//! the old version's or the new one's, the old before the save, the new one
//! once it has been seen, and never the old again after it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the load goes on after the new version's first answer.
pub const HOLD: Duration = Duration::from_secs(3);

/// What the load saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Answers that were exactly the old version's.
    pub old: usize,
    /// Answers that were exactly the new version's.
    pub new: usize,
    /// Every other answer: its status and body, or why there was none.
    pub wrong: Vec<String>,
    /// New answers to requests sent before the save.
    pub new_before_save: usize,
    /// Old answers to requests sent after a new answer had arrived.
    pub old_after_new: usize,
    saved: Option<Instant>,
    first_new: Option<Instant>,
}

impl Tally {
    /// How long since the first new answer arrived: a swap must hold, so
    /// the load goes on for a while after it (see [`SwapLoad::wait_for_new`]).
    pub fn new_for(&self) -> Duration {
        self.first_new
            .map_or(Duration::ZERO, |first| first.elapsed())
    }
}

/// Requests sent one after another until [`SwapLoad::finish`].
pub struct SwapLoad {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

impl SwapLoad {
    /// Starts sending: `ask` sends one request and gives its status and body;
    /// `pace` is the pause between requests, so the load leaves the build and
    /// the compile some CPU.
    pub fn start<F, Fut>(old: String, new: String, pace: Duration, ask: F) -> SwapLoad
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(u16, String), String>> + Send,
    {
        assert_ne!(old, new, "the two versions must answer differently");
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let task = {
            let (stop, tally) = (stop.clone(), tally.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(pace).await;
                    let sent = Instant::now();
                    let reply = ask().await;
                    let mut t = tally.lock().unwrap();
                    match reply {
                        Ok((200, body)) if body == old => {
                            t.old += 1;
                            if t.first_new.is_some_and(|first| sent > first) {
                                t.old_after_new += 1;
                            }
                        }
                        Ok((200, body)) if body == new => {
                            t.new += 1;
                            if t.saved.is_none_or(|saved| sent < saved) {
                                t.new_before_save += 1;
                            }
                            t.first_new.get_or_insert_with(Instant::now);
                        }
                        Ok((status, body)) => t.wrong.push(format!("{status} {body}")),
                        Err(e) => t.wrong.push(e),
                    }
                }
            })
        };
        SwapLoad { stop, tally, task }
    }

    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    /// Waits until the tally satisfies `check` (or panics after `limit`).
    pub async fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&Tally) -> bool) {
        super::wait_until(what, limit, || {
            let holds = check(&self.tally.lock().unwrap());
            async move { holds }
        })
        .await;
    }

    /// Waits until the old version has answered a few times under the load.
    pub async fn wait_for_old(&self, limit: Duration) {
        self.wait_for("the old version served under load", limit, |t| t.old >= 3)
            .await;
    }

    /// Waits until the new version has answered under the load for
    /// [`HOLD`]: long enough to see the old one come back if it would.
    pub async fn wait_for_new(&self, limit: Duration) {
        self.wait_for("the new version served under load", limit, |t| {
            t.new >= 3 && t.new_for() >= HOLD
        })
        .await;
    }

    /// Marks the moment just before the new version is saved.
    pub fn saving(&self) {
        self.tally.lock().unwrap().saved = Some(Instant::now());
    }

    /// Stops the load and fails the test unless every answer was the old
    /// version's or the new one's, in that order, with both seen.
    pub async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the load task panicked");
        let t = self.tally.lock().unwrap().clone();
        assert!(
            t.wrong.is_empty(),
            "{} of {} answers were neither version's (old {}, new {}); the first: {:#?}",
            t.wrong.len(),
            t.wrong.len() + t.old + t.new,
            t.old,
            t.new,
            &t.wrong[..t.wrong.len().min(5)]
        );
        assert!(t.saved.is_some(), "saving() was never called");
        assert!(t.old > 0 && t.new > 0, "both versions served: {t:?}");
        assert_eq!(
            t.new_before_save, 0,
            "the new version before the save: {t:?}"
        );
        assert_eq!(
            t.old_after_new, 0,
            "the old version after the new one: {t:?}"
        );
        t
    }
}

/// One signed request to `url`, as [`SwapLoad`] sends them: the status and
/// body, or why there was none.
pub async fn signed_answer(url: &str, body: String) -> Result<(u16, String), String> {
    let client = reqwest::Client::new();
    let response = super::try_post_signed(&client, url, body)
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| format!("{status}, no body: {e}"))?;
    Ok((status, text))
}
