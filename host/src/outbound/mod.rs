//! Plugins' outbound HTTP (`wasi:http/outgoing-handler`): deny by default,
//! per-plugin allowlist, SSRF guard, timeouts, response cap, concurrency cap,
//! over shared pooled clients.
//!
//! Invariants:
//! - a request's URL is parsed once (`url::Url`); the allowlist, the guard
//!   and the connector all work from that one parse, so no spelling of an
//!   address can mean one thing to the check and another to the dialer;
//! - a request goes out only if the plugin's `allowed_hosts` matches its
//!   scheme, host and port ([`allowlist`]), and the connector dials only
//!   addresses the [`address`] guard permits for that scheme and port, asked
//!   before each connection opens, IP literals included;
//! - redirects are never followed and no proxy from the environment is used;
//! - every request ends by `http_timeout` and never after the call's
//!   deadline; dropping the call (its deadline passed) drops the request and
//!   closes its connection;
//! - a response body is streamed and cut off past `max_http_response`;
//! - at most `max_http_in_flight` requests of one plugin are open at once;
//! - a refusal is logged as `scheme://host:port`, once per plugin and
//!   destination per minute, never with a path or query.
//!
//! Connections are pooled and kept alive across requests and instances: one
//! client per address policy (most requests share the strict one, which
//! reaches no internal address), so a connection made under one policy is
//! never reused under a laxer one.

pub mod address;
pub mod allowlist;
mod body;
mod connector;
pub mod settings;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;
use tracing::Instrument as _;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::metrics::{OutboundLabels, SharedMetrics};
use crate::recent::{Recent, Ticket};
use crate::telemetry;
pub use address::AddressPolicy;
pub use allowlist::{AllowedHost, Allowlist, Destination, Host};
use body::CappedBody;
use connector::{Client, GuardedConnector, Prohibited, Unresolved};
pub use settings::EgressSettings;

/// Largest request body a plugin may send. The body is gathered before it is
/// sent, so this bounds the host memory one request can hold.
pub const MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;
/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// A refused destination is logged at most once per plugin in this window.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Turns a host name into addresses: the system resolver, or a fixed table in tests.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, name: &str) -> BoxFuture<std::io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (getaddrinfo, through tokio).
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, name: &str) -> BoxFuture<std::io::Result<Vec<IpAddr>>> {
        let name = name.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// The shared side of outbound HTTP: the resolver and the pooled clients.
#[derive(Clone)]
pub struct Outbound {
    lookup: Arc<dyn Lookup>,
    clients: Arc<Mutex<HashMap<AddressPolicy, Client>>>,
    metrics: Option<SharedMetrics>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").finish_non_exhaustive()
    }
}

impl Default for Outbound {
    fn default() -> Self {
        Self::with_lookup(Arc::new(SystemLookup))
    }
}

impl Outbound {
    pub fn with_lookup(lookup: Arc<dyn Lookup>) -> Self {
        Self {
            lookup,
            clients: Arc::default(),
            metrics: None,
        }
    }

    /// Counts plugins' requests in `metrics`.
    pub fn with_metrics(mut self, metrics: SharedMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The pooled client whose connector dials only what `policy` permits.
    fn client(&self, policy: &AddressPolicy) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(policy) {
            return client.clone();
        }
        let client = connector::client(
            GuardedConnector::new(self.lookup.clone(), policy.clone()),
            POOL_IDLE,
        );
        clients.insert(policy.clone(), client.clone());
        client
    }

    /// One plugin's egress: its allowlist and limits.
    pub fn for_plugin(&self, plugin: &str, settings: &EgressSettings) -> Arc<PluginEgress> {
        let counter = |outcome| {
            self.metrics.as_ref().map(|m| {
                m.outbound.get_or_create_owned(&OutboundLabels {
                    plugin: plugin.to_string(),
                    outcome,
                })
            })
        };
        let counts = OutboundCounts {
            response: counter(Outcome::Response.as_str()),
            denied: counter(Outcome::Denied.as_str()),
            timeout: counter(Outcome::Timeout.as_str()),
            error: counter(Outcome::Error.as_str()),
        };
        Arc::new(PluginEgress {
            plugin: plugin.into(),
            counts,
            settings: settings.clone(),
            outbound: self.clone(),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            refusals: Mutex::default(),
        })
    }
}

