//! The clocks a run measures with.
//!
//! Every time a figure is computed from is read from `CLOCK_MONOTONIC`: on Linux it is one clock
//! for the whole machine, so a send time stamped by one load-generator process and a receive
//! time read by another (a split run) compare exactly, and neither jumps when NTP steps the wall
//! clock. The wall clock is only used to name instants for people (`started_unix_ms`) and to
//! turn a `--start-at` given in Unix milliseconds into a monotonic instant, once.

use nix::time::{ClockId, clock_gettime};

fn read_us(clock: ClockId) -> u64 {
    // clock_gettime cannot fail for these clocks on Linux; 0 is never a valid reading otherwise.
    clock_gettime(clock)
        .map(|t| {
            (t.tv_sec().max(0) as u64)
                .saturating_mul(1_000_000)
                .saturating_add(t.tv_nsec().max(0) as u64 / 1000)
        })
        .unwrap_or(0)
}

/// Microseconds on the machine's monotonic clock (shared by every process on the machine).
pub fn mono_us() -> u64 {
    read_us(ClockId::CLOCK_MONOTONIC)
}

/// Microseconds since the Unix epoch, for naming instants.
pub fn unix_us() -> u64 {
    read_us(ClockId::CLOCK_REALTIME)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    unix_us() / 1000
}

/// The monotonic instant (µs) of a Unix-milliseconds instant, by the clocks' offset right now.
pub fn mono_us_of_unix_ms(unix_ms: u64) -> u64 {
    let (mono, wall) = (mono_us(), unix_us());
    let target = unix_ms.saturating_mul(1000);
    if target >= wall {
        mono.saturating_add(target - wall)
    } else {
        mono.saturating_sub(wall - target)
    }
}

/// CPU time used by the calling thread, µs.
pub fn thread_cpu_us() -> u64 {
    read_us(ClockId::CLOCK_THREAD_CPUTIME_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_wall_agree_on_now() {
        let now_ms = unix_ms();
        let mono = mono_us_of_unix_ms(now_ms);
        assert!(mono.abs_diff(mono_us()) < 50_000, "{mono} vs {}", mono_us());
        let later = mono_us_of_unix_ms(now_ms + 2000);
        assert!(later.abs_diff(mono + 2_000_000) < 50_000);
        assert!(mono_us() >= mono);
    }
}
