//! Background loops that keep the shared state true: this server's heartbeat, the clean-up of
//! servers that died without cleaning up, and the presence counts sent to clients.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::connection::ServerState;
use crate::protocol::{ServerFrame, now_ms};

/// Renews the heartbeat every third of its TTL and removes the sessions of servers whose
/// heartbeat expired. Exactly one survivor cleans up each dead server.
pub async fn heartbeat_loop(state: Arc<ServerState>, ttl: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match state.store.heartbeat(&state.pod, ttl, now_ms()).await {
            Ok(()) => {
                let was_ok = state.health.heartbeat_ok.swap(true, Ordering::AcqRel);
                if !was_ok {
                    tracing::info!("heartbeat renewed; redis reachable");
                }
            }
            Err(e) => {
                state.metrics.redis_error(e.op);
                if state.health.heartbeat_ok.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "heartbeat failed; not ready until redis answers");
                }
                continue;
            }
        }
        retry_releases(&state).await;
        reap_dead_pods(&state).await;
    }
}

async fn reap_dead_pods(state: &ServerState) {
    let overdue = match state.store.overdue_pods(now_ms()).await {
        Ok(pods) => pods,
        Err(e) => {
            state.metrics.redis_error(e.op);
            return;
        }
    };
    for pod in overdue.into_iter().filter(|p| *p != state.pod) {
        match state.store.claim_dead_pod(&pod).await {
            Ok(true) => match state.store.forget_pod(&pod).await {
                Ok(removed) => {
                    state.metrics.dead_pod_sessions_removed.inc_by(removed);
                    tracing::info!(%pod, removed, "removed the sessions of a server whose heartbeat expired");
                }
                Err(e) => state.metrics.redis_error(e.op),
            },
            Ok(false) => {}
            Err(e) => state.metrics.redis_error(e.op),
        }
    }
}

async fn retry_releases(state: &ServerState) {
    let pending = std::mem::take(
        &mut *state
            .pending_releases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for (class, user, member) in pending {
        if let Err(e) = state.store.release(&class, &user, &member).await {
            state.metrics.redis_error(e.op);
            state
                .pending_releases
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((class, user, member));
        }
    }
}

/// Once a second, reads each local class's connected count and tells local members when it
/// changed. Every server does this for its own members, so one count reaches everyone.
pub async fn presence_loop(state: Arc<ServerState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let classes = state.hub.classes();
        if classes.is_empty() || !state.health.redis_up() {
            continue;
        }
        match state.store.presence(&classes).await {
            Ok(counts) => {
                for (class, count) in classes.iter().zip(counts) {
                    state
                        .hub
                        .presence(class, count, || ServerFrame::Presence { count }.to_text());
                }
            }
            Err(e) => state.metrics.redis_error(e.op),
        }
    }
}
