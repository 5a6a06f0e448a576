//! The console in a real browser: Debian's Chromium, driven over WebDriver by
//! chromedriver. Rows appear without a reload, filters narrow them, a row
//! opens its log lines, "Try it" shows an async key's delivered answer, a
//! broken plugin's reload error shows under Plugins, and the charts draw, all
//! under the console's strict Content-Security-Policy (so every script that
//! ran came from the admin listener itself): every page is checked for CSP
//! violations, heard by a listener installed before the page's own scripts,
//! and an injected inline script shows that the listener hears one. A
//! screenshot of each page is kept in `target/console-screenshots/`.
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them); without
//! them the test says so and passes, except in CI (`OPTECH_REQUIRE_BROWSER`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Receiver, TestHost, testkit_wasm};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// Finds a program on the PATH or at one of `fallbacks`.
fn program(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn driver() -> Option<(Driver, PathBuf)> {
    let chromedriver = program("chromedriver", &["/usr/lib/chromium/chromedriver"]);
    let chromium = program("chromium", &["/usr/lib/chromium/chromium"]);
    let (Some(chromedriver), Some(chromium)) = (chromedriver, chromium) else {
        assert!(
            std::env::var_os("OPTECH_REQUIRE_BROWSER").is_none(),
            "chromium and chromedriver are not installed, and CI requires the browser test"
        );
        eprintln!("skipped: install chromium and chromium-driver to run the browser test");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    common::wait_until("chromedriver listens", Duration::from_secs(20), || {
        let status = status.clone();
        async move { reqwest::get(&status).await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    Some((Driver { child, url }, chromium))
}

async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// Records every Content-Security-Policy violation of the session's pages: a
/// listener the DevTools protocol installs in every new document before any
/// of its own scripts runs (so a violation while a page loads is heard too),
/// keeping what it hears in the origin's `sessionStorage` across navigations.
async fn watch_csp(driver: &Driver, browser: &Client) {
    let session = browser
        .session_id()
        .await
        .unwrap()
        .expect("a WebDriver session id");
    let listener = r#"
        document.addEventListener('securitypolicyviolation', function (e) {
            try {
                var seen = JSON.parse(sessionStorage.getItem('csp-violations') || '[]');
                seen.push(e.effectiveDirective + ' blocked ' + (e.blockedURI || '?') + ' on ' +
                    e.documentURI + (e.sourceFile ? ' (' + e.sourceFile + ':' + e.lineNumber + ')' : ''));
                sessionStorage.setItem('csp-violations', JSON.stringify(seen));
            } catch (_) {}
        });
    "#;
    let command = json!({
        "cmd": "Page.addScriptToEvaluateOnNewDocument",
        "params": {"source": listener},
    });
    let response = reqwest::Client::new()
        .post(format!("{}/session/{session}/goog/cdp/execute", driver.url))
        .header("content-type", "application/json")
        .body(command.to_string())
        .send()
        .await
        .expect("chromedriver answers");
    let status = response.status();
    assert!(
        status.is_success(),
        "installing the CSP listener: {status} {}",
        response.text().await.unwrap_or_default()
    );
}

/// The CSP violations heard so far in this session.
async fn csp_violations(browser: &Client) -> Vec<String> {
    let seen = browser
        .execute(
            "return JSON.parse(sessionStorage.getItem('csp-violations') || '[]')",
            vec![],
        )
        .await
        .expect("reading the CSP violations");
    serde_json::from_value(seen).expect("a list of violations")
}

/// Fails if any page so far broke the console's CSP.
async fn no_csp_violations(browser: &Client, page: &str) {
    let seen = csp_violations(browser).await;
    assert!(seen.is_empty(), "{page}: CSP violations: {seen:#?}");
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// The text of the first element matching `css`, waiting up to `limit` for
/// `check` to hold of it (the page updates itself: no reload here).
async fn wait_text(
    browser: &Client,
    css: &str,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
            && check(&text)
        {
            return text;
        }
        if start.elapsed() > limit {
            let source = browser.source().await.unwrap_or_default();
            panic!("{css}: not as expected within {limit:?}; the page:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The request ids of the rows shown now.
async fn row_ids(browser: &Client) -> Vec<String> {
    let mut ids = Vec::new();
    for row in browser
        .find_all(Locator::Css("#rows tr[data-request-id]"))
        .await
        .unwrap_or_default()
    {
        if let Ok(Some(id)) = row.attr("data-request-id").await {
            ids.push(id);
        }
    }
    ids
}

async fn wait_rows(browser: &Client, what: &str, check: impl Fn(&[String]) -> bool) {
    let start = std::time::Instant::now();
    loop {
        let ids = row_ids(browser).await;
        if check(&ids) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: rows are {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(browser: &Client, locator: Locator<'_>) {
    browser.find(locator).await.unwrap().click().await.unwrap();
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    let input = browser.find(Locator::Css(css)).await.unwrap();
    input.clear().await.unwrap();
    if !text.is_empty() {
        input.send_keys(text).await.unwrap();
    }
}

async fn ask(host: &TestHost, id: &str, body: serde_json::Value) -> u16 {
    host.ask_with_id(id, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium() {
    let Some((driver, chromium)) = driver().await else {
        return;
    };
    common::build_plugins().as_ref().unwrap();
    // Plugins of its own, so one can be broken.
    let plugins = tempfile::tempdir().unwrap();
    for name in ["testkit", "breakable"] {
        std::fs::copy(testkit_wasm(), plugins.path().join(format!("{name}.wasm"))).unwrap();
    }
    // A back end the `fetch` key's plugin calls, for the waterfall.
    let back_end = Receiver::start().await;
    let host = TestHost::start(
        plugins.path(),
        &format!(
            "link_ttl = \"1m\"\n\
             [keys]\n\"log\" = \"testkit\"\n\"invalid\" = \"testkit\"\n\"echo.async\" = \"async\"\n\
             \"fail.async\" = \"async\"\n\"version\" = \"breakable\"\n\"fetch\" = \"caller\"\n\
             [plugins.async]\nsource = \"testkit.wasm\"\nmode = \"async\"\n\
             [plugins.caller]\nsource = \"testkit.wasm\"\nallowed_hosts = [{:?}]\n",
            back_end.base
        ),
    )
    .await;
    let admin = host.admin_url();
    let profile = tempfile::tempdir().unwrap();
    let browser = browser(&driver, &chromium, profile.path()).await;
    watch_csp(&driver, &browser).await;

    // Requests: three signed requests with known ids appear without a reload.
    browser.goto(&format!("{admin}/")).await.unwrap();
    wait_text(&browser, "h1", Duration::from_secs(10), |t| t == "Requests").await;
    assert_eq!(
        ask(
            &host,
            "browser-ok-1",
            json!({"key": "log", "inputs": {"lines": "2"}})
        )
        .await,
        200
    );
    assert_eq!(
        ask(
            &host,
            "browser-bad-1",
            json!({"key": "invalid", "inputs": {}})
        )
        .await,
        400
    );
    assert_eq!(
        ask(
            &host,
            "browser-ok-2",
            json!({"key": "log", "inputs": {"lines": "1"}})
        )
        .await,
        200
    );
    wait_rows(&browser, "three rows appear", |ids| {
        ["browser-ok-1", "browser-bad-1", "browser-ok-2"]
            .iter()
            .all(|id| ids.iter().any(|i| i == id))
    })
    .await;
    for (id, status) in [
        ("browser-ok-1", "200"),
        ("browser-bad-1", "400"),
        ("browser-ok-2", "200"),
    ] {
        let css = format!("tr[data-request-id=\"{id}\"] td:nth-child(6)");
        wait_text(&browser, &css, Duration::from_secs(5), |t| t == status).await;
    }
    // Deliveries: one that keeps retrying (nothing listens at its link), one that failed for good.
    let gone = Receiver::start().await;
    gone.script(&[(410, None)]);
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_eq!(
        ask(
            &host,
            "browser-retrying",
            json!({"key": "echo.async", "inputs": {"a": "1"},
            "link": format!("http://127.0.0.1:{closed_port}/ingest/x")})
        )
        .await,
        202
    );
    assert_eq!(
        ask(
            &host,
            "browser-gone",
            json!({"key": "echo.async", "inputs": {"a": "2"},
            "link": gone.link("gone")})
        )
        .await,
        202
    );
    screenshot(&browser, "requests").await;

    // Filters: by key, then by request id.
    type_into(&browser, "#f-key", "invalid").await;
    wait_rows(&browser, "filtered by key", |ids| ids == ["browser-bad-1"]).await;
    type_into(&browser, "#f-key", "").await;
    type_into(&browser, "#f-id", "browser-ok-2").await;
    wait_rows(&browser, "filtered by request id", |ids| {
        ids == ["browser-ok-2"]
    })
    .await;
    type_into(&browser, "#f-id", "").await;
    wait_rows(&browser, "unfiltered", |ids| ids.len() >= 5).await;
    no_csp_violations(&browser, "Requests").await;

    // A row opens its detail: the plugin's log lines and the timings.
    click(
        &browser,
        Locator::Css("tr[data-request-id=\"browser-ok-1\"] a"),
    )
    .await;
    wait_text(&browser, "pre.log", Duration::from_secs(10), |t| {
        t.contains("log line 0") && t.contains("stdout line 1")
    })
    .await;
    wait_text(
        &browser,
        "table.timings tbody",
        Duration::from_secs(5),
        |t| t.contains("ms"),
    )
    .await;
    screenshot(&browser, "request").await;
    no_csp_violations(&browser, "a request's detail").await;

    // The waterfall: where a call's time went, its outbound request included,
    // from the host's own records (no collector).
    let port = back_end.base.rsplit(':').next().unwrap().to_string();
    assert_eq!(
        ask(
            &host,
            "browser-waterfall",
            json!({"key": "fetch", "inputs": {"url": back_end.link("orders")}})
        )
        .await,
        200
    );
    browser.goto(&format!("{admin}/")).await.unwrap();
    wait_rows(&browser, "the fetch row appears", |ids| {
        ids.iter().any(|i| i == "browser-waterfall")
    })
    .await;
    click(
        &browser,
        Locator::Css("tr[data-request-id=\"browser-waterfall\"] a"),
    )
    .await;
    wait_text(
        &browser,
        "table.waterfall tbody",
        Duration::from_secs(10),
        |t| {
            [
                "request",
                "queue",
                "instantiate",
                "handler",
                &format!("GET 127.0.0.1:{port}"),
            ]
            .iter()
            .all(|part| t.contains(part))
                && t.contains("200")
        },
    )
    .await;
    let bars = browser
        .find_all(Locator::Css("table.waterfall rect"))
        .await
        .unwrap()
        .len();
    assert_eq!(
        bars, 5,
        "one bar per part: request, queue, instantiate, handler, the call"
    );
    screenshot(&browser, "waterfall").await;
    no_csp_violations(&browser, "a request's waterfall").await;

    // Try it: an async key, and the answer delivered to the link the host served.
    browser.goto(&format!("{admin}/try")).await.unwrap();
    wait_text(&browser, "h1", Duration::from_secs(10), |t| t == "Try it").await;
    click(
        &browser,
        Locator::Css("#try-key option[value=\"echo.async\"]"),
    )
    .await;
    type_into(&browser, "#try-inputs", r#"{"hello": "from the browser"}"#).await;
    click(&browser, Locator::XPath("//button[text()='Send']")).await;
    wait_text(
        &browser,
        ".try-result .status",
        Duration::from_secs(10),
        |t| t.contains("202"),
    )
    .await;
    wait_text(&browser, "#try-delivered", Duration::from_secs(20), |t| {
        t.contains("from the browser")
    })
    .await;
    screenshot(&browser, "try-it").await;
    no_csp_violations(&browser, "Try it").await;

    // Deliveries: the retrying one and the failed one, by their links' tags.
    gone.wait_for(1, Duration::from_secs(10)).await;
    browser.goto(&format!("{admin}/deliveries")).await.unwrap();
    wait_text(&browser, "#deliveries", Duration::from_secs(15), |t| {
        t.contains("browser-retrying") && t.contains("browser-gone") && t.contains("final")
    })
    .await;
    let page = browser.source().await.unwrap();
    assert!(!page.contains("/ingest/"), "a link's path is shown: {page}");
    screenshot(&browser, "deliveries").await;
    no_csp_violations(&browser, "Deliveries").await;

    // Plugins: a broken .wasm's reload error, while the last good version serves.
    browser.goto(&format!("{admin}/plugins")).await.unwrap();
    wait_text(&browser, "h1", Duration::from_secs(10), |t| t == "Plugins").await;
    let broken = plugins.path().join(".breakable.tmp");
    std::fs::write(&broken, b"this is not a component").unwrap();
    std::fs::rename(&broken, plugins.path().join("breakable.wasm")).unwrap();
    wait_text(
        &browser,
        "tr[data-plugin=\"breakable\"]",
        Duration::from_secs(20),
        |t| t.contains("not a WebAssembly component"),
    )
    .await;
    screenshot(&browser, "plugins").await;
    no_csp_violations(&browser, "Plugins").await;

    // Charts: drawn by uPlot from the in-memory buckets.
    browser.goto(&format!("{admin}/charts")).await.unwrap();
    browser
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#chart-rps canvas"))
        .await
        .expect("the requests chart is drawn");
    browser
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#chart-errors canvas"))
        .await
        .expect("the errors chart is drawn");
    let legend = wait_text(&browser, "#chart-rps", Duration::from_secs(10), |t| {
        t.contains("log")
    })
    .await;
    assert!(legend.contains("echo.async"), "{legend}");
    screenshot(&browser, "charts").await;
    no_csp_violations(&browser, "Charts").await;

    // The watch hears a violation: an inline script, refused by the CSP.
    browser
        .execute(
            "var s = document.createElement('script'); s.textContent = 'window.inlined = 1'; \
             document.head.appendChild(s);",
            vec![],
        )
        .await
        .unwrap();
    common::wait_until(
        "the injected inline script is heard as a CSP violation",
        Duration::from_secs(5),
        || async {
            csp_violations(&browser)
                .await
                .iter()
                .any(|v| v.starts_with("script-src"))
        },
    )
    .await;
    let ran = browser
        .execute("return window.inlined === 1", vec![])
        .await
        .unwrap();
    assert_eq!(ran, json!(false), "an inline script ran");

    browser.close().await.unwrap();
    drop(driver);
}

/// With `admin_token`, a browser without the cookie sees only the token form;
/// typing the token once opens the console, and the cookie keeps it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_form_in_chromium() {
    let Some((driver, chromium)) = driver().await else {
        return;
    };
    common::build_plugins().as_ref().unwrap();
    let token = "browser-admin-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optech.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nadmin_listen = \"127.0.0.1:0\"\nplugins_dir = {:?}\ndata_dir = {:?}\n\
             admin_token = {{ env = \"BROWSER_ADMIN_TOKEN\" }}\n[keys]\n\"log\" = \"testkit\"\n",
            common::testkit_dir().display().to_string(),
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let env = optech_host::credentials::Environment::from_pairs([("BROWSER_ADMIN_TOKEN", token)]);
    let config = optech_host::config::Config::load_with(&path, &env).unwrap();
    let signer = optech_host::signature::Signer::new(common::SECRET.as_bytes(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = optech_host::Host::start(
        &config,
        optech_host::Identity::new(signer, common::CLIENT_ID),
        listener,
    )
    .await
    .unwrap();
    let admin = format!("http://{}", host.admin_addr().unwrap());
    let profile = tempfile::tempdir().unwrap();
    let browser = browser(&driver, &chromium, profile.path()).await;
    watch_csp(&driver, &browser).await;

    browser.goto(&format!("{admin}/plugins")).await.unwrap();
    wait_text(&browser, "h1", Duration::from_secs(10), |t| {
        t == "Admin token"
    })
    .await;
    assert!(
        browser.find(Locator::Css("table")).await.is_err(),
        "data shown without the token"
    );
    screenshot(&browser, "token").await;
    no_csp_violations(&browser, "the token form").await;
    type_into(&browser, "#token", "wrong-token").await;
    click(&browser, Locator::Css("form button")).await;
    wait_text(&browser, "#login-error", Duration::from_secs(10), |t| {
        t.contains("not the admin token")
    })
    .await;
    type_into(&browser, "#token", token).await;
    click(&browser, Locator::Css("form button")).await;
    wait_text(&browser, "h1", Duration::from_secs(10), |t| t == "Requests").await;
    // The cookie keeps it open, and scripts cannot read it (HttpOnly).
    browser.goto(&format!("{admin}/plugins")).await.unwrap();
    wait_text(&browser, "h1", Duration::from_secs(10), |t| t == "Plugins").await;
    let visible = browser
        .execute("return document.cookie", vec![])
        .await
        .unwrap();
    assert_eq!(visible, json!(""), "the cookie is readable by scripts");
    no_csp_violations(&browser, "Requests and Plugins after the token").await;
    browser.close().await.unwrap();
    drop(driver);
    host.shutdown().await.unwrap();
}
