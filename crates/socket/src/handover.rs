//! The hand-over of a gateway pod that is going away. Caddy cuts every socket it proxies when
//! its process stops, and all those students would reconnect through the other gateway pods
//! in the same second. Told ahead — the operator publishes a `handover` on each class's channel
//! when it sees a gateway pod terminating, and the pod's preStop waits out the window — this
//! server closes the connections that came through that pod one at a time, at moments spread
//! evenly over the window, each told to `reconnect` first (so it comes back with `since` and
//! misses nothing): the other gateway pods and servers see a trickle instead of a storm.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liveclass_protocol::CloseReason;
use tokio::time::Instant;

use crate::hub::ConnId;
use crate::state::ServerState;

/// The longest window a hand-over may ask for: the message comes from anyone who can publish
/// to the class's Redis, and the task it starts is bounded by this.
pub const MAX_WINDOW: Duration = Duration::from_secs(600);

/// The hand-overs under way, by class and gateway address: a repeated message (the operator
/// restarted and saw the same pod again) does not start a second, faster one.
#[derive(Debug, Default)]
pub struct Handovers {
    running: Mutex<HashSet<(String, IpAddr)>>,
}

impl Handovers {
    fn start(&self, class: &str, gateway: IpAddr) -> bool {
        lock(&self.running).insert((class.to_owned(), gateway))
    }

    fn finish(&self, class: &str, gateway: IpAddr) {
        lock(&self.running).remove(&(class.to_owned(), gateway));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts handing over `class`'s local connections that came through `gateway`, within
/// `within` (at most [`MAX_WINDOW`]); nothing if one is already under way.
pub fn start(state: &Arc<ServerState>, class: &str, gateway: IpAddr, within: Duration) {
    let gateway = crate::address::canonical(gateway);
    let conns = state.hub.connections_via(class, gateway);
    if conns.is_empty() || !state.handovers.start(class, gateway) {
        return;
    }
    let within = within.min(MAX_WINDOW);
    tracing::info!(%class, %gateway, connections = conns.len(), ?within, "handing over a gateway's connections");
    let plan = moments(conns, within, fastrand::u64(..));
    let state = state.clone();
    let class = class.to_owned();
    // Not tracked with the connections: a drain closes everyone itself, and stops this.
    tokio::spawn(async move {
        let began = Instant::now();
        for (at, conn) in plan {
            tokio::select! {
                () = tokio::time::sleep_until(began + at) => {}
                () = state.drain.cancelled() => break,
            }
            state
                .hub
                .close_connection(&class, conn, CloseReason::Draining);
        }
        // Whoever came through that pod during the window (it was leaving the balancer's
        // endpoints as this began) goes now, before the pod is cut.
        if !state.drain.is_cancelled() {
            for conn in state.hub.connections_via(&class, gateway) {
                state
                    .hub
                    .close_connection(&class, conn, CloseReason::Draining);
            }
        }
        state.handovers.finish(&class, gateway);
    });
}

/// When each connection is told to leave: evenly spaced over the window, in an order shuffled
/// with `seed` (so which students go first is not the order they joined in).
fn moments(mut conns: Vec<ConnId>, within: Duration, seed: u64) -> Vec<(Duration, ConnId)> {
    fastrand::Rng::with_seed(seed).shuffle(&mut conns);
    let n = u32::try_from(conns.len()).unwrap_or(u32::MAX);
    conns
        .into_iter()
        .zip(0u32..)
        .map(|(conn, i)| (within / n * i, conn))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_evenly_over_the_window_each_once() {
        let conns: Vec<ConnId> = (1..=1000).collect();
        let plan = moments(conns, Duration::from_secs(20), 7);
        assert_eq!(plan.len(), 1000);
        let mut seen: Vec<ConnId> = plan.iter().map(|(_, c)| *c).collect();
        assert_ne!(seen, (1..=1000).collect::<Vec<_>>(), "shuffled");
        seen.sort_unstable();
        assert_eq!(seen, (1..=1000).collect::<Vec<_>>(), "each once");
        assert_eq!(plan[0].0, Duration::ZERO);
        assert!(plan.last().unwrap().0 < Duration::from_secs(20));
        // 1,000 over 20 s: 50 a second, never a burst.
        for second in 0..20 {
            let range = Duration::from_secs(second)..Duration::from_secs(second + 1);
            let in_second = plan.iter().filter(|(at, _)| range.contains(at)).count();
            assert_eq!(in_second, 50, "second {second}");
        }
    }

    #[test]
    fn a_repeated_handover_is_not_started_twice() {
        let handovers = Handovers::default();
        let gateway: IpAddr = "10.244.0.7".parse().unwrap();
        assert!(handovers.start("school/c", gateway));
        assert!(!handovers.start("school/c", gateway));
        assert!(handovers.start("school/d", gateway));
        handovers.finish("school/c", gateway);
        assert!(handovers.start("school/c", gateway));
    }
}
