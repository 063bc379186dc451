//! Task operations — the one code path behind `cortex task ...` and the HTTP API: add, find,
//! list, cancel, retry (of a task or of a dispatch), and reporting token usage.

use super::archive;
use super::dispatches;
use super::intake;
use super::listing;
pub use super::listing::Listing;
use super::model::{
    DispatchRecord, DispatchStatus, Priority, RoutingInfo, Task, TaskQueue, TaskResult, TaskState, TaskStatus,
    TokenBudget, WaitingReason, new_id,
};
use super::queue;
use super::router::{DecisionRecord, RouterConfig, log_decision};
use super::worker_types::{ExecutorKind, SlurmOptions, WorkerTypes};
use crate::base::clock::{SystemClock, format_ts, now_string};
use crate::base::error::{Error, Result};
use crate::store::Store;
use crate::store::config::Config;
use crate::store::events::{EventKind, Severity};
use crate::store::files::{TASK_QUEUE, TOKEN_BUDGET};
use crate::store::home::SpecBucket;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a caller asks for when adding a task. Durations are seconds (so the API can take JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewTask {
    pub description: String,
    /// Default: medium.
    pub priority: Option<Priority>,
    /// Skips routing when given.
    pub worker_type: Option<String>,
    /// Tokens reserved per attempt; default: the worker type's `default_budget`.
    pub budget: Option<u64>,
    /// Default: the worker type's, else `[retry] max_attempts`.
    pub max_attempts: Option<u32>,
    /// Default: the worker type's `default_duration`.
    pub timeout_seconds: Option<f64>,
    /// Run only after this task completed.
    pub after: Option<String>,
    /// Not before now + this.
    pub delay_seconds: Option<f64>,
    /// The argv; empty: the worker type's template.
    pub command: Vec<String>,
    /// Default: the local user.
    pub created_by: Option<String>,
    pub repo: Option<String>,
    pub schedule_id: Option<String>,
    /// A fixed id (a schedule's run: one id per slot, so a re-fired slot is recognised).
    /// Default: a new id. Refused when a task with this id exists.
    pub task_id: Option<String>,
    /// Where it runs; default: its worker type's executor.
    pub executor: Option<ExecutorKind>,
    /// `sbatch` options as `KEY=VALUE` (`--slurm-opt`), over the worker type's.
    pub slurm_opts: Vec<String>,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::Config { path: None, detail: detail.into() }
}

/// Validates and queues a new task (an O(1) append to the intake; the coordinator folds it into
/// the queue). Nothing is written when the request is invalid.
pub fn add_task(store: &Store, new: NewTask) -> Result<Task> {
    let description = new.description.trim().to_string();
    if description.is_empty() {
        return Err(bad("the description must not be empty (--description TEXT)"));
    }
    let config = Config::load(store.home())?;
    let types = WorkerTypes::load(store)?;
    let (worker_type, routing, log) = match new.worker_type.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => {
            types.get(t).map_err(|e| bad(e.to_string()))?;
            (t.to_string(), RoutingInfo { rule: None, confidence: 1.0, strategy: "explicit".into() }, true)
        }
        Some(_) => return Err(bad("--type must not be empty")),
        None => {
            let router: RouterConfig = store.load()?;
            let d = router.route(&description)?;
            types.get(&d.worker_type).map_err(|e| {
                bad(format!(
                    "routing rule {:?} chose worker type {:?}, which is not defined: {e}",
                    d.routing.rule.as_deref().unwrap_or(""),
                    d.worker_type
                ))
            })?;
            (d.worker_type, d.routing, router.settings.log_decisions)
        }
    };
    let wt = types.get(&worker_type)?;
    let budget = new.budget.unwrap_or(wt.default_budget);
    let total = store.load::<TokenBudget>()?.total;
    if budget > total {
        return Err(bad(format!(
            "budget {budget} is larger than the total token budget {total} (coordination/token-budget.json); \
             it could never be dispatched"
        )));
    }
    let max_attempts = new.max_attempts.or(wt.max_attempts).unwrap_or(config.retry.max_attempts);
    if max_attempts == 0 {
        return Err(bad("--max-attempts must be at least 1"));
    }
    if let Some(t) = new.timeout_seconds
        && !(t.is_finite() && t > 0.0)
    {
        return Err(bad(format!("--timeout must be a positive duration, not {t} seconds")));
    }
    if new.command.is_empty() && wt.command.is_empty() {
        return Err(bad(format!(
            "worker type {worker_type:?} has no command template in coordination/config/worker-types.json; \
             give the task its own command after --"
        )));
    }
    let after = match new.after.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        Some(a) => match find_task(store, a)? {
            Some(t) => Some(t.task_id),
            None => return Err(bad(format!("--after {a:?}: no such task"))),
        },
        None => None,
    };
    let now = crate::base::clock::now();
    let not_before = match new.delay_seconds {
        Some(d) if !(d.is_finite() && d >= 0.0) => return Err(bad(format!("--delay must not be negative ({d})"))),
        Some(d) if d > 0.0 => Some(now + chrono::Duration::from_std(Duration::from_secs_f64(d)).unwrap_or_default()),
        _ => None,
    };
    let task_id = match new.task_id {
        Some(id) => {
            if !crate::domain::task::dispatches::is_valid_id(&id) {
                return Err(bad(format!("task id {id:?}: use letters, digits, '-' and '_' only")));
            }
            if find_task(store, &id)?.is_some() {
                return Err(Error::refused(format!("task {id} exists already")));
            }
            id
        }
        None => new_id("task"),
    };
    let slurm = if new.slurm_opts.is_empty() {
        None
    } else {
        let o = SlurmOptions::from_pairs(&new.slurm_opts).map_err(bad)?;
        if let Some(p) = o.problems("task").first() {
            return Err(bad(format!("--slurm-opt: {p}")));
        }
        Some(o)
    };
    let task = Task {
        task_id,
        description: description.clone(),
        priority: new.priority.unwrap_or(Priority::Medium),
        worker_type: worker_type.clone(),
        command: new.command,
        state: TaskState::Queued { waiting_reason: not_before.as_ref().map(|_| WaitingReason::Delay) },
        created_at: now,
        created_by: new.created_by.filter(|c| !c.is_empty()).unwrap_or_else(crate::domain::scheduler_state::local_user),
        attempts: 0,
        max_attempts,
        budget,
        routing: Some(routing.clone()),
        timeout_seconds: new.timeout_seconds,
        after,
        not_before,
        result: None,
        dispatches: Vec::new(),
        schedule_id: new.schedule_id,
        repo: new.repo.filter(|r| !r.is_empty()),
        executor: new.executor,
        slurm,
    };
    intake::append(store, &task)?;
    if log {
        let rec = DecisionRecord {
            timestamp: task.created_at,
            task_id: task.task_id.clone(),
            description,
            worker_type,
            rule: routing.rule,
            confidence: routing.confidence,
            strategy: routing.strategy,
        };
        if let Err(e) = log_decision(store, &rec) {
            tracing::warn!("cannot record the routing decision of {}: {e}", task.task_id);
        }
    }
    Ok(task)
}

