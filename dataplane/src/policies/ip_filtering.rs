//! `ip-filtering`: allow or deny clients by IP address or CIDR range (IPv4 and IPv6).
//!
//! The client address is what `--trusted-proxies` makes of `X-Forwarded-For` (see
//! [`crate::http::forwarded`]): with the default, the first entry a trusted proxy (loopback) vouches
//! for; with `all`, the first entry, as Gravitee's request `remoteAddress`. With
//! `matchAllFromXForwardedFor`, every address from the client to the peer must pass. Denied → 403.

use std::net::IpAddr;

use hgw_proto::v1 as pb;
use http::StatusCode;

use super::{Outcome, Policy, PolicyError, Reply, RequestExchange, invalid};
use crate::http::forwarded::Cidr;

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

impl Policy for IpFiltering {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let chain = exchange.trusted_proxies.chain(exchange.peer_ip, &exchange.parts.headers);
        let (client, pass) = if self.match_all_forwarded {
            let bad = chain.iter().find(|ip| !ip.is_some_and(|ip| self.allowed(ip)));
            (bad.copied().flatten().unwrap_or(exchange.peer_ip), bad.is_none())
        } else {
            // An unparsable entry where the client should be fails closed.
            match chain.first().copied().flatten() {
                Some(ip) => (ip, self.allowed(ip)),
                None => (exchange.peer_ip, false),
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

    fn filter(allow: &[&str], deny: &[&str], all: bool) -> IpFiltering {
        IpFiltering::compile(pb::IpFilteringPolicy {
            match_all_from_x_forwarded_for: all,
            whitelist_ips: allow.iter().map(|s| s.to_string()).collect(),
            blacklist_ips: deny.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    fn run(policy: &IpFiltering, peer: &str, xff: Option<&str>) -> bool {
        run_behind(policy, "all", peer, xff)
    }

    fn run_behind(policy: &IpFiltering, trusted: &str, peer: &str, xff: Option<&str>) -> bool {
        let mut builder = http::Request::builder();
        if let Some(xff) = xff {
            builder = builder.header("x-forwarded-for", xff);
        }
        let (mut parts, ()) = builder.body(()).unwrap().into_parts();
        let trusted = crate::http::forwarded::TrustedProxies::parse(trusted).unwrap();
        crate::policies::with_test_exchange_behind(&mut parts, peer, &trusted, |exchange| {
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
    fn only_trusted_proxies_choose_the_client() {
        let p = filter(&["10.0.0.0/8"], &[], false);
        let loopback = crate::http::forwarded::DEFAULT_TRUSTED_PROXIES;
        assert!(run_behind(&p, loopback, "127.0.0.1", Some("10.2.3.4")), "the local proxy's entry is the client");
        assert!(!run_behind(&p, loopback, "127.0.0.1", Some("10.2.3.4, 8.8.8.8")), "the client wrote 10.2.3.4 itself");
        assert!(!run_behind(&p, loopback, "8.8.8.8", Some("10.2.3.4")), "an untrusted peer's header is ignored");
        assert!(run_behind(&p, "none", "10.0.0.7", Some("8.8.8.8")), "`none`: the peer, whatever the header says");
    }

    #[test]
    fn forwarded_for_first_entry_or_all() {
        // `--trusted-proxies all`: Gravitee's reading.
        let p = filter(&["10.0.0.0/8"], &[], false);
        assert!(run(&p, "127.0.0.1", Some("10.2.3.4, 8.8.8.8")), "first X-Forwarded-For entry is the client");
        assert!(!run(&p, "10.0.0.1", Some("8.8.8.8")));
        assert!(!run(&p, "10.0.0.1", Some("garbage")), "unparsable client address fails closed");
        let all = filter(&["10.0.0.0/8", "127.0.0.1"], &[], true);
        assert!(run(&all, "127.0.0.1", Some("10.2.3.4, 10.9.9.9")));
        assert!(!run(&all, "127.0.0.1", Some("10.2.3.4, 8.8.8.8")));
    }
}
