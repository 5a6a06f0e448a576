//! The admin console: pages on the admin listener that show what the host
//! did (Requests, Charts, Deliveries, Plugins) and let an operator try a key.
//!
//! It owns no state of its own: it reads snapshots of the request ring
//! (`recent`), the router, the reloader and the outbox. Its pages are
//! rendered on the server (`pages`); its scripts and styles are embedded in
//! the binary (`assets/`: htmx and uPlot, vendored with their licences, and
//! our own `console.js` and `console.css`), served under a strict
//! Content-Security-Policy: scripts and styles from this origin only, no
//! inline script or style, nothing from another origin. `access` decides who
//! may use it; the public port never serves it.

pub mod access;
mod pages;
pub mod try_it;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;

pub use access::Access;
use pages::{BucketUsage, PluginRow, TryDelivery, TryOutcome};
pub use try_it::TryIt;

use crate::config::Mode;
use crate::jobs::Jobs;
use crate::recent::{Filter, Recent};
use crate::reload::ReloadStatus;
use crate::reload::Reloader;
use crate::router::Router;
use crate::store::Stores;

/// Rows the Requests page shows at most.
const ROWS: usize = 200;
/// Records of each kind the Deliveries page lists.
const RECORDS: usize = 100;

/// What the console reads.
pub struct Console {
    pub router: Arc<Router>,
    pub reloader: Arc<Reloader>,
    pub jobs: Arc<Jobs>,
    pub recent: Arc<Recent>,
    pub access: Access,
    pub try_it: TryIt,
    /// Plugins' key-value store, for the sizes of their buckets.
    pub stores: Stores,
    /// Whether the outbox may hold records (some plugin answers later, or an
    /// earlier run left records): otherwise the Deliveries page does not open it.
    pub answers_later: bool,
}

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, to merge into the admin listener's app.
pub fn routes() -> axum::Router<Arc<Console>> {
    axum::Router::new()
        .route("/", get(requests_page))
        .route("/requests/rows", get(request_rows))
        .route("/requests/{seq}", get(request_page))
        .route("/requests/{seq}/detail", get(request_detail))
        .route("/charts", get(charts_page))
        .route("/charts/data", get(chart_data))
        .route("/deliveries", get(deliveries_page))
        .route("/deliveries/table", get(deliveries_table))
        .route("/plugins", get(plugins_page))
        .route("/plugins/table", get(plugins_table))
        .route("/try", get(try_page).post(try_send))
        .route("/try/{token}", get(try_poll))
        .route("/login", post(login))
        .route("/assets/{name}", get(asset))
}