/// Finds a task in the queue, the intake or the archive.
pub fn find_task(store: &Store, task_id: &str) -> Result<Option<Task>> {
    if let Some(t) = intake::find(store, task_id)? {
        return Ok(Some(t));
    }
    archive::find(store, task_id)
}

/// Which tasks [`list_tasks`] returns.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub worker_type: Option<String>,
    /// Also finished tasks from the archive (implied by a terminal `status`).
    pub include_archive: bool,
    /// Only tasks listed after this task id (the last one of the previous page).
    pub after_id: Option<String>,
    /// At most this many tasks.
    pub limit: Option<usize>,
}

/// Tasks matching the filter. The live queue alone: oldest first. With the archive: in task id
/// order (ids sort by creation time), the archive read through its indexes up to `limit`, so a
/// page costs the same whatever the history (`archive::list`).
pub fn list_tasks(store: &Store, filter: &TaskFilter) -> Result<Vec<Task>> {
    list(store, filter)?.into_vec()
}

/// [`list_tasks`] as a [`Listing`]: its length known, its tasks read one at a time. The live
/// queue is read once, keeping what the page needs (`task::listing`), so `cortex task list`
/// costs the page, and streams a listing without `--limit`.
pub fn list(store: &Store, filter: &TaskFilter) -> Result<Listing> {
    if !(filter.include_archive || filter.status.is_some_and(|s| s.is_terminal())) {
        return listing::live(store, filter);
    }
    let (live, ids) = listing::live_by_id(store, filter)?;
    let query = archive::Query {
        status: filter.status,
        worker_type: filter.worker_type.as_deref(),
        after_id: filter.after_id.as_deref(),
        limit: filter.limit,
    };
    let mut out = archive::list(store, &query, &|id| ids.contains(id))?;
    out.extend(live.into_vec()?);
    // Stable: the live tasks of one id stay in queue order.
    out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    if let Some(l) = filter.limit {
        out.truncate(l);
    }
    Ok(Listing::of(out))
}

