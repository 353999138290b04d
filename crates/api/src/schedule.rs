//! When a class starts: a one-off instant, or a cron pattern read in an IANA time zone.
//!
//! The planner only asks two questions of a schedule — the latest start at or before an instant,
//! and the first start after it — and gets absolute instants back, so daylight-saving rules live
//! here and nowhere else. Recurring schedules use `croner`, whose DST behaviour is specified:
//! a wall-clock time skipped by a spring-forward change fires right after the gap, and a time the
//! clock passes twice after a fall-back change fires once, the first time.

use std::str::FromStr;

use chrono::{DateTime, DurationRound, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

/// A validated schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// A single class starting at this instant.
    Once(DateTime<Utc>),
    /// A class at every start of `cron`, read in `zone`.
    Recurring(Box<Recurring>),
}

/// A cron pattern and the zone its wall-clock times are read in.
#[derive(Debug, Clone, PartialEq)]
pub struct Recurring {
    cron: Cron,
    zone: Tz,
}

/// Why a schedule's parts do not make a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0:?} is not an RFC 3339 time with a zone, like 2026-12-01T14:00:00Z")]
    BadStart(String),
    #[error("{0:?} is not an IANA time zone, like Europe/Berlin or Asia/Dhaka")]
    UnknownTimeZone(String),
    #[error("{pattern:?} is not a five-field cron pattern: {reason}")]
    BadCron { pattern: String, reason: String },
    #[error("{0:?} never fires: no date matches it")]
    NeverFires(String),
}

impl Schedule {
    pub fn once(start: &str) -> Result<Self, ScheduleError> {
        DateTime::parse_from_rfc3339(start)
            .map(|t| Schedule::Once(t.with_timezone(&Utc)))
            .map_err(|_| ScheduleError::BadStart(start.to_owned()))
    }

    pub fn recurring(pattern: &str, zone: &str) -> Result<Self, ScheduleError> {
        let zone =
            Tz::from_str(zone).map_err(|_| ScheduleError::UnknownTimeZone(zone.to_owned()))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| ScheduleError::BadCron {
                pattern: pattern.to_owned(),
                reason: e.to_string(),
            })?;
        let recurring = Recurring { cron, zone };
        // Without a year field, a pattern that matches any date matches one within the 400-year
        // Gregorian cycle, which croner's search (up to year 5000) covers from any start.
        let reference = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
        if reference.and_then(|t| recurring.next_after(t)).is_none() {
            return Err(ScheduleError::NeverFires(pattern.to_owned()));
        }
        Ok(Schedule::Recurring(Box::new(recurring)))
    }

    /// The latest start at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Once(start) => (*start <= t).then_some(*start),
            Schedule::Recurring(r) => r.latest_at_or_before(t),
        }
    }

    /// The first start strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Once(start) => (*start > t).then_some(*start),
            Schedule::Recurring(r) => r.next_after(t),
        }
    }

    /// Up to `n` starts after `t`, in order.
    pub fn starts_after(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut starts = Vec::with_capacity(n);
        let mut cursor = t;
        while starts.len() < n {
            match self.next_after(cursor) {
                Some(next) => {
                    starts.push(next);
                    cursor = next;
                }
                None => break,
            }
        }
        starts
    }
}

impl Recurring {
    pub fn zone(&self) -> Tz {
        self.zone
    }

    pub fn pattern(&self) -> &str {
        self.cron.as_str()
    }

    // Cron starts fall on whole seconds, so searching from `t` floored to its second gives the
    // same answers as searching from `t` itself, without relying on how the search treats
    // fractions of a second.
    fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = floor_second(t).with_timezone(&self.zone);
        self.cron
            .find_previous_occurrence(&from, true)
            .ok()
            .map(|s| s.with_timezone(&Utc))
    }

    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = floor_second(t).with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&from, false)
            .ok()
            .map(|s| s.with_timezone(&Utc))
    }
}

