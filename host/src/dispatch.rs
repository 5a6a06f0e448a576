//! The seam between the HTTP pipeline and whatever runs a handler, and the one
//! door every call goes through: [`Plugin::run`].
//!
//! The server only knows [`Handler`]: the WebAssembly runtime implements it,
//! and so can a native handler (the benchmark's baseline) or a test double.
//!
//! Invariants of [`Plugin::run`]: the plugin's `timeout` covers the whole call
//! (instantiation, host calls, waits, and the host's own work on the answer)
//! and the call is dropped at the deadline, freeing its slot; the answer sent
//! is never more than `max_output` bytes of JSON plus the envelope.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;

use prometheus_client::metrics::histogram::Histogram;

use crate::config::PluginConfig;
use crate::metrics::Metrics;
use crate::protocol::{self, Fields};
use crate::recent::{Recent, Ticket};
use crate::redact::Redactor;
use crate::request_id::RequestId;
use crate::telemetry;

/// One call of a handler.
#[derive(Debug, Clone)]
pub struct Call {
    /// The request's id; its span tags the handler's log lines.
    pub request_id: RequestId,
    pub key: String,
    pub inputs: Fields,
    /// When the call must have returned; past it, it is dropped.
    pub deadline: Instant,
    /// The console's entry for this request, where the handler's log lines
    /// and instantiation time go (`None` when the console keeps nothing).
    pub trace: Option<Ticket>,
}

/// Why a handler produced no data. Each kind has its own status and error code.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum HandlerError {
    /// The handler refused the inputs.
    #[error("{0}")]
    InvalidInput(String),
    /// The handler reported a failure of its own.
    #[error("{0}")]
    Failed(String),
    /// The handler crashed: a trap, a panic, an out-of-memory abort.
    #[error("the plugin crashed: {0}")]
    Trapped(String),
    /// The handler ran past its deadline and was stopped.
    #[error("the plugin did not finish within {0:?}")]
    TimedOut(Duration),
    /// The handler's answer is bigger than the plugin's `max_output`.
    #[error("the plugin's answer is over its limit of {limit} bytes of JSON")]
    OutputTooLarge { limit: u64 },
    /// No instance could be made right now (all instance slots are busy).
    #[error("no capacity to run the plugin: {0}")]
    Unavailable(String),
}

impl HandlerError {
    /// The snake_case `code` of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "invalid_input",
            Self::Failed(_) => "plugin_error",
            Self::Trapped(_) => "plugin_trapped",
            Self::TimedOut(_) => "plugin_timeout",
            Self::OutputTooLarge { .. } => "output_too_large",
            Self::Unavailable(_) => "overloaded",
        }
    }

    /// The status of a synchronous answer with this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidInput(_) => StatusCode::BAD_REQUEST,
            Self::Failed(_) | Self::Trapped(_) | Self::OutputTooLarge { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// `{"error": {...}}`, as delivered to a link.
    pub fn body(&self, request_id: &RequestId) -> Vec<u8> {
        protocol::error_body(self.code(), &self.to_string(), Some(request_id.as_str()))
    }
}

pub type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Fields, HandlerError>> + Send + 'a>>;

/// Something that answers data requests.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, call: Call) -> HandlerFuture<'_>;
}

/// A `{"data": {...}}` body, ready to sign and send.
pub type DataBody = Vec<u8>;

/// A loaded plugin and the settings it runs with.
pub struct Plugin {
    pub settings: PluginConfig,
    pub handler: Arc<dyn Handler>,
    /// Hex SHA-256 of the component file, to tell versions apart.
    pub sha256: String,
    pub loaded_at: SystemTime,
    /// The plugin's own cap on requests in flight, if it has one.
    pub in_flight: Option<Arc<Semaphore>>,
    /// Calls running now and started in all, whichever path started them.
    pub stats: Arc<CallStats>,
    /// Time of this plugin's whole calls.
    handler_seconds: Histogram,
    /// The console's record of recent requests, and what it must never show.
    console: ConsoleHook,
}

/// What `Plugin::run` tells the console: shared names and the secrets to redact.
struct ConsoleHook {
    recent: Arc<Recent>,
    name: Arc<str>,
    redactor: Redactor,
}

/// Counters of one plugin's calls.
#[derive(Debug, Default)]
pub struct CallStats {
    running: AtomicUsize,
    started: AtomicU64,
}

impl CallStats {
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
}

/// Counts one running call for as long as it lives.
struct Running<'a>(&'a CallStats);

