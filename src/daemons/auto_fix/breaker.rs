//! Circuit breakers per worker type, in `coordination/circuit-breakers.json` (lock
//! `circuit-breakers`). A breaker counts the type's failed dispatch ends (failed, timeout, lost,
//! zombie — read from the specs in `failed/` and `zombie/`) within the window; at the threshold
//! it opens (`circuit_breaker_tripped`); after the reset timeout it half-opens and lets one trial
//! dispatch through; the trial's success closes it, its failure opens it again.
//!
//! The coordinator asks [`is_dispatch_allowed`] before dispatching a type.

use super::policy::{BreakerPolicy, RestartPolicy};
use crate::base::clock::Timestamp;
use crate::base::error::Result;
use crate::domain::task::DispatchStatus;
use crate::domain::task::dispatches::list_bucket;
use crate::store::events::{EventKind, Severity};
use crate::store::files::{self, CoordFile};
use crate::store::home::SpecBucket;
use crate::store::{Document, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where a breaker is, with the times that belong to that state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    /// Dispatches flow; failures after `since` (and within the window) count.
    Closed {
        #[serde(with = "crate::base::clock::ts")]
        since: Timestamp,
    },
    /// Dispatches of the type are held until `half_open_at`.
    Open {
        #[serde(with = "crate::base::clock::ts")]
        opened_at: Timestamp,
        #[serde(with = "crate::base::clock::ts")]
        half_open_at: Timestamp,
        reason: String,
    },
    /// One trial dispatch (the first dispatched at or after `since`) decides.
    HalfOpen {
        #[serde(with = "crate::base::clock::ts")]
        since: Timestamp,
    },
}

/// One worker type's breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    #[serde(flatten)]
    pub state: BreakerState,
    #[serde(default)]
    pub failures_in_window: u32,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub last_failure_at: Option<Timestamp>,
    /// Times it opened.
    #[serde(default)]
    pub trips: u32,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub updated_at: Option<Timestamp>,
}

/// `coordination/circuit-breakers.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakers {
    pub breakers: BTreeMap<String, Breaker>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub updated_at: Option<Timestamp>,
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

/// How a dispatch ended, as the breakers count it: None while it runs, when it was cancelled
/// (neither success nor failure) or without an end time.
pub fn outcome_of(d: &crate::domain::task::DispatchRecord) -> Option<Outcome> {
    let failure = match d.status() {
        DispatchStatus::Completed => false,
        DispatchStatus::Failed | DispatchStatus::Timeout | DispatchStatus::Lost | DispatchStatus::Zombie => true,
        _ => return None,
    };
    let ended = d.state.ended_at()?;
    Some(Outcome { worker_type: d.worker_type.clone(), dispatched_at: d.dispatched_at, ended_at: ended, failure })
}

/// The buckets whose specs are ended dispatches.
pub const ENDED_BUCKETS: [SpecBucket; 3] = [SpecBucket::Completed, SpecBucket::Failed, SpecBucket::Zombie];

/// Every ended dispatch (cancelled ones are neither success nor failure).
pub fn outcomes(store: &Store) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for bucket in ENDED_BUCKETS {
        out.extend(list_bucket(store, bucket)?.iter().filter_map(outcome_of));
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
    step_with(current, outcomes, None, policy, now)
}

