//! Runs one load-generator process: connect the members at the ramp rate, send comments for the
//! duration, let deliveries and reconnects settle, stop everyone, report.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};

use crate::LoadError;
use crate::config::{Config, Role};
use crate::conn::{MemberCtx, member};
use crate::ledger::{Ledger, account};
use crate::progress::Progress;
use crate::report::Report;
use crate::state::{Shared, now_us};
use crate::token::Minter;

/// How often the controller looks at the counters.
const TICK: Duration = Duration::from_millis(100);
/// Extra time, past the ramp, that connecting may take before the run goes on without the rest.
const CONNECT_GRACE: Duration = Duration::from_secs(60);
/// File descriptors kept free for everything that is not a member's socket.
const FD_RESERVE: u64 = 64;

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
        }
    }

    /// Ends the run early (as Ctrl-C does): stop sending, settle briefly, report.
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
        let members = config.local_members();
        let n = members.len() as u64;
        ensure_fd_budget(n)?;

        // Tokens, command channels and per-class slots, all before the first connection.
        let exp_s = now_us() / 1_000_000
            + 3600
            + (n as f64 / config.ramp).ceil() as u64
            + config.duration.as_secs()
            + config.drain.as_secs();
        let minter = Minter::new(&config.secret);
        let mut next_slot = vec![0usize; config.classes as usize];
        let mut senders: Vec<Vec<(usize, mpsc::Sender<()>)>> =
            vec![Vec::new(); config.classes as usize];
        let mut planned = Vec::with_capacity(members.len());
        for m in &members {
            let class = m.class as usize;
            let Some(slot_counter) = next_slot.get_mut(class) else {
                continue;
            };
            let slot = *slot_counter;
            *slot_counter += 1;
            let class_id = config.class_id(m.class);
            let name = match m.role {
                Role::Student => format!("Student {}", m.index),
                Role::Teacher => format!("Teacher {}", m.user),
            };
            let token = minter.mint(&m.user, &class_id, m.role.as_str(), &name, exp_s)?;
            let (tx, rx) = mpsc::channel(4);
            if m.role == Role::Student
                && let Some(list) = senders.get_mut(class)
            {
                list.push((slot, tx));
            }
            let source = (config.source_ips > 1).then(|| {
                Ipv4Addr::new(
                    127,
                    0,
                    0,
                    1 + (m.index % u32::from(config.source_ips)) as u8,
                )
            });
            let ctx = MemberCtx {
                shared: Arc::clone(&shared),
                class,
                slot,
                endpoint: m.index as usize % shared.endpoints.len().max(1),
                source,
                token,
                user: m.user.clone(),
            };
            planned.push((ctx, rx));
        }

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut progress = Progress::new(config.progress);
        let started = Instant::now();
        let started_unix_ms = now_us() / 1000;
        let local_rate = config.ramp / f64::from(config.split);
        let ramp_time = Duration::from_secs_f64(n as f64 / local_rate);

        // Connect at the ramp rate: member i starts at i / rate.
        let spawner = {
            let stop_rx = stop_rx.clone();
            tokio::spawn(async move {
                let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(planned.len());
                for (i, (ctx, rx)) in planned.into_iter().enumerate() {
                    let at = started + Duration::from_secs_f64(i as f64 / local_rate);
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
        progress.stage("connecting", n, "members");
        let connect_deadline = started + ramp_time + CONNECT_GRACE;
        loop {
            let done = c.first_connected.load(Relaxed) + c.never_connected.load(Relaxed);
            progress.update(c.first_connected.load(Relaxed), || {
                format!(
                    "open {} · failed attempts {} · {}",
                    c.live.load(Relaxed),
                    shared.failures.snapshot().values().sum::<u64>(),
                    short_tally(&shared.failures.snapshot())
                )
            });
            if done >= n || Instant::now() >= connect_deadline || shared.interrupted.load(Relaxed) {
                break;
            }
            sleep(TICK).await;
        }
        let last = c.last_first_connect_us.load(Relaxed);
        let ramp_s = if last == 0 {
            0.0
        } else {
            last.saturating_sub(started_unix_ms * 1000) as f64 / 1e6
        };

        // One schedule for all parts of a split run, when given.
        if let Some(at_ms) = config.start_at_ms {
            let wait = Duration::from_millis(at_ms.saturating_sub(now_us() / 1000))
                .min(Duration::from_secs(3600));
            progress.stage("waiting", wait.as_secs(), "s");
            let until = Instant::now() + wait;
            while Instant::now() < until && !shared.interrupted.load(Relaxed) {
                progress.update(
                    wait.as_secs()
                        .saturating_sub((until - Instant::now()).as_secs()),
                    || format!("for the common start · open {}", c.live.load(Relaxed)),
                );
                sleep(TICK.min(until - Instant::now())).await;
            }
        }

        // Send comments.
        let run_started = Instant::now();
        let run_until = run_started + config.duration;
        let local_comment_rate = config.comment_rate / f64::from(config.split);
        let schedulers: Vec<JoinHandle<()>> = senders
            .iter()
            .enumerate()
            .filter(|(_, list)| !list.is_empty() && local_comment_rate > 0.0)
            .map(|(class, list)| {
                tokio::spawn(schedule(
                    Arc::clone(&shared),
                    class,
                    list.clone(),
                    local_comment_rate,
                    run_until,
                ))
            })
            .collect();
        progress.stage("running", config.duration.as_secs().max(1), "s");
        let mut rate = RateMeter::new(c.received.load(Relaxed));
        while Instant::now() < run_until && !shared.interrupted.load(Relaxed) {
            let per_s = rate.tick(c.received.load(Relaxed));
            progress.update(run_started.elapsed().as_secs(), || {
                format!(
                    "open {} · sent {} · delivered {} ({per_s:.0}/s) · reconnects {}",
                    c.live.load(Relaxed),
                    c.comments_sent.load(Relaxed),
                    c.received.load(Relaxed),
                    c.reconnects.load(Relaxed)
                )
            });
            sleep(TICK.min(run_until.saturating_duration_since(Instant::now()))).await;
        }
        for s in &schedulers {
            s.abort();
        }
        for s in schedulers {
            let _ = s.await;
        }
        let run_s = run_started.elapsed().as_secs_f64();

        // Settle: deliveries in flight arrive, reconnecting members come back and recover.
        let drain_until = Instant::now() + config.drain;
        progress.stage("settling", config.drain.as_secs().max(1), "s");
        let drain_started = Instant::now();
        let mut last_received = c.received.load(Relaxed);
        let mut quiet_since = Instant::now();
        let mut last_check = Instant::now() - Duration::from_secs(1);
        let mut missing = u64::MAX;
        while Instant::now() < drain_until {
            let received = c.received.load(Relaxed);
            if received != last_received {
                last_received = received;
                quiet_since = Instant::now();
            }
            if last_check.elapsed() >= Duration::from_millis(250) {
                last_check = Instant::now();
                let ledger = Ledger::from_shared(&shared);
                missing = account(&[&ledger], true).lost;
            }
            let connected = c.first_connected.load(Relaxed);
            let settled_members = c.live.load(Relaxed) + c.gave_up.load(Relaxed) >= connected;
            let quiet = config.split == 1 || quiet_since.elapsed() >= Duration::from_secs(1);
            progress.update(drain_started.elapsed().as_secs(), || {
                format!(
                    "missing {missing} · open {} of {connected}",
                    c.live.load(Relaxed)
                )
            });
            if missing == 0 && settled_members && quiet {
                break;
            }
            sleep(TICK).await;
        }
        progress.finish();

        // Stop everyone and wait (bounded) for the tasks to close their sockets.
        let _ = stop_tx.send(true);
        let handles = spawner.await.unwrap_or_default();
        let close_deadline = Instant::now() + Duration::from_secs(10);
        for mut h in handles {
            tokio::select! {
                _ = &mut h => {}
                _ = sleep_until(close_deadline) => h.abort(),
            }
        }
        drop(progress);
        Report::build(&shared, started_unix_ms, ramp_s, run_s)
    }
}

/// Sends `rate` comments a second into one class, each from a random connected student.
async fn schedule(
    shared: Arc<Shared>,
    class: usize,
    students: Vec<(usize, mpsc::Sender<()>)>,
    rate: f64,
    until: Instant,
) {
    let Some(state) = shared.classes.get(class) else {
        return;
    };
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut next = Instant::now();
    for _ in 0..shared.cap {
        if next >= until {
            break;
        }
        sleep_until(next).await;
        next += period;
        let mut sent = false;
        for _ in 0..16 {
            let Some((slot, tx)) = students.get(fastrand::usize(..students.len())) else {
                break;
            };
            let connected = state.connected.get(*slot).is_some_and(|f| f.load(Relaxed));
            if connected && tx.try_send(()).is_ok() {
                sent = true;
                break;
            }
        }
        if !sent {
            shared.counters.comments_skipped.fetch_add(1, Relaxed);
        }
    }
}

/// Deliveries per second over the last couple of seconds.
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

fn short_tally(map: &std::collections::BTreeMap<String, u64>) -> String {
    map.iter()
        .take(4)
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
