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

/// Ids this long or shorter (a generated one, a UUID) are kept in place:
/// making, copying and dropping one touches no heap and no shared count,
/// which matters because the console keeps the last thousand of them.
const INLINE: usize = 38;

#[derive(Clone)]
pub struct RequestId(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

const _: () = assert!(std::mem::size_of::<RequestId>() == 40);

impl RequestId {
    /// A fresh id: 32 random hex digits.
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let random = rand::random::<u128>();
        let mut bytes = [0; INLINE];
        for (i, byte) in bytes.iter_mut().take(32).enumerate() {
            *byte = HEX[((random >> (4 * (31 - i))) & 0xf) as usize];
        }
        Self(Repr::Inline { len: 32, bytes })
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
        if !usable {
            return None;
        }
        let text = std::str::from_utf8(value).ok()?;
        Some(Self(match u8::try_from(value.len()) {
            Ok(len) if value.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..value.len()].copy_from_slice(value);
                Repr::Inline { len, bytes }
            }
            _ => Repr::Shared(text.into()),
        }))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ever filled from checked ASCII, so this never fails.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Shared(text) => text,
        }
    }
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RequestId {}

/// Hashes as its text, like `str`, so that `Borrow<str>` holds.
impl std::hash::Hash for RequestId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// Lets maps keyed by id be searched with a `&str` (hash and equality are the text's).
impl std::borrow::Borrow<str> for RequestId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The span every log line of one request sits in; its `key` and `plugin`
/// are recorded once known. A root: async work keeps it for as long as it
/// runs, and a child keeps its parent open, so under the trace's server span
/// it would hold that span open past the answer.
pub fn span(id: &RequestId) -> tracing::Span {
    tracing::info_span!(
        parent: None,
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
    tracing::info_span!(parent: None, "request", id = %id, key, plugin)
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

    #[test]
    fn short_and_long_ids_read_back_the_same() {
        let generated = RequestId::generate();
        assert!(generated.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(generated.as_str().len(), 32);
        let uuid = "3fa85f64-5717-4562-b3fc-2c963f66afa6";
        let long = "x".repeat(MAX_LEN);
        for text in [
            "a",
            uuid,
            &"y".repeat(INLINE),
            &"z".repeat(INLINE + 1),
            &long,
        ] {
            let id = RequestId::parse(text.as_bytes()).unwrap();
            assert_eq!(id.as_str(), text);
            assert_eq!(id.clone(), id);
            assert!(matches!(id.0, Repr::Inline { .. }) == (text.len() <= INLINE));
        }
    }
}
