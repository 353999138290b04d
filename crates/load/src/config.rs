//! Command-line flags, the validated [`Config`] a run uses, and who the members of the run are.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::LoadError;

/// Flags of a load run. Every flag has an environment fallback `LIVECLASS_LOAD_<NAME>`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// WebSocket endpoint(s), `ws://host:port/ws`; repeat or separate with commas to spread the
    /// members over several servers directly (member i uses url i mod n).
    #[arg(
        long,
        env = "LIVECLASS_LOAD_URL",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub url: Vec<String>,

    /// Students in the whole run (over all classes and, with --split, over all parts).
    #[arg(long, env = "LIVECLASS_LOAD_STUDENTS", default_value_t = 300)]
    pub students: u32,

    /// Classes the students are spread over (student i joins class i mod classes).
    #[arg(long, env = "LIVECLASS_LOAD_CLASSES", default_value_t = 1)]
    pub classes: u32,

    /// Teachers per class (they listen; they do not comment).
    #[arg(long, env = "LIVECLASS_LOAD_TEACHERS", default_value_t = 1)]
    pub teachers: u32,

    /// New connections per second while connecting (whole run, shared by all parts).
    #[arg(long, env = "LIVECLASS_LOAD_RAMP", default_value_t = 2000.0)]
    pub ramp: f64,

    /// Comments per second per class (whole run), each from a random connected student.
    #[arg(long, env = "LIVECLASS_LOAD_COMMENT_RATE", default_value_t = 2.0)]
    pub comment_rate: f64,

    /// How long comments are sent once everyone is connected, e.g. `60s`, `2m`, `1500ms`.
    #[arg(long, env = "LIVECLASS_LOAD_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// HS256 secret shared with the socket servers, used to mint the members' tokens.
    #[arg(
        long,
        env = "LIVECLASS_LOAD_SECRET",
        hide_env_values = true,
        conflicts_with = "secret_file"
    )]
    pub secret: Option<String>,

    /// File holding the HS256 secret (trailing newline ignored), as a Kubernetes Secret mounts it.
    #[arg(long, env = "LIVECLASS_LOAD_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,

    /// Also write the final report as JSON to this file.
    #[arg(long, env = "LIVECLASS_LOAD_JSON")]
    pub json: Option<PathBuf>,

    /// Exit 0 even when deliveries were lost, duplicated or out of order.
    #[arg(long, env = "LIVECLASS_LOAD_ALLOW_LOSS")]
    pub allow_loss: bool,

    /// Spread source addresses over 127.0.0.1..=127.0.0.N (binding before connect) so tens of
    /// thousands of connections do not run out of ephemeral ports; 1 lets the kernel choose.
    #[arg(long, env = "LIVECLASS_LOAD_SOURCE_IPS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_ips: u8,

    /// Split the members over K load-generator processes (a process holds at most ~20,000
    /// sockets); run each with its own --part and merge their --json reports with `merge`.
    #[arg(long, env = "LIVECLASS_LOAD_SPLIT", default_value_t = 1)]
    pub split: u32,

    /// Which part of a split run this process is, 0..K.
    #[arg(long, env = "LIVECLASS_LOAD_PART", default_value_t = 0)]
    pub part: u32,

    /// Names the run's classes and tags its comments; all parts of a split run need the same one
    /// (default: random).
    #[arg(long, env = "LIVECLASS_LOAD_RUN_ID")]
    pub run_id: Option<String>,

    /// Start sending comments at this instant (Unix milliseconds) rather than when this process
    /// has connected everyone; gives the parts of a split run one schedule.
    #[arg(long, env = "LIVECLASS_LOAD_START_AT")]
    pub start_at: Option<u64>,

    /// After the last comment, wait at most this long for deliveries and reconnects to settle.
    #[arg(long, env = "LIVECLASS_LOAD_DRAIN", default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Time allowed for one connection attempt (TCP connect, upgrade and `hello`).
    #[arg(long, env = "LIVECLASS_LOAD_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Failed attempts in a row after which a member gives up (first connect or reconnect).
    #[arg(long, env = "LIVECLASS_LOAD_MAX_RETRIES", default_value_t = 10)]
    pub max_retries: u32,

    /// Also fail (exit 1) when the p99 delivery latency is over this, e.g. `250ms`.
    #[arg(long, env = "LIVECLASS_LOAD_MAX_P99", value_parser = parse_duration)]
    pub max_p99: Option<Duration>,

    /// No progress bars or progress lines on stderr.
    #[arg(long, env = "LIVECLASS_LOAD_NO_PROGRESS")]
    pub no_progress: bool,
}

/// Everything a run needs, validated. Tests build it directly; the binary builds it from flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub urls: Vec<String>,
    pub students: u32,
    pub classes: u32,
    pub teachers: u32,
    pub ramp: f64,
    pub comment_rate: f64,
    pub duration: Duration,
    pub secret: Vec<u8>,
    pub run_id: String,
    pub source_ips: u8,
    pub split: u32,
    pub part: u32,
    pub start_at_ms: Option<u64>,
    pub drain: Duration,
    pub connect_timeout: Duration,
    pub max_retries: u32,
    pub max_p99: Option<Duration>,
    pub progress: bool,
}

