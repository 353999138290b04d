//! The wire protocol (see `PROTOCOL.md`): frames the client sends, frames the server sends,
//! message ids and close codes. Pure: parsing and building only.

use std::fmt;
use std::str::FromStr;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

/// The protocol version announced in `hello`.
pub const VERSION: u32 = 1;

pub const MAX_TEXT_CHARS: usize = 2000;
pub const MAX_REF_CHARS: usize = 64;
pub const MAX_EMOJI_CHARS: usize = 16;

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum ClientFrame {
    Comment {
        text: String,
        #[serde(default, rename = "ref")]
        reference: Option<String>,
    },
    React {
        emoji: String,
    },
    Dm {
        to: String,
        text: String,
    },
    Ping,
}

/// Why a client frame was refused; `code()` is the `code` of the `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the frame is not JSON, or a field is missing or of the wrong type")]
    Malformed,
    #[error("unknown frame type `{0}`; expected comment, react, dm or ping")]
    UnknownType(String),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("only teachers may send direct messages")]
    Forbidden,
    #[error("too many frames: slow down (the frame was dropped)")]
    RateLimited,
    #[error("that user is not connected to this class")]
    RecipientOffline,
    #[error("the server cannot reach its message store right now; send again shortly")]
    Unavailable,
    #[error("binary frames are not understood; send JSON text")]
    BinaryUnsupported,
}

impl FrameError {
    pub fn code(&self) -> &'static str {
        match self {
            FrameError::Malformed => "malformed",
            FrameError::UnknownType(_) => "unknown_type",
            FrameError::Invalid(_) => "invalid",
            FrameError::Forbidden => "forbidden",
            FrameError::RateLimited => "rate_limited",
            FrameError::RecipientOffline => "recipient_offline",
            FrameError::Unavailable => "unavailable",
            FrameError::BinaryUnsupported => "binary_unsupported",
        }
    }
}

impl ClientFrame {
    /// Parses and checks a text frame's limits.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let frame: ClientFrame =
            serde_json::from_str(text).map_err(|_| classify_parse_error(text))?;
        frame.check()?;
        Ok(frame)
    }

    fn check(&self) -> Result<(), FrameError> {
        let chars = |s: &str| s.chars().count();
        match self {
            ClientFrame::Comment { text, reference } => {
                if text.trim().is_empty() || chars(text) > MAX_TEXT_CHARS {
                    return Err(FrameError::Invalid(
                        "comment text must be 1-2000 characters",
                    ));
                }
                if reference.as_ref().is_some_and(|r| chars(r) > MAX_REF_CHARS) {
                    return Err(FrameError::Invalid("ref must be at most 64 characters"));
                }
            }
            ClientFrame::React { emoji } => {
                if emoji.is_empty() || chars(emoji) > MAX_EMOJI_CHARS {
                    return Err(FrameError::Invalid("emoji must be 1-16 characters"));
                }
            }
            ClientFrame::Dm { to, text } => {
                if !crate::auth::valid_id(to) {
                    return Err(FrameError::Invalid("`to` must be a user id"));
                }
                if text.trim().is_empty() || chars(text) > MAX_TEXT_CHARS {
                    return Err(FrameError::Invalid("dm text must be 1-2000 characters"));
                }
            }
            ClientFrame::Ping => {}
        }
        Ok(())
    }

    /// The frame's type, as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Comment { .. } => "comment",
            ClientFrame::React { .. } => "react",
            ClientFrame::Dm { .. } => "dm",
            ClientFrame::Ping => "ping",
        }
    }
}

/// Tells "valid JSON with an unknown `t`" apart from everything else that failed to parse.
fn classify_parse_error(text: &str) -> FrameError {
    #[derive(Deserialize)]
    struct Tagged {
        t: String,
    }
    match serde_json::from_str::<Tagged>(text) {
        Ok(tagged) if !["comment", "react", "dm", "ping"].contains(&tagged.t.as_str()) => {
            let mut t = tagged.t;
            t.truncate(32);
            FrameError::UnknownType(t)
        }
        _ => FrameError::Malformed,
    }
}

/// A comment's id: a Redis stream id `<ms>-<seq>`, increasing within a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    pub ms: u64,
    pub seq: u64,
}

