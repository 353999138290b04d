//! This server's local view of who is connected: rooms (one per class with members here), the
//! members' send queues, the fan-out of a message to every local member, and each room's
//! reaction counts for the current tick.
//!
//! The hub never talks to Redis itself; it asks the bus to subscribe or unsubscribe a class's
//! channel when a room appears or empties, so each class is subscribed to once per server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::ws::Utf8Bytes;
use liveclass_protocol::server::{GapReason, comment_id};
use liveclass_protocol::{CloseReason, MessageId, ServerFrame};
use tokio::sync::{Notify, mpsc, watch};

use crate::metrics::{ClassLabel, Metrics};
use crate::outbox;
use crate::store::Position;

pub type ConnId = u64;

/// What a connection's writer receives: one pointer to a frame every member shares. tokio
/// allocates a connection's queue 32 slots at a time and keeps the first block for the
/// connection's life, so a slot's size is paid by every idle connection: a pointer costs
/// 256 bytes a connection there, a frame by value (id and text) 1.8 KiB.
#[derive(Debug, Clone)]
pub struct Outbound(Arc<OutboundFrame>);

#[derive(Debug)]
struct OutboundFrame {
    /// A comment's id, so a recovering connection can skip what it already sent.
    comment: Option<MessageId>,
    text: Utf8Bytes,
}

impl Outbound {
    pub fn comment(id: MessageId, text: Utf8Bytes) -> Self {
        Self(Arc::new(OutboundFrame {
            comment: Some(id),
            text,
        }))
    }

    pub fn frame(text: Utf8Bytes) -> Self {
        Self(Arc::new(OutboundFrame {
            comment: None,
            text,
        }))
    }

    /// The comment's id, for a comment.
    pub fn comment_id(&self) -> Option<MessageId> {
        self.0.comment
    }

    /// The frame's text (shared, not copied).
    pub fn text(&self) -> Utf8Bytes {
        self.0.text.clone()
    }
}

/// A request to close one connection, raised from outside its task.
#[derive(Debug, Default)]
pub struct CloseSignal {
    reason: AtomicU8,
    notify: Notify,
}

impl CloseSignal {
    /// Records the first reason raised and wakes the connection; later ones are ignored.
    pub fn raise(&self, reason: CloseReason) {
        let Some(index) = CloseReason::ALL.iter().position(|r| *r == reason) else {
            return;
        };
        let code = u8::try_from(index + 1).unwrap_or(u8::MAX);
        if self
            .reason
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.notify.notify_one();
        }
    }

    /// Waits until a close is requested; returns its reason.
    pub async fn raised(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.get() {
                return reason;
            }
            self.notify.notified().await;
        }
    }

    pub fn get(&self) -> Option<CloseReason> {
        let code = usize::from(self.reason.load(Ordering::Acquire));
        code.checked_sub(1)
            .and_then(|i| CloseReason::ALL.get(i).copied())
    }
}

#[derive(Debug)]
struct Member {
    user: Arc<str>,
    /// The connection's TCP peer: the gateway pod it came through.
    peer: IpAddr,
    tx: outbox::Sender<Outbound>,
    close: Arc<CloseSignal>,
}

/// Where the class's stream stands as far as this server's members are concerned.
#[derive(Debug, Default)]
struct StreamState {
    /// The newest comment fanned out here: catch-up after an outage and live delivery may
    /// overlap, and nothing at or below this is delivered twice.
    last_id: Option<MessageId>,
    epoch: Option<String>,
}

/// Reaction counts of one tick.
#[derive(Debug, Default)]
struct Reactions {
    /// From this server's members, to publish to the other servers.
    local: BTreeMap<String, u64>,
    /// From every server (this one included), to send to this server's members.
    incoming: BTreeMap<String, u64>,
}

/// Distinct emoji counted per class per tick; more are dropped, so a client cycling through
/// strings cannot grow a frame or the server's memory.
pub const MAX_EMOJI_PER_TICK: usize = 64;

#[derive(Debug)]
struct Room {
    members: HashMap<ConnId, Member>,
    by_user: HashMap<Arc<str>, Vec<ConnId>>,
    stream: Mutex<StreamState>,
    presence_sent: Mutex<Option<u64>>,
    subscribed: watch::Sender<bool>,
    reactions: Mutex<Reactions>,
    metric: ClassLabel,
}

/// Asks the bus to change this server's subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusCommand {
    Subscribe(String),
    Unsubscribe(String),
}

