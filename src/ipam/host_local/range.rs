//! Address ranges and range sets: parsing, the reference's validation and messages, and the
//! round-robin iteration order of the Go allocator.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::Deserialize;

/// A range as written in the configuration (`ranges[i][j]`, the legacy top-level keys, or
/// `runtimeConfig.ipRanges`); empty strings count as absent, as with Go's `net.IP`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRange {
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub range_start: Option<String>,
    #[serde(default)]
    pub range_end: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
}

/// A validated range: `start..=end` inside `subnet`, with the gateway never handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The network address and prefix.
    pub subnet: IpNetwork,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

/// The ranges one address is taken from; all of one family, none overlapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

/// IPv4-mapped IPv6 addresses become IPv4, as Go's `To4()` canonicalisation does.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses an address; `None` for text that is not one.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse().ok().map(canonical)
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        // Truncation is the wrap-around of a 32-bit address.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// The next address, wrapping at the end of the family.
fn next_ip(ip: IpAddr) -> IpAddr {
    from_u128(ip, to_u128(ip).wrapping_add(1))
}

fn optional(text: &Option<String>) -> Option<&str> {
    text.as_deref().filter(|t| !t.is_empty())
}

fn ip_field(text: &str) -> Result<IpAddr, String> {
    parse_ip(text).ok_or_else(|| format!("invalid IP address: {text}"))
}

impl Range {
    /// Validates and fills in defaults exactly as the reference's `Range.Canonicalize`.
    pub fn parse(raw: &RawRange) -> Result<Range, String> {
        let subnet_text = optional(&raw.subnet).ok_or("missing subnet")?;
        let given: IpNetwork = subnet_text
            .parse()
            .ok()
            .filter(|_| subnet_text.contains('/'))
            .ok_or_else(|| format!("invalid CIDR address: {subnet_text}"))?;
        let max_bits = if given.is_ipv4() { 32 } else { 128 };
        if given.prefix() > max_bits - 2 {
            return Err(format!("Network {given} too small to allocate from"));
        }
        if canonical(given.ip()) != given.ip() {
            return Err("IPNet IP and Mask version mismatch".into());
        }
        if given.network() != given.ip() {
            return Err(format!(
                "Network has host bits set. For a subnet mask of length {} the network address is {}",
                given.prefix(),
                given.network()
            ));
        }
        let subnet = given;
        let first = next_ip(subnet.network());
        let gateway = match optional(&raw.gateway) {
            Some(text) => ip_field(text)?,
            None => first,
        };
        let mut range = Range {
            subnet,
            start: first,
            end: last_ip(subnet),
            gateway,
        };
        if let Some(text) = optional(&raw.range_start) {
            let start = ip_field(text)?;
            if !(range.same_family(start) && subnet.contains(start)) {
                return Err(format!("RangeStart {start} not in network {subnet}"));
            }
            range.start = start;
        }
        if let Some(text) = optional(&raw.range_end) {
            let end = ip_field(text)?;
            // Contains() with the start already set: an end before the start is "not in network".
            if !(range.same_family(end) && subnet.contains(end) && end >= range.start) {
                return Err(format!("RangeEnd {end} not in network {subnet}"));
            }
            range.end = end;
        }
        Ok(range)
    }

    fn same_family(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.subnet.is_ipv4()
    }

    pub fn is_ipv4(&self) -> bool {
        self.subnet.is_ipv4()
    }

    /// Whether `ip` is one this range may hand out (the gateway included).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.same_family(ip) && self.subnet.contains(ip) && self.start <= ip && ip <= self.end
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && (self.contains(other.start)
                || self.contains(other.end)
                || other.contains(self.start)
                || other.contains(self.end))
    }

    /// The address with this range's prefix length, as the result reports it.
    pub fn with_prefix(&self, ip: IpAddr) -> IpNetwork {
        IpNetwork::new(ip, self.subnet.prefix()).unwrap_or(self.subnet)
    }
}

