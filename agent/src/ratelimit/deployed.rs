//! The counters dataplanes may use: one per rate-limit, quota or spike-arrest step of the deployment set
//! this agent compiled. A dataplane names a step (API, plan, step number) and what the request adds to
//! the key (subscription, custom key); the limit, the window and the Redis key come from here, never from
//! the caller, so `Acquire` can only ever touch `ratelimit:` keys of policies that are deployed now.

use std::collections::HashMap;
use std::fmt;

use hgw_proto::counters;
use hgw_proto::v1 as pb;

use super::Hit;
use crate::store::Snapshot;

/// Requests one hit may count: a dataplane counts one request per hit (strict mode).
pub const MAX_COUNT_PER_HIT: u64 = 1;

/// Why a hit was refused; the dataplane applies the policy's error strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownApi(String),
    UnknownPlan {
        api: String,
        plan: String,
    },
    UnknownStep {
        api: String,
        step: u32,
    },
    /// The step belongs to another plan's flows.
    WrongPlan {
        api: String,
        step: u32,
        plan: String,
    },
    Count(u64),
    Lease {
        lease: u64,
        allowed: u64,
    },
    /// The agent's in-memory counter table is full (`--rate-limit-max-keys`).
    TableFull,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownApi(api) => write!(f, "API `{api}` is not deployed"),
            Refusal::UnknownPlan { api, plan } => write!(f, "API `{api}` has no plan `{plan}`"),
            Refusal::UnknownStep { api, step } => {
                write!(f, "API `{api}` has no rate-limit, quota or spike-arrest step {step}")
            }
            Refusal::WrongPlan { api, step, plan } => {
                write!(f, "step {step} of API `{api}` does not run under plan `{plan}`")
            }
            Refusal::Count(count) => write!(f, "count {count} is more than {MAX_COUNT_PER_HIT} per hit"),
            Refusal::Lease { lease, allowed } => write!(f, "lease {lease} is more than the policy's {allowed}"),
            Refusal::TableFull => f.write_str("the agent's counter table is full (--rate-limit-max-keys)"),
        }
    }
}

impl Refusal {
    /// A fixed label per kind, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::UnknownApi(_) | Refusal::UnknownPlan { .. } | Refusal::UnknownStep { .. } => "unknown_counter",
            Refusal::WrongPlan { .. } => "unknown_counter",
            Refusal::Count(_) | Refusal::Lease { .. } => "beyond_policy",
            Refusal::TableFull => "table_full",
        }
    }
}

/// One counting step as compiled.
#[derive(Debug, Clone)]
struct Step {
    /// The plan whose flows hold the step; `None` for API flows (any plan of the API).
    plan: Option<String>,
    suffix: &'static str,
    /// Requests per window, and the window (for spike arrest: per slice).
    limit: u64,
    window_ms: u64,
    use_key_only: bool,
}

#[derive(Debug, Default)]
struct ApiSteps {
    plans: Vec<String>,
    steps: HashMap<u32, Step>,
}

/// The counting steps of one deployment set, by API and step number.
#[derive(Debug, Default)]
pub struct DeployedCounters {
    apis: HashMap<String, ApiSteps>,
}

impl DeployedCounters {
    pub fn new(snapshot: &Snapshot) -> DeployedCounters {
        let mut apis = HashMap::with_capacity(snapshot.apis.len());
        for (id, api) in &snapshot.apis {
            let mut entry = ApiSteps { plans: api.plans.iter().map(|p| p.id.clone()).collect(), ..Default::default() };
            let api_flows = api.flows.iter().map(|flow| (None, flow));
            let plan_flows =
                api.plans.iter().flat_map(|plan| plan.flows.iter().map(move |flow| (Some(&plan.id), flow)));
            for (plan, flow) in api_flows.chain(plan_flows) {
                for step in flow.request.iter().chain(&flow.response) {
                    let Some(pb::step::Policy::RateLimit(policy)) = &step.policy else { continue };
                    let Some(suffix) = counters::suffix(policy.kind) else { continue };
                    if policy.step == 0 || policy.period_ms == 0 {
                        continue;
                    }
                    let (limit, window_ms) = counters::window(policy);
                    entry.steps.insert(
                        policy.step,
                        Step { plan: plan.cloned(), suffix, limit, window_ms, use_key_only: policy.use_key_only },
                    );
                }
            }
            apis.insert(id.clone(), entry);
        }
        DeployedCounters { apis }
    }

