//! The guards against a web page reaching a listener on this machine through a
//! DNS name it controls (DNS rebinding) or through a reverse proxy: used by
//! the admin listener without a token, and by the public listener while it
//! serves with `optech dev`'s secret.
//!
//! A page at `http://evil.example:8080/` whose name is made to resolve to
//! 127.0.0.1 sends its requests with `Host: evil.example:8080`; a browser
//! cannot forge `Host`. So a listener that answers only to a `Host` that is an
//! IP address or `localhost` is out of such a page's reach.

use axum::http::{HeaderMap, header};

/// Headers a reverse proxy adds to say whom it forwards for.
const FORWARDING: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-real-ip",
    "via",
];

/// Whether the `Host` header names this machine by address (an IP literal, or
/// `localhost` and its subdomains, which browsers resolve to loopback
/// themselves), not by a DNS name someone else controls. A request without
/// `Host` (HTTP/1.0) is not a browser's.
pub fn host_is_an_address(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = value.to_str() else {
        return false;
    };
    if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(ip, port)| ip.parse::<std::net::Ipv6Addr>().is_ok() && is_port(port));
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return false,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Whether a reverse proxy says it forwarded the request.
pub fn forwarded(headers: &HeaderMap) -> bool {
    FORWARDING.iter().any(|name| headers.contains_key(*name))
}

/// `""` (no port) or `:PORT`'s digits.
fn is_port(text: &str) -> bool {
    let digits = text.strip_prefix(':').unwrap_or(text);
    digits.is_empty() || (digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn host(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::HOST, HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn addresses_and_localhost_pass_names_do_not() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "10.1.2.3:80",
            "[::1]",
            "[::1]:9091",
            "localhost",
            "LOCALHOST:8080",
            "localhost.:8080",
            "app.localhost:8080",
        ] {
            assert!(host_is_an_address(&host(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.nip.io:8080",
            "localhost.evil.example",
            "[::1]evil:80",
            "[::1",
            "127.0.0.1:80:80",
            "1.2.3.4:http",
            "",
        ] {
            assert!(!host_is_an_address(&host(bad)), "{bad}");
        }
        assert!(host_is_an_address(&HeaderMap::new()), "HTTP/1.0");
    }

    #[test]
    fn a_proxy_is_seen_by_its_headers() {
        assert!(!forwarded(&host("127.0.0.1")));
        for name in FORWARDING {
            let mut headers = host("127.0.0.1");
            headers.insert(name, HeaderValue::from_static("203.0.113.7"));
            assert!(forwarded(&headers), "{name}");
        }
    }
}
