//! Reactions without N×N fan-out. Each server counts its members' reactions per class over a
//! tick, publishes one message of counts per class per tick, adds up what every server
//! published, and sends its members one `reactions` frame per class per tick. 8,000 students
//! reacting five times a second cost each client at most 1/tick frames a second, and Redis
//! one message per server per class per tick.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::ServerState;
use liveclass_protocol::bus::ClassMessage;

pub async fn reaction_loop(state: Arc<ServerState>, tick: Duration, shutdown: CancellationToken) {
    let tick_ms = u64::try_from(tick.as_millis()).unwrap_or(250);
    let mut timer = tokio::time::interval(tick);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => {}
            () = shutdown.cancelled() => return,
        }
        state.hub.flush_reactions(tick_ms);
        for (class, counts) in state.hub.take_local_reactions() {
            let message =
                serde_json::to_string(&ClassMessage::Reactions { counts }).unwrap_or_default();
            if let Err(e) = state.store.publish_to_class(&class, &message).await {
                // Reactions are ephemeral: a tick lost with Redis is not retried.
                state.metrics.redis_error(e.op);
            }
        }
    }
}
