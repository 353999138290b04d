//! The server's one pub/sub connection to Redis: it subscribes each class's broadcast channel
//! once while the hub has members of that class, plus this server's own channel (direct
//! messages, `replaced` notices), and fans what arrives out through the hub.
//!
//! When the connection drops it reports not-ready, reconnects with jittered backoff,
//! resubscribes every room and catches each room up from the class history, so local clients
//! miss nothing that was published while it was away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::{BusCommand, ConnId, Hub};
use crate::metrics::Metrics;
use crate::protocol::MessageId;
use crate::store::{Store, keys};

/// Whether this server should get new clients.
#[derive(Debug, Default)]
pub struct Health {
    pub pubsub_up: AtomicBool,
    pub heartbeat_ok: AtomicBool,
    pub draining: AtomicBool,
}

impl Health {
    pub fn redis_up(&self) -> bool {
        self.pubsub_up.load(Ordering::Acquire) && self.heartbeat_ok.load(Ordering::Acquire)
    }

    /// `None` when ready, or the reason it is not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Acquire) {
            Some("draining")
        } else if !self.redis_up() {
            Some("redis unavailable")
        } else {
            None
        }
    }
}

/// A message on a server's own channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "lowercase")]
pub enum PodMessage {
    /// A direct message; `at` is the recipient's `pod#conn`, filled in by the store's script.
    Dm {
        at: String,
        class: String,
        frame: String,
    },
    /// The user connected elsewhere: close their connection here.
    Kick { class: String, user: String },
}

/// `pod#conn`, the value of a user's entry in a class's `where` hash.
pub fn member_value(pod: &str, conn: ConnId) -> String {
    format!("{pod}#{conn}")
}

/// The connection id in a `pod#conn` value if the pod is `pod`.
fn conn_on(pod: &str, value: &str) -> Option<ConnId> {
    let (at, conn) = value.rsplit_once('#')?;
    (at == pod).then(|| conn.parse().ok()).flatten()
}

