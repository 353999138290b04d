//! Turns a [`LiveClassSpec`] into the typed [`ValidSpec`] the planner takes, or says every way
//! it is wrong.
//!
//! The CRD's schema and CEL rules refuse most bad objects at `kubectl apply`; this checks those
//! again (an object may predate the CRD that now serves it) and adds what CEL cannot know: whether
//! a time zone exists, whether a cron pattern parses and ever fires, and whether a recurring
//! class's occurrences overlap. The operator turns these errors into a False condition and an
//! Event, using [`ValidationError::reason`] as the machine-readable reason.

use chrono::TimeDelta;

use crate::{
    duration::{self, DurationError, GoDuration},
    schedule::{Schedule, ScheduleError},
    types::{LiveClass, LiveClassSpec, RedisMode, SecretKeyRef},
};

/// The longest `metadata.name` a class may have: `<name>-socket-headless` is a Service name,
/// a DNS label of at most 63 characters.
pub const MAX_NAME_LENGTH: usize = 47;

/// How far ahead occurrences are checked for overlap: a year of a daily class, or 7 years of a
/// weekly one, catches every pattern whose gaps vary by month or season.
const OVERLAP_LOOKAHEAD: usize = 400;
/// 2026-01-01, where that look-ahead starts.
const OVERLAP_FROM_DAYS_AFTER_EPOCH: i64 = 20_454;

/// A spec the planner can trust: parsed, in range and consistent.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSpec {
    pub schedule: Schedule,
    pub duration: TimeDelta,
    pub expected_attendance: u32,
    pub warmup: TimeDelta,
    pub cooldown: TimeDelta,
    pub socket: SocketParams,
    pub redis: RedisParams,
    pub autoscaling: Option<AutoscalingParams>,
    /// How long an Ended class keeps its idle capacity before it is released.
    pub ended_ttl: TimeDelta,
}

/// The socket numbers the planner works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketParams {
    pub connections_per_pod: u32,
    /// `headroom` in thousandths, so replica counts are exact integer maths (1.25 -> 1250).
    pub headroom_permille: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Replicas between classes: `idleReplicas`, or `minReplicas` when it is not set.
    pub idle_replicas: u32,
    pub pod_startup: TimeDelta,
    pub drain_window: TimeDelta,
    pub step_percent: u32,
    pub step_interval: TimeDelta,
}

/// The Redis numbers the planner works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisParams {
    pub mode: RedisMode,
    pub history_length: u32,
    pub replicated_threshold: u32,
}

/// The HPA numbers the planner works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoscalingParams {
    pub target_cpu_utilization: u32,
}

