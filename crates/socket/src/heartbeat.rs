//! This server's heartbeat in Redis, and what hangs on it: noticing that Redis forgot this
//! server (survivors reaped it during a stall, or Redis restarted empty or from an old snapshot)
//! and recording its connections again; cleaning up after servers that died without cleaning
//! up; retrying releases that failed while Redis was away; and replacing a command connection
//! that stopped answering.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use liveclass_protocol::now_ms;
use tokio_util::sync::CancellationToken;

use crate::bus::member_value;
use crate::state::ServerState;

/// Failed beats in a row after which the command connection is rebuilt.
const RECONNECT_AFTER_FAILURES: u32 = 2;

/// Renews the heartbeat every third of its TTL. Each beat writes a new token and reads back
/// the one it replaces: if that is not what this server wrote last, Redis lost or rolled back
/// its record of this server, and the server records its connections again.
pub async fn heartbeat_loop(state: Arc<ServerState>, ttl: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let boot = crate::store::new_epoch();
    let mut beat_no: u64 = 0;
    // Tokens this server may have left in Redis: the last one confirmed, and any written by
    // beats whose answer was lost.
    let mut written: Vec<String> = Vec::new();
    let mut failures = 0u32;
    let mut inherited = Inherited::Unknown;
    // With Sentinels the configured address means nothing: find the primary first.
    if state.store.target().has_sentinels() {
        rebuild(&state).await;
    }
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.health.beat_now.notified() => tick.reset(),
            () = shutdown.cancelled() => return,
        }
        beat_no += 1;
        let token = format!("{boot}:{beat_no}");
        let counts = state.hub.counts();
        let beat = match inherited.clear(&state).await {
            Ok(()) => {
                state
                    .store
                    .heartbeat(&state.pod, ttl, &token, &counts, now_ms())
                    .await
            }
            Err(e) => Err(e),
        };
        match beat {
            Ok(beat) => {
                failures = 0;
                let first = written.is_empty();
                let intact = beat
                    .previous
                    .as_ref()
                    .is_some_and(|previous| written.contains(previous));
                if (!first && !intact) || beat.being_reaped {
                    reregister(&state).await;
                }
                written = vec![token];
                // Ready only once Redis knows this server's connections again, so a direct
                // message sent the moment it is ready finds its recipient.
                if !state.health.heartbeat_ok.swap(true, Ordering::AcqRel) {
                    tracing::info!("heartbeat renewed; redis answers");
                }
            }
            Err(e) => {
                state.metrics.redis_error(e.op);
                written.push(token);
                failures += 1;
                if state.health.heartbeat_ok.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "heartbeat failed; not ready until redis answers");
                }
                // Then again every so many failures: a rebuilt connection reads the password
                // file again (a wrong password fixed, or rotated, in the mounted Secret is
                // only seen so), and with Sentinels at every failure, since they may name the
                // new primary only a few seconds into a failover.
                if failures.is_multiple_of(RECONNECT_AFTER_FAILURES)
                    || (failures > RECONNECT_AFTER_FAILURES && state.store.target().has_sentinels())
                {
                    tracing::warn!("redis command connection not answering; replacing it");
                    rebuild(&state).await;
                }
                continue;
            }
        }
        retry_releases(&state).await;
        reap_dead_servers(&state).await;
    }
}

/// What an earlier run of this server under the same id (a container the kubelet restarted, a
/// StatefulSet pod) may have left in Redis: its connections, which would count as attending
/// forever, since no survivor reaps a server whose heartbeat goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inherited {
    Unknown,
    Removed,
}

impl Inherited {
    /// Removes it before this run's first heartbeat, and again at every beat until that
    /// succeeds: Redis may be out of reach when the server starts. The server is not ready
    /// before its first heartbeat, so it has no connection of its own that this could remove.
    async fn clear(&mut self, state: &ServerState) -> Result<(), crate::store::StoreError> {
        if *self == Inherited::Removed {
            return Ok(());
        }
        let stale = state.store.leave(&state.pod).await?;
        *self = Inherited::Removed;
        if stale > 0 {
            tracing::info!(
                stale,
                "removed connections left by an earlier run of this server"
            );
        }
        Ok(())
    }
}

/// Rebuilds the command connection, to the primary the Sentinels name if there are any.
async fn rebuild(state: &ServerState) {
    if let Err(e) = state.store.target().resolve().await {
        tracing::warn!(error = %e, "cannot find the redis primary");
        return;
    }
    if let Err(e) = state.store.reconnect() {
        tracing::warn!(error = %e, "cannot rebuild the redis connection");
    }
}

/// Records every local connection and class in Redis again (only what is missing).
async fn reregister(state: &ServerState) {
    let classes = state.hub.classes();
    let mut added = 0;
    for class in &classes {
        let sessions: Vec<(String, String)> = state
            .hub
            .sessions(class)
            .into_iter()
            .map(|(user, conn)| (user, member_value(&state.pod, conn)))
            .collect();
        match state.store.reclaim(class, &sessions).await {
            Ok(n) => added += n,
            Err(e) => state.metrics.redis_error(e.op),
        }
    }
    if let Err(e) = state.store.add_pod_classes(&state.pod, &classes).await {
        state.metrics.redis_error(e.op);
    }
    state.metrics.reregistrations.inc();
    tracing::warn!(
        classes = classes.len(),
        restored = added,
        "redis had forgotten this server (reaped while alive, or redis lost its data); its connections are recorded again"
    );
}

async fn reap_dead_servers(state: &ServerState) {
    let overdue = match state.store.overdue_pods(now_ms()).await {
        Ok(pods) => pods,
        Err(e) => {
            state.metrics.redis_error(e.op);
            return;
        }
    };
    for pod in overdue.into_iter().filter(|p| *p != state.pod) {
        match state.store.claim_dead_pod(&pod, &state.pod).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                state.metrics.redis_error(e.op);
                continue;
            }
        }
        match state.store.forget_pod(&pod).await {
            Ok(removed) => {
                state.metrics.dead_pod_sessions_removed.inc_by(removed);
                tracing::info!(%pod, removed, "removed the connections of a server whose heartbeat expired");
            }
            Err(e) => state.metrics.redis_error(e.op),
        }
        if let Err(e) = state.store.finish_reap(&pod, now_ms()).await {
            state.metrics.redis_error(e.op);
        }
    }
}

async fn retry_releases(state: &ServerState) {
    for release in state.take_pending_releases() {
        if let Err(e) = state
            .store
            .release(&release.class, &release.user, &release.member)
            .await
        {
            state.metrics.redis_error(e.op);
            state.defer_release(release);
        }
    }
}
