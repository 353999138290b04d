//! Message ids: Redis stream ids `<ms>-<seq>`, increasing within a class. A client keeps the
//! largest it has seen and resumes from it with `since`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A comment's id within its class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    pub ms: u64,
    pub seq: u64,
}

impl MessageId {
    /// The position before any message: `0-0`.
    pub const ZERO: MessageId = MessageId { ms: 0, seq: 0 };
}

/// A string that is not `<digits>-<digits>` within `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a message id is two decimal numbers joined by `-`, like 1764300000000-0")]
pub struct BadMessageId;

impl FromStr for MessageId {
    type Err = BadMessageId;

    fn from_str(s: &str) -> Result<Self, BadMessageId> {
        let (ms, seq) = s.split_once('-').ok_or(BadMessageId)?;
        let number = |part: &str| {
            if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadMessageId);
            }
            part.parse::<u64>().map_err(|_| BadMessageId)
        };
        Ok(MessageId {
            ms: number(ms)?,
            seq: number(seq)?,
        })
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_numerically_and_round_trip() {
        let a: MessageId = "999-9".parse().unwrap();
        let b: MessageId = "1000-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "1000-0");
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"1000-0\"");
        assert_eq!(serde_json::from_str::<MessageId>("\"1000-0\"").unwrap(), b);
    }

    #[test]
    fn refuses_what_is_not_an_id() {
        for bad in [
            "12",
            "-1",
            "1-",
            "+1-0",
            "1-+0",
            "a-b",
            "1-2-3",
            " 1-2",
            "99999999999999999999-0",
        ] {
            assert_eq!(bad.parse::<MessageId>(), Err(BadMessageId), "{bad}");
        }
    }
}
