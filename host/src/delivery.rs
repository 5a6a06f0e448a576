//! POSTs answers to `link`: signed, with retries until success or expiry.
//!
//! Policy: connection errors, timeouts, 3xx, 408, 429 and 5xx are retried
//! with exponential backoff and equal jitter (each delay drawn from the upper
//! half of its step: the first retries land within a second or two, for chat's
//! 10-second budget; later ones spread out to 30 s). A `Retry-After` may ask
//! for a longer wait, never a shorter one (`Retry-After: 0` would make a tight
//! loop), and is capped at `max_retry_after`; any other 4xx is final; nothing
//! is sent after the link expires.
//!
//! Invariants: a redirect is never followed (a link that answers 3xx gets
//! nothing at its `location`: the attempt failed and is retried at the link);
//! a link is never logged or recorded whole, only as a [`LinkTag`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::recent::{Recent, Ticket};
use crate::request_id::{REQUEST_ID_HEADER, RequestId};
use crate::signature::{SIGNATURE_HEADER, Signer};
use crate::telemetry;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// The delay before the first retry; each later one doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// How long one POST may take before it counts as failed.
    pub attempt_timeout: Duration,
    /// The longest wait a receiver's `Retry-After` may ask for.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The delay after the `attempt`-th failure (1-based): `first_delay` doubled
    /// per attempt up to `max_delay`, then drawn at random from the upper half
    /// of that (equal jitter), so retries from many hosts spread out but never
    /// come sooner than half the step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .first_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let ceiling = exp.min(self.max_delay);
        let jitter: f64 = rand::random_range(0.5..=1.0);
        ceiling.mul_f64(jitter)
    }

    /// The wait after the `attempt`-th failure when the receiver said
    /// `Retry-After: after`: the backoff is the floor, the cap the ceiling.
    pub fn wait(&self, attempt: u32, after: Option<Duration>) -> Duration {
        let backoff = self.delay(attempt);
        match after {
            Some(after) => after.min(self.max_retry_after).max(backoff),
            None => backoff,
        }
    }
}

/// What one POST to a link came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Worth retrying; `after` is the receiver's `Retry-After`, if it sent one.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Final(String),
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        attempts: u32,
    },
    Failed(String),
    Expired {
        attempts: u32,
        last: String,
    },
    /// The host is shutting down (the record stays open for the next start),
    /// or the claim was lost (its new holder delivers).
    Interrupted,
}

/// Sends answers; one per host, sharing one connection pool.
pub struct Deliverer {
    client: reqwest::Client,
    signer: Signer,
    authorization: Option<HeaderValue>,
    pub policy: RetryPolicy,
    /// The console, told of each attempt and when the next one is due.
    recent: Option<Arc<Recent>>,
}

impl Deliverer {
    pub fn new(signer: Signer, client_id: &str, policy: RetryPolicy) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(policy.attempt_timeout)
            .connect_timeout(policy.attempt_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            // A link answers for itself: a redirect is a failed attempt, and
            // nothing is ever sent to its `location`.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("optech/", env!("CARGO_PKG_VERSION")))
            .build()?;
        // The seed writes the header as `Basic <client id>`, the id as is.
        let authorization = HeaderValue::from_str(&format!("Basic {client_id}"))
            .ok()
            .filter(|_| !client_id.is_empty());
        Ok(Self {
            client,
            signer,
            authorization,
            policy,
            recent: None,
        })
    }

    /// Tells `recent` (the console) of every attempt from now on.
    pub fn observed_by(mut self, recent: Arc<Recent>) -> Self {
        self.recent = Some(recent);
        self
    }

