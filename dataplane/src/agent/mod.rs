//! The link to the agent: the channel itself ([`link`]), the config stream that brings the compiled
//! APIs ([`config_stream`]), the analytics stream that ships records ([`analytics_stream`]), the
//! rate-limit counters client ([`counters_client`]), OAuth2 introspection ([`introspect_client`]), the
//! `cache-redis` entries ([`cache_client`]), joining with a token ([`join`]), and the
//! jittered [`backoff`] they all reconnect with.

pub mod analytics_stream;
pub mod backoff;
pub mod cache_client;
pub mod config_stream;
pub mod counters_client;
pub mod introspect_client;
pub mod join;
pub mod link;