/// One thing wrong with a spec. The message names the field and says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field}: {source}")]
    BadDuration {
        field: &'static str,
        source: DurationError,
    },
    #[error("{field}: {value} must be longer than 0s and at most 24h")]
    DurationOutOfRange { field: &'static str, value: String },
    #[error(
        "spec.schedule: set exactly one of start (a one-off class) or cron with timeZone (a recurring class)"
    )]
    StartOrCron,
    #[error("spec.schedule.timeZone is required with cron: set an IANA zone such as Europe/Berlin")]
    MissingTimeZone,
    #[error(
        "spec.schedule.timeZone only applies to cron: a one-off start carries its own UTC offset"
    )]
    TimeZoneWithoutCron,
    #[error("spec.schedule.{field}: {source}")]
    Schedule {
        field: &'static str,
        source: ScheduleError,
    },
    #[error(
        "spec.schedule.cron: two starts are only {gap} apart, but each class needs {needed} \
         (socket.podStartup + warmup + duration + cooldown); space the starts out or shorten the class"
    )]
    OverlappingOccurrences { gap: GoDuration, needed: GoDuration },
    #[error("{field}: {value} is out of range; it must be between {min} and {max}")]
    OutOfRange {
        field: &'static str,
        value: String,
        min: String,
        max: String,
    },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error(
        "spec.socket.minReplicas ({min}) must not be greater than spec.socket.maxReplicas ({max})"
    )]
    MinAboveMax { min: u32, max: u32 },
    #[error(
        "spec.socket.scaleDown.interval ({interval}) must be at least spec.socket.drainWindow \
         ({drain_window}), so a step has drained before the next begins"
    )]
    StepShorterThanDrain {
        interval: GoDuration,
        drain_window: GoDuration,
    },
    #[error("spec.redis.external.secretRef is required when spec.redis.mode is External")]
    MissingExternalRedis,
    #[error("spec.redis.external only applies when spec.redis.mode is External")]
    ExternalRedisNotUsed,
    #[error("spec.redis.external.sentinels: {0:?} is not host:port with a port from 1 to 65535")]
    BadSentinel(String),
    #[error(
        "spec.socket.idleReplicas ({idle}) must not be greater than spec.socket.maxReplicas ({max})"
    )]
    IdleAboveMax { idle: u32, max: u32 },
    #[error(
        "spec.autoscaling scales on CPU utilisation, a share of the CPU the pods request: set \
         spec.socket.resources.requests.cpu, or remove spec.autoscaling"
    )]
    AutoscalingWithoutCpuRequest,
    #[error(
        "metadata.name {0:?} must be at most 47 characters, start with a lowercase letter, end \
         with a letter or digit and hold only lowercase letters, digits and '-' (it names the \
         class's Services and pods, such as <name>-socket-headless)"
    )]
    BadName(String),
}

impl ValidationError {
    /// A CamelCase reason for a condition or an Event.
    pub fn reason(&self) -> &'static str {
        match self {
            ValidationError::BadDuration { .. } => "InvalidDuration",
            ValidationError::DurationOutOfRange { .. } => "DurationOutOfRange",
            ValidationError::StartOrCron
            | ValidationError::MissingTimeZone
            | ValidationError::TimeZoneWithoutCron => "InvalidSchedule",
            ValidationError::Schedule { source, .. } => match source {
                ScheduleError::BadStart(_) => "InvalidStart",
                ScheduleError::UnknownTimeZone(_) => "UnknownTimeZone",
                ScheduleError::BadCron { .. } => "InvalidCron",
                ScheduleError::NeverFires(_) => "CronNeverFires",
            },
            ValidationError::OverlappingOccurrences { .. } => "OverlappingOccurrences",
            ValidationError::OutOfRange { .. } | ValidationError::Empty { .. } => "OutOfRange",
            ValidationError::MinAboveMax { .. } => "MinReplicasAboveMax",
            ValidationError::StepShorterThanDrain { .. } => "ScaleDownFasterThanDrain",
            ValidationError::MissingExternalRedis
            | ValidationError::ExternalRedisNotUsed
            | ValidationError::BadSentinel(_) => "InvalidRedis",
            ValidationError::IdleAboveMax { .. } => "IdleReplicasAboveMax",
            ValidationError::AutoscalingWithoutCpuRequest => "AutoscalingWithoutCpuRequest",
            ValidationError::BadName(_) => "InvalidName",
        }
    }
}

/// Everything wrong with `spec`, joined for a condition message.
pub fn describe(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks a whole class: its name (which the names of its objects are made of) and its spec.
pub fn validate_class(lc: &LiveClass) -> Result<ValidSpec, Vec<ValidationError>> {
    let name = lc.metadata.name.as_deref().unwrap_or_default();
    let name_error = check_name(name).err();
    match (validate(&lc.spec), name_error) {
        (Ok(spec), None) => Ok(spec),
        (Ok(_), Some(e)) => Err(vec![e]),
        (Err(mut errors), Some(e)) => {
            errors.insert(0, e);
            Err(errors)
        }
        (Err(errors), None) => Err(errors),
    }
}

/// Whether `name` can name a class: the CRD's CEL rule on `metadata.name`, checked again for
/// objects created before the CRD carried it.
pub fn check_name(name: &str) -> Result<(), ValidationError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LENGTH
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.last().is_some_and(|b| *b != b'-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::BadName(name.to_owned()))
    }
}

