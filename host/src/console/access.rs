//! Who may use the admin listener, and how a browser proves it.
//!
//! - With `[server] admin_token`, every admin route needs `authorization:
//!   Bearer <token>` or the console's cookie (made from the token). Without
//!   either, `/healthz`, `/metrics`, `/readyz` and the console's data routes
//!   answer 401, and a console page answers 401 with only the token form.
//! - Without a token the admin listener must be on loopback (the config
//!   refuses anything else), and every route, monitoring ones included,
//!   answers only to a `Host` that is an IP address or `localhost` (so a web
//!   page cannot reach it through a DNS name it points at 127.0.0.1: DNS
//!   rebinding), and only to a request no reverse proxy says it forwarded
//!   (`Forwarded`, `X-Forwarded-For`, `Via`...): behind a proxy, set a token.
//! - The cookie is `HttpOnly` and `SameSite=Strict`, and holds an HMAC of the
//!   token, never the token itself.
//! - A POST (the token form, "Send") must carry `HX-Request` (which htmx sends
//!   and a cross-site form or `fetch` cannot without a CORS preflight that
//!   this listener never grants), and its `Origin` and `Sec-Fetch-Site`, when
//!   the browser sends them, must say it comes from this origin.

use axum::http::{HeaderMap, Method, header};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::rebinding;

/// The console's cookie.
pub const COOKIE: &str = "optech_console";

/// The token the admin listener checks, if any.
#[derive(Clone)]
pub struct Access {
    token: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No (or a wrong) token or cookie.
    Unauthorized,
    /// Asked for under a host name that is not this machine's address.
    WrongHost,
    /// Forwarded by a reverse proxy, with no token to prove who asks.
    Proxied,
}

impl Access {
    /// From the config's `admin_token`. Without one the listener must be on
    /// loopback: the config, and [`crate::Host`] for `--admin-listen`, refuse
    /// anything else.
    pub fn new(token: Option<&str>) -> Self {
        Self {
            token: token.map(str::to_string),
        }
    }

    /// Whether the console asks for a token.
    pub fn console_needs_token(&self) -> bool {
        self.token.is_some()
    }

    /// Any admin route but the console's static assets.
    pub fn check(&self, headers: &HeaderMap) -> Verdict {
        match &self.token {
            Some(_) if self.presented(headers) => Verdict::Allowed,
            Some(_) => Verdict::Unauthorized,
            None if !rebinding::host_is_an_address(headers) => Verdict::WrongHost,
            None if rebinding::forwarded(headers) => Verdict::Proxied,
            None => Verdict::Allowed,
        }
    }

    /// Whether `candidate` is the token.
    pub fn is_token(&self, candidate: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|token| same(token, candidate))
    }

    /// The cookie's value: an HMAC of a fixed text under the token.
    pub fn cookie_value(&self) -> Option<String> {
        let token = self.token.as_deref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).ok()?;
        mac.update(b"optech console session v1");
        Some(hex::encode(mac.finalize().into_bytes()))
    }

    /// `Set-Cookie` for a browser that gave the right token.
    pub fn set_cookie(&self) -> Option<String> {
        let value = self.cookie_value()?;
        Some(format!(
            "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict"
        ))
    }

    fn presented(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| self.is_token(t.trim()));
        bearer || self.has_cookie(headers)
    }

    fn has_cookie(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = self.cookie_value() else {
            return false;
        };
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && same(&expected, value))
    }
}

/// Whether `candidate` equals `expected`, in time that does not depend on
/// where they differ: both are digested, and the digests compared with
/// `Mac::verify_slice` (constant time).
fn same(expected: &str, candidate: &str) -> bool {
    let digest = |text: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"optech admin compare")
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(text.as_bytes());
        mac
    };
    let want = digest(expected).finalize().into_bytes();
    digest(candidate).verify_slice(&want).is_ok()
}

/// Why a POST is refused as possibly cross-site, if it is.
pub fn cross_site(method: &Method, headers: &HeaderMap) -> Option<&'static str> {
    if method != Method::POST {
        return None;
    }
    if headers.get("hx-request").is_none() {
        return Some("the console's forms are sent by its own script (HX-Request is missing)");
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Some("the request comes from another site (Sec-Fetch-Site)");
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let same_origin = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .zip(host)
            .is_some_and(|(origin_host, host)| origin_host.eq_ignore_ascii_case(host));
        if !same_origin {
            return Some("the request comes from another origin (Origin)");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_token_guards_everything_by_bearer_or_cookie() {
        let access = Access::new(Some("0123456789abcdef"));
        assert!(access.console_needs_token());
        assert_eq!(access.check(&headers(&[])), Verdict::Unauthorized);
        let bearer = headers(&[("authorization", "Bearer 0123456789abcdef")]);
        assert_eq!(access.check(&bearer), Verdict::Allowed);
        let wrong = headers(&[("authorization", "Bearer 0123456789abcdeX")]);
        assert_eq!(access.check(&wrong), Verdict::Unauthorized);
        let cookie = access.cookie_value().unwrap();
        assert!(!cookie.contains("0123456789abcdef"));
        let with_cookie = headers(&[("cookie", &format!("a=b; {COOKIE}={cookie}"))]);
        assert_eq!(access.check(&with_cookie), Verdict::Allowed);
        let set = access.set_cookie().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        // A token may be used by any name, through a proxy.
        let proxied = headers(&[
            ("authorization", "Bearer 0123456789abcdef"),
            ("host", "admin.example.com"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(access.check(&proxied), Verdict::Allowed);
    }

    #[test]
    fn without_a_token_only_addresses_and_no_proxy() {
        let access = Access::new(None);
        assert!(!access.console_needs_token());
        assert_eq!(access.check(&headers(&[])), Verdict::Allowed);
        for host in [
            "127.0.0.1:9091",
            "localhost:9091",
            "[::1]:9091",
            "LOCALHOST",
        ] {
            assert_eq!(
                access.check(&headers(&[("host", host)])),
                Verdict::Allowed,
                "{host}"
            );
        }
        for host in ["evil.example:9091", "rebind.example"] {
            assert_eq!(
                access.check(&headers(&[("host", host)])),
                Verdict::WrongHost,
                "{host}"
            );
        }
        // A proxy's `proxy_pass http://127.0.0.1:9091` keeps an address in
        // `Host`; what it adds gives it away.
        let proxied = headers(&[
            ("host", "127.0.0.1:9091"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(access.check(&proxied), Verdict::Proxied);
    }

    #[test]
    fn posts_must_come_from_the_console_itself() {
        let ok = headers(&[
            ("hx-request", "true"),
            ("host", "127.0.0.1:9091"),
            ("origin", "http://127.0.0.1:9091"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(cross_site(&Method::POST, &ok), None);
        assert_eq!(cross_site(&Method::GET, &headers(&[])), None);
        assert!(cross_site(&Method::POST, &headers(&[("host", "127.0.0.1:9091")])).is_some());
        let other_origin = headers(&[
            ("hx-request", "true"),
            ("host", "127.0.0.1:9091"),
            ("origin", "http://evil.example"),
        ]);
        assert!(cross_site(&Method::POST, &other_origin).is_some());
        let other_site = headers(&[("hx-request", "true"), ("sec-fetch-site", "cross-site")]);
        assert!(cross_site(&Method::POST, &other_site).is_some());
    }
}
