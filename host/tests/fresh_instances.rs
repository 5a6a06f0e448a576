//! The default's promise, tested: with a fresh instance per request (no
//! `requests_per_instance`), nothing one request leaves is seen by the next,
//! in Rust, TypeScript and Python. Each kit's `marks` behaviour reports what
//! earlier requests left in its instance, then leaves its own mark, a value
//! unique to the request (testkit: a static, a leaked 4 MiB heap object, a
//! page from `memory.grow`, a closure in the function table, its stack, and
//! a scan of all the memory it starts with; jskit: a `globalThis` property,
//! a closure's variable, an 8 MiB array; pykit: a module global, a class
//! attribute, an 8 MiB list). Checked one request after another, under 64
//! at once (twice, so the second round takes slots the first dirtied), after
//! a trap, after a timeout, and across a hot reload (from reuse to the
//! default, then a new component). The control: the same kits with
//! `requests_per_instance` DO see the last request's marks.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{Answer, TestHost, config_text};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Lang {
    Rust,
    Js,
    Python,
}

impl Lang {
    /// The kit's component, built once per test binary by `optech build`'s
    /// code; `None` (skipped) for TypeScript without Node.js, outside CI.
    fn kit(self) -> Option<PathBuf> {
        match self {
            Lang::Rust => {
                common::build_plugins().as_ref().unwrap();
                Some(common::testkit_dir().join("testkit.wasm"))
            }
            Lang::Js => {
                if !common::node_available() {
                    return None;
                }
                if let Err(e) = common::build_js_plugins() {
                    panic!("building the TypeScript plugins failed: {e}");
                }
                Some(common::testkit_dir().join("jskit.wasm"))
            }
            Lang::Python => Some(common::build_pykit().join("pykit.wasm")),
        }
    }

    /// What a request reports when it finds `last`'s marks everywhere it
    /// looks, or none (the Rust kit's counts and pages are checked apart).
    fn seen(self, last: Option<&str>) -> Value {
        let mark = last.unwrap_or("none");
        let heap = last.map_or("none".into(), |m| format!("{m} x 1048576"));
        match self {
            Lang::Rust => json!({"static": mark, "heap": mark, "page": mark, "table": mark}),
            Lang::Js => json!({"global": mark, "closure": mark, "heap": heap}),
            Lang::Python => json!({"global": mark, "class": mark, "heap": heap}),
        }
    }
}

/// A host serving one kit as plugin `p` under the key `marks`.
struct Probe {
    host: TestHost,
    lang: Lang,
    /// The plugins folder: `p.wasm`, a copy of the kit.
    plugins: tempfile::TempDir,
    next_mark: AtomicU32,
    /// Rust: the memory size a fresh instance starts with, from the first request.
    pages: OnceLock<String>,
}

impl Probe {
    async fn start(lang: Lang, settings: &str) -> Option<Probe> {
        let kit = lang.kit()?;
        let plugins = tempfile::tempdir().unwrap();
        std::fs::copy(&kit, plugins.path().join("p.wasm")).unwrap();
        let host = TestHost::start(plugins.path(), &tables(plugins.path(), settings, "")).await;
        Some(Probe {
            host,
            lang,
            plugins,
            next_mark: AtomicU32::new(1),
            pages: OnceLock::new(),
        })
    }

    /// One request with a mark of its own (and `then`, if given): its mark and answer.
    async fn ask(&self, then: Option<&str>) -> (String, Answer) {
        let mark = self.next_mark.fetch_add(1, Ordering::SeqCst).to_string();
        let inputs = match then {
            Some(then) => json!({"mark": mark, "then": then}),
            None => json!({"mark": mark}),
        };
        (mark.clone(), self.host.ask("marks", inputs).await)
    }

    /// Asks once, and fails unless the request found nothing.
    async fn sees_nothing(&self) {
        let (mark, answer) = self.ask(None).await;
        self.assert_nothing(&mark, &answer);
    }

