//! The shared queue between the vote tier and the worker (seed 003: "M background workers"):
//! its length, read from the Redis master, and the worker count that follows it.

use crate::crd::vote_app::QueueAutoscalingSpec;

/// Workers for a queue of `length` given the `current` count: up at once to
/// `ceil(length / target)`, down one step at a time and only once the queue is at most half of
/// what one fewer worker would handle (hysteresis: a queue hovering at a boundary does not
/// flap; the last worker goes only when the queue is empty), always within the bounds.
pub fn workers(spec: &QueueAutoscalingSpec, current: i32, length: i64) -> i32 {
    let target = spec.target_queue_length.max(1);
    let wanted = i32::try_from((length + target - 1) / target).unwrap_or(i32::MAX);
    let (min, max) = (spec.min_replicas, spec.max_replicas.max(spec.min_replicas));
    let current = current.clamp(min, max);
    let next = if wanted > current {
        wanted
    } else if wanted < current && length * 2 <= i64::from(current - 1) * target {
        current - 1
    } else {
        current
    };
    next.clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min: i32, max: i32, target: i64) -> QueueAutoscalingSpec {
        QueueAutoscalingSpec {
            min_replicas: min,
            max_replicas: max,
            target_queue_length: target,
        }
    }

    #[test]
    fn a_backlog_raises_workers_at_once_within_bounds() {
        let s = spec(1, 5, 100);
        assert_eq!(workers(&s, 1, 350), 4);
        assert_eq!(workers(&s, 1, 10_000), 5);
        assert_eq!(workers(&s, 1, 0), 1);
    }

    #[test]
    fn an_emptying_queue_lowers_workers_one_step_at_a_time() {
        let s = spec(1, 5, 100);
        assert_eq!(workers(&s, 5, 0), 4);
        assert_eq!(workers(&s, 4, 0), 3);
        assert_eq!(workers(&s, 2, 0), 1);
        assert_eq!(workers(&s, 1, 0), 1);
        let to_zero = spec(0, 5, 100);
        assert_eq!(
            workers(&to_zero, 1, 1),
            1,
            "a worker stays while votes wait"
        );
        assert_eq!(workers(&to_zero, 1, 0), 0);
    }

    #[test]
    fn a_queue_near_a_boundary_does_not_flap() {
        let s = spec(1, 5, 100);
        // 3 workers, queue 180: ceil says 2, but 180 is not below half of 2 × 100.
        assert_eq!(workers(&s, 3, 180), 3);
        assert_eq!(workers(&s, 3, 90), 2);
        // Back up only when the queue exceeds what the workers handle.
        assert_eq!(workers(&s, 2, 200), 2);
        assert_eq!(workers(&s, 2, 201), 3);
    }
}
