//! hgw test support and the Cloud Gate emulator.
//!
//! End-to-end tests (in `tests/tests/`) start the real binaries as child processes ([`Proc`]), a
//! Cloud Gate stand-in ([`CloudGateSim`], the `hgw-cloudgate-sim` binary built from [`cloudgate`])
//! and in-process HTTP backends ([`Backend`]), everything on `127.0.0.1:0`, and build Gravitee API
//! definitions with [`v4_api`] and [`v2_api`]. Real `redis-server`s (standalone, TLS, Cluster, Sentinel)
//! come from [`redis`].

pub mod backend;
pub mod certs;
pub mod cloudgate;
pub mod definitions;
pub mod gateway;
pub mod jaeger;
pub mod process;
pub mod proxies;
pub mod redis;
pub mod sim;

pub use backend::Backend;
pub use certs::{CertifiedKey, TestCa};
pub use definitions::{flow, step, v2_api, v2_flow, v4_api};
pub use process::{Proc, bin_path, child_pids, eventually, free_port, pid_alive, read_addr_file, run_to_exit};
pub use redis::{RedisCluster, RedisOptions, RedisSentinel, RedisServer};
pub use sim::{CloudGateSim, client_trusting};