/// Seals the archive's active file now (`cortex task seal-archive`), under the `task-queue` lock
/// the coordinator seals under, so no append runs meanwhile.
pub fn seal_archive(store: &Store, keep_segments: u32) -> Result<Option<archive::segment::Sealed>> {
    let _guard = store.lock(TASK_QUEUE)?;
    archive::segment::seal(store, keep_segments)
}

/// The dispatch records of a task, oldest first.
pub fn task_dispatches(store: &Store, task: &Task) -> Result<Vec<(SpecBucket, DispatchRecord)>> {
    let mut out = Vec::new();
    for id in &task.dispatches {
        if let Some(found) = dispatches::find(store, id)? {
            out.push(found);
        }
    }
    Ok(out)
}

enum CancelStep {
    Done(Box<Task>),
    Running(String),
}

/// Cancels a task. A queued or pending task is cancelled in the queue at once; a running one is
/// stopped by the worker (TERM, grace, KILL on its process group) and this waits up to `wait` for
/// it to end. Refused for unknown or finished tasks. Returns the task as it then is.
pub fn cancel_task(store: &Store, task_id: &str, actor: &str, wait: Duration) -> Result<Task> {
    let step = queue::update(store, |q, _| {
        let Some(t) = q.tasks.iter_mut().find(|t| t.task_id == task_id) else {
            return Err(match archive::find(store, task_id)? {
                Some(t) => Error::refused(format!("task {task_id} already ended ({})", t.status().as_str())),
                None => Error::refused(format!("no task {task_id}")),
            });
        };
        match &t.state {
            TaskState::Queued { .. } | TaskState::PendingRetry { .. } => {
                t.state = TaskState::Cancelled { started_at: None, completed_at: crate::base::clock::now() };
                let mut r = t.result.clone().unwrap_or_default();
                r.error = Some(format!("cancelled by {actor} before it ran"));
                t.result = Some(r);
                Ok(CancelStep::Done(Box::new(t.clone())))
            }
            TaskState::InProgress { dispatch_id, .. } => Ok(CancelStep::Running(dispatch_id.clone())),
            _ => Err(Error::refused(format!("task {task_id} already ended ({})", t.status().as_str()))),
        }
    })?;
    let dispatch_id = match step {
        CancelStep::Done(t) => {
            let _ = store.emit(
                EventKind::TaskCancelled,
                Severity::Info,
                format!("Task {task_id} cancelled by {actor}"),
                serde_json::json!({"task_id": task_id, "cancelled_by": actor, "was_running": false}),
            );
            return Ok(*t);
        }
        CancelStep::Running(d) => d,
    };
    match dispatches::request_cancel(store, &dispatch_id, actor) {
        Ok(_) => {}
        // It ended meanwhile: fold what it ended with.
        Err(Error::Refused(_)) if dispatches::find(store, &dispatch_id)?.is_some() => {}
        Err(e) => return Err(e),
    }
    let _ = store.emit(
        EventKind::TaskCancelRequested,
        Severity::Info,
        format!("Cancel of task {task_id} (dispatch {dispatch_id}) requested by {actor}"),
        serde_json::json!({"task_id": task_id, "dispatch_id": dispatch_id, "requested_by": actor}),
    );
    if let Some(rec) = dispatches::wait_ended(store, &dispatch_id, wait)? {
        fold_records(store, &[rec])?;
    }
    find_task(store, task_id)?.ok_or_else(|| Error::other(format!("task {task_id} vanished during its cancel")))
}