/// The local registry of rooms and members.
#[derive(Debug)]
pub struct Hub {
    rooms: RwLock<HashMap<Arc<str>, Room>>,
    bus: mpsc::UnboundedSender<BusCommand>,
    metrics: Arc<Metrics>,
    labelled: Mutex<HashSet<String>>,
    max_class_metrics: usize,
}

impl Hub {
    pub fn new(
        bus: mpsc::UnboundedSender<BusCommand>,
        metrics: Arc<Metrics>,
        max_class_metrics: usize,
    ) -> Self {
        Self {
            rooms: RwLock::new(HashMap::new()),
            bus,
            metrics,
            labelled: Mutex::new(HashSet::new()),
            max_class_metrics,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Room>> {
        self.rooms
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Room>> {
        self.rooms
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The metric label of a new room: its class while fewer than the cap have one.
    fn label_for(&self, class: &str) -> ClassLabel {
        let mut labelled = lock(&self.labelled);
        let class = if labelled.len() < self.max_class_metrics {
            labelled.insert(class.to_string());
            class.to_string()
        } else {
            "_other".to_string()
        };
        ClassLabel { class }
    }

    /// Adds a member; the first member of a class makes the bus subscribe its channel. The
    /// receiver turns true once it is subscribed; only then is the member "in".
    pub fn join(
        &self,
        class: &str,
        user: &str,
        conn: ConnId,
        peer: IpAddr,
        tx: outbox::Sender<Outbound>,
        close: Arc<CloseSignal>,
    ) -> watch::Receiver<bool> {
        let mut rooms = self.write();
        let room = match rooms.get_mut(class) {
            Some(room) => room,
            None => {
                let _ = self.bus.send(BusCommand::Subscribe(class.to_string()));
                let metric = self.label_for(class);
                rooms.entry(Arc::from(class)).or_insert_with(|| Room {
                    members: HashMap::new(),
                    by_user: HashMap::new(),
                    stream: Mutex::new(StreamState::default()),
                    presence_sent: Mutex::new(None),
                    subscribed: watch::Sender::new(false),
                    reactions: Mutex::new(Reactions::default()),
                    metric,
                })
            }
        };
        let user: Arc<str> = Arc::from(user);
        room.by_user.entry(user.clone()).or_default().push(conn);
        room.members.insert(
            conn,
            Member {
                user,
                peer,
                tx,
                close,
            },
        );
        self.metrics.connections.inc();
        self.metrics
            .class_connections
            .get_or_create(&room.metric)
            .inc();
        room.subscribed.subscribe()
    }

    /// Removes a member; the last one out unsubscribes the class.
    pub fn leave(&self, class: &str, conn: ConnId) {
        let mut rooms = self.write();
        let Some(room) = rooms.get_mut(class) else {
            return;
        };
        let Some(member) = room.members.remove(&conn) else {
            return;
        };
        if let Some(conns) = room.by_user.get_mut(&member.user) {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                room.by_user.remove(&member.user);
            }
        }
        self.metrics.connections.dec();
        // One statement: the family's read guard must be gone before `remove` takes its write
        // lock, or the last member out deadlocks the server.
        self.metrics
            .class_connections
            .get_or_create(&room.metric)
            .dec();
        if room.members.is_empty() {
            if room.metric.class != "_other" {
                self.metrics.class_connections.remove(&room.metric);
                lock(&self.labelled).remove(&room.metric.class);
            }
            rooms.remove(class);
            let _ = self.bus.send(BusCommand::Unsubscribe(class.to_string()));
        }
    }

    /// Closes one connection (named by another server's `claim`, or by the school's API).
    pub fn close_connection(&self, class: &str, conn: ConnId, reason: CloseReason) {
        if let Some(member) = self.read().get(class).and_then(|r| r.members.get(&conn)) {
            member.close.raise(reason);
        }
    }

    /// Closes every local connection of `user` in `class`.
    pub fn close_user(&self, class: &str, user: &str, reason: CloseReason) -> usize {
        let rooms = self.read();
        let Some(room) = rooms.get(class) else {
            return 0;
        };
        let conns = room
            .by_user
            .get(user)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for conn in conns {
            if let Some(member) = room.members.get(conn) {
                member.close.raise(reason);
            }
        }
        conns.len()
    }

    /// The local connections of `class` whose TCP peer is `peer` (a gateway pod).
    pub fn connections_via(&self, class: &str, peer: IpAddr) -> Vec<ConnId> {
        self.read().get(class).map_or_else(Vec::new, |room| {
            room.members
                .iter()
                .filter(|(_, member)| member.peer == peer)
                .map(|(conn, _)| *conn)
                .collect()
        })
    }

    /// Closes every local connection (the end of a drain).
    pub fn close_all(&self, reason: CloseReason) {
        for room in self.read().values() {
            for member in room.members.values() {
                member.close.raise(reason);
            }
        }
    }

    /// Every local connection of a class as `(user, conn)`, to re-record them in Redis.
    pub fn sessions(&self, class: &str) -> Vec<(String, ConnId)> {
        self.read()
            .get(class)
            .map(|room| {
                room.members
                    .iter()
                    .map(|(conn, member)| (member.user.to_string(), *conn))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn has_room(&self, class: &str) -> bool {
        self.read().contains_key(class)
    }

    pub fn classes(&self) -> Vec<String> {
        self.read().keys().map(|c| c.to_string()).collect()
    }

    /// Open connections per class.
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.read()
            .iter()
            .map(|(class, room)| (class.to_string(), room.members.len()))
            .collect()
    }

    /// Where each room stands: the newest id delivered and its epoch.
    pub fn positions(&self) -> Vec<(String, Option<MessageId>, Option<String>)> {
        self.read()
            .iter()
            .map(|(class, room)| {
                let stream = lock(&room.stream);
                (class.to_string(), stream.last_id, stream.epoch.clone())
            })
            .collect()
    }

    /// Seeds a new room's position (read before its channel was subscribed, so everything
    /// live is newer). A room that has one keeps it.
    pub fn seed_position(&self, class: &str, position: &Position) {
        if let Some(room) = self.read().get(class) {
            let mut stream = lock(&room.stream);
            if stream.last_id.is_none() {
                stream.last_id = Some(position.last_id);
            }
            if stream.epoch.is_none() {
                stream.epoch = Some(position.epoch.clone());
            }
        }
    }

    pub fn mark_subscribed(&self, class: &str, subscribed: bool) {
        if let Some(room) = self.read().get(class) {
            room.subscribed.send_replace(subscribed);
        }
    }

    /// Tells every member of `class` that their view has a hole, and moves the room to the
    /// class's current position.
    pub fn gap(&self, class: &str, reason: GapReason, position: &Position) {
        let rooms = self.read();
        let Some(room) = rooms.get(class) else { return };
        {
            let mut stream = lock(&room.stream);
            stream.last_id = Some(position.last_id);
            stream.epoch = Some(position.epoch.clone());
        }
        let frame = ServerFrame::Gap {
            reason,
            epoch: position.epoch.as_str().into(),
            last_id: position.last_id,
        };
        self.metrics.gap(reason);
        self.send_all(room, &Outbound::frame(Utf8Bytes::from(frame.to_text())));
    }

    /// Fans a comment frame out to every local member of `class`, unless it is at or below
    /// the room's newest id (already delivered).
    pub fn fan_out(&self, class: &str, text: &str) {
        let rooms = self.read();
        let Some(room) = rooms.get(class) else { return };
        let Some(id) = comment_id(text) else { return };
        {
            let mut stream = lock(&room.stream);
            if stream.last_id.is_some_and(|last| id <= last) {
                return;
            }
            stream.last_id = Some(id);
        }
        let delivered = self.send_all(room, &Outbound::comment(id, Utf8Bytes::from(text)));
        self.metrics.deliveries.inc_by(delivered);
    }

    /// Sends a presence count to local members if it changed since the last one sent.
    pub fn presence(&self, class: &str, count: u64) {
        let rooms = self.read();
        let Some(room) = rooms.get(class) else { return };
        {
            let mut sent = lock(&room.presence_sent);
            if *sent == Some(count) {
                return;
            }
            *sent = Some(count);
        }
        let frame = ServerFrame::Presence { count }.to_text();
        self.send_all(room, &Outbound::frame(Utf8Bytes::from(frame)));
    }

    /// The presence count last sent to a class, for a member who just joined.
    pub fn last_presence(&self, class: &str) -> Option<u64> {
        self.read()
            .get(class)
            .and_then(|room| *lock(&room.presence_sent))
    }

    /// Delivers a frame to every local connection of `user` (a direct message).
    pub fn deliver_to_user(&self, class: &str, user: &str, frame: &Utf8Bytes) -> usize {
        let rooms = self.read();
        let Some(room) = rooms.get(class) else {
            return 0;
        };
        let conns = room
            .by_user
            .get(user)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let outbound = Outbound::frame(frame.clone());
        conns
            .iter()
            .filter_map(|conn| room.members.get(conn))
            .filter(|member| self.offer(member, outbound.clone()))
            .count()
    }

    /// Counts a reaction of a local member for this tick. False when the tick already holds as
    /// many distinct emoji as it may.
    pub fn add_reaction(&self, class: &str, emoji: &str) -> bool {
        let rooms = self.read();
        let Some(room) = rooms.get(class) else {
            return false;
        };
        let mut reactions = lock(&room.reactions);
        add_count(&mut reactions.local, emoji, 1)
    }

    /// Takes this tick's local counts, to publish to every server of the class.
    pub fn take_local_reactions(&self) -> Vec<(String, BTreeMap<String, u64>)> {
        self.read()
            .iter()
            .filter_map(|(class, room)| {
                let mut reactions = lock(&room.reactions);
                (!reactions.local.is_empty())
                    .then(|| (class.to_string(), std::mem::take(&mut reactions.local)))
            })
            .collect()
    }

    /// Adds counts another server (or this one) published for the class.
    pub fn add_incoming_reactions(&self, class: &str, counts: &BTreeMap<String, u64>) {
        if let Some(room) = self.read().get(class) {
            let mut reactions = lock(&room.reactions);
            for (emoji, n) in counts {
                add_count(&mut reactions.incoming, emoji, *n);
            }
        }
    }

    /// Sends each room's counts since the last tick as one `reactions` frame.
    pub fn flush_reactions(&self, tick_ms: u64) {
        for room in self.read().values() {
            let counts = std::mem::take(&mut lock(&room.reactions).incoming);
            if counts.is_empty() {
                continue;
            }
            let frame = ServerFrame::Reactions {
                counts: counts.into_iter().map(|(k, v)| (k.into(), v)).collect(),
                ms: tick_ms,
            };
            self.send_all(room, &Outbound::frame(Utf8Bytes::from(frame.to_text())));
        }
    }

    fn send_all(&self, room: &Room, outbound: &Outbound) -> u64 {
        room.members
            .values()
            .map(|member| u64::from(self.offer(member, outbound.clone())))
            .sum()
    }

    /// Queues without waiting: a member whose queue is full is closed as a slow consumer
    /// rather than allowed to hold up everyone else or grow the server's memory.
    fn offer(&self, member: &Member, outbound: Outbound) -> bool {
        match member.tx.try_send(outbound) {
            Ok(()) => true,
            Err(outbox::OfferError::Full) => {
                self.metrics.dropped("slow_consumer");
                member.close.raise(CloseReason::SlowConsumer);
                false
            }
            Err(outbox::OfferError::Closed) => false,
        }
    }
}

/// Adds `n` to `emoji`'s count unless that would be one distinct emoji too many.
fn add_count(counts: &mut BTreeMap<String, u64>, emoji: &str, n: u64) -> bool {
    if let Some(count) = counts.get_mut(emoji) {
        *count = count.saturating_add(n);
        return true;
    }
    if counts.len() >= MAX_EMOJI_PER_TICK {
        return false;
    }
    counts.insert(emoji.to_string(), n);
    true
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use liveclass_protocol::server::{comment_frame, comment_frame_tail};

    fn hub() -> (Hub, mpsc::UnboundedReceiver<BusCommand>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Hub::new(tx, Arc::new(Metrics::default()), 2), rx)
    }

    fn member(
        hub: &Hub,
        class: &str,
        user: &str,
        conn: ConnId,
        depth: usize,
    ) -> (outbox::Receiver<Outbound>, Arc<CloseSignal>) {
        let (tx, rx) = outbox::outbox(depth);
        let close = Arc::new(CloseSignal::default());
        hub.join(class, user, conn, LOOPBACK, tx, close.clone());
        (rx, close)
    }

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn connections_are_found_by_the_gateway_they_came_through() {
        let (hub, _bus) = hub();
        let gateway: IpAddr = "10.244.0.7".parse().unwrap();
        let _a = member(&hub, "c", "u1", 1, 4);
        let (tx, _rx) = outbox::outbox(4);
        hub.join("c", "u2", 2, gateway, tx, Arc::default());
        let (tx, _rx2) = outbox::outbox(4);
        hub.join("other", "u3", 3, gateway, tx, Arc::default());
        assert_eq!(hub.connections_via("c", gateway), [2]);
        assert_eq!(hub.connections_via("c", LOOPBACK), [1]);
        assert!(hub.connections_via("nobody", gateway).is_empty());
    }

    fn drain(rx: &mut outbox::Receiver<Outbound>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|o| match o.comment_id() {
                Some(id) => id.to_string(),
                None => o.text().to_string(),
            })
            .collect()
    }

    fn comment(id: &str) -> String {
        comment_frame(
            id.parse().unwrap(),
            &comment_frame_tail("u1", None, "x", 1, None),
        )
    }

    #[test]
    fn subscribes_once_per_class_and_unsubscribes_with_the_last_member() {
        let (hub, mut bus) = hub();
        let _a = member(&hub, "c1", "u1", 1, 8);
        let _b = member(&hub, "c1", "u2", 2, 8);
        assert_eq!(bus.try_recv().unwrap(), BusCommand::Subscribe("c1".into()));
        assert!(bus.try_recv().is_err());
        hub.leave("c1", 1);
        assert!(bus.try_recv().is_err());
        hub.leave("c1", 2);
        assert_eq!(
            bus.try_recv().unwrap(),
            BusCommand::Unsubscribe("c1".into())
        );
        assert!(!hub.has_room("c1"));
    }

    #[test]
    fn fan_out_reaches_every_member_once_and_skips_old_comments() {
        let (hub, _bus) = hub();
        let (mut a, _) = member(&hub, "c1", "u1", 1, 8);
        let (mut b, _) = member(&hub, "c1", "u2", 2, 8);
        for id in ["5-0", "5-0", "4-9", "6-0"] {
            hub.fan_out("c1", &comment(id));
        }
        assert_eq!(drain(&mut a), ["5-0", "6-0"]);
        assert_eq!(drain(&mut b), ["5-0", "6-0"]);
    }

    #[test]
    fn a_full_queue_closes_the_member_as_slow() {
        let (hub, _bus) = hub();
        let (_rx, close) = member(&hub, "c1", "u1", 1, 1);
        hub.fan_out("c1", &comment("1-0"));
        assert!(close.get().is_none());
        hub.fan_out("c1", &comment("2-0"));
        assert_eq!(close.get(), Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn two_connections_of_one_user_both_stay_and_both_get_direct_messages() {
        let (hub, _bus) = hub();
        let (mut a, first) = member(&hub, "c1", "u1", 1, 8);
        let (mut b, second) = member(&hub, "c1", "u1", 2, 8);
        assert!(first.get().is_none() && second.get().is_none());
        assert_eq!(hub.deliver_to_user("c1", "u1", &Utf8Bytes::from("dm")), 2);
        assert_eq!(drain(&mut a), ["dm"]);
        assert_eq!(drain(&mut b), ["dm"]);
        hub.close_connection("c1", 1, CloseReason::Replaced);
        assert_eq!(first.get(), Some(CloseReason::Replaced));
        assert!(second.get().is_none());
    }

    #[test]
    fn reactions_are_counted_per_tick_into_one_frame() {
        let (hub, _bus) = hub();
        let (mut a, _) = member(&hub, "c1", "u1", 1, 8);
        for _ in 0..1000 {
            assert!(hub.add_reaction("c1", "👍"));
        }
        for i in 0..MAX_EMOJI_PER_TICK {
            hub.add_reaction("c1", &format!("e{i}"));
        }
        assert!(!hub.add_reaction("c1", "one-too-many"));
        let local = hub.take_local_reactions();
        assert_eq!(local.len(), 1);
        assert_eq!(local[0].1["👍"], 1000);
        hub.add_incoming_reactions("c1", &local[0].1);
        hub.flush_reactions(250);
        let frames = drain(&mut a);
        assert_eq!(frames.len(), 1);
        let frame: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(frame["t"], "reactions");
        assert_eq!(frame["counts"]["👍"], 1000);
        hub.flush_reactions(250);
        assert!(drain(&mut a).is_empty());
    }

    #[test]
    fn class_metric_series_are_capped() {
        let (hub, _bus) = hub();
        let _a = member(&hub, "c1", "u1", 1, 8);
        let _b = member(&hub, "c2", "u1", 2, 8);
        let _c = member(&hub, "c3", "u1", 3, 8);
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        hub.metrics.register(&mut registry);
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("class=\"_other\""));
        assert!(!text.contains("class=\"c3\""));
    }
}
