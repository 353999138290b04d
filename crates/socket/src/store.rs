//! Everything the server asks of Redis, except pub/sub listening (see `bus`): the key layout,
//! the Lua scripts that keep multi-step updates atomic, and one method per question.
//!
//! Keys of one class share the hash tag `{<class>}`, keys of one server the tag
//! `{<pod>}`; no script touches two tags, so a Redis Cluster would keep each script's keys on
//! one slot. The only key outside both is the list of servers, `lc:pods`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use liveclass_protocol::MessageId;
use liveclass_protocol::server::{COMMENT_PREFIX, comment_frame};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use crate::config::{Limits, Rate};
use crate::redis_link::{LinkError, RedisTarget};

/// Why a Redis call failed; `op` is the metric label.
#[derive(Debug, thiserror::Error)]
#[error("redis {op}: {source}")]
pub struct StoreError {
    pub op: &'static str,
    #[source]
    pub source: redis::RedisError,
}

fn op(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError { op, source }
}

fn parse_error(op: &'static str, what: &'static str, value: String) -> StoreError {
    StoreError {
        op,
        source: redis::RedisError::from((redis::ErrorKind::Parse, what, value)),
    }
}

/// Key and channel names: the one place they are spelled.
pub mod keys {
    // The keys the operator reads too are defined with it, in the protocol crate.
    pub use liveclass_protocol::bus::{
        broadcast_channel as broadcast, class_of_broadcast, pods_key as pods_of_class,
        where_key as where_,
    };
    pub fn history(class: &str) -> String {
        format!("lc:{{{class}}}:history")
    }
    pub fn epoch(class: &str) -> String {
        format!("lc:{{{class}}}:epoch")
    }
    pub fn lost(class: &str) -> String {
        format!("lc:{{{class}}}:lost")
    }
    pub fn user_budget(class: &str, user: &str) -> String {
        format!("lc:{{{class}}}:budget:{user}")
    }
    pub fn slow_mode(class: &str) -> String {
        format!("lc:{{{class}}}:slow")
    }
    pub fn reference(class: &str, user: &str, reference: &str) -> String {
        format!("lc:{{{class}}}:ref:{user}:{reference}")
    }
    pub fn handshakes(class: &str, user: &str) -> String {
        format!("lc:{{{class}}}:hs:{user}")
    }
    pub fn kicked(class: &str, user: &str) -> String {
        format!("lc:{{{class}}}:kicked:{user}")
    }
    pub const POD_CHANNEL_PREFIX: &str = "lc:pod:{";
    pub const POD_CHANNEL_SUFFIX: &str = "}";
    pub fn pod_channel(pod: &str) -> String {
        format!("{POD_CHANNEL_PREFIX}{pod}{POD_CHANNEL_SUFFIX}")
    }
    pub fn pod_alive(pod: &str) -> String {
        format!("lc:pod:{{{pod}}}:alive")
    }
    pub fn pod_classes(pod: &str) -> String {
        format!("lc:pod:{{{pod}}}:classes")
    }
    pub fn pod_reaper(pod: &str) -> String {
        format!("lc:pod:{{{pod}}}:reaper")
    }
    pub const PODS: &str = "lc:pods";
}

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/common.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

struct Scripts {
    publish_comment: Script,
    position: Script,
    recover: Script,
    claim: Script,
    release: Script,
    reclaim: Script,
    forget_pod: Script,
    send_dm: Script,
    admit: Script,
    claim_dead_pod: Script,
    finish_reap: Script,
    unlist_pod: Script,
    disconnect: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            publish_comment: script!("publish_comment.lua"),
            position: script!("position.lua"),
            recover: script!("recover.lua"),
            claim: script!("claim.lua"),
            release: script!("release.lua"),
            reclaim: script!("reclaim.lua"),
            forget_pod: script!("forget_pod.lua"),
            send_dm: script!("send_dm.lua"),
            admit: script!("admit.lua"),
            claim_dead_pod: script!("claim_dead_pod.lua"),
            finish_reap: script!("finish_reap.lua"),
            unlist_pod: script!("unlist_pod.lua"),
            disconnect: script!("disconnect.lua"),
        }
    }
}

