//! This server's local view of who is connected: rooms (one per class with members here),
//! the members' send queues, and the fan-out of a message to every local member.
//!
//! The hub never talks to Redis itself; it asks the bus to subscribe or unsubscribe a class's
//! channel when a room appears or empties, so each class is subscribed to once per server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc, watch};

use crate::metrics::{ClassLabel, Metrics};
use crate::protocol::{CloseReason, MessageId, comment_id};

pub type ConnId = u64;

/// What a connection's writer receives.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A comment, with its id so a recovering connection can skip what it already sent.
    Comment(MessageId, Utf8Bytes),
    /// Any other frame.
    Frame(Utf8Bytes),
}

/// A request to close one connection, raised from outside its task (slow consumer, replaced).
#[derive(Debug, Default)]
pub struct CloseSignal {
    reason: AtomicU8,
    notify: Notify,
}

const REASONS: [CloseReason; 2] = [CloseReason::SlowConsumer, CloseReason::Replaced];

impl CloseSignal {
    pub fn raise(&self, reason: CloseReason) {
        if let Some(index) = REASONS.iter().position(|r| *r == reason) {
            let code = u8::try_from(index + 1).unwrap_or(1);
            if self
                .reason
                .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.notify.notify_one();
            }
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

    fn get(&self) -> Option<CloseReason> {
        let code = usize::from(self.reason.load(Ordering::Acquire));
        code.checked_sub(1).and_then(|i| REASONS.get(i).copied())
    }
}

#[derive(Debug)]
struct Member {
    user: Arc<str>,
    tx: mpsc::Sender<Outbound>,
    close: Arc<CloseSignal>,
}

#[derive(Debug)]
struct Room {
    members: HashMap<ConnId, Member>,
    by_user: HashMap<Arc<str>, ConnId>,
    /// The newest comment fanned out here: the bus's catch-up after a Redis outage and live
    /// delivery may overlap, and nothing at or below this is delivered twice.
    last_id: Mutex<Option<MessageId>>,
    presence_sent: Mutex<Option<u64>>,
    subscribed: watch::Sender<bool>,
}

/// Asks the bus to change this server's subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusCommand {
    Subscribe(String),
    Unsubscribe(String),
}

/// What a joining connection gets back.
#[derive(Debug)]
pub struct Joined {
    /// Becomes true once the class's channel is subscribed; only then is the member "in".
    pub subscribed: watch::Receiver<bool>,
}

