//! The route table: validated domain APIs converted once from `hgw.v1.Api`, and the index that maps a
//! request's host and path to one of them.
//!
//! Requests read a [`RouteTable`] snapshot through `ArcSwap` and hold their `Arc` until they finish, so
//! a config update never changes what an in-flight request sees.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hgw_proto::v1 as pb;

use crate::api::conversion::{ConversionError, Invalid};
use crate::api::cors::Cors;
use crate::api::endpoints::convert_group;
pub use crate::api::endpoints::{Endpoint, EndpointGroup, Target};
use crate::api::flows::Flow;
use crate::api::security::Security;
use crate::api::templates::ResponseTemplates;
use crate::http::upstream::{ClientKey, UpstreamClient};
use crate::telemetry::logging::Logging;

/// A compiled Gravitee HTTP proxy API, ready to serve.
#[derive(Debug)]
pub struct Api {
    pub id: String,
    pub name: String,
    pub revision: String,
    pub environment_id: String,
    pub organization_id: String,
    pub context_paths: Vec<ContextPath>,
    /// The first endpoint group: the one the proxy calls.
    pub endpoints: EndpointGroup,
    /// The API's other endpoint groups, reached by name only (`dynamic-routing`'s `#endpoints['name']`).
    pub other_groups: Vec<EndpointGroup>,
    /// Plans (with their flows) and the credentials that open them.
    pub security: Security,
    /// API-level flows, in definition order (plan flows live in their plan).
    pub flows: Vec<Flow>,
    /// Whether any flow, step, selection rule or policy value evaluates EL (requests then carry the
    /// EL request info; other APIs skip building it).
    pub uses_el: bool,
    pub analytics_enabled: bool,
    /// Listener CORS; `None` costs requests nothing.
    pub cors: Option<Cors>,
    /// Gravitee's `best-match` flow mode: of the flows that apply, only the one whose path selector
    /// matches most specifically runs (one among plan flows, one among API flows).
    pub best_match: bool,
    /// `flowExecution.matchRequired`: no flow ran → 404 (Gravitee's FLOW_EXECUTION_FLOW_MATCHED_FAILURE).
    pub flow_match_required: bool,
    /// Response templates by error key; `None` when the API has none.
    pub response_templates: Option<ResponseTemplates>,
    /// Request/response logging (v4 log records); `None` costs requests nothing.
    pub logging: Option<Logging>,
    /// Where this API's clients send API keys: masked in the analytics `uri` and in log records.
    pub api_keys: Arc<crate::telemetry::redact::ApiKeyLocations>,
    /// Gravitee's `analytics.tracing`: `Some` when the API asks for traces (`verbose` adds a span per
    /// policy step). Requests are traced only when the dataplane exports traces at all.
    pub tracing: Option<crate::telemetry::trace::ApiTracing>,
    /// A v2 API on Gravitee's V3 (legacy) engine (`execution_mode` absent or `v3`): its answers carry
    /// no `X-Gravitee-Client-Identifier`, and an endpoint connection failure is answered without the
    /// gateway's ids.
    pub legacy_engine: bool,
    /// `#api.properties` (v2 `#properties`): shared with each request's EL info, never copied.
    pub properties: Arc<std::collections::HashMap<String, String>>,
    /// The API as its analytics records name it: shared by every request's record, sent once per batch.
    pub record_api: Arc<crate::telemetry::request_metrics::RecordApi>,
}

/// Where an API listens: virtual host (lower case, empty for any) and context path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContextPath {
    pub host: String,
    pub path: String,
}

impl TryFrom<pb::Api> for Api {
    type Error = ConversionError;

