//! How many socket server pods a number of students needs, and how fast a drain may remove them.
//!
//! Integer maths throughout (headroom in thousandths), so that e.g. 1,000 students at headroom
//! 1.1 and 100 per pod is exactly 11 pods, not 12 from a float that came out a hair above 11.

use crate::validate::SocketParams;

/// Pods needed to hold `students` at the spec's headroom: ceil(students * headroom / per pod),
/// before the clamp.
pub fn needed_replicas(students: u64, socket: &SocketParams) -> u64 {
    let wanted = students.saturating_mul(u64::from(socket.headroom_permille));
    let per_pod = 1000 * u64::from(socket.connections_per_pod.max(1));
    wanted.div_ceil(per_pod)
}

/// `replicas` clamped to [minReplicas, maxReplicas].
pub fn clamp(replicas: u64, socket: &SocketParams) -> u32 {
    let max = socket.max_replicas.max(socket.min_replicas);
    let clamped = replicas.clamp(u64::from(socket.min_replicas), u64::from(max));
    u32::try_from(clamped).unwrap_or(max)
}

/// Students the planned capacity is sized for: ceil(students * headroom).
pub fn students_with_headroom(students: u64, socket: &SocketParams) -> u64 {
    students
        .saturating_mul(u64::from(socket.headroom_permille))
        .div_ceil(1000)
}

/// The most replicas one drain step removes from `current`: `stepPercent` of them, rounded up,
/// and at least one pod so a drain always finishes.
pub fn drain_step(current: u32, socket: &SocketParams) -> u32 {
    let step = (u64::from(current) * u64::from(socket.step_percent)).div_ceil(100);
    u32::try_from(step).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn socket(per_pod: u32, headroom_permille: u32, min: u32, max: u32) -> SocketParams {
        SocketParams {
            connections_per_pod: per_pod,
            headroom_permille,
            min_replicas: min,
            max_replicas: max,
            idle_replicas: min,
            pod_startup: TimeDelta::minutes(2),
            drain_window: TimeDelta::seconds(30),
            step_percent: 25,
            step_interval: TimeDelta::minutes(1),
        }
    }

    #[test]
    fn replicas_for_ordinary_classes() {
        let cases = [
            // (students, per pod, headroom‰, min, max, needed, clamped)
            (8_000, 2_000, 1_250, 1, 200, 5, 5),
            (8_001, 2_000, 1_250, 1, 200, 6, 6),
            (50_000, 2_000, 1_250, 1, 200, 32, 32),
            (1_000, 100, 1_100, 1, 200, 11, 11),
            (1, 2_000, 1_000, 0, 200, 1, 1),
            (0, 2_000, 1_250, 2, 200, 0, 2),
            (50_000, 2_000, 1_250, 1, 10, 32, 10),
            (1_000_000, 1, 10_000, 0, 10_000, 10_000_000, 10_000),
        ];
        for (students, per_pod, headroom, min, max, needed, clamped) in cases {
            let s = socket(per_pod, headroom, min, max);
            assert_eq!(needed_replicas(students, &s), needed, "{students} students");
            assert_eq!(clamp(needed, &s), clamped, "{students} students");
        }
    }

    #[test]
    fn drain_steps_are_a_quarter_of_what_runs_and_at_least_one_pod() {
        let s = socket(2_000, 1_250, 1, 200);
        assert_eq!(drain_step(40, &s), 10);
        assert_eq!(drain_step(5, &s), 2);
        assert_eq!(drain_step(1, &s), 1);
        assert_eq!(drain_step(0, &s), 1);
    }

    #[test]
    fn huge_observed_counts_do_not_overflow() {
        let s = socket(1, 10_000, 0, 10_000);
        assert_eq!(clamp(needed_replicas(u64::MAX, &s), &s), 10_000);
        assert_eq!(students_with_headroom(u64::MAX, &s), u64::MAX / 1000 + 1);
    }
}
