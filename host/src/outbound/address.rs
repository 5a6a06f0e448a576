//! Which addresses a plugin must not reach unless its allowlist names them:
//! the SSRF guard.
//!
//! Invariants:
//! - an *internal* address (see [`is_internal`]) is reached only when an
//!   allowlist entry names it, or a network holding it, literally, and only on
//!   that entry's scheme and port ([`AddressPolicy`] is built per destination
//!   by `Allowlist::admit`); a wildcard never reaches one;
//! - the decision is made on the address the connector is about to dial,
//!   before the connection opens, IP literals included, so a DNS answer that
//!   changes between check and connect, or a spelling of an address that one
//!   parser reads differently from another, cannot slip past it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Names that reach the machine or the cloud's metadata service whatever
/// they resolve to: only an entry naming them exactly reaches them.
pub const INTERNAL_NAMES: &[&str] = &[
    "localhost",
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Whether a host name is internal by itself: `localhost` (and any name
/// under `.localhost`, RFC 6761) or a cloud metadata service's name.
pub fn is_internal_name(name: &str) -> bool {
    INTERNAL_NAMES.contains(&name) || name.ends_with(".localhost")
}

/// Whether `ip` is inside the host's own machine or network, or otherwise
/// not a public unicast address: loopback, unspecified, private (RFC 1918),
/// link-local (the cloud metadata service 169.254.169.254 among them), shared
/// (CGNAT, 100.64.0.0/10, Alibaba's metadata 100.100.100.200 among them),
/// benchmarking (198.18.0.0/15), documentation, reserved (240.0.0.0/4),
/// broadcast, multicast, IETF protocol assignments (192.0.0.0/24), and
/// IPv6 unique-local (fc00::/7, AWS's metadata fd00:ec2::254 among them),
/// site-local (fec0::/10), link-local, multicast and documentation. An IPv6
/// address that carries an IPv4 one (mapped `::ffff:0:0/96`, compatible
/// `::/96`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`,
/// Teredo `2001::/32`) is judged by the IPv4 address it carries.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_internal_v4(v4),
            None => is_internal_v6(v6),
        },
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b & 0xfe) == 18)
        || a >= 240
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let [first, second, ..] = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed by some stacks)
        || (first == 0x2001 && second == 0x0db8) // documentation
        || (first == 0x0100 && ip.segments()[1..4] == [0; 3]) // discard-only 100::/64
}

/// The IPv4 address an IPv6 address carries, for the forms a stack or a
/// gateway turns into an IPv4 connection.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // IPv4-mapped ::ffff:a.b.c.d
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(low(hi, lo)),
        // IPv4-compatible ::a.b.c.d (deprecated); `::` and `::1` are IPv6's own
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => Some(low(hi, lo)),
        // NAT64, well-known prefix 64:ff9b::/96
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        // NAT64, local-use prefix 64:ff9b:1::/48
        [0x64, 0xff9b, 1, ..] => Some(low(s[6], s[7])),
        // 6to4 2002:AABB:CCDD::/48
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        // Teredo 2001:0::/32: the client's address, inverted, in the last 32 bits
        [0x2001, 0, ..] => Some(Ipv4Addr::from(!((u32::from(s[6]) << 16) | u32::from(s[7])))),
        _ => None,
    }
}

/// What one request may connect to: the internal networks the allowlist
/// names literally for its scheme and port, and whether `localhost` was
/// named (then its loopback addresses are reachable through that name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AddressPolicy {
    /// Internal networks named literally by an entry matching the destination's
    /// scheme and port; sorted and deduplicated.
    pub named: Vec<IpNet>,
    /// The destination is the name `localhost`, named exactly by such an entry.
    pub localhost: bool,
}

impl AddressPolicy {
    /// The policy that reaches no internal address.
    pub fn strict() -> Self {
        Self::default()
    }

    /// Whether a connection to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if !is_internal(ip) {
            return true;
        }
        let judged = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.named
            .iter()
            .any(|net| net.contains(&judged) || net.contains(&ip))
            || (self.localhost && judged.is_loopback())
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
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.170.2",
            "100.64.0.1",
            "100.100.100.200",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
        ] {
            assert!(is_internal(ip(internal)), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "198.20.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(!is_internal(ip(public)), "{public}");
        }
    }

    #[test]
    fn internal_names() {
        for name in [
            "localhost",
            "a.localhost",
            "metadata.google.internal",
            "metadata",
        ] {
            assert!(is_internal_name(name), "{name}");
        }
        for name in ["localhost.example.com", "example.com", "notlocalhost"] {
            assert!(!is_internal_name(name), "{name}");
        }
    }

    #[test]
    fn only_named_networks_and_a_named_localhost_are_reachable() {
        let strict = AddressPolicy::strict();
        assert!(strict.permits(ip("8.8.8.8")));
        assert!(!strict.permits(ip("127.0.0.1")));
        assert!(!strict.permits(ip("169.254.169.254")));
        assert!(!strict.permits(ip("::ffff:127.0.0.1")));
        assert!(!strict.permits(ip("64:ff9b::7f00:1")));
        let named = AddressPolicy {
            named: vec!["10.0.0.0/8".parse().unwrap()],
            localhost: false,
        };
        assert!(named.permits(ip("10.2.3.4")));
        assert!(named.permits(ip("::ffff:10.2.3.4")));
        assert!(!named.permits(ip("192.168.0.1")));
        assert!(!named.permits(ip("127.0.0.1")));
        let localhost = AddressPolicy {
            named: Vec::new(),
            localhost: true,
        };
        assert!(localhost.permits(ip("127.0.0.1")));
        assert!(localhost.permits(ip("::1")));
        assert!(!localhost.permits(ip("10.0.0.1")));
        let v6 = AddressPolicy {
            named: vec!["fd00::/8".parse().unwrap()],
            localhost: false,
        };
        assert!(v6.permits(ip("fd00:ec2::254")));
    }
}
