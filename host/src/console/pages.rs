//! The console's HTML, rendered on the server with `maud` (which escapes
//! every value it interpolates). Pages link only to `/assets/` of this
//! listener: no inline script or style, nothing from another origin.

use std::time::{Duration, SystemTime};

use maud::{DOCTYPE, Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::cli::send::Delivered;
use crate::config::Mode;
use crate::outbox::{Listing, RecordSummary, State};
use crate::recent::{Entry, Filter, MAX_CALLS, Timings};
use crate::registry::SourceStatus;
use crate::reload::ReloadStatus;
use crate::telemetry;

/// Which page a link in the navigation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Requests,
    Charts,
    Deliveries,
    Plugins,
    Try,
}

/// htmx's settings: no injected `<style>` (blocked by the CSP anyway), no
/// `eval`, no scripts from swapped content.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyCacheSize":0,"refreshOnHistoryMiss":true}"#;

/// Characters left as they are in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The detail page of the entry numbered `seq`.
pub fn request_href(seq: u64) -> String {
    format!("/requests/{seq}")
}

/// The Requests page filtered by a request id (which may name several
/// entries: the caller chose it).
pub fn requests_with_id(id: &str) -> String {
    format!("/?id={}", utf8_percent_encode(id, SEGMENT))
}

pub fn layout(title: &str, nav: Nav, body: Markup) -> Markup {
    let link = |href: &str, label: &str, page: Nav| {
        html! {
            a href=(href) aria-current=[(nav == page).then_some("page")] { (label) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=(HTMX_CONFIG);
                title { (title) " · optech console" }
                link rel="icon" href="/assets/favicon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/assets/uPlot.min.css";
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/htmx.min.js" defer {}
                script src="/assets/uPlot.iife.min.js" defer {}
                script src="/assets/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "optech" }
                    nav {
                        (link("/", "Requests", Nav::Requests))
                        (link("/charts", "Charts", Nav::Charts))
                        (link("/deliveries", "Deliveries", Nav::Deliveries))
                        (link("/plugins", "Plugins", Nav::Plugins))
                        (link("/try", "Try it", Nav::Try))
                    }
                }
                main { (body) }
            }
        }
    }
}

/// Only the token form: what a browser without the cookie gets.
pub fn login(error: Option<&str>) -> Markup {
    let body = html! {
        section.login {
            h1 { "Admin token" }
            p { "This console needs the admin token (" code { "[server] admin_token" } ", or the one this host wrote to its log at start-up)." }
            form hx-post="/login" hx-target="#login-error" hx-swap="innerHTML" {
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Open the console" }
            }
            p #login-error .error { @if let Some(error) = error { (error) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="htmx-config" content=(HTMX_CONFIG);
                title { "Admin token · optech console" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/htmx.min.js" defer {}
            }
            body { main { (body) } }
        }
    }
}

fn clock(at: SystemTime) -> String {
    let text = humantime::format_rfc3339_millis(at).to_string();
    text.get(11..23).unwrap_or(&text).to_string()
}

fn full_time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

pub fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

fn ago(at: SystemTime) -> String {
    let age = SystemTime::now().duration_since(at).unwrap_or_default();
    let secs = age.as_secs();
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

fn mode(mode: Option<Mode>) -> &'static str {
    mode.map_or("", Mode::as_str)
}

fn status_text(status: Option<u16>) -> String {
    status.map_or_else(|| "running".into(), |s| s.to_string())
}

fn status_class(status: Option<u16>) -> &'static str {
    match status {
        None => "s-running",
        Some(200..=299) => "s-ok",
        Some(400..=499) => "s-client",
        Some(_) => "s-server",
    }
}

