//! `allowed_hosts`: where a plugin may send HTTP requests. Deny by default.
//!
//! Entry syntax (Spin's): `scheme://host[:port]`.
//! - scheme: `http` or `https`, required;
//! - host: a name (`api.example.com`), `*.example.com` (any subdomain, not the
//!   name itself), `*` (any host), an IPv4 or IPv6 literal (`10.0.0.5`,
//!   `[::1]`), or a CIDR (`10.0.0.0/8`, `[fd00::/8]`);
//! - port: a number, a range `8000..8010`, `*` (any), or nothing (the scheme's
//!   default: 80 or 443).
//!
//! Invariant: an entry that is not exactly this shape (a path, a query, user
//! info, an unknown scheme) is refused at load, never guessed at.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::address::{self, AddressPolicy};

/// One parsed `allowed_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    https: bool,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Lowercase, without a trailing dot.
    Name(String),
    /// `*.example.com`: stored as `.example.com`.
    Subdomains(String),
    Any,
    Address(IpAddr),
    Network(IpNet),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortPattern {
    Exactly(u16),
    Range(u16, u16),
    Any,
}

/// A request's destination, as the allowlist and the guard see it: built
/// from the one parse of the URL that is also handed to the connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub https: bool,
    /// Lowercase name without a trailing dot, or an IP literal.
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Address(IpAddr),
}

impl Destination {
    /// From a parsed URL; `None` for a scheme other than http(s) or no host.
    /// The `url` crate has already read every spelling of an address
    /// (`2130706433`, `127.1`, `0x7f000001`, `0177.0.0.1`) as the address it is.
    pub fn from_url(url: &url::Url) -> Option<Self> {
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let host = match url.host()? {
            url::Host::Ipv4(ip) => Host::Address(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Host::Address(IpAddr::V6(ip)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty() {
                    return None;
                }
                Host::Name(name)
            }
        };
        Some(Self {
            https,
            host,
            port: url.port_or_known_default()?,
        })
    }

    /// From a URL's text, parsed once as [`Destination::from_url`] does.
    pub fn parse(text: &str) -> Option<Self> {
        Self::from_url(&url::Url::parse(text).ok()?)
    }
}

impl fmt::Display for Destination {
    /// `scheme://host:port`: what a refusal is logged as (never a path or query).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        match &self.host {
            Host::Name(name) => write!(f, "{scheme}://{name}:{}", self.port),
            Host::Address(IpAddr::V6(ip)) => write!(f, "{scheme}://[{ip}]:{}", self.port),
            Host::Address(ip) => write!(f, "{scheme}://{ip}:{}", self.port),
        }
    }
}

impl AllowedHost {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("needs a scheme: `https://host` or `http://host`")?;
        let https = match scheme {
            "https" => true,
            "http" => false,
            other => return Err(format!("scheme {other:?} is not http or https")),
        };
        if rest.contains(['@', '?', '#']) {
            return Err("only scheme, host and port: no user, query or fragment".into());
        }
        let (host, port, bracketed) = split_host_port(rest)?;
        let host = parse_host(host, bracketed)?;
        let port = match port {
            None => PortPattern::Exactly(if https { 443 } else { 80 }),
            Some("*") => PortPattern::Any,
            Some(text) => match text.split_once("..") {
                Some((low, high)) => {
                    let (low, high) = (parse_port(low)?, parse_port(high)?);
                    if low > high {
                        return Err(format!("port range {text} is empty"));
                    }
                    PortPattern::Range(low, high)
                }
                None => PortPattern::Exactly(parse_port(text)?),
            },
        };
        Ok(Self { https, host, port })
    }

    /// Whether this entry lets a request go to `to`. A name that is internal
    /// by itself (`localhost`, a metadata service's) matches only an entry
    /// that names it exactly, never a wildcard.
    pub fn matches(&self, to: &Destination) -> bool {
        let host = match (&self.host, &to.host) {
            (HostPattern::Name(name), Host::Name(want)) => name == want,
            (HostPattern::Any | HostPattern::Subdomains(_), Host::Name(want))
                if address::is_internal_name(want) =>
            {
                false
            }
            (HostPattern::Any, _) => true,
            (HostPattern::Subdomains(suffix), Host::Name(want)) => want.ends_with(suffix.as_str()),
            (HostPattern::Address(ip), Host::Address(want)) => same_address(*ip, *want),
            (HostPattern::Network(net), Host::Address(want)) => net.contains(&canonical(*want)),
            _ => false,
        };
        host && self.serves(to)
    }

    /// Whether this entry's scheme and port are the destination's.
    fn serves(&self, to: &Destination) -> bool {
        let port = match self.port {
            PortPattern::Exactly(p) => to.port == p,
            PortPattern::Range(low, high) => (low..=high).contains(&to.port),
            PortPattern::Any => true,
        };
        self.https == to.https && port
    }

    /// The network this entry names literally (an address or a CIDR), if any:
    /// an operator who writes one means it, private or not.
    pub fn network(&self) -> Option<IpNet> {
        match &self.host {
            HostPattern::Address(ip) => Some(IpNet::from(canonical(*ip))),
            HostPattern::Network(net) => Some(*net),
            _ => None,
        }
    }
}

