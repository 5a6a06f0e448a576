//! Accepting connections: what a client may hold of a listener before it has
//! proved anything, for the public and the admin listener alike.
//!
//! - A cap on open connections: past it a new connection gets a fixed `503`
//!   (written without waiting) and is closed, so the sockets a host holds
//!   never grow with a flood.
//! - A deadline on the TLS handshake and on each request's headers, which is
//!   also how long a keep-alive connection may idle (hyper's header timer
//!   starts as soon as the connection waits for a request).
//! - A deadline on every write: a client that stops reading its answer is
//!   closed, not waited on.
//! - HTTP/1.1 only, over TLS too (ALPN offers only `http/1.1`): one request at
//!   a time per connection, so the connection cap is also the cap on requests
//!   being read. A cleartext HTTP/2 preface is refused.
//! - The body's own deadline and the byte budget of unverified bodies are the
//!   request handler's (`checks::read_body`): they need to know the request.
//!
//! At shutdown it stops accepting, lets each connection finish the request it
//! is serving, and closes idle ones.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::metrics::ConnectionCounters;

/// What a connection may hold.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// For the TLS handshake, each request's headers, and idling between requests.
    pub header_timeout: Duration,
    /// For each write to the client.
    pub send_timeout: Duration,
}

/// The answer to a connection past the cap: fixed, so refusing costs no
/// allocation and no task.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 92\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the host has too many open connections\"}}";

/// How long to wait after an accept error that is the process's (out of
/// file descriptors, out of memory) rather than one connection's.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` (over TLS when `tls` is given) under `limits`
/// until `stop` turns true, then drains.
pub fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    tls: Option<RustlsConfig>,
    counters: ConnectionCounters,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<io::Result<()>> {
    tokio::spawn(async move {
        let open = Arc::new(Semaphore::new(limits.max_connections));
        let graceful = GracefulShutdown::new();
        let tls = tls.map(Http11Only::new);
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true);
        loop {
            let tcp = tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = open.clone().try_acquire_owned() else {
                counters.count("max_connections");
                // Best effort: a client that sent nothing yet reads why.
                let _ = tcp.try_write(TOO_MANY);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let io = timed(tcp, limits.send_timeout);
            let acceptor = tls.as_ref().map(Http11Only::acceptor);
            let watcher = graceful.watcher();
            let service = TowerToHyperService::new(app.clone());
            let http = http.clone();
            let counters = counters.clone();
            let header_timeout = limits.header_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                counters.open.inc();
                let served = match acceptor {
                    None => {
                        let conn = http.serve_connection(TokioIo::new(io), service);
                        watcher.watch(conn).await
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(header_timeout, acceptor.accept(io)).await {
                            Ok(Ok(tls)) => {
                                let conn = http.serve_connection(TokioIo::new(tls), service);
                                watcher.watch(conn).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!("TLS handshake failed: {e}");
                                Ok(())
                            }
                            Err(_) => {
                                counters.count("tls_handshake");
                                Ok(())
                            }
                        }
                    }
                };
                if let Err(e) = served {
                    if e.is_timeout() {
                        counters.count("header_timeout");
                    } else if is_send_timeout(&e) {
                        counters.count("send_timeout");
                    } else {
                        tracing::debug!("connection ended: {e}");
                    }
                }
                counters.open.dec();
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    })
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The socket with a deadline on every write.
fn timed(tcp: TcpStream, send_timeout: Duration) -> Pin<Box<TimeoutStream<TcpStream>>> {
    let mut stream = TimeoutStream::new(tcp);
    stream.set_write_timeout(Some(send_timeout));
    Box::pin(stream)
}

/// Whether hyper gave up on a connection because a write timed out.
fn is_send_timeout(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return io.kind() == io::ErrorKind::TimedOut;
        }
        source = cause.source();
    }
    false
}

/// Errors that concern one connection only: accepting goes straight on.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The certificate being served (it may be reloaded at any time), offered
/// with `http/1.1` as the only ALPN protocol.
struct Http11Only {
    certificates: RustlsConfig,
    /// The last config seen, and its HTTP/1.1-only copy.
    derived: Mutex<Option<(Arc<ServerConfig>, Arc<ServerConfig>)>>,
}

impl Http11Only {
    fn new(certificates: RustlsConfig) -> Self {
        Self {
            certificates,
            derived: Mutex::new(None),
        }
    }

    /// An acceptor with the current certificate; the copy is made once per reload.
    fn acceptor(&self) -> TlsAcceptor {
        let current = self.certificates.get_inner();
        let mut derived = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((source, copy)) = derived.as_ref()
            && Arc::ptr_eq(source, &current)
        {
            return TlsAcceptor::from(copy.clone());
        }
        let mut copy = (*current).clone();
        copy.alpn_protocols = vec![b"http/1.1".to_vec()];
        let copy = Arc::new(copy);
        *derived = Some((current, copy.clone()));
        TlsAcceptor::from(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_answer() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too_many_connections");
    }
}
