//! The only way plugins' requests reach the network: a connector that asks
//! the SSRF guard about every address before it dials it.
//!
//! Invariant: a connection opens only to an address the client's
//! [`AddressPolicy`] permits. A name is resolved here (never by the HTTP
//! stack), an IP literal is judged as it is, and an address the policy
//! refuses is never dialled, so the check cannot happen after the fact.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{AddressPolicy, BoxFuture, Lookup};

/// A pooled client for one address policy: plain HTTP or TLS (webpki roots),
/// HTTP/1.1 or HTTP/2 by ALPN, no redirects, no proxy.
pub type Client = HyperClient<HttpsConnector<GuardedConnector>, Full<Bytes>>;

pub fn client(connector: GuardedConnector, idle: Duration) -> Client {
    let https = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector);
    HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(idle)
        .build(https)
}

/// Every address a name resolved to is internal, and the policy names none:
/// or an IP literal the policy does not permit.
#[derive(Debug, thiserror::Error)]
#[error("{0} is, or resolves only to, internal addresses that allowed_hosts does not name")]
pub struct Prohibited(pub String);

/// The name did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {name}: {source}")]
pub struct Unresolved {
    name: String,
    source: std::io::Error,
}

/// Resolves, filters through the guard, then dials: in that order, always.
#[derive(Clone)]
pub struct GuardedConnector {
    lookup: Arc<dyn Lookup>,
    policy: Arc<AddressPolicy>,
}

impl GuardedConnector {
    pub fn new(lookup: Arc<dyn Lookup>, policy: AddressPolicy) -> Self {
        Self {
            lookup,
            policy: Arc::new(policy),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (lookup, policy) = (self.lookup.clone(), self.policy.clone());
        Box::pin(async move {
            let host = uri.host().ok_or("the URL has no host")?;
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let found = match bare.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => lookup.lookup(bare).await.map_err(|source| Unresolved {
                    name: bare.to_string(),
                    source,
                })?,
            };
            let mut last = None;
            let mut dialled = false;
            for ip in found.into_iter().filter(|ip| policy.permits(*ip)) {
                dialled = true;
                match TcpStream::connect(SocketAddr::new(ip, port)).await {
                    Ok(stream) => {
                        stream.set_nodelay(true)?;
                        return Ok(TokioIo::new(stream));
                    }
                    Err(e) => last = Some(e),
                }
            }
            if !dialled {
                return Err(Box::new(Prohibited(bare.to_string())) as BoxError);
            }
            Err(last.map_or_else(
                || "no address to connect to".into(),
                |e| Box::new(e) as BoxError,
            ))
        })
    }
}
