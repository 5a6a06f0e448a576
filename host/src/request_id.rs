//! A request's id: taken from `x-request-id` when the caller sends a usable
//! one, made up otherwise. It is returned on every answer and in every error
//! body, carried by the `request` span that every log line of the request
//! (the plugin's own included) sits in, stored with an async record, and sent
//! with its delivery.

use std::fmt;
use std::sync::Arc;

/// The header that carries it, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest id taken from a caller; a longer one is replaced.
const MAX_LEN: usize = 128;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// A fresh id: 32 random hex digits.
    pub fn generate() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()).into())
    }

    /// The caller's id if it is 1 to 128 printable ASCII characters without
    /// spaces (safe in a header, a log line and a JSON string), else a fresh one.
    pub fn from_header(value: Option<&[u8]>) -> Self {
        match value.and_then(Self::parse) {
            Some(id) => id,
            None => Self::generate(),
        }
    }

    /// An id as stored or received, if it is well-formed.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let usable = !value.is_empty()
            && value.len() <= MAX_LEN
            && value
                .iter()
                .all(|b| b.is_ascii_graphic() && *b != b'"' && *b != b'\\');
        usable
            .then(|| std::str::from_utf8(value).ok())
            .flatten()
            .map(|text| Self(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by id be searched with a `&str` (hash and equality are the text's).
impl std::borrow::Borrow<str> for RequestId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// The span every log line of one request sits in; its `key` and `plugin`
/// are recorded once known.
pub fn span(id: &RequestId) -> tracing::Span {
    tracing::info_span!(
        "request",
        id = %id,
        key = tracing::field::Empty,
        plugin = tracing::field::Empty
    )
}

/// The same span for a request already routed, made with all its fields at
/// once: a formatting subscriber then formats them once, instead of again
/// for each field recorded later.
pub fn routed_span(id: &RequestId, key: &str, plugin: &str) -> tracing::Span {
    tracing::info_span!("request", id = %id, key, plugin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_id_is_kept_when_usable_and_replaced_otherwise() {
        assert_eq!(RequestId::from_header(Some(b"abc-123")).as_str(), "abc-123");
        for bad in [
            &b""[..],
            b"has space",
            b"quote\"",
            &[b'a'; 129][..],
            b"\xff\xfe",
        ] {
            let id = RequestId::from_header(Some(bad));
            assert_eq!(id.as_str().len(), 32, "{bad:?}");
        }
        assert_ne!(RequestId::generate(), RequestId::generate());
    }
}
