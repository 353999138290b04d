//! The server's one pub/sub connection to Redis: it subscribes each class's broadcast channel
//! once while the hub has members of that class, plus this server's own channel (direct
//! messages, `kick` notices), and fans what arrives out through the hub.
//!
//! Two tasks share the link: a reader that only fans out, and a control loop that changes
//! subscriptions and PINGs the link. A PING unanswered within the deadline means the link is
//! dead even if TCP says nothing (half-open): the server turns not-ready, reconnects with
//! jittered backoff, resubscribes every room and catches each room up from the class's stream
//! from the last id it delivered — or, when that is no longer possible, sends its members a
//! `gap` frame. Connected students miss nothing silently.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use liveclass_protocol::CloseReason;
use liveclass_protocol::bus::{ClassMessage, HANDOVER_CHANNEL, Handover};
use liveclass_protocol::server::{COMMENT_PREFIX, GapReason};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::{BusCommand, ConnId};
use crate::redis_link::LinkError;
use crate::state::ServerState;
use crate::store::{Position, SinceFrom, keys};

/// A message on a server's own channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "lowercase")]
pub enum PodMessage {
    /// A direct message for every connection of `user` on this server.
    Dm {
        class: String,
        user: String,
        frame: String,
    },
    /// Close the connection `at` (`pod#conn`): its user opened one too many elsewhere.
    Kick { class: String, at: String },
    /// The school's backend removed `user` from the class: close all their connections.
    Disconnect { class: String, user: String },
}

/// `pod#conn`, one connection's entry in a class's `where` hash.
pub fn member_value(pod: &str, conn: ConnId) -> String {
    format!("{pod}#{conn}")
}

/// The connection id in a `pod#conn` value if the pod is `pod`.
fn conn_on(pod: &str, value: &str) -> Option<ConnId> {
    let (at, conn) = value.rsplit_once('#')?;
    (at == pod).then(|| conn.parse().ok()).flatten()
}

/// Why the link was given up.
#[derive(Debug, thiserror::Error)]
enum LinkDown {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0} did not answer within {1:?}")]
    Timeout(&'static str, Duration),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the server is stopping")]
    Stopped,
}