impl<'a> Running<'a> {
    fn enter(stats: &'a CallStats) -> Self {
        stats.started.fetch_add(1, Ordering::Relaxed);
        stats.running.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Plugin {
    pub fn new(
        settings: PluginConfig,
        handler: Arc<dyn Handler>,
        sha256: String,
        metrics: &Metrics,
    ) -> Self {
        let in_flight = settings.max_in_flight.map(|n| Arc::new(Semaphore::new(n)));
        let handler_seconds = metrics
            .handler_seconds
            .get_or_create_owned(&Metrics::plugin(&settings.name));
        let console = ConsoleHook {
            recent: metrics.recent.clone(),
            name: settings.name.as_str().into(),
            redactor: Redactor::for_config(&settings.config),
        };
        Self {
            handler_seconds,
            console,
            settings,
            handler,
            sha256,
            loaded_at: SystemTime::now(),
            in_flight,
            stats: Arc::default(),
        }
    }

    /// The plugin's name as the console keeps it (shared, not copied per request).
    pub fn console_name(&self) -> &Arc<str> {
        &self.console.name
    }

    /// Runs one call under the plugin's deadline and output cap, and returns
    /// the body to send. At the deadline the call is dropped, whatever it is
    /// doing (running, or parked in a host call), which frees its instance.
    pub async fn run(
        &self,
        request_id: RequestId,
        key: String,
        inputs: Fields,
        admitted: Option<Ticket>,
    ) -> Result<DataBody, HandlerError> {
        let _running = Running::enter(&self.stats);
        let started = Instant::now();
        let timeout = self.settings.timeout;
        let deadline = Instant::now() + timeout;
        let console = &self.console;
        // An admitted request has its entry; work resumed from the outbox gets one now.
        let trace = match admitted {
            Some(ticket) => Some(ticket),
            None => {
                console
                    .recent
                    .call_started(&request_id, &key, &console.name, self.settings.mode)
            }
        };
        console.recent.inputs(trace, &inputs, &console.redactor);
        let call = Call {
            request_id,
            key,
            inputs,
            deadline,
            trace,
        };
        let limit = self.settings.max_output;
        let work = async {
            let data = self.handler.call(call).await?;
            protocol::data_body(&data, limit)
                .map_err(|e| HandlerError::OutputTooLarge { limit: e.limit })
        };
        let span = telemetry::spans::handler(&console.name);
        let result = tokio::time::timeout_at(deadline.into(), work)
            .instrument(span.clone())
            .await
            .unwrap_or(Err(HandlerError::TimedOut(timeout)));
        let took = started.elapsed();
        self.handler_seconds.observe(took.as_secs_f64());
        // The host's work on the answer counts against the deadline too.
        let result = match result {
            Ok(_) if Instant::now() > deadline => Err(HandlerError::TimedOut(timeout)),
            result => result,
        };
        if let Err(e) = &result {
            // The error's text went through the redactor (`runtime`) already.
            telemetry::spans::failed(&span, e.code(), &e.to_string());
        }
        let outcome = match &result {
            Ok(body) => Ok(body.as_slice()),
            Err(e) => Err((e.code(), e as &dyn std::fmt::Display)),
        };
        console
            .recent
            .call_finished(trace, started, took, outcome, &console.redactor);
        result
    }
}

/// The slots a running call holds: one of the host's and, if its plugin has
/// a cap, one of the plugin's. Dropping them frees both.
pub struct Slots {
    _host: Option<OwnedSemaphorePermit>,
    _plugin: Option<OwnedSemaphorePermit>,
}

/// Which cap refused a call.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Overloaded {
    #[error("too many requests in flight on this host; retry shortly")]
    Host,
    #[error("too many requests in flight for plugin `{0}`; retry shortly")]
    Plugin(String),
}

impl Slots {
    /// Takes free slots now or says which cap is full: a flood is refused, never queued.
    pub fn try_take(host: &Arc<Semaphore>, plugin: &Plugin) -> Result<Self, Overloaded> {
        let host = host
            .clone()
            .try_acquire_owned()
            .map_err(|_| Overloaded::Host)?;
        let own = match &plugin.in_flight {
            Some(sem) => Some(
                sem.clone()
                    .try_acquire_owned()
                    .map_err(|_| Overloaded::Plugin(plugin.settings.name.clone()))?,
            ),
            None => None,
        };
        Ok(Self {
            _host: Some(host),
            _plugin: own,
        })
    }

    /// Waits for slots under the same caps: for work the host owes already
    /// (resumed records), which must not be refused.
    pub async fn wait(host: &Arc<Semaphore>, plugin: &Plugin) -> Self {
        // The plugin's slot first: waiting for it holds none of the host's.
        let own = match &plugin.in_flight {
            Some(sem) => sem.clone().acquire_owned().await.ok(),
            None => None,
        };
        let host = host.clone().acquire_owned().await.ok();
        Self {
            _host: host,
            _plugin: own,
        }
    }
}