/// The local registry of rooms and members.
#[derive(Debug)]
pub struct Hub {
    rooms: RwLock<HashMap<Arc<str>, Room>>,
    bus: mpsc::UnboundedSender<BusCommand>,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(bus: mpsc::UnboundedSender<BusCommand>, metrics: Arc<Metrics>) -> Self {
        Self {
            rooms: RwLock::new(HashMap::new()),
            bus,
            metrics,
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

    /// Adds a member. A previous local connection of the same user in the class is told to
    /// close as replaced.
    pub fn join(
        &self,
        class: &str,
        user: &str,
        conn: ConnId,
        tx: mpsc::Sender<Outbound>,
        close: Arc<CloseSignal>,
    ) -> Joined {
        let mut rooms = self.write();
        let room = match rooms.get_mut(class) {
            Some(room) => room,
            None => {
                let _ = self.bus.send(BusCommand::Subscribe(class.to_string()));
                rooms.entry(Arc::from(class)).or_insert_with(|| Room {
                    members: HashMap::new(),
                    by_user: HashMap::new(),
                    last_id: Mutex::new(None),
                    presence_sent: Mutex::new(None),
                    subscribed: watch::Sender::new(false),
                })
            }
        };
        let user: Arc<str> = Arc::from(user);
        if let Some(previous) = room.by_user.insert(user.clone(), conn)
            && let Some(member) = room.members.get(&previous)
        {
            member.close.raise(CloseReason::Replaced);
        }
        room.members.insert(conn, Member { user, tx, close });
        self.metrics.connections.inc();
        self.metrics
            .class_connections
            .get_or_create(&ClassLabel {
                class: class.to_string(),
            })
            .inc();
        Joined {
            subscribed: room.subscribed.subscribe(),
        }
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
        if room.by_user.get(&member.user) == Some(&conn) {
            room.by_user.remove(&member.user);
        }
        self.metrics.connections.dec();
        let label = ClassLabel {
            class: class.to_string(),
        };
        if room.members.is_empty() {
            rooms.remove(class);
            self.metrics.class_connections.remove(&label);
            let _ = self.bus.send(BusCommand::Unsubscribe(class.to_string()));
        } else {
            self.metrics.class_connections.get_or_create(&label).dec();
        }
    }

    /// Asks a local connection of `user` in `class` to close as replaced, unless it is `keep`.
    pub fn replace(&self, class: &str, user: &str, keep: Option<ConnId>) {
        let rooms = self.read();
        let Some(room) = rooms.get(class) else { return };
        for (id, member) in &room.members {
            if &*member.user == user && Some(*id) != keep {
                member.close.raise(CloseReason::Replaced);
            }
        }
    }

    /// Each user's current connection in a class, to re-record sessions after Redis lost them.
    pub fn members(&self, class: &str) -> Vec<(String, ConnId)> {
        self.read()
            .get(class)
            .map(|room| {
                room.by_user
                    .iter()
                    .map(|(user, conn)| (user.to_string(), *conn))
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

    /// The newest comment id fanned out per class (for catch-up after an outage).
    pub fn last_ids(&self) -> Vec<(String, Option<MessageId>)> {
        self.read()
            .iter()
            .map(|(class, room)| (class.to_string(), *lock(&room.last_id)))
            .collect()
    }

    /// Sets a room's newest id if it has none yet.
    pub fn seed_last_id(&self, class: &str, id: Option<MessageId>) {
        if let Some(room) = self.read().get(class) {
            let mut last = lock(&room.last_id);
            if last.is_none() {
                *last = id;
            }
        }
    }

    pub fn mark_subscribed(&self, class: &str, subscribed: bool) {
        if let Some(room) = self.read().get(class) {
            room.subscribed.send_replace(subscribed);
        }
    }

    /// Fans a broadcast frame out to every local member of `class`. Comments at or below the
    /// room's newest id are dropped as already delivered.
    pub fn fan_out(&self, class: &str, text: &str) {
        let rooms = self.read();
        let Some(room) = rooms.get(class) else { return };
        let outbound = match comment_id(text) {
            Some(id) => {
                let mut last = lock(&room.last_id);
                if last.is_some_and(|last| id <= last) {
                    return;
                }
                *last = Some(id);
                Outbound::Comment(id, Utf8Bytes::from(text))
            }
            None => Outbound::Frame(Utf8Bytes::from(text)),
        };
        let delivered = self.send_all(room, &outbound);
        self.metrics.deliveries.inc_by(delivered);
    }

    /// Sends a presence count to local members if it changed since the last one sent.
    pub fn presence(&self, class: &str, count: u64, frame: impl FnOnce() -> Utf8Bytes) {
        let rooms = self.read();
        let Some(room) = rooms.get(class) else { return };
        {
            let mut sent = lock(&room.presence_sent);
            if *sent == Some(count) {
                return;
            }
            *sent = Some(count);
        }
        self.send_all(room, &Outbound::Frame(frame()));
    }

    /// Delivers a frame to one connection (a direct message routed to this server).
    pub fn deliver_to(&self, class: &str, conn: ConnId, frame: Utf8Bytes) -> bool {
        let rooms = self.read();
        let Some(member) = rooms.get(class).and_then(|room| room.members.get(&conn)) else {
            return false;
        };
        self.offer(member, Outbound::Frame(frame))
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
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.dropped("slow_consumer");
                member.close.raise(CloseReason::SlowConsumer);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::COMMENT_PREFIX;

    fn hub() -> (Hub, mpsc::UnboundedReceiver<BusCommand>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Hub::new(tx, Arc::new(Metrics::default())), rx)
    }

    fn member(
        hub: &Hub,
        class: &str,
        user: &str,
        conn: ConnId,
        depth: usize,
    ) -> (mpsc::Receiver<Outbound>, Arc<CloseSignal>) {
        let (tx, rx) = mpsc::channel(depth);
        let close = Arc::new(CloseSignal::default());
        hub.join(class, user, conn, tx, close.clone());
        (rx, close)
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
        let frame =
            |id: &str| format!("{COMMENT_PREFIX}{id}\",\"from\":\"u1\",\"text\":\"x\",\"ts\":1}}");
        hub.fan_out("c1", &frame("5-0"));
        hub.fan_out("c1", &frame("5-0"));
        hub.fan_out("c1", &frame("4-9"));
        hub.fan_out("c1", &frame("6-0"));
        for rx in [&mut a, &mut b] {
            let ids: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
                .map(|o| match o {
                    Outbound::Comment(id, _) => id.to_string(),
                    Outbound::Frame(_) => "frame".into(),
                })
                .collect();
            assert_eq!(ids, ["5-0", "6-0"]);
        }
    }

    #[test]
    fn a_full_queue_closes_the_member_as_slow() {
        let (hub, _bus) = hub();
        let (_rx, close) = member(&hub, "c1", "u1", 1, 1);
        hub.fan_out("c1", "{\"t\":\"react\"}");
        assert!(close.get().is_none());
        hub.fan_out("c1", "{\"t\":\"react\"}");
        assert_eq!(close.get(), Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn a_second_connection_of_the_same_user_replaces_the_first() {
        let (hub, _bus) = hub();
        let (_a, first) = member(&hub, "c1", "u1", 1, 8);
        let (_b, second) = member(&hub, "c1", "u1", 2, 8);
        assert_eq!(first.get(), Some(CloseReason::Replaced));
        assert!(second.get().is_none());
        hub.leave("c1", 1);
        assert!(hub.has_room("c1"));
    }
}