/// A plugin's whole allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<AllowedHost>,
}

impl Allowlist {
    pub fn new(entries: Vec<AllowedHost>) -> Self {
        Self { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn allows(&self, to: &Destination) -> bool {
        self.entries.iter().any(|e| e.matches(to))
    }

    /// Whether a request may go to `to` and, if so, which internal addresses
    /// it may reach there: only the networks named literally by an entry for
    /// `to`'s scheme and port, and loopback when `to` is a `localhost` name
    /// that an entry for that scheme and port names exactly.
    pub fn admit(&self, to: &Destination) -> Option<AddressPolicy> {
        if !self.allows(to) {
            return None;
        }
        let mut named: Vec<IpNet> = self
            .entries
            .iter()
            .filter(|e| e.serves(to))
            .filter_map(AllowedHost::network)
            .collect();
        named.sort();
        named.dedup();
        let localhost = match &to.host {
            Host::Name(name) if name == "localhost" || name.ends_with(".localhost") => self
                .entries
                .iter()
                .any(|e| e.host == HostPattern::Name(name.clone()) && e.serves(to)),
            _ => false,
        };
        Some(AddressPolicy { named, localhost })
    }
}

/// Splits `host[:port]`; the flag says the host was in brackets (IPv6).
fn split_host_port(rest: &str) -> Result<(&str, Option<&str>, bool), String> {
    if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or("an IPv6 address needs its closing `]`")?;
        return match after {
            "" => Ok((host, None, true)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port), true)),
                None => Err(format!("unexpected {after:?} after the address")),
            },
        };
    }
    match rest.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(port), false)),
        None => Ok((rest, None, false)),
    }
}