/// Runs the pub/sub connection until `shutdown`.
#[derive(Debug)]
pub struct Bus {
    pub state: Arc<ServerState>,
    /// How often the link is PINGed.
    pub ping_every: Duration,
    /// How long any call on the link may take.
    pub timeout: Duration,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Sink = redis::aio::PubSubSink;

impl Bus {
    pub async fn run(
        self,
        mut commands: mpsc::UnboundedReceiver<BusCommand>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = MIN_BACKOFF;
        while !shutdown.is_cancelled() {
            match self.connect().await {
                Ok((sink, stream)) => {
                    backoff = MIN_BACKOFF;
                    self.set_up(true);
                    tracing::info!("redis pub/sub connected");
                    let why = self.serve(sink, stream, &mut commands, &shutdown).await;
                    self.set_up(false);
                    if shutdown.is_cancelled() {
                        return;
                    }
                    tracing::warn!(reason = %why, "redis pub/sub link lost; not ready until it is back");
                }
                Err(e) => {
                    self.state.metrics.redis_error("subscribe");
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot connect pub/sub to redis");
                }
            }
            let jitter = Duration::from_millis(fastrand::u64(
                0..=u64::try_from(backoff.as_millis() / 2).unwrap_or(50),
            ));
            tokio::select! {
                () = tokio::time::sleep(backoff + jitter) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn set_up(&self, up: bool) {
        let health = &self.state.health;
        let was = health.pubsub_up.swap(up, Ordering::AcqRel);
        self.state.metrics.redis_up.set(i64::from(up));
        if was && !up {
            // Whatever Redis held of this server may be gone with the link (an empty restart):
            // not ready again until a heartbeat has checked it and recorded it again.
            health.heartbeat_ok.store(false, Ordering::Release);
        }
        if up {
            health.beat_now.notify_one();
        }
    }

    async fn within<T, E>(
        &self,
        what: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, LinkDown>
    where
        LinkDown: From<E>,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(LinkDown::Timeout(what, self.timeout)),
        }
    }

    /// Connects, subscribes this server's channel and every room, and catches rooms up.
    async fn connect(&self) -> Result<(Sink, redis::aio::PubSubStream), LinkDown> {
        self.state.store.target().resolve().await?;
        let client = self.state.store.target().client()?;
        let pubsub = self
            .within("pub/sub connect", client.get_async_pubsub())
            .await?;
        let (mut sink, stream) = pubsub.split();
        let pod = &self.state.pod;
        self.within(
            "SUBSCRIBE",
            sink.subscribe(&[keys::pod_channel(pod), HANDOVER_CHANNEL.to_owned()]),
        )
        .await?;
        let classes = self.state.hub.classes();
        if !classes.is_empty() {
            let channels: Vec<String> = classes.iter().map(|c| keys::broadcast(c)).collect();
            self.within("SUBSCRIBE", sink.subscribe(&channels)).await?;
            self.state.store.add_pod_classes(pod, &classes).await?;
        }
        // Live messages queue up in `stream` from here on; what was published while the link
        // was away is in each class's stream. The hub drops anything delivered twice by id.
        self.catch_up().await?;
        for class in &classes {
            self.state.hub.mark_subscribed(class, true);
        }
        Ok((sink, stream))
    }

    /// Delivers to each room what its members missed while the link was away, or tells them
    /// plainly that it cannot.
    async fn catch_up(&self) -> Result<(), LinkDown> {
        let hub = &self.state.hub;
        for (class, last, epoch) in hub.positions() {
            let Some(last) = last else {
                // A room whose position was never read has no member past `hello` yet.
                let position = self.state.store.position(&class).await?;
                hub.seed_position(&class, &position);
                continue;
            };
            let recovery = self
                .state
                .store
                .recover(
                    &class,
                    last,
                    epoch.as_deref(),
                    self.state.limits.max_recovery,
                    SinceFrom::ThisServer,
                )
                .await?;
            if recovery.complete {
                for (_, frame) in &recovery.frames {
                    hub.fan_out(&class, frame);
                }
                continue;
            }
            let reason = if epoch.as_deref() == Some(recovery.epoch.as_str()) && !recovery.lost {
                GapReason::Trimmed
            } else {
                GapReason::HistoryLost
            };
            tracing::warn!(%class, ?reason, "cannot catch the class up after the outage; members are told of the gap");
            hub.gap(
                &class,
                reason,
                &Position {
                    epoch: recovery.epoch,
                    last_id: recovery.last_id,
                },
            );
        }
        Ok(())
    }

    async fn serve(
        &self,
        mut sink: Sink,
        mut stream: redis::aio::PubSubStream,
        commands: &mut mpsc::UnboundedReceiver<BusCommand>,
        shutdown: &CancellationToken,
    ) -> LinkDown {
        let state = self.state.clone();
        let mut reader = tokio::spawn(async move {
            let own_channel = keys::pod_channel(&state.pod);
            while let Some(message) = stream.next().await {
                let channel = message.get_channel_name();
                let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
                    continue;
                };
                if channel == own_channel {
                    on_pod_message(&state, payload);
                } else if channel == HANDOVER_CHANNEL {
                    on_handover(&state, payload);
                } else if let Some(class) = keys::class_of_broadcast(channel) {
                    on_class_message(&state, class, payload);
                }
            }
        });
        let mut ping = tokio::time::interval(self.ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            tokio::select! {
                _ = &mut reader => break LinkDown::Redis(redis::RedisError::from((redis::ErrorKind::Io, "the pub/sub stream ended"))),
                command = commands.recv() => {
                    let Some(command) = command else { break LinkDown::Stopped };
                    let mut batch = vec![command];
                    while let Ok(more) = commands.try_recv() {
                        batch.push(more);
                    }
                    if let Err(e) = self.apply(&mut sink, batch).await {
                        self.state.metrics.redis_error("subscribe");
                        break e;
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = self.within("PING on the pub/sub link", sink.ping::<redis::Value>()).await {
                        self.state.metrics.redis_error("pubsub_ping");
                        break e;
                    }
                }
                () = shutdown.cancelled() => break LinkDown::Stopped,
            }
        };
        reader.abort();
        why
    }

    /// Subscribes and unsubscribes as the rooms are when the batch is applied: a room may have
    /// emptied or reappeared since a command was queued.
    async fn apply(&self, sink: &mut Sink, batch: Vec<BusCommand>) -> Result<(), LinkDown> {
        let hub = &self.state.hub;
        let (mut join, mut part) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for command in batch.into_iter().rev() {
            let (BusCommand::Subscribe(class) | BusCommand::Unsubscribe(class)) = command;
            if seen.insert(class.clone()) {
                if hub.has_room(&class) {
                    join.push(class);
                } else {
                    part.push(class);
                }
            }
        }
        if !join.is_empty() {
            // Read each class's position before subscribing: everything published after the
            // subscription is newer, so seeding the room with it never hides a live message.
            let positions = self.state.store.positions(&join).await?;
            for (class, position) in join.iter().zip(&positions) {
                hub.seed_position(class, position);
            }
            let channels: Vec<String> = join.iter().map(|c| keys::broadcast(c)).collect();
            self.within("SUBSCRIBE", sink.subscribe(&channels)).await?;
            self.state
                .store
                .add_pod_classes(&self.state.pod, &join)
                .await?;
            for class in &join {
                hub.mark_subscribed(class, true);
            }
        }
        if !part.is_empty() {
            let channels: Vec<String> = part.iter().map(|c| keys::broadcast(c)).collect();
            self.within("UNSUBSCRIBE", sink.unsubscribe(&channels))
                .await?;
            for class in &part {
                self.state
                    .store
                    .remove_pod_class(&self.state.pod, class)
                    .await?;
            }
        }
        Ok(())
    }
}

fn on_pod_message(state: &ServerState, payload: &str) {
    match serde_json::from_str::<PodMessage>(payload) {
        Ok(PodMessage::Dm { class, user, frame }) => {
            state
                .hub
                .deliver_to_user(&class, &user, &Utf8Bytes::from(frame));
        }
        Ok(PodMessage::Kick { class, at }) => {
            if let Some(conn) = conn_on(&state.pod, &at) {
                state
                    .hub
                    .close_connection(&class, conn, CloseReason::Replaced);
            }
        }
        Ok(PodMessage::Disconnect { class, user }) => {
            state.hub.close_user(&class, &user, CloseReason::Kicked);
        }
        Err(e) => tracing::warn!(error = %e, "unreadable message on this server's channel"),
    }
}

fn on_handover(state: &Arc<ServerState>, payload: &str) {
    match serde_json::from_str::<Handover>(payload) {
        Ok(Handover { gateway, within_ms }) => {
            for class in state.hub.classes() {
                crate::handover::start(state, &class, gateway, Duration::from_millis(within_ms));
            }
        }
        Err(e) => tracing::warn!(error = %e, "unreadable hand-over"),
    }
}

fn on_class_message(state: &ServerState, class: &str, payload: &str) {
    if payload.starts_with(COMMENT_PREFIX) {
        state.hub.fan_out(class, payload);
        return;
    }
    match serde_json::from_str::<ClassMessage>(payload) {
        Ok(ClassMessage::Reactions { counts }) => {
            state.hub.add_incoming_reactions(class, &counts);
        }

        Err(e) => tracing::debug!(error = %e, %class, "unreadable message on a class channel"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_values_route_to_their_pod() {
        let value = member_value("socket-a", 42);
        assert_eq!(conn_on("socket-a", &value), Some(42));
        assert_eq!(conn_on("socket-b", &value), None);
        assert_eq!(conn_on("socket-a", "socket-a#x"), None);
    }

    #[test]
    fn the_kick_the_claim_script_builds_is_understood() {
        let kick: PodMessage =
            serde_json::from_str(r#"{"at":"pod-a#7","class":"school/c","k":"kick"}"#).unwrap();
        assert!(matches!(kick, PodMessage::Kick { at, .. } if at == "pod-a#7"));
    }
}
