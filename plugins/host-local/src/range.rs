//! Ranges and range sets: canonicalisation, containment and overlap, as upstream's
//! `range.go` and `range_set.go`, except that a range whose start lies after its end is
//! refused instead of allocating outside its subnet.

use std::fmt;
use std::net::IpAddr;

use libcni::ip::{canonical, go_ip_string, ip_to_u128, next_ip, IpNet};

/// One range as written in the config (before defaults are filled in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSpec {
    pub subnet: Option<IpNet>,
    pub range_start: Option<IpAddr>,
    pub range_end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

/// A canonical range: every field set, all addresses of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

/// One address per family per range set: the ranges of a set share a family.
pub type RangeSet = Vec<Range>;

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// The last address of a subnet; for IPv4 the broadcast address is excluded.
fn last_ip(subnet: &IpNet) -> IpAddr {
    match subnet.network() {
        IpAddr::V4(n) => {
            let host_bits = 32 - u32::from(subnet.prefix);
            let broadcast = u32::from(n) | ((1u64 << host_bits) - 1) as u32;
            IpAddr::V4((broadcast - 1).into())
        }
        IpAddr::V6(n) => {
            let host_bits = 128 - u32::from(subnet.prefix);
            let mask = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
            IpAddr::V6((u128::from(n) | mask).into())
        }
    }
}

impl RangeSpec {
    /// Upstream's `Range.Canonicalize`, with its exact error texts.
    pub fn canonicalize(&self) -> Result<Range, String> {
        let subnet = self.subnet.ok_or("invalid CIDR address: ")?;
        let bits = subnet.bits();
        if subnet.prefix > bits - 2 {
            return Err(format!("Network {subnet} too small to allocate from"));
        }
        // An IPv4-mapped IPv6 subnet canonicalises to IPv4 but keeps a 128-bit mask.
        if canonical(subnet.addr).is_ipv4() != (bits == 32) {
            return Err("IPNet IP and Mask version mismatch".into());
        }
        let network = subnet.network();
        if network != subnet.addr {
            return Err(format!(
                "Network has host bits set. For a subnet mask of length {} the network address is {}",
                subnet.prefix,
                go_ip_string(network)
            ));
        }
        let first = next_ip(network).expect("a network address has a successor");
        let gateway = self.gateway.map(canonical).unwrap_or(first);
        let mut range = Range { subnet, start: first, end: last_ip(&subnet), gateway };
        // Like upstream, containment of an explicit start honours an explicit end.
        let explicit_end = self.range_end.map(canonical);
        if let Some(start) = self.range_start.map(canonical) {
            let within_end = explicit_end.is_none_or(|end| ip_to_u128(start) <= ip_to_u128(end));
            if !range.subnet_contains(start) || !within_end {
                return Err(format!("RangeStart {} not in network {subnet}", go_ip_string(start)));
            }
            range.start = start;
        }
        if let Some(end) = explicit_end {
            if !range.subnet_contains(end) || ip_to_u128(end) < ip_to_u128(range.start) {
                return Err(format!("RangeEnd {} not in network {subnet}", go_ip_string(end)));
            }
            range.end = end;
        }
        // Upstream accepts a start past the default end and then allocates outside the
        // subnet (or panics at the top of the address space); that is a config error here.
        if ip_to_u128(range.start) > ip_to_u128(range.end) {
            return Err(format!("RangeStart {} not in network {subnet}", go_ip_string(range.start)));
        }
        Ok(range)
    }
}

impl Range {
    fn subnet_contains(&self, ip: IpAddr) -> bool {
        same_family(ip, self.subnet.addr) && self.subnet.contains(ip)
    }

    /// In the subnet and between start and end, inclusive.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.subnet_contains(ip) && (ip_to_u128(self.start)..=ip_to_u128(self.end)).contains(&ip_to_u128(ip))
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        same_family(self.start, other.start)
            && (self.contains(other.start)
                || self.contains(other.end)
                || other.contains(self.start)
                || other.contains(self.end))
    }

    pub fn is_v4(&self) -> bool {
        self.start.is_ipv4()
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", go_ip_string(self.start), go_ip_string(self.end))
    }
}

/// `start-end,start-end`, as upstream prints a range set.
pub fn describe(set: &[Range]) -> String {
    set.iter().map(Range::to_string).collect::<Vec<_>>().join(",")
}