/// Runs the pub/sub connection until `shutdown`.
#[derive(Debug)]
pub struct Bus {
    pub client: redis::Client,
    pub pod: String,
    pub hub: Arc<Hub>,
    pub store: Store,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
                    self.serve(sink, stream, &mut commands, &shutdown).await;
                    self.set_up(false);
                    if shutdown.is_cancelled() {
                        return;
                    }
                    tracing::warn!("redis pub/sub connection lost; reconnecting");
                }
                Err(e) => {
                    self.metrics.redis_error("subscribe");
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot connect pub/sub to redis");
                }
            }
            let jitter = Duration::from_millis(fastrand::u64(
                0..=backoff.as_millis().try_into().unwrap_or(100) / 2,
            ));
            tokio::select! {
                () = tokio::time::sleep(backoff + jitter) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn set_up(&self, up: bool) {
        self.health.pubsub_up.store(up, Ordering::Release);
        self.metrics.redis_up.set(i64::from(up));
    }

    /// Connects, subscribes this server's channel and every room, and catches rooms up.
    async fn connect(
        &self,
    ) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), redis::RedisError> {
        let pubsub = tokio::time::timeout(Duration::from_secs(2), self.client.get_async_pubsub())
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connect timed out"))
            })??;
        let (mut sink, stream) = pubsub.split();
        sink.subscribe(keys::pod_channel(&self.pod)).await?;
        let classes = self.hub.classes();
        if !classes.is_empty() {
            let channels: Vec<String> = classes.iter().map(|c| keys::broadcast(c)).collect();
            sink.subscribe(&channels).await?;
        }
        // Live messages now queue up in `stream`; what was published while we were away is in
        // each class's history. The hub drops anything delivered twice by id.
        for (class, last) in self.hub.last_ids() {
            if let Err(e) = self.store.add_pod_class(&self.pod, &class).await {
                self.metrics.redis_error(e.op);
            }
            // A Redis that restarted empty has forgotten who is where.
            let sessions: Vec<(String, String)> = self
                .hub
                .members(&class)
                .into_iter()
                .map(|(user, conn)| (user, member_value(&self.pod, conn)))
                .collect();
            if let Err(e) = self.store.reclaim(&class, &sessions).await {
                self.metrics.redis_error(e.op);
            }
            // A room without a last id had an empty history when it was subscribed, so all
            // of its history is news to its members.
            let since = last.unwrap_or(MessageId { ms: 0, seq: 0 });
            match self.store.history_since(&class, since).await {
                Ok(history) => {
                    if !history.complete && last.is_some() {
                        tracing::warn!(%class, "history trimmed during the outage; some comments cannot be caught up");
                    }
                    for (_, frame) in &history.frames {
                        self.hub.fan_out(&class, frame);
                    }
                }
                Err(e) => {
                    self.metrics.redis_error(e.op);
                    return Err(e.source);
                }
            }
            self.hub.mark_subscribed(&class, true);
        }
        Ok((sink, stream))
    }

    async fn serve(
        &self,
        mut sink: redis::aio::PubSubSink,
        mut stream: redis::aio::PubSubStream,
        commands: &mut mpsc::UnboundedReceiver<BusCommand>,
        shutdown: &CancellationToken,
    ) {
        let own_channel = keys::pod_channel(&self.pod);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { return };
                    let channel = message.get_channel_name();
                    let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else { continue };
                    if channel == own_channel {
                        self.on_pod_message(payload);
                    } else if let Some(class) = keys::class_of_broadcast(channel) {
                        self.hub.fan_out(class, payload);
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    if let Err(e) = self.apply(&mut sink, command).await {
                        self.metrics.redis_error("subscribe");
                        tracing::warn!(error = %e, "subscription change failed");
                        return;
                    }
                }
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Subscribes or unsubscribes; checks the hub at the time of applying, because a room may
    /// have emptied or reappeared since the command was queued.
    async fn apply(
        &self,
        sink: &mut redis::aio::PubSubSink,
        command: BusCommand,
    ) -> Result<(), redis::RedisError> {
        match command {
            BusCommand::Subscribe(class) => {
                if !self.hub.has_room(&class) {
                    return Ok(());
                }
                // Read the newest id before subscribing: everything published after the
                // subscription is newer, so seeding the room with it never hides a live message.
                let last = self.store.last_comment_id(&class).await.map_err(|e| {
                    self.metrics.redis_error(e.op);
                    e.source
                })?;
                self.hub.seed_last_id(&class, last);
                sink.subscribe(keys::broadcast(&class)).await?;
                if let Err(e) = self.store.add_pod_class(&self.pod, &class).await {
                    self.metrics.redis_error(e.op);
                }
                self.hub.mark_subscribed(&class, true);
            }
            BusCommand::Unsubscribe(class) => {
                if self.hub.has_room(&class) {
                    return Ok(());
                }
                sink.unsubscribe(keys::broadcast(&class)).await?;
                if let Err(e) = self.store.remove_pod_class(&self.pod, &class).await {
                    self.metrics.redis_error(e.op);
                }
            }
        }
        Ok(())
    }

    fn on_pod_message(&self, payload: &str) {
        match serde_json::from_str::<PodMessage>(payload) {
            Ok(PodMessage::Dm { at, class, frame }) => {
                if let Some(conn) = conn_on(&self.pod, &at) {
                    self.hub.deliver_to(&class, conn, Utf8Bytes::from(frame));
                }
            }
            Ok(PodMessage::Kick { class, user }) => self.hub.replace(&class, &user, None),
            Err(e) => tracing::warn!(error = %e, "unreadable message on this server's channel"),
        }
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
    }

    #[test]
    fn dm_placeholder_comes_first() {
        let message = serde_json::to_string(&PodMessage::Dm {
            at: "@AT@".into(),
            class: "x@AT@".into(),
            frame: "{\"text\":\"@AT@\"}".into(),
        })
        .unwrap();
        // The store's script replaces the first `@AT@` only: it must be the `at` field's.
        assert!(message.find("@AT@") < message.find("class"));
    }
}
