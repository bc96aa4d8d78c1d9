//! Addresses and prefixes with Go's `net` package text forms.
//!
//! Lease file names and result fields must be exactly what Go's `net.IP.String()` and
//! `net.IPNet.String()` produce, since upstream tools read the same files.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Go's `net.IP.String()`: IPv4-mapped IPv6 addresses print as dotted quads.
pub fn go_ip_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
    }
}

/// serde's `serialize_with` for an address in Go's `net.IP` text form.
pub fn serialize_go_ip<S: serde::Serializer>(ip: &IpAddr, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&go_ip_string(*ip))
}

/// [`serialize_go_ip`] for an optional address (fields skip `None`, as Go's `omitempty`).
pub fn serialize_opt_go_ip<S: serde::Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&ip.map(go_ip_string), s)
}

/// Go's `net.ParseIP` (no zones, no leading zeros in IPv4 octets).
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok()
}

/// The IPv4 view of an address, as Go's `To4()` (IPv4-mapped IPv6 counts as IPv4).
pub fn to_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

/// Go's `canonicalizeIP`: IPv4 and IPv4-mapped addresses become 4-byte IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    to_v4(ip).map(IpAddr::V4).unwrap_or(ip)
}

/// An address with a prefix length, not masked (`types.IPNet`): `10.1.2.5/24` stays as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        IpNet { addr, prefix }
    }

    /// Total bits of the prefix's address family, as written (IPv4-mapped IPv6 counts 128).
    pub fn bits(&self) -> u8 {
        match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    /// Parse `addr/len` like Go's `net.ParseCIDR` (decimal length, leading zeros allowed).
    pub fn parse(s: &str) -> Option<IpNet> {
        let (addr, len) = s.split_once('/')?;
        let addr = parse_ip(addr)?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix: u8 = len.parse().ok()?;
        let net = IpNet { addr, prefix };
        (prefix <= net.bits()).then_some(net)
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.prefix))),
        }
    }

    /// Whether `ip` (of the same family) lies inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n) ^ u32::from(a)) & mask32(self.prefix) == 0,
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n) ^ u128::from(a)) & mask128(self.prefix) == 0,
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

/// As Go's `types.IPNet` marshals: its `String()`.
impl serde::Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for IpNet {
    /// Go's `IPNet.String()` on an unmasked address: IPv4-mapped prints in IPv4 form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && self.prefix >= 96 => {
                write!(f, "{}/{}", go_ip_string(self.addr), self.prefix - 96)
            }
            _ => write!(f, "{}/{}", go_ip_string(self.addr), self.prefix),
        }
    }
}

/// The address following `ip`, or `None` at the top of the family.
pub fn next_ip(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// The address preceding `ip`, or `None` at the bottom of the family.
pub fn prev_ip(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(a) => u32::from(a).checked_sub(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_sub(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// The numeric value of an address, for ordering within a family.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_text_forms() {
        let cases = [
            ("10.1.2.2", "10.1.2.2"),
            ("2001:DB8:1::2", "2001:db8:1::2"),
            ("::ffff:10.1.2.3", "10.1.2.3"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("::", "::"),
        ];
        for (input, want) in cases {
            assert_eq!(go_ip_string(parse_ip(input).unwrap()), want, "{input}");
        }
        assert_eq!(parse_ip("010.1.2.3"), None);
        assert_eq!(parse_ip("fe80::1%eth0"), None);
    }

    #[test]
    fn cidr_parsing_keeps_host_bits() {
        let n = IpNet::parse("10.99.1.5/16").unwrap();
        assert_eq!(n.to_string(), "10.99.1.5/16");
        assert_eq!(n.network().to_string(), "10.99.0.0");
        assert_eq!(IpNet::parse("2001:db8:2::0/64").unwrap().to_string(), "2001:db8:2::/64");
        assert_eq!(IpNet::parse("10.0.0.0/024").unwrap().prefix, 24);
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/+1", "x/24", "::/129", "10.0.0.0/-1"] {
            assert_eq!(IpNet::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn containment_and_stepping() {
        let n = IpNet::parse("192.168.127.0/23").unwrap();
        assert_eq!(n.network().to_string(), "192.168.126.0");
        assert!(n.contains("192.168.126.9".parse().unwrap()));
        assert!(!n.contains("192.168.128.0".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        assert_eq!(next_ip("255.255.255.255".parse().unwrap()), None);
        assert_eq!(next_ip("10.0.0.255".parse().unwrap()), Some("10.0.1.0".parse().unwrap()));
        assert_eq!(prev_ip("0.0.0.0".parse().unwrap()), None);
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains("1.2.3.4".parse().unwrap()));
    }
}