/// The range of `set` that contains `ip`.
pub fn range_for(set: &[Range], ip: IpAddr) -> Option<&Range> {
    set.iter().find(|r| r.contains(ip))
}

/// Upstream's `RangeSet.Canonicalize`.
pub fn canonicalize_set(specs: &[RangeSpec]) -> Result<RangeSet, String> {
    if specs.is_empty() {
        return Err("empty range set".into());
    }
    let mut set = Vec::with_capacity(specs.len());
    for spec in specs {
        let range = spec.canonicalize()?;
        if let Some(first) = set.first() {
            let first: &Range = first;
            if !same_family(range.start, first.start) {
                return Err("mixed address families".into());
            }
        }
        set.push(range);
    }
    for (i, a) in set.iter().enumerate() {
        for b in &set[i + 1..] {
            if a.overlaps(b) {
                return Err(format!("subnets {a} and {b} overlap"));
            }
        }
    }
    Ok(set)
}

/// Whether any range of `a` overlaps any range of `b`.
pub fn sets_overlap(a: &[Range], b: &[Range]) -> bool {
    a.iter().any(|r| b.iter().any(|r1| r.overlaps(r1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: &str) -> RangeSpec {
        RangeSpec { subnet: Some(IpNet::parse(subnet).unwrap()), ..Default::default() }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sane_defaults() {
        let cases = [
            ("192.0.2.0/24", "192.0.2.1", "192.0.2.254", "192.0.2.1"),
            ("192.0.2.0/25", "192.0.2.1", "192.0.2.126", "192.0.2.1"),
            ("2001:DB8:1::/64", "2001:db8:1::1", "2001:db8:1::ffff:ffff:ffff:ffff", "2001:db8:1::1"),
            ("10.0.0.0/30", "10.0.0.1", "10.0.0.2", "10.0.0.1"),
        ];
        for (subnet, start, end, gw) in cases {
            let r = spec(subnet).canonicalize().unwrap();
            assert_eq!((r.start, r.end, r.gateway), (ip(start), ip(end), ip(gw)), "{subnet}");
        }
    }

    #[test]
    fn upstream_error_texts() {
        let cases = [
            (
                "192.0.2.12/24",
                "Network has host bits set. For a subnet mask of length 24 the network address is 192.0.2.0",
            ),
            (
                "2001:DB8:1::24:19ff:fee1:c44a/64",
                "Network has host bits set. For a subnet mask of length 64 the network address is 2001:db8:1::",
            ),
            (
                "2001:DB8:24:19ff::/63",
                "Network has host bits set. For a subnet mask of length 63 the network address is 2001:db8:24:19fe::",
            ),
            (
                "192.168.127.0/23",
                "Network has host bits set. For a subnet mask of length 23 the network address is 192.168.126.0",
            ),
            ("192.0.2.0/31", "Network 192.0.2.0/31 too small to allocate from"),
            ("192.0.2.0/32", "Network 192.0.2.0/32 too small to allocate from"),
            ("2001:db8::/127", "Network 2001:db8::/127 too small to allocate from"),
            ("::ffff:10.45.0.0/120", "IPNet IP and Mask version mismatch"),
        ];
        for (subnet, want) in cases {
            assert_eq!(spec(subnet).canonicalize().unwrap_err(), want, "{subnet}");
        }
        let with = |start: Option<&str>, end: Option<&str>| {
            RangeSpec { range_start: start.map(ip), range_end: end.map(ip), ..spec("192.0.2.0/24") }.canonicalize()
        };
        assert_eq!(with(Some("192.0.3.0"), None).unwrap_err(), "RangeStart 192.0.3.0 not in network 192.0.2.0/24");
        assert_eq!(with(None, Some("192.0.4.0")).unwrap_err(), "RangeEnd 192.0.4.0 not in network 192.0.2.0/24");
        assert_eq!(
            with(Some("192.0.2.50"), Some("192.0.2.40")).unwrap_err(),
            "RangeStart 192.0.2.50 not in network 192.0.2.0/24"
        );
        let r = with(Some("192.0.2.40"), Some("192.0.2.50")).unwrap();
        assert_eq!((r.start, r.end), (ip("192.0.2.40"), ip("192.0.2.50")));
    }

    #[test]
    fn start_past_the_default_end_is_refused() {
        // Upstream accepts these and then hands out 10.47.0.3.. outside the /30, or panics.
        let r = RangeSpec { range_start: Some(ip("10.47.0.3")), ..spec("10.47.0.0/30") }.canonicalize();
        assert_eq!(r.unwrap_err(), "RangeStart 10.47.0.3 not in network 10.47.0.0/30");
        let r = RangeSpec { range_start: Some(ip("255.255.255.255")), ..spec("255.255.255.0/24") }.canonicalize();
        assert_eq!(r.unwrap_err(), "RangeStart 255.255.255.255 not in network 255.255.255.0/24");
        // Explicit network and broadcast addresses stay allocatable, as upstream.
        let r = RangeSpec { range_start: Some(ip("10.0.0.0")), range_end: Some(ip("10.0.0.3")), ..spec("10.0.0.0/30") }
            .canonicalize()
            .unwrap();
        assert_eq!((r.start, r.end), (ip("10.0.0.0"), ip("10.0.0.3")));
    }

    #[test]
    fn containment() {
        let r = RangeSpec {
            range_start: Some(ip("192.0.2.40")),
            range_end: Some(ip("192.0.2.50")),
            gateway: Some(ip("192.0.2.254")),
            ..spec("192.0.2.0/24")
        }
        .canonicalize()
        .unwrap();
        for (addr, want) in [
            ("192.0.3.0", false),
            ("192.0.2.39", false),
            ("192.0.2.40", true),
            ("192.0.2.50", true),
            ("192.0.2.51", false),
            ("::1", false),
        ] {
            assert_eq!(r.contains(ip(addr)), want, "{addr}");
        }
        assert!(r.contains(ip("::ffff:192.0.2.45")));
        let r6 = RangeSpec {
            range_start: Some(ip("2001:db8:1::40")),
            range_end: Some(ip("2001:db8:1::50")),
            ..spec("2001:db8:1::/64")
        }
        .canonicalize()
        .unwrap();
        for (addr, want) in [
            ("2001:db8:2::", false),
            ("2001:db8:1::39", false),
            ("2001:db8:1::40", true),
            ("2001:db8:1::50", true),
            ("2001:db8:1::51", false),
        ] {
            assert_eq!(r6.contains(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn overlap_is_symmetric() {
        let r = |s: &str, start: Option<&str>, end: Option<&str>| {
            RangeSpec { range_start: start.map(ip), range_end: end.map(ip), ..spec(s) }.canonicalize().unwrap()
        };
        let cases = [
            (r("10.0.0.0/24", None, None), r("10.0.1.0/24", None, None), false),
            (r("0.0.0.0/24", None, None), r("::/24", None, None), false),
            (r("10.0.0.0/24", None, None), r("10.0.0.0/24", None, None), true),
            (r("10.0.0.0/20", None, None), r("10.0.1.0/24", None, None), true),
            (r("10.0.0.0/24", None, Some("10.0.0.127")), r("10.0.0.0/24", Some("10.0.0.128"), None), false),
            (r("10.0.0.0/24", None, Some("10.0.0.127")), r("10.0.0.0/24", Some("10.0.0.127"), None), true),
        ];
        for (a, b, want) in cases {
            assert_eq!((a.overlaps(&b), b.overlaps(&a)), (want, want), "{a} / {b}");
        }
    }

    #[test]
    fn sets() {
        let set = canonicalize_set(&[spec("192.168.0.0/24"), spec("172.16.1.0/24")]).unwrap();
        assert_eq!(range_for(&set, ip("192.168.0.55")), Some(&set[0]));
        assert_eq!(range_for(&set, ip("192.168.99.99")), None);
        assert_eq!(describe(&set), "192.168.0.1-192.168.0.254,172.16.1.1-172.16.1.254");
        assert_eq!(
            canonicalize_set(&[spec("192.168.0.0/20"), spec("192.168.2.0/24")]).unwrap_err(),
            "subnets 192.168.0.1-192.168.15.254 and 192.168.2.1-192.168.2.254 overlap"
        );
        assert_eq!(
            canonicalize_set(&[spec("10.1.0.0/22"), spec("2001:db8:5::/64")]).unwrap_err(),
            "mixed address families"
        );
        assert_eq!(canonicalize_set(&[]).unwrap_err(), "empty range set");
        let p1 = canonicalize_set(&[spec("192.168.0.0/20")]).unwrap();
        let p2 = canonicalize_set(&[spec("192.168.2.0/24")]).unwrap();
        assert!(sets_overlap(&p1, &p2) && sets_overlap(&p2, &p1));
    }
}
