//! Command-line flags, the validated [`Config`] a run uses, and who the members of the run are.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Map, Value};

use crate::LoadError;
use crate::token::{Claims, parse_extra_claims, read_tokens_file};

/// Flags of a load run. Every flag has an environment fallback `LIVECLASS_LOAD_<NAME>`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// WebSocket endpoint(s), `ws://host:port/ws` or `wss://host/ws`; repeat or separate with
    /// commas to spread the members over several servers directly (member i uses url i mod n).
    /// Host names are resolved again for every connection.
    #[arg(
        long,
        env = "LIVECLASS_LOAD_URL",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub url: Vec<String>,

    /// PEM file of the CA certificate(s) to trust for wss:// (default: the platform's roots).
    #[arg(long, env = "LIVECLASS_LOAD_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Students in the whole run (over all classes and, with --split, over all parts).
    #[arg(long, env = "LIVECLASS_LOAD_STUDENTS", default_value_t = 300)]
    pub students: u32,

    /// Classes the students are spread over (student i joins class i mod classes).
    #[arg(long, env = "LIVECLASS_LOAD_CLASSES", default_value_t = 1)]
    pub classes: u32,

    /// The class ids to use, e.g. `school/physics-101` (sets --classes); default `<run-id>-c<i>`.
    #[arg(
        long = "class-id",
        env = "LIVECLASS_LOAD_CLASS_ID",
        value_delimiter = ','
    )]
    pub class_ids: Vec<String>,

    /// Teachers per class (they listen; they do not comment).
    #[arg(long, env = "LIVECLASS_LOAD_TEACHERS", default_value_t = 1)]
    pub teachers: u32,

    /// Put in front of every generated user id (students are `<prefix>s<i>`, teachers
    /// `<prefix>t<class>.<j>`), so a run against a real deployment cannot collide with real users.
    #[arg(long, env = "LIVECLASS_LOAD_USER_PREFIX", default_value = "")]
    pub user_prefix: String,

    /// New connections per second while connecting (whole run, shared by all parts).
    #[arg(
        long,
        env = "LIVECLASS_LOAD_RAMP",
        default_value_t = 2000.0,
        conflicts_with = "arrive_within"
    )]
    pub ramp: f64,

    /// Instead of a constant --ramp: every member arrives within this long (e.g. `10s`), spread
    /// as --arrival-shape says.
    #[arg(long, env = "LIVECLASS_LOAD_ARRIVE_WITHIN", value_parser = parse_duration)]
    pub arrive_within: Option<Duration>,

    /// How arrivals spread over --arrive-within: `random` (each member at a uniformly random
    /// instant, as a crowd does) or `even` (evenly spaced).
    #[arg(long, env = "LIVECLASS_LOAD_ARRIVAL_SHAPE", value_enum, default_value_t = Shape::Random, requires = "arrive_within")]
    pub arrival_shape: Shape,

    /// Comments per second per class (whole run), each from a random connected student.
    #[arg(long, env = "LIVECLASS_LOAD_COMMENT_RATE", default_value_t = 2.0)]
    pub comment_rate: f64,

    /// How long comments are sent, e.g. `60s`, `2m`, `1500ms`.
    #[arg(long, env = "LIVECLASS_LOAD_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Start sending as soon as the first student is connected, while the others are still
    /// arriving (a class that starts on the bell), instead of once everyone is connected.
    #[arg(
        long,
        env = "LIVECLASS_LOAD_SEND_FROM_START",
        conflicts_with = "start_at"
    )]
    pub send_from_start: bool,

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

    /// Extra claims for every minted token, as a JSON object, e.g.
    /// '{"aud":"liveclass","iss":"https://school.example"}'.
    #[arg(long, env = "LIVECLASS_LOAD_TOKEN_CLAIMS")]
    pub token_claims: Option<String>,

    /// Lifetime of minted tokens (exp - iat); default: the run's length plus 10 minutes.
    #[arg(long, env = "LIVECLASS_LOAD_TOKEN_LIFETIME", value_parser = parse_duration)]
    pub token_lifetime: Option<Duration>,

    /// Use these tokens instead of minting: one JWT a line, one member each (who and which class
    /// is read from each token's claims); replaces --students, --classes, --class-id, --teachers
    /// and the secret.
    #[arg(long, env = "LIVECLASS_LOAD_TOKENS_FILE", conflicts_with_all = ["secret", "secret_file", "class_ids", "token_claims"])]
    pub tokens_file: Option<PathBuf>,

    /// Also write the final report as JSON to this file.
    #[arg(long, env = "LIVECLASS_LOAD_JSON")]
    pub json: Option<PathBuf>,

    /// Also write the raw latency and connection histograms to this file, as an HdrHistogram
    /// interval log (one tagged histogram each), so percentiles can be recomputed.
    #[arg(long, env = "LIVECLASS_LOAD_HDR_LOG")]
    pub hdr_log: Option<PathBuf>,

    /// Exit 0 even when the run was not clean (something lost, refused, skipped, too slow...).
    #[arg(long, env = "LIVECLASS_LOAD_ALLOW_LOSS")]
    pub allow_loss: bool,

    /// Refusal codes this scenario asks for (e.g. `rate_limited`): a comment the server refused
    /// with one of them is void, not lost; any other refusal fails the run.
    #[arg(
        long = "expect-refusal",
        env = "LIVECLASS_LOAD_EXPECT_REFUSAL",
        value_delimiter = ','
    )]
    pub expect_refusal: Vec<String>,

    /// Fail the run when more connection attempts than this failed (retried or not).
    #[arg(long, env = "LIVECLASS_LOAD_MAX_FAILED_ATTEMPTS")]
    pub max_failed_attempts: Option<u64>,

    /// Spread source addresses over 127.0.0.1..=127.0.0.N (binding before connect) so tens of
    /// thousands of loopback connections do not run out of ephemeral ports; 1 lets the kernel
    /// choose.
    #[arg(long, env = "LIVECLASS_LOAD_SOURCE_IPS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254), conflicts_with = "source_addrs")]
    pub source_ips: u8,

    /// Bind connections to these local addresses in turn (this machine's own, e.g. several
    /// addresses of one interface) instead of --source-ips.
    #[arg(long, env = "LIVECLASS_LOAD_SOURCE_ADDRS", value_delimiter = ',')]
    pub source_addrs: Vec<IpAddr>,

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
    /// has connected everyone; gives the parts of a split run one schedule. Members not
    /// connected by then fail the run.
    #[arg(long, env = "LIVECLASS_LOAD_START_AT")]
    pub start_at: Option<u64>,

    /// After the last comment, wait at most this long for deliveries and reconnects to settle.
    #[arg(long, env = "LIVECLASS_LOAD_DRAIN", default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Time allowed for one connection attempt (TCP connect, TLS, upgrade and `hello`).
    #[arg(long, env = "LIVECLASS_LOAD_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Failed attempts in a row after which a member gives up (first connect or reconnect).
    #[arg(long, env = "LIVECLASS_LOAD_MAX_RETRIES", default_value_t = 10)]
    pub max_retries: u32,

    /// Also fail when the p99 delivery latency (from the intended send time) is over this,
    /// e.g. `250ms`.
    #[arg(long, env = "LIVECLASS_LOAD_MAX_P99", value_parser = parse_duration)]
    pub max_p99: Option<Duration>,

    /// No progress bars or progress lines on stderr.
    #[arg(long, env = "LIVECLASS_LOAD_NO_PROGRESS")]
    pub no_progress: bool,
}