/// Folds ended dispatch records into the queue and the budget (locks `task-queue` then
/// `token-budget`). Idempotent; the coordinator does the same on its own.
pub fn fold_records(store: &Store, records: &[DispatchRecord]) -> Result<Vec<queue::Ended>> {
    let config = Config::load(store.home())?;
    let qguard = store.lock(TASK_QUEUE)?;
    let mut q: TaskQueue = store.load()?;
    let bguard = store.lock(TOKEN_BUDGET)?;
    let mut b: TokenBudget = store.load()?;
    let (ended, budget_changed) =
        queue::fold_ended(&mut q, &mut b, records, &config.retry, &SystemClock, &mut || fastrand::f64());
    if !ended.is_empty() {
        q.updated_at = Some(crate::base::clock::now());
        store.write_locked(&qguard, &q)?;
    }
    if budget_changed {
        store.write_locked(&bguard, &b)?;
    }
    drop(bguard);
    drop(qguard);
    for e in &ended {
        emit_ended(store, e);
    }
    Ok(ended)
}

/// Records the event for a task's dispatch end.
pub fn emit_ended(store: &Store, e: &queue::Ended) {
    let _ = crate::store::events::append(store.home(), &ended_event(store, e));
}

/// The event of a task's end (`task_completed`, `task_cancelled`, `task_retry_scheduled`,
/// `task_failed`), not yet recorded.
pub fn ended_event(store: &Store, e: &queue::Ended) -> crate::store::events::Event {
    let (ty, sev, msg) = match &e.outcome {
        queue::Outcome::Completed => {
            (EventKind::TaskCompleted, Severity::Info, format!("Task {} completed", e.task_id))
        }
        queue::Outcome::Cancelled => {
            (EventKind::TaskCancelled, Severity::Info, format!("Task {} cancelled", e.task_id))
        }
        queue::Outcome::RetryAt(at) => (
            EventKind::TaskRetryScheduled,
            Severity::Warning,
            format!(
                "Task {} attempt {}/{} failed ({}); retry at {}",
                e.task_id,
                e.attempts,
                e.max_attempts,
                e.result.error.as_deref().unwrap_or("failed"),
                format_ts(*at)
            ),
        ),
        queue::Outcome::Failed => (
            EventKind::TaskFailed,
            Severity::Error,
            format!(
                "Task {} failed after {} attempt(s): {}",
                e.task_id,
                e.attempts,
                e.result.error.as_deref().unwrap_or("failed")
            ),
        ),
    };
    store.event(
        ty,
        sev,
        msg,
        serde_json::json!({
            "task_id": e.task_id, "dispatch_id": e.dispatch_id, "worker_type": e.worker_type,
            "status": e.outcome.as_str(), "attempts": e.attempts, "max_attempts": e.max_attempts,
            "exit_code": e.result.exit_code, "signal": e.result.signal, "error": e.result.error,
            "tokens_used": e.result.tokens_used, "duration_seconds": e.result.duration_seconds,
            "next_retry_at": match &e.outcome { queue::Outcome::RetryAt(at) => Some(format_ts(*at)), _ => None },
        }),
    )
}

/// Makes a failed or cancelled task `pending_retry` now (bringing it back from the archive if it
/// was archived). A task whose attempts are used up gets one more. Refused in any other state.
pub fn retry_task(store: &Store, task_id: &str, actor: &str) -> Result<Task> {
    fold_ended_dispatch_of(store, task_id)?;
    let task = queue::update(store, |q, _| {
        let pos = match q.tasks.iter().position(|t| t.task_id == task_id) {
            Some(p) => p,
            None => match archive::find(store, task_id)? {
                Some(t) => {
                    // Durable before the queue holding it again: its next archived line, in a
                    // newer segment, then supersedes this one for every reader.
                    archive::segment::note_retried(store, task_id)?;
                    q.tasks.push(t);
                    q.tasks.len() - 1
                }
                None => return Err(Error::refused(format!("no task {task_id}"))),
            },
        };
        let t = &mut q.tasks[pos];
        if !matches!(t.status(), TaskStatus::Failed | TaskStatus::Cancelled) {
            return Err(Error::refused(format!(
                "task {task_id} is {}: only failed or cancelled tasks can be retried",
                t.status().as_str()
            )));
        }
        t.state = TaskState::PendingRetry { next_retry_at: crate::base::clock::now(), waiting_reason: None };
        if t.attempts >= t.max_attempts {
            t.max_attempts = t.attempts + 1;
        }
        Ok(t.clone())
    })?;
    let _ = store.emit(
        EventKind::TaskRetryRequested,
        Severity::Info,
        format!("Task {task_id} queued for another attempt by {actor}"),
        serde_json::json!({"task_id": task_id, "requested_by": actor, "attempts": task.attempts, "max_attempts": task.max_attempts}),
    );
    Ok(task)
}