    fn try_from(api: pb::Api) -> Result<Self, Self::Error> {
        let pb::Api {
            id,
            name,
            revision,
            environment_id,
            organization_id,
            definition_version,
            context_paths,
            endpoint_groups,
            plans,
            flows,
            flow_mode,
            flow_match_required,
            analytics_enabled,
            tags: _,
            subscriptions,
            api_keys,
            failover,
            cors,
            response_templates,
            logging,
            tracing,
            legacy_engine,
            properties,
            // Agent only: never sent (and ignored if it were).
            redis_caches: _,
        } = api;
        let err = |field: String, reason: Invalid| ConversionError { api: id.clone(), field, reason };
        if id.is_empty() {
            return Err(err("id".into(), Invalid::Empty));
        }
        if context_paths.is_empty() {
            return Err(err("context_paths".into(), Invalid::Empty));
        }
        let context_paths = context_paths
            .into_iter()
            .enumerate()
            .map(|(i, pb::ContextPath { host, path })| {
                if !path.starts_with('/') {
                    return Err(err(format!("context_paths[{i}].path"), Invalid::ContextPath(path)));
                }
                Ok(ContextPath { host: host.trim().to_ascii_lowercase(), path: normalise_context_path(&path) })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut groups = endpoint_groups.into_iter();
        let group = groups.next().ok_or_else(|| err("endpoint_groups".into(), Invalid::NoEndpointGroup))?;
        let v2 = definition_version.starts_with('2');
        let endpoints = convert_group(group, failover, v2).map_err(|(field, reason)| err(field, reason))?;
        // The other groups are called only by name (dynamic routing): no failover of their own.
        let other_groups = groups
            .map(|g| convert_group(g, None, v2).map_err(|(field, reason)| err(field, reason)))
            .collect::<Result<_, _>>()?;

        let best_match = match pb::FlowMode::try_from(flow_mode) {
            Ok(pb::FlowMode::Default | pb::FlowMode::Unspecified) => false,
            Ok(pb::FlowMode::BestMatch) => true,
            Err(_) => return Err(err("flow_mode".into(), Invalid::FlowMode(flow_mode.to_string()))),
        };

        let cors = cors.map(Cors::try_from).transpose().map_err(|e| err("cors".into(), e.into()))?;
        let response_templates =
            ResponseTemplates::compile(response_templates).map_err(|e| err("response_templates".into(), e.into()))?;
        let flows = flows
            .into_iter()
            .enumerate()
            .map(|(i, f)| Flow::try_from(f).map_err(|e| err(format!("flows[{i}]"), e.into())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut plans_with_flows = Vec::with_capacity(plans.len());
        for (i, mut plan) in plans.into_iter().enumerate() {
            let plan_flows = std::mem::take(&mut plan.flows)
                .into_iter()
                .enumerate()
                .map(|(j, f)| Flow::try_from(f).map_err(|e| err(format!("plans[{i}].flows[{j}]"), e.into())))
                .collect::<Result<Vec<_>, _>>()?;
            plans_with_flows.push((plan, plan_flows));
        }
        let security =
            Security::new(plans_with_flows, subscriptions, api_keys).map_err(|e| err("plans".into(), e.into()))?;
        let logging = logging.map(Logging::try_from).transpose().map_err(|e| err("logging".into(), e.into()))?;

        let api_keys = Arc::new(security.api_key_locations());
        let record_api = Arc::new(crate::telemetry::request_metrics::RecordApi {
            id: id.clone(),
            name: name.clone(),
            organization_id: organization_id.clone(),
            environment_id: environment_id.clone(),
        });
        Ok(Api {
            record_api,
            api_keys,
            id,
            name,
            revision,
            environment_id,
            organization_id,
            context_paths,
            endpoints,
            other_groups,
            uses_el: flows.iter().any(Flow::uses_el)
                || security.uses_el()
                || logging.as_ref().is_some_and(|l| l.condition.is_some()),
            security,
            flows,
            analytics_enabled,
            cors,
            best_match,
            flow_match_required,
            response_templates,
            logging,
            tracing: tracing.filter(|t| t.enabled).map(|t| crate::telemetry::trace::ApiTracing { verbose: t.verbose }),
            legacy_engine,
            properties: Arc::new(properties.into_iter().collect()),
        })
    }
}

/// The agent sends normalised paths; be lenient anyway with a trailing '/'.
fn normalise_context_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() }
}

impl Api {
    /// Every endpoint group, the default one first.
    pub fn groups(&self) -> impl Iterator<Item = &EndpointGroup> {
        std::iter::once(&self.endpoints).chain(&self.other_groups)
    }
}

/// A request's match: the API and the context path it matched.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'a> {
    pub api: &'a Arc<Api>,
    pub context_path: &'a str,
}

impl RouteMatch<'_> {
    /// The request path after the context path (Gravitee's `pathInfo`; the whole path under "/").
    pub fn path_info<'p>(&self, path: &'p str) -> &'p str {
        if self.context_path == "/" { path } else { path.get(self.context_path.len()..).unwrap_or("") }
    }
}