/// Checks `spec` and returns the typed form the planner takes, or every problem found.
pub fn validate(spec: &LiveClassSpec) -> Result<ValidSpec, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let s = &spec.socket;

    let duration = check_duration(
        &mut errors,
        "spec.schedule.duration",
        &spec.schedule.duration,
    );
    let warmup = check_duration(&mut errors, "spec.warmup", &spec.warmup);
    let cooldown = check_duration(&mut errors, "spec.cooldown", &spec.cooldown);
    let pod_startup = check_duration(&mut errors, "spec.socket.podStartup", &s.pod_startup);
    let drain_window = check_duration(&mut errors, "spec.socket.drainWindow", &s.drain_window);
    let step_interval = check_duration(
        &mut errors,
        "spec.socket.scaleDown.interval",
        &s.scale_down.interval,
    );

    let schedule = check_schedule(&mut errors, spec);
    let ended_ttl = check_duration(&mut errors, "spec.endedTtl", &spec.ended_ttl);

    check_range(
        &mut errors,
        "spec.expectedAttendance",
        spec.expected_attendance,
        1,
        1_000_000,
    );
    check_range(
        &mut errors,
        "spec.socket.connectionsPerPod",
        s.connections_per_pod,
        1,
        1_000_000,
    );
    check_range(
        &mut errors,
        "spec.socket.minReplicas",
        s.min_replicas,
        0,
        10_000,
    );
    check_range(
        &mut errors,
        "spec.socket.maxReplicas",
        s.max_replicas,
        1,
        10_000,
    );
    check_range(
        &mut errors,
        "spec.socket.scaleDown.stepPercent",
        s.scale_down.step_percent,
        1,
        50,
    );
    check_range(
        &mut errors,
        "spec.redis.historyLength",
        spec.redis.history_length,
        0,
        1_000_000,
    );
    check_range(
        &mut errors,
        "spec.redis.replicatedThreshold",
        spec.redis.replicated_threshold,
        1,
        1_000_000,
    );
    if let Some(a) = &spec.autoscaling {
        check_range(
            &mut errors,
            "spec.autoscaling.targetCpuUtilization",
            a.target_cpu_utilization,
            1,
            100,
        );
    }
    // NaN fails both comparisons, so it is refused too.
    let headroom_ok = (1.0..=10.0).contains(&s.headroom);
    if !headroom_ok {
        errors.push(ValidationError::OutOfRange {
            field: "spec.socket.headroom",
            value: s.headroom.to_string(),
            min: "1.0".into(),
            max: "10.0".into(),
        });
    }
    if s.min_replicas > s.max_replicas {
        errors.push(ValidationError::MinAboveMax {
            min: s.min_replicas,
            max: s.max_replicas,
        });
    }
    if let Some(idle) = s.idle_replicas {
        check_range(&mut errors, "spec.socket.idleReplicas", idle, 0, 10_000);
        if idle > s.max_replicas {
            errors.push(ValidationError::IdleAboveMax {
                idle,
                max: s.max_replicas,
            });
        }
    }
    if spec.autoscaling.is_some() {
        let cpu_requested = s
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_some_and(|requests| requests.contains_key("cpu"));
        if !cpu_requested {
            errors.push(ValidationError::AutoscalingWithoutCpuRequest);
        }
    }
    if s.image.trim().is_empty() {
        errors.push(ValidationError::Empty {
            field: "spec.socket.image",
        });
    }
    if let Some(secret) = &s.token_secret_ref {
        let previous_empty = secret
            .previous_key
            .as_ref()
            .is_some_and(|k| k.trim().is_empty());
        if secret.name.trim().is_empty() || secret.key.trim().is_empty() || previous_empty {
            errors.push(ValidationError::Empty {
                field: "spec.socket.tokenSecretRef",
            });
        }
    }
    if let (Some(interval), Some(drain)) = (step_interval, drain_window)
        && interval < drain
    {
        errors.push(ValidationError::StepShorterThanDrain {
            interval: s.scale_down.interval.clone(),
            drain_window: s.drain_window.clone(),
        });
    }
    match (spec.redis.mode, &spec.redis.external) {
        (RedisMode::External, None) => errors.push(ValidationError::MissingExternalRedis),
        (RedisMode::External, Some(external)) => {
            check_secret_ref(
                &mut errors,
                "spec.redis.external.secretRef",
                &external.secret_ref,
            );
            if let Some(password) = &external.password_secret_ref {
                check_secret_ref(
                    &mut errors,
                    "spec.redis.external.passwordSecretRef",
                    password,
                );
            }
            for sentinel in &external.sentinels {
                let port = sentinel
                    .rsplit_once(':')
                    .filter(|(host, _)| !host.is_empty())
                    .and_then(|(_, port)| port.parse::<u16>().ok());
                if !matches!(port, Some(1..)) {
                    errors.push(ValidationError::BadSentinel(sentinel.clone()));
                }
            }
        }
        (_, Some(_)) => errors.push(ValidationError::ExternalRedisNotUsed),
        (_, None) => {}
    }
    if spec.redis.mode != RedisMode::External && spec.redis.image.trim().is_empty() {
        errors.push(ValidationError::Empty {
            field: "spec.redis.image",
        });
    }

    // An occurrence occupies its capacity from its scale-up (warmup + podStartup before the
    // start) until its drain begins; the drain itself may give way to the next scale-up.
    if let (Some(schedule @ Schedule::Recurring(_)), Some(d), Some(w), Some(c), Some(p)) =
        (&schedule, duration, warmup, cooldown, pod_startup)
    {
        check_overlap(&mut errors, schedule, p + w + d + c);
    }

    match (
        schedule,
        duration,
        warmup,
        cooldown,
        pod_startup,
        drain_window,
        step_interval,
        ended_ttl,
    ) {
        (
            Some(schedule),
            Some(duration),
            Some(warmup),
            Some(cooldown),
            Some(pod_startup),
            Some(drain_window),
            Some(step_interval),
            Some(ended_ttl),
        ) if errors.is_empty() => Ok(ValidSpec {
            schedule,
            duration,
            expected_attendance: spec.expected_attendance,
            warmup,
            cooldown,
            socket: SocketParams {
                connections_per_pod: s.connections_per_pod,
                headroom_permille: headroom_permille(s.headroom),
                min_replicas: s.min_replicas,
                max_replicas: s.max_replicas,
                idle_replicas: s.idle_replicas.unwrap_or(s.min_replicas),
                pod_startup,
                drain_window,
                step_percent: s.scale_down.step_percent,
                step_interval,
            },
            redis: RedisParams {
                mode: spec.redis.mode,
                history_length: spec.redis.history_length,
                replicated_threshold: spec.redis.replicated_threshold,
            },
            autoscaling: spec.autoscaling.as_ref().map(|a| AutoscalingParams {
                target_cpu_utilization: a.target_cpu_utilization,
            }),
            ended_ttl,
        }),
        _ => Err(errors),
    }
}