/// The last usable address: the broadcast address minus one for IPv4, the last one for IPv6.
fn last_ip(subnet: IpNetwork) -> IpAddr {
    match subnet.broadcast() {
        IpAddr::V4(b) => IpAddr::V4(Ipv4Addr::from(u32::from(b) - 1)),
        v6 => v6,
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl RangeSet {
    /// Validates one set as the reference's `RangeSet.Canonicalize`.
    pub fn parse(raw: &[RawRange]) -> Result<RangeSet, String> {
        if raw.is_empty() {
            return Err("empty range set".into());
        }
        let ranges = raw
            .iter()
            .map(Range::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if ranges.iter().any(|r| r.is_ipv4() != ranges[0].is_ipv4()) {
            return Err("mixed address families".into());
        }
        for (i, a) in ranges.iter().enumerate() {
            if let Some(b) = ranges[i + 1..].iter().find(|b| a.overlaps(b)) {
                return Err(format!("subnets {a} and {b} overlap"));
            }
        }
        Ok(RangeSet(ranges))
    }

    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    /// The candidates in the reference's order: round robin after `last_reserved` when it lies
    /// in the set, else from the first range's start; the gateway is skipped and the walk stops
    /// when it is back where it began (so `last_reserved` itself comes last).
    pub fn candidates(&self, last_reserved: Option<IpAddr>) -> Candidates<'_> {
        let resume = last_reserved.and_then(|ip| {
            let ip = canonical(ip);
            self.0.iter().position(|r| r.contains(ip)).map(|i| (i, ip))
        });
        match resume {
            Some((index, ip)) => Candidates {
                set: self,
                index,
                cur: Some(ip),
                first: None,
            },
            None => Candidates {
                set: self,
                index: 0,
                cur: None,
                first: None,
            },
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Range::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// The iterator behind [`RangeSet::candidates`]: yields an address and its range.
pub struct Candidates<'a> {
    set: &'a RangeSet,
    index: usize,
    cur: Option<IpAddr>,
    /// The first address yielded (or skipped as the gateway); reaching it again ends the walk.
    first: Option<IpAddr>,
}

impl<'a> Iterator for Candidates<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        let ranges = &self.set.0;
        loop {
            let range = &ranges[self.index];
            let next = match self.cur {
                None => {
                    self.first = Some(range.start);
                    range.start
                }
                Some(cur) => {
                    let next = if cur == range.end {
                        self.index = (self.index + 1) % ranges.len();
                        ranges[self.index].start
                    } else {
                        next_ip(cur)
                    };
                    match self.first {
                        None => self.first = Some(next),
                        Some(first) if first == next => return None,
                        Some(_) => {}
                    }
                    next
                }
            };
            self.cur = Some(next);
            let range = &ranges[self.index];
            if next != range.gateway {
                return Some((next, range));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(subnet: &str, start: &str, end: &str, gw: &str) -> RawRange {
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        RawRange {
            subnet: text(subnet),
            range_start: text(start),
            range_end: text(end),
            gateway: text(gw),
        }
    }

    fn range(subnet: &str, start: &str, end: &str, gw: &str) -> Result<Range, String> {
        Range::parse(&raw(subnet, start, end, gw))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn walk(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        set.candidates(last.map(ip))
            .map(|(a, _)| a.to_string())
            .collect()
    }

    #[test]
    fn defaults_for_v4_and_v6() {
        let r = range("10.1.2.0/24", "", "", "").unwrap();
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.1.2.1"), ip("10.1.2.254"), ip("10.1.2.1"))
        );
        assert_eq!(r.to_string(), "10.1.2.1-10.1.2.254");
        let r = range("fd00::/120", "", "", "").unwrap();
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("fd00::1"), ip("fd00::ff"), ip("fd00::1"))
        );
        let r = range("10.1.2.0/30", "", "", "").unwrap();
        assert_eq!(r.to_string(), "10.1.2.1-10.1.2.2");
    }

    #[test]
    fn explicit_bounds_and_gateway() {
        let r = range("10.1.0.0/16", "10.1.1.10", "10.1.1.20", "10.1.1.1").unwrap();
        assert_eq!(r.to_string(), "10.1.1.10-10.1.1.20");
        assert_eq!(r.gateway, ip("10.1.1.1"));
        assert!(r.contains(ip("10.1.1.10")) && r.contains(ip("10.1.1.20")));
        assert!(!r.contains(ip("10.1.1.9")) && !r.contains(ip("10.1.1.21")));
        assert!(r.contains(ip("::ffff:10.1.1.15")));
        assert!(!r.contains(ip("fd00::1")));
        // The mapped form of an IPv4 address is IPv4.
        let r = range("10.1.0.0/16", "::ffff:10.1.0.5", "", "").unwrap();
        assert_eq!(r.start, ip("10.1.0.5"));
    }

    #[test]
    fn invalid_ranges_have_the_reference_messages() {
        let cases = [
            (raw("", "", "", ""), "missing subnet"),
            (
                raw("10.0.0.0", "", "", ""),
                "invalid CIDR address: 10.0.0.0",
            ),
            (raw("bogus/8", "", "", ""), "invalid CIDR address: bogus/8"),
            (
                raw("10.0.0.0/33", "", "", ""),
                "invalid CIDR address: 10.0.0.0/33",
            ),
            (
                raw("10.0.0.0/31", "", "", ""),
                "Network 10.0.0.0/31 too small to allocate from",
            ),
            (
                raw("10.0.0.1/32", "", "", ""),
                "Network 10.0.0.1/32 too small to allocate from",
            ),
            (
                raw("fd00::/127", "", "", ""),
                "Network fd00::/127 too small to allocate from",
            ),
            (
                raw("10.0.0.5/24", "", "", ""),
                "Network has host bits set. For a subnet mask of length 24 the network address is 10.0.0.0",
            ),
            (
                raw("::ffff:10.0.0.0/120", "", "", ""),
                "IPNet IP and Mask version mismatch",
            ),
            (
                raw("10.0.0.0/24", "10.0.1.5", "", ""),
                "RangeStart 10.0.1.5 not in network 10.0.0.0/24",
            ),
            (
                raw("10.0.0.0/24", "fd00::1", "", ""),
                "RangeStart fd00::1 not in network 10.0.0.0/24",
            ),
            (
                raw("10.0.0.0/24", "", "10.0.1.5", ""),
                "RangeEnd 10.0.1.5 not in network 10.0.0.0/24",
            ),
            (
                raw("10.0.0.0/24", "10.0.0.50", "10.0.0.40", ""),
                "RangeEnd 10.0.0.40 not in network 10.0.0.0/24",
            ),
            (raw("10.0.0.0/24", "x", "", ""), "invalid IP address: x"),
            (
                raw("10.0.0.0/24", "", "", "10.0.0"),
                "invalid IP address: 10.0.0",
            ),
        ];
        for (raw, msg) in cases {
            assert_eq!(Range::parse(&raw).unwrap_err(), msg, "{raw:?}");
        }
    }

    #[test]
    fn sets_reject_empty_mixed_and_overlapping() {
        assert_eq!(RangeSet::parse(&[]).unwrap_err(), "empty range set");
        let mixed = [raw("10.0.0.0/24", "", "", ""), raw("fd00::/64", "", "", "")];
        assert_eq!(
            RangeSet::parse(&mixed).unwrap_err(),
            "mixed address families"
        );
        let overlap = [
            raw("10.0.0.0/24", "", "", ""),
            raw("10.0.0.0/16", "10.0.0.200", "10.0.1.5", ""),
        ];
        assert_eq!(
            RangeSet::parse(&overlap).unwrap_err(),
            "subnets 10.0.0.1-10.0.0.254 and 10.0.0.200-10.0.1.5 overlap"
        );
        // Same subnet, disjoint ranges: fine.
        let split = [
            raw("10.0.0.0/24", "10.0.0.10", "10.0.0.19", ""),
            raw("10.0.0.0/24", "10.0.0.20", "10.0.0.29", ""),
        ];
        let set = RangeSet::parse(&split).unwrap();
        assert_eq!(set.to_string(), "10.0.0.10-10.0.0.19,10.0.0.20-10.0.0.29");
        let other = RangeSet::parse(&[raw("10.0.0.0/24", "10.0.0.25", "", "")]).unwrap();
        assert!(set.overlaps(&other) && other.overlaps(&set));
        let v6 = RangeSet::parse(&[raw("fd00::/64", "", "", "")]).unwrap();
        assert!(!set.overlaps(&v6));
    }

    #[test]
    fn walk_starts_at_range_start_and_skips_the_gateway() {
        let set = RangeSet::parse(&[raw("10.0.0.0/29", "", "", "")]).unwrap();
        assert_eq!(
            walk(&set, None),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        let set = RangeSet::parse(&[raw("10.0.0.0/29", "", "", "10.0.0.4")]).unwrap();
        assert_eq!(
            walk(&set, None),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn walk_is_round_robin_after_the_last_reserved_address() {
        let set = RangeSet::parse(&[raw("10.0.0.0/29", "", "", "")]).unwrap();
        assert_eq!(
            walk(&set, Some("10.0.0.4")),
            ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        );
        // Last reserved at the end of the range wraps to the start.
        assert_eq!(walk(&set, Some("10.0.0.6"))[0], "10.0.0.2");
        // Outside the set (config changed): start from the beginning.
        assert_eq!(walk(&set, Some("192.168.0.1"))[0], "10.0.0.2");
        assert_eq!(walk(&set, Some("fd00::1"))[0], "10.0.0.2");
    }

    #[test]
    fn walk_crosses_ranges_of_a_set() {
        let set = RangeSet::parse(&[
            raw("10.0.0.0/24", "10.0.0.10", "10.0.0.11", ""),
            raw("10.0.1.0/24", "10.0.1.1", "10.0.1.2", ""),
        ])
        .unwrap();
        // 10.0.1.1 is the second range's gateway.
        assert_eq!(walk(&set, None), ["10.0.0.10", "10.0.0.11", "10.0.1.2"]);
        assert_eq!(
            walk(&set, Some("10.0.0.11")),
            ["10.0.1.2", "10.0.0.10", "10.0.0.11"]
        );
        let (_, r) = set.candidates(Some(ip("10.0.0.11"))).next().unwrap();
        assert_eq!(r.with_prefix(ip("10.0.1.2")).to_string(), "10.0.1.2/24");
    }

    #[test]
    fn walk_of_a_range_holding_only_the_gateway_is_empty() {
        let set = RangeSet::parse(&[raw("10.0.0.0/24", "10.0.0.1", "10.0.0.1", "")]).unwrap();
        assert!(walk(&set, None).is_empty());
        assert!(walk(&set, Some("10.0.0.1")).is_empty());
    }

    #[test]
    fn v6_walk_and_defaults() {
        let set = RangeSet::parse(&[raw("fd00::/64", "fd00::fffe", "fd00::1:1", "")]).unwrap();
        assert_eq!(
            walk(&set, None),
            ["fd00::fffe", "fd00::ffff", "fd00::1:0", "fd00::1:1"]
        );
        let whole = range("fd00::/64", "", "", "").unwrap();
        assert_eq!(whole.end, ip("fd00::ffff:ffff:ffff:ffff"));
        let huge = range("::/0", "", "", "").unwrap();
        assert_eq!(
            (huge.start, huge.end),
            (ip("::1"), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        );
    }
}
