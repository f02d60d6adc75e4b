//! HTTP plumbing: binding the [`listen`]ers, the [`upstream`] clients and their [`tls`], the streaming
//! request and response [`body`] wrappers, and [`query`] strings.

pub mod body;
pub mod listen;
pub mod query;
pub mod tls;
pub mod upstream;
