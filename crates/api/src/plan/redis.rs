//! The Redis a class needs: its shape (one pod, or a primary with replicas and Sentinel) and
//! how much memory it gets.
//!
//! Memory follows the spec (expected attendance, history length, planned pods) and never the
//! observed attendance: resizing a Redis restarts it, which is the one thing a live class must
//! not see.

use crate::{
    plan::capacity,
    types::RedisMode,
    validate::{RedisParams, SocketParams},
};

const MIB: u64 = 1024 * 1024;
/// Redis itself, its Lua scripts and connection bookkeeping.
pub const BASE_BYTES: u64 = 32 * MIB;
/// One student at arrival, when Redis holds the most for them: their entry in the class's
/// user -> pod hash, presence, per-user keys and their handshake counter (which expires after
/// the handshake window). Measured: 784 B with 12-character user ids, 472 B once the counters
/// expired, at 400 students (`crates/socket/tests/redis_memory.rs`, which fails if this
/// undercounts); 228 B and 100 B at 8,000 (`bench/redis-memory`), where the hashes are large.
pub const PER_STUDENT_BYTES: u64 = 1024;
/// One message kept in the class's capped stream, with the stream's own overhead. Measured:
/// ~720 B for a 200-character comment (the same test), 381 B over 1,000 of them at 8,000
/// students (`bench/redis-memory`).
pub const PER_HISTORY_ENTRY_BYTES: u64 = 1024;
/// One socket server pod: the output buffer of its pub/sub subscription in a burst.
pub const PER_SOCKET_POD_BYTES: u64 = 4 * MIB;
/// `maxmemory` is rounded up to this, so small changes in attendance do not resize Redis.
pub const ROUND_TO_BYTES: u64 = 64 * MIB;
/// Read replicas in the Replicated shape (one primary besides).
pub const REPLICAS: u32 = 2;
/// Sentinels watching a Replicated Redis: a majority survives losing one.
pub const SENTINELS: u32 = 3;
/// Sentinels that must agree the primary is down before a failover.
pub const SENTINEL_QUORUM: u32 = 2;
/// How long the primary may not answer before the Sentinels call it down: long enough that a
/// busy primary (a large catch-up, a slow disk) is not failed over, short enough that a class
/// is back within seconds (bench/redis-failover measures the whole outage with it).
pub const SENTINEL_DOWN_AFTER_MS: u32 = 5_000;
/// How long one failover may take before another Sentinel tries.
pub const SENTINEL_FAILOVER_TIMEOUT_MS: u32 = 20_000;

/// The Redis the plan asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisPlan {
    pub shape: RedisShape,
    /// Memory for a Redis the operator runs; `None` for an External one.
    pub memory: Option<RedisMemory>,
    /// Whether a Redis the operator runs should be running now: not while no socket server
    /// runs (between occurrences with `idleReplicas: 0`), since nothing then needs its state.
    pub running: bool,
}

/// Which Redis the class runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisShape {
    /// One Redis pod.
    Standalone,
    /// A primary, `replicas` read replicas and `sentinels` Sentinels.
    Replicated { replicas: u32, sentinels: u32 },
    /// A Redis run outside the operator; nothing to create.
    External,
}

/// Memory for one Redis pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisMemory {
    /// Redis's `maxmemory`.
    pub max_memory_bytes: u64,
    /// The pod's memory request and limit: `maxmemory` plus a quarter for fragmentation,
    /// replication and client buffers, which `maxmemory` does not count.
    pub request_bytes: u64,
}

impl RedisMemory {
    /// `maxmemory` as Redis takes it on its command line, e.g. `64mb`.
    pub fn max_memory_arg(&self) -> String {
        format!("{}mb", self.max_memory_bytes / MIB)
    }

    /// The request as a Kubernetes quantity, e.g. `80Mi`.
    pub fn request_quantity(&self) -> String {
        format!("{}Mi", self.request_bytes.div_ceil(MIB))
    }
}