impl FromStr for MessageId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        Ok(MessageId {
            ms: ms.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The id of a comment frame built by [`comment_frame_tail`] and the store: the frame starts
/// with `{"t":"comment","id":"<id>",`. Parsed without a JSON parser because it runs once per
/// message on the fan-out path.
pub fn comment_id(frame: &str) -> Option<MessageId> {
    let rest = frame.strip_prefix(COMMENT_PREFIX)?;
    let end = rest.find('"')?;
    rest[..end].parse().ok()
}

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

/// A comment frame without its opening `{`: the store adds `{"t":"comment","id":"…",` in
/// front once it has given the message its id, so the frame is serialised exactly once.
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

/// A frame from the server other than a comment.
#[derive(Debug, Serialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    Hello {
        v: u32,
        server: &'a str,
        class: &'a str,
        user: &'a str,
        role: &'a str,
        recovered: bool,
    },
    React {
        from: &'a str,
        emoji: &'a str,
        ts: u64,
    },
    Dm {
        from: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        text: &'a str,
        ts: u64,
    },
    Presence {
        count: u64,
    },
    Error {
        code: &'a str,
        message: String,
    },
    Reconnect {
        after_ms: u64,
    },
    Pong,
}

impl ServerFrame<'_> {
    pub fn to_text(&self) -> Utf8Bytes {
        Utf8Bytes::from(serde_json::to_string(self).unwrap_or_default())
    }
}

/// The error frame for a refused client frame.
pub fn error_frame(error: &FrameError) -> Utf8Bytes {
    ServerFrame::Error {
        code: error.code(),
        message: error.to_string(),
    }
    .to_text()
}

/// Why the server closed a connection: the WebSocket close code and its reason text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Draining,
    Flood,
    FrameTooLarge,
    Internal,
    Idle,
    SlowConsumer,
    Replaced,
    TokenExpired,
    Unavailable,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Draining => 1001,
            CloseReason::Flood => 1008,
            CloseReason::FrameTooLarge => 1009,
            CloseReason::Internal => 1011,
            CloseReason::Idle => 4000,
            CloseReason::SlowConsumer => 4001,
            CloseReason::Replaced => 4002,
            CloseReason::TokenExpired => 4003,
            CloseReason::Unavailable => 1013,
        }
    }

    /// The reason text, also the `reason` label of the closes metric.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Draining => "draining",
            CloseReason::Flood => "flood",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::Internal => "internal",
            CloseReason::Idle => "idle",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Replaced => "replaced",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::Unavailable => "try_again_later",
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_frames() {
        assert_eq!(
            ClientFrame::parse(r#"{"t":"comment","text":"hi","ref":"c1"}"#),
            Ok(ClientFrame::Comment {
                text: "hi".into(),
                reference: Some("c1".into())
            })
        );
        assert_eq!(ClientFrame::parse(r#"{"t":"ping"}"#), Ok(ClientFrame::Ping));
        assert_eq!(ClientFrame::parse("{nope"), Err(FrameError::Malformed));
        assert_eq!(
            ClientFrame::parse(r#"{"t":"comment"}"#),
            Err(FrameError::Malformed)
        );
        assert_eq!(
            ClientFrame::parse(r#"{"t":"shout","text":"x"}"#),
            Err(FrameError::UnknownType("shout".into()))
        );
        assert!(matches!(
            ClientFrame::parse(r#"{"t":"comment","text":"  "}"#),
            Err(FrameError::Invalid(_))
        ));
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        assert!(matches!(
            ClientFrame::parse(&format!(r#"{{"t":"comment","text":"{long}"}}"#)),
            Err(FrameError::Invalid(_))
        ));
    }

    #[test]
    fn comment_frames_round_trip_their_id() {
        let tail = comment_frame_tail("u1", Some("Ada"), "hello \"world\"", 1700, Some("r1"));
        let frame = format!("{COMMENT_PREFIX}1700000000000-3\",{tail}");
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["t"], "comment");
        assert_eq!(value["id"], "1700000000000-3");
        assert_eq!(value["text"], "hello \"world\"");
        assert_eq!(value["ref"], "r1");
        assert_eq!(
            comment_id(&frame),
            Some(MessageId {
                ms: 1_700_000_000_000,
                seq: 3
            })
        );
    }

    #[test]
    fn message_ids_order_numerically() {
        let a: MessageId = "999-9".parse().unwrap();
        let b: MessageId = "1000-0".parse().unwrap();
        assert!(a < b);
        assert!("12".parse::<MessageId>().is_err());
    }
}
