//! Everything the server asks of Redis, except pub/sub listening (see `bus`): the key layout,
//! the Lua scripts that keep multi-step updates atomic, and one method per question.
//!
//! Keys of one class share the hash tag `{class}`, so a class lives on one Cluster slot.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use crate::protocol::{COMMENT_PREFIX, MessageId};

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

/// Key and channel names.
pub mod keys {
    pub fn history(class: &str) -> String {
        format!("lc:{{{class}}}:history")
    }
    pub fn where_(class: &str) -> String {
        format!("lc:{{{class}}}:where")
    }
    pub fn broadcast(class: &str) -> String {
        format!("lc:{{{class}}}:bcast")
    }
    /// The class of a broadcast channel name.
    pub fn class_of_broadcast(channel: &str) -> Option<&str> {
        channel.strip_prefix("lc:{")?.strip_suffix("}:bcast")
    }
    pub fn pod_channel(pod: &str) -> String {
        format!("lc:pod:{pod}")
    }
    pub fn pod_alive(pod: &str) -> String {
        format!("lc:pod:{pod}:alive")
    }
    pub fn pod_classes(pod: &str) -> String {
        format!("lc:pod:{pod}:classes")
    }
    pub const PODS: &str = "lc:pods";
}

/// XADD the comment, build its frame with the id it got, PUBLISH it: one round trip, and no
/// window in which a message is in history but not yet published (or the reverse).
const PUBLISH_COMMENT: &str = r#"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'f', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[3], ARGV[4] .. id .. '",' .. ARGV[2])
return id
"#;