    /// One signed POST of `body` to `link`, carrying the request's id.
    pub async fn attempt(&self, link: &str, body: &[u8], request_id: &RequestId) -> Attempt {
        let mut request = self
            .client
            .post(link)
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, self.signer.sign(body))
            .header(REQUEST_ID_HEADER, request_id.as_str())
            .body(body.to_vec());
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if telemetry::propagates() {
            let mut headers = reqwest::header::HeaderMap::new();
            telemetry::inject(&tracing::Span::current(), &mut headers);
            request = request.headers(headers);
        }
        match request.send().await {
            Ok(response) => {
                if telemetry::enabled() {
                    let status = response.status().as_u16();
                    tracing::Span::current().record("http.response.status_code", status);
                }
                classify(response.status(), response.headers().get(RETRY_AFTER))
            }
            // Errors are worded without their URL: the link is a capability.
            Err(e) if e.is_builder() => {
                Attempt::Final(format!("link is not a usable URL: {}", e.without_url()))
            }
            Err(e) => Attempt::Retry {
                reason: error_chain(&e.without_url()),
                after: None,
            },
        }
    }

    /// Attempts until delivered, final failure, expiry, or until one of
    /// `stop` (shutdown, the claim lost) is cancelled. Before each attempt it
    /// waits for `may_attempt` (the claim's lease is confirmed); `false` makes
    /// no attempt. `on_attempt` hears each attempt's outcome (for the outbox's
    /// bookkeeping); the console's entry `ticket` shows each one.
    #[allow(clippy::too_many_arguments)]
    pub async fn deliver<G, GFut, F, Fut>(
        &self,
        link: &str,
        body: &[u8],
        request_id: &RequestId,
        ticket: Option<Ticket>,
        expires_at: SystemTime,
        stop: (&CancellationToken, &CancellationToken),
        mut may_attempt: G,
        mut on_attempt: F,
    ) -> Outcome
    where
        G: FnMut() -> GFut,
        GFut: std::future::Future<Output = bool>,
        F: FnMut(Attempt) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (shutdown, lost) = stop;
        let mut attempts = 0u32;
        let mut last = String::from("not attempted");
        loop {
            if SystemTime::now() >= expires_at {
                return Outcome::Expired { attempts, last };
            }
            // Biased: a gate that is open goes first, so shutting down still
            // makes the attempt that was due.
            let allowed = tokio::select! {
                biased;
                allowed = may_attempt() => allowed,
                _ = shutdown.cancelled() => false,
            };
            if !allowed || lost.is_cancelled() {
                return Outcome::Interrupted;
            }
            attempts += 1;
            let span = telemetry::spans::attempt(attempts);
            let started = std::time::Instant::now();
            let attempt = self
                .attempt(link, body, request_id)
                .instrument(span.clone())
                .await;
            let took = started.elapsed();
            on_attempt(attempt.clone()).await;
            let wait = match &attempt {
                Attempt::Retry { after, .. } => Some(self.policy.wait(attempts, *after)),
                _ => None,
            };
            record_attempt(&span, &attempt, wait);
            self.observe(ticket, &attempt, wait, took);
            let wait = match attempt {
                Attempt::Delivered => return Outcome::Delivered { attempts },
                Attempt::Final(reason) => return Outcome::Failed(reason),
                Attempt::Retry { reason, .. } => {
                    last = reason;
                    wait.unwrap_or_default()
                }
            };
            let left = expires_at
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            if wait >= left {
                // The next try would be after expiry: wait it out only to report honestly.
                tokio::select! {
                    _ = tokio::time::sleep(left) => return Outcome::Expired { attempts, last },
                    _ = shutdown.cancelled() => return Outcome::Interrupted,
                    _ = lost.cancelled() => return Outcome::Interrupted,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return Outcome::Interrupted,
                _ = lost.cancelled() => return Outcome::Interrupted,
            }
        }
    }
}

impl Deliverer {
    fn observe(
        &self,
        ticket: Option<Ticket>,
        attempt: &Attempt,
        next: Option<Duration>,
        took: Duration,
    ) {
        let Some(recent) = &self.recent else { return };
        let (outcome, reason) = match attempt {
            Attempt::Delivered => ("delivered", None),
            Attempt::Retry { reason, .. } => ("retry", Some(reason.as_str())),
            Attempt::Final(reason) => ("final", Some(reason.as_str())),
        };
        recent.delivery(ticket, outcome, reason, next, took);
    }
}