/// [`step`] where `earlier_failure` is the latest failure among outcomes left out of `outcomes`
/// (the incremental [`Tracker`] forgets outcomes that can no longer count, but not the time of
/// the last failure).
pub fn step_with(
    current: Option<&Breaker>,
    outcomes: &[&Outcome],
    earlier_failure: Option<Timestamp>,
    policy: &BreakerPolicy,
    now: Timestamp,
) -> (Breaker, Option<Transition>) {
    let window_start = now - secs(policy.failure_window_seconds);
    let mut b = current.cloned().unwrap_or(Breaker {
        state: BreakerState::Closed { since: window_start },
        failures_in_window: 0,
        last_failure_at: None,
        trips: 0,
        updated_at: None,
    });
    b.last_failure_at = outcomes
        .iter()
        .filter(|o| o.failure && o.ended_at <= now)
        .map(|o| o.ended_at)
        .chain(earlier_failure.filter(|t| *t <= now))
        .max();
    let open = |b: &mut Breaker, failures: u32, reason: String| {
        b.state = BreakerState::Open {
            opened_at: now,
            half_open_at: now + secs(policy.reset_timeout_seconds),
            reason: reason.clone(),
        };
        b.trips += 1;
        Some(Transition::Tripped { failures, reason })
    };
    let transition = match b.state.clone() {
        BreakerState::Closed { since } => {
            let from = since.max(window_start);
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
        BreakerState::Open { half_open_at, .. } if now >= half_open_at => {
            b.state = BreakerState::HalfOpen { since: half_open_at };
            Some(Transition::HalfOpened)
        }
        BreakerState::Open { .. } => None,
        BreakerState::HalfOpen { since } => {
            let trial: Vec<&&Outcome> =
                outcomes.iter().filter(|o| o.dispatched_at >= since && o.ended_at <= now).collect();
            if trial.iter().any(|o| o.failure) {
                open(&mut b, 1, "the half-open trial dispatch failed".into())
            } else if !trial.is_empty() {
                b.state = BreakerState::Closed { since: now };
                b.failures_in_window = 0;
                Some(Transition::Closed)
            } else {
                None
            }
        }
    };
    if transition.is_some() {
        b.updated_at = Some(now);
    }
    (b, transition)
}

/// What one refresh decides: the new document, the transitions to record, and when the next
/// one is due (the earliest half-open time).
#[derive(Debug, Clone, PartialEq)]
pub struct Refreshed {
    pub doc: Breakers,
    pub transitions: Vec<(String, Transition, Breaker)>,
    pub next: Option<Timestamp>,
}

/// Every breaker brought up to date from `outcomes` (a type gets a breaker once it has failures
/// in the window). `earlier_failures`: per type, the latest failure not in `outcomes`. Pure.
pub fn next_doc(
    before: &Breakers,
    outcomes: &[&Outcome],
    earlier_failures: &HashMap<String, Timestamp>,
    policy: &BreakerPolicy,
    now: Timestamp,
) -> Refreshed {
    let mut doc = before.clone();
    let mut by_type: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
    for o in outcomes {
        by_type.entry(o.worker_type.as_str()).or_default().push(o);
    }
    // Known types first (in order), then new types with a failure, by name.
    let mut types: Vec<String> = doc.breakers.keys().cloned().collect();
    let mut new_types: Vec<String> = by_type
        .iter()
        .filter(|(t, os)| !doc.breakers.contains_key(**t) && os.iter().any(|o| o.failure))
        .map(|(t, _)| t.to_string())
        .collect();
    new_types.sort();
    types.extend(new_types);
    let mut transitions = Vec::new();
    let mut next: Option<Timestamp> = None;
    for t in types {
        let of_type = by_type.get(t.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let (b, tr) = step_with(doc.breakers.get(&t), of_type, earlier_failures.get(&t).copied(), policy, now);
        if let BreakerState::Open { half_open_at: h, .. } = b.state {
            next = Some(next.map_or(h, |n: Timestamp| n.min(h)));
        }
        if let Some(tr) = tr {
            transitions.push((t.clone(), tr, b.clone()));
        }
        // New types appear only once they have a failure in the window.
        if doc.breakers.contains_key(&t) || b.failures_in_window > 0 || !matches!(b.state, BreakerState::Closed { .. })
        {
            doc.breakers.insert(t, b);
        }
    }
    if !transitions.is_empty() {
        doc.updated_at = Some(now);
    }
    Refreshed { doc, transitions, next }
}

/// Brings every breaker up to date from every ended dispatch on disk (a full recomputation: the
/// daemon keeps a [`Tracker`] instead), records the transitions, and returns when the next one
/// is due (the earliest half-open time).
pub fn refresh(store: &Store, policy: &RestartPolicy, now: Timestamp) -> Result<Option<Timestamp>> {
    if !policy.circuit_breaker.enabled {
        return Ok(None);
    }
    let all = outcomes(store)?;
    let refs: Vec<&Outcome> = all.iter().collect();
    let guard = store.lock(files::CIRCUIT_BREAKERS)?;
    let before: Breakers = store.load()?;
    let r = next_doc(&before, &refs, &HashMap::new(), &policy.circuit_breaker, now);
    commit(store, guard, &before, r).map(|(next, _)| next)
}

/// Writes the refreshed document when it changed (the file is read on every dispatch decision)
/// and records the transitions; returns the next due time and the document as it now is.
fn commit(
    store: &Store,
    guard: crate::store::LockGuard,
    before: &Breakers,
    r: Refreshed,
) -> Result<(Option<Timestamp>, Breakers)> {
    if r.doc != *before {
        store.write_locked(&guard, &r.doc)?;
    }
    drop(guard);
    for (t, tr, b) in r.transitions {
        emit_transition(store, &t, tr, &b)?;
    }
    Ok((r.next, r.doc))
}

fn emit_transition(store: &Store, t: &str, tr: Transition, b: &Breaker) -> Result<()> {
    match tr {
        Transition::Tripped { failures, reason } => store.emit(
            EventKind::CircuitBreakerTripped,
            Severity::Error,
            format!("circuit breaker of {t} opened: {reason}; dispatches of {t} are held"),
            json!({"worker_type": t, "failures": failures, "reason": reason, "breaker": b}),
        ),
        Transition::HalfOpened => store.emit(
            EventKind::CircuitBreakerHalfOpen,
            Severity::Info,
            format!("circuit breaker of {t} is half-open: one trial dispatch is allowed"),
            json!({"worker_type": t, "breaker": b}),
        ),
        Transition::Closed => store.emit(
            EventKind::CircuitBreakerClosed,
            Severity::Info,
            format!("circuit breaker of {t} closed: the trial dispatch succeeded"),
            json!({"worker_type": t, "breaker": b}),
        ),
    }?;
    Ok(())
}

/// The daemon's breakers kept incrementally: the ended dispatches that can still count, by spec
/// path, built from the buckets once (at start, after a policy change, or when someone else
/// wrote `circuit-breakers.json`) and then updated from the specs that changed, so a pass costs
/// what changed, not every ended dispatch kept. An outcome is forgotten once it can no longer
/// count: ended before the failure window and, for an open or half-open breaker, dispatched
/// before its trial could start; the time of a type's last failure is kept.
///
/// Successes are read only while some breaker is not closed: with every breaker closed only
/// failures count, and a success that ended before a breaker opens cannot be its trial (a trial
/// is dispatched at or after the half-open time, which is after the opening). With
/// `reset_timeout_seconds` 0 successes are always read.
#[derive(Debug, Default)]
pub struct Tracker {
    outcomes: HashMap<PathBuf, Outcome>,
    earlier_failures: HashMap<String, Timestamp>,
    /// The document as this tracker last left it; None until built.
    doc: Option<Breakers>,
    /// Specs read since it was built (for tests and the log).
    pub reads: u64,
}

impl Tracker {
    /// True once built (a rebuild is due otherwise).
    pub fn is_built(&self) -> bool {
        self.doc.is_some()
    }

    /// Forgets everything: the next [`Tracker::refresh`] reads every ended spec again.
    pub fn invalidate(&mut self) {
        self.doc = None;
    }

    fn reads_successes(&self, policy: &BreakerPolicy) -> bool {
        policy.reset_timeout_seconds <= 0.0
            || self
                .doc
                .as_ref()
                .is_none_or(|d| d.breakers.values().any(|b| !matches!(b.state, BreakerState::Closed { .. })))
    }

    /// Adds an outcome as of the spec at `key` (None: the spec is gone or does not count).
    pub fn note(&mut self, key: PathBuf, outcome: Option<Outcome>, policy: &BreakerPolicy) {
        match outcome {
            Some(o) if o.failure || self.reads_successes(policy) => {
                self.outcomes.insert(key, o);
            }
            _ => {
                self.outcomes.remove(&key);
            }
        }
    }

    /// Takes in one changed spec path under an ended bucket: read it (a success only when
    /// successes can matter), or forget it when it is gone.
    pub fn note_path(&mut self, store: &Store, path: &Path, policy: &BreakerPolicy) {
        if !self.is_built() {
            return;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || !name.ends_with(".json") {
            return;
        }
        let completed = path.parent() == Some(store.home().worker_specs(SpecBucket::Completed).as_path());
        if completed && !self.reads_successes(policy) {
            self.outcomes.remove(path);
            return;
        }
        self.reads += 1;
        let outcome = match crate::domain::task::dispatch_record::read_spec(store, path) {
            Ok(rec) => rec.as_ref().and_then(outcome_of),
            Err(e) => {
                tracing::warn!("skipping dispatch spec: {e}");
                None
            }
        };
        self.note(path.to_path_buf(), outcome, policy);
    }

    fn rebuild(&mut self, store: &Store) -> Result<()> {
        self.outcomes.clear();
        self.earlier_failures.clear();
        for bucket in ENDED_BUCKETS {
            let dir = store.home().worker_specs(bucket);
            for d in list_bucket(store, bucket)? {
                self.reads += 1;
                if let Some(o) = outcome_of(&d) {
                    let key = crate::domain::task::dispatch_record::spec_path(store.home(), bucket, &d.dispatch_id);
                    debug_assert!(key.starts_with(&dir));
                    self.outcomes.insert(key, o);
                }
            }
        }
        Ok(())
    }

    /// The pure part of a refresh: the new document from what the tracker holds, then forgets
    /// the outcomes that can no longer count.
    pub fn decide(&mut self, before: &Breakers, policy: &BreakerPolicy, now: Timestamp) -> Refreshed {
        let refs: Vec<&Outcome> = self.outcomes.values().collect();
        let r = next_doc(before, &refs, &self.earlier_failures, policy, now);
        let window_start = now - secs(policy.failure_window_seconds);
        let doc = &r.doc;
        let earlier = &mut self.earlier_failures;
        self.outcomes.retain(|_, o| {
            let trial_from = match doc.breakers.get(&o.worker_type).map(|b| &b.state) {
                Some(BreakerState::HalfOpen { since }) => Some(*since),
                Some(BreakerState::Open { half_open_at, .. }) => Some(*half_open_at),
                _ => None,
            };
            let keep = o.ended_at > window_start || trial_from.is_some_and(|t| o.dispatched_at >= t);
            if !keep && o.failure {
                let e = earlier.entry(o.worker_type.clone()).or_insert(o.ended_at);
                *e = (*e).max(o.ended_at);
            }
            keep
        });
        self.doc = Some(r.doc.clone());
        r
    }

    /// [`refresh`] from the tracker: rebuilt first when not built or when the file is not as
    /// the tracker left it (`cortex breaker reset`, an operator's edit).
    pub fn refresh(&mut self, store: &Store, policy: &RestartPolicy, now: Timestamp) -> Result<Option<Timestamp>> {
        if !policy.circuit_breaker.enabled {
            self.invalidate();
            return Ok(None);
        }
        let guard = store.lock(files::CIRCUIT_BREAKERS)?;
        let before: Breakers = store.load()?;
        if self.doc.as_ref() != Some(&before) {
            // Read the buckets with the breakers' state known, so successes are kept when a
            // breaker is open.
            self.doc = Some(before.clone());
            if let Err(e) = self.rebuild(store) {
                self.doc = None;
                return Err(e);
            }
        }
        let r = self.decide(&before, &policy.circuit_breaker, now);
        match commit(store, guard, &before, r) {
            Ok((next, _)) => Ok(next),
            Err(e) => {
                self.invalidate();
                Err(e)
            }
        }
    }
}

/// True when a breaker holds dispatches of the type now (open and not yet due to half-open).
pub fn is_open(breakers: &Breakers, worker_type: &str, now: Timestamp) -> bool {
    match breakers.breakers.get(worker_type).map(|b| &b.state) {
        Some(BreakerState::Open { half_open_at, .. }) => now < *half_open_at,
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
        Some(BreakerState::Open { half_open_at, .. }) if now >= *half_open_at => *half_open_at,
        Some(BreakerState::Open { .. }) => return Ok(false),
        Some(BreakerState::HalfOpen { since }) => *since,
    };
    for bucket in [SpecBucket::Active, SpecBucket::Completed, SpecBucket::Failed, SpecBucket::Zombie] {
        let trial_made =
            list_bucket(store, bucket)?.iter().any(|d| d.worker_type == worker_type && d.dispatched_at >= trial_since);
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
                    state: BreakerState::Closed { since: now },
                    failures_in_window: 0,
                    last_failure_at: before.as_ref().and_then(|b| b.last_failure_at),
                    trips: before.as_ref().map_or(0, |b| b.trips),
                    updated_at: Some(now),
                },
            );
            doc.updated_at = Some(now);
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
        crate::base::clock::parse_ts("2030-01-01T00:00:00Z").unwrap() + chrono::Duration::seconds(s)
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
        assert_eq!(b.state, BreakerState::HalfOpen { since: t(1900) });
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
            state: BreakerState::HalfOpen { since: t(0) },
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

    /// The incremental tracker (outcomes added as they end, forgotten once they cannot count,
    /// successes skipped while every breaker is closed) decides exactly what a full
    /// recomputation from every outcome decides, pass after pass, over many random histories
    /// and policies.
    #[test]
    fn incremental_tracker_equals_full_recomputation() {
        for seed in 0..400u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let p = BreakerPolicy {
                failure_threshold: rng.u32(1..5),
                failure_window_seconds: rng.u32(20..400) as f64,
                reset_timeout_seconds: if rng.u8(0..5) == 0 { 0.0 } else { rng.u32(1..300) as f64 },
                ..BreakerPolicy::default()
            };
            let types = ["a", "b", "c"];
            let mut all: Vec<Outcome> = Vec::new();
            let mut full = Breakers::default();
            let mut inc = Breakers::default();
            let mut tracker = Tracker::default();
            let mut now = 0i64;
            let mut id = 0;
            for pass in 0..120 {
                now += rng.i64(0..60);
                for _ in 0..rng.usize(0..4) {
                    let ended = now - rng.i64(0..3);
                    let o = Outcome {
                        worker_type: types[rng.usize(0..types.len())].into(),
                        dispatched_at: t(ended - rng.i64(0..120)),
                        ended_at: t(ended),
                        // Mostly failures in bursts, so breakers trip, half-open and close.
                        failure: rng.u8(0..10) < if pass % 40 < 15 { 8 } else { 2 },
                    };
                    id += 1;
                    tracker.note(PathBuf::from(format!("d{id}.json")), Some(o.clone()), &p);
                    all.push(o);
                }
                let refs: Vec<&Outcome> = all.iter().collect();
                let a = next_doc(&full, &refs, &HashMap::new(), &p, t(now));
                let b = tracker.decide(&inc, &p, t(now));
                assert_eq!(a, b, "seed {seed}, pass {pass}, policy {p:?}");
                full = a.doc;
                inc = b.doc;
            }
            assert!(tracker.outcomes.len() <= all.len());
        }
    }

    #[test]
    fn tracker_forgets_outcomes_that_cannot_count_and_skips_successes_while_closed() {
        let p = BreakerPolicy::default();
        let mut tracker = Tracker::default();
        let mut doc = Breakers::default();
        tracker.note("f1".into(), Some(fail(10)), &p);
        doc = tracker.decide(&doc, &p, t(10)).doc;
        assert_eq!(doc.breakers["w"].failures_in_window, 1);
        // Every breaker closed: a success is not kept.
        tracker.note("s1".into(), Some(ok(11, 12)), &p);
        assert!(!tracker.outcomes.contains_key(Path::new("s1")));
        // Past the window the failure is forgotten, its time kept.
        let r = tracker.decide(&doc, &p, t(10 + 901));
        assert!(tracker.outcomes.is_empty());
        assert_eq!(r.doc.breakers["w"].last_failure_at, Some(t(10)));
        assert_eq!(r.doc.breakers["w"].failures_in_window, 0);
    }
}