/// How arrivals spread over `--arrive-within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Even,
    Random,
}

/// When members arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrival {
    /// A constant number of new connections a second (over the whole run).
    Ramp(f64),
    /// Everyone within this window.
    Within(Duration, Shape),
}

impl Arrival {
    /// Offsets from the start of connecting of `n` members of one part of `split`, sorted.
    pub fn offsets(&self, n: usize, split: u32) -> Vec<Duration> {
        let mut out: Vec<Duration> = match *self {
            Arrival::Ramp(rate) => {
                let local = rate / f64::from(split.max(1));
                (0..n)
                    .map(|i| Duration::from_secs_f64(i as f64 / local))
                    .collect()
            }
            Arrival::Within(window, Shape::Even) => (0..n)
                .map(|i| window.mul_f64(i as f64 / n.max(1) as f64))
                .collect(),
            Arrival::Within(window, Shape::Random) => {
                (0..n).map(|_| window.mul_f64(fastrand::f64())).collect()
            }
        };
        out.sort_unstable();
        out
    }

    /// How long connecting should take, by the plan.
    pub fn planned(&self, n: usize, split: u32) -> Duration {
        match *self {
            Arrival::Ramp(rate) => {
                Duration::from_secs_f64(n as f64 / (rate / f64::from(split.max(1))))
            }
            Arrival::Within(window, _) => window,
        }
    }
}

