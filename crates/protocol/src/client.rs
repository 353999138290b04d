//! Frames a client sends, their limits, and why the server refuses one (the `code` of the
//! `error` frame it answers with).

use serde::{Deserialize, Serialize};

use crate::claims::valid_user_id;

pub const MAX_TEXT_CHARS: usize = 2000;
pub const MAX_REF_CHARS: usize = 64;
pub const MAX_EMOJI_CHARS: usize = 16;
/// Longest unknown `t` echoed back in an error.
const MAX_ECHOED_TYPE_CHARS: usize = 32;

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum ClientFrame {
    Comment {
        text: String,
        /// The sender's own reference: echoed in the comment, and a resend with the same one
        /// within the dedupe window is stored once.
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
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

/// Why a client frame was refused; [`FrameError::code`] is the `code` of the `error` frame.
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
    #[error("the class is in slow mode: comments are limited for everyone; try again in a moment")]
    SlowMode,
    #[error("that user is not connected to this class")]
    RecipientOffline,
    #[error("the server cannot reach its message store right now; send again with the same ref")]
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
            FrameError::SlowMode => "slow_mode",
            FrameError::RecipientOffline => "recipient_offline",
            FrameError::Unavailable => "unavailable",
            FrameError::BinaryUnsupported => "binary_unsupported",
        }
    }
}

impl ClientFrame {
    /// Parses a text frame and checks its limits. Never panics, whatever the input.
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
                if reference
                    .as_ref()
                    .is_some_and(|r| r.is_empty() || chars(r) > MAX_REF_CHARS)
                {
                    return Err(FrameError::Invalid("ref must be 1-64 characters"));
                }
            }
            ClientFrame::React { emoji } => {
                if emoji.trim().is_empty() || chars(emoji) > MAX_EMOJI_CHARS {
                    return Err(FrameError::Invalid("emoji must be 1-16 characters"));
                }
            }
            ClientFrame::Dm { to, text } => {
                if !valid_user_id(to) {
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

    /// The JSON text of this frame.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
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
            FrameError::UnknownType(tagged.t.chars().take(MAX_ECHOED_TYPE_CHARS).collect())
        }
        _ => FrameError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn a_long_multibyte_type_is_echoed_cut_at_a_character() {
        let t = "é".repeat(40);
        let frame = format!(r#"{{"t":"{t}"}}"#);
        assert_eq!(
            ClientFrame::parse(&frame),
            Err(FrameError::UnknownType("é".repeat(32)))
        );
    }

    #[test]
    fn frames_round_trip() {
        for frame in [
            ClientFrame::Comment {
                text: "hi".into(),
                reference: None,
            },
            ClientFrame::React {
                emoji: "👍".into()
            },
            ClientFrame::Dm {
                to: "u1".into(),
                text: "hello".into(),
            },
            ClientFrame::Ping,
        ] {
            assert_eq!(ClientFrame::parse(&frame.to_text()), Ok(frame));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_on_arbitrary_text(text in any::<String>()) {
            let _ = ClientFrame::parse(&text);
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = ClientFrame::parse(&text);
        }

        #[test]
        fn never_panics_on_frame_shaped_input(
            t in "\\PC{0,64}",
            text in "\\PC{0,80}",
            reference in proptest::option::of("\\PC{0,80}"),
        ) {
            let value = serde_json::json!({"t": t, "text": text, "ref": reference, "emoji": text, "to": text});
            match ClientFrame::parse(&value.to_string()) {
                Ok(frame) => prop_assert!(["comment", "react", "dm", "ping"].contains(&frame.kind())),
                Err(FrameError::UnknownType(echo)) => prop_assert!(echo.chars().count() <= 32),
                Err(_) => {}
            }
        }
    }
}