type PathIndex = HashMap<String, (Arc<Api>, String)>;

/// A snapshot of every deployed API and the index to find them.
#[derive(Debug, Default)]
pub struct RouteTable {
    version: u64,
    apis: BTreeMap<String, Arc<Api>>,
    /// Virtual-host entries: host (lower case) → context path → API.
    by_host: HashMap<String, PathIndex>,
    /// Entries without a host.
    any_host: PathIndex,
    /// One client per distinct pool options, shared by all endpoints that use them.
    /// Looked up on every request: keyed by the gateway's own settings, so a fast unseeded hash.
    clients: rustc_hash::FxHashMap<ClientKey, UpstreamClient>,
}

impl RouteTable {
    /// Builds the index. When two APIs claim the same host and context path, the API with the
    /// smaller id wins (deterministic across dataplanes) and a warning is logged.
    pub fn new(
        version: u64,
        apis: BTreeMap<String, Arc<Api>>,
        clients: HashMap<ClientKey, UpstreamClient>,
    ) -> RouteTable {
        let mut by_host: HashMap<String, PathIndex> = HashMap::new();
        let mut any_host = PathIndex::new();
        for api in apis.values() {
            for cp in &api.context_paths {
                let index =
                    if cp.host.is_empty() { &mut any_host } else { by_host.entry(cp.host.clone()).or_default() };
                match index.get(&cp.path) {
                    Some((owner, _)) if owner.id != api.id => {
                        tracing::warn!(
                            host = %cp.host, path = %cp.path, kept = %owner.id, ignored = %api.id,
                            "two APIs claim the same context path"
                        );
                    }
                    Some(_) => {}
                    None => {
                        index.insert(cp.path.clone(), (api.clone(), cp.path.clone()));
                    }
                }
            }
        }
        RouteTable { version, apis, by_host, any_host, clients: clients.into_iter().collect() }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn apis(&self) -> &BTreeMap<String, Arc<Api>> {
        &self.apis
    }

    /// The pooled client for an endpoint's options.
    pub fn client(&self, key: &ClientKey) -> Option<&UpstreamClient> {
        self.clients.get(key)
    }

    /// Finds the API for a request: longest context path first (at '/' boundaries), and at equal
    /// path a host-specific entry before a host-less one. `host` must be lower case without port.
    /// Costs one or two hash lookups per path segment, whatever the number of APIs.
    pub fn lookup(&self, host: &str, path: &str) -> Option<RouteMatch<'_>> {
        if !path.starts_with('/') {
            return None;
        }
        let host_index = if host.is_empty() { None } else { self.by_host.get(host) };
        for candidate in prefixes(path) {
            let found = host_index.and_then(|index| index.get(candidate)).or_else(|| self.any_host.get(candidate));
            if let Some((api, context_path)) = found {
                return Some(RouteMatch { api, context_path });
            }
        }
        None
    }
}

/// The context paths that can match `path`, longest first: the path itself, each prefix ending just
/// before a '/', then "/".
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    let cuts = path.char_indices().rev().filter(|&(i, c)| c == '/' && i > 0).map(move |(i, _)| &path[..i]);
    std::iter::once(path).chain(cuts).chain(std::iter::once("/"))
}

