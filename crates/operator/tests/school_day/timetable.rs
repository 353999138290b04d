//! The day's timetable, generated from a seed: classes of a few minutes with warm-ups of
//! 30–90 s, one-off and daily recurring ones in several time zones (a recurring class's cron is
//! its local wall-clock time, so the operator's zone handling decides when it starts), starts
//! overlapping, attendance from 30 to 8,000; one class whose expected attendance is raised while
//! it warms up, and one that more students join than expected.

use chrono::{DateTime, DurationRound, SubsecRound, TimeDelta, Timelike, Utc};
use serde_json::{Value, json};

/// The zones recurring classes are written in (two of them half an hour off UTC).
pub const ZONES: [&str; 5] = [
    "Europe/Berlin",
    "Asia/Kolkata",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Adelaide",
];
/// Attendance is drawn from these.
const ATTENDANCE: [u32; 11] = [30, 45, 60, 120, 250, 500, 800, 1_500, 3_000, 5_000, 8_000];
pub const CONNECTIONS_PER_POD: u32 = 1_000;
pub const HEADROOM: f64 = 1.2;
pub const STEP_PERCENT: u32 = 50;
/// What an admin would guess for a pod's start on the fast nodes.
pub const POD_STARTUP: &str = "20s";
/// What a socket pod for [`CONNECTIONS_PER_POD`] students requests (the scheduler places pods
/// by it; see `main`).
pub const SOCKET_CPU_REQUEST: &str = "500m";
pub const SOCKET_MEMORY_REQUEST: &str = "256Mi";

/// Something the day does to a class besides its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Twist {
    /// `expectedAttendance` is raised to this, 5 s after `start - warmup` (the class is
    /// warming up: it starts `warmup` later).
    Raised(u32),
    /// This many students connect (reported in its Redis) 20 s after the start.
    MoreThanExpected(u64),
}

/// One class of the day.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub start: DateTime<Utc>,
    pub warmup_secs: i64,
    pub duration_secs: i64,
    pub expected: u32,
    pub idle_replicas: u32,
    /// `Some(zone)` for a daily recurring class.
    pub zone: Option<&'static str>,
    pub twist: Option<Twist>,
}

/// splitmix64: a few lines, deterministic across platforms.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` classes whose starts fall in `[day_start + first, day_start + first + spread)`.
pub fn day(day_start: DateTime<Utc>, n: usize, seed: u64, first: i64, spread: i64) -> Vec<Entry> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let offset = first + spread * i as i64 / n.max(1) as i64 + rng.below(20) as i64;
            // Whole seconds, as the class's `start` is written.
            let mut start = (day_start + TimeDelta::seconds(offset)).trunc_subsecs(0);
            // Every fourth class recurs daily; cron has whole minutes.
            let zone = (i % 4 == 3).then(|| ZONES[(i / 4) % ZONES.len()]);
            if zone.is_some() {
                start = start.duration_trunc(TimeDelta::minutes(1)).unwrap_or(start)
                    + TimeDelta::minutes(1);
            }
            let expected = match i {
                0 => 8_000,
                1 => 30,
                _ => ATTENDANCE[rng.below(ATTENDANCE.len() as u64) as usize],
            };
            let twist = match i {
                2 => Some(Twist::Raised(4_000)),
                5 => Some(Twist::MoreThanExpected(2_500)),
                _ => None,
            };
            Entry {
                name: format!("class-{i:02}"),
                start,
                warmup_secs: 30 + rng.below(61) as i64,
                duration_secs: 60 + rng.below(91) as i64,
                expected: match twist {
                    Some(Twist::Raised(_)) => 500,
                    Some(Twist::MoreThanExpected(_)) => 300,
                    None => expected,
                },
                idle_replicas: u32::from(i % 2 == 0),
                zone,
                twist,
            }
        })
        .collect()
}

/// The crontab line and zone of a daily class at `start`, as the school would write it.
pub fn cron_at(start: DateTime<Utc>, zone: &str) -> String {
    let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
    let local = start.with_timezone(&tz);
    format!("{} {} * * *", local.minute(), local.hour())
}

/// The LiveClass for `entry`; `learn` is `socket.learnPodStartup`.
pub fn live_class(entry: &Entry, learn: bool) -> Value {
    let schedule = match entry.zone {
        Some(zone) => json!({
            "cron": cron_at(entry.start, zone),
            "timeZone": zone,
            "duration": format!("{}s", entry.duration_secs),
        }),
        None => json!({
            "start": entry.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "duration": format!("{}s", entry.duration_secs),
        }),
    };
    json!({
        "apiVersion": "liveclass.dev/v1alpha1",
        "kind": "LiveClass",
        "metadata": { "name": entry.name },
        "spec": {
            "schedule": schedule,
            "expectedAttendance": entry.expected,
            "warmup": format!("{}s", entry.warmup_secs),
            "cooldown": "20s",
            "socket": {
                "image": "liveclass-socket:school-day",
                "connectionsPerPod": CONNECTIONS_PER_POD,
                "headroom": HEADROOM,
                "minReplicas": 1,
                "idleReplicas": entry.idle_replicas,
                "maxReplicas": 20,
                "podStartup": POD_STARTUP,
                "resources": {
                    "requests": { "cpu": SOCKET_CPU_REQUEST, "memory": SOCKET_MEMORY_REQUEST },
                },
                "learnPodStartup": learn,
                "drainWindow": "2s",
                "scaleDown": { "stepPercent": STEP_PERCENT, "interval": "10s" },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_has_what_the_issue_asks_for() {
        let start = DateTime::parse_from_rfc3339("2026-12-03T08:00:07Z")
            .unwrap()
            .with_timezone(&Utc);
        let day = day(start, 40, 1, 240, 240);
        assert_eq!(day.len(), 40);
        assert!(day.iter().any(|e| e.expected == 30) && day.iter().any(|e| e.expected == 8_000));
        assert_eq!(day.iter().filter(|e| e.zone.is_some()).count(), 10);
        let zones: std::collections::BTreeSet<_> = day.iter().filter_map(|e| e.zone).collect();
        assert_eq!(zones.len(), ZONES.len());
        assert!(day.iter().all(|e| (30..=90).contains(&e.warmup_secs)));
        assert!(day.iter().all(|e| (60..=150).contains(&e.duration_secs)));
        assert!(
            day.iter()
                .filter(|e| e.zone.is_some())
                .all(|e| e.start.second() == 0)
        );
        assert!(
            day.iter()
                .any(|e| matches!(e.twist, Some(Twist::Raised(_))))
        );
        assert!(
            day.iter()
                .any(|e| matches!(e.twist, Some(Twist::MoreThanExpected(_))))
        );
        // Overlapping: some class starts while another is on.
        let overlapping = day.iter().any(|a| {
            day.iter().any(|b| {
                a.name != b.name
                    && b.start >= a.start
                    && b.start < a.start + TimeDelta::seconds(a.duration_secs)
            })
        });
        assert!(overlapping);
    }

    #[test]
    fn a_recurring_class_is_written_in_its_local_time() {
        let at = DateTime::parse_from_rfc3339("2026-12-03T08:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(cron_at(at, "Asia/Kolkata"), "35 13 * * *");
        assert_eq!(cron_at(at, "America/New_York"), "5 3 * * *");
        assert_eq!(cron_at(at, "Australia/Adelaide"), "35 18 * * *");
    }
}
