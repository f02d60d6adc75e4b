//! The agent's gRPC surface for dataplanes and operators: `hgw.v1.ConfigDiscovery`, `hgw.v1.Analytics`,
//! `hgw.v1.RateLimit`, `hgw.v1.OAuth2`, `hgw.v1.Cache`, `hgw.v1.Admin`, `grpc.health.v1.Health`, and
//! server reflection (v1 and v1alpha) so `grpcurl list`, `describe` and calls work without the proto
//! files. Served on TCP and/or a Unix socket.

mod admin;
mod analytics;
pub mod authz;
mod cache;
mod discovery;
mod identity;
pub mod listen;
mod oauth2;
mod ratelimit;
pub mod registry;

use std::sync::Arc;
use std::time::Duration;

use hgw_proto::v1::admin_server::AdminServer;
use hgw_proto::v1::analytics_server::AnalyticsServer;
use hgw_proto::v1::cache_server::CacheServer;
use hgw_proto::v1::config_discovery_server::ConfigDiscoveryServer;
use hgw_proto::v1::identity_server::IdentityServer;
use hgw_proto::v1::o_auth2_server::OAuth2Server;
use hgw_proto::v1::rate_limit_server::RateLimitServer;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::metrics::Metrics;
use crate::ratelimit::CounterStore;
use crate::reports::spool::SpoolHandle;
use crate::store::ConfigStore;
use crate::sync::SyncStatus;
use registry::DataplaneRegistry;

/// Config updates for thousands of APIs exceed tonic's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Detects dead dataplane connections (a killed pod) well before TCP would.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The services every gRPC listener offers.
pub const SERVICE_NAMES: &[&str] = &[
    "hgw.v1.ConfigDiscovery",
    "hgw.v1.Analytics",
    "hgw.v1.RateLimit",
    "hgw.v1.OAuth2",
    "hgw.v1.Cache",
    "hgw.v1.Admin",
    "hgw.v1.Identity",
];

/// What `hgw.v1.Identity` needs: the CA, the join-token check and the certificate lifetime.
pub struct IdentityState {
    pub ca: Arc<crate::identity::pki::CertificateAuthority>,
    pub authenticator: Arc<dyn crate::identity::join::JoinAuthenticator>,
    pub trust_domain: String,
    pub dataplane_cert_ttl: Duration,
}

/// The router type every listener serves: all services behind the authorization layer.
pub type GrpcRouter = Router<tower::layer::util::Stack<authz::AuthzLayer, tower::layer::util::Identity>>;

pub struct GrpcState {
    pub store: Arc<ConfigStore>,
    pub registry: Arc<DataplaneRegistry>,
    pub reports: SpoolHandle,
    pub metrics: Arc<Metrics>,
    pub status: Arc<SyncStatus>,
    pub counters: Arc<CounterStore>,
    /// Token introspection for `oauth2` plans (its cache is shared by every listener).
    pub oauth2: Arc<crate::oauth2::Introspector>,
    /// The `cache-redis` resources' Redis pools (shared by every listener).
    pub caches: Arc<crate::cache::RedisCaches>,
    pub mode: &'static str,
    pub node_id: String,
    pub cancel: CancellationToken,
    /// Shared rate-limit counters and snapshot store; `None`: state in memory.
    pub redis: Option<crate::redis::Redis>,
    /// `None` without a TCP listener: socket peers need no certificates.
    pub identity: Option<IdentityState>,
    /// OpenTelemetry export (`push` spans); `None`: no traces.
    pub tracing: Option<hgw_otel::Tracing>,
}

/// Builds one router (each listener gets its own; the state behind them is shared).
pub fn router(
    state: &GrpcState,
    health: &tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) -> Result<GrpcRouter, tonic_reflection::server::Error> {
    let discovery = discovery::DiscoveryService {
        snapshots: state.store.subscribe(),
        registry: state.registry.clone(),
        cancel: state.cancel.clone(),
        tracing: state.tracing.clone(),
    };
    let analytics = analytics::AnalyticsService {
        spool: state.reports.clone(),
        metrics: state.metrics.clone(),
        node_id: state.node_id.clone(),
        cancel: state.cancel.clone(),
    };
    let ratelimit =
        ratelimit::RateLimitService::new(state.counters.clone(), state.metrics.clone(), state.store.clone());
    let admin = admin::AdminService {
        store: state.store.clone(),
        registry: state.registry.clone(),
        status: state.status.clone(),
        mode: state.mode,
    };
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(hgw_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let identity = state.identity.as_ref().map(|id| {
        IdentityServer::new(identity::IdentityService {
            ca: id.ca.clone(),
            authenticator: id.authenticator.clone(),
            trust_domain: id.trust_domain.clone(),
            lifetime: id.dataplane_cert_ttl,
        })
    });
    Ok(tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(authz::AuthzLayer::new())
        .add_optional_service(identity)
        .add_service(
            ConfigDiscoveryServer::new(discovery)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(AnalyticsServer::new(analytics).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(RateLimitServer::new(ratelimit))
        .add_service(OAuth2Server::new(oauth2::OAuth2Service {
            store: state.store.clone(),
            introspector: state.oauth2.clone(),
        }))
        .add_service(CacheServer::new(cache::CacheService { store: state.store.clone(), caches: state.caches.clone() }))
        .add_service(AdminServer::new(admin).max_encoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(health.clone())
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?))
}

/// Marks every service (and the server as a whole, "") as serving or not.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(*name, status).await;
    }
}
