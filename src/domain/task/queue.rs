//! The live queue's rules, shared by the coordinator and the task operations: dispatch order
//! (priority, then age, then position), what the end of a dispatch does to its task (completed,
//! `pending_retry` per the retry policy, failed, cancelled) together with the budget settlement,
//! and the queue read-modify-write that folds the intake first.

use super::budget;
use super::intake;
use super::model::{DispatchRecord, DispatchState, SignalledEnd, Task, TaskQueue, TaskResult, TaskState, TokenBudget};
use super::retry;
use crate::base::clock::{Clock, Timestamp};
use crate::base::error::Result;
use crate::store::config::RetryConfig;
use crate::store::files::TASK_QUEUE;
use crate::store::{LockGuard, Store};
use std::collections::HashMap;

/// Indices of `tasks` in dispatch order: critical > high > medium > low, then oldest first, then
/// queue position (FIFO for tasks created in the same microsecond).
pub(crate) fn dispatch_order(tasks: &[Task]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..tasks.len()).collect();
    idx.sort_by(|&a, &b| {
        let (ta, tb) = (&tasks[a], &tasks[b]);
        tb.priority.cmp(&ta.priority).then_with(|| ta.created_at.cmp(&tb.created_at)).then_with(|| a.cmp(&b))
    });
    idx
}

/// What the end of one dispatch did to its task.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub task_id: String,
    pub dispatch_id: String,
    pub worker_type: String,
    /// The task's new status.
    pub outcome: Outcome,
    /// The attempt failed (failed, timeout, lost, zombie): counts for notifications.
    pub failed_attempt: bool,
    pub result: TaskResult,
    pub attempts: u32,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed,
    RetryAt(Timestamp),
    Failed,
    Cancelled,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::RetryAt(_) => "pending_retry",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {sig}"))
}

/// The task result a dispatch's final state stands for, and whether it succeeded / was cancelled.
pub(crate) fn result_of(rec: &DispatchRecord) -> (TaskResult, Option<bool>) {
    let mut r = TaskResult { tokens_used: rec.tokens_used, ..TaskResult::default() };
    let ok = match &rec.state {
        DispatchState::Completed { exit_code, duration_s, .. } => {
            r.exit_code = Some(*exit_code);
            r.duration_seconds = Some(*duration_s);
            if *exit_code != 0 {
                r.error = Some(format!("exited with code {exit_code}"));
            }
            Some(*exit_code == 0)
        }
        DispatchState::Failed { exit_code, signal, duration_s, error, .. } => {
            r.exit_code = *exit_code;
            r.signal = *signal;
            r.duration_seconds = *duration_s;
            r.error = Some(error.clone());
            Some(false)
        }
        DispatchState::Cancelled(SignalledEnd { signal, duration_s, .. }) => {
            r.signal = *signal;
            r.duration_seconds = *duration_s;
            r.error = Some("cancelled".into());
            None
        }
        DispatchState::Timeout(SignalledEnd { signal, duration_s, .. }) => {
            r.signal = *signal;
            r.duration_seconds = *duration_s;
            r.error = Some(format!(
                "timed out after {}s{}",
                rec.timeout_seconds,
                signal.map(|s| format!(" (stopped with {})", signal_name(s))).unwrap_or_default()
            ));
            Some(false)
        }
        DispatchState::Lost { reason, .. } => {
            r.error = Some(format!("lost: {reason}"));
            Some(false)
        }
        DispatchState::Zombie { reason, .. } => {
            r.error = Some(format!("zombie: {reason}"));
            Some(false)
        }
        DispatchState::Starting | DispatchState::Running { .. } | DispatchState::Slurm { .. } => {
            r.error = Some(format!("dispatch {} left active/ without a final status", rec.dispatch_id));
            Some(false)
        }
    };
    (r, ok)
}

