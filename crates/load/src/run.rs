//! Runs one load-generator process: connect the members on the arrival plan, send comments on a
//! schedule that never waits for the system under test, let deliveries and reconnects settle,
//! stop everyone, report.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::LoadError;
use crate::clock::{mono_us, unix_ms};
use crate::config::{Config, Role};
use crate::conn::{Command, MemberCtx, member};
use crate::ledger::{Ledger, account};
use crate::progress::Progress;
use crate::report::{Report, RunFacts};
use crate::sampler::{CpuTicks, sample};
use crate::state::{Shared, slot};
use crate::token::{Claims, Minter};

/// How often the controller looks at the counters.
const TICK: Duration = Duration::from_millis(100);
/// Extra time, past the arrival plan, that connecting may take before the run goes on without
/// the rest.
const CONNECT_GRACE: Duration = Duration::from_secs(60);
/// File descriptors kept free for everything that is not a member's socket.
const FD_RESERVE: u64 = 64;
/// Queued comments per member (a member is handed one only when it can send).
const COMMAND_QUEUE: usize = 8;

/// A load run, ready to start.
#[derive(Debug)]
pub struct LoadTest {
    shared: Arc<Shared>,
}

/// Live figures of a running [`LoadTest`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveStats {
    shared: Arc<Shared>,
}

/// A moment's view of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Members that got `hello` at least once.
    pub connected: u64,
    /// Connections open right now.
    pub live: u64,
    pub comments_sent: u64,
    /// Comment frames received (duplicates included).
    pub received: u64,
    pub reconnects: u64,
    pub never_connected: u64,
    pub gave_up: u64,
    /// Members that have received a message id, so a reconnect can pass `since`.
    pub with_since: u64,
    /// Members that lost their connection and have not caught up yet.
    pub recovering: u64,
}

impl LiveStats {
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.shared.counters;
        Snapshot {
            connected: c.first_connected.load(Relaxed),
            live: c.live.load(Relaxed),
            comments_sent: c.comments_sent.load(Relaxed),
            received: c.received.load(Relaxed),
            reconnects: c.reconnects.load(Relaxed),
            never_connected: c.never_connected.load(Relaxed),
            gave_up: c.gave_up.load(Relaxed),
            with_since: c.with_since.load(Relaxed),
            recovering: c.recovering.load(Relaxed),
        }
    }

    /// Ends the run early (as Ctrl-C does): stop sending, skip settling, close, report.
    pub fn interrupt(&self) {
        self.shared.interrupted.store(true, Relaxed);
    }
}

/// Raises the soft limit on open files to the hard limit and checks that `sockets` fit.
pub fn ensure_fd_budget(sockets: u64) -> Result<u64, LoadError> {
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| LoadError::Config(format!("cannot read or raise the open-file limit: {e}")))?;
    let need = sockets + FD_RESERVE;
    if need > limit {
        return Err(LoadError::FdLimit {
            members: sockets,
            need,
            limit,
        });
    }
    Ok(limit)
}

