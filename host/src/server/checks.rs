//! The front door's checks, in protocol order (docs/protocol.md): method, body
//! size, signature, content type, envelope, key, link. Admission (the 503 caps)
//! comes after all of them, so a bad request is refused as bad whatever the load.
//!
//! Invariant: the signature is verified over the raw bytes before anything
//! reads the JSON, so an unsigned request learns nothing about keys or plugins.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use crate::config::Mode;
use crate::dispatch::Plugin;
use crate::protocol::{self, DataRequest};
use crate::router::{Route, Router};
use crate::signature::{SIGNATURE_HEADER, SignatureError, Signer};

/// POST, or an error: a `GET` (or `HEAD`) is a `404`, since the public port
/// serves nothing to read beyond `/healthz` and `/readyz` (the console is on
/// the admin listener only); any other method is a `405`.
pub fn check_method(method: &Method) -> Result<(), ApiError> {
    if method == Method::POST {
        Ok(())
    } else if method == Method::GET || method == Method::HEAD {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "nothing is served here: data requests are POSTed",
        ))
    } else {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("data requests are POSTed; {method} is not accepted here"),
        ))
    }
}

/// The body, read within `timeout` of its headers, holding a permit of
/// `unverified` for each byte until the caller has checked the signature: the
/// memory that unsigned requests hold at once is capped over all of them, and
/// a client that sends slowly is cut off at the deadline, not waited on.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    unverified: &BodyBudget,
    timeout: Duration,
) -> Result<(Bytes, Unverified), ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than the limit of {limit} bytes"),
        )
        .closing()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut body = body;
        let mut buffer = Buffer::Empty;
        let mut held = Unverified {
            permit: None,
            gauge: unverified.held.clone(),
        };
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    format!("could not read the body: {e}"),
                )
                .closing()
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers: not part of what is signed
            };
            if buffer.len() + data.len() > limit {
                return Err(too_large());
            }
            held.take(unverified, data.len())?;
            buffer.push(data);
        }
        Ok((buffer.into_bytes(), held))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(read) => read,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the body did not arrive within {} of its headers",
                humantime::format_duration(timeout)
            ),
        )
        .closing()),
    }
}

/// The bytes that bodies not yet verified may hold, over all requests
/// (`server.max_unverified`), and how many they hold now.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    /// `optech_unverified_body_bytes`: what an operator watches to see the
    /// budget fill, and what tests wait on instead of guessing.
    held: Gauge,
}

impl BodyBudget {
    pub fn new(bytes: u64, held: Gauge) -> Self {
        let permits = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            held,
        }
    }
}

/// Bytes of a body read but not yet verified, held against `max_unverified`
/// until dropped.
#[derive(Debug)]
pub struct Unverified {
    permit: Option<OwnedSemaphorePermit>,
    gauge: Gauge,
}

impl Unverified {
    /// Holds `bytes` more, or refuses the request: the host holds as much of
    /// other requests' unsigned bodies as it will.
    fn take(&mut self, budget: &BodyBudget, bytes: usize) -> Result<(), ApiError> {
        let busy = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the host is reading as many unverified requests as it will; retry shortly",
            )
            .closing()
        };
        let bytes = u32::try_from(bytes).map_err(|_| busy())?;
        if bytes == 0 {
            return Ok(());
        }
        let permit = budget
            .permits
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| busy())?;
        self.gauge.inc_by(i64::from(bytes));
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }
}

impl Drop for Unverified {
    fn drop(&mut self) {
        if let Some(permit) = &self.permit {
            self.gauge
                .dec_by(i64::try_from(permit.num_permits()).unwrap_or(i64::MAX));
        }
    }
}

/// A body as it arrives: most come in one chunk, kept without a copy.
enum Buffer {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Buffer {
    fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(bytes) => bytes.len(),
            Self::Many(bytes) => bytes.len(),
        }
    }

    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Self::Empty) {
            Self::Empty => Self::One(data),
            Self::One(first) => {
                let mut joined = BytesMut::with_capacity(first.len() + data.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&data);
                Self::Many(joined)
            }
            Self::Many(mut joined) => {
                joined.extend_from_slice(&data);
                Self::Many(joined)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Self::Empty => Bytes::new(),
            Self::One(bytes) => bytes,
            Self::Many(bytes) => bytes.freeze(),
        }
    }
}

/// Everything between reading the body and admitting the request: signature,
/// content type, envelope, key, link. Pure CPU and no I/O, so it is also the
/// fuzz target.
pub fn check_request(
    router: &Router,
    signer: &Signer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(DataRequest, Route), ApiError> {
    check_signature(signer, headers, body)?;
    check_signed(router, headers, body)
}

/// The signature over the raw body: the first check that reads the body.
pub fn check_signature(signer: &Signer, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    signer
        .verify(
            headers.get(SIGNATURE_HEADER).map(HeaderValue::as_bytes),
            body,
        )
        .map_err(signature_error)
}

/// The checks after the signature: content type, envelope, key, link.
pub fn check_signed(
    router: &Router,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(DataRequest, Route), ApiError> {
    check_content_type(headers)?;
    let request = protocol::parse_request(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
    let route = router.route(&request.key).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_key",
            format!("no plugin is mapped to key {:?}", request.key),
        )
    })?;
    check_link(&request, &route.plugin)?;
    Ok((request, route))
}

/// An `async` plugin needs a `link`; a `link`, where given to a plugin that may
/// answer later, must be an http(s) URL.
fn check_link(request: &DataRequest, plugin: &Plugin) -> Result<(), ApiError> {
    let needs_link = match plugin.settings.mode {
        Mode::Sync => return Ok(()),
        Mode::Async => true,
        Mode::Auto => false,
    };
    let Some(link) = &request.link else {
        if needs_link {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "link_required",
                format!(
                    "plugin `{}` answers asynchronously, so the request needs a `link`",
                    plugin.settings.name
                ),
            ));
        }
        return Ok(());
    };
    match reqwest::Url::parse(link) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        // The link itself is a capability: it is not echoed back.
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "`link` must be an absolute http(s) URL",
        )),
    }
}

fn signature_error(error: SignatureError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        error.to_string(),
    )
}

/// `application/json`, with parameters (`; charset=utf-8`) or a `+json` suffix.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        let shown = if value.is_empty() {
            "none".to_string()
        } else {
            format!("{value:?}")
        };
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content-type must be application/json, got {shown}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let ok = [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.optech+json",
        ];
        for value in ok {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert!(check_content_type(&h).is_ok(), "{value}");
        }
        for value in ["text/plain", "application/jsonx", "multipart/form-data"] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert!(check_content_type(&h).is_err(), "{value}");
        }
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }
}