/// Where a class's stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub last_id: MessageId,
}

/// The answer to "what came after `since`?".
#[derive(Debug, Default)]
pub struct Recovery {
    /// True when `frames` is exactly everything after `since`.
    pub complete: bool,
    /// Not complete because a failover lost comments after `since` that were delivered.
    pub lost: bool,
    pub epoch: String,
    pub last_id: MessageId,
    pub frames: Vec<(MessageId, String)>,
}

/// Who says a recovery's `since` was in the class's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinceFrom {
    /// A client: a `since` the stream does not hold gets nothing promised.
    Client,
    /// This server, which delivered it to its members: if the stream no longer holds it, a
    /// failover lost it, and that is recorded so that no later recovery from before it is
    /// called complete.
    ThisServer,
}

/// What became of a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Stored(MessageId),
    /// The same `ref` was stored before (a retry); this is its id.
    Duplicate(MessageId),
    /// Over the user's budget; try again after this long.
    RateLimited(Duration),
    /// The class is in slow mode; try again after this long.
    SlowMode(Duration),
}

/// The result of a handshake's admission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Kicked,
    TooMany,
}

/// What a heartbeat learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// What the heartbeat key held before this beat: if it is not what this server wrote last,
    /// it was reaped, or Redis lost or rolled back its state.
    pub previous: Option<String>,
    /// Another server is cleaning this one up right now.
    pub being_reaped: bool,
}

/// A handle on Redis for commands; cheap to clone. One multiplexed connection underneath, which
/// [`Store::reconnect`] replaces when the heartbeat finds it dead.
#[derive(Clone)]
pub struct Store {
    target: Arc<RedisTarget>,
    conn: Arc<RwLock<ConnectionManager>>,
    timeout: Duration,
    history_cap: usize,
    history_ttl_ms: u64,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("redis", &self.target.address())
            .field("history_cap", &self.history_cap)
            .finish_non_exhaustive()
    }
}

fn manager(target: &RedisTarget, timeout: Duration) -> Result<ConnectionManager, LinkError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(2));
    Ok(ConnectionManager::new_lazy_with_config(
        target.client()?,
        config,
    )?)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An epoch for a class that has none: random, so a Redis that lost a class's history starts
/// a different one.
pub fn new_epoch() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(12)
        .collect()
}

fn parse_id(op: &'static str, id: String) -> Result<MessageId, StoreError> {
    id.parse().map_err(|_| parse_error(op, "stream id", id))
}

