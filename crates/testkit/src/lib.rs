//! Test-only helpers that start the real parts liveclass runs on — `redis-server`, the
//! `liveclass-socket` binary, Caddy, Toxiproxy, a local Kubernetes control plane — on loopback, and tear
//! them down on `Drop`, even when a test panics. Nothing here is a mock.

pub mod caddy;
pub mod client;
pub mod cluster;
pub mod http;
pub mod process;
pub mod redis;
pub mod socket;
pub mod tls;
pub mod token;
pub mod toxiproxy;
pub mod wait;

pub use client::{ConnectOptions, TestClient};
pub use cluster::LocalCluster;
pub use redis::{RedisSentinel, RedisServer};
pub use socket::{SocketServer, SocketServerBuilder};
pub use token::TokenMinter;
pub use toxiproxy::Toxiproxy;
