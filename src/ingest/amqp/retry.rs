//! The retry decision, as pure functions of the policy and the attempt count, so that it is tested
//! without a broker.
//!
//! A transiently failed message waits in a delay queue and comes back to its work queue when its time is
//! up: each delay queue has a message TTL and dead-letters expired messages through the default exchange
//! back to the work queue (RabbitMQ's own mechanism; nothing sleeps in the consumer). Delay queues are named
//! by their delay (`<queue>.delay.<ms>`), so a changed policy declares new queues instead of clashing with
//! the arguments of old ones. Each message's own expiration is its delay shortened by a random jitter:
//! since RabbitMQ expires only the head of a queue, a message can wait behind an earlier one by at most
//! the jitter's spread, never longer than the queue's TTL.

use std::time::Duration;

use crate::config::amqp::RetryPolicy;

/// What happens to a message whose attempt just failed transiently.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Wait in the delay queue for `base`, then try again; `wait` is the jittered delay for this message.
    Retry { attempt: u32, base: Duration, wait: Duration },
    /// No attempts left.
    DeadLetter { attempts: u32 },
}

/// The base delay after `failed` attempts (1-based): initial × multiplier^(failed − 1), capped.
pub fn base_delay(policy: &RetryPolicy, failed: u32) -> Duration {
    let exponent = failed.saturating_sub(1).min(60) as i32;
    let secs = policy.initial_delay.as_secs_f64() * policy.multiplier.powi(exponent);
    let capped = secs.min(policy.max_delay.as_secs_f64());
    // Whole milliseconds, since the delay names its queue.
    Duration::from_millis((capped * 1000.0).round() as u64)
}

/// Decides the next step for a message that had `before` failed attempts and failed once more; `random`
/// is uniform in [0, 1).
pub fn next_step(policy: &RetryPolicy, before: u32, random: f64) -> Step {
    let failed = before.saturating_add(1);
    if failed >= policy.attempts {
        return Step::DeadLetter { attempts: failed };
    }
    let base = base_delay(policy, failed);
    let shortened = base.as_secs_f64() * (1.0 - policy.jitter * random.clamp(0.0, 1.0));
    let wait = Duration::from_millis((shortened * 1000.0).round().max(1.0) as u64);
    Step::Retry { attempt: failed, base, wait }
}

/// Every distinct base delay the policy can ask for, so that their queues are declared up front.
pub fn delays(policy: &RetryPolicy) -> Vec<Duration> {
    let mut all: Vec<Duration> = (1..policy.attempts).map(|n| base_delay(policy, n)).collect();
    all.dedup();
    all
}

pub fn delay_queue(queue: &str, delay: Duration) -> String {
    format!("{queue}.delay.{}", delay.as_millis())
}

pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
    }

    #[test]
    fn delays_double_from_one_second_and_five_attempts_dead_letter() {
        let p = policy();
        let bases: Vec<_> = (0..4)
            .map(|before| match next_step(&p, before, 0.0) {
                Step::Retry { base, wait, attempt } => {
                    assert_eq!(base, wait, "no jitter at random = 0");
                    assert_eq!(attempt, before + 1);
                    base.as_millis()
                }
                other => panic!("attempt {before}: {other:?}"),
            })
            .collect();
        assert_eq!(bases, [1000, 2000, 4000, 8000]);
        assert_eq!(next_step(&p, 4, 0.5), Step::DeadLetter { attempts: 5 });
        assert_eq!(delays(&p).iter().map(Duration::as_millis).collect::<Vec<_>>(), [1000, 2000, 4000, 8000]);
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let p = policy();
        for r in [0.0, 0.3, 0.999] {
            let Step::Retry { base, wait, .. } = next_step(&p, 1, r) else { panic!() };
            assert!(wait <= base && wait.as_secs_f64() >= base.as_secs_f64() * 0.8 - 0.001, "{wait:?}");
        }
    }

    #[test]
    fn the_cap_holds_and_shared_delays_share_a_queue() {
        let p = RetryPolicy { attempts: 10, max_delay: Duration::from_secs(5), ..RetryPolicy::default() };
        let all: Vec<_> = delays(&p).iter().map(Duration::as_millis).collect();
        assert_eq!(all, [1000, 2000, 4000, 5000]);
        assert_eq!(delay_queue("q", Duration::from_millis(5000)), "q.delay.5000");
    }

    #[test]
    fn one_attempt_never_retries() {
        let p = RetryPolicy { attempts: 1, ..RetryPolicy::default() };
        assert_eq!(next_step(&p, 0, 0.0), Step::DeadLetter { attempts: 1 });
        assert!(delays(&p).is_empty());
    }
}
