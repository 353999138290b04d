//! Once a second, reads each local class's connected users and tells local members when the
//! count changed. Every server does this for its own members, so one count reaches everyone.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::ServerState;

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
                    state.hub.presence(class, count);
                }
            }
            Err(e) => state.metrics.redis_error(e.op),
        }
    }
}
