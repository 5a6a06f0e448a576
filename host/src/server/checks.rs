//! The front door's checks, in protocol order (docs/protocol.md): method, body
//! size, signature, content type, envelope, key, link. Admission (the 503 caps)
//! comes after all of them, so a bad request is refused as bad whatever the load.
//!
//! Invariant: the signature is verified over the raw bytes before anything
//! reads the JSON, so an unsigned request learns nothing about keys or plugins.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

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

pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            format!("could not read the body: {e}"),
        )),
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
    signer
        .verify(
            headers.get(SIGNATURE_HEADER).map(HeaderValue::as_bytes),
            body,
        )
        .map_err(signature_error)?;
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