fn check_duration(
    errors: &mut Vec<ValidationError>,
    field: &'static str,
    value: &GoDuration,
) -> Option<TimeDelta> {
    match value.parse() {
        Ok(d) if d > TimeDelta::zero() && d <= duration::MAX => Some(d),
        Ok(_) => {
            errors.push(ValidationError::DurationOutOfRange {
                field,
                value: value.to_string(),
            });
            None
        }
        Err(source) => {
            errors.push(ValidationError::BadDuration { field, source });
            None
        }
    }
}

fn check_schedule(errors: &mut Vec<ValidationError>, spec: &LiveClassSpec) -> Option<Schedule> {
    let s = &spec.schedule;
    let result = match (&s.start, &s.cron, &s.time_zone) {
        (Some(_), Some(_), _) | (None, None, _) => Err(ValidationError::StartOrCron),
        (Some(_), None, Some(_)) => Err(ValidationError::TimeZoneWithoutCron),
        (None, Some(_), None) => Err(ValidationError::MissingTimeZone),
        (Some(start), None, None) => {
            Schedule::once(start).map_err(|source| ValidationError::Schedule {
                field: "start",
                source,
            })
        }
        (None, Some(cron), Some(zone)) => {
            Schedule::recurring(cron, zone).map_err(|source| ValidationError::Schedule {
                field: match source {
                    ScheduleError::UnknownTimeZone(_) => "timeZone",
                    _ => "cron",
                },
                source,
            })
        }
    };
    result.map_err(|e| errors.push(e)).ok()
}