/// Adds the headers every console answer carries.
pub fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn html(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// The answer to a browser without the token: the token form only, 401.
pub fn login_page() -> Response {
    let mut response = html(pages::login(None));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

#[derive(Debug, Default, Deserialize)]
struct FilterQuery {
    key: Option<String>,
    status: Option<String>,
    id: Option<String>,
    /// The version the page shows; the same one answers 204 (nothing new).
    v: Option<u64>,
}

impl FilterQuery {
    fn filter(&self) -> Filter {
        Filter {
            key: self.key.clone(),
            status: self.status.clone(),
            id: self.id.clone(),
        }
    }
}

fn keys(console: &Console) -> Vec<String> {
    console
        .router
        .snapshot()
        .iter()
        .map(|(k, _)| k.to_string())
        .collect()
}

async fn requests_page(
    State(console): State<Arc<Console>>,
    Query(query): Query<FilterQuery>,
) -> Response {
    let recent = &console.recent;
    let filter = query.filter();
    let version = recent.version();
    let rows = pages::request_rows(&recent.list(&filter, ROWS), version);
    html(pages::requests_page(
        rows,
        &filter,
        &keys(&console),
        recent.capacity(),
        &recent.refusals(),
    ))
}

async fn request_rows(
    State(console): State<Arc<Console>>,
    Query(query): Query<FilterQuery>,
) -> Response {
    let recent = &console.recent;
    let version = recent.version();
    if query.v == Some(version) {
        return StatusCode::NO_CONTENT.into_response();
    }
    html(pages::request_rows(
        &recent.list(&query.filter(), ROWS),
        version,
    ))
}

/// An entry by its number; anything else in the URL names none.
fn entry(console: &Console, seq: &str) -> Option<crate::recent::Entry> {
    console.recent.get(seq.parse().ok()?)
}

async fn request_page(State(console): State<Arc<Console>>, Path(seq): Path<String>) -> Response {
    let entry = entry(&console, &seq);
    html(pages::request_page(
        entry.as_ref(),
        pages::request_detail(entry.as_ref()),
    ))
}

async fn request_detail(State(console): State<Arc<Console>>, Path(seq): Path<String>) -> Response {
    html(pages::request_detail(entry(&console, &seq).as_ref()))
}

async fn charts_page() -> Response {
    html(pages::charts_page())
}

async fn chart_data(State(console): State<Arc<Console>>) -> Response {
    axum::Json(console.recent.charts()).into_response()
}

async fn deliveries_page(State(console): State<Arc<Console>>) -> Response {
    html(pages::deliveries_page(deliveries(&console).await))
}

async fn deliveries_table(State(console): State<Arc<Console>>) -> Response {
    html(deliveries(&console).await)
}

async fn deliveries(console: &Console) -> Markup {
    if !console.answers_later && !console.jobs.has_records() {
        return pages::deliveries_table(
            Err(
                "No plugin answers later (every key is in sync mode), so nothing is delivered to a link.",
            ),
            &|_| None,
        );
    }
    let listing = console.jobs.listing(RECORDS).await;
    match listing {
        Ok(listing) => {
            let recent = &console.recent;
            let next = |r: &crate::outbox::RecordSummary| {
                // By id: the record carries no entry number (it may come
                // from another run or replica). Only signed requests have entries.
                let entry = recent.find(r.request_id.as_deref()?)?;
                entry.attempts.last()?.next_at
            };
            pages::deliveries_table(Ok(&listing), &next)
        }
        Err(e) => {
            let message = format!("The outbox cannot be read right now: {e}");
            pages::deliveries_table(Err(&message), &|_| None)
        }
    }
}

async fn plugins_page(State(console): State<Arc<Console>>) -> Response {
    html(pages::plugins_page(plugins(&console).await))
}

async fn plugins_table(State(console): State<Arc<Console>>) -> Response {
    html(plugins(&console).await)
}

/// How long the Plugins page waits on the store for bucket sizes: a store
/// that is down must not hold the page.
const USAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What each granted bucket holds now, by name (one look per bucket, however
/// many plugins share it).
async fn bucket_usage(console: &Console, rows: &[PluginRow]) -> BTreeMap<String, BucketUsage> {
    let buckets: std::collections::BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.stores.iter().map(|(b, _)| b.as_str()))
        .collect();
    let mut usage = BTreeMap::new();
    for bucket in buckets {
        let found = tokio::time::timeout(USAGE_WAIT, console.stores.backend().usage(bucket)).await;
        let shown = match found {
            Ok(Ok(u)) => BucketUsage::Holds {
                keys: u.keys,
                bytes: u.bytes,
            },
            Ok(Err(e)) => BucketUsage::Unknown(e.to_string()),
            Err(_) => BucketUsage::Unknown("the store did not answer within 1 s".into()),
        };
        usage.insert(bucket.to_string(), shown);
    }
    usage
}

async fn plugins(console: &Console) -> Markup {
    let (mut rows, status) = plugin_rows(console);
    let usage = bucket_usage(console, &rows).await;
    for row in &mut rows {
        for (bucket, shown) in &mut row.stores {
            if let Some(found) = usage.get(bucket) {
                *shown = found.clone();
            }
        }
    }
    pages::plugins_table(&rows, &status)
}

fn plugin_rows(console: &Console) -> (Vec<PluginRow>, ReloadStatus) {
    let status = console.reloader.status();
    let mut rows: BTreeMap<String, PluginRow> = BTreeMap::new();
    for (key, plugin) in console.router.snapshot().iter() {
        let s = &plugin.settings;
        let row = rows.entry(s.name.clone()).or_insert_with(|| {
            let mut limits = vec![
                ("timeout", format!("{:?}", s.timeout)),
                ("memory", size(s.memory)),
                ("max_output", size(s.max_output)),
            ];
            if s.mode == Mode::Auto {
                limits.push(("sync_budget", format!("{:?}", s.sync_budget)));
            }
            if let Some(n) = s.max_in_flight {
                limits.push(("max_in_flight", n.to_string()));
            }
            if s.requests_per_instance > 1 {
                limits.push(("requests_per_instance", s.requests_per_instance.to_string()));
            }
            let mark = format!("plugin `{}`", s.name);
            PluginRow {
                name: s.name.clone(),
                keys: Vec::new(),
                mode: s.mode,
                limits,
                source: s.source.to_string(),
                registry: s
                    .source
                    .oci()
                    .and_then(|_| console.reloader.registry().status(&s.name)),
                sha256: plugin.sha256.clone(),
                loaded_at: plugin.loaded_at,
                stores: s
                    .stores
                    .iter()
                    .map(|b| (b.clone(), BucketUsage::Unknown(String::new())))
                    .collect(),
                in_flight: plugin.stats.running(),
                calls: plugin.stats.started(),
                problems: status
                    .problems
                    .iter()
                    .filter(|p| p.starts_with(&mark))
                    .cloned()
                    .collect(),
            }
        });
        row.keys.push(key.to_string());
    }
    (rows.into_values().collect(), status)
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

async fn try_page(State(console): State<Arc<Console>>) -> Response {
    html(pages::try_page(&keys(&console)))
}

#[derive(Debug, Deserialize)]
struct TryForm {
    key: String,
    #[serde(default)]
    inputs: String,
}

async fn try_send(State(console): State<Arc<Console>>, Form(form): Form<TryForm>) -> Response {
    let sent = match console.try_it.send(&form.key, &form.inputs).await {
        Ok(sent) => sent,
        Err(message) => return html(pages::try_error(&message)),
    };
    // The id is the one "Send" made up, so it names this request's entry.
    let entry = console.recent.find(&sent.request_id);
    let delivery = match sent.poll {
        Some(token) => TryDelivery::Waiting {
            poll: format!("/try/{token:x}"),
        },
        None => TryDelivery::None,
    };
    html(pages::try_result(&TryOutcome {
        status: sent.status.as_u16(),
        status_text: sent.status.canonical_reason().unwrap_or(""),
        request_id: &sent.request_id,
        entry: entry.as_ref().map(|e| e.seq),
        answer: &sent.answer,
        signed: sent.signed,
        took: sent.took,
        timings: entry.map(|e| e.timings),
        delivery,
    }))
}

async fn try_poll(State(console): State<Arc<Console>>, Path(token): Path<String>) -> Response {
    let waiting = u64::from_str_radix(&token, 16)
        .ok()
        .and_then(|t| console.try_it.waiting(t));
    let markup = match waiting {
        None => pages::try_error("This try is no longer kept; send it again."),
        Some(try_it::Waiting::Pending) => {
            // Nothing new: htmx keeps what it shows on a 204.
            return StatusCode::NO_CONTENT.into_response();
        }
        Some(try_it::Waiting::Delivered(delivered)) => pages::try_delivered(&delivered),
        Some(try_it::Waiting::TimedOut) => pages::try_timed_out(try_it::WAIT),
    };
    html(markup)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(console): State<Arc<Console>>, Form(form): Form<LoginForm>) -> Response {
    let access = &console.access;
    match access.set_cookie() {
        Some(cookie) if access.is_token(form.token.trim()) => {
            let mut response = StatusCode::OK.into_response();
            let headers = response.headers_mut();
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                headers.insert(header::SET_COOKIE, cookie);
            }
            // htmx follows this with a full page load of the console.
            headers.insert("hx-redirect", HeaderValue::from_static("/"));
            response
        }
        Some(_) => {
            let mut response = html(maud::html! { "That is not the admin token." });
            *response.status_mut() = StatusCode::OK;
            response
        }
        None => html(maud::html! { "This console needs no token." }),
    }
}

/// The embedded files: `(name, content type, bytes)`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx-2.0.11.min.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/uPlot-1.6.32.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/uPlot-1.6.32.min.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("assets/favicon.svg"),
    ),
    (
        "LICENSE-htmx",
        "text/plain; charset=utf-8",
        include_bytes!("assets/LICENSE-htmx"),
    ),
    (
        "LICENSE-uPlot",
        "text/plain; charset=utf-8",
        include_bytes!("assets/LICENSE-uPlot"),
    ),
];

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Whether a path is one of the console's (for the access check).
pub fn is_asset(path: &str) -> bool {
    path.starts_with("/assets/")
}

/// Whether a browser asked for a page (not a fragment or data).
pub fn wants_page(headers: &HeaderMap) -> bool {
    headers.get("hx-request").is_none()
        && headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}