/// What became of one outbound request, as the metrics and the trace say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Response,
    Denied,
    Timeout,
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Response => "response",
            Self::Denied => "denied",
            Self::Timeout => "timeout",
            Self::Error => "error",
        }
    }
}

fn outcome<T>(result: &Result<T, Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Response,
        Err(Error::HttpRequestDenied | Error::DestinationIpProhibited) => Outcome::Denied,
        Err(
            Error::ConnectionTimeout
            | Error::ConnectionReadTimeout
            | Error::ConnectionWriteTimeout
            | Error::HttpResponseTimeout,
        ) => Outcome::Timeout,
        Err(_) => Outcome::Error,
    }
}

/// Counters of one plugin's outbound requests, by outcome.
#[derive(Default)]
struct OutboundCounts {
    response: Option<Counter>,
    denied: Option<Counter>,
    timeout: Option<Counter>,
    error: Option<Counter>,
}

impl OutboundCounts {
    fn count<T>(&self, result: &Result<T, Error>) {
        let counter = match outcome(result) {
            Outcome::Response => &self.response,
            Outcome::Denied => &self.denied,
            Outcome::Timeout => &self.timeout,
            Outcome::Error => &self.error,
        };
        if let Some(counter) = counter {
            counter.inc();
        }
    }
}

/// One plugin version's outbound side, shared by all its instances.
pub struct PluginEgress {
    plugin: Arc<str>,
    counts: OutboundCounts,
    settings: EgressSettings,
    outbound: Outbound,
    in_flight: Arc<Semaphore>,
    /// When each refused destination was last logged.
    refusals: Mutex<HashMap<String, Instant>>,
}

impl PluginEgress {
    /// The console's record of requests, where each outbound call is shown.
    fn recent(&self) -> Option<Arc<Recent>> {
        self.outbound.metrics.as_ref().map(|m| m.recent.clone())
    }

    /// Checks and sends one request, and hands back its response with a capped
    /// body. Plugins reach it through `wasi:http`; a native handler (the
    /// benchmark's baseline) may call it directly.
    pub async fn send(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        call_deadline: Instant,
    ) -> Result<http::Response<WasiBody>, Error> {
        let result = self
            .clone()
            .checked_send(request, options, call_deadline)
            .await;
        self.counts.count(&result);
        if telemetry::enabled() {
            record_on_span(&tracing::Span::current(), &result);
        }
        result
    }

