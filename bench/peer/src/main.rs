//! Benchmark peer: a wasi:http component that answers an OpTech "echo" data
//! request the way the host does, so the host can be measured against a plain
//! `wasmtime serve` running the same work.
//!
//! Per request (any path): POST only (405), body at most 1 MiB (413),
//! `x-optech-signature` = hex HMAC-SHA256 of the raw body, optional `sha256=`
//! prefix, compared in constant time (401), `application/json` (415), envelope
//! `{"link"?, "key": string, "inputs"?: object}` (400). The answer is 200 with
//! `{"data": {...inputs as strings...}}`, its own body signed in the same header.
//! Errors are `{"error": {"code", "message"}}`, unsigned, like the host's.
//!
//! The secret is `OPTECH_CLIENT_SECRET` (`wasmtime serve --env ...`), or
//! `bench-secret` when unset. Build:
//! `cargo build --release --target wasm32-wasip2 --manifest-path bench/peer/Cargo.toml --target-dir target/peer`

use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use wstd::http::body::util::{BodyExt, LengthLimitError, Limited};
use wstd::http::{Body, Error, HeaderMap, Method, Request, Response, StatusCode};

type HmacSha256 = Hmac<Sha256>;

const SIGNATURE_HEADER: &str = "x-optech-signature";
const MAX_BODY: usize = 1024 * 1024;
const DEFAULT_SECRET: &str = "bench-secret";

/// A refusal: status, machine-readable code and human message.
struct Refusal(StatusCode, &'static str, String);

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let response = match answer(request).await {
        Ok(response) => response,
        Err(Refusal(status, code, message)) => {
            let body = json!({"error": {"code": code, "message": message}}).to_string();
            let mut builder = Response::builder()
                .status(status)
                .header("content-type", "application/json");
            if status == StatusCode::METHOD_NOT_ALLOWED {
                builder = builder.header("allow", "POST");
            }
            builder.body(Body::from(body))?
        }
    };
    Ok(response)
}

async fn answer(request: Request<Body>) -> Result<Response<Body>, Refusal> {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST {
        return Err(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "data requests are POSTed; {} is not accepted here",
                parts.method
            ),
        ));
    }
    let body = read_body(&parts.headers, body).await?;

    let secret = std::env::var("OPTECH_CLIENT_SECRET").unwrap_or_else(|_| DEFAULT_SECRET.into());
    // HMAC takes keys of any length, so this cannot fail.
    let key = HmacSha256::new_from_slice(secret.as_bytes())
        .map_err(|_| refuse_internal("the secret cannot key an HMAC"))?;
    verify(
        &key,
        parts.headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes()),
        &body,
    )?;
    check_content_type(&parts.headers)?;
    let inputs = parse_inputs(&body)
        .map_err(|message| Refusal(StatusCode::BAD_REQUEST, "invalid_request", message))?;

    let out = json!({ "data": inputs }).to_string();
    let mut mac = key;
    mac.update(out.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(Body::from(out))
        .map_err(|e| refuse_internal(&e.to_string()))
}

fn refuse_internal(message: &str) -> Refusal {
    Refusal(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        message.to_string(),
    )
}

/// The whole body, refusing more than [`MAX_BODY`] bytes whether declared or streamed.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Refusal> {
    let too_large = || {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than the limit of {MAX_BODY} bytes"),
        )
    };
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(body.into_boxed_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            format!("could not read the body: {e}"),
        )),
    }
}

/// Lower- or upper-case hex, optional `sha256=` prefix, constant-time compare.
fn verify(key: &HmacSha256, header: Option<&[u8]>, body: &[u8]) -> Result<(), Refusal> {
    let refuse = |message: &str| {
        Refusal(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            message.to_string(),
        )
    };
    let header = header.ok_or_else(|| refuse("the request has no x-optech-signature header"))?;
    let hex_part = header.strip_prefix(b"sha256=").unwrap_or(header);
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut digest).map_err(|_| {
        refuse("x-optech-signature is not hex of an HMAC-SHA256 (64 hex digits, optional `sha256=` prefix)")
    })?;
    let mut mac = key.clone();
    mac.update(body);
    mac.verify_slice(&digest)
        .map_err(|_| refuse("x-optech-signature does not match the body"))
}

/// `application/json`, with parameters (`; charset=utf-8`) or a `+json` suffix.
fn check_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let value = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        return Ok(());
    }
    let shown = if value.is_empty() {
        "none".to_string()
    } else {
        format!("{value:?}")
    };
    Err(Refusal(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("content-type must be application/json, got {shown}"),
    ))
}

/// The envelope's inputs as strings: JSON strings as they are, anything else as its JSON text.
fn parse_inputs(body: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let Value::Object(mut envelope) = value else {
        return Err("the body must be a JSON object".into());
    };
    match envelope.remove("key") {
        None | Some(Value::Null) => return Err("`key` is missing".into()),
        Some(Value::String(_)) => {}
        Some(_) => return Err("`key` must be a string".into()),
    }
    let inputs = match envelope.remove("inputs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(inputs)) => inputs
            .into_iter()
            .map(|(name, value)| match value {
                Value::String(s) => (name, Value::String(s)),
                other => (name, Value::String(other.to_string())),
            })
            .collect(),
        Some(_) => return Err("`inputs` must be an object".into()),
    };
    match envelope.remove("link") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(inputs),
        Some(_) => Err("`link` must be a string".into()),
    }
}
