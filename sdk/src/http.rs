//! Outbound HTTP from a handler: blocking and small, so a handler stays a plain
//! function.
//!
//! ```ignore
//! use optech_sdk::{Data, Error, Request, config, http};
//!
//! fn handle(req: Request) -> Result<Data, Error> {
//!     let id = req.inputs().require("order_id")?;
//!     let base = config("base_url").ok_or_else(|| Error::failed("base_url is not set"))?;
//!     let token = config("token").unwrap_or_default();
//!     let resp = http::get(&format!("{base}/orders/{id}"))
//!         .header("authorization", &format!("Bearer {token}"))
//!         .send()?;
//!     match resp.status() {
//!         200 => Ok(Data::new().with("order", resp.text()?)),
//!         404 => Err(Error::invalid_input(format!("no order {id}"))),
//!         s => Err(Error::failed(format!("back end answered {s}"))),
//!     }
//! }
//! ```
//!
//! The host decides what goes out: only to the hosts the plugin's
//! `allowed_hosts` names (anything else is [`Error::Denied`]), within its
//! `http_timeout` and the call's own deadline ([`Error::Timeout`]), and with at
//! most `max_http_response` bytes of response ([`Error::TooLarge`]). Redirects
//! are not followed: a `3xx` is a response like any other. A plugin that never
//! calls this module does not import `wasi:http` at all.

use std::fmt;

/// Why a request got no response. The details of a [`Error::Connect`] or an
/// [`Error::Other`] (which host refused, what was malformed) go to the host's
/// log, tagged with the plugin and the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The host refused the destination: not in the plugin's `allowed_hosts`,
    /// or a name that resolves to an internal address the allowlist does not name.
    Denied {
        /// The destination refused, `host[:port]` as the URL gave it.
        host: String,
    },
    /// No response (or no complete body) within the time allowed.
    Timeout,
    /// The back end could not be reached: refused, not found, TLS failed.
    Connect,
    /// The response body is larger than the plugin's `max_http_response`.
    TooLarge,
    /// Anything else, e.g. a malformed URL or header.
    Other,
}

impl Error {
    /// A [`Error::Connect`], with why in the log.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    fn connect(why: impl fmt::Display) -> Self {
        note(format_args!("http: cannot connect: {why}"));
        Self::Connect
    }

    /// An [`Error::Other`], with why in the log.
    fn other(why: impl fmt::Display) -> Self {
        note(format_args!("http: {why}"));
        Self::Other
    }
}

/// A line in the host's log; outside the host (a handler's unit tests) there is none.
fn note(line: fmt::Arguments<'_>) {
    #[cfg(target_arch = "wasm32")]
    crate::log::warn(&line.to_string());
    #[cfg(not(target_arch = "wasm32"))]
    let _ = line;
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied { host } => write!(
                f,
                "the host does not allow requests to {host} (see allowed_hosts)"
            ),
            Self::Timeout => f.write_str("the request timed out"),
            Self::Connect => f.write_str("cannot connect to the back end"),
            Self::TooLarge => f.write_str("the response is larger than max_http_response"),
            Self::Other => f.write_str("the request failed (the host log says why)"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for crate::Error {
    /// An outbound failure is the handler's own failure: `500 plugin_error`.
    fn from(error: Error) -> Self {
        crate::Error::failed(format!("http: {error}"))
    }
}

/// A `GET` request to `url`.
pub fn get(url: &str) -> RequestBuilder {
    request("GET", url)
}

/// A `POST` request to `url`.
pub fn post(url: &str) -> RequestBuilder {
    request("POST", url)
}

/// A request with any method (`"PUT"`, `"PATCH"`, `"DELETE"`...) to `url`.
pub fn request(method: &str, url: &str) -> RequestBuilder {
    RequestBuilder {
        method: method.to_string(),
        url: url.to_string(),
        headers: Vec::new(),
        body: None,
    }
}

/// A request being built; nothing is sent until [`RequestBuilder::send`].
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl RequestBuilder {
    /// Adds a header; a name given twice is sent twice.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The request body (sent as is; set a `content-type` header to say what it is).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// A JSON body, with `content-type: application/json`.
    pub fn json(self, json: &str) -> Self {
        self.header("content-type", "application/json")
            .body(json.as_bytes())
    }

    /// Sends the request and reads the whole response; blocks until then.
    pub fn send(self) -> Result<Response, Error> {
        let url = Url::parse(&self.url)?;
        imp::send(&self.method, &url, &self.headers, self.body.as_deref())
    }
}

/// A response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// The status code: 200, 404...
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.body.clone()
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<String, Error> {
        String::from_utf8(self.body.clone())
            .map_err(|_| Error::other("the response body is not UTF-8 text"))
    }

    /// The body, without a copy.
    pub fn into_bytes(self) -> Vec<u8> {
        self.body
    }
}

/// The parts of an absolute http(s) URL the request needs.
#[derive(Debug, PartialEq, Eq)]
struct Url<'a> {
    https: bool,
    authority: &'a str,
    path_and_query: String,
}

