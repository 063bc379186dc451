//! Circuit breakers per worker type, in `coordination/circuit-breakers.json` (lock
//! `circuit-breakers`). A breaker counts the type's failed dispatch ends (failed, timeout, lost,
//! zombie — read from the specs in `failed/` and `zombie/`) within the window; at the threshold
//! it opens (`circuit_breaker_tripped`); after the reset timeout it half-opens and lets one trial
//! dispatch through; the trial's success closes it, its failure opens it again.
//!
//! The coordinator asks [`is_dispatch_allowed`] before dispatching a type.

use super::policy::{BreakerPolicy, RestartPolicy};
use crate::base::clock::{Timestamp, format_ts, parse_ts};
use crate::base::error::Result;
use crate::domain::task::DispatchStatus;
use crate::domain::task::dispatches::list_bucket;
use crate::store::events::{EventKind, Severity};
use crate::store::files::{self, CoordFile};
use crate::store::home::SpecBucket;
use crate::store::{Document, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// Where a breaker is, with the times that belong to that state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    /// Dispatches flow; failures after `since` (and within the window) count.
    Closed { since: String },
    /// Dispatches of the type are held until `half_open_at`.
    Open { opened_at: String, half_open_at: String, reason: String },
    /// One trial dispatch (the first dispatched at or after `since`) decides.
    HalfOpen { since: String },
}

/// One worker type's breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    #[serde(flatten)]
    pub state: BreakerState,
    #[serde(default)]
    pub failures_in_window: u32,
    #[serde(default)]
    pub last_failure_at: Option<String>,
    /// Times it opened.
    #[serde(default)]
    pub trips: u32,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// `coordination/circuit-breakers.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakers {
    pub breakers: BTreeMap<String, Breaker>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

impl Document for Breakers {
    const FILE: &'static CoordFile = files::CIRCUIT_BREAKERS;
}

/// How one dispatch of a type ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub worker_type: String,
    pub dispatched_at: Timestamp,
    pub ended_at: Timestamp,
    pub failure: bool,
}

/// Every ended dispatch (cancelled ones are neither success nor failure).
pub fn outcomes(store: &Store) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for bucket in [SpecBucket::Completed, SpecBucket::Failed, SpecBucket::Zombie] {
        for d in list_bucket(store, bucket)? {
            let failure = match d.status() {
                DispatchStatus::Completed => false,
                DispatchStatus::Failed | DispatchStatus::Timeout | DispatchStatus::Lost | DispatchStatus::Zombie => {
                    true
                }
                _ => continue,
            };
            let (Some(ended), Some(dispatched)) = (d.state.ended_at().and_then(parse_ts), parse_ts(&d.dispatched_at))
            else {
                continue;
            };
            out.push(Outcome { worker_type: d.worker_type, dispatched_at: dispatched, ended_at: ended, failure });
        }
    }
    Ok(out)
}

/// A change of state, for the event log.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Tripped { failures: u32, reason: String },
    HalfOpened,
    Closed,
}

fn secs(s: f64) -> chrono::Duration {
    chrono::Duration::microseconds((s.max(0.0) * 1e6) as i64)
}

/// The next state of one type's breaker given its dispatch outcomes. Pure.
pub fn step(
    current: Option<&Breaker>,
    outcomes: &[&Outcome],
    policy: &BreakerPolicy,
    now: Timestamp,
) -> (Breaker, Option<Transition>) {
    let window_start = now - secs(policy.failure_window_seconds);
    let mut b = current.cloned().unwrap_or(Breaker {
        state: BreakerState::Closed { since: format_ts(window_start) },
        failures_in_window: 0,
        last_failure_at: None,
        trips: 0,
        updated_at: None,
    });
    b.last_failure_at =
        outcomes.iter().filter(|o| o.failure && o.ended_at <= now).map(|o| o.ended_at).max().map(format_ts);
    let open = |b: &mut Breaker, failures: u32, reason: String| {
        b.state = BreakerState::Open {
            opened_at: format_ts(now),
            half_open_at: format_ts(now + secs(policy.reset_timeout_seconds)),
            reason: reason.clone(),
        };
        b.trips += 1;
        Some(Transition::Tripped { failures, reason })
    };
    let transition = match b.state.clone() {
        BreakerState::Closed { since } => {
            let from = parse_ts(&since).map_or(window_start, |s| s.max(window_start));
            let failures =
                outcomes.iter().filter(|o| o.failure && o.ended_at > from && o.ended_at <= now).count() as u32;
            b.failures_in_window = failures;
            if failures >= policy.failure_threshold.max(1) {
                let reason = format!(
                    "{failures} failures within {}s (threshold {})",
                    policy.failure_window_seconds, policy.failure_threshold
                );
                open(&mut b, failures, reason)
            } else {
                None
            }
        }
        BreakerState::Open { half_open_at, .. } => match parse_ts(&half_open_at) {
            Some(t) if now >= t => {
                b.state = BreakerState::HalfOpen { since: half_open_at };
                Some(Transition::HalfOpened)
            }
            _ => None,
        },
        BreakerState::HalfOpen { since } => {
            let since_t = parse_ts(&since).unwrap_or(now);
            let trial: Vec<&&Outcome> =
                outcomes.iter().filter(|o| o.dispatched_at >= since_t && o.ended_at <= now).collect();
            if trial.iter().any(|o| o.failure) {
                open(&mut b, 1, "the half-open trial dispatch failed".into())
            } else if !trial.is_empty() {
                b.state = BreakerState::Closed { since: format_ts(now) };
                b.failures_in_window = 0;
                Some(Transition::Closed)
            } else {
                None
            }
        }
    };
    if transition.is_some() {
        b.updated_at = Some(format_ts(now));
    }
    (b, transition)
}