/// One attempt's outcome on its span, with the retry it schedules. The
/// reason is the host's own wording, never the link (a capability).
fn record_attempt(span: &tracing::Span, attempt: &Attempt, retry_in: Option<Duration>) {
    if span.is_none() {
        return;
    }
    let (outcome, reason) = match attempt {
        Attempt::Delivered => ("delivered", None),
        Attempt::Retry { reason, .. } => ("retry", Some(reason)),
        Attempt::Final(reason) => ("final", Some(reason)),
    };
    span.record("optech.delivery.outcome", outcome);
    if let Some(wait) = retry_in {
        span.record(
            "optech.delivery.retry_in_ms",
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        );
    }
    if let Some(reason) = reason {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", outcome);
        span.record("otel.status_description", reason.as_str());
    }
}

/// An error and its causes on one line (reqwest's own `Display` hides the cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn classify(status: StatusCode, retry_after: Option<&HeaderValue>) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered;
    }
    let reason = format!("link answered {status}");
    if status.is_redirection() {
        // Not followed: the answer is due at the link itself.
        return Attempt::Retry {
            reason: format!("{reason}; redirects are not followed"),
            after: None,
        };
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Attempt::Retry {
            reason,
            after: retry_after.and_then(parse_retry_after),
        }
    } else {
        Attempt::Final(reason)
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let policy = RetryPolicy::default();
        for _ in 0..100 {
            let first = policy.delay(1);
            assert!(
                first >= Duration::from_millis(125) && first <= Duration::from_millis(250),
                "{first:?}"
            );
            let third = policy.delay(3);
            assert!(
                third >= Duration::from_millis(500) && third <= Duration::from_secs(1),
                "{third:?}"
            );
            assert!(policy.delay(40) <= Duration::from_secs(30));
        }
        // The first five retries fit in chat's 10-second window.
        let worst: Duration = (1..=5)
            .map(|n| RetryPolicy::default().first_delay * (1 << (n - 1)))
            .sum();
        assert!(worst < Duration::from_secs(10), "{worst:?}");
    }

    #[test]
    fn retry_after_never_shortens_the_backoff_and_is_capped() {
        let policy = RetryPolicy::default();
        for attempt in 1..=12 {
            let floor = policy
                .first_delay
                .saturating_mul(1 << (attempt - 1))
                .min(policy.max_delay)
                / 2;
            let zero = policy.wait(attempt, Some(Duration::ZERO));
            assert!(
                zero >= floor,
                "Retry-After: 0 after attempt {attempt}: {zero:?} < {floor:?}"
            );
            let long = policy.wait(attempt, Some(Duration::from_secs(3600)));
            assert_eq!(long, policy.max_retry_after, "capped");
            let asked = policy.wait(attempt, Some(Duration::from_secs(60)));
            assert_eq!(asked, Duration::from_secs(60), "a longer wait is honoured");
        }
        // Retry-After: 0 for a whole 10-minute link: the backoff's count of
        // attempts, not thousands.
        let mut spent = Duration::ZERO;
        let mut attempts = 0u32;
        while spent < Duration::from_secs(600) {
            attempts += 1;
            spent += policy.wait(attempts, Some(Duration::ZERO));
        }
        assert!(attempts < 50, "{attempts} attempts in 10 minutes");
    }

    #[test]
    fn statuses() {
        assert_eq!(classify(StatusCode::OK, None), Attempt::Delivered);
        assert_eq!(classify(StatusCode::ACCEPTED, None), Attempt::Delivered);
        for s in [
            StatusCode::MOVED_PERMANENTLY,
            StatusCode::FOUND,
            StatusCode::TEMPORARY_REDIRECT,
            StatusCode::PERMANENT_REDIRECT,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::BAD_GATEWAY,
            StatusCode::INTERNAL_SERVER_ERROR,
        ] {
            assert!(matches!(classify(s, None), Attempt::Retry { .. }), "{s}");
        }
        for s in [
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::NOT_FOUND,
            StatusCode::GONE,
        ] {
            assert!(matches!(classify(s, None), Attempt::Final(_)), "{s}");
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("3")),
            Some(Duration::from_secs(3))
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        let parsed = parse_retry_after(&HeaderValue::from_str(&later).unwrap()).unwrap();
        assert!(
            parsed > Duration::from_secs(55) && parsed <= Duration::from_secs(60),
            "{parsed:?}"
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }
}