/// Plans the Redis for `expected` students and `class_replicas` socket pods.
pub fn plan(
    redis: &RedisParams,
    socket: &SocketParams,
    expected: u32,
    class_replicas: u32,
) -> RedisPlan {
    let shape = match redis.mode {
        RedisMode::External => RedisShape::External,
        RedisMode::Standalone => RedisShape::Standalone,
        RedisMode::Auto if expected < redis.replicated_threshold => RedisShape::Standalone,
        RedisMode::Replicated | RedisMode::Auto => RedisShape::Replicated {
            replicas: REPLICAS,
            sentinels: SENTINELS,
        },
    };
    let memory = (shape != RedisShape::External).then(|| {
        let students = capacity::students_with_headroom(u64::from(expected), socket);
        let raw = BASE_BYTES
            .saturating_add(students.saturating_mul(PER_STUDENT_BYTES))
            .saturating_add(u64::from(redis.history_length) * PER_HISTORY_ENTRY_BYTES)
            .saturating_add(u64::from(class_replicas) * PER_SOCKET_POD_BYTES);
        let max_memory_bytes = raw.div_ceil(ROUND_TO_BYTES).saturating_mul(ROUND_TO_BYTES);
        RedisMemory {
            max_memory_bytes,
            request_bytes: max_memory_bytes.saturating_add(max_memory_bytes / 4),
        }
    });
    RedisPlan {
        shape,
        memory,
        running: true,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn socket() -> SocketParams {
        SocketParams {
            connections_per_pod: 2_000,
            headroom_permille: 1_250,
            min_replicas: 1,
            max_replicas: 200,
            idle_replicas: 1,
            pod_startup: TimeDelta::minutes(2),
            drain_window: TimeDelta::seconds(30),
            step_percent: 25,
            step_interval: TimeDelta::minutes(1),
        }
    }

    fn redis(mode: RedisMode) -> RedisParams {
        RedisParams {
            mode,
            history_length: 1_000,
            replicated_threshold: 20_000,
        }
    }

    #[test]
    fn a_class_of_8000_gets_a_small_standalone_redis() {
        let plan = plan(&redis(RedisMode::Standalone), &socket(), 8_000, 5);
        assert_eq!(plan.shape, RedisShape::Standalone);
        let memory = plan.memory.unwrap();
        // 32 MiB + 10,000 x 1 KiB + 1,000 x 1 KiB + 5 x 4 MiB = ~62.7 MiB -> 64 MiB.
        assert_eq!(memory.max_memory_arg(), "64mb");
        assert_eq!(memory.request_quantity(), "80Mi");
    }

    #[test]
    fn exam_review_day_gets_more_memory_and_auto_replicates() {
        let plan = plan(&redis(RedisMode::Auto), &socket(), 50_000, 32);
        assert_eq!(
            plan.shape,
            RedisShape::Replicated {
                replicas: 2,
                sentinels: 3
            }
        );
        // 32 MiB + 62,500 x 1 KiB + 1 MiB + 128 MiB = ~222 MiB -> 256 MiB.
        assert_eq!(plan.memory.unwrap().max_memory_arg(), "256mb");
        assert_eq!(
            plan_shape(RedisMode::Auto, 19_999),
            RedisShape::Standalone,
            "below the threshold"
        );
        assert!(matches!(
            plan_shape(RedisMode::Auto, 20_000),
            RedisShape::Replicated { .. }
        ));
        assert!(matches!(
            plan_shape(RedisMode::Replicated, 10),
            RedisShape::Replicated { .. }
        ));
        assert_eq!(
            plan_shape(RedisMode::Standalone, 900_000),
            RedisShape::Standalone
        );
    }

    fn plan_shape(mode: RedisMode, expected: u32) -> RedisShape {
        plan(&redis(mode), &socket(), expected, 1).shape
    }

    #[test]
    fn external_redis_needs_nothing_from_the_operator() {
        let plan = plan(&redis(RedisMode::External), &socket(), 50_000, 32);
        assert_eq!(plan.shape, RedisShape::External);
        assert_eq!(plan.memory, None);
    }
}