    async fn checked_send(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        call_deadline: Instant,
    ) -> Result<http::Response<WasiBody>, Error> {
        // The one parse: the allowlist, the guard and the connector all use `url`.
        let url = url::Url::parse(&request.uri().to_string())
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let to = Destination::from_url(&url).ok_or(Error::HttpRequestUriInvalid)?;
        let Some(policy) = self.settings.allowed_hosts.admit(&to) else {
            self.refused(&to, "not in allowed_hosts");
            return Err(Error::HttpRequestDenied);
        };
        // Refused here with a clear reason; the connector would refuse it too.
        if let Host::Address(ip) = to.host
            && !policy.permits(ip)
        {
            self.refused(&to, "an internal address that allowed_hosts does not name");
            return Err(Error::DestinationIpProhibited);
        }
        let uri = http::Uri::try_from(url.as_str()).map_err(|_| Error::HttpRequestUriInvalid)?;
        let client = self.outbound.client(&policy);
        let deadline = (Instant::now() + self.settings.timeout).min(call_deadline);
        let deadline = tokio::time::Instant::from_std(deadline);

        let slot = tokio::time::timeout_at(deadline, self.in_flight.clone().acquire_owned())
            .await
            .map_err(|_| Error::ConnectionLimitReached)?
            .map_err(|_| Error::ConnectionLimitReached)?;
        let (mut parts, body) = request.into_parts();
        let body =
            tokio::time::timeout_at(deadline, Limited::new(body, MAX_REQUEST_BODY).collect())
                .await
                .map_err(|_| Error::ConnectionWriteTimeout)?
                .map_err(|_| Error::HttpRequestBodySize(Some(MAX_REQUEST_BODY as u64)))?
                .to_bytes();
        // The client writes `host` from the URL it dials.
        parts.headers.remove(http::header::HOST);
        if telemetry::enabled() {
            let span = tracing::Span::current();
            span.record("http.request.body.size", body.len());
            if telemetry::propagates() {
                // The back end's own spans join this request's trace.
                telemetry::inject(&span, &mut parts.headers);
            }
        }
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        let outgoing = http::Request::from_parts(parts, Full::<Bytes>::new(body));
        // The plugin may ask for less time to the first byte, never more.
        let first_byte = options
            .and_then(|o| o.first_byte_timeout)
            .map(|d| (tokio::time::Instant::now() + d).min(deadline))
            .unwrap_or(deadline);
        let response = match tokio::time::timeout_at(first_byte, client.request(outgoing)).await {
            Err(_) => return Err(Error::ConnectionReadTimeout),
            Ok(Err(e)) => return Err(self.classify(&to, &e)),
            Ok(Ok(response)) => response,
        };
        let max = self.settings.max_response;
        let too_long = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > max);
        if too_long {
            return Err(Error::HttpResponseBodySize(Some(max)));
        }
        Ok(response.map(|body| CappedBody::new(body, max, deadline, slot).boxed_unsync()))
    }

    fn classify(&self, to: &Destination, error: &hyper_util::client::legacy::Error) -> Error {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(cause) = source {
            if cause.is::<Prohibited>() {
                self.refused(
                    to,
                    "resolves only to internal addresses that allowed_hosts does not name",
                );
                return Error::DestinationIpProhibited;
            }
            if cause.is::<Unresolved>() {
                return Error::DestinationNotFound;
            }
            source = cause.source();
        }
        if error.is_connect() {
            Error::ConnectionRefused
        } else {
            Error::HttpProtocolError
        }
    }

    /// Logs a refused destination, at most once a minute per destination.
    fn refused(&self, to: &Destination, why: &str) {
        let key = to.to_string();
        let now = Instant::now();
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if refusals
            .get(&key)
            .is_some_and(|last| now.duration_since(*last) < REFUSAL_LOG_EVERY)
        {
            return;
        }
        if refusals.len() > 1024 {
            refusals.retain(|_, last| now.duration_since(*last) < REFUSAL_LOG_EVERY);
        }
        refusals.insert(key.clone(), now);
        tracing::warn!(plugin = %self.plugin, "outbound request to {key} refused: {why}");
    }
}

/// The `wasi:http` hooks of one instance: its plugin's egress, and the
/// current call's deadline and console entry (where each request is shown).
pub struct Egress {
    plugin: Arc<PluginEgress>,
    deadline: Instant,
    ticket: Option<Ticket>,
}

impl Egress {
    pub fn new(plugin: Arc<PluginEgress>, deadline: Instant, ticket: Option<Ticket>) -> Self {
        Self {
            plugin,
            deadline,
            ticket,
        }
    }

    /// A kept instance takes its next call's deadline and entry.
    pub fn begin(&mut self, deadline: Instant, ticket: Option<Ticket>) {
        self.deadline = deadline;
        self.ticket = ticket;
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        let (plugin, deadline) = (self.plugin.clone(), self.deadline);
        // Made here, in the plugin's call: wasi-http runs the send as a task of its own.
        let span = client_span(&request);
        let shown = self
            .ticket
            .zip(plugin.recent())
            .map(|(ticket, recent)| (ticket, recent, Instant::now(), call_label(&request)));
        Box::new(
            async move {
                let result = plugin.send(request, options, deadline).await;
                if let Some((ticket, recent, started, label)) = shown {
                    let outcome = match &result {
                        Ok(response) => Ok(response.status().as_u16()),
                        Err(_) => Err(outcome(&result).as_str()),
                    };
                    recent.outbound(Some(ticket), started, started.elapsed(), &label, outcome);
                }
                Ok((result?, Box::new(async { Ok(()) }) as IoFuture))
            }
            .instrument(span),
        )
    }
}

/// Where a request goes, as the console and the trace name it: scheme, host
/// and port, never the path or query, which may hold a value of the request.
fn destination(uri: &http::Uri) -> (&str, &str, u16) {
    let scheme = uri.scheme_str().unwrap_or("http");
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    (scheme, uri.host().unwrap_or("?"), port)
}

