//! An error answer: a status and `{"error": {"code", "message"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::dispatch::{HandlerError, Overloaded};
use crate::protocol;
use crate::request_id::RequestId;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Put in the body, so a caller can quote it.
    pub request_id: Option<RequestId>,
    /// The request's trace, when tracing is on: put in the body too.
    pub trace_id: Option<String>,
    /// Answered with `connection: close`: what is left of the request on the
    /// connection is not read.
    pub close: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            request_id: None,
            trace_id: None,
            close: false,
        }
    }

    /// The same error, closing the connection after it.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let id = self.request_id.as_ref().map(RequestId::as_str);
        let body =
            protocol::traced_error_body(self.code, &self.message, id, self.trace_id.as_deref());
        let mut response = (self.status, super::json_headers(), body).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<HandlerError> for ApiError {
    fn from(error: HandlerError) -> Self {
        Self::new(error.status(), error.code(), error.to_string())
    }
}

impl From<Overloaded> for ApiError {
    fn from(error: Overloaded) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            error.to_string(),
        )
    }
}