    /// The counter a wire hit names, with its policy's limit and window, or why it is refused.
    pub fn resolve(&self, hit: &pb::CounterHit) -> Result<Hit, Refusal> {
        let pb::CounterHit { subscription, count, lease, api_id, plan_id, step, custom_key } = hit;
        let api = self.apis.get(api_id).ok_or_else(|| Refusal::UnknownApi(short(api_id)))?;
        if !api.plans.iter().any(|p| p == plan_id) {
            return Err(Refusal::UnknownPlan { api: short(api_id), plan: short(plan_id) });
        }
        let rule = api.steps.get(step).ok_or_else(|| Refusal::UnknownStep { api: short(api_id), step: *step })?;
        if rule.plan.as_ref().is_some_and(|owner| owner != plan_id) {
            return Err(Refusal::WrongPlan { api: short(api_id), step: *step, plan: short(plan_id) });
        }
        if *count > MAX_COUNT_PER_HIT {
            return Err(Refusal::Count(*count));
        }
        let allowed = counters::lease_size(rule.limit);
        if *lease > allowed {
            return Err(Refusal::Lease { lease: *lease, allowed });
        }
        Ok(Hit {
            key: counters::counter_key(rule.suffix, plan_id, subscription, custom_key, rule.use_key_only),
            limit: rule.limit,
            period_ms: rule.window_ms,
            subscription: counters::key_part(subscription).into_owned(),
            count: *count,
            lease: *lease,
        })
    }
}

/// A caller-sent name, cut for a refusal message (the name is the caller's, not a secret, but it may be
/// long).
fn short(name: &str) -> String {
    const MAX: usize = 128;
    if name.len() <= MAX {
        return name.escape_debug().to_string();
    }
    let mut end = MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", name[..end].escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn limit_step(step: u32, kind: pb::RateLimitKind, limit: u64, period_ms: u64, key: &str) -> pb::Step {
        pb::Step {
            policy: Some(pb::step::Policy::RateLimit(pb::RateLimitPolicy {
                kind: kind as i32,
                limit,
                period_ms,
                key: key.into(),
                step,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn snapshot() -> Snapshot {
        let api = pb::Api {
            id: "orders".into(),
            flows: vec![pb::Flow {
                request: vec![limit_step(1, pb::RateLimitKind::RateLimit, 100, 1000, "")],
                ..Default::default()
            }],
            plans: vec![
                pb::Plan {
                    id: "gold".into(),
                    flows: vec![pb::Flow {
                        request: vec![limit_step(
                            2,
                            pb::RateLimitKind::Quota,
                            10,
                            60_000,
                            "{#request.headers['k'][0]}",
                        )],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                pb::Plan { id: "free".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        Snapshot { apis: BTreeMap::from([("orders".to_owned(), Arc::new(api))]), ..Default::default() }
    }

    fn hit(api: &str, plan: &str, step: u32) -> pb::CounterHit {
        pb::CounterHit {
            api_id: api.into(),
            plan_id: plan.into(),
            step,
            subscription: "sub".into(),
            count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn limit_period_and_key_come_from_the_policy() {
        let deployed = DeployedCounters::new(&snapshot());
        let api_step = deployed.resolve(&hit("orders", "free", 1)).unwrap();
        assert_eq!((api_step.key.as_str(), api_step.limit, api_step.period_ms), ("ratelimit:freesub:rl", 100, 1000));
        let keyed =
            deployed.resolve(&pb::CounterHit { custom_key: "team".into(), ..hit("orders", "gold", 2) }).unwrap();
        assert_eq!((keyed.key.as_str(), keyed.limit, keyed.period_ms), ("ratelimit:goldsub:team:q", 10, 60_000));
    }

    #[test]
    fn anything_not_deployed_or_beyond_the_policy_is_refused() {
        let deployed = DeployedCounters::new(&snapshot());
        let refused = |h: pb::CounterHit| deployed.resolve(&h).unwrap_err();
        assert_eq!(refused(hit("payments", "free", 1)).label(), "unknown_counter");
        assert_eq!(refused(hit("orders", "platinum", 1)).label(), "unknown_counter");
        assert_eq!(refused(hit("orders", "free", 3)).label(), "unknown_counter");
        assert!(matches!(refused(hit("orders", "free", 2)), Refusal::WrongPlan { .. }), "a plan flow of another plan");
        assert_eq!(refused(pb::CounterHit { count: 1_000_000, ..hit("orders", "free", 1) }), Refusal::Count(1_000_000));
        assert_eq!(
            refused(pb::CounterHit { count: 0, lease: 3, ..hit("orders", "free", 1) }),
            Refusal::Lease { lease: 3, allowed: 2 }
        );
        assert!(deployed.resolve(&pb::CounterHit { count: 0, lease: 2, ..hit("orders", "free", 1) }).is_ok());
    }

    #[test]
    fn a_custom_key_cannot_leave_the_prefix() {
        let deployed = DeployedCounters::new(&snapshot());
        let forged = pb::CounterHit { custom_key: "x\r\nDEL app:user:42\r\n".into(), ..hit("orders", "gold", 2) };
        let key = deployed.resolve(&forged).unwrap().key;
        assert!(key.starts_with("ratelimit:goldsub:sha256-") && key.ends_with(":q"), "{key}");
        let long = pb::CounterHit { subscription: "s".repeat(100_000), ..hit("orders", "free", 1) };
        assert!(deployed.resolve(&long).unwrap().key.len() < 100);
    }
}
