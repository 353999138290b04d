//! Frames the server sends. One enum both serialises (the server) and parses (clients, tests,
//! the load generator), so the two cannot drift.
//!
//! Comments are the exception on the server's hot path: the store gives a comment its id inside
//! Redis and publishes `COMMENT_PREFIX + id + "\"," + tail` without re-serialising it, so
//! [`comment_frame_tail`] and [`comment_id`] build and read that exact shape, and a test pins it
//! to [`ServerFrame::Comment`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::MessageId;

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    /// Always the first frame of a connection.
    Hello(Hello<'a>),
    Comment(Comment<'a>),
    /// Reactions of the whole class in the last `ms` milliseconds, counted per emoji.
    Reactions {
        counts: BTreeMap<Cow<'a, str>, u64>,
        ms: u64,
    },
    Dm(Dm<'a>),
    /// Users connected to the class across all servers.
    Presence {
        count: u64,
    },
    /// The client's frame was refused; the connection stays open.
    Error {
        code: Cow<'a, str>,
        message: Cow<'a, str>,
        /// The `ref` of the refused comment, when it had one.
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Cow<'a, str>>,
    },
    /// Messages were lost between what this client received and what follows: its view of the
    /// class has a hole. `epoch` and `last_id` are the position live messages continue from.
    Gap {
        reason: GapReason,
        epoch: Cow<'a, str>,
        last_id: MessageId,
    },
    /// The server is draining: reconnect (with `since`) after this delay.
    Reconnect {
        after_ms: u64,
    },
    Pong,
}

/// The first frame: who the server thinks the client is, and where the class's stream stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello<'a> {
    pub v: u32,
    pub server: Cow<'a, str>,
    pub class: Cow<'a, str>,
    pub user: Cow<'a, str>,
    pub role: Cow<'a, str>,
    /// True when no `since` was given, or every message after it follows before any live one.
    pub recovered: bool,
    /// Changes when Redis lost the class's history; a `since` from another epoch is not
    /// recoverable.
    pub epoch: Cow<'a, str>,
    /// The newest message id of the class when the connection started (`0-0` if none): a client
    /// that receives nothing can still resume from here.
    pub last_id: MessageId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment<'a> {
    pub id: MessageId,
    pub from: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Cow<'a, str>>,
    pub text: Cow<'a, str>,
    /// The server's time when it accepted the comment, Unix milliseconds.
    pub ts: u64,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dm<'a> {
    pub from: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Cow<'a, str>>,
    pub text: Cow<'a, str>,
    pub ts: u64,
}

/// Why a client's view has a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// Redis lost the class's history (it restarted empty: a new epoch began), or comments that
    /// were delivered (a failover to a replica that had not received them yet).
    HistoryLost,
    /// More was said while this server was cut off from Redis than it can replay: the history
    /// trimmed it, or it is more than one catch-up replays (`--max-recovery`).
    Trimmed,
}

impl ServerFrame<'_> {
    /// The JSON text of this frame.
    pub fn to_text(&self) -> String {
        // Serialising these plain structs to a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a frame the server sent.
    pub fn parse(text: &str) -> Result<ServerFrame<'static>, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The frame's `t`.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Hello(_) => "hello",
            ServerFrame::Comment(_) => "comment",
            ServerFrame::Reactions { .. } => "reactions",
            ServerFrame::Dm(_) => "dm",
            ServerFrame::Presence { .. } => "presence",
            ServerFrame::Error { .. } => "error",
            ServerFrame::Gap { .. } => "gap",
            ServerFrame::Reconnect { .. } => "reconnect",
            ServerFrame::Pong => "pong",
        }
    }
}

/// The `from` of comments the school's backend posts through the server API (announcements):
/// no token can carry it, since user ids never contain `#`.
pub const SCHOOL_SENDER: &str = "#school";

/// What the store puts in front of a comment's id.
pub const COMMENT_PREFIX: &str = r#"{"t":"comment","id":""#;

#[derive(Serialize)]
struct CommentTail<'a> {
    from: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    text: &'a str,
    ts: u64,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
}

/// A comment frame without its opening `{"t":"comment","id":"…",`: the store adds that once
/// the message has its id, so the frame is serialised exactly once.
pub fn comment_frame_tail(
    from: &str,
    name: Option<&str>,
    text: &str,
    ts: u64,
    reference: Option<&str>,
) -> String {
    let json = serde_json::to_string(&CommentTail {
        from,
        name,
        text,
        ts,
        reference,
    })
    .unwrap_or_default();
    json.strip_prefix('{').map(str::to_owned).unwrap_or(json)
}

/// The whole comment frame from its id and tail, as the store's script builds it.
pub fn comment_frame(id: MessageId, tail: &str) -> String {
    format!("{COMMENT_PREFIX}{id}\",{tail}")
}

/// The id of a comment frame built by [`comment_frame`]. Read without a JSON parser because it
/// runs once per message on the fan-out path.
pub fn comment_id(frame: &str) -> Option<MessageId> {
    let rest = frame.strip_prefix(COMMENT_PREFIX)?;
    let end = rest.find('"')?;
    rest.get(..end)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_user_can_be_the_school() {
        assert!(!crate::claims::valid_user_id(SCHOOL_SENDER));
    }

    #[test]
    fn the_fast_comment_frame_is_a_comment() {
        let tail = comment_frame_tail("u1", Some("Ada"), "hello \"world\"", 1700, Some("r1"));
        let id = MessageId {
            ms: 1_700_000_000_000,
            seq: 3,
        };
        let frame = comment_frame(id, &tail);
        assert_eq!(comment_id(&frame), Some(id));
        assert_eq!(
            ServerFrame::parse(&frame).unwrap(),
            ServerFrame::Comment(Comment {
                id,
                from: "u1".into(),
                name: Some("Ada".into()),
                text: "hello \"world\"".into(),
                ts: 1700,
                reference: Some("r1".into()),
            })
        );
    }

    #[test]
    fn frames_round_trip() {
        let frames = [
            ServerFrame::Hello(Hello {
                v: crate::VERSION,
                server: "pod-a".into(),
                class: "school/c".into(),
                user: "u1".into(),
                role: "student".into(),
                recovered: true,
                epoch: "e1".into(),
                last_id: MessageId::ZERO,
            }),
            ServerFrame::Reactions {
                counts: [("👍".into(), 3)].into_iter().collect(),
                ms: 250,
            },
            ServerFrame::Gap {
                reason: GapReason::HistoryLost,
                epoch: "e2".into(),
                last_id: MessageId { ms: 5, seq: 0 },
            },
            ServerFrame::Error {
                code: "rate_limited".into(),
                message: "slow down".into(),
                reference: Some("c-1".into()),
            },
            ServerFrame::Presence { count: 7 },
            ServerFrame::Pong,
        ];
        for frame in frames {
            let text = frame.to_text();
            assert_eq!(ServerFrame::parse(&text).unwrap(), frame, "{text}");
        }
        assert_eq!(
            ServerFrame::Gap {
                reason: GapReason::Trimmed,
                epoch: "e".into(),
                last_id: MessageId { ms: 1, seq: 2 }
            }
            .to_text(),
            r#"{"t":"gap","reason":"trimmed","epoch":"e","last_id":"1-2"}"#
        );
    }
}