/// How the console names an outbound request: `GET host:port`.
fn call_label<B>(request: &http::Request<B>) -> String {
    let (_, host, port) = destination(request.uri());
    format!("{} {host}:{port}", request.method())
}

/// The client span of one outbound request: its method, host and port (never
/// its path or query, which may hold a value of the request).
fn client_span<B>(request: &http::Request<B>) -> tracing::Span {
    if !telemetry::enabled() {
        return tracing::Span::none();
    }
    let (scheme, host, port) = destination(request.uri());
    telemetry::spans::outbound(request.method().as_str(), scheme, host, port)
}

/// How the request went, on its span: the allowlist's decision, the status,
/// and an error's kind.
fn record_on_span(span: &tracing::Span, result: &Result<http::Response<WasiBody>, Error>) {
    if span.is_none() {
        return;
    }
    match result {
        Ok(response) => {
            span.record("optech.egress.decision", "allowed");
            span.record("http.response.status_code", response.status().as_u16());
            // The body streams to the plugin after this: its declared size.
            let declared = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if let Some(size) = declared {
                span.record("http.response.body.size", size);
            }
            if response.status().is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
        }
        Err(error) => {
            let (decision, kind) = match outcome(result) {
                Outcome::Denied => ("denied", "denied"),
                Outcome::Timeout => ("allowed", "timeout"),
                _ => ("allowed", "error"),
            };
            span.record("optech.egress.decision", decision);
            span.record("error.type", kind);
            span.record("otel.status_code", "ERROR");
            // wasi:http's error code, without its payload.
            let code = format!("{error:?}");
            let code = code.split(['(', ' ', '{']).next().unwrap_or(kind);
            span.record("otel.status_description", code);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Resolves every name in its table to its addresses; anything else fails.
    struct Table(HashMap<&'static str, Vec<IpAddr>>);

    impl Lookup for Table {
        fn lookup(&self, name: &str) -> BoxFuture<std::io::Result<Vec<IpAddr>>> {
            let found = self.0.get(name).cloned();
            Box::pin(async move {
                found.ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such name")
                })
            })
        }
    }

    /// A back end on loopback that counts the connections it accepts.
    async fn back_end() -> (u16, Arc<AtomicUsize>) {
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let app = axum::Router::new().fallback(|| async { "hello" });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let app = app.clone();
                tokio::spawn(async move {
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (port, connections)
    }

    use hyper_util::rt::{TokioExecutor, TokioIo};

    fn egress(outbound: &Outbound, entries: &[String]) -> Arc<PluginEgress> {
        let allowed_hosts = Allowlist::new(
            entries
                .iter()
                .map(|e| AllowedHost::parse(e).unwrap())
                .collect(),
        );
        outbound.for_plugin(
            "test",
            &EgressSettings {
                allowed_hosts,
                timeout: Duration::from_secs(5),
                max_response: 1 << 20,
                max_in_flight: 4,
            },
        )
    }

    async fn get(egress: &Arc<PluginEgress>, url: &str) -> Result<u16, Error> {
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = http::Request::get(url).body(body).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let response = egress.clone().send(request, None, deadline).await?;
        Ok(response.status().as_u16())
    }

    fn denied<T: std::fmt::Debug>(got: &Result<T, Error>) -> bool {
        matches!(
            got,
            Err(Error::HttpRequestDenied | Error::DestinationIpProhibited)
        )
    }

    fn outbound() -> Outbound {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        let private: IpAddr = "10.0.0.7".parse().unwrap();
        Outbound::with_lookup(Arc::new(Table(HashMap::from([
            ("api.example.com", vec![loopback]),
            ("rebound.example.com", vec![metadata]),
            ("internal.corp", vec![private, loopback]),
            ("localhost", vec![loopback]),
        ]))))
    }

    #[tokio::test]
    async fn a_name_that_resolves_inside_is_refused_unless_named() {
        let (port, hits) = back_end().await;
        let outbound = outbound();
        // Allowed by name and by wildcard, but it resolves to loopback: refused, nothing dialled.
        for entry in ["http://api.example.com:*", "http://*.example.com:*"] {
            let strict = egress(&outbound, &[entry.to_string()]);
            let got = get(&strict, &format!("http://api.example.com:{port}/")).await;
            assert!(
                matches!(got, Err(Error::DestinationIpProhibited)),
                "{entry}: {got:?}"
            );
        }
        // A name that resolves to the cloud metadata service.
        let wildcard = egress(&outbound, &["http://*.example.com:*".into()]);
        let got = get(&wildcard, &format!("http://rebound.example.com:{port}/")).await;
        assert!(denied(&got), "{got:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 0);

        // The same name, with its address named literally for this scheme and
        // port: the operator meant it.
        let named = egress(
            &outbound,
            &[
                "http://api.example.com:*".into(),
                format!("http://127.0.0.1/32:{port}"),
            ],
        );
        assert_eq!(
            get(&named, &format!("http://api.example.com:{port}/"))
                .await
                .unwrap(),
            200
        );
        // `localhost` is reachable when an entry names it.
        let local = egress(&outbound, &[format!("http://localhost:{port}")]);
        assert_eq!(
            get(&local, &format!("http://localhost:{port}/"))
                .await
                .unwrap(),
            200
        );
        // An address literal is reachable only when named.
        let literal = egress(&outbound, &["http://127.0.0.1:*".into()]);
        assert_eq!(
            get(&literal, &format!("http://127.0.0.1:{port}/"))
                .await
                .unwrap(),
            200
        );
        // Of a name's addresses, only the permitted ones are dialled.
        let corp = egress(
            &outbound,
            &[
                "http://internal.corp:*".into(),
                "http://127.0.0.0/8:*".into(),
            ],
        );
        assert_eq!(
            get(&corp, &format!("http://internal.corp:{port}/"))
                .await
                .unwrap(),
            200
        );
        assert!(hits.load(Ordering::SeqCst) >= 1);
    }

    #[tokio::test]
    async fn no_spelling_of_an_internal_address_gets_through_a_wildcard() {
        let (port, hits) = back_end().await;
        let outbound = outbound();
        let any = egress(&outbound, &["http://*:*".into()]);
        for host in [
            "127.0.0.1",
            "2130706433",
            "127.1",
            "0x7f000001",
            "0177.0.0.1",
            "127.0.0.1.",
            "localhost",
            "LocalHost.",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[64:ff9b::7f00:1]",
            "0.0.0.0",
            "0",
            "[::]",
            "[::1]",
        ] {
            let got = get(&any, &format!("http://{host}:{port}/")).await;
            assert!(denied(&got), "{host}: {got:?}");
        }
        // A literal entry opens its own scheme and port, not the others.
        let one = egress(
            &outbound,
            &[format!("http://127.0.0.1:{port}"), "http://*:*".into()],
        );
        let other = get(
            &one,
            &format!("http://2130706433:{}/", port.wrapping_add(1)),
        )
        .await;
        assert!(denied(&other), "{other:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        assert_eq!(
            get(&one, &format!("http://2130706433:{port}/"))
                .await
                .unwrap(),
            200
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn nothing_is_allowed_by_default_and_misses_are_denied() {
        let (port, hits) = back_end().await;
        let outbound = outbound();
        let none = egress(&outbound, &[]);
        let got = get(&none, &format!("http://127.0.0.1:{port}/")).await;
        assert!(matches!(got, Err(Error::HttpRequestDenied)), "{got:?}");
        let one = egress(&outbound, &[format!("http://127.0.0.1:{port}")]);
        for url in [
            format!("http://127.0.0.1:{}/", port.wrapping_add(1)),
            format!("https://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
        ] {
            let got = get(&one, &url).await;
            assert!(
                matches!(got, Err(Error::HttpRequestDenied)),
                "{url}: {got:?}"
            );
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn requests_with_the_same_policy_share_a_client() {
        let (port, _) = back_end().await;
        let outbound = outbound();
        let a = egress(&outbound, &["http://*:*".into()]);
        let b = egress(&outbound, &[format!("http://127.0.0.1:{port}")]);
        let _ = get(&a, "http://api.example.com:1/").await;
        let _ = get(&a, "http://rebound.example.com:1/").await;
        let _ = get(&b, &format!("http://127.0.0.1:{port}/")).await;
        let _ = get(&b, &format!("http://127.0.0.1:{port}/again")).await;
        assert_eq!(outbound.clients.lock().unwrap().len(), 2);
    }
}