/// Applies the end of `rec` to `task` when `rec` is the task's running dispatch; None when it is
/// not (already folded, or a stale dispatch): folding is idempotent.
pub(crate) fn apply_end(
    task: &mut Task,
    rec: &DispatchRecord,
    cfg: &RetryConfig,
    clock: &dyn Clock,
    unit_random: &mut dyn FnMut() -> f64,
) -> Option<Ended> {
    let started_at = match &task.state {
        TaskState::InProgress { dispatch_id, started_at } if *dispatch_id == rec.dispatch_id => *started_at,
        _ => return None,
    };
    let (result, ok) = result_of(rec);
    let now = clock.now();
    let completed_at = rec.state.ended_at().unwrap_or(now);
    let started = Some(started_at);
    let outcome = match ok {
        Some(true) => {
            task.state = TaskState::Completed { started_at: started, completed_at };
            Outcome::Completed
        }
        None => {
            task.state = TaskState::Cancelled { started_at: started, completed_at };
            Outcome::Cancelled
        }
        Some(false) if task.attempts < task.max_attempts => {
            let at = retry::next_retry_at(cfg, task.attempts.max(1), clock, unit_random);
            task.state = TaskState::PendingRetry { next_retry_at: at, waiting_reason: None };
            Outcome::RetryAt(at)
        }
        Some(false) => {
            task.state = TaskState::Failed { started_at: started, completed_at };
            Outcome::Failed
        }
    };
    task.result = Some(result.clone());
    Some(Ended {
        task_id: task.task_id.clone(),
        dispatch_id: rec.dispatch_id.clone(),
        worker_type: task.worker_type.clone(),
        failed_attempt: ok == Some(false),
        outcome,
        result,
        attempts: task.attempts,
        max_attempts: task.max_attempts,
    })
}

/// Folds ended dispatches into the queue and the budget. A reservation is settled when its task
/// moves on, or when it is still held although the task already moved on (a crash between the
/// queue and budget writes); otherwise nothing changes. Returns what happened, and whether the
/// budget changed.
pub(crate) fn fold_ended(
    queue: &mut TaskQueue,
    budget: &mut TokenBudget,
    records: &[DispatchRecord],
    cfg: &RetryConfig,
    clock: &dyn Clock,
    unit_random: &mut dyn FnMut() -> f64,
) -> (Vec<Ended>, bool) {
    let index: HashMap<&str, usize> = queue.tasks.iter().enumerate().map(|(i, t)| (t.task_id.as_str(), i)).collect();
    let positions: Vec<Option<usize>> = records.iter().map(|r| index.get(r.task_id.as_str()).copied()).collect();
    drop(index);
    let now = clock.now();
    let mut ended = Vec::new();
    let mut budget_changed = false;
    for (rec, pos) in records.iter().zip(positions) {
        let moved = pos.and_then(|i| apply_end(&mut queue.tasks[i], rec, cfg, clock, unit_random));
        if moved.is_some() || budget.reservations.contains_key(&rec.dispatch_id) {
            budget_changed |= budget::settle(budget, &rec.dispatch_id, rec.tokens_used, now);
        }
        ended.extend(moved);
    }
    (ended, budget_changed)
}

