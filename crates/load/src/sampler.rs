//! What the machine and the run looked like while it ran, sampled once a second: the load
//! average (a figure taken on a busy machine says so), the machine's CPU split (user, system,
//! softirq — loopback traffic is paid in softirq) over the sending window, and the run's own
//! counters, so connection curves and delivery rates can be read second by second.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, interval};

use crate::clock::mono_us;
use crate::state::Shared;

/// One second of the run, as counted by one process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Monotonic seconds (shared by the processes of a split run).
    pub t_s: u64,
    /// Members that have had `hello`.
    pub connected: u64,
    /// Connections open.
    pub live: u64,
    pub sent: u64,
    /// Comment frames received (all copies).
    pub received: u64,
    pub reconnects: u64,
}

/// Load average and CPU of the machine during a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MachineLoad {
    /// 1-minute load average, sampled every second over the whole run.
    pub loadavg_1m: Summary,
    /// Share of the machine's CPU time (all cores) in each state over the sending window.
    pub cpu_in_window: CpuShare,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub samples: u64,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let sum: f64 = values.iter().sum();
        Self {
            samples: values.len() as u64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            mean: (sum / values.len() as f64 * 100.0).round() / 100.0,
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Fractions of CPU time (0..1, all cores together).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuShare {
    pub user: f64,
    pub system: f64,
    pub softirq: f64,
    pub irq: f64,
    pub iowait: f64,
    pub steal: f64,
    pub idle: f64,
    pub seconds: f64,
}

/// The machine's CPU counters (`cpu` line of /proc/stat), in ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTicks([u64; 8]);

impl CpuTicks {
    /// Reads /proc/stat; zeros where it is not there.
    pub fn now() -> Self {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let mut out = [0u64; 8];
        if let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) {
            // user nice system idle iowait irq softirq steal
            for (i, v) in line.split_whitespace().skip(1).take(8).enumerate() {
                if let Some(slot) = out.get_mut(i) {
                    *slot = v.parse().unwrap_or(0);
                }
            }
        }
        Self(out)
    }

    /// Shares between `self` (earlier) and `later`.
    pub fn share(&self, later: &CpuTicks, seconds: f64) -> CpuShare {
        let d: Vec<f64> = self
            .0
            .iter()
            .zip(later.0.iter())
            .map(|(a, b)| b.saturating_sub(*a) as f64)
            .collect();
        let total: f64 = d.iter().sum();
        if total <= 0.0 {
            return CpuShare::default();
        }
        let f = |i: usize| (d.get(i).copied().unwrap_or(0.0) / total * 1000.0).round() / 1000.0;
        CpuShare {
            user: ((d.first().copied().unwrap_or(0.0) + d.get(1).copied().unwrap_or(0.0)) / total
                * 1000.0)
                .round()
                / 1000.0,
            system: f(2),
            idle: f(3),
            iowait: f(4),
            irq: f(5),
            softirq: f(6),
            steal: f(7),
            seconds: (seconds * 1000.0).round() / 1000.0,
        }
    }
}

/// The 1-minute load average now.
pub fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What the sampler collected.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub loadavg: Vec<f64>,
    pub timeline: Vec<Sample>,
}

/// Samples once a second until `stop` says so.
pub(crate) async fn sample(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> Collected {
    let mut out = Collected::default();
    let mut tick = interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Bounded: one sample a second for at most a day.
    for _ in 0..86_400 {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        if let Some(l) = loadavg_1m() {
            out.loadavg.push(l);
        }
        let c = &shared.counters;
        out.timeline.push(Sample {
            t_s: mono_us() / 1_000_000,
            connected: c.first_connected.load(Relaxed),
            live: c.live.load(Relaxed),
            sent: c.comments_sent.load(Relaxed),
            received: c.received.load(Relaxed),
            reconnects: c.reconnects.load(Relaxed),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        let a = CpuTicks([100, 0, 50, 800, 0, 0, 50, 0]);
        let b = CpuTicks([200, 0, 100, 1000, 0, 0, 100, 0]);
        let s = a.share(&b, 2.0);
        assert_eq!(
            (s.user, s.system, s.softirq, s.idle),
            (0.25, 0.125, 0.125, 0.5)
        );
        let sum = Summary::of(&[1.0, 2.0, 6.0]);
        assert_eq!(
            (sum.min, sum.mean, sum.max, sum.samples),
            (1.0, 3.0, 6.0, 3)
        );
    }
}