/// Folds the ended dispatch of a task still recorded `in_progress` (the worker has ended it but
/// the coordinator has not folded it yet, or is down), so a retry right after a cancel or a
/// failure sees the task as it really is.
fn fold_ended_dispatch_of(store: &Store, task_id: &str) -> Result<()> {
    let Some(task) = find_task(store, task_id)? else { return Ok(()) };
    let Some(dispatch_id) = task.current_dispatch() else { return Ok(()) };
    // Zombies are left to auto-fix (or the coordinator), as the coordinator does.
    if let Some((SpecBucket::Completed | SpecBucket::Failed, rec)) = dispatches::find(store, dispatch_id)? {
        fold_records(store, &[rec])?;
    }
    Ok(())
}

/// Retries the task of an ended dispatch; refused unless the dispatch ended failed, cancelled,
/// timed out or lost, and its task is failed or cancelled.
pub fn retry_dispatch(store: &Store, dispatch_id: &str, actor: &str) -> Result<Task> {
    let (_, rec) =
        dispatches::find(store, dispatch_id)?.ok_or_else(|| Error::refused(format!("no dispatch {dispatch_id}")))?;
    match rec.status() {
        DispatchStatus::Failed
        | DispatchStatus::Cancelled
        | DispatchStatus::Timeout
        | DispatchStatus::Lost
        | DispatchStatus::Zombie => retry_task(store, &rec.task_id, actor),
        s => Err(Error::refused(format!(
            "dispatch {dispatch_id} is {}: only failed or cancelled dispatches can be retried",
            s.as_str()
        ))),
    }
}

/// Records the tokens a running dispatch used (what the task would write to
/// `CORTEX_USAGE_FILE`). `target` is a dispatch id or a task id (its running dispatch).
pub fn report_usage(store: &Store, target: &str, tokens_used: u64) -> Result<DispatchRecord> {
    let dispatch_id = match dispatches::find(store, target)? {
        Some(_) => target.to_string(),
        None => match find_task(store, target)? {
            Some(t) => t
                .current_dispatch()
                .map(str::to_string)
                .ok_or_else(|| Error::refused(format!("task {target} is {}, not running", t.status().as_str())))?,
            None => return Err(Error::refused(format!("no dispatch or task {target}"))),
        },
    };
    let rec = match dispatches::find(store, &dispatch_id)? {
        Some((SpecBucket::Active, rec)) if rec.status().is_active() => rec,
        Some((_, rec)) => {
            return Err(Error::refused(format!("dispatch {dispatch_id} already ended ({})", rec.status().as_str())));
        }
        None => return Err(Error::refused(format!("no dispatch {dispatch_id}"))),
    };
    let body = serde_json::json!({"tokens_used": tokens_used, "reported_at": now_string()});
    crate::store::atomic::write_atomic(&store.home().usage_file(&dispatch_id), body.to_string().as_bytes())?;
    Ok(rec)
}

/// Reads a usage file: a bare number, or JSON with `tokens_used` (or `tokens`).
pub fn read_usage_file(path: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    if let Ok(n) = text.parse::<u64>() {
        return Some(n);
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.as_u64().or_else(|| v.get("tokens_used").or_else(|| v.get("tokens")).and_then(|n| n.as_u64()))
}

/// A task result's one-line summary, for listings.
pub fn result_summary(r: &TaskResult) -> String {
    match (&r.error, r.exit_code, r.signal) {
        (Some(e), _, _) => e.clone(),
        (None, Some(c), _) => format!("exit {c}"),
        (None, None, Some(s)) => format!("signal {s}"),
        _ => String::new(),
    }
}