/// A read-modify-write of the queue under its lock, with the intake folded in first so the
/// change sees every task; what changed is appended to the queue's journal (`task::journal`).
/// Returns the closure's result.
pub(crate) fn update<R>(store: &Store, change: impl FnOnce(&mut TaskQueue, &LockGuard) -> Result<R>) -> Result<R> {
    let guard = store.lock(TASK_QUEUE)?;
    let loaded = super::journal::load(store)?;
    let mut pos = loaded.pos;
    let mut queue = loaded.queue;
    // Before the fold, so the folded tasks are written to the journal as new ones.
    let before = queue.clone();
    let fold = intake::fold(store, &mut queue)?;
    let out = change(&mut queue, &guard)?;
    if fold.is_some() || queue != before {
        queue.updated_at = Some(crate::base::clock::now());
        // The changed tasks alone, appended to the journal (or a compaction when it is due).
        super::journal::write_change(store, &before, &queue, &mut pos)?;
    }
    // The change is committed: the intake's housekeeping failing now (renaming the consumed
    // intake away) must not report it as not done; the next fold does it again.
    if let Some(f) = fold
        && let Err(e) = f.finish(store, &queue)
    {
        tracing::warn!("the queue change is done, but the intake's housekeeping failed: {e}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::ManualClock;
    use crate::domain::task::model::Priority;
    use crate::store::config::BackoffStrategy;

    fn at(s: &str) -> crate::base::clock::Timestamp {
        crate::base::clock::parse_ts(s).unwrap()
    }

    pub(crate) fn task(id: &str, prio: Priority, created: &str) -> Task {
        Task { priority: prio, created_at: at(created), max_attempts: 2, ..Task::sample(id) }
    }

    fn rec(task_id: &str, dispatch_id: &str, state: DispatchState) -> DispatchRecord {
        DispatchRecord {
            worker_type: "w".into(),
            state,
            budget_reserved: 100,
            tokens_used: Some(40),
            ..DispatchRecord::sample(dispatch_id, task_id)
        }
    }

    #[test]
    fn priority_then_age_then_position() {
        let t = vec![
            task("a", Priority::Low, "2026-01-01T00:00:00Z"),
            task("b", Priority::High, "2026-01-01T00:00:02Z"),
            task("c", Priority::Critical, "2026-01-01T00:00:03Z"),
            task("d", Priority::High, "2026-01-01T00:00:01Z"),
            task("e", Priority::Medium, "2026-01-01T00:00:00Z"),
            task("f", Priority::Medium, "2026-01-01T00:00:00Z"),
        ];
        let order: Vec<&str> = dispatch_order(&t).into_iter().map(|i| t[i].task_id.as_str()).collect();
        assert_eq!(order, vec!["c", "d", "b", "e", "f", "a"]);
    }

    #[test]
    fn end_folds_once_with_retry_then_failure_and_budget() {
        let clock = ManualClock::new(crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap());
        let cfg = RetryConfig {
            backoff_strategy: BackoffStrategy::Fixed,
            backoff_base_seconds: 5.0,
            ..RetryConfig::default()
        };
        let mut q =
            TaskQueue { tasks: vec![task("t", Priority::Medium, "2026-01-01T00:00:00Z")], ..TaskQueue::default() };
        let mut b: TokenBudget = serde_json::from_str(r#"{"total": 1000, "used": 0, "available": 1000}"#).unwrap();
        budget::reserve(&mut b, "d1", 100, crate::base::clock::now());
        q.tasks[0].state = TaskState::InProgress { started_at: at("2026-01-01T00:00:00Z"), dispatch_id: "d1".into() };
        q.tasks[0].attempts = 1;
        let failed = rec(
            "t",
            "d1",
            DispatchState::Failed {
                ended_at: at("2026-01-01T00:00:01Z"),
                exit_code: Some(3),
                signal: None,
                duration_s: Some(1.0),
                error: "exited with code 3".into(),
            },
        );
        let (ended, changed) = fold_ended(&mut q, &mut b, std::slice::from_ref(&failed), &cfg, &clock, &mut || 0.0);
        assert!(changed);
        assert_eq!(ended[0].outcome, Outcome::RetryAt(crate::base::clock::parse_ts("2026-01-01T00:00:05Z").unwrap()));
        assert_eq!((b.used, b.available), (40, 960));
        // Folding the same record again changes nothing.
        let (again, changed) = fold_ended(&mut q, &mut b, &[failed], &cfg, &clock, &mut || 0.0);
        assert!(again.is_empty() && !changed);
        // Second attempt fails too: attempts exhausted.
        q.tasks[0].state = TaskState::InProgress { started_at: at("2026-01-01T00:00:00Z"), dispatch_id: "d2".into() };
        q.tasks[0].attempts = 2;
        let lost = rec("t", "d2", DispatchState::Lost { ended_at: at("2026-01-01T00:00:09Z"), reason: "gone".into() });
        let (ended, _) = fold_ended(&mut q, &mut b, &[lost], &cfg, &clock, &mut || 0.0);
        assert_eq!(ended[0].outcome, Outcome::Failed);
        assert_eq!(q.tasks[0].completed_at(), Some(at("2026-01-01T00:00:09Z")));
        assert!(q.tasks[0].result.as_ref().unwrap().error.as_deref().unwrap().contains("gone"));
    }

    #[test]
    fn cancelled_never_retries() {
        let clock = ManualClock::new(crate::base::clock::now());
        let mut q =
            TaskQueue { tasks: vec![task("t", Priority::Medium, "2026-01-01T00:00:00Z")], ..TaskQueue::default() };
        q.tasks[0].state = TaskState::InProgress { started_at: at("2026-01-01T00:00:00Z"), dispatch_id: "d1".into() };
        q.tasks[0].attempts = 1;
        let mut b: TokenBudget = serde_json::from_str(r#"{"total": 1000, "used": 0, "available": 1000}"#).unwrap();
        let c = rec(
            "t",
            "d1",
            DispatchState::Cancelled(SignalledEnd {
                ended_at: at("2026-01-01T00:00:01Z"),
                signal: Some(15),
                duration_s: None,
            }),
        );
        let (ended, _) = fold_ended(&mut q, &mut b, &[c], &RetryConfig::default(), &clock, &mut || 0.0);
        assert_eq!(ended[0].outcome, Outcome::Cancelled);
        assert!(!ended[0].failed_attempt);
    }
}
