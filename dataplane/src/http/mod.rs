//! HTTP plumbing: binding the [`listen`]ers, their [`limits`] and client TLS ([`tls_server`]), the
//! [`upstream`] clients, their [`tls`] and the endpoints' forward [`proxy`], the streaming request and response [`body`] wrappers
//! (endpoint answers [`decompress`]ed as Gravitee does), the request [`path`] in its one normal form,
//! the client behind proxies ([`forwarded`]), HTTP/2 connections' [`idle`]ness, [`query`] strings, and the byte [`tunnel`] of upgraded
//! (WebSocket) connections.

pub mod body;
pub mod crlf;
pub mod decompress;
pub mod forwarded;
pub mod idle;
pub mod limits;
pub mod listen;
pub mod path;
pub mod pool;
pub mod proxy;
pub mod query;
pub mod tls;
pub mod tls_server;
pub mod tls_session;
pub mod tunnel;
pub mod upstream;