/// Everything a run needs, validated. Tests build it directly; the binary builds it from flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub urls: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub students: u32,
    pub classes: u32,
    /// Explicit class ids (empty: `<run-id>-c<i>`).
    pub class_ids: Vec<String>,
    pub teachers: u32,
    pub user_prefix: String,
    pub arrival: Arrival,
    pub comment_rate: f64,
    pub duration: Duration,
    pub send_from_start: bool,
    pub secret: Vec<u8>,
    pub token_claims: Map<String, Value>,
    pub token_lifetime: Option<Duration>,
    /// `--tokens-file`: the members' tokens and what they say.
    pub tokens: Option<Arc<Vec<(String, Claims)>>>,
    pub expect_refusal: Vec<String>,
    pub max_failed_attempts: Option<u64>,
    pub run_id: String,
    pub source_ips: u8,
    pub source_addrs: Vec<IpAddr>,
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
            ca_file: None,
            students: 300,
            classes: 1,
            class_ids: Vec::new(),
            teachers: 1,
            user_prefix: String::new(),
            arrival: Arrival::Ramp(2000.0),
            comment_rate: 2.0,
            duration: Duration::from_secs(30),
            send_from_start: false,
            secret: secret.into(),
            token_claims: Map::new(),
            token_lifetime: None,
            tokens: None,
            expect_refusal: Vec::new(),
            max_failed_attempts: None,
            run_id: random_run_id(),
            source_ips: 1,
            source_addrs: Vec::new(),
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
        if !self.class_ids.is_empty() && self.class_ids.len() != self.classes as usize {
            return bad(format!(
                "{} --class-id given for {} classes",
                self.class_ids.len(),
                self.classes
            ));
        }
        if let Some(id) = self.class_ids.iter().find(|id| !valid_class_id(id)) {
            return bad(format!(
                "--class-id {id:?} is not a class id: <namespace>/<name> or a plain id, each part 1-128 characters of A-Z a-z 0-9 _ . : @ -"
            ));
        }
        if self.total_members() == 0 {
            return bad("nobody to connect: --students and --teachers are both 0".into());
        }
        if self.split == 0 || self.part >= self.split {
            return bad(format!(
                "--part {} is not in 0..{} (--split)",
                self.part, self.split
            ));
        }
        match self.arrival {
            Arrival::Ramp(rate) if !(rate.is_finite() && rate > 0.0) => {
                return bad("--ramp must be a positive number of connections per second".into());
            }
            Arrival::Within(window, _) if window.is_zero() => {
                return bad("--arrive-within must be longer than 0".into());
            }
            _ => {}
        }
        if !(self.comment_rate.is_finite() && self.comment_rate >= 0.0) {
            return bad("--comment-rate must be zero or a positive number".into());
        }
        if self.tokens.is_none() && self.secret.is_empty() {
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
        if !self.user_prefix.is_empty() && !valid_user_id(&self.user_prefix) {
            return bad(format!(
                "--user-prefix {:?} must be characters of A-Z a-z 0-9 _ . : @ -",
                self.user_prefix
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
        (per_part.ceil() as u32).saturating_add(1)
    }

    /// The members this process holds, in connection order.
    pub fn local_members(&self) -> Vec<MemberSpec> {
        if let Some(tokens) = &self.tokens {
            return tokens
                .iter()
                .enumerate()
                .filter(|(i, _)| *i as u32 % self.split == self.part)
                .map(|(i, (token, claims))| MemberSpec {
                    user: claims.sub.clone(),
                    class: self
                        .class_ids
                        .iter()
                        .position(|c| *c == claims.class)
                        .unwrap_or(0) as u32,
                    role: claims.role,
                    index: i as u32,
                    token: Some(token.clone()),
                })
                .collect();
        }
        let prefix = &self.user_prefix;
        let mut out = Vec::new();
        for s in 0..self.students {
            let class = s % self.classes;
            if (s / self.classes) % self.split == self.part {
                out.push(MemberSpec {
                    user: format!("{prefix}s{s}"),
                    class,
                    role: Role::Student,
                    index: s,
                    token: None,
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
                        user: format!("{prefix}t{class}.{j}"),
                        class,
                        role: Role::Teacher,
                        index,
                        token: None,
                    });
                }
            }
        }
        out
    }

    /// Members of the whole run (all parts).
    pub fn total_members(&self) -> u64 {
        match &self.tokens {
            Some(tokens) => tokens.len() as u64,
            None => u64::from(self.students) + u64::from(self.classes) * u64::from(self.teachers),
        }
    }

    /// The id of class `i` of this run.
    pub fn class_id(&self, class: u32) -> String {
        match self.class_ids.get(class as usize) {
            Some(id) => id.clone(),
            None => format!("{}-c{class}", self.run_id),
        }
    }

    /// Whether the scenario asked for refusals with this code.
    pub fn refusal_expected(&self, code: &str) -> bool {
        self.expect_refusal.iter().any(|c| c == code)
    }
}

pub use liveclass_protocol::{Role, valid_class_id, valid_user_id};

/// One member: a user in a class.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub user: String,
    pub class: u32,
    pub role: Role,
    /// Index over the whole run; picks the url and the source address.
    pub index: u32,
    /// From `--tokens-file`; otherwise minted.
    pub token: Option<String>,
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
    /// Validates the flags into a [`Config`]; reads the secret and tokens files.
    pub fn into_config(self) -> Result<Config, LoadError> {
        let file_error = |path: &PathBuf, message: String| LoadError::File {
            path: path.display().to_string(),
            message,
        };
        let tokens = match &self.tokens_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| file_error(path, format!("cannot read --tokens-file: {e}")))?;
                Some(Arc::new(
                    read_tokens_file(&text).map_err(|e| file_error(path, e))?,
                ))
            }
            None => None,
        };
        let secret = match (&self.secret, &self.secret_file, &tokens) {
            (_, _, Some(_)) => Vec::new(),
            (Some(secret), _, _) => secret.clone().into_bytes(),
            (None, Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| file_error(path, format!("cannot read --secret-file: {e}")))?;
                text.trim_end_matches(['\r', '\n']).as_bytes().to_vec()
            }
            (None, None, None) => {
                return Err(LoadError::Config(
                    "give --secret, --secret-file or --tokens-file".into(),
                ));
            }
        };
        let token_claims = match &self.token_claims {
            Some(text) => parse_extra_claims(text)?,
            None => Map::new(),
        };
        let urls: Vec<String> = self
            .url
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        let (mut students, mut classes, mut teachers, mut class_ids) = (
            self.students,
            self.classes,
            self.teachers,
            self.class_ids.clone(),
        );
        if !class_ids.is_empty() {
            classes = class_ids.len() as u32;
        }
        if let Some(tokens) = &tokens {
            class_ids.clear();
            for (_, claims) in tokens.iter() {
                if !class_ids.contains(&claims.class) {
                    class_ids.push(claims.class.clone());
                }
            }
            classes = class_ids.len() as u32;
            students = tokens
                .iter()
                .filter(|(_, c)| c.role == Role::Student)
                .count() as u32;
            teachers = 0;
        }
        let arrival = match self.arrive_within {
            Some(window) => Arrival::Within(window, self.arrival_shape),
            None => Arrival::Ramp(self.ramp),
        };
        let config = Config {
            urls,
            ca_file: self.ca_file,
            students,
            classes,
            class_ids,
            teachers,
            user_prefix: self.user_prefix,
            arrival,
            comment_rate: self.comment_rate,
            duration: self.duration,
            send_from_start: self.send_from_start,
            secret,
            token_claims,
            token_lifetime: self.token_lifetime,
            tokens,
            expect_refusal: self.expect_refusal,
            max_failed_attempts: self.max_failed_attempts,
            run_id: self.run_id.unwrap_or_else(random_run_id),
            source_ips: self.source_ips,
            source_addrs: self.source_addrs,
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

    #[test]
    fn arrivals_fit_their_window() {
        let within = Arrival::Within(Duration::from_secs(10), Shape::Random);
        let offsets = within.offsets(8000, 1);
        assert_eq!(offsets.len(), 8000);
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
        assert!(offsets.iter().all(|o| *o < Duration::from_secs(10)));
        // A uniform crowd: about a tenth in each second.
        let first_second = offsets
            .iter()
            .filter(|o| **o < Duration::from_secs(1))
            .count();
        assert!((600..1000).contains(&first_second), "{first_second}");
        let even = Arrival::Within(Duration::from_secs(4), Shape::Even).offsets(4, 1);
        assert_eq!(even[1], Duration::from_secs(1));
        let ramp = Arrival::Ramp(100.0).offsets(3, 2);
        assert_eq!(ramp[2], Duration::from_millis(40));
        assert_eq!(Arrival::Ramp(100.0).planned(100, 2), Duration::from_secs(2));
    }

    #[test]
    fn class_ids_may_be_namespaced_and_are_checked() {
        let mut config = Config::new(vec!["ws://127.0.0.1:1/ws".into()], "k");
        config.class_ids = vec!["school/physics-101".into()];
        config.validate().unwrap();
        assert_eq!(config.class_id(0), "school/physics-101");
        config.class_ids = vec!["school/a/b".into()];
        assert!(config.validate().is_err());
        config.class_ids = vec!["a".into(), "b".into()];
        assert!(config.validate().is_err(), "two ids for one class");
    }
}
