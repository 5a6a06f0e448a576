//! HMAC-SHA256 signatures over raw body bytes, as the OpTech protocol defines them.
//!
//! Invariant: verification runs over the exact bytes received, before any JSON is
//! read, and compares in constant time (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// The header that carries a body's signature, both ways.
pub const SIGNATURE_HEADER: &str = "x-optech-signature";

/// Why a signature was refused. The messages never contain the secret.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the request has no x-optech-signature header")]
    Missing,
    #[error(
        "x-optech-signature is not hex of an HMAC-SHA256 (64 hex digits, optional `sha256=` prefix)"
    )]
    Malformed,
    #[error("x-optech-signature does not match the body")]
    Mismatch,
}

/// A client secret, kept only as a keyed HMAC state so the raw secret is not
/// copied around and each signature skips re-keying.
#[derive(Clone)]
struct Key(HmacSha256);

impl Key {
    fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        Key(HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!()))
    }

    fn mac(&self, body: &[u8]) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(body);
        mac
    }
}

/// Signs what the host sends and verifies what it receives.
///
/// During a secret rotation `previous` is also accepted for verification;
/// signing always uses `current`.
#[derive(Clone)]
pub struct Signer {
    current: Key,
    previous: Option<Key>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("rotating", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> Self {
        Self {
            current: Key::new(current),
            previous: previous.map(Key::new),
        }
    }

    /// Lowercase hex of HMAC-SHA256(current secret, body).
    pub fn sign(&self, body: &[u8]) -> String {
        // Into a stack buffer, then one allocation: `hex::encode` builds the
        // string a char at a time. 32 bytes always fill the 64 digits exactly.
        let mut digits = [0u8; 64];
        let _ = hex::encode_to_slice(self.current.mac(body).finalize().into_bytes(), &mut digits);
        String::from_utf8_lossy(&digits).into_owned()
    }

    /// Checks a header value against the body with the current secret, then the previous one.
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let digest = decode_signature(header)?;
        let matches = |key: &Key| key.mac(body).verify_slice(&digest).is_ok();
        if matches(&self.current) || self.previous.as_ref().is_some_and(matches) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Accepts lower- or upper-case hex with an optional `sha256=` prefix; nothing else.
fn decode_signature(header: &[u8]) -> Result<[u8; 32], SignatureError> {
    let hex_part = header.strip_prefix(b"sha256=").unwrap_or(header);
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut digest).map_err(|_| SignatureError::Malformed)?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231 test case 2.
    const KEY: &[u8] = b"Jefe";
    const DATA: &[u8] = b"what do ya want for nothing?";
    const MAC: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    #[test]
    fn signs_like_rfc_4231() {
        assert_eq!(Signer::new(KEY, None).sign(DATA), MAC);
    }

    #[test]
    fn accepts_upper_case_and_prefix() {
        let s = Signer::new(KEY, None);
        assert_eq!(s.verify(Some(MAC.as_bytes()), DATA), Ok(()));
        assert_eq!(s.verify(Some(MAC.to_uppercase().as_bytes()), DATA), Ok(()));
        let prefixed = format!("sha256={MAC}");
        assert_eq!(s.verify(Some(prefixed.as_bytes()), DATA), Ok(()));
    }

    #[test]
    fn rejects_missing_malformed_and_wrong() {
        let s = Signer::new(KEY, None);
        assert_eq!(s.verify(None, DATA), Err(SignatureError::Missing));
        assert_eq!(s.verify(Some(b""), DATA), Err(SignatureError::Malformed));
        assert_eq!(s.verify(Some(b"zz"), DATA), Err(SignatureError::Malformed));
        let short = &MAC[..62];
        assert_eq!(
            s.verify(Some(short.as_bytes()), DATA),
            Err(SignatureError::Malformed)
        );
        let other_prefix = format!("sha1={MAC}");
        assert_eq!(
            s.verify(Some(other_prefix.as_bytes()), DATA),
            Err(SignatureError::Malformed)
        );
        let padded = format!(" {MAC}");
        assert_eq!(
            s.verify(Some(padded.as_bytes()), DATA),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            s.verify(Some(MAC.as_bytes()), b"tampered"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rotation_accepts_both_and_signs_with_current() {
        let old = Signer::new(b"old", None);
        let rotating = Signer::new(b"new", Some(b"old"));
        let new = Signer::new(b"new", None);
        let body = b"{}";
        assert_eq!(
            rotating.verify(Some(old.sign(body).as_bytes()), body),
            Ok(())
        );
        assert_eq!(
            rotating.verify(Some(new.sign(body).as_bytes()), body),
            Ok(())
        );
        assert_eq!(rotating.sign(body), new.sign(body));
        assert_eq!(
            new.verify(Some(old.sign(body).as_bytes()), body),
            Err(SignatureError::Mismatch)
        );
    }
}