fn check_overlap(errors: &mut Vec<ValidationError>, schedule: &Schedule, needed: TimeDelta) {
    // Validation takes no clock, so the occurrences checked start at a fixed date; gaps between
    // starts depend on the pattern and the zone's daylight-saving rules, not on the year.
    let from = chrono::DateTime::UNIX_EPOCH + TimeDelta::days(OVERLAP_FROM_DAYS_AFTER_EPOCH);
    let starts = schedule.starts_after(from, OVERLAP_LOOKAHEAD);
    let shortest = starts.windows(2).map(|w| w[1] - w[0]).min();
    if let Some(gap) = shortest
        && gap < needed
    {
        errors.push(ValidationError::OverlappingOccurrences {
            gap: GoDuration::from_seconds(gap.num_seconds().unsigned_abs()),
            needed: GoDuration::from_seconds(needed.num_seconds().unsigned_abs()),
        });
    }
}

fn check_range(
    errors: &mut Vec<ValidationError>,
    field: &'static str,
    value: u32,
    min: u32,
    max: u32,
) {
    if !(min..=max).contains(&value) {
        errors.push(ValidationError::OutOfRange {
            field,
            value: value.to_string(),
            min: min.to_string(),
            max: max.to_string(),
        });
    }
}

fn check_secret_ref(errors: &mut Vec<ValidationError>, field: &'static str, secret: &SecretKeyRef) {
    if secret.name.trim().is_empty() || secret.key.trim().is_empty() {
        errors.push(ValidationError::Empty { field });
    }
}