pub fn requests_page(
    rows: Markup,
    filter: &Filter,
    keys: &[String],
    capacity: usize,
    refusals: &[(&'static str, u64)],
) -> Markup {
    let refused: u64 = refusals.iter().map(|(_, n)| n).sum();
    let body = html! {
        h1 { "Requests" }
        @if capacity == 0 {
            p.note { "This host keeps no requests: " code { "[server] console_requests = 0" } "." }
        } @else {
            p.note { "The last " (capacity) " signed requests this host served, newest first; new ones appear as they arrive. Open a row for its timings, log lines and deliveries." }
        }
        @if refused > 0 {
            p.note #refused {
                (refused) " request(s) refused before their signature was checked are counted, not listed (anyone can send them): "
                @for (i, (code, n)) in refusals.iter().enumerate() {
                    @if i > 0 { ", " }
                    code { (code) } " " (n)
                }
                "."
            }
        }
        form #filters .filters method="get" action="/"
            hx-get="/requests/rows" hx-target="#rows" hx-swap="outerHTML"
            hx-trigger="input changed delay:250ms, change, submit" {
            label for="f-key" { "Key" }
            input #f-key name="key" list="known-keys" value=(filter.key.as_deref().unwrap_or("")) autocomplete="off";
            label for="f-status" { "Status" }
            input #f-status name="status" list="statuses" placeholder="2xx, 400, running" value=(filter.status.as_deref().unwrap_or("")) autocomplete="off";
            label for="f-id" { "Request id" }
            input #f-id name="id" value=(filter.id.as_deref().unwrap_or("")) autocomplete="off";
            datalist #known-keys { @for key in keys { option value=(key) {} } }
            datalist #statuses { @for s in ["2xx", "200", "202", "4xx", "5xx", "running"] { option value=(s) {} } }
            noscript { button type="submit" { "Filter" } }
        }
        table.requests {
            thead { tr {
                th { "Time" } th { "Request id" } th { "Key" } th { "Plugin" } th { "Mode" }
                th { "Status" } th { "Duration" } th { "Error" }
            } }
            (rows)
        }
    };
    layout("Requests", Nav::Requests, body)
}

/// The table body, polled every second while the page is open.
pub fn request_rows(entries: &[Entry], version: u64) -> Markup {
    html! {
        tbody #rows hx-get=(format!("/requests/rows?v={version}")) hx-trigger="every 1s"
            hx-include="#filters" hx-swap="outerHTML" {
            @if entries.is_empty() {
                tr.empty { td colspan="8" { "No requests yet." } }
            }
            @for e in entries {
                @let href = request_href(e.seq);
                tr data-href=(href) data-request-id=(e.id.as_str()) {
                    td title=(full_time(e.at)) { (clock(e.at)) }
                    td.id { a href=(href) { (e.id.as_str()) } }
                    td { (e.key.as_deref().unwrap_or("")) }
                    td { (e.plugin.as_deref().unwrap_or("")) }
                    td { (mode(e.mode)) @if e.resumed { " (resumed)" } }
                    td class=(status_class(e.status)) { (status_text(e.status)) }
                    td.num { @if let Some(total) = e.timings.total { (millis(total)) } }
                    td.code { (e.code.unwrap_or("")) }
                }
            }
        }
    }
}

pub fn request_page(entry: Option<&Entry>, detail: Markup) -> Markup {
    let body = html! {
        p.back { a href="/" { "← Requests" } }
        h1 { "Request " @if let Some(e) = entry { code { (e.id.as_str()) } } }
        (detail)
    };
    layout("Request", Nav::Requests, body)
}

fn timing(d: Option<Duration>) -> String {
    d.map(millis).unwrap_or_else(|| "–".into())
}

/// One bar of the waterfall: a part of the request, from its start (counted
/// from arrival) for `took`.
struct Bar {
    class: &'static str,
    label: String,
    start: Duration,
    took: Duration,
    note: String,
}

/// Where the request's time went, from the host's own records: no collector
/// needed. Bars are SVG rectangles (the CSP allows no inline styles).
fn waterfall(e: &Entry) -> Markup {
    let bars = bars(e);
    if bars.is_empty() {
        return html! {};
    }
    let end = bars
        .iter()
        .map(|b| b.start + b.took)
        .max()
        .unwrap_or_default()
        .max(Duration::from_micros(1));
    // In thousandths of the scale; a bar is at least 3 wide, to be seen.
    let at = |d: Duration| (d.as_secs_f64() / end.as_secs_f64() * 1000.0).min(1000.0);
    html! {
        h2 { "Waterfall" }
        table.waterfall {
            thead { tr { th { "Part" } th { "Start" } th { "Took" } th.bars { "0 – " (millis(end)) } } }
            tbody {
                @for bar in &bars {
                    tr class=(bar.class) {
                        td { (bar.label) @if !bar.note.is_empty() { " " span.note { (bar.note) } } }
                        td.num { (millis(bar.start)) }
                        td.num { (millis(bar.took)) }
                        td.bars {
                            svg viewBox="0 0 1000 10" preserveAspectRatio="none" width="100%" height="12" role="img" {
                                rect x=(format!("{:.1}", at(bar.start).min(997.0)))
                                    width=(format!("{:.1}", at(bar.took).max(3.0)))
                                    height="10" {}
                            }
                        }
                    }
                }
            }
        }
        @if e.calls_dropped > 0 {
            p.note { (e.calls_dropped) " more outbound call(s) were not kept (the console keeps " (MAX_CALLS) " per request)." }
        }
    }
}

fn bars(e: &Entry) -> Vec<Bar> {
    let Timings {
        queue,
        instantiate,
        handler,
        total,
    } = e.timings;
    let mut bars = Vec::new();
    let mut bar = |class, label: &str, start, took, note: String| {
        bars.push(Bar {
            class,
            label: label.to_string(),
            start,
            took,
            note,
        })
    };
    if let Some(total) = total {
        bar("w-request", "request", Duration::ZERO, total, String::new());
    }
    if let Some(queue) = queue {
        bar("w-queue", "queue", Duration::ZERO, queue, String::new());
    }
    let queue = queue.unwrap_or_default();
    if let Some(took) = instantiate {
        bar("w-instantiate", "instantiate", queue, took, String::new());
    }
    if let Some(took) = handler {
        let start = queue + instantiate.unwrap_or_default();
        bar("w-handler", "handler", start, took, String::new());
    }
    for call in &e.calls {
        let note = match call.outcome {
            Ok(status) => status.to_string(),
            Err(why) => why.to_string(),
        };
        bar("w-call", &call.label, call.start, call.took, note);
    }
    // The latest attempts are kept: number them as made.
    let first = (e.attempt_count as usize).saturating_sub(e.attempts.len()) + 1;
    for (i, attempt) in e.attempts.iter().enumerate() {
        let start = attempt.at.duration_since(e.at).unwrap_or_default();
        let took = attempt.took.unwrap_or_default();
        let label = format!("delivery attempt {}", first + i);
        bar(
            "w-attempt",
            &label,
            start,
            took,
            attempt.outcome.to_string(),
        );
    }
    bars
}

/// The detail of one request; refreshed while it is still running or delivering.
pub fn request_detail(entry: Option<&Entry>) -> Markup {
    let Some(e) = entry else {
        return html! {
            p.note { "This request is not in the console's memory (it keeps the last "
                "requests only; older ones have been replaced)." }
        };
    };
    // Refreshed until answered, and for a 202 until its delivery ended.
    let settled = match e.status {
        None => false,
        Some(202) => e.attempts.last().is_some_and(|a| a.outcome != "retry"),
        Some(_) => true,
    };
    let Timings {
        queue,
        instantiate,
        handler,
        total,
    } = e.timings;
    html! {
        div #detail hx-get=[(!settled).then(|| format!("{}/detail", request_href(e.seq)))]
            hx-trigger=[(!settled).then_some("every 1s")] hx-swap="outerHTML" {
            dl.facts {
                dt { "Time" } dd { (full_time(e.at)) }
                dt { "Key" } dd { (e.key.as_deref().unwrap_or("–")) }
                dt { "Plugin" } dd { (e.plugin.as_deref().unwrap_or("–")) }
                dt { "Mode" } dd { (mode(e.mode)) @if e.resumed { " (resumed from the outbox)" } }
                dt { "Status" } dd class=(status_class(e.status)) { (status_text(e.status)) }
                @if let Some(code) = e.code {
                    dt { "Error" } dd.code { (code) }
                }
                @if let Some(message) = &e.message {
                    dt { "Message" } dd { (message) }
                }
                @if let Some(trace_id) = &e.trace_id {
                    dt { "Trace" }
                    dd {
                        code { (trace_id) }
                        @if let Some(url) = telemetry::trace_url(trace_id) {
                            " " a.trace-link href=(url) target="_blank" rel="noopener" { "open the trace" }
                        }
                    }
                }
            }
            h2 { "Timings" }
            table.timings {
                thead { tr { th { "Queue" } th { "Instantiate" } th { "Handler" } th { "Total" } } }
                tbody { tr {
                    td { (timing(queue)) } td { (timing(instantiate)) }
                    td { (timing(handler)) } td { (timing(total)) }
                } }
            }
            (waterfall(e))
            h2 { "Log" }
            @if e.logs.is_empty() {
                p.note { "The plugin logged nothing for this request." }
            } @else {
                pre.log {
                    @for line in &e.logs {
                        span class=(format!("l-{}", line.level)) { (line.level) } " " (line.text) "\n"
                    }
                }
            }
            @if e.logs_dropped > 0 {
                p.note { (e.logs_dropped) " more line(s) were not kept (the console keeps 64 lines, 8 KiB per request)." }
            }
            @if e.status == Some(202) || !e.attempts.is_empty() {
                h2 { "Delivery attempts" }
                @if e.attempts.is_empty() {
                    p.note { "No attempt yet." }
                } @else {
                    table.attempts {
                        thead { tr { th { "Time" } th { "Outcome" } th { "Reason" } th { "Next attempt" } } }
                        tbody {
                            @for a in &e.attempts {
                                tr {
                                    td title=(full_time(a.at)) { (clock(a.at)) }
                                    td class=(format!("o-{}", a.outcome)) { (a.outcome) }
                                    td { (a.reason.as_deref().unwrap_or("")) }
                                    td { @if let Some(next) = a.next_at { (clock(next)) } }
                                }
                            }
                        }
                    }
                    @if e.attempt_count as usize > e.attempts.len() {
                        p.note { (e.attempt_count) " attempts in all; the latest are shown." }
                    }
                }
            }
            @if let Some(inputs) = &e.inputs {
                h2 { "Inputs" }
                pre.payload { (inputs) }
            }
            @if let Some(data) = &e.data {
                h2 { "Data" }
                pre.payload { (data) }
            }
        }
    }
}

pub fn charts_page() -> Markup {
    let body = html! {
        h1 { "Charts" }
        p.note { "The last 15 minutes in 5-second buckets, kept in this host's memory." }
        section.chart { h2 { "Requests per second" } div #chart-rps .plot data-chart="rps" {} }
        section.chart { h2 { "Latency p50 and p99 (ms)" } div #chart-latency .plot data-chart="latency" {} }
        section.chart { h2 { "Errors by code" } div #chart-errors .plot data-chart="errors" {} }
        p #chart-status .note {}
    };
    layout("Charts", Nav::Charts, body)
}

pub fn deliveries_page(table: Markup) -> Markup {
    let body = html! {
        h1 { "Deliveries" }
        p.note { "Async answers still open or retrying, and the last ones that failed for good, read from the outbox (shared by every replica on PostgreSQL). A link shows only as its origin and fingerprint." }
        (table)
    };
    layout("Deliveries", Nav::Deliveries, body)
}

/// When a record's next attempt is due, as far as this host knows.
fn next_attempt(r: &RecordSummary, next: Option<SystemTime>) -> String {
    match (r.state, next) {
        (Some(State::Accepted), _) => "after the handler".into(),
        (Some(State::Answered), Some(at)) => clock(at),
        _ => "–".into(),
    }
}

fn record_state(state: Option<State>) -> &'static str {
    state.map(State::as_str).unwrap_or("?")
}

/// The Deliveries tables. `next` finds when this host retries a request next.
pub fn deliveries_table(
    listing: Result<&Listing, &str>,
    next: &dyn Fn(&RecordSummary) -> Option<SystemTime>,
) -> Markup {
    let id_cell = |r: &RecordSummary| match &r.request_id {
        Some(id) => html! { a href=(requests_with_id(id)) { (id) } },
        None => html! { "–" },
    };
    html! {
        div #deliveries hx-get="/deliveries/table" hx-trigger="every 2s" hx-swap="outerHTML" {
            @match listing {
                Err(message) => { p.note { (message) } }
                Ok(listing) => {
                    h2 { "Open or retrying" }
                    @if listing.open.is_empty() {
                        p.note { "Nothing is waiting for its link." }
                    } @else {
                        table.deliveries {
                            thead { tr {
                                th { "Link" } th { "Request id" } th { "Key" } th { "State" } th { "Attempts" }
                                th { "Next attempt" } th { "Last error" } th { "Age" } th { "Held by" }
                            } }
                            tbody { @for r in &listing.open { tr {
                                td.link { (r.link.to_string()) }
                                td.id { (id_cell(r)) }
                                td { (r.key) }
                                td { (record_state(r.state)) }
                                td.num { (r.attempts) }
                                td { (next_attempt(r, next(r))) }
                                td { (r.last_outcome.as_deref().unwrap_or("")) }
                                td.num { (ago(r.accepted_at)) }
                                td { (r.owner.as_deref().unwrap_or("")) }
                            } } }
                        }
                    }
                    h2 { "Failed for good" }
                    @if listing.failed.is_empty() {
                        p.note { "No answer has failed for good." }
                    } @else {
                        table.deliveries {
                            thead { tr {
                                th { "Link" } th { "Request id" } th { "Key" } th { "State" } th { "Attempts" }
                                th { "Last error" } th { "Closed" } th { "Age" }
                            } }
                            tbody { @for r in &listing.failed { tr {
                                td.link { (r.link.to_string()) }
                                td.id { (id_cell(r)) }
                                td { (r.key) }
                                td { (record_state(r.state)) }
                                td.num { (r.attempts) }
                                td { (r.last_outcome.as_deref().unwrap_or("")) }
                                td { @if let Some(at) = r.closed_at { (ago(at)) " ago" } }
                                td.num { (ago(r.accepted_at)) }
                            } } }
                        }
                    }
                }
            }
        }
    }
}

/// What a bucket holds, as the Plugins page says it.
#[derive(Debug, Clone)]
pub enum BucketUsage {
    /// Keys (expired ones not yet pruned included) and their bytes.
    Holds { keys: u64, bytes: u64 },
    /// Why it is not known now.
    Unknown(String),
}

/// One plugin as the Plugins page lists it.
pub struct PluginRow {
    pub name: String,
    pub keys: Vec<String>,
    pub mode: Mode,
    pub limits: Vec<(&'static str, String)>,
    pub source: String,
    /// For a registry source: its reference, the digest serving, the last
    /// refresh and the last failure.
    pub registry: Option<SourceStatus>,
    pub sha256: String,
    pub loaded_at: SystemTime,
    /// Its buckets of the store (`stores`) and what each holds.
    pub stores: Vec<(String, BucketUsage)>,
    pub in_flight: usize,
    pub calls: u64,
    /// Problems with its file or settings right now.
    pub problems: Vec<String>,
}

pub fn plugins_page(table: Markup) -> Markup {
    let body = html! {
        h1 { "Plugins" }
        (table)
    };
    layout("Plugins", Nav::Plugins, body)
}

pub fn plugins_table(plugins: &[PluginRow], reload: &ReloadStatus) -> Markup {
    html! {
        div #plugins hx-get="/plugins/table" hx-trigger="every 2s" hx-swap="outerHTML" {
            table.plugins {
                thead { tr {
                    th { "Plugin" } th { "Keys" } th { "Mode" } th { "Limits" } th { "Store" } th { "Source" }
                    th { "SHA-256" } th { "Loaded" } th { "In flight" } th { "Reload" }
                } }
                tbody { @for p in plugins { tr data-plugin=(p.name) {
                    td { strong { (p.name) } }
                    td { @for (i, key) in p.keys.iter().enumerate() { @if i > 0 { ", " } code { (key) } } }
                    td { (mode(Some(p.mode))) }
                    td.limits { @for (name, value) in &p.limits { span { (name) " " (value) } " " } }
                    td.stores {
                        @if p.stores.is_empty() { span.muted { "none" } }
                        @for (bucket, usage) in &p.stores { div data-bucket=(bucket) {
                            code { (bucket) } " "
                            @match usage {
                                BucketUsage::Holds { keys, bytes } => {
                                    span.num { (keys) } " keys, " span.num { (bytes) } " bytes"
                                }
                                BucketUsage::Unknown(why) => span.error title=(why) { "unknown" },
                            }
                        } }
                    }
                    td.path {
                        @match &p.registry {
                            None => (p.source),
                            Some(r) => (registry_source(r)),
                        }
                    }
                    td { code title=(p.sha256) { (p.sha256.get(..12).unwrap_or(&p.sha256)) } }
                    td title=(full_time(p.loaded_at)) { (ago(p.loaded_at)) " ago" }
                    td.num { (p.in_flight) span.muted { " of " (p.calls) " calls" } }
                    td {
                        @if p.problems.is_empty() { span.s-ok { "ok" } }
                        @for problem in &p.problems { div.error { (problem) } }
                    }
                } } }
            }
            h2 { "Reload" }
            dl.facts {
                dt { "Last reload" }
                dd { (reload.last_reload_at.as_deref().unwrap_or("none since start-up")) }
                dt { "Outcome" }
                dd { @if reload.problems.is_empty() { span.s-ok { "ok" } } @else { span.s-server { "failed" } } }
                @if !reload.problems.is_empty() {
                    dt { "Problems now" }
                    dd { @for problem in &reload.problems { div.error { (problem) } } }
                }
                @if let Some(last) = &reload.last_error {
                    dt { "Last error" }
                    dd { span.muted { (last.at) } " " (last.message) }
                }
            }
        }
    }
}

/// A registry source: the reference, the digest serving, when the registry
/// was last asked, what went wrong (the old version keeps serving) and the
/// version refused, if any.
fn registry_source(r: &SourceStatus) -> Markup {
    html! {
        div.registry {
            code.reference { (r.reference) }
            @if let Some(digest) = &r.digest {
                div { "digest " code.digest title=(digest) { (digest.get(..19).unwrap_or(digest)) } }
            }
            div.muted {
                @match r.refresh_seconds {
                    Some(n) => { "refresh every " (n) "s" },
                    None => { "resolved at load" },
                }
                @if let Some(at) = &r.last_refresh_at { ", last asked " (at) }
            }
            @if r.offline { div.error { "registry unreachable: serving the cached digest" } }
            @if let Some(error) = &r.error { div.error.registry-error { (error) } }
            @if let Some(rejected) = &r.rejected {
                div.muted { "refused " code.rejected title=(rejected.digest) { (rejected.digest.get(..19).unwrap_or(&rejected.digest)) } ": not fetched again until the tag moves" }
            }
        }
    }
}

pub fn try_page(keys: &[String]) -> Markup {
    let body = html! {
        h1 { "Try it" }
        p.note { "The host signs the request with its own secret and sends it to its public listener, as the platform would; for an async key it serves the " code { "link" } " itself and shows the answer delivered there." }
        form.try hx-post="/try" hx-target="#try-result" hx-swap="innerHTML" hx-disabled-elt="find button" {
            label for="try-key" { "Key" }
            select #try-key name="key" {
                @for key in keys { option value=(key) { (key) } }
            }
            label for="try-inputs" { "Inputs" }
            textarea #try-inputs name="inputs" rows="6" spellcheck="false" { "{}" }
            button type="submit" { "Send" }
        }
        div #try-result aria-live="polite" {}
    };
    layout("Try it", Nav::Try, body)
}

fn pretty(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// What "Send" came to: the answer given now, and for a `202` the delivery
/// (polled through `poll` until it arrives).
pub struct TryOutcome<'a> {
    pub status: u16,
    pub status_text: &'a str,
    pub request_id: &'a str,
    /// Its entry's number in the console, if it has one.
    pub entry: Option<u64>,
    pub answer: &'a [u8],
    pub signed: bool,
    pub took: Duration,
    pub timings: Option<Timings>,
    pub delivery: TryDelivery,
}

pub enum TryDelivery {
    /// Not a 202.
    None,
    /// A 202: the page polls here for the delivery.
    Waiting { poll: String },
}

pub fn try_result(outcome: &TryOutcome<'_>) -> Markup {
    let ok = (200..300).contains(&outcome.status);
    html! {
        div.try-result {
            p.status {
                span class=(if ok { "s-ok" } else if outcome.status < 500 { "s-client" } else { "s-server" }) {
                    (outcome.status) " " (outcome.status_text)
                }
                " in " (millis(outcome.took)) " · request id "
                @match outcome.entry {
                    Some(seq) => a #try-request-id href=(request_href(seq)) { (outcome.request_id) },
                    None => span #try-request-id { (outcome.request_id) },
                }
            }
            @if let Some(t) = outcome.timings {
                table.timings {
                    thead { tr { th { "Queue" } th { "Instantiate" } th { "Handler" } th { "Total" } } }
                    tbody { tr {
                        td { (timing(t.queue)) } td { (timing(t.instantiate)) }
                        td { (timing(t.handler)) } td { (timing(t.total)) }
                    } }
                }
            }
            @if !outcome.answer.is_empty() {
                h2 { @if ok { "Data" } @else { "Error" } }
                pre.payload #try-answer { (pretty(outcome.answer)) }
                @if ok {
                    p.note { @if outcome.signed { "Signature verified." } @else { "The signature does not check out." } }
                }
            }
            @if let TryDelivery::Waiting { poll } = &outcome.delivery {
                div #try-delivery hx-get=(poll) hx-trigger="every 500ms" hx-swap="outerHTML" {
                    p.note { "Accepted; waiting for the answer at the link…" }
                }
            }
        }
    }
}

/// The answer delivered to the link.
pub fn try_delivered(d: &Delivered) -> Markup {
    html! {
        div #try-delivery {
            h2 { "Delivered answer" }
            p.note { "Delivered to the link " (millis(d.after)) " after the 202. "
                @if d.signed && d.authorized { "Signature and authorization verified." }
                @else if !d.authorized { "The authorization header is not the client id." }
                @else { "The signature does not check out." } }
            pre.payload #try-delivered { (pretty(&d.body)) }
        }
    }
}

pub fn try_timed_out(wait: Duration) -> Markup {
    html! {
        div #try-delivery {
            p.error { "No answer reached the link within " (millis(wait))
                "; see the request's row and the Deliveries page." }
        }
    }
}

/// A message in place of a result.
pub fn try_error(message: &str) -> Markup {
    html! { p.error { (message) } }
}
