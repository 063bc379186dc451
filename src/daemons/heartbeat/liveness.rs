//! Liveness from heartbeat age: the thresholds (warning, critical, presumed dead), the next
//! moment a dispatch crosses one (so the daemon sleeps until exactly then), missed intervals,
//! and the event a change of level records. Pure functions of a policy and a clock reading.

use super::policy::HeartbeatPolicy;
use crate::base::clock::Timestamp;
use crate::store::events::{EventKind, Severity};
use serde::{Deserialize, Serialize};

/// How late a dispatch's heartbeat is. Ordered from best to worst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Liveness {
    #[default]
    Ok,
    Warning,
    Critical,
    PresumedDead,
}

/// The level for a heartbeat `age_seconds` old: past a threshold, not at it.
pub(crate) fn classify(age_seconds: f64, policy: &HeartbeatPolicy) -> Liveness {
    if age_seconds > policy.zombie_threshold_seconds {
        Liveness::PresumedDead
    } else if age_seconds > policy.critical_seconds {
        Liveness::Critical
    } else if age_seconds > policy.warning_seconds {
        Liveness::Warning
    } else {
        Liveness::Ok
    }
}

/// Seconds from `reference` to `now` (negative clock skew reads as 0).
pub(crate) fn age_seconds(reference: Timestamp, now: Timestamp) -> f64 {
    ((now - reference).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0)
}

/// Whole heartbeat intervals missed since `reference`.
pub(crate) fn missed_count(age_seconds: f64, policy: &HeartbeatPolicy) -> u32 {
    if policy.heartbeat_interval_seconds <= 0.0 {
        return 0;
    }
    (age_seconds / policy.heartbeat_interval_seconds).floor().min(u32::MAX as f64) as u32
}

/// The first moment after `now` at which a heartbeat last seen at `reference` crosses a
/// threshold (just past it: `classify` is strict), or None once past the last one.
pub(crate) fn next_crossing(reference: Timestamp, now: Timestamp, policy: &HeartbeatPolicy) -> Option<Timestamp> {
    [policy.warning_seconds, policy.critical_seconds, policy.zombie_threshold_seconds]
        .into_iter()
        .map(|s| reference + chrono::Duration::microseconds((s * 1e6) as i64 + 1000))
        .filter(|t| *t > now)
        .min()
}

/// The event a change from `from` to `to` records, if any: one per transition, never one per check.
pub(crate) fn transition_event(from: Liveness, to: Liveness) -> Option<(EventKind, Severity)> {
    if from == to {
        return None;
    }
    Some(match to {
        Liveness::Ok => (EventKind::HeartbeatResumed, Severity::Info),
        Liveness::Warning if from < to => (EventKind::HeartbeatWarning, Severity::Warning),
        Liveness::Critical if from < to => (EventKind::HeartbeatCritical, Severity::Error),
        Liveness::PresumedDead => (EventKind::WorkerPresumedDead, Severity::Error),
        // Improving but still late (critical → warning, say): not news.
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::{Clock, ManualClock, parse_ts};
    use chrono::Duration;

    #[test]
    fn thresholds_at_65_125_305_seconds() {
        let p = HeartbeatPolicy::default();
        let start = parse_ts("2030-01-01T00:00:00Z").unwrap();
        let clock = ManualClock::new(start);
        let level = |c: &ManualClock| classify(age_seconds(start, c.now()), &p);
        assert_eq!(level(&clock), Liveness::Ok);
        clock.advance(Duration::seconds(60));
        assert_eq!(level(&clock), Liveness::Ok, "exactly at the threshold is not past it");
        clock.advance(Duration::seconds(5));
        assert_eq!(level(&clock), Liveness::Warning);
        assert_eq!(missed_count(age_seconds(start, clock.now()), &p), 2);
        clock.set(start + Duration::seconds(125));
        assert_eq!(level(&clock), Liveness::Critical);
        clock.set(start + Duration::seconds(305));
        assert_eq!(level(&clock), Liveness::PresumedDead);
    }

    #[test]
    fn next_crossing_walks_the_thresholds() {
        let p = HeartbeatPolicy::default();
        let start = parse_ts("2030-01-01T00:00:00Z").unwrap();
        let n1 = next_crossing(start, start, &p).unwrap();
        assert_eq!((n1 - start).num_seconds(), 60);
        assert_eq!(classify(age_seconds(start, n1), &p), Liveness::Warning);
        let n2 = next_crossing(start, n1, &p).unwrap();
        assert_eq!(classify(age_seconds(start, n2), &p), Liveness::Critical);
        let n3 = next_crossing(start, n2, &p).unwrap();
        assert_eq!(classify(age_seconds(start, n3), &p), Liveness::PresumedDead);
        assert_eq!(next_crossing(start, n3, &p), None);
    }

    #[test]
    fn events_once_per_transition() {
        use Liveness::*;
        assert_eq!(transition_event(Ok, Ok), None);
        assert_eq!(transition_event(Ok, Warning).unwrap().0, "heartbeat_warning");
        assert_eq!(transition_event(Warning, Warning), None);
        assert_eq!(transition_event(Warning, Critical).unwrap().0, "heartbeat_critical");
        assert_eq!(transition_event(Ok, Critical).unwrap().0, "heartbeat_critical");
        assert_eq!(transition_event(Critical, PresumedDead).unwrap().0, "worker_presumed_dead");
        assert_eq!(transition_event(Critical, Warning), None);
        assert_eq!(transition_event(PresumedDead, Ok).unwrap().0, "heartbeat_resumed");
    }
}