impl Store {
    /// Connects lazily: the server starts (not ready) even when Redis is not there yet.
    pub fn new(
        target: Arc<RedisTarget>,
        timeout: Duration,
        history_cap: usize,
    ) -> Result<Self, LinkError> {
        let conn = manager(&target, timeout)?;
        Ok(Self {
            target,
            conn: Arc::new(RwLock::new(conn)),
            timeout,
            history_cap,
            // A class's history outlives a quiet day, not a term.
            history_ttl_ms: 24 * 3600 * 1000,
            scripts: Arc::new(Scripts::new()),
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the connection: the old one stopped answering without failing (a half-open
    /// link), which the connection manager alone never notices.
    pub fn reconnect(&self) -> Result<(), LinkError> {
        let fresh = manager(&self.target, self.timeout)?;
        *self
            .conn
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// Stores and broadcasts a comment.
    pub async fn publish_comment(
        &self,
        class: &str,
        user: &str,
        reference: Option<&str>,
        tail: &str,
        limits: &Limits,
        slow_mode: bool,
    ) -> Result<Published, StoreError> {
        let class_rate = if slow_mode {
            limits.class_comments
        } else {
            Rate {
                per_second: 0.0,
                burst: 1,
            }
        };
        let mut invocation = self.scripts.publish_comment.prepare_invoke();
        invocation
            .key(keys::history(class))
            .key(keys::epoch(class))
            .key(keys::user_budget(class, user))
            .key(keys::slow_mode(class));
        if let Some(reference) = reference {
            invocation.key(keys::reference(class, user, reference));
        }
        invocation
            .arg(self.history_cap)
            .arg(tail)
            .arg(keys::broadcast(class))
            .arg(COMMENT_PREFIX)
            .arg(self.history_ttl_ms)
            .arg(limits.user_publish.interval_ms())
            .arg(limits.user_publish.burst)
            .arg(class_rate.interval_ms())
            .arg(class_rate.burst)
            .arg(duration_ms(limits.dedupe_window))
            .arg(new_epoch());
        let (outcome, value): (String, String) = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(op("publish_comment"))?;
        let wait = |value: &str| Duration::from_millis(value.parse().unwrap_or(1000));
        match outcome.as_str() {
            "ok" => Ok(Published::Stored(parse_id("publish_comment", value)?)),
            "duplicate" => Ok(Published::Duplicate(parse_id("publish_comment", value)?)),
            "rate_limited" => Ok(Published::RateLimited(wait(&value))),
            "slow_mode" => Ok(Published::SlowMode(wait(&value))),
            _ => Err(parse_error("publish_comment", "outcome", outcome)),
        }
    }

    /// Publishes an internal message on a class's channel (reaction counts).
    pub async fn publish_to_class(&self, class: &str, message: &str) -> Result<(), StoreError> {
        self.conn()
            .publish::<_, _, ()>(keys::broadcast(class), message)
            .await
            .map_err(op("publish"))
    }

    /// Publishes `message` to every server holding a connection of `to`, charging `from`'s
    /// budget. `Ok(None)` when over budget; otherwise how many servers it reached (0: `to` is
    /// not connected).
    pub async fn send_direct(
        &self,
        class: &str,
        from: &str,
        to: &str,
        message: &str,
        budget: Rate,
    ) -> Result<Option<u64>, StoreError> {
        let (outcome, value): (String, String) = self
            .scripts
            .send_dm
            .key(keys::where_(class))
            .key(keys::user_budget(class, from))
            .arg(to)
            .arg(message)
            .arg(keys::POD_CHANNEL_PREFIX)
            .arg(keys::POD_CHANNEL_SUFFIX)
            .arg(budget.interval_ms())
            .arg(budget.burst)
            .invoke_async(&mut self.conn())
            .await
            .map_err(op("send_dm"))?;
        match outcome.as_str() {
            "ok" => Ok(Some(value.parse().unwrap_or(0))),
            _ => Ok(None),
        }
    }

    /// The class's epoch and newest id.
    pub async fn position(&self, class: &str) -> Result<Position, StoreError> {
        let (epoch, last): (String, String) = self
            .scripts
            .position
            .key(keys::history(class))
            .key(keys::epoch(class))
            .arg(new_epoch())
            .arg(self.history_ttl_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(op("position"))?;
        Ok(Position {
            epoch,
            last_id: parse_id("position", last)?,
        })
    }

    /// The positions of several classes in one round trip.
    pub async fn positions(&self, classes: &[String]) -> Result<Vec<Position>, StoreError> {
        let mut out = Vec::with_capacity(classes.len());
        // One script call per class, pipelined by the multiplexed connection.
        let calls = classes.iter().map(|class| self.position(class));
        for position in futures_util::future::join_all(calls).await {
            out.push(position?);
        }
        Ok(out)
    }

    /// Comments after `since`: all of them, exactly, or none and `complete: false`.
    pub async fn recover(
        &self,
        class: &str,
        since: MessageId,
        epoch: Option<&str>,
        most: usize,
        from: SinceFrom,
    ) -> Result<Recovery, StoreError> {
        type Entries = Vec<(String, Vec<String>)>;
        let (complete, epoch, last, entries): (i64, String, String, Entries) = self
            .scripts
            .recover
            .key(keys::history(class))
            .key(keys::epoch(class))
            .key(keys::lost(class))
            .arg(since.to_string())
            .arg(most)
            .arg(epoch.unwrap_or_default())
            .arg(new_epoch())
            .arg(self.history_ttl_ms)
            .arg(if from == SinceFrom::ThisServer {
                "1"
            } else {
                "0"
            })
            .invoke_async(&mut self.conn())
            .await
            .map_err(op("recover"))?;
        let frames = entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let id: MessageId = id.parse().ok()?;
                let tail = fields.get(1)?;
                Some((id, comment_frame(id, tail)))
            })
            .collect();
        Ok(Recovery {
            complete: complete == 1,
            lost: complete == -1,
            epoch,
            last_id: parse_id("recover", last)?,
            frames,
        })
    }

    /// Checks a handshake: the user is not kept out of the class, nor over their budget.
    pub async fn admit(
        &self,
        class: &str,
        user: &str,
        window: Duration,
        most: u32,
    ) -> Result<Admission, StoreError> {
        let outcome: String = self
            .scripts
            .admit
            .key(keys::handshakes(class, user))
            .key(keys::kicked(class, user))
            .arg(duration_ms(window))
            .arg(most)
            .invoke_async(&mut self.conn())
            .await
            .map_err(op("admit"))?;
        Ok(match outcome.as_str() {
            "kicked" => Admission::Kicked,
            "busy" => Admission::TooMany,
            _ => Admission::Admitted,
        })
    }

    /// Records that `user` of `class` is connected as `member` (`pod#conn`); connections beyond
    /// `most` for this user are told to close. Returns how many were.
    pub async fn claim(
        &self,
        class: &str,
        user: &str,
        member: &str,
        most: u32,
    ) -> Result<u64, StoreError> {
        self.scripts
            .claim
            .key(keys::where_(class))
            .arg(user)
            .arg(member)
            .arg(most)
            .arg(class)
            .arg(keys::POD_CHANNEL_PREFIX)
            .arg(keys::POD_CHANNEL_SUFFIX)
            .invoke_async(&mut self.conn())
            .await
            .map_err(op("claim"))
    }

    /// Re-records connections Redis forgot; returns how many were missing.
    pub async fn reclaim(
        &self,
        class: &str,
        entries: &[(String, String)],
    ) -> Result<u64, StoreError> {
        let mut added = 0;
        // In chunks, so that one script never blocks Redis for long.
        for chunk in entries.chunks(500) {
            let mut invocation = self.scripts.reclaim.prepare_invoke();
            invocation.key(keys::where_(class));
            for (user, member) in chunk {
                invocation.arg(user).arg(member);
            }
            let n: u64 = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(op("reclaim"))?;
            added += n;
        }
        Ok(added)
    }

    /// Forgets `member` of `user`.
    pub async fn release(&self, class: &str, user: &str, member: &str) -> Result<(), StoreError> {
        self.scripts
            .release
            .key(keys::where_(class))
            .arg(user)
            .arg(member)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(op("release"))
    }

    /// Users connected per class, in the order given.
    pub async fn presence(&self, classes: &[String]) -> Result<Vec<u64>, StoreError> {
        let mut pipe = redis::pipe();
        for class in classes {
            pipe.hlen(keys::where_(class));
        }
        pipe.query_async(&mut self.conn())
            .await
            .map_err(op("presence"))
    }

    /// Removes `user` from `class` for the school's backend: keeps them out for `keep_out_ms`
    /// (0: not at all) and has every server holding one of their connections close it with
    /// `message` (a [`crate::bus::PodMessage`]). Returns how many servers were told.
    pub async fn disconnect(
        &self,
        class: &str,
        user: &str,
        keep_out_ms: u64,
        message: &str,
    ) -> Result<u64, StoreError> {
        self.scripts
            .disconnect
            .key(keys::where_(class))
            .key(keys::kicked(class, user))
            .arg(user)
            .arg(keep_out_ms)
            .arg(message)
            .arg(keys::POD_CHANNEL_PREFIX)
            .arg(keys::POD_CHANNEL_SUFFIX)
            .invoke_async(&mut self.conn())
            .await
            .map_err(op("disconnect"))
    }

    /// The ids of the users connected to `class`, at most `most` of them, and how many there
    /// are in all.
    pub async fn presence_users(
        &self,
        class: &str,
        most: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let key = keys::where_(class);
        let mut conn = self.conn();
        let count: u64 = conn.hlen(&key).await.map_err(op("presence"))?;
        let mut users = Vec::new();
        let mut cursor = 0u64;
        // HSCAN, not HKEYS: a class of 8,000 must not block Redis for one answer.
        loop {
            let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(op("presence"))?;
            users.extend(page.into_iter().map(|(user, _)| user));
            cursor = next;
            if cursor == 0 || users.len() >= most {
                break;
            }
        }
        users.truncate(most);
        Ok((count, users))
    }

    /// The frame of one stored comment, if the history still holds it.
    pub async fn comment(&self, class: &str, id: MessageId) -> Result<Option<String>, StoreError> {
        type Entries = Vec<(String, Vec<(String, String)>)>;
        let entries: Entries = redis::cmd("XRANGE")
            .arg(keys::history(class))
            .arg(id.to_string())
            .arg(id.to_string())
            .query_async(&mut self.conn())
            .await
            .map_err(op("history"))?;
        Ok(entries.into_iter().find_map(|(_, fields)| {
            let tail = fields.into_iter().find(|(k, _)| k == "f")?.1;
            Some(comment_frame(id, &tail))
        }))
    }

    /// Up to `most` comments of `class`: the newest ones, or those after `since`, oldest first.
    pub async fn history(
        &self,
        class: &str,
        since: Option<MessageId>,
        most: usize,
    ) -> Result<Vec<(MessageId, String)>, StoreError> {
        type Entries = Vec<(String, Vec<(String, String)>)>;
        let mut conn = self.conn();
        let entries: Entries = match since {
            Some(since) => redis::cmd("XRANGE")
                .arg(keys::history(class))
                .arg(format!("({since}"))
                .arg("+")
                .arg("COUNT")
                .arg(most)
                .query_async(&mut conn)
                .await
                .map_err(op("history"))?,
            None => {
                let mut newest: Entries = redis::cmd("XREVRANGE")
                    .arg(keys::history(class))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(most)
                    .query_async(&mut conn)
                    .await
                    .map_err(op("history"))?;
                newest.reverse();
                newest
            }
        };
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let id: MessageId = id.parse().ok()?;
                let tail = fields.into_iter().find(|(k, _)| k == "f")?.1;
                Some((id, comment_frame(id, &tail)))
            })
            .collect())
    }

    /// Notes that this server has members of `class` (for clean-up after a crash).
    pub async fn add_pod_classes(&self, pod: &str, classes: &[String]) -> Result<(), StoreError> {
        if classes.is_empty() {
            return Ok(());
        }
        self.conn()
            .sadd::<_, _, ()>(keys::pod_classes(pod), classes)
            .await
            .map_err(op("pod_classes"))
    }

    /// Notes that this server has no members of `class` any more.
    pub async fn remove_pod_class(&self, pod: &str, class: &str) -> Result<(), StoreError> {
        redis::pipe()
            .srem(keys::pod_classes(pod), class)
            .ignore()
            .hdel(keys::pods_of_class(class), pod)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(op("pod_classes"))
    }

    /// Renews this server's heartbeat (`token` is unique to this beat) and its connection
    /// counts per class.
    pub async fn heartbeat(
        &self,
        pod: &str,
        ttl: Duration,
        token: &str,
        counts: &[(String, usize)],
        now_ms: u64,
    ) -> Result<Beat, StoreError> {
        let ttl_ms = duration_ms(ttl);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(keys::pod_alive(pod))
            .arg(token)
            .arg("PX")
            .arg(ttl_ms)
            .arg("GET")
            .zadd(keys::PODS, pod, now_ms.saturating_add(ttl_ms))
            .ignore()
            .exists(keys::pod_reaper(pod));
        for (class, count) in counts {
            pipe.hset(keys::pods_of_class(class), pod, *count).ignore();
        }
        let (previous, being_reaped): (Option<String>, bool) = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(op("heartbeat"))?;
        Ok(Beat {
            previous,
            being_reaped,
        })
    }

    /// Servers whose heartbeat deadline has passed.
    pub async fn overdue_pods(&self, now_ms: u64) -> Result<Vec<String>, StoreError> {
        self.conn()
            .zrangebyscore(keys::PODS, "-inf", now_ms)
            .await
            .map_err(op("overdue_pods"))
    }

    /// Takes the clean-up of `pod` if its heartbeat is really gone and nobody took it yet.
    pub async fn claim_dead_pod(&self, pod: &str, me: &str) -> Result<bool, StoreError> {
        let won: i64 = self
            .scripts
            .claim_dead_pod
            .key(keys::pod_alive(pod))
            .key(keys::pod_reaper(pod))
            .arg(me)
            .arg(60_000)
            .invoke_async(&mut self.conn())
            .await
            .map_err(op("claim_dead_pod"))?;
        Ok(won == 1)
    }

    /// Removes every connection `pod` held (a dead server, or this one leaving); returns how
    /// many.
    pub async fn forget_pod(&self, pod: &str) -> Result<u64, StoreError> {
        let classes: Vec<String> = self
            .conn()
            .smembers(keys::pod_classes(pod))
            .await
            .map_err(op("forget_pod"))?;
        let prefix = format!("{pod}#");
        let mut removed = 0;
        for class in &classes {
            let n: u64 = self
                .scripts
                .forget_pod
                .key(keys::where_(class))
                .key(keys::pods_of_class(class))
                .arg(&prefix)
                .arg(pod)
                .invoke_async(&mut self.conn())
                .await
                .map_err(op("forget_pod"))?;
            removed += n;
        }
        Ok(removed)
    }

    /// Ends the clean-up of a dead `pod` taken with [`Store::claim_dead_pod`].
    pub async fn finish_reap(&self, pod: &str, now_ms: u64) -> Result<(), StoreError> {
        self.scripts
            .finish_reap
            .key(keys::pod_alive(pod))
            .key(keys::pod_classes(pod))
            .key(keys::pod_reaper(pod))
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map_err(op("finish_reap"))?;
        self.scripts
            .unlist_pod
            .key(keys::PODS)
            .arg(pod)
            .arg(now_ms)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(op("finish_reap"))
    }

    /// Removes this server's own traces when it leaves for good.
    pub async fn leave(&self, pod: &str) -> Result<u64, StoreError> {
        let removed = self.forget_pod(pod).await?;
        redis::pipe()
            .del(keys::pod_classes(pod))
            .ignore()
            .del(keys::pod_alive(pod))
            .ignore()
            .zrem(keys::PODS, pod)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(op("leave"))?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::keys;

    #[test]
    fn keys_are_hash_tagged_by_class_and_by_pod() {
        assert_eq!(
            keys::history("school/physics-101"),
            "lc:{school/physics-101}:history"
        );
        assert_eq!(
            keys::class_of_broadcast(&keys::broadcast("school/physics-101")),
            Some("school/physics-101")
        );
        assert_eq!(keys::class_of_broadcast("lc:pod:{x}"), None);
        assert_eq!(keys::pod_alive("pod-a"), "lc:pod:{pod-a}:alive");
        assert_eq!(keys::pod_channel("pod-a"), "lc:pod:{pod-a}");
    }
}
