//! Why an API from the agent cannot be served: the error of its conversion into the compiled model
//! (the config stream answers it with a NACK).

use crate::api::cors::CorsError;
use crate::api::flows::FlowError;
use crate::api::security::SecurityError;
use crate::api::templates::TemplateError;
use crate::http::tls::TlsError;
use crate::telemetry::logging::LoggingError;

/// Why an `hgw.v1.Api` cannot be served; `field` is the path inside the message.
#[derive(Debug, thiserror::Error)]
#[error("api {api:?}: {field}: {reason}")]
pub struct ConversionError {
    pub api: String,
    pub field: String,
    pub reason: Invalid,
}

/// The precise reason a field was refused.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("must not be empty")]
    Empty,
    #[error("{0}")]
    HealthCheck(String),
    #[error("{0:?} must start with '/'")]
    ContextPath(String),
    #[error("{0:?} is not an absolute http:// or https:// URL with a host")]
    Target(String),
    #[error("no endpoint group")]
    NoEndpointGroup,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0} is not usable")]
    Proxy(String),
    #[error("gRPC mode {0} not supported by this dataplane")]
    Grpc(i32),
    #[error("load balancer {0} not supported by this dataplane")]
    LoadBalancer(String),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("flow mode {0} not supported by this dataplane")]
    FlowMode(String),
    #[error("invalid header {0:?}")]
    Header(String),
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error(transparent)]
    Cors(#[from] CorsError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Logging(#[from] LoggingError),
}