/// Entries after `since`, and whether none after it is gone. Trimming removes the oldest
/// entries first, so nothing after `since` was trimmed when `since` is at or after the first
/// entry still held; `max-deleted-entry-id` covers entries removed one by one (XDEL). When
/// `since` is older than everything held the answer is a conservative "incomplete".
const HISTORY_SINCE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, {}} end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function older(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local complete = 1
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first > 0 and older(ARGV[1], first[1][1]) then complete = 0 end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' and older(ARGV[1], info[i + 1]) then complete = 0 end
end
-- MAXLEN ~ keeps at most about a block (100) over the cap; the count is only a safety net.
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
if #entries >= tonumber(ARGV[2]) then complete = 0 end
return {complete, entries}
"#;

/// Records where a user is connected; tells the server that held them before to let go.
const CLAIM: &str = r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if old and old ~= ARGV[2] then
  local pod = string.match(old, '^(.*)#')
  if pod and pod ~= ARGV[3] then redis.call('PUBLISH', 'lc:pod:' .. pod, ARGV[4]) end
end
return 1
"#;

/// Removes a user's entry only if it is still this connection's.
const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"#;

/// Removes every entry of a class held by a dead server.
const FORGET_POD_IN_CLASS: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
local prefix = ARGV[1] .. '#'
local n = 0
for i = 1, #all, 2 do
  if string.sub(all[i + 1], 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[1], all[i])
    n = n + 1
  end
end
return n
"#;

/// Claims the clean-up of a server whose heartbeat expired: exactly one survivor wins.
const CLAIM_DEAD_POD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
return redis.call('ZREM', KEYS[2], ARGV[1])
"#;

/// Direct message: find the server holding the recipient and publish to it alone.
const SEND_DM: &str = r#"
local at = redis.call('HGET', KEYS[1], ARGV[1])
if not at then return 0 end
local pod = string.match(at, '^(.*)#')
if not pod then return 0 end
local message = string.gsub(ARGV[2], '@AT@', at, 1)
redis.call('PUBLISH', 'lc:pod:' .. pod, message)
return 1
"#;

/// Recovered comments: whether the history after `since` was complete, and the frames.
#[derive(Debug, Default)]
pub struct History {
    pub complete: bool,
    pub frames: Vec<(MessageId, String)>,
}

/// A handle on Redis for commands; cheap to clone (one multiplexed connection underneath).
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    history_cap: usize,
    history_ttl_ms: u64,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    publish_comment: Script,
    history_since: Script,
    claim: Script,
    release: Script,
    forget_pod_in_class: Script,
    claim_dead_pod: Script,
    send_dm: Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("history_cap", &self.history_cap)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects lazily: the server starts (not ready) even when Redis is not there yet.
    pub fn new(client: redis::Client, history_cap: usize) -> Result<Self, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2));
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(op("connect"))?;
        Ok(Self {
            conn,
            history_cap,
            // A class's history outlives a quiet day, not a term.
            history_ttl_ms: 24 * 3600 * 1000,
            scripts: std::sync::Arc::new(Scripts {
                publish_comment: Script::new(PUBLISH_COMMENT),
                history_since: Script::new(HISTORY_SINCE),
                claim: Script::new(CLAIM),
                release: Script::new(RELEASE),
                forget_pod_in_class: Script::new(FORGET_POD_IN_CLASS),
                claim_dead_pod: Script::new(CLAIM_DEAD_POD),
                send_dm: Script::new(SEND_DM),
            }),
        })
    }

    fn scripts(&self) -> &Scripts {
        &self.scripts
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(op("ping"))
    }

    /// Stores and broadcasts a comment; returns its id.
    pub async fn publish_comment(&self, class: &str, tail: &str) -> Result<MessageId, StoreError> {
        let mut conn = self.conn.clone();
        let id: String = self
            .scripts()
            .publish_comment
            .key(keys::history(class))
            .arg(self.history_cap)
            .arg(tail)
            .arg(keys::broadcast(class))
            .arg(COMMENT_PREFIX)
            .arg(self.history_ttl_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(op("publish_comment"))?;
        id.parse().map_err(|()| StoreError {
            op: "publish_comment",
            source: redis::RedisError::from((redis::ErrorKind::Parse, "stream id", id)),
        })
    }

    /// Broadcasts an ephemeral frame (a reaction) to the class.
    pub async fn publish_ephemeral(&self, class: &str, frame: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.publish::<_, _, ()>(keys::broadcast(class), frame)
            .await
            .map_err(op("publish"))
    }

    /// Publishes `message` to the server holding `to`; `@AT@` in it is replaced by the
    /// recipient's connection. False when `to` is not connected to the class.
    pub async fn send_direct(
        &self,
        class: &str,
        to: &str,
        message: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let sent: i64 = self
            .scripts()
            .send_dm
            .key(keys::where_(class))
            .arg(to)
            .arg(message)
            .invoke_async(&mut conn)
            .await
            .map_err(op("send_dm"))?;
        Ok(sent == 1)
    }

    /// Comments after `since`, at most the history cap.
    pub async fn history_since(
        &self,
        class: &str,
        since: MessageId,
    ) -> Result<History, StoreError> {
        let mut conn = self.conn.clone();
        let (complete, entries): (i64, Vec<(String, Vec<String>)>) = self
            .scripts()
            .history_since
            .key(keys::history(class))
            .arg(since.to_string())
            .arg(self.history_cap.saturating_mul(2).saturating_add(1000))
            .invoke_async(&mut conn)
            .await
            .map_err(op("history"))?;
        let frames = entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let id: MessageId = id.parse().ok()?;
                let tail = fields.get(1)?;
                Some((id, format!("{COMMENT_PREFIX}{id}\",{tail}")))
            })
            .collect();
        Ok(History {
            complete: complete == 1,
            frames,
        })
    }

    /// The newest comment id of a class, if it has any history.
    pub async fn last_comment_id(&self, class: &str) -> Result<Option<MessageId>, StoreError> {
        let mut conn = self.conn.clone();
        let newest: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
            .arg(keys::history(class))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(op("last_comment_id"))?;
        Ok(newest.first().and_then(|(id, _)| id.parse().ok()))
    }

    /// Records that `user` of `class` is connected as `member` (`pod#conn`); a previous
    /// connection elsewhere gets `kick` on its server's channel.
    pub async fn claim(
        &self,
        class: &str,
        user: &str,
        member: &str,
        pod: &str,
        kick: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.scripts()
            .claim
            .key(keys::where_(class))
            .arg(user)
            .arg(member)
            .arg(pod)
            .arg(kick)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(op("claim"))
    }

    /// Records many sessions at once (after Redis came back without them).
    pub async fn reclaim(
        &self,
        class: &str,
        entries: &[(String, String)],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let key = keys::where_(class);
        let mut pipe = redis::pipe();
        // Only where missing: an entry that is there may be newer than ours (the user moved).
        for (user, member) in entries {
            pipe.hset_nx(&key, user, member).ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(op("reclaim"))
    }

    /// Forgets `user`'s entry if it is still `member`.
    pub async fn release(&self, class: &str, user: &str, member: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.scripts()
            .release
            .key(keys::where_(class))
            .arg(user)
            .arg(member)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(op("release"))
    }

    /// Connected users per class, in the order given.
    pub async fn presence(&self, classes: &[String]) -> Result<Vec<u64>, StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for class in classes {
            pipe.hlen(keys::where_(class));
        }
        pipe.query_async(&mut conn).await.map_err(op("presence"))
    }

    /// Notes that this server has members of `class` (for clean-up after a crash).
    pub async fn add_pod_class(&self, pod: &str, class: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.sadd::<_, _, ()>(keys::pod_classes(pod), class)
            .await
            .map_err(op("pod_classes"))
    }

    pub async fn remove_pod_class(&self, pod: &str, class: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.srem::<_, _, ()>(keys::pod_classes(pod), class)
            .await
            .map_err(op("pod_classes"))
    }

    /// Renews this server's heartbeat.
    pub async fn heartbeat(&self, pod: &str, ttl: Duration, now_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        redis::pipe()
            .cmd("SET")
            .arg(keys::pod_alive(pod))
            .arg(1)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .zadd(keys::PODS, pod, now_ms.saturating_add(ttl_ms))
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(op("heartbeat"))
    }

    /// Servers whose heartbeat deadline has passed.
    pub async fn overdue_pods(&self, now_ms: u64) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.zrangebyscore(keys::PODS, "-inf", now_ms)
            .await
            .map_err(op("overdue_pods"))
    }

    /// Takes the clean-up of `pod` if its heartbeat is really gone and nobody took it yet.
    pub async fn claim_dead_pod(&self, pod: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let won: i64 = self
            .scripts()
            .claim_dead_pod
            .key(keys::pod_alive(pod))
            .key(keys::PODS)
            .arg(pod)
            .invoke_async(&mut conn)
            .await
            .map_err(op("claim_dead_pod"))?;
        Ok(won == 1)
    }

    /// Removes every session `pod` held; returns how many.
    pub async fn forget_pod(&self, pod: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let classes: Vec<String> = conn
            .smembers(keys::pod_classes(pod))
            .await
            .map_err(op("forget_pod"))?;
        let mut removed = 0;
        for class in &classes {
            let n: u64 = self
                .scripts()
                .forget_pod_in_class
                .key(keys::where_(class))
                .arg(pod)
                .invoke_async(&mut conn)
                .await
                .map_err(op("forget_pod"))?;
            removed += n;
        }
        conn.del::<_, ()>(keys::pod_classes(pod))
            .await
            .map_err(op("forget_pod"))?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::keys;

    #[test]
    fn keys_are_hash_tagged_by_class() {
        assert_eq!(keys::history("physics-101"), "lc:{physics-101}:history");
        assert_eq!(
            keys::class_of_broadcast(&keys::broadcast("physics-101")),
            Some("physics-101")
        );
        assert_eq!(keys::class_of_broadcast("lc:pod:x"), None);
    }
}
