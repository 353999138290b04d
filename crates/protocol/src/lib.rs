//! liveclass-protocol: the wire protocol of the liveclass socket server, defined once for every
//! Rust side — the server, the load generator, the test kit and any Rust client.
//!
//! `crates/socket/PROTOCOL.md` documents it for everyone else; `clients/js` implements it for
//! browsers. What is here is pure: types, parsing and building, no I/O.
//!
//! - [`client`]: frames a client sends, and why one is refused;
//! - [`server`]: frames the server sends;
//! - [`handshake`]: the `GET /ws` query and the HTTP refusals before the upgrade;
//! - [`close`]: WebSocket close codes;
//! - [`claims`]: the token's claims and the id alphabets;
//! - [`id`]: message ids and stream positions;
//! - [`bus`]: the Redis keys and class-channel messages the servers and the operator share.

pub mod bus;
pub mod claims;
pub mod client;
pub mod close;
pub mod handshake;
pub mod id;
pub mod server;

pub use claims::{Claims, Role, valid_class_id, valid_user_id};
pub use client::{ClientFrame, FrameError};
pub use close::CloseReason;
pub use handshake::{HandshakeParams, Refusal};
pub use id::MessageId;
pub use server::ServerFrame;

/// The protocol version announced in `hello`. Version 2 added the stream position and epoch to
/// `hello`, the `gap` frame, aggregated `reactions` (replacing per-user `react` frames) and the
/// `ref` of a refused comment in its `error` frame.
pub const VERSION: u32 = 2;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
