//! HTTP plumbing: binding the [`listen`]ers, the [`upstream`] clients and their [`tls`], the streaming
//! request and response [`body`] wrappers, the request [`path`] in its one normal form, [`query`]
//! strings, and the byte [`tunnel`] of upgraded (WebSocket) connections.

pub mod body;
pub mod listen;
pub mod path;
pub mod query;
pub mod tls;
pub mod tunnel;
pub mod upstream;
