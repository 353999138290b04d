//! Go-style durations (`90m`, `1h30m`, `45s`), the way Kubernetes users already write them.
//!
//! The resource keeps a duration as the string the user wrote, so an object the API server
//! accepted always deserializes: a bad value becomes a validation error the operator can report,
//! never a watch stream that fails on one object. The schema carries a pattern and CEL rules so
//! the API server refuses malformed, zero or overlong durations up front; [`GoDuration::parse`]
//! turns the string into a [`TimeDelta`] for the planner.

use std::{borrow::Cow, fmt};

use chrono::TimeDelta;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// What the API server accepts: one or more `<number><unit>` groups, no sign, no spaces.
pub const PATTERN: &str = "^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$";

/// The longest duration any field takes: a class, its warm-up or its cool-down fit in a day.
pub const MAX: TimeDelta = TimeDelta::hours(24);

/// Longest string the schema accepts; also keeps the CEL cost estimate of `matches` small.
const MAX_LENGTH: u32 = 32;

/// A positive duration written the Go way, as in `metav1.Duration`: `90m`, `1h30m`, `45s`, `1.5h`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoDuration(String);

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("is empty; write a duration such as 90m, 1h30m or 45s")]
    Empty,
    #[error("{0:?} is not a duration; write it like 90m, 1h30m or 45s (units h, m, s, ms, us, ns)")]
    Malformed(String),
    #[error("{0:?} is too long to be a duration")]
    Overflow(String),
}

impl GoDuration {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the text the way Go's `time.ParseDuration` does, minus the sign and the bare `0`
    /// that the schema's pattern refuses.
    pub fn parse(&self) -> Result<TimeDelta, DurationError> {
        parse(&self.0)
    }

    /// Formats a whole number of seconds back into the shortest Go-style text (`5400s` -> `1h30m`).
    pub fn from_seconds(seconds: u64) -> Self {
        let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
        let mut text = String::new();
        if h > 0 {
            text.push_str(&format!("{h}h"));
        }
        if m > 0 {
            text.push_str(&format!("{m}m"));
        }
        if s > 0 || text.is_empty() {
            text.push_str(&format!("{s}s"));
        }
        Self(text)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for GoDuration {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

fn parse(text: &str) -> Result<TimeDelta, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_owned());
    let overflow = || DurationError::Overflow(text.to_owned());
    let mut total_nanos: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let whole_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (whole, after) = rest.split_at(whole_len);
        if whole.is_empty() {
            return Err(malformed());
        }
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after_dot) => {
                let len = after_dot
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after_dot.len());
                if len == 0 {
                    return Err(malformed());
                }
                after_dot.split_at(len)
            }
            None => ("", after),
        };
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(malformed()),
        };
        let whole: u128 = whole.parse().map_err(|_| overflow())?;
        let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
        if !fraction.is_empty() {
            // Digits past nanosecond precision cannot change the result; Go drops them too.
            let digits = &fraction[..fraction.len().min(18)];
            let numerator: u128 = digits.parse().map_err(|_| overflow())?;
            let scale = 10u128.pow(u32::try_from(digits.len()).map_err(|_| overflow())?);
            nanos = nanos
                .checked_add(numerator * unit_nanos / scale)
                .ok_or_else(overflow)?;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(overflow)?;
        rest = after;
    }
    let nanos = i64::try_from(total_nanos).map_err(|_| overflow())?;
    Ok(TimeDelta::nanoseconds(nanos))
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let well_formed = format!("self.matches('{PATTERN}')");
        let in_range = format!(
            "!self.matches('{PATTERN}') || (duration(self) > duration('0s') && duration(self) <= duration('24h'))"
        );
        json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "maxLength": MAX_LENGTH,
            "x-kubernetes-validations": [
                {
                    "rule": well_formed,
                    "message": "must be a duration written like 90m, 1h30m or 45s (units h, m, s, ms)"
                },
                {
                    "rule": in_range,
                    "message": "must be longer than 0s and at most 24h"
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_kubernetes_users_write() {
        let cases = [
            ("90m", TimeDelta::minutes(90)),
            ("1h30m", TimeDelta::minutes(90)),
            ("45s", TimeDelta::seconds(45)),
            ("1.5h", TimeDelta::minutes(90)),
            ("2h0m0s", TimeDelta::hours(2)),
            ("250ms", TimeDelta::milliseconds(250)),
            ("1m30s500ms", TimeDelta::milliseconds(90_500)),
            ("0.000000001s", TimeDelta::nanoseconds(1)),
            ("0s", TimeDelta::zero()),
            ("10us", TimeDelta::microseconds(10)),
        ];
        for (text, want) in cases {
            assert_eq!(GoDuration::from(text).parse(), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_go_or_our_pattern_refuses() {
        for text in [
            "", "10", "m", "1.h", ".5h", "1d", "-5m", "+5m", "5 m", "1h 30m", "5M", "1e3s",
        ] {
            assert!(GoDuration::from(text).parse().is_err(), "{text:?} parsed");
        }
        assert!(matches!(
            GoDuration::from("99999999999999999999h").parse(),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn from_seconds_round_trips() {
        for (secs, text) in [
            (0, "0s"),
            (45, "45s"),
            (5400, "1h30m"),
            (3601, "1h1s"),
            (600, "10m"),
        ] {
            let d = GoDuration::from_seconds(secs);
            assert_eq!(d.as_str(), text);
            assert_eq!(d.parse(), Ok(TimeDelta::seconds(secs as i64)));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_whole_number_of_seconds_round_trips(seconds in 0u64..=10_000_000) {
            let d = GoDuration::from_seconds(seconds);
            proptest::prop_assert_eq!(d.parse(), Ok(TimeDelta::seconds(seconds as i64)));
        }

        #[test]
        fn parsing_any_text_returns_rather_than_panics(text in "[0-9.a-z ]{0,24}") {
            let _ = GoDuration::from(text.as_str()).parse();
        }
    }

    #[test]
    fn schema_is_a_string_with_pattern_and_cel() {
        let schema = serde_json::to_value(schemars::schema_for!(GoDuration)).unwrap();
        assert_eq!(schema["type"], "string");
        assert_eq!(schema["pattern"], PATTERN);
        assert_eq!(
            schema["x-kubernetes-validations"].as_array().unwrap().len(),
            2
        );
    }
}
