//! The restart policy shared by the pm daemon and `cortex run`: exponential backoff from
//! `backoff_initial_seconds` to `backoff_max_seconds`, at most `start_limit` restarts within
//! `start_limit_window_seconds` (then the daemon is FAILED until the operator starts it), and the
//! backoff resets once a daemon stayed up `stable_uptime_seconds`. Pure logic over timestamps the
//! caller passes in, so it is tested without waiting.

use crate::base::clock::Timestamp;
use crate::store::config::SupervisorConfig;
use std::collections::VecDeque;
use std::time::Duration;

/// The policy's settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RestartPolicy {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub start_limit: u32,
    pub start_limit_window: Duration,
    pub stable_uptime: Duration,
}

impl RestartPolicy {
    pub(crate) fn from_config(c: &SupervisorConfig) -> Self {
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
        RestartPolicy {
            backoff_initial: secs(c.backoff_initial_seconds),
            backoff_max: secs(c.backoff_max_seconds.max(c.backoff_initial_seconds)),
            start_limit: c.start_limit.max(1),
            start_limit_window: Duration::from_secs(c.start_limit_window_seconds),
            stable_uptime: Duration::from_secs(c.stable_uptime_seconds),
        }
    }

    /// The delay before the `n`th consecutive restart (n ≥ 1): initial · 2^(n-1), capped.
    pub(crate) fn backoff(&self, n: u32) -> Duration {
        let factor = 2f64.powi(n.saturating_sub(1).min(30) as i32);
        Duration::from_secs_f64((self.backoff_initial.as_secs_f64() * factor).min(self.backoff_max.as_secs_f64()))
    }
}

/// What to do about a daemon that died.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Restart it after this delay; `attempt` counts consecutive restarts (1 = first).
    Restart { after: Duration, attempt: u32 },
    /// The start limit is reached: leave it FAILED. `restarts` is how many were made.
    GiveUp { restarts: u32 },
}

/// The policy's memory of one daemon.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RestartTrack {
    /// Deaths since the daemon last stayed up for the stable uptime.
    pub consecutive: u32,
    /// Restarts made since the operator last started the daemon.
    pub restarts: u32,
    pub failed: bool,
    starts: VecDeque<Timestamp>,
}

impl RestartTrack {
    /// The daemon died at `now` after `uptime` (None when unknown).
    pub(crate) fn on_death(&mut self, policy: &RestartPolicy, now: Timestamp, uptime: Option<Duration>) -> Decision {
        if uptime.is_some_and(|u| u >= policy.stable_uptime) {
            self.consecutive = 0;
        }
        let window = chrono::Duration::from_std(policy.start_limit_window).unwrap_or(chrono::Duration::MAX);
        while self.starts.front().is_some_and(|t| now - *t > window) {
            self.starts.pop_front();
        }
        if self.starts.len() as u32 >= policy.start_limit {
            self.failed = true;
            return Decision::GiveUp { restarts: self.restarts };
        }
        self.consecutive += 1;
        Decision::Restart { after: policy.backoff(self.consecutive), attempt: self.consecutive }
    }

    /// The supervisor restarted the daemon at `now`.
    pub(crate) fn on_restart(&mut self, now: Timestamp) {
        self.starts.push_back(now);
        self.restarts += 1;
    }

    /// The operator started the daemon: forget its history.
    pub(crate) fn reset(&mut self) {
        *self = RestartTrack::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::{Clock, ManualClock};

    fn policy() -> RestartPolicy {
        RestartPolicy::from_config(&SupervisorConfig::default())
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let p = policy();
        let secs: Vec<u64> = (1..=8).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn gives_up_after_the_start_limit_in_the_window() {
        let p = policy();
        let clock = ManualClock::new(chrono::Utc::now());
        let mut t = RestartTrack::default();
        for n in 1..=5 {
            let d = t.on_death(&p, clock.now(), Some(Duration::from_millis(100)));
            assert_eq!(d, Decision::Restart { after: p.backoff(n), attempt: n });
            clock.advance(chrono::Duration::seconds(1));
            t.on_restart(clock.now());
        }
        assert_eq!(t.on_death(&p, clock.now(), Some(Duration::from_secs(1))), Decision::GiveUp { restarts: 5 });
        assert!(t.failed);
    }

    #[test]
    fn old_starts_leave_the_window_and_stable_uptime_resets_backoff() {
        let p = policy();
        let clock = ManualClock::new(chrono::Utc::now());
        let mut t = RestartTrack::default();
        for _ in 0..5 {
            t.on_death(&p, clock.now(), Some(Duration::from_secs(1)));
            t.on_restart(clock.now());
        }
        clock.advance(chrono::Duration::seconds(61));
        // Up for 61 s: stable, so the backoff starts over and the old starts are outside the window.
        assert_eq!(
            t.on_death(&p, clock.now(), Some(Duration::from_secs(61))),
            Decision::Restart { after: Duration::from_secs(1), attempt: 1 }
        );
        t.reset();
        assert_eq!(t, RestartTrack::default());
    }
}