fn floor_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::seconds(1)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn weekly(pattern: &str, zone: &str) -> Schedule {
        Schedule::recurring(pattern, zone).unwrap()
    }

    #[test]
    fn one_off_accepts_any_offset() {
        let s = Schedule::once("2026-12-01T20:00:00+06:00").unwrap();
        assert_eq!(s, Schedule::Once(utc("2026-12-01T14:00:00Z")));
        assert!(matches!(
            Schedule::once("2026-12-01 14:00"),
            Err(ScheduleError::BadStart(_))
        ));
        assert!(Schedule::once("2026-12-01T14:00:00").is_err(), "no zone");
    }

    #[test]
    fn one_off_latest_and_next() {
        let start = utc("2026-12-01T14:00:00Z");
        let s = Schedule::Once(start);
        assert_eq!(s.latest_at_or_before(start), Some(start));
        assert_eq!(s.latest_at_or_before(start - TimeDelta::seconds(1)), None);
        assert_eq!(s.next_after(start - TimeDelta::seconds(1)), Some(start));
        assert_eq!(s.next_after(start), None);
    }

    #[test]
    fn refuses_unknown_zones_bad_patterns_and_patterns_that_never_fire() {
        assert!(matches!(
            Schedule::recurring("0 14 * * MON", "Mars/Olympus_Mons"),
            Err(ScheduleError::UnknownTimeZone(_))
        ));
        assert!(matches!(
            Schedule::recurring("0 14 * *", "UTC"),
            Err(ScheduleError::BadCron { .. })
        ));
        assert!(matches!(
            Schedule::recurring("0 0 14 * * MON", "UTC"),
            Err(ScheduleError::BadCron { .. })
        ));
        assert!(matches!(
            Schedule::recurring("0 25 * * *", "UTC"),
            Err(ScheduleError::BadCron { .. })
        ));
        assert!(matches!(
            Schedule::recurring("0 0 30 2 *", "UTC"),
            Err(ScheduleError::NeverFires(_))
        ));
        assert!(
            Schedule::recurring("0 0 29 2 *", "UTC").is_ok(),
            "leap days fire"
        );
        assert!(Schedule::recurring("@weekly", "UTC").is_ok());
    }

    #[test]
    fn dhaka_has_no_daylight_saving() {
        // Asia/Dhaka is UTC+6 all year: 14:00 local is 08:00 UTC in every season.
        let s = weekly("0 14 * * MON", "Asia/Dhaka");
        let starts = s.starts_after(utc("2026-01-01T00:00:00Z"), 53);
        assert_eq!(starts.len(), 53);
        assert_eq!(starts[0], utc("2026-01-05T08:00:00Z"));
        for pair in starts.windows(2) {
            assert_eq!(pair[1] - pair[0], TimeDelta::weeks(1));
        }
        assert!(
            starts
                .iter()
                .all(|t| t.format("%H:%M").to_string() == "08:00")
        );
    }

    #[test]
    fn berlin_weekly_class_keeps_its_wall_clock_time_across_both_changes() {
        // Clocks go forward on Sunday 2026-03-29 and back on Sunday 2026-10-25.
        let s = weekly("0 14 * * SUN", "Europe/Berlin");
        let march = s.starts_after(utc("2026-03-20T00:00:00Z"), 2);
        assert_eq!(
            march,
            [utc("2026-03-22T13:00:00Z"), utc("2026-03-29T12:00:00Z")]
        );
        assert_eq!(
            march[1] - march[0],
            TimeDelta::weeks(1) - TimeDelta::hours(1)
        );
        let october = s.starts_after(utc("2026-10-20T00:00:00Z"), 2);
        assert_eq!(
            october,
            [utc("2026-10-25T13:00:00Z"), utc("2026-11-01T13:00:00Z")]
        );
        let before = s.latest_at_or_before(utc("2026-10-25T12:59:59Z"));
        assert_eq!(before, Some(utc("2026-10-18T12:00:00Z")));
    }

    #[test]
    fn berlin_time_skipped_by_spring_forward_starts_right_after_the_gap() {
        // 02:30 does not exist in Berlin on 2026-03-29: 02:00 CET becomes 03:00 CEST.
        let s = weekly("30 2 * * SUN", "Europe/Berlin");
        let starts = s.starts_after(utc("2026-03-21T00:00:00Z"), 3);
        assert_eq!(
            starts,
            [
                utc("2026-03-22T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST, right after the gap
                utc("2026-04-05T00:30:00Z"), // 02:30 CEST
            ]
        );
        assert_eq!(
            s.latest_at_or_before(utc("2026-03-29T05:00:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn berlin_time_passed_twice_by_fall_back_starts_once() {
        // 02:30 happens twice in Berlin on 2026-10-25: first CEST (00:30Z), then CET (01:30Z).
        let s = weekly("30 2 * * SUN", "Europe/Berlin");
        let starts = s.starts_after(utc("2026-10-24T00:00:00Z"), 2);
        assert_eq!(
            starts,
            [utc("2026-10-25T00:30:00Z"), utc("2026-11-01T01:30:00Z")]
        );
        // Standing in the repeated hour, the latest start is the first pass, not a second one.
        assert_eq!(
            s.latest_at_or_before(utc("2026-10-25T01:45:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn new_york_class_follows_eastern_time() {
        // DST in 2026: from 2026-03-08 to 2026-11-01.
        let s = weekly("0 18 * * TUE,THU", "America/New_York");
        let starts = s.starts_after(utc("2026-03-01T00:00:00Z"), 4);
        assert_eq!(
            starts,
            [
                utc("2026-03-03T23:00:00Z"), // 18:00 EST
                utc("2026-03-05T23:00:00Z"),
                utc("2026-03-10T22:00:00Z"), // 18:00 EDT
                utc("2026-03-12T22:00:00Z"),
            ]
        );
        let november = s.starts_after(utc("2026-10-28T00:00:00Z"), 2);
        assert_eq!(
            november,
            [utc("2026-10-29T22:00:00Z"), utc("2026-11-03T23:00:00Z")]
        );
    }

    #[test]
    fn fractions_of_a_second_do_not_hide_a_start() {
        let s = weekly("0 14 * * *", "UTC");
        let start = utc("2026-05-01T14:00:00Z");
        let just_after = start + TimeDelta::milliseconds(500);
        assert_eq!(s.latest_at_or_before(just_after), Some(start));
        assert_eq!(
            s.next_after(start - TimeDelta::milliseconds(500)),
            Some(start)
        );
        assert_eq!(s.latest_at_or_before(start), Some(start));
        assert_eq!(s.next_after(start), Some(start + TimeDelta::days(1)));
    }
}