    /// Fails unless `answer` is a 200 that found no earlier request's mark.
    fn assert_nothing(&self, mark: &str, answer: &Answer) {
        assert_eq!(
            answer.status,
            200,
            "{:?} mark {mark}: {}",
            self.lang,
            text(answer)
        );
        let mut data = answer.json()["data"].clone();
        if let Lang::Rust = self.lang {
            let pages = data["memory_pages"].as_str().unwrap().to_string();
            let first = self.pages.get_or_init(|| pages.clone());
            assert_eq!(
                &pages, first,
                "mark {mark}: a bigger memory at entry: {data}"
            );
            for (field, clean) in [
                ("leftovers", "0"),
                ("first_leftover", "none"),
                ("dirty", "0"),
            ] {
                assert_eq!(data[field], clean, "mark {mark}: {field} in {data}");
            }
            for field in ["memory_pages", "leftovers", "first_leftover", "dirty"] {
                data.as_object_mut().unwrap().remove(field);
            }
        }
        assert_eq!(
            data,
            self.lang.seen(None),
            "mark {mark} found an earlier request's"
        );
    }

    /// Asks once, and fails unless the request found the last request's
    /// marks everywhere it looks (and, in Rust, in the memory it starts with).
    async fn sees_the_last_mark(&self) {
        let (mark, answer) = self.ask(None).await;
        assert_eq!(answer.status, 200, "{}", text(&answer));
        let data = answer.json()["data"].clone();
        eprintln!("{:?}, a reused instance, mark {mark}: {data}", self.lang);
        let last = (mark.parse::<u32>().unwrap() - 1).to_string();
        for (field, want) in self.lang.seen(Some(&last)).as_object().unwrap() {
            assert_eq!(
                &data[field], want,
                "{:?} mark {mark}: {field} in {data}",
                self.lang
            );
        }
        if let Lang::Rust = self.lang {
            let number = |field: &str| data[field].as_str().unwrap().parse::<u64>().unwrap();
            assert!(
                number("leftovers") > 500,
                "the scan missed the marks: {data}"
            );
            let fresh: u64 = self
                .pages
                .get()
                .expect("a fresh request first")
                .parse()
                .unwrap();
            assert!(
                number("memory_pages") > fresh,
                "the memory did not keep its size: {data}"
            );
        }
    }

    /// Writes a new config (atomically) for the same plugins folder.
    fn rewrite_config(&self, settings: &str, more_keys: &str) {
        let path = self.host.dir.path().join("optech.toml");
        let staging = path.with_extension("toml.partial");
        let text = config_text(
            self.plugins.path(),
            &tables(self.plugins.path(), settings, more_keys),
        );
        std::fs::write(&staging, text).unwrap();
        std::fs::rename(&staging, &path).unwrap();
    }
}

/// The config after `[server]`'s first keys: a data folder whose compiled
/// components every host of this binary shares (the JS and Python kits are
/// compiled once, not per test), key `marks` to plugin `p` with `settings`.
fn tables(plugins: &Path, settings: &str, more_keys: &str) -> String {
    let shared = common::workspace().join("target/fresh-instances/compiled");
    std::fs::create_dir_all(&shared).unwrap();
    let data = plugins.join("data");
    if !data.exists() {
        std::fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink(&shared, data.join("compiled")).unwrap();
    }
    format!(
        "data_dir = {:?}\n[keys]\nmarks = \"p\"\n{more_keys}[plugins.p]\n{settings}\n",
        data.display().to_string()
    )
}

fn text(answer: &Answer) -> String {
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// The control: a reused instance does see the last request's marks, so the
/// probe can see state and the assertions below are not vacuous.
async fn reused_instances_see_the_last_mark(lang: Lang) {
    let Some(probe) = Probe::start(lang, "requests_per_instance = 100").await else {
        return;
    };
    probe.sees_nothing().await;
    for _ in 0..2 {
        probe.sees_the_last_mark().await;
    }
}

async fn one_request_after_another(lang: Lang) {
    let Some(probe) = Probe::start(lang, "").await else {
        return;
    };
    for _ in 0..5 {
        let (mark, answer) = probe.ask(None).await;
        eprintln!("{lang:?}, a fresh instance, mark {mark}: {}", text(&answer));
        probe.assert_nothing(&mark, &answer);
    }
}

async fn sixty_four_at_once(lang: Lang) {
    // A long timeout: 64 requests at once on a busy 2-core machine are slow,
    // and a late answer is not what this checks.
    let Some(probe) = Probe::start(lang, "timeout = \"60s\"").await else {
        return;
    };
    let probe = Arc::new(probe);
    probe.sees_nothing().await;
    for _round in 0..2 {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let probe = probe.clone();
            tasks.spawn(async move { probe.ask(None).await });
        }
        let mut answered = 0;
        while let Some(result) = tasks.join_next().await {
            let (mark, answer) = result.unwrap();
            probe.assert_nothing(&mark, &answer);
            answered += 1;
        }
        assert_eq!(answered, 64);
    }
}

