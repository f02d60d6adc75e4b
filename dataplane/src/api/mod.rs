//! The compiled model of the deployed APIs, converted once from `hgw.v1.Api` when the agent sends
//! them: the [`routes`] table, [`endpoints`] and the upstream [`clients`] they use, [`flows`], plans
//! and their [`security`], [`health`] checks, response [`templates`] and [`cors`]; [`conversion`]
//! says why an API cannot be served.

pub mod clients;
pub mod conversion;
pub mod cors;
pub mod endpoints;
pub mod flows;
pub mod health;
pub mod routes;
pub mod security;
pub mod templates;
