//! Micro-benchmarks of the dataplane's per-request hot paths (divan; `cargo bench -p hgw-dataplane`):
//! route lookup in a table of 10,000 APIs, and a request-phase policy chain on one exchange.
//! `tests/bench/run.sh` puts their output in `tests/bench/RESULTS.md`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use hgw_dataplane::api::routes::{Api, RouteTable};
use hgw_dataplane::policies::counters::{Backend, Counters, Unavailable};
use hgw_dataplane::policies::el::RequestInfo;
use hgw_dataplane::policies::{self, Attributes, Outcome, Phase, Policy, RequestExchange};
use hgw_proto::v1 as pb;

fn main() {
    // Built before timing starts, so the first lookup sample does not pay for it.
    std::sync::LazyLock::force(&route_lookup::TABLE);
    divan::main();
}

/// Deployed APIs in the lookup benchmarks (the scale).
const APIS: usize = 10_000;

/// A key-less API on `/svc{i}/v1`; every tenth one on a virtual host as well.
fn api(i: usize) -> pb::Api {
    let mut context_paths = vec![pb::ContextPath { host: String::new(), path: format!("/svc{i}/v1") }];
    if i.is_multiple_of(10) {
        context_paths.push(pb::ContextPath { host: format!("host{i}.example.com"), path: format!("/vh{i}") });
    }
    pb::Api {
        id: format!("api-{i}"),
        name: format!("api {i}"),
        revision: "r1".into(),
        context_paths,
        endpoint_groups: vec![pb::EndpointGroup {
            name: "default".into(),
            load_balancer: pb::LoadBalancer::RoundRobin as i32,
            endpoints: vec![pb::Endpoint {
                name: "e1".into(),
                target: "http://127.0.0.1:9".into(),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        }],
        plans: vec![pb::Plan {
            id: "plan".into(),
            name: "Keyless".into(),
            security: pb::SecurityType::KeyLess as i32,
            ..Default::default()
        }],
        analytics_enabled: true,
        ..Default::default()
    }
}

fn table(n: usize) -> RouteTable {
    let apis: BTreeMap<String, Arc<Api>> = (0..n)
        .map(|i| {
            let api = Api::try_from(api(i)).expect("a valid benchmark API");
            (api.id.clone(), Arc::new(api))
        })
        .collect();
    RouteTable::new(1, apis, HashMap::new())
}

mod route_lookup {
    use super::*;
    use std::sync::LazyLock;

    pub static TABLE: LazyLock<RouteTable> = LazyLock::new(|| table(APIS));

    /// A request under the last API's context path, three segments deeper.
    #[divan::bench]
    fn hit_deep_path() -> usize {
        let m = TABLE.lookup("", divan::black_box("/svc9999/v1/items/42/details")).expect("matches");
        m.context_path.len()
    }

    /// A host-specific API (host index first, then the host-less one).
    #[divan::bench]
    fn hit_virtual_host() -> usize {
        let m = TABLE.lookup(divan::black_box("host5000.example.com"), divan::black_box("/vh5000/orders")).expect("m");
        m.context_path.len()
    }

    /// No API: every prefix is tried.
    #[divan::bench]
    fn miss() -> bool {
        TABLE.lookup("", divan::black_box("/nothing/here/at/all")).is_none()
    }

    /// Building the table (what a config update costs before the swap).
    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn build_table() -> RouteTable {
        table(APIS)
    }
}

/// Counters that are never asked: the chain below has no rate limit (which would wait).
struct NoCounters;

impl Backend for NoCounters {
    fn acquire(&self, _hit: pb::CounterHit) -> BoxFuture<'static, Result<pb::CounterState, Unavailable>> {
        Box::pin(async { Err(Unavailable("no counters in this benchmark".into())) })
    }
}

fn step(policy: pb::step::Policy) -> Arc<dyn Policy> {
    let step = pb::Step { name: String::new(), condition: String::new(), policy: Some(policy) };
    policies::compile(step, Phase::Request).expect("a valid benchmark step")
}

fn header(name: &str, value: &str) -> pb::Header {
    pb::Header { name: name.into(), value: value.into() }
}

/// transform-headers (constant and EL values, a removal), ip-filtering (CIDR allow list and a deny
/// list), policy-assign-attributes (EL): a typical API-key plan's request flow, without rate limits.
fn chain() -> Vec<Arc<dyn Policy>> {
    vec![
        step(pb::step::Policy::TransformHeaders(pb::TransformHeadersPolicy {
            remove_headers: vec!["X-Internal".into()],
            add_headers: vec![header("X-Bench-Plan", "gold"), header("X-Bench-Path", "{#request.path}")],
            ..Default::default()
        })),
        step(pb::step::Policy::IpFiltering(pb::IpFilteringPolicy {
            match_all_from_x_forwarded_for: false,
            whitelist_ips: vec!["10.0.0.0/8".into(), "192.168.0.0/16".into(), "127.0.0.1".into()],
            blacklist_ips: vec!["10.6.6.6".into()],
        })),
        step(pb::step::Policy::AssignAttributes(pb::AssignAttributesPolicy {
            attributes: vec![header("user", "{#request.headers['X-User'][0]}"), header("tier", "gold")],
        })),
    ]
}

fn request_parts() -> http::request::Parts {
    http::Request::builder()
        .uri("/svc1/v1/items/42?expand=true")
        .header("host", "api.example.com")
        .header("x-user", "alice")
        .header("x-internal", "secret")
        .header("accept", "application/json")
        .header("user-agent", "bench")
        .body(())
        .expect("a valid request")
        .into_parts()
        .0
}

#[divan::bench]
fn policy_chain(bencher: divan::Bencher) {
    let chain = chain();
    let counters = Arc::new(Counters::new(Arc::new(NoCounters)));
    let info = RequestInfo {
        path: "/svc1/v1/items/42".into(),
        path_info: "/items/42".into(),
        method: "GET".into(),
        host: "api.example.com".into(),
        query: "expand=true".into(),
        remote_address: "10.1.2.3".into(),
        ..Default::default()
    };
    let trusted_proxies = hgw_dataplane::http::forwarded::TrustedProxies::default();
    bencher.with_inputs(request_parts).bench_local_values(|mut parts| {
        let mut attributes = Attributes::new();
        let mut response_headers = Vec::new();
        let mut exchange = RequestExchange {
            parts: &mut parts,
            peer_ip: "10.1.2.3".parse().expect("an address"),
            trusted_proxies: &trusted_proxies,
            attributes: &mut attributes,
            api_id: "api",
            plan_id: "plan",
            subscription_id: "subscription",
            counters: &counters,
            now_ms: 0,
            response_headers: &mut response_headers,
            info: &info,
            path_params: &[],
            endpoint_target: &mut None,
            retry: &mut None,
            cache: &mut None,
            legacy_engine: false,
            body: None,
            api_keys: None,
        };
        for policy in &chain {
            match policy.on_request(&mut exchange) {
                Outcome::Continue => {}
                other => panic!("the benchmark chain answered {other:?}"),
            }
        }
        (parts, attributes)
    });
}