impl Config {
    /// A config with the defaults of the flags for `urls` and `secret`.
    pub fn new(urls: Vec<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            urls,
            students: 300,
            classes: 1,
            teachers: 1,
            ramp: 2000.0,
            comment_rate: 2.0,
            duration: Duration::from_secs(30),
            secret: secret.into(),
            run_id: random_run_id(),
            source_ips: 1,
            split: 1,
            part: 0,
            start_at_ms: None,
            drain: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_retries: 10,
            max_p99: None,
            progress: false,
        }
    }

    /// Checks the values that flags cannot check on their own.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::Config(m));
        if self.urls.is_empty() {
            return bad("give at least one --url".into());
        }
        if self.classes == 0 {
            return bad("--classes must be at least 1".into());
        }
        if self.students == 0 && self.teachers == 0 {
            return bad("nobody to connect: --students and --teachers are both 0".into());
        }
        if self.split == 0 || self.part >= self.split {
            return bad(format!(
                "--part {} is not in 0..{} (--split)",
                self.part, self.split
            ));
        }
        if !(self.ramp.is_finite() && self.ramp > 0.0) {
            return bad("--ramp must be a positive number of connections per second".into());
        }
        if !(self.comment_rate.is_finite() && self.comment_rate >= 0.0) {
            return bad("--comment-rate must be zero or a positive number".into());
        }
        if self.secret.is_empty() {
            return bad("the token secret is empty: give --secret or --secret-file".into());
        }
        if self.run_id.is_empty()
            || self.run_id.len() > 16
            || !self
                .run_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad(format!(
                "--run-id {:?} must be 1-16 characters of A-Z a-z 0-9 - _",
                self.run_id
            ));
        }
        if self.students > 0 && self.comment_rate > 0.0 && self.comments_cap() > 10_000_000 {
            return bad("--comment-rate x --duration is over 10 million comments per class".into());
        }
        Ok(())
    }

    /// Comment slots per class per part: this part sends `comment_rate / split` a second.
    pub fn comments_cap(&self) -> u32 {
        let per_part = self.comment_rate / f64::from(self.split) * self.duration.as_secs_f64();
        // Bounded by validate(); the float-to-int cast saturates.
        (per_part.ceil() as u32).saturating_add(4)
    }

    /// The members this process holds, in connection order.
    pub fn local_members(&self) -> Vec<MemberSpec> {
        let mut out = Vec::new();
        for s in 0..self.students {
            let class = s % self.classes;
            if (s / self.classes) % self.split == self.part {
                out.push(MemberSpec {
                    user: format!("s{s}"),
                    class,
                    role: Role::Student,
                    index: s,
                });
            }
        }
        for class in 0..self.classes {
            for j in 0..self.teachers {
                if (class + j) % self.split == self.part {
                    let index = self
                        .students
                        .saturating_add(class.saturating_mul(self.teachers))
                        .saturating_add(j);
                    out.push(MemberSpec {
                        user: format!("t{class}.{j}"),
                        class,
                        role: Role::Teacher,
                        index,
                    });
                }
            }
        }
        out
    }

    /// Members of the whole run (all parts).
    pub fn total_members(&self) -> u64 {
        u64::from(self.students) + u64::from(self.classes) * u64::from(self.teachers)
    }

    /// The id of class `i` of this run.
    pub fn class_id(&self, class: u32) -> String {
        format!("{}-c{class}", self.run_id)
    }
}

/// A student or a teacher of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Student,
    Teacher,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Student => "student",
            Role::Teacher => "teacher",
        }
    }
}

/// One member: a user in a class.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub user: String,
    pub class: u32,
    pub role: Role,
    /// Index over the whole run; picks the url and the source address.
    pub index: u32,
}

/// A random run id: 8 characters of a-z0-9.
pub fn random_run_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

/// Parses `250ms`, `10s`, `2m`, `1h` or a plain number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

impl RunArgs {
    /// Validates the flags into a [`Config`]; reads the secret file.
    pub fn into_config(self) -> Result<Config, LoadError> {
        let secret = match (&self.secret, &self.secret_file) {
            (Some(secret), _) => secret.clone().into_bytes(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    LoadError::Config(format!("cannot read --secret-file {}: {e}", path.display()))
                })?;
                text.trim_end_matches(['\r', '\n']).as_bytes().to_vec()
            }
            (None, None) => return Err(LoadError::Config("give --secret or --secret-file".into())),
        };
        let urls: Vec<String> = self
            .url
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        let config = Config {
            urls,
            students: self.students,
            classes: self.classes,
            teachers: self.teachers,
            ramp: self.ramp,
            comment_rate: self.comment_rate,
            duration: self.duration,
            secret,
            run_id: self.run_id.unwrap_or_else(random_run_id),
            source_ips: self.source_ips,
            split: self.split,
            part: self.part,
            start_at_ms: self.start_at,
            drain: self.drain,
            connect_timeout: self.connect_timeout,
            max_retries: self.max_retries,
            max_p99: self.max_p99,
            progress: !self.no_progress,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn parts_cover_every_member_once_and_every_class() {
        let mut config = Config::new(vec!["ws://127.0.0.1:1/ws".into()], "k");
        config.students = 1001;
        config.classes = 3;
        config.teachers = 2;
        config.split = 3;
        let mut all = Vec::new();
        for part in 0..3 {
            config.part = part;
            let members = config.local_members();
            for class in 0..3 {
                assert!(
                    members
                        .iter()
                        .any(|m| m.class == class && m.role == Role::Student)
                );
            }
            all.extend(members.into_iter().map(|m| (m.user, m.class)));
        }
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!(before, all.len());
        assert_eq!(all.len() as u64, config.total_members());
    }
}
