//! What the dataplane tells about itself and its requests: process [`metrics`], OpenTelemetry
//! [`trace`]s, request [`logging`], the per-request [`analytics`] records and their queue, and the
//! [`redact`]ion of secrets they must not carry.

pub mod analytics;
pub mod logging;
pub mod metrics;
pub mod redact;
pub mod request_metrics;
pub mod trace;
