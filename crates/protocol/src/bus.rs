//! What the socket servers and the operator say to each other through a class's Redis: the
//! keys both read and the messages on a class's channel. Defined once, so what the operator
//! reads and publishes cannot drift from what the servers write and understand.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The hash of users connected to a class (field = user id): its length is the attendance.
/// `class` is the class id, `<namespace>/<name>`.
pub fn where_key(class: &str) -> String {
    format!("lc:{{{class}}}:where")
}

/// The hash of open connections per pod of a class (field = pod name, value = count).
pub fn pods_key(class: &str) -> String {
    format!("lc:{{{class}}}:pods")
}

/// A class's channel: its comments (as their frames) and the [`ClassMessage`]s.
pub fn broadcast_channel(class: &str) -> String {
    format!("lc:{{{class}}}:bcast")
}

/// The class of a broadcast channel name.
pub fn class_of_broadcast(channel: &str) -> Option<&str> {
    channel.strip_prefix("lc:{")?.strip_suffix("}:bcast")
}

/// A message on a class's channel other than a comment. Every server with members of the
/// class receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "lowercase")]
pub enum ClassMessage {
    /// One server's reaction counts for one tick.
    Reactions { counts: BTreeMap<String, u64> },
}

/// The channel on which the operator announces a [`Handover`]: one per Redis, not per class
/// (a gateway pod carries students of every class), and every server subscribes to it. The
/// class's Redis lets anyone who reaches it (its NetworkPolicy: the class's pods and the
/// operator) publish here without the class's password, and nowhere else: the worst a forged
/// message does is make students reconnect, who come back with `since`.
pub const HANDOVER_CHANNEL: &str = "lc:handover";

/// A gateway pod is going away: each connection whose TCP peer is `gateway` is told to
/// reconnect at its own moment within `within_ms`, so its students move to the other gateway
/// pods as a trickle before that pod's sockets are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub gateway: IpAddr,
    pub within_ms: u64,
}

impl Handover {
    /// The message as published.
    pub fn to_text(&self) -> String {
        // An address and a number always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handover_reads_back_as_published() {
        let message = Handover {
            gateway: "10.244.1.7".parse().unwrap(),
            within_ms: 20_000,
        };
        let text = message.to_text();
        assert_eq!(text, r#"{"gateway":"10.244.1.7","within_ms":20000}"#);
        assert_eq!(serde_json::from_str::<Handover>(&text).unwrap(), message);
    }

    #[test]
    fn channel_names_name_their_class() {
        let channel = broadcast_channel("school/physics-101");
        assert_eq!(channel, "lc:{school/physics-101}:bcast");
        assert_eq!(class_of_broadcast(&channel), Some("school/physics-101"));
        assert_eq!(class_of_broadcast("lc:pod:{a}"), None);
    }
}
