//! Who the client is behind proxies: `X-Forwarded-For` read as far as trusted proxies vouch for it.
//!
//! Anyone can send `X-Forwarded-For: 10.0.0.1`. An entry counts only when the hop that added it is
//! trusted: reading from the connection's peer leftwards, each trusted address hands over to the entry
//! before it, and the first address not trusted is the client (nginx's `real_ip_recursive`, Envoy's
//! trusted hops). `--trusted-proxies` lists the trusted ranges: loopback by default (a proxy on the same
//! host), `none` to ignore the header, `all` for Gravitee's reading (the first entry, whoever sent it).

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

/// The addresses whose `X-Forwarded-For` entries are believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedProxies {
    /// Every hop: the first entry is the client (Gravitee's gateway does this).
    All,
    /// Hops in these ranges (empty: the header is ignored).
    Ranges(Vec<Cidr>),
}

/// The default `--trusted-proxies`: a proxy on this host.
pub const DEFAULT_TRUSTED_PROXIES: &str = "127.0.0.0/8,::1";

impl Default for TrustedProxies {
    fn default() -> TrustedProxies {
        TrustedProxies::parse(DEFAULT_TRUSTED_PROXIES).unwrap_or(TrustedProxies::Ranges(Vec::new()))
    }
}

impl TrustedProxies {
    /// `all`, `none` (or empty), or CIDRs and addresses separated by commas.
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        match text.trim() {
            "all" | "*" => Ok(TrustedProxies::All),
            "none" | "" => Ok(TrustedProxies::Ranges(Vec::new())),
            list => list
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(Cidr::parse)
                .collect::<Result<Vec<_>, _>>()
                .map(TrustedProxies::Ranges),
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        match self {
            TrustedProxies::All => true,
            TrustedProxies::Ranges(ranges) => ranges.iter().any(|range| range.contains(ip)),
        }
    }

    /// The path a request came by, client first, then each trusted proxy, the peer last (a single
    /// element, the peer, when it is not trusted or sent no `X-Forwarded-For`). An entry that is not an
    /// address is `None`, and where the client should be, fails whatever checks it.
    pub fn chain(&self, peer: IpAddr, headers: &HeaderMap) -> Vec<Option<IpAddr>> {
        let mut hops: Vec<Option<IpAddr>> = forwarded_for(headers);
        hops.push(Some(peer));
        let mut client = hops.len() - 1;
        while client > 0 && hops[client].is_some_and(|ip| self.trusts(ip)) {
            client -= 1;
        }
        hops.drain(..client);
        hops
    }

    /// The client's address as the metrics record and EL show it: the chain's first, or the peer
    /// when that entry is not an address. `None` when there is no header (the caller shows the peer,
    /// without walking or allocating).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        // A peer that is not trusted is the client whatever it sent: no lookup.
        if !self.trusts(peer) || !headers.contains_key(X_FORWARDED_FOR) {
            return None;
        }
        Some(self.chain(peer, headers).first().copied().flatten().unwrap_or(peer))
    }
}

/// A `HeaderName` constant: looking a `&str` up parses and hashes it on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Addresses in `X-Forwarded-For`, in order; unparsable entries are kept as `None` so they fail closed.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect()
}

/// An address range: an IP and the number of leading bits that must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a single address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr =
            ip.parse().map_err(|_| format!("{text:?} is not an IP address or CIDR (host names are not supported)"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix must be 0..={max}"))?,
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.network, ip) {
            // An IPv4 client seen through an IPv6 socket (::ffff:a.b.c.d) still matches IPv4 rules.
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net) as u128, 32, self.prefix) == masked(u32::from(ip) as u128, 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix) == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let shift = width - prefix;
    (bits >> shift) << shift
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_boundaries() {
        let net = Cidr::parse("192.168.1.0/24").unwrap();
        assert!(net.contains(ip("192.168.1.0")));
        assert!(net.contains(ip("192.168.1.255")));
        assert!(!net.contains(ip("192.168.2.0")));
        assert!(!net.contains(ip("192.168.0.255")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.1.2.3").unwrap().contains(ip("10.1.2.3")));
        assert!(!Cidr::parse("10.1.2.3/32").unwrap().contains(ip("10.1.2.4")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("192.168.1.1")));
        assert!(net.contains(ip("::ffff:192.168.1.7")), "IPv4-mapped IPv6 matches IPv4 rules");
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
        assert!(Cidr::parse("").is_err());
    }

    fn chain(trusted: &str, peer: &str, xff: &str) -> Vec<Option<IpAddr>> {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, xff.parse().unwrap());
        TrustedProxies::parse(trusted).unwrap().chain(ip(peer), &headers)
    }

    #[test]
    fn entries_count_only_as_far_as_trusted_hops_vouch() {
        let some = |s: &str| Some(ip(s));
        // Loopback trusted (the default): the entry the local proxy added is the client.
        assert_eq!(chain(DEFAULT_TRUSTED_PROXIES, "127.0.0.1", "10.2.3.4"), vec![some("10.2.3.4"), some("127.0.0.1")]);
        // What the client wrote itself, left of what the trusted proxy saw, does not count.
        assert_eq!(
            chain(DEFAULT_TRUSTED_PROXIES, "127.0.0.1", "10.2.3.4, 8.8.8.8"),
            vec![some("8.8.8.8"), some("127.0.0.1")]
        );
        // A peer nobody trusts: its header is ignored.
        assert_eq!(chain(DEFAULT_TRUSTED_PROXIES, "8.8.8.8", "10.2.3.4"), vec![some("8.8.8.8")]);
        assert_eq!(chain("none", "127.0.0.1", "10.2.3.4"), vec![some("127.0.0.1")]);
        // Two trusted proxies in a row.
        assert_eq!(
            chain("127.0.0.1,192.168.0.0/16", "127.0.0.1", "1.1.1.1, 192.168.1.9"),
            vec![some("1.1.1.1"), some("192.168.1.9"), some("127.0.0.1")]
        );
        // Gravitee's reading.
        assert_eq!(chain("all", "8.8.8.8", "10.2.3.4, 9.9.9.9")[0], some("10.2.3.4"));
        // Garbage stops the walk where it is: the client is not an address.
        assert_eq!(chain("all", "127.0.0.1", "garbage, 10.0.0.1")[0], None);
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert_eq!(TrustedProxies::parse("").unwrap(), TrustedProxies::Ranges(Vec::new()));
        assert_eq!(TrustedProxies::default(), TrustedProxies::parse("127.0.0.0/8, ::1").unwrap());
    }

    #[test]
    fn the_client_is_the_chains_first_or_the_peer() {
        let cases = [
            (DEFAULT_TRUSTED_PROXIES, "127.0.0.1", "10.2.3.4"),
            (DEFAULT_TRUSTED_PROXIES, "8.8.8.8", "10.2.3.4"),
            ("none", "127.0.0.1", "10.2.3.4"),
            ("all", "8.8.8.8", "10.2.3.4, 9.9.9.9"),
            ("all", "127.0.0.1", "garbage"),
        ];
        for (trusted, peer, xff) in cases {
            let proxies = TrustedProxies::parse(trusted).unwrap();
            let mut headers = HeaderMap::new();
            assert_eq!(proxies.client(ip(peer), &headers), None, "no header: the peer");
            headers.insert(X_FORWARDED_FOR, xff.parse().unwrap());
            let client = proxies.client(ip(peer), &headers).unwrap_or(ip(peer));
            let first = chain(trusted, peer, xff)[0].unwrap_or(ip(peer));
            assert_eq!(client, first, "{trusted} {peer} {xff}");
        }
    }
}