/// Brings every breaker up to date (a type gets a breaker once it has failures), records the
/// transitions, and returns when the next one is due (the earliest half-open time).
pub fn refresh(store: &Store, policy: &RestartPolicy, now: Timestamp) -> Result<Option<Timestamp>> {
    if !policy.circuit_breaker.enabled {
        return Ok(None);
    }
    let all = outcomes(store)?;
    let mut transitions = Vec::new();
    let guard = store.lock(files::CIRCUIT_BREAKERS)?;
    let before: Breakers = store.load()?;
    let mut doc = before.clone();
    let next = {
        let mut types: Vec<String> = doc.breakers.keys().cloned().collect();
        for o in all.iter().filter(|o| o.failure) {
            if !types.contains(&o.worker_type) {
                types.push(o.worker_type.clone());
            }
        }
        let mut next: Option<Timestamp> = None;
        for t in types {
            let of_type: Vec<&Outcome> = all.iter().filter(|o| o.worker_type == t).collect();
            let (b, tr) = step(doc.breakers.get(&t), &of_type, &policy.circuit_breaker, now);
            if let BreakerState::Open { half_open_at, .. } = &b.state
                && let Some(h) = parse_ts(half_open_at)
            {
                next = Some(next.map_or(h, |n: Timestamp| n.min(h)));
            }
            if let Some(tr) = tr {
                transitions.push((t.clone(), tr, b.clone()));
            }
            // New types appear only once they have a failure in the window.
            if doc.breakers.contains_key(&t)
                || b.failures_in_window > 0
                || !matches!(b.state, BreakerState::Closed { .. })
            {
                doc.breakers.insert(t, b);
            }
        }
        if !transitions.is_empty() {
            doc.updated_at = Some(format_ts(now));
        }
        next
    };
    // Written only when something changed: the file is read on every dispatch decision.
    if doc != before {
        store.write_locked(&guard, &doc)?;
    }
    drop(guard);
    for (t, tr, b) in transitions {
        match tr {
            Transition::Tripped { failures, reason } => store.emit(
                EventKind::CircuitBreakerTripped,
                Severity::Error,
                format!("circuit breaker of {t} opened: {reason}; dispatches of {t} are held"),
                json!({"worker_type": t, "failures": failures, "reason": reason, "breaker": b}),
            )?,
            Transition::HalfOpened => store.emit(
                EventKind::CircuitBreakerHalfOpen,
                Severity::Info,
                format!("circuit breaker of {t} is half-open: one trial dispatch is allowed"),
                json!({"worker_type": t, "breaker": b}),
            )?,
            Transition::Closed => store.emit(
                EventKind::CircuitBreakerClosed,
                Severity::Info,
                format!("circuit breaker of {t} closed: the trial dispatch succeeded"),
                json!({"worker_type": t, "breaker": b}),
            )?,
        };
    }
    Ok(next)
}

/// True when a breaker holds dispatches of the type now (open and not yet due to half-open).
pub fn is_open(breakers: &Breakers, worker_type: &str, now: Timestamp) -> bool {
    match breakers.breakers.get(worker_type).map(|b| &b.state) {
        Some(BreakerState::Open { half_open_at, .. }) => parse_ts(half_open_at).is_none_or(|h| now < h),
        _ => false,
    }
}

/// May the coordinator dispatch a task of `worker_type` now? Closed: yes. Open: no, until its
/// half-open time. Half-open (or open past its half-open time): only if no dispatch of the type
/// has been made since (that one is the trial).
pub fn is_dispatch_allowed(store: &Store, worker_type: &str, now: Timestamp) -> Result<bool> {
    let policy: RestartPolicy = store.load()?;
    if !policy.circuit_breaker.enabled {
        return Ok(true);
    }
    dispatch_allowed_by(store, &store.load()?, worker_type, now)
}