async fn after_a_trap(lang: Lang) {
    let Some(probe) = Probe::start(lang, "").await else {
        return;
    };
    probe.sees_nothing().await;
    for _ in 0..2 {
        let started = Instant::now();
        let (_, answer) = probe.ask(Some("trap")).await;
        eprintln!(
            "{lang:?}, marked then trapped: {} after {:?}",
            text(&answer),
            started.elapsed()
        );
        assert_eq!(answer.status, 500, "{lang:?}: {}", text(&answer));
        assert_eq!(
            answer.error_code(),
            "plugin_trapped",
            "{lang:?}: {}",
            text(&answer)
        );
        probe.sees_nothing().await;
    }
}

async fn after_a_timeout(lang: Lang) {
    let Some(probe) = Probe::start(lang, "timeout = \"1s\"").await else {
        return;
    };
    probe.sees_nothing().await;
    for _ in 0..2 {
        let (_, answer) = probe.ask(Some("spin")).await;
        assert_eq!(answer.status, 504, "{lang:?}: {}", text(&answer));
        assert_eq!(answer.error_code(), "plugin_timeout");
        probe.sees_nothing().await;
    }
}

/// From reuse to the default by a config edit, then a new component dropped
/// in, while one request after another keeps coming: once the edit is
/// served, no request sees an earlier one's marks.
async fn across_a_hot_reload(lang: Lang) {
    let Some(probe) = Probe::start(lang, "requests_per_instance = 100").await else {
        return;
    };
    let probe = Arc::new(probe);
    probe.sees_nothing().await;
    probe.sees_the_last_mark().await;

    let answers = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (probe, answers, stop) = (probe.clone(), answers.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let (mark, answer) = probe.ask(None).await;
                answers.lock().unwrap().push((sent, mark, answer));
            }
        })
    };

    probe.rewrite_config("", "echo = \"p\"\n");
    common::wait_until(
        "the edited config served",
        Duration::from_secs(30),
        || async { probe.host.ask("echo", json!({})).await.status == 200 },
    )
    .await;
    let edited = Instant::now();

    let kit = std::fs::read(probe.plugins.path().join("p.wasm")).unwrap();
    let new = with_custom_section(&kit);
    let staging = probe.plugins.path().join("p.wasm.partial");
    std::fs::write(&staging, &new).unwrap();
    std::fs::rename(&staging, probe.plugins.path().join("p.wasm")).unwrap();
    let sha = optech_host::loader::content_hash(&new);
    let admin = probe.host.admin_url();
    common::wait_until(
        "the new component served",
        Duration::from_secs(120),
        || async { common::plugin_health(&admin, "p").await["sha256"] == sha },
    )
    .await;
    let swapped = Instant::now();
    let after = |at: Instant| {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(sent, ..)| *sent > at)
            .count()
    };
    common::wait_until(
        "requests after the swap",
        Duration::from_secs(60),
        || async { after(swapped) >= 5 },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();

    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let mut checked = 0;
    for (sent, mark, answer) in &answers {
        assert_eq!(answer.status, 200, "mark {mark}: {}", text(answer));
        if *sent > edited {
            probe.assert_nothing(mark, answer);
            checked += 1;
        }
    }
    eprintln!(
        "{lang:?}: {} requests over the reload, {checked} after the edit was served",
        answers.len()
    );
    for _ in 0..3 {
        probe.sees_nothing().await;
    }
}

/// The same component with a custom section appended: other bytes (another
/// version to the host, compiled apart), the same code.
fn with_custom_section(component: &[u8]) -> Vec<u8> {
    let name = b"optech-test-variant";
    let mut out = component.to_vec();
    out.push(0); // a custom section
    out.push(u8::try_from(1 + name.len()).unwrap()); // its size (one LEB128 byte)
    out.push(u8::try_from(name.len()).unwrap());
    out.extend_from_slice(name);
    out
}

macro_rules! in_every_language {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::Lang;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rust() {
                super::$scenario(Lang::Rust).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn typescript() {
                super::$scenario(Lang::Js).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn python() {
                super::$scenario(Lang::Python).await;
            }
        }
    )*};
}

in_every_language!(
    reused_instances_see_the_last_mark,
    one_request_after_another,
    sixty_four_at_once,
    after_a_trap,
    after_a_timeout,
    across_a_hot_reload,
);
