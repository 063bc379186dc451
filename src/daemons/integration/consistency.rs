//! Cross-file consistency, pure: every `in_progress` task has an active (starting or running)
//! dispatch spec and every active spec belongs to its task's current attempt; the token budget
//! balances (`available = total − used − Σ reservations`) and every reservation belongs to an
//! active dispatch. A [`Tracker`] reports an inconsistency only once it has lasted the grace
//! period (the dispatch protocol has short legitimate windows) and once until it is resolved.

use crate::domain::task::journal::{HeldState, TaskStates};
use crate::domain::task::{DispatchRecord, TokenBudget};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// One cross-file inconsistency.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Inconsistency {
    /// `task_without_dispatch`, `dispatch_without_task`, `budget_unbalanced`, `orphan_reservation`.
    pub kind: &'static str,
    /// Identifies it across checks (kind and ids).
    pub key: String,
    pub message: String,
    pub data: Value,
}

/// Finds every inconsistency between the queue, the budget and the active specs.
pub(crate) fn check(queue: &TaskStates, budget: &TokenBudget, active: &[DispatchRecord]) -> Vec<Inconsistency> {
    let mut out = Vec::new();
    let running: Vec<&DispatchRecord> = active.iter().filter(|d| d.status().is_active()).collect();
    let running_ids: HashSet<&str> = running.iter().map(|d| d.dispatch_id.as_str()).collect();
    let in_progress = queue.in_progress.iter().filter_map(|id| match queue.tasks.get(id)? {
        HeldState::InProgress { dispatch_id, worker_type } => Some((&**id, &**dispatch_id, &**worker_type)),
        HeldState::Other(_) => None,
    });
    for (task_id, dispatch_id, worker_type) in in_progress {
        if !running_ids.contains(dispatch_id) {
            out.push(Inconsistency {
                kind: "task_without_dispatch",
                key: format!("task_without_dispatch:{task_id}:{dispatch_id}"),
                message: format!(
                    "task {task_id} is in_progress with dispatch {dispatch_id}, but worker-specs/active/ has no starting or running spec for it"
                ),
                data: json!({"task_id": task_id, "dispatch_id": dispatch_id, "worker_type": worker_type}),
            });
        }
    }
    for d in &running {
        let problem = match queue.tasks.get(d.task_id.as_str()) {
            None => Some("no such task in task-queue.json".to_string()),
            Some(HeldState::InProgress { dispatch_id, .. }) if **dispatch_id == *d.dispatch_id => None,
            Some(HeldState::InProgress { dispatch_id, .. }) => {
                Some(format!("the task's current dispatch is {dispatch_id}"))
            }
            Some(HeldState::Other(status)) => Some(format!("the task is {}", status.as_str())),
        };
        if let Some(problem) = problem {
            out.push(Inconsistency {
                kind: "dispatch_without_task",
                key: format!("dispatch_without_task:{}", d.dispatch_id),
                message: format!(
                    "dispatch {} ({}) runs for task {}, but {problem}",
                    d.dispatch_id,
                    d.status().as_str(),
                    d.task_id
                ),
                data: json!({"dispatch_id": d.dispatch_id, "task_id": d.task_id, "status": d.status(), "problem": problem}),
            });
        }
    }
    let reserved = budget.reserved();
    let expected = budget.total.saturating_sub(budget.used).saturating_sub(reserved);
    if budget.available != expected {
        out.push(Inconsistency {
            kind: "budget_unbalanced",
            key: "budget_unbalanced".into(),
            message: format!(
                "token-budget.json does not balance: available is {} but total {} − used {} − reserved {} = {expected}",
                budget.available, budget.total, budget.used, reserved
            ),
            data: json!({"total": budget.total, "used": budget.used, "reserved": reserved,
                         "available": budget.available, "expected_available": expected}),
        });
    }
    for (dispatch_id, tokens) in &budget.reservations {
        if !running_ids.contains(dispatch_id.as_str()) {
            out.push(Inconsistency {
                kind: "orphan_reservation",
                key: format!("orphan_reservation:{dispatch_id}"),
                message: format!(
                    "token-budget.json reserves {tokens} tokens for dispatch {dispatch_id}, which is not starting or running"
                ),
                data: json!({"dispatch_id": dispatch_id, "tokens": tokens}),
            });
        }
    }
    out
}

/// What the tracker decided at one check.
#[derive(Debug, Default)]
pub(crate) struct Decisions {
    /// Lasted the grace period: report now.
    pub report: Vec<Inconsistency>,
    /// Reported earlier and now gone.
    pub resolved: Vec<Inconsistency>,
    /// The earliest time a pending one may become reportable (re-check then).
    pub recheck_at: Option<Instant>,
}

/// Remembers inconsistencies between checks: first seen (pending) and reported.
#[derive(Debug)]
pub(crate) struct Tracker {
    grace: Duration,
    pending: BTreeMap<String, Instant>,
    reported: BTreeMap<String, Inconsistency>,
}

impl Tracker {
    pub(crate) fn new(grace: Duration) -> Self {
        Tracker { grace, pending: BTreeMap::new(), reported: BTreeMap::new() }
    }

    /// Folds in the result of a check made at `now`.
    pub(crate) fn observe(&mut self, found: Vec<Inconsistency>, now: Instant) -> Decisions {
        let mut d = Decisions::default();
        let keys: HashSet<String> = found.iter().map(|i| i.key.clone()).collect();
        self.pending.retain(|k, _| keys.contains(k));
        let gone: Vec<String> = self.reported.keys().filter(|k| !keys.contains(*k)).cloned().collect();
        for k in gone {
            if let Some(i) = self.reported.remove(&k) {
                d.resolved.push(i);
            }
        }
        for i in found {
            if self.reported.contains_key(&i.key) {
                continue;
            }
            let first = *self.pending.entry(i.key.clone()).or_insert(now);
            if now.duration_since(first) >= self.grace {
                self.pending.remove(&i.key);
                self.reported.insert(i.key.clone(), i.clone());
                d.report.push(i);
            } else {
                let due = first + self.grace;
                d.recheck_at = Some(d.recheck_at.map_or(due, |r: Instant| r.min(due)));
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_after_grace_once_and_resolves() {
        let mut t = Tracker::new(Duration::from_secs(5));
        let i = Inconsistency { kind: "budget_unbalanced", key: "b".into(), message: "m".into(), data: json!({}) };
        let t0 = Instant::now();
        let d = t.observe(vec![i.clone()], t0);
        assert!(d.report.is_empty());
        assert_eq!(d.recheck_at, Some(t0 + Duration::from_secs(5)));
        assert!(t.observe(vec![i.clone()], t0 + Duration::from_secs(2)).report.is_empty());
        assert_eq!(t.observe(vec![i.clone()], t0 + Duration::from_secs(5)).report.len(), 1);
        assert!(t.observe(vec![i.clone()], t0 + Duration::from_secs(9)).report.is_empty(), "once");
        assert_eq!(t.observe(vec![], t0 + Duration::from_secs(10)).resolved.len(), 1);
        // A transient that disappears within the grace period is never reported.
        t.observe(vec![i.clone()], t0 + Duration::from_secs(11));
        t.observe(vec![], t0 + Duration::from_secs(12));
        assert!(t.observe(vec![i], t0 + Duration::from_secs(17)).report.is_empty());
    }
}
