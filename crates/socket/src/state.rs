//! What every part of one server shares: its id, the hub, the store, the limits, the metrics,
//! and whether it should take new clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::Store;

/// Whether this server should get new clients, and why not.
#[derive(Debug, Default)]
pub struct Health {
    pub pubsub_up: AtomicBool,
    /// The last heartbeat succeeded and, if Redis had forgotten this server, recorded it again.
    pub heartbeat_ok: AtomicBool,
    pub draining: AtomicBool,
    /// Asks the heartbeat to beat now rather than at its next tick (the pub/sub link is back).
    pub beat_now: tokio::sync::Notify,
}

impl Health {
    pub fn redis_up(&self) -> bool {
        self.pubsub_up.load(Ordering::Acquire) && self.heartbeat_ok.load(Ordering::Acquire)
    }

    /// `None` when ready, or the reason it is not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Acquire) {
            Some("draining")
        } else if !self.pubsub_up.load(Ordering::Acquire) {
            Some("redis pub/sub link down")
        } else if !self.heartbeat_ok.load(Ordering::Acquire) {
            Some("redis not answering")
        } else {
            None
        }
    }
}

/// A connection released by its task but not yet by Redis (Redis was away): retried by the
/// heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRelease {
    pub class: String,
    pub user: String,
    pub member: String,
}

/// Most releases kept for retry; beyond it the oldest go (the crash clean-up of this server
/// would remove them anyway, and so does its own clean-up at exit).
pub const MAX_PENDING_RELEASES: usize = 100_000;

/// Everything a connection needs from its server.
#[derive(Debug)]
pub struct ServerState {
    pub pod: String,
    pub hub: Arc<Hub>,
    pub store: Store,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Cancelled when the server starts draining.
    pub drain: CancellationToken,
    /// Every connection task and its clean-up, so a drain can wait for all of them.
    pub tasks: TaskTracker,
    pub next_conn: AtomicU64,
    /// Connections open or being upgraded: the per-server cap counts both.
    pub seats: AtomicUsize,
    pub pending_releases: std::sync::Mutex<Vec<PendingRelease>>,
    /// Gateway pods whose connections are being handed over.
    pub handovers: crate::handover::Handovers,
}

impl ServerState {
    /// Takes a seat for a new connection, or `None` when the server is full.
    pub fn take_seat(self: &Arc<Self>) -> Option<Seat> {
        let taken = self.seats.fetch_add(1, Ordering::AcqRel);
        if taken >= self.limits.max_connections {
            self.seats.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Seat {
            state: self.clone(),
        })
    }

    pub fn defer_release(&self, release: PendingRelease) {
        let mut pending = self
            .pending_releases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.len() >= MAX_PENDING_RELEASES {
            pending.remove(0);
        }
        pending.push(release);
    }

    pub fn take_pending_releases(&self) -> Vec<PendingRelease> {
        std::mem::take(
            &mut *self
                .pending_releases
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// One place under the per-server connection cap, given back on drop.
#[derive(Debug)]
pub struct Seat {
    state: Arc<ServerState>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.state.seats.fetch_sub(1, Ordering::AcqRel);
    }
}