fn parse_host(host: &str, bracketed: bool) -> Result<HostPattern, String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if bracketed != host.contains(':') {
        return Err(format!(
            "{host:?}: an IPv6 address goes in brackets, like [::1]:8080, and nothing else does"
        ));
    }
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if host.contains('/') {
        let net: IpNet = host
            .parse()
            .map_err(|_| format!("{host:?} is not a CIDR like 10.0.0.0/8"))?;
        return Ok(HostPattern::Network(net.trunc()));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostPattern::Address(ip));
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, host),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        return Err(format!(
            "{host:?} is not a host name, `*.name`, `*` or an IP address"
        ));
    }
    Ok(if wildcard {
        HostPattern::Subdomains(format!(".{name}"))
    } else {
        HostPattern::Name(name)
    })
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{text:?} is not a port (1-65535, a range a..b, or *)"))
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn same_address(a: IpAddr, b: IpAddr) -> bool {
    canonical(a) == canonical(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(scheme: &str, host: &str, port: Option<u16>) -> Destination {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        Destination::parse(&format!("{scheme}://{host}{port}/")).unwrap()
    }

    fn allows(entry: &str, scheme: &str, host: &str, port: Option<u16>) -> bool {
        AllowedHost::parse(entry)
            .unwrap()
            .matches(&to(scheme, host, port))
    }

    #[test]
    fn names_ports_and_schemes() {
        assert!(allows(
            "https://api.example.com",
            "https",
            "api.example.com",
            None
        ));
        assert!(allows(
            "https://api.example.com",
            "https",
            "API.Example.com.",
            Some(443)
        ));
        assert!(!allows(
            "https://api.example.com",
            "http",
            "api.example.com",
            None
        ));
        assert!(!allows(
            "https://api.example.com",
            "https",
            "api.example.com",
            Some(8443)
        ));
        assert!(!allows(
            "https://api.example.com",
            "https",
            "other.example.com",
            None
        ));
        assert!(allows(
            "http://api.example.com",
            "http",
            "api.example.com",
            Some(80)
        ));
        assert!(allows(
            "https://api.example.com:8443",
            "https",
            "api.example.com",
            Some(8443)
        ));
        assert!(allows(
            "http://127.0.0.1:*",
            "http",
            "127.0.0.1",
            Some(38211)
        ));
        assert!(allows("http://h:8000..8010", "http", "h", Some(8005)));
        assert!(!allows("http://h:8000..8010", "http", "h", Some(8011)));
    }

    #[test]
    fn wildcards() {
        let entry = "https://*.example.com:8443";
        assert!(allows(entry, "https", "a.example.com", Some(8443)));
        assert!(allows(entry, "https", "a.b.example.com", Some(8443)));
        assert!(!allows(entry, "https", "example.com", Some(8443)));
        assert!(!allows(entry, "https", "evilexample.com", Some(8443)));
        assert!(!allows(entry, "https", "a.example.com", Some(443)));
        assert!(allows("https://*", "https", "anything.org", None));
        assert!(allows("https://*", "https", "8.8.8.8", None));
    }

    #[test]
    fn addresses_and_networks() {
        assert!(allows("http://10.0.0.0/8:*", "http", "10.1.2.3", Some(9)));
        assert!(!allows("http://10.0.0.0/8:*", "http", "11.1.2.3", Some(9)));
        assert!(!allows(
            "http://10.0.0.0/8:*",
            "http",
            "ten.example",
            Some(9)
        ));
        assert!(allows("http://[::1]:8080", "http", "[::1]", Some(8080)));
        assert!(allows(
            "http://[fd00::/8]:*",
            "http",
            "[fd00:ec2::254]",
            Some(80)
        ));
        assert!(allows(
            "http://127.0.0.1",
            "http",
            "[::ffff:127.0.0.1]",
            None
        ));
        let entry = AllowedHost::parse("http://10.0.0.0/8:*").unwrap();
        assert_eq!(entry.network(), Some("10.0.0.0/8".parse().unwrap()));
        assert_eq!(AllowedHost::parse("https://a.b").unwrap().network(), None);
    }

    #[test]
    fn every_spelling_of_an_address_is_that_address() {
        for spelling in [
            "2130706433",
            "127.1",
            "0x7f000001",
            "0177.0.0.1",
            "127.0.0.1.",
            "0x7f.1",
        ] {
            let to = to("http", spelling, Some(80));
            assert_eq!(
                to.host,
                Host::Address("127.0.0.1".parse().unwrap()),
                "{spelling}"
            );
        }
        let mapped = to("http", "[::ffff:127.0.0.1]", None);
        assert_eq!(mapped.host, Host::Address("::ffff:7f00:1".parse().unwrap()));
        assert!(Destination::parse("ftp://x/").is_none());
        assert!(Destination::parse("http://[::1/").is_none());
    }

    fn admit(entries: &[&str], url: &str) -> Option<AddressPolicy> {
        let list = Allowlist::new(
            entries
                .iter()
                .map(|e| AllowedHost::parse(e).unwrap())
                .collect(),
        );
        list.admit(&Destination::parse(url).unwrap())
    }

    #[test]
    fn internal_names_need_an_entry_that_names_them() {
        for url in [
            "http://localhost/",
            "http://LOCALHOST./",
            "http://a.localhost/",
            "http://metadata.google.internal/",
        ] {
            assert_eq!(admit(&["http://*:*"], url), None, "{url}");
        }
        assert_eq!(
            admit(
                &["http://*.google.internal"],
                "http://metadata.google.internal/"
            ),
            None
        );
        let local = admit(&["http://localhost:8080"], "http://localhost:8080/").unwrap();
        assert!(local.localhost);
        assert_eq!(
            admit(&["http://localhost:8080"], "http://localhost:8081/"),
            None
        );
        // A wildcard beside it does not stretch the name to other ports.
        let other = admit(
            &["http://localhost:8080", "http://*:*"],
            "http://localhost:9/",
        );
        assert_eq!(other, None);
    }

    #[test]
    fn named_networks_count_only_on_their_entry_scheme_and_port() {
        let entries = ["http://127.0.0.1:8080", "http://*:*", "https://10.0.0.0/8"];
        let here = admit(&entries, "http://127.0.0.1:8080/").unwrap();
        assert_eq!(here.named, vec!["127.0.0.1/32".parse().unwrap()]);
        let other_port = admit(&entries, "http://127.0.0.1:8081/").unwrap();
        assert!(other_port.named.is_empty());
        assert!(!other_port.permits("127.0.0.1".parse().unwrap()));
        let tls = admit(&entries, "https://10.1.2.3/");
        assert_eq!(tls.unwrap().named, vec!["10.0.0.0/8".parse().unwrap()]);
        let plain = admit(&entries, "http://10.1.2.3/").unwrap();
        assert!(!plain.permits("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in [
            "api.example.com",
            "ftp://api.example.com",
            "https://",
            "https://api.example.com/path",
            "https://user@api.example.com",
            "https://api.example.com?x=1",
            "https://api.example.com:0",
            "https://api.example.com:70000",
            "https://api.example.com:http",
            "https://api.example.com:9..1",
            "https://[::1",
            "https://10.0.0.0/33",
            "https://*.*.com",
            "https://exa mple.com",
            "https://**",
            "https://::1",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn destinations_print_without_path_or_query() {
        assert_eq!(
            to("https", "API.example.com", None).to_string(),
            "https://api.example.com:443"
        );
        assert_eq!(
            to("http", "[::1]", Some(8080)).to_string(),
            "http://[::1]:8080"
        );
    }
}
