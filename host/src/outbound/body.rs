//! A back end's response body as a plugin reads it: streamed, never buffered
//! whole by the host, cut off past `max_http_response` bytes or past the
//! request's deadline, and holding the plugin's outbound slot until it is
//! read or dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use wasmtime_wasi_http::Error;

pub struct CappedBody {
    inner: hyper::body::Incoming,
    seen: u64,
    max: u64,
    deadline: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl CappedBody {
    pub fn new(
        inner: hyper::body::Incoming,
        max: u64,
        deadline: tokio::time::Instant,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            inner,
            seen: 0,
            max,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            _slot: slot,
        }
    }
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Error::ConnectionReadTimeout)));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    if self.seen > self.max {
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(self.max)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() {
                Error::ConnectionReadTimeout
            } else {
                Error::HttpResponseIncomplete
            }))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
