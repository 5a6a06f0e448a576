//! Which addresses a plugin must not reach unless its allowlist names them:
//! the SSRF guard.
//!
//! Invariant: a host *name* allowed by name or wildcard never reaches a
//! loopback, private, link-local (cloud metadata included) or other
//! special-purpose address, unless the allowlist names that address or its
//! network literally, or the name is `localhost`. The check is made on the
//! addresses handed to the connector, which connects to nothing else, so a
//! DNS answer that changes between check and connect cannot slip past it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::allowlist::canonical;

/// Whether `ip` is inside the host's own machine or network, or otherwise
/// not a public unicast address: loopback, private (RFC 1918, ULA),
/// link-local (169.254.0.0/16 with the cloud metadata service
/// 169.254.169.254, fe80::/10), shared (100.64.0.0/10), unspecified,
/// broadcast, multicast, documentation, and AWS's IPv6 metadata fd00:ec2::254.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || a >= 240
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fd00:ec2::254 among them
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || ip.to_ipv4().is_some_and(|v4| ip.segments()[..6] == [0; 6] && is_internal_v4(v4))
}

/// What a plugin may connect to once a name has resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AddressPolicy {
    /// Internal networks the allowlist names literally.
    pub named: Vec<IpNet>,
}

impl AddressPolicy {
    /// Whether a connection to `ip`, reached through host `name` (`None` for
    /// an IP literal), is allowed.
    pub fn permits(&self, ip: IpAddr, name: Option<&str>) -> bool {
        let ip = canonical(ip);
        !is_internal(ip)
            || self.named.iter().any(|net| net.contains(&ip))
            || (name == Some("localhost") && ip.is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_internal(ip(internal)), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip(public)), "{public}");
        }
    }

    #[test]
    fn named_networks_and_localhost_are_allowed_on_purpose() {
        let strict = AddressPolicy::default();
        assert!(strict.permits(ip("8.8.8.8"), Some("dns.google")));
        assert!(!strict.permits(ip("127.0.0.1"), Some("evil.example.com")));
        assert!(!strict.permits(ip("169.254.169.254"), Some("metadata.example.com")));
        assert!(strict.permits(ip("127.0.0.1"), Some("localhost")));
        assert!(!strict.permits(ip("10.0.0.1"), Some("localhost")));
        let named = AddressPolicy {
            named: vec!["10.0.0.0/8".parse().unwrap()],
        };
        assert!(named.permits(ip("10.2.3.4"), Some("internal.corp")));
        assert!(named.permits(ip("::ffff:10.2.3.4"), None));
        assert!(!named.permits(ip("192.168.0.1"), Some("internal.corp")));
    }
}