fn headroom_permille(headroom: f64) -> u32 {
    // In range [1.0, 10.0] here, so the cast cannot truncate; rounding absorbs binary
    // fractions such as 1.1 being 1.1000000000000000888.
    (headroom * 1000.0).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_OFF: &str = r#"
schedule:
  start: 2026-12-01T14:00:00Z
  duration: 90m
expectedAttendance: 8000
socket:
  image: ghcr.io/liveclass/socket:0.1.0
"#;

    fn spec(yaml: &str) -> LiveClassSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn errors(mutate: impl FnOnce(&mut LiveClassSpec)) -> Vec<ValidationError> {
        let mut s = spec(ONE_OFF);
        mutate(&mut s);
        validate(&s).unwrap_err()
    }

    #[test]
    fn a_minimal_one_off_class_takes_every_default() {
        let valid = validate(&spec(ONE_OFF)).unwrap();
        assert_eq!(
            valid.schedule,
            Schedule::once("2026-12-01T14:00:00Z").unwrap()
        );
        assert_eq!(valid.duration, TimeDelta::minutes(90));
        assert_eq!(valid.warmup, TimeDelta::minutes(10));
        assert_eq!(valid.cooldown, TimeDelta::minutes(15));
        assert_eq!(
            valid.socket,
            SocketParams {
                connections_per_pod: 2000,
                headroom_permille: 1250,
                min_replicas: 1,
                max_replicas: 100,
                idle_replicas: 1,
                pod_startup: TimeDelta::minutes(2),
                drain_window: TimeDelta::seconds(30),
                step_percent: 25,
                step_interval: TimeDelta::minutes(1),
            }
        );
        assert_eq!(valid.redis.mode, RedisMode::Standalone);
        assert_eq!(valid.autoscaling, None);
    }

    #[test]
    fn a_recurring_class_needs_a_known_zone_and_a_pattern_that_fires() {
        let mut s = spec(ONE_OFF);
        s.schedule.start = None;
        s.schedule.cron = Some("0 14 * * MON".into());
        s.schedule.time_zone = Some("Asia/Dhaka".into());
        assert!(validate(&s).is_ok());

        s.schedule.time_zone = Some("Asia/Gotham".into());
        let e = validate(&s).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].reason(), "UnknownTimeZone");
        assert!(
            e[0].to_string()
                .starts_with("spec.schedule.timeZone: \"Asia/Gotham\"")
        );

        s.schedule.time_zone = Some("UTC".into());
        s.schedule.cron = Some("0 9 31 4 *".into());
        let e = validate(&s).unwrap_err();
        assert_eq!(e[0].reason(), "CronNeverFires");
        assert!(e[0].to_string().contains("never fires"), "{}", e[0]);
    }

    #[test]
    fn schedule_shape_errors() {
        let e = errors(|s| s.schedule.cron = Some("0 14 * * MON".into()));
        assert_eq!(e, [ValidationError::StartOrCron]);
        let e = errors(|s| s.schedule.start = None);
        assert_eq!(e, [ValidationError::StartOrCron]);
        let e = errors(|s| s.schedule.time_zone = Some("UTC".into()));
        assert_eq!(e, [ValidationError::TimeZoneWithoutCron]);
        let e = errors(|s| {
            s.schedule.start = None;
            s.schedule.cron = Some("0 14 * * MON".into());
        });
        assert_eq!(e, [ValidationError::MissingTimeZone]);
        let e = errors(|s| s.schedule.start = Some("next tuesday".into()));
        assert_eq!(e[0].reason(), "InvalidStart");
    }

    #[test]
    fn durations_must_parse_and_be_positive_and_at_most_a_day() {
        let e = errors(|s| s.warmup = "ten minutes".into());
        assert_eq!(e[0].reason(), "InvalidDuration");
        assert!(e[0].to_string().starts_with("spec.warmup: "), "{}", e[0]);
        let e = errors(|s| s.cooldown = "0s".into());
        assert_eq!(
            e,
            [ValidationError::DurationOutOfRange {
                field: "spec.cooldown",
                value: "0s".into()
            }]
        );
        let e = errors(|s| s.schedule.duration = "25h".into());
        assert_eq!(e[0].reason(), "DurationOutOfRange");
    }

    #[test]
    fn numbers_out_of_range_and_inconsistent_replicas() {
        let e = errors(|s| s.expected_attendance = 0);
        assert_eq!(
            e[0].to_string(),
            "spec.expectedAttendance: 0 is out of range; it must be between 1 and 1000000"
        );
        let e = errors(|s| s.socket.headroom = 0.9);
        assert_eq!(e[0].reason(), "OutOfRange");
        let e = errors(|s| s.socket.headroom = f64::NAN);
        assert_eq!(e[0].reason(), "OutOfRange");
        let e = errors(|s| {
            s.socket.min_replicas = 10;
            s.socket.max_replicas = 5;
        });
        assert_eq!(e, [ValidationError::MinAboveMax { min: 10, max: 5 }]);
        let e = errors(|s| s.socket.scale_down.step_percent = 100);
        assert_eq!(e[0].reason(), "OutOfRange");
        let e = errors(|s| s.socket.scale_down.interval = "10s".into());
        assert_eq!(e[0].reason(), "ScaleDownFasterThanDrain");
    }

    #[test]
    fn external_redis_needs_its_secret_and_only_external_uses_it() {
        let e = errors(|s| s.redis.mode = RedisMode::External);
        assert_eq!(e, [ValidationError::MissingExternalRedis]);
        let e = errors(|s| {
            s.redis.external = Some(crate::types::ExternalRedis {
                secret_ref: SecretKeyRef {
                    name: "redis".into(),
                    key: "url".into(),
                },
                password_secret_ref: None,
                sentinels: Vec::new(),
                master_name: "liveclass".into(),
            })
        });
        assert_eq!(e, [ValidationError::ExternalRedisNotUsed]);
    }

    #[test]
    fn external_sentinels_are_host_and_port_and_a_password_ref_is_whole() {
        let e = errors(|s| {
            s.redis.mode = RedisMode::External;
            s.redis.external = Some(crate::types::ExternalRedis {
                secret_ref: SecretKeyRef {
                    name: "redis".into(),
                    key: "url".into(),
                },
                password_secret_ref: Some(SecretKeyRef {
                    name: "redis".into(),
                    key: " ".into(),
                }),
                sentinels: vec![
                    "sentinel-0.redis:26379".into(),
                    "sentinel-1.redis:0".into(),
                    "sentinel-2.redis:99999".into(),
                    ":26379".into(),
                ],
                master_name: "school".into(),
            })
        });
        assert_eq!(
            e,
            [
                ValidationError::Empty {
                    field: "spec.redis.external.passwordSecretRef"
                },
                ValidationError::BadSentinel("sentinel-1.redis:0".into()),
                ValidationError::BadSentinel("sentinel-2.redis:99999".into()),
                ValidationError::BadSentinel(":26379".into()),
            ]
        );
        assert_eq!(
            e[1].to_string(),
            "spec.redis.external.sentinels: \"sentinel-1.redis:0\" is not host:port with a port from 1 to 65535"
        );
    }

    #[test]
    fn overlapping_occurrences_are_refused() {
        let e = errors(|s| {
            s.schedule.start = None;
            s.schedule.cron = Some("0 * * * *".into());
            s.schedule.time_zone = Some("UTC".into());
        });
        assert_eq!(e[0].reason(), "OverlappingOccurrences");
        assert_eq!(
            e[0].to_string(),
            "spec.schedule.cron: two starts are only 1h apart, but each class needs 1h57m \
             (socket.podStartup + warmup + duration + cooldown); space the starts out or shorten the class"
        );
    }

    #[test]
    fn names_that_cannot_name_the_owned_objects_are_refused() {
        for good in ["physics-101", "a", &"a".repeat(47), "x9"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            &"a".repeat(48),
            "101-physics",
            "physics.101",
            "Physics",
            "physics-",
            "phys_ics",
        ] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.reason(), "InvalidName", "{bad}");
        }
        let mut lc = LiveClass::new("9lives", spec(ONE_OFF));
        let e = validate_class(&lc).unwrap_err();
        assert_eq!(e[0].reason(), "InvalidName");
        lc.metadata.name = Some("nine-lives".into());
        assert!(validate_class(&lc).is_ok());
    }

    #[test]
    fn idle_replicas_default_to_the_minimum_and_stay_under_the_maximum() {
        let mut s = spec(ONE_OFF);
        s.socket.min_replicas = 2;
        assert_eq!(validate(&s).unwrap().socket.idle_replicas, 2);
        s.socket.idle_replicas = Some(0);
        assert_eq!(validate(&s).unwrap().socket.idle_replicas, 0);
        let e = errors(|s| s.socket.idle_replicas = Some(500));
        assert_eq!(
            e,
            [ValidationError::IdleAboveMax {
                idle: 500,
                max: 100
            }]
        );
    }

    #[test]
    fn autoscaling_needs_a_cpu_request() {
        let e = errors(|s| s.autoscaling = Some(Default::default()));
        assert_eq!(e, [ValidationError::AutoscalingWithoutCpuRequest]);
        let mut s = spec(ONE_OFF);
        s.autoscaling = Some(Default::default());
        s.socket.resources = Some(
            serde_json::from_value(serde_json::json!({ "requests": { "cpu": "500m" } })).unwrap(),
        );
        assert!(validate(&s).is_ok());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = errors(|s| {
            s.expected_attendance = 0;
            s.warmup = "soon".into();
            s.socket.min_replicas = 500;
            s.socket.max_replicas = 5;
        });
        assert_eq!(e.len(), 3, "{}", describe(&e));
    }
}
