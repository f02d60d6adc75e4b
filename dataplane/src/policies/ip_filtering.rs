//! `ip-filtering`: allow or deny clients by IP address or CIDR range (IPv4 and IPv6).
//!
//! The client address is the first `X-Forwarded-For` entry when present (as Gravitee's request
//! `remoteAddress` is), else the connection's peer. With `matchAllFromXForwardedFor`, every address in
//! `X-Forwarded-For` (and the peer) must pass. Denied → 403.

use std::net::IpAddr;

use hgw_proto::v1 as pb;
use http::StatusCode;

use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, invalid};

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

#[derive(Debug)]
pub struct IpFiltering {
    match_all_forwarded: bool,
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl IpFiltering {
    pub fn compile(config: pb::IpFilteringPolicy) -> Result<IpFiltering, PolicyError> {
        let pb::IpFilteringPolicy { match_all_from_x_forwarded_for, whitelist_ips, blacklist_ips } = config;
        let list = |field: &str, items: Vec<String>| -> Result<Vec<Cidr>, PolicyError> {
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    Cidr::parse(item).map_err(|reason| invalid(format!("ip-filtering.{field}[{i}]"), reason))
                })
                .collect()
        };
        Ok(IpFiltering {
            match_all_forwarded: match_all_from_x_forwarded_for,
            allow: list("whitelistIps", whitelist_ips)?,
            deny: list("blacklistIps", blacklist_ips)?,
        })
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let denied = self.deny.iter().any(|c| c.contains(ip));
        let allowed = self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip));
        allowed && !denied
    }
}

/// Addresses in `X-Forwarded-For`, in order; unparsable entries are kept as `None` so they fail closed.
fn forwarded_for(headers: &http::HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect()
}

impl Policy for IpFiltering {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let forwarded = forwarded_for(&exchange.parts.headers);
        let (client, pass) = if self.match_all_forwarded {
            let mut all = forwarded.clone();
            all.push(Some(exchange.peer_ip));
            let bad = all.iter().find(|ip| !ip.is_some_and(|ip| self.allowed(ip)));
            (bad.copied().flatten().unwrap_or(exchange.peer_ip), bad.is_none())
        } else {
            match forwarded.first() {
                Some(Some(ip)) => (*ip, self.allowed(*ip)),
                Some(None) => (exchange.peer_ip, false),
                None => (exchange.peer_ip, self.allowed(exchange.peer_ip)),
            }
        };
        if pass {
            return Outcome::Continue;
        }
        Outcome::Respond(Reply::error(
            StatusCode::FORBIDDEN,
            None,
            format!(
                "Your IP ({client}) or some proxies whereby your request pass through are not allowed to reach this resource."
            ),
        ))
    }
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

    fn filter(allow: &[&str], deny: &[&str], all: bool) -> IpFiltering {
        IpFiltering::compile(pb::IpFilteringPolicy {
            match_all_from_x_forwarded_for: all,
            whitelist_ips: allow.iter().map(|s| s.to_string()).collect(),
            blacklist_ips: deny.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    fn run(policy: &IpFiltering, peer: &str, xff: Option<&str>) -> bool {
        let mut builder = http::Request::builder();
        if let Some(xff) = xff {
            builder = builder.header("x-forwarded-for", xff);
        }
        let (mut parts, ()) = builder.body(()).unwrap().into_parts();
        crate::policies::with_test_exchange(&mut parts, peer, |exchange| {
            matches!(policy.on_request(exchange), Outcome::Continue)
        })
    }

    #[test]
    fn allow_and_deny_lists() {
        let p = filter(&["10.0.0.0/8"], &["10.0.0.66"], false);
        assert!(run(&p, "10.1.1.1", None));
        assert!(!run(&p, "10.0.0.66", None));
        assert!(!run(&p, "192.168.0.1", None));
        let open = filter(&[], &[], false);
        assert!(run(&open, "1.2.3.4", None), "empty lists allow everyone");
    }

    #[test]
    fn forwarded_for_first_entry_or_all() {
        let p = filter(&["10.0.0.0/8"], &[], false);
        assert!(run(&p, "127.0.0.1", Some("10.2.3.4, 8.8.8.8")), "first X-Forwarded-For entry is the client");
        assert!(!run(&p, "10.0.0.1", Some("8.8.8.8")));
        assert!(!run(&p, "10.0.0.1", Some("garbage")), "unparsable client address fails closed");
        let all = filter(&["10.0.0.0/8", "127.0.0.1"], &[], true);
        assert!(run(&all, "127.0.0.1", Some("10.2.3.4, 10.9.9.9")));
        assert!(!run(&all, "127.0.0.1", Some("10.2.3.4, 8.8.8.8")));
    }
}