/// [`is_dispatch_allowed`] by breakers the caller read (the coordinator reads them once per cycle,
/// before the time it stamps its dispatches with, so that a dispatch a closed breaker let through
/// is never stamped before the breaker's `since`), for a caller that checked the policy enables
/// them. The trial check reads the spec buckets.
pub fn dispatch_allowed_by(store: &Store, breakers: &Breakers, worker_type: &str, now: Timestamp) -> Result<bool> {
    let trial_since = match breakers.breakers.get(worker_type).map(|b| &b.state) {
        None | Some(BreakerState::Closed { .. }) => return Ok(true),
        Some(BreakerState::Open { half_open_at, .. }) => match parse_ts(half_open_at) {
            Some(h) if now >= h => h,
            _ => return Ok(false),
        },
        Some(BreakerState::HalfOpen { since }) => parse_ts(since).unwrap_or(now),
    };
    for bucket in [SpecBucket::Active, SpecBucket::Completed, SpecBucket::Failed, SpecBucket::Zombie] {
        let trial_made = list_bucket(store, bucket)?
            .iter()
            .any(|d| d.worker_type == worker_type && parse_ts(&d.dispatched_at).is_some_and(|t| t >= trial_since));
        if trial_made {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Closes a type's breaker by hand (or by a fix): failures before now no longer count.
pub fn reset(store: &Store, worker_type: &str, by: &str, now: Timestamp) -> Result<Option<Breaker>> {
    let before = store.update::<Breakers, _>(|doc| {
        let before = doc.breakers.get(worker_type).cloned();
        if before.is_some() {
            doc.breakers.insert(
                worker_type.to_string(),
                Breaker {
                    state: BreakerState::Closed { since: format_ts(now) },
                    failures_in_window: 0,
                    last_failure_at: before.as_ref().and_then(|b| b.last_failure_at.clone()),
                    trips: before.as_ref().map_or(0, |b| b.trips),
                    updated_at: Some(format_ts(now)),
                },
            );
            doc.updated_at = Some(format_ts(now));
        }
        Ok(before)
    })?;
    if let Some(b) = &before {
        store.emit(
            EventKind::CircuitBreakerReset,
            Severity::Info,
            format!("circuit breaker of {worker_type} reset to closed by {by}"),
            json!({"worker_type": worker_type, "by": by, "previous": b}),
        )?;
    }
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        parse_ts("2030-01-01T00:00:00Z").unwrap() + chrono::Duration::seconds(s)
    }

    fn fail(at: i64) -> Outcome {
        Outcome { worker_type: "w".into(), dispatched_at: t(at - 1), ended_at: t(at), failure: true }
    }

    fn ok(dispatched: i64, ended: i64) -> Outcome {
        Outcome { worker_type: "w".into(), dispatched_at: t(dispatched), ended_at: t(ended), failure: false }
    }

    #[test]
    fn trips_at_threshold_within_window_half_opens_then_closes() {
        let p = BreakerPolicy::default();
        let mut outs: Vec<Outcome> = (1..=4).map(|i| fail(i * 10)).collect();
        let refs: Vec<&Outcome> = outs.iter().collect();
        let (b, tr) = step(None, &refs, &p, t(100));
        assert_eq!(tr, None);
        assert_eq!(b.failures_in_window, 4);
        // Old failures outside the 900 s window do not count.
        let (b2, _) = step(None, &refs, &p, t(1000));
        assert_eq!(b2.failures_in_window, 0);

        outs.push(fail(50));
        let refs: Vec<&Outcome> = outs.iter().collect();
        let (b, tr) = step(Some(&b), &refs, &p, t(100));
        assert!(matches!(tr, Some(Transition::Tripped { failures: 5, .. })), "{tr:?}");
        assert!(matches!(b.state, BreakerState::Open { .. }));
        assert_eq!(b.trips, 1);
        // Still open before the reset timeout, and nothing new to say.
        let (b, tr) = step(Some(&b), &refs, &p, t(100 + 1799));
        assert_eq!(tr, None);
        let (b, tr) = step(Some(&b), &refs, &p, t(100 + 1800));
        assert_eq!(tr, Some(Transition::HalfOpened));
        assert_eq!(b.state, BreakerState::HalfOpen { since: format_ts(t(1900)) });
        // The trial succeeds: closed, and the old failures no longer count.
        outs.push(ok(1901, 1950));
        let refs: Vec<&Outcome> = outs.iter().collect();
        let (b, tr) = step(Some(&b), &refs, &p, t(1960));
        assert_eq!(tr, Some(Transition::Closed));
        let (b, tr) = step(Some(&b), &refs, &p, t(1970));
        assert_eq!((tr, b.failures_in_window), (None, 0));
    }

    #[test]
    fn a_failed_trial_opens_it_again() {
        let p = BreakerPolicy::default();
        let b = Breaker {
            state: BreakerState::HalfOpen { since: format_ts(t(0)) },
            failures_in_window: 0,
            last_failure_at: None,
            trips: 1,
            updated_at: None,
        };
        let outs = [fail(30)];
        let refs: Vec<&Outcome> = outs.iter().collect();
        let (b, tr) = step(Some(&b), &refs, &p, t(40));
        assert!(matches!(tr, Some(Transition::Tripped { .. })));
        assert!(matches!(b.state, BreakerState::Open { .. }));
        assert_eq!(b.trips, 2);
    }
}
