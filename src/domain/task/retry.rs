//! Retry policy and failure notifications. After a failed, timed-out or lost attempt a task with
//! attempts left becomes `pending_retry` with `next_retry_at` from `[retry]`: `none` (at once),
//! `fixed` (base), `exponential` (base·2^(n−1) capped at max, optionally with full jitter). After
//! `failure_notification_threshold` consecutive failed attempts of one worker type a
//! `failure_notification` event (severity error) is recorded, at most once per
//! `failure_notification_throttle_seconds` per type; the streaks live in
//! `coordination/failure-streaks.json`. Time comes from an injectable [`Clock`].

use crate::base::clock::{Clock, Timestamp};
use crate::store::Document;
use crate::store::config::{BackoffStrategy, RetryConfig};
use crate::store::files::{self, CoordFile};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The delay before retry number `attempt` (the attempt that just failed, 1-based).
/// `unit_random` returns a number in [0, 1) and is only used with jitter.
pub(crate) fn backoff_delay(cfg: &RetryConfig, attempt: u32, unit_random: &mut dyn FnMut() -> f64) -> Duration {
    let base = cfg.backoff_base_seconds.max(0.0);
    let max = cfg.backoff_max_seconds.max(0.0);
    let secs = match cfg.backoff_strategy {
        BackoffStrategy::None => 0.0,
        BackoffStrategy::Fixed => base,
        BackoffStrategy::Exponential => {
            let exp = attempt.saturating_sub(1).min(62) as i32;
            let d = (base * 2f64.powi(exp)).min(max);
            if cfg.jitter { d * unit_random().clamp(0.0, 1.0) } else { d }
        }
    };
    Duration::from_secs_f64(if secs.is_finite() { secs } else { max })
}

/// When the next attempt is due.
pub(crate) fn next_retry_at(
    cfg: &RetryConfig,
    attempt: u32,
    clock: &dyn Clock,
    unit_random: &mut dyn FnMut() -> f64,
) -> Timestamp {
    let d = backoff_delay(cfg, attempt, unit_random);
    clock.now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// One worker type's run of failures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Streak {
    pub consecutive_failures: u32,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub last_failure_at: Option<Timestamp>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub last_notified_at: Option<Timestamp>,
}

/// `coordination/failure-streaks.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct FailureStreaks {
    pub worker_types: BTreeMap<String, Streak>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub updated_at: Option<Timestamp>,
}

impl Document for FailureStreaks {
    const FILE: &'static CoordFile = files::FAILURE_STREAKS;
}

/// A notification that is due.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Notification {
    pub worker_type: String,
    pub consecutive_failures: u32,
}

impl FailureStreaks {
    /// Records the end of one attempt of `worker_type`; returns a notification when the threshold
    /// is reached and the last notification for the type is older than the throttle.
    pub(crate) fn record(
        &mut self,
        worker_type: &str,
        failed: bool,
        cfg: &RetryConfig,
        now: Timestamp,
    ) -> Option<Notification> {
        let s = self.worker_types.entry(worker_type.to_string()).or_default();
        if !failed {
            // A success ends a streak; one of a type with no streak changes nothing.
            if s.consecutive_failures != 0 {
                s.consecutive_failures = 0;
                self.updated_at = Some(now);
            }
            return None;
        }
        self.updated_at = Some(now);
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        s.last_failure_at = Some(now);
        if cfg.failure_notification_threshold == 0 || s.consecutive_failures < cfg.failure_notification_threshold {
            return None;
        }
        let throttle = chrono::Duration::seconds(cfg.failure_notification_throttle_seconds.min(i64::MAX as u64) as i64);
        if let Some(last) = s.last_notified_at
            && now < last + throttle
        {
            return None;
        }
        s.last_notified_at = Some(now);
        Some(Notification { worker_type: worker_type.to_string(), consecutive_failures: s.consecutive_failures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::ManualClock;

    fn cfg(strategy: BackoffStrategy) -> RetryConfig {
        RetryConfig {
            backoff_strategy: strategy,
            backoff_base_seconds: 10.0,
            backoff_max_seconds: 60.0,
            ..RetryConfig::default()
        }
    }

    fn no_jitter() -> impl FnMut() -> f64 {
        || panic!("jitter must not be used")
    }

    #[test]
    fn strategies() {
        let c = cfg(BackoffStrategy::None);
        assert_eq!(backoff_delay(&c, 1, &mut no_jitter()), Duration::ZERO);
        let c = cfg(BackoffStrategy::Fixed);
        assert_eq!(backoff_delay(&c, 1, &mut no_jitter()).as_secs(), 10);
        assert_eq!(backoff_delay(&c, 5, &mut no_jitter()).as_secs(), 10);
        let c = cfg(BackoffStrategy::Exponential);
        let secs: Vec<u64> = (1..=5).map(|n| backoff_delay(&c, n, &mut no_jitter()).as_secs()).collect();
        assert_eq!(secs, vec![10, 20, 40, 60, 60], "doubling, capped at max");
        assert_eq!(backoff_delay(&c, 200, &mut no_jitter()).as_secs(), 60);
    }

    #[test]
    fn full_jitter_scales_the_capped_delay() {
        let mut c = cfg(BackoffStrategy::Exponential);
        c.jitter = true;
        assert_eq!(backoff_delay(&c, 3, &mut || 0.5).as_secs(), 20);
        assert_eq!(backoff_delay(&c, 9, &mut || 0.25).as_secs(), 15);
        assert_eq!(backoff_delay(&c, 9, &mut || 0.0), Duration::ZERO);
    }

    #[test]
    fn next_retry_uses_the_clock() {
        let start = crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap();
        let clock = ManualClock::new(start);
        let c = cfg(BackoffStrategy::Exponential);
        assert_eq!(next_retry_at(&c, 2, &clock, &mut no_jitter()), start + chrono::Duration::seconds(20));
        clock.advance(chrono::Duration::seconds(100));
        assert_eq!(next_retry_at(&c, 1, &clock, &mut no_jitter()), start + chrono::Duration::seconds(110));
    }

    #[test]
    fn notification_threshold_and_throttle() {
        let c = RetryConfig {
            failure_notification_threshold: 3,
            failure_notification_throttle_seconds: 900,
            ..RetryConfig::default()
        };
        let clock = ManualClock::new(crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap());
        let mut s = FailureStreaks::default();
        assert_eq!(s.record("w", true, &c, clock.now()), None);
        assert_eq!(s.record("w", true, &c, clock.now()), None);
        let n = s.record("w", true, &c, clock.now()).unwrap();
        assert_eq!(n.consecutive_failures, 3);
        // Throttled for 900 s, whatever the failures.
        clock.advance(chrono::Duration::seconds(899));
        assert_eq!(s.record("w", true, &c, clock.now()), None);
        clock.advance(chrono::Duration::seconds(1));
        assert!(s.record("w", true, &c, clock.now()).is_some());
        // Other types are counted apart; a success resets the streak.
        assert_eq!(s.record("other", true, &c, clock.now()), None);
        s.record("w", false, &c, clock.now());
        assert_eq!(s.worker_types["w"].consecutive_failures, 0);
        clock.advance(chrono::Duration::seconds(10_000));
        assert_eq!(s.record("w", true, &c, clock.now()), None);
    }
}