/// The Host header value without port, lower case, for matching (IPv6 literals keep their brackets).
pub fn normalise_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    without_port.to_ascii_lowercase()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn api(id: &str, paths: &[(&str, &str)], target: &str) -> pb::Api {
        pb::Api {
            id: id.into(),
            name: format!("{id} name"),
            revision: "r1".into(),
            context_paths: paths
                .iter()
                .map(|(host, path)| pb::ContextPath { host: host.to_string(), path: path.to_string() })
                .collect(),
            endpoint_groups: vec![pb::EndpointGroup {
                name: "default".into(),
                load_balancer: pb::LoadBalancer::RoundRobin as i32,
                endpoints: vec![pb::Endpoint {
                    name: "e1".into(),
                    target: target.into(),
                    weight: 1,
                    secondary: false,
                    http: None,
                    headers: vec![],
                    tls: None,
                    proxy: None,
                    grpc: 0,
                }],
                health_check: None,
            }],
            plans: vec![pb::Plan {
                id: "plan-1".into(),
                name: "Keyless".into(),
                security: pb::SecurityType::KeyLess as i32,
                flows: vec![],
                api_key: None,
                jwt: None,
                selection_rule: String::new(),
                oauth2: None,
            }],
            analytics_enabled: true,
            ..Default::default()
        }
    }

    fn table(apis: Vec<pb::Api>) -> RouteTable {
        let apis = apis
            .into_iter()
            .map(|a| {
                let a = Api::try_from(a).unwrap();
                (a.id.clone(), Arc::new(a))
            })
            .collect();
        RouteTable::new(1, apis, HashMap::new())
    }

    fn found(t: &RouteTable, host: &str, path: &str) -> Option<(String, String)> {
        t.lookup(host, path).map(|m| (m.api.id.clone(), m.path_info(path).to_owned()))
    }

    #[test]
    fn longest_context_path_wins_at_segment_boundaries() {
        let t = table(vec![api("a", &[("", "/a")], "http://b"), api("ab", &[("", "/a/b")], "http://b")]);
        assert_eq!(found(&t, "", "/a"), Some(("a".into(), "".into())));
        assert_eq!(found(&t, "", "/a/x"), Some(("a".into(), "/x".into())));
        assert_eq!(found(&t, "", "/a/b"), Some(("ab".into(), "".into())));
        assert_eq!(found(&t, "", "/a/b/c/d"), Some(("ab".into(), "/c/d".into())));
        assert_eq!(found(&t, "", "/a/bc"), Some(("a".into(), "/bc".into())));
        assert_eq!(found(&t, "", "/ab"), None);
        assert_eq!(found(&t, "", "/"), None);
        assert_eq!(found(&t, "", "*"), None);
        assert_eq!(found(&t, "", "/a/"), Some(("a".into(), "/".into())));
    }

    #[test]
    fn root_context_matches_everything_else() {
        let t = table(vec![api("root", &[("", "/")], "http://b"), api("a", &[("", "/a")], "http://b")]);
        assert_eq!(found(&t, "", "/x/y"), Some(("root".into(), "/x/y".into())));
        assert_eq!(found(&t, "", "/"), Some(("root".into(), "/".into())));
        assert_eq!(found(&t, "", "/a/y"), Some(("a".into(), "/y".into())));
    }

    #[test]
    fn host_entries_beat_hostless_at_equal_path_only() {
        let t = table(vec![
            api("any", &[("", "/p"), ("", "/p/long")], "http://b"),
            api("vhost", &[("Api.Example.com", "/p")], "http://b"),
        ]);
        assert_eq!(found(&t, "api.example.com", "/p/x").unwrap().0, "vhost");
        assert_eq!(found(&t, "other.example.com", "/p/x").unwrap().0, "any");
        assert_eq!(found(&t, "", "/p").unwrap().0, "any");
        // A longer host-less path still wins over a shorter host-specific one.
        assert_eq!(found(&t, "api.example.com", "/p/long/x").unwrap().0, "any");
    }

    #[test]
    fn duplicate_context_path_keeps_smallest_id() {
        let t = table(vec![api("b", &[("", "/same")], "http://b"), api("a", &[("", "/same")], "http://b")]);
        assert_eq!(found(&t, "", "/same").unwrap().0, "a");
    }

    #[test]
    fn lookup_scales_to_ten_thousand_apis() {
        let t =
            table((0..10_000).map(|i| api(&format!("api-{i}"), &[("", &format!("/svc{i}/v1"))], "http://b")).collect());
        assert_eq!(found(&t, "", "/svc9999/v1/items/1").unwrap().0, "api-9999");
        assert_eq!(found(&t, "", "/svc9999/v2"), None);
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normalise_host("Example.COM:8082"), "example.com");
        assert_eq!(normalise_host("example.com"), "example.com");
        assert_eq!(normalise_host("[::1]:80"), "[::1]");
        assert_eq!(normalise_host(""), "");
    }

    #[test]
    fn upstream_urls() {
        let t = Target::parse("http://backend/base/").unwrap();
        assert_eq!(t.url_for("/a/b", Some("x=1")), "http://backend/base/a/b?x=1");
        assert_eq!(t.url_for("", None), "http://backend/base");
        assert_eq!(t.url_for("", Some("")), "http://backend/base");
        // As Gravitee: the request's parameters, then the target's, grouped by name.
        let q = Target::parse("http://backend:8080?k=v").unwrap();
        assert_eq!(q.url_for("/a", Some("x=1")), "http://backend:8080/a?x=1&k=v");
        let q = Target::parse("http://b/base?t=2&a=1").unwrap();
        assert_eq!(q.url_for("/x", None), "http://b/base/x?t=2&a=1");
        assert_eq!(
            q.url_for("/x", Some("a=0&b=%20sp+x&a=3&flag&e=")),
            "http://b/base/x?a=0&a=3&a=1&b=%20sp+x&flag&e=&t=2"
        );
        // A v2 API's endpoint appends the path to the whole target, then the request's parameters.
        let v2 = Target::parse("http://b/base?t=2&a=1").unwrap().for_v2();
        assert_eq!(v2.url_for("/x", None), "http://b/base?t=2&a=1/x");
        assert_eq!(
            v2.url_for("/x", Some("a=0&b=%20sp+x&a=3&flag&e=")),
            "http://b/base?t=2&a=1/x&a=0&a=3&b=%20sp+x&flag&e="
        );
        let plain = Target::parse("http://b/base").unwrap().for_v2();
        assert_eq!(plain.url_for("/x", Some("b=1&a=2&b=3")), "http://b/base/x?b=1&b=3&a=2");
        // Many parameters take the map path; the order rule is the same.
        let many: Vec<String> = (0..40).map(|i| format!("p{}={i}", i % 20)).collect();
        let url = Target::parse("http://b").unwrap().url_for("/", Some(&many.join("&")));
        assert!(url.starts_with("http://b/?p0=0&p0=20&p1=1&p1=21&"), "{url}");
        assert_eq!(Target::parse("http://backend:8080?k=v").unwrap().display(), "http://backend:8080?k=v");
    }

    #[test]
    fn conversion_rejects_what_it_cannot_serve() {
        let reason = |a: pb::Api| Api::try_from(a).unwrap_err().to_string();
        let ftp = api("x", &[("", "/x")], "ftp://b");
        assert!(reason(ftp).contains("is not an absolute http:// or https:// URL"));
        let relative = api("x", &[("", "/x")], "/path");
        assert!(reason(relative).contains("endpoint_groups[0].endpoints[0].target"));
        let bad_path = api("x", &[("", "x")], "http://b");
        assert!(reason(bad_path).contains("context_paths[0].path"));

        let mut lb = api("x", &[("", "/x")], "http://b");
        lb.endpoint_groups[0].load_balancer = 42;
        assert!(reason(lb).contains("load balancer 42 not supported by this dataplane"));

        let mut jwt = api("x", &[("", "/x")], "http://b");
        jwt.plans[0].security = pb::SecurityType::Jwt as i32;
        assert!(reason(jwt).contains("plans[0].jwt: algorithm \"\" is not supported"));
        let mut unspecified = api("x", &[("", "/x")], "http://b");
        unspecified.plans[0].security = pb::SecurityType::Unspecified as i32;
        assert!(reason(unspecified).contains("security type SECURITY_TYPE_UNSPECIFIED is not supported"));

        let mut no_group = api("x", &[("", "/x")], "http://b");
        no_group.endpoint_groups.clear();
        assert!(reason(no_group).contains("no endpoint group"));

        let mut no_plan = api("x", &[("", "/x")], "http://b");
        no_plan.plans.clear();
        assert!(reason(no_plan).contains("no plan"));

        let mut unknown_mode = api("x", &[("", "/x")], "http://b");
        unknown_mode.flow_mode = 42;
        assert!(reason(unknown_mode).contains("flow mode 42"));
        let mut best = api("x", &[("", "/x")], "http://b");
        best.flow_mode = pb::FlowMode::BestMatch as i32;
        assert!(Api::try_from(best).unwrap().best_match);
    }

    #[test]
    fn round_robin_over_primaries() {
        let mut a = api("x", &[("", "/x")], "http://one");
        let mut second = a.endpoint_groups[0].endpoints[0].clone();
        second.target = "http://two".into();
        let mut backup = second.clone();
        backup.target = "http://backup".into();
        backup.secondary = true;
        a.endpoint_groups[0].endpoints.extend([second, backup]);
        let a = Api::try_from(a).unwrap();
        let now = tokio::time::Instant::now();
        let picks: Vec<String> =
            (0..4).map(|_| a.endpoints.select(&Default::default(), now).unwrap().endpoint.target.display()).collect();
        assert_eq!(picks, ["http://one", "http://two", "http://one", "http://two"]);
    }
}
