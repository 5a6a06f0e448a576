//! A request's `link` is a bearer capability: whoever holds it can answer for
//! the request. It is stored and used whole, but only ever logged as a
//! [`LinkTag`]: scheme, host, port and a short fingerprint, never the path or query.

use std::fmt;

use sha2::{Digest, Sha256};

/// How a link appears in logs: `https://api.optech.ai#3fa2b1c9`. The
/// fingerprint (the first 8 hex digits of the link's SHA-256) tells links
/// apart and lets an operator who has a link find its log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTag {
    origin: String,
    fingerprint: String,
}

impl LinkTag {
    pub fn new(link: &str) -> Self {
        let origin = match reqwest::Url::parse(link) {
            Ok(url) => {
                let host = url.host_str().unwrap_or("?");
                match url.port() {
                    Some(port) => format!("{}://{host}:{port}", url.scheme()),
                    None => format!("{}://{host}", url.scheme()),
                }
            }
            Err(_) => "<not a URL>".to_string(),
        };
        let digest = Sha256::digest(link.as_bytes());
        Self {
            origin,
            fingerprint: hex::encode(&digest[..4]),
        }
    }
}

impl fmt::Display for LinkTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.origin, self.fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_shows_the_origin_and_never_the_path_or_query() {
        let link = "https://api.optech.ai/ingest/s3cr3t-id?token=t0k3n";
        let tag = LinkTag::new(link).to_string();
        assert!(tag.starts_with("https://api.optech.ai#"), "{tag}");
        assert_eq!(tag.len(), "https://api.optech.ai#".len() + 8);
        assert!(!tag.contains("s3cr3t") && !tag.contains("t0k3n"), "{tag}");
        assert_eq!(
            LinkTag::new("http://127.0.0.1:8080/x").to_string()[..22],
            *"http://127.0.0.1:8080#"
        );
        assert_ne!(
            LinkTag::new(link),
            LinkTag::new("https://api.optech.ai/ingest/other")
        );
        assert!(
            LinkTag::new("not a url/with/path")
                .to_string()
                .starts_with("<not a URL>#")
        );
    }
}