impl<'a> Url<'a> {
    fn parse(url: &'a str) -> Result<Self, Error> {
        let bad = || Error::other(format!("{url:?} is not an absolute http(s) URL"));
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(bad()),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        let path_and_query = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(Self {
            https,
            authority,
            path_and_query,
        })
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    use wasi::io::streams::StreamError;

    use super::{Error, Response, Url};

    pub fn send(
        method: &str,
        url: &Url<'_>,
        headers: &[(String, String)],
        body: Option<&[u8]>,
    ) -> Result<Response, Error> {
        let host = url.authority.to_string();
        let fields = Fields::from_list(
            &headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| Error::other(format!("a header the host does not allow: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        let invalid = |what: &str| Error::other(format!("invalid {what}"));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        let scheme = if url.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(url.authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(&url.path_and_query))
            .map_err(|()| invalid("path"))?;
        // Without a body (a GET, say) the request never opens one: the host
        // sends it at once, with no stream to wait on.
        let outgoing = match body {
            Some(bytes) => Some((request.body().map_err(|()| invalid("body"))?, bytes)),
            None => None,
        };
        // Send first: the host starts reading the body once the request is under way.
        let future = outgoing_handler::handle(request, None).map_err(|e| code_error(e, &host))?;
        if let Some((outgoing, bytes)) = outgoing {
            let stream = outgoing.write().map_err(|()| invalid("body"))?;
            for chunk in bytes.chunks(4096) {
                // A closed stream means the host already refused: the reason
                // comes with the response below.
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
            drop(stream);
            let _ = OutgoingBody::finish(outgoing, None);
        }
        let response = loop {
            match future.get() {
                Some(Ok(Ok(response))) => break response,
                Some(Ok(Err(code))) => return Err(code_error(code, &host)),
                Some(Err(())) => return Err(Error::other("the response was taken twice")),
                None => future.subscribe().block(),
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response.consume().map_err(|()| invalid("response body"))?;
        let stream = incoming.stream().map_err(|()| invalid("response body"))?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(match wasi::http::types::http_error_code(&e) {
                        Some(code) => code_error(code, &host),
                        // The host's own cap and deadline arrive as plain text here.
                        None => stream_error(&e.to_debug_string()),
                    });
                }
            }
        }
        drop(stream);
        let _ = wasi::http::types::IncomingBody::finish(incoming);
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn code_error(code: ErrorCode, host: &str) -> Error {
        match code {
            ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => Error::Denied {
                host: host.to_string(),
            },
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout
            | ErrorCode::DnsTimeout => Error::Timeout,
            ErrorCode::HttpResponseBodySize(_) => Error::TooLarge,
            ErrorCode::ConnectionRefused => {
                Error::connect(format!("{host} refused the connection"))
            }
            ErrorCode::DestinationNotFound | ErrorCode::DnsError(_) => {
                Error::connect(format!("{host} was not found"))
            }
            ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpUnroutable
            | ErrorCode::ConnectionTerminated
            | ErrorCode::TlsProtocolError
            | ErrorCode::TlsCertificateError
            | ErrorCode::TlsAlertReceived(_) => Error::connect(format!("{host}: {code:?}")),
            other => Error::other(format!("{host}: {other:?}")),
        }
    }

    fn stream_error(text: &str) -> Error {
        let lower = text.to_ascii_lowercase();
        if lower.contains("body size") {
            Error::TooLarge
        } else if lower.contains("timeout") || lower.contains("timed out") {
            Error::Timeout
        } else {
            Error::other(format!("reading the response failed: {text}"))
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{Error, Response, Url};

    /// Outside the sandbox (a handler's unit tests on the build machine) there is
    /// no host to send through.
    pub fn send(
        _method: &str,
        _url: &Url<'_>,
        _headers: &[(String, String)],
        _body: Option<&[u8]>,
    ) -> Result<Response, Error> {
        Err(Error::other(
            "outbound HTTP runs only inside the optech host (wasm32)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url = Url::parse("https://api.example.com:8443/orders/7?x=1#frag").unwrap();
        assert_eq!(
            url,
            Url {
                https: true,
                authority: "api.example.com:8443",
                path_and_query: "/orders/7?x=1".into()
            }
        );
        assert_eq!(Url::parse("http://h").unwrap().path_and_query, "/");
        assert_eq!(Url::parse("http://h?q").unwrap().path_and_query, "/?q");
        for bad in ["api.example.com/x", "ftp://h/", "http://", "https://u:p@h/"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_become_plugin_failures() {
        let error: crate::Error = Error::Denied {
            host: "other.example:443".into(),
        }
        .into();
        assert!(matches!(&error, crate::Error::Failed(m) if m.contains("other.example:443")));
        let response = Response {
            status: 200,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: b"hi".to_vec(),
        };
        assert_eq!(response.header("content-type"), Some("text/plain"));
        assert_eq!(response.text().unwrap(), "hi");
        assert_eq!(response.bytes(), b"hi");
    }
}