/// Wall time of each step of a run, in order.
#[derive(Debug, Default)]
struct Steps {
    done: Vec<(&'static str, f64)>,
    current: Option<(&'static str, Instant)>,
}

impl Steps {
    fn begin(&mut self, name: &'static str) {
        self.end();
        self.current = Some((name, Instant::now()));
    }

    fn end(&mut self) {
        if let Some((name, at)) = self.current.take() {
            self.done
                .push((name, (at.elapsed().as_secs_f64() * 1000.0).round() / 1000.0));
        }
    }

    fn into_map(mut self) -> BTreeMap<String, f64> {
        self.end();
        self.done
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}

impl LoadTest {
    pub fn new(config: Config) -> Result<Self, LoadError> {
        config.validate()?;
        Ok(Self {
            shared: Arc::new(Shared::new(config)?),
        })
    }

    pub fn stats(&self) -> LiveStats {
        LiveStats {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs to the end and returns the report of this process.
    pub async fn run(self) -> Result<Report, LoadError> {
        let shared = self.shared;
        let config = &shared.config;
        let mut steps = Steps::default();
        steps.begin("prepare");
        let members = config.local_members();
        let n = members.len() as u64;
        ensure_fd_budget(n)?;

        // Tokens, command channels and per-class slots, all before the first connection.
        let planned_connect = config.arrival.planned(members.len(), config.split);
        let start_wait = config.start_at_ms.map_or(Duration::ZERO, |at| {
            Duration::from_millis(at.saturating_sub(unix_ms()))
        });
        let lifetime = config.token_lifetime.unwrap_or(
            planned_connect
                + start_wait
                + config.duration
                + config.drain
                + Duration::from_secs(600),
        );
        let iat = unix_ms() / 1000;
        let exp = iat + lifetime.as_secs().max(1);
        let minter = Minter::new(&config.secret, config.token_claims.clone());
        let mut next_slot = vec![0usize; config.classes as usize];
        let mut senders: Vec<Vec<(usize, mpsc::Sender<Command>)>> =
            vec![Vec::new(); config.classes as usize];
        let offsets = config.arrival.offsets(members.len(), config.split);
        let started = Instant::now();
        let started_mono = mono_us();
        let started_unix_ms = unix_ms();
        let mut planned = Vec::with_capacity(members.len());
        for (m, offset) in members.iter().zip(offsets) {
            let class = m.class as usize;
            let Some(slot_counter) = next_slot.get_mut(class) else {
                continue;
            };
            let slot = *slot_counter;
            *slot_counter += 1;
            let token = match &m.token {
                Some(token) => token.clone(),
                None => minter.mint(&Claims {
                    sub: m.user.clone(),
                    class: config.class_id(m.class),
                    role: m.role,
                    exp,
                    iat: Some(iat),
                    name: Some(match m.role {
                        Role::Student => format!("Student {}", m.index),
                        Role::Teacher => format!("Teacher {}", m.user),
                    }),
                    aud: None,
                    iss: None,
                })?,
            };
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            if m.role == Role::Student
                && let Some(list) = senders.get_mut(class)
            {
                list.push((slot, tx));
            }
            let source = if !config.source_addrs.is_empty() {
                config
                    .source_addrs
                    .get(m.index as usize % config.source_addrs.len())
                    .copied()
            } else {
                (config.source_ips > 1).then(|| {
                    IpAddr::V4(Ipv4Addr::new(
                        127,
                        0,
                        0,
                        1 + (m.index % u32::from(config.source_ips)) as u8,
                    ))
                })
            };
            let ctx = MemberCtx {
                shared: Arc::clone(&shared),
                class,
                slot,
                endpoint: m.index as usize % shared.endpoints.len().max(1),
                source,
                token,
                user: m.user.clone(),
                student: m.role == Role::Student,
                arrive_us: started_mono + offset.as_micros() as u64,
            };
            planned.push((offset, ctx, rx));
        }

        let (stop_tx, stop_rx) = watch::channel(false);
        let sampler = tokio::spawn(sample(Arc::clone(&shared), stop_rx.clone()));
        let mut progress = Progress::new(config.progress);

        // Connect on the arrival plan.
        steps.begin("connecting");
        let spawner = {
            let stop_rx = stop_rx.clone();
            tokio::spawn(async move {
                let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(planned.len());
                for (offset, ctx, rx) in planned {
                    let at = started + offset;
                    if at > Instant::now() {
                        sleep_until(at).await;
                    }
                    if *stop_rx.borrow() {
                        break;
                    }
                    handles.push(tokio::spawn(member(ctx, rx, stop_rx.clone())));
                }
                handles
            })
        };

        let c = &shared.counters;
        let interrupted = || shared.interrupted.load(Relaxed);
        let connect_deadline = started + planned_connect + CONNECT_GRACE;
        let connecting_done =
            || c.first_connected.load(Relaxed) + c.never_connected.load(Relaxed) >= n;
        progress.stage("connecting", n, "members");
        if config.send_from_start {
            // The class starts on the bell: sending begins with the first student able to send.
            let _ = timeout(
                connect_deadline.saturating_duration_since(Instant::now()),
                shared.first_ready.notified(),
            )
            .await;
        } else {
            while !connecting_done() && Instant::now() < connect_deadline && !interrupted() {
                progress.update(c.first_connected.load(Relaxed), || {
                    format!(
                        "open {} · failed attempts {} · {}",
                        c.live.load(Relaxed),
                        c.failed_attempts.load(Relaxed),
                        short_tally(&shared.failures.snapshot())
                    )
                });
                sleep(TICK).await;
            }
            // One schedule for all parts of a split run, when given.
            if let Some(at_ms) = config.start_at_ms {
                steps.begin("waiting");
                let wait = Duration::from_millis(at_ms.saturating_sub(unix_ms()))
                    .min(Duration::from_secs(3600));
                progress.stage("waiting", wait.as_secs(), "s");
                let until = Instant::now() + wait;
                while Instant::now() < until && !interrupted() {
                    progress.update(
                        wait.as_secs()
                            .saturating_sub((until - Instant::now()).as_secs()),
                        || format!("for the common start · open {}", c.live.load(Relaxed)),
                    );
                    sleep(TICK.min(until - Instant::now())).await;
                }
            }
        }

        // Send comments: each at its intended instant, whoever is late.
        steps.begin("sending");
        let (send_start, send_start_mono) = (Instant::now(), mono_us());
        shared.window_start_us.store(send_start_mono, Relaxed);
        c.connected_at_start
            .store(c.first_connected.load(Relaxed), Relaxed);
        let cpu_at_start = CpuTicks::now();
        let run_until = send_start + config.duration;
        let local_comment_rate = config.comment_rate / f64::from(config.split);
        let count =
            ((config.duration.as_secs_f64() * local_comment_rate).ceil() as u32).min(shared.cap);
        let schedulers: Vec<JoinHandle<()>> = senders
            .iter()
            .enumerate()
            .filter(|(_, list)| !list.is_empty() && local_comment_rate > 0.0 && !interrupted())
            .map(|(class, list)| {
                tokio::spawn(schedule(
                    Arc::clone(&shared),
                    class,
                    list.clone(),
                    local_comment_rate,
                    (send_start, send_start_mono),
                    count,
                ))
            })
            .collect();
        progress.stage("running", config.duration.as_secs().max(1), "s");
        let mut rate = RateMeter::new(c.received.load(Relaxed));
        while Instant::now() < run_until && !interrupted() {
            let per_s = rate.tick(c.received.load(Relaxed));
            progress.update(send_start.elapsed().as_secs(), || {
                format!(
                    "connected {} · open {} · sent {} · delivered {} ({per_s:.0}/s) · reconnects {}",
                    c.first_connected.load(Relaxed),
                    c.live.load(Relaxed),
                    c.comments_sent.load(Relaxed),
                    c.received.load(Relaxed),
                    c.reconnects.load(Relaxed)
                )
            });
            sleep(TICK.min(run_until.saturating_duration_since(Instant::now()))).await;
        }
        for s in schedulers {
            if interrupted() {
                s.abort();
            }
            let _ = s.await;
        }
        let window_end = mono_us();
        shared.window_end_us.store(window_end, Relaxed);
        let cpu_in_window = cpu_at_start.share(
            &CpuTicks::now(),
            window_end.saturating_sub(send_start_mono) as f64 / 1e6,
        );
        // With --send-from-start, arrivals may still be going on.
        while config.send_from_start
            && !connecting_done()
            && Instant::now() < connect_deadline
            && !interrupted()
        {
            sleep(TICK).await;
        }

        // Settle: deliveries in flight arrive, reconnecting members come back and catch up.
        steps.begin("settling");
        let drain_until = Instant::now() + config.drain;
        progress.stage("settling", config.drain.as_secs().max(1), "s");
        let drain_started = Instant::now();
        let mut last_received = c.received.load(Relaxed);
        let mut quiet_since = Instant::now();
        let mut last_check = Instant::now() - Duration::from_secs(1);
        let mut missing = u64::MAX;
        while Instant::now() < drain_until && !interrupted() {
            let received = c.received.load(Relaxed);
            if received != last_received {
                last_received = received;
                quiet_since = Instant::now();
            }
            if last_check.elapsed() >= Duration::from_millis(250) {
                last_check = Instant::now();
                let (ledger, _) = Ledger::from_shared(&shared);
                missing = account(&[&ledger], true).lost;
            }
            let connected = c.first_connected.load(Relaxed);
            let settled_members = c.recovering.load(Relaxed) == 0
                && c.live.load(Relaxed) + c.gave_up.load(Relaxed) >= connected;
            let quiet = config.split == 1 || quiet_since.elapsed() >= Duration::from_secs(1);
            progress.update(drain_started.elapsed().as_secs(), || {
                format!(
                    "missing {missing} · open {} of {connected} · catching up {}",
                    c.live.load(Relaxed),
                    c.recovering.load(Relaxed)
                )
            });
            if missing == 0 && settled_members && quiet {
                break;
            }
            sleep(TICK).await;
        }
        progress.finish();

        // Stop everyone and wait (bounded) for the tasks to close their sockets.
        steps.begin("closing");
        let _ = stop_tx.send(true);
        let handles = spawner.await.unwrap_or_default();
        let close_deadline = Instant::now()
            + if interrupted() {
                Duration::from_secs(2)
            } else {
                Duration::from_secs(10)
            };
        for mut h in handles {
            tokio::select! {
                _ = &mut h => {}
                _ = sleep_until(close_deadline) => h.abort(),
            }
        }
        let collected = sampler.await.unwrap_or_default();
        drop(progress);
        Report::build(
            &shared,
            RunFacts {
                started_unix_ms,
                started_mono_us: started_mono,
                window_start_us: send_start_mono,
                window_end_us: window_end,
                steps_s: steps.into_map(),
                loadavg: collected.loadavg,
                cpu_in_window,
                timeline: collected.timeline,
            },
        )
    }
}

/// Sends `rate` comments a second into one class, comment `seq` at `start + seq / rate`, each
/// from a random student that can send. A tick that fires late (a busy machine) still names its
/// intended instant, so the lateness is in the latency, not hidden by a slower schedule.
async fn schedule(
    shared: Arc<Shared>,
    class: usize,
    students: Vec<(usize, mpsc::Sender<Command>)>,
    rate: f64,
    (start, start_mono): (Instant, u64),
    count: u32,
) {
    let Some(state) = shared.classes.get(class) else {
        return;
    };
    let part = shared.config.part;
    for seq in 0..count {
        let offset = Duration::from_secs_f64(f64::from(seq) / rate);
        sleep_until(start + offset).await;
        let Some(s) = state.slot(part, seq) else {
            break;
        };
        s.intended_us
            .store(start_mono + offset.as_micros() as u64, Relaxed);
        state.scheduled.store(seq + 1, Relaxed);
        if !hand_out(state, &students, seq, s) {
            shared.skipped.add("no_student_ready");
        }
    }
}

/// Gives comment `seq` to a ready student with room in its queue: a few random picks, then
/// everyone in turn from a random place, so a comment is skipped only when nobody can send it.
fn hand_out(
    state: &crate::state::ClassState,
    students: &[(usize, mpsc::Sender<Command>)],
    seq: u32,
    s: &crate::state::Slot,
) -> bool {
    if students.is_empty() {
        return false;
    }
    let try_one = |(slot, tx): &(usize, mpsc::Sender<Command>)| {
        if !state.ready.get(*slot).is_some_and(|f| f.load(Relaxed)) {
            return false;
        }
        // Queued before it is handed over: the member may write it at once.
        s.state.store(slot::QUEUED, Relaxed);
        if tx.try_send(Command(seq)).is_ok() {
            return true;
        }
        s.state.store(slot::EMPTY, Relaxed);
        false
    };
    for _ in 0..16 {
        if students
            .get(fastrand::usize(..students.len()))
            .is_some_and(try_one)
        {
            return true;
        }
    }
    let from = fastrand::usize(..students.len());
    (0..students.len()).any(|i| {
        students
            .get((from + i) % students.len())
            .is_some_and(try_one)
    })
}

/// Deliveries per second over the last couple of seconds (progress display only).
struct RateMeter {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl RateMeter {
    fn new(start: u64) -> Self {
        Self {
            samples: [(Instant::now(), start)].into_iter().collect(),
        }
    }

    fn tick(&mut self, value: u64) -> f64 {
        let now = Instant::now();
        self.samples.push_back((now, value));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| now - *t > Duration::from_secs(2))
        {
            self.samples.pop_front();
        }
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, v0)), Some((t1, v1))) if t1 > t0 => {
                (v1 - v0) as f64 / (*t1 - *t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

fn short_tally(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .take(4)
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
