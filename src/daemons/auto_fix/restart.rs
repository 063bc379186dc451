//! Restart decisions for zombies. For each spec in `worker-specs/zombie/` whose cleanup is
//! complete and whose task is still `in_progress` with that dispatch, auto-fix decides under lock
//! `task-queue`: restart (task → `pending_retry` after the backoff delay) if retries remain, the
//! type's breaker is not open, the rate limits allow and the budget fits; otherwise the task
//! fails with the reason in `result.error`. The decision moves the task out of `in_progress`, so
//! it is made once per zombie however often the pass runs.

use super::breaker::{self, Breakers};
use super::history;
use super::policy::RestartPolicy;
use crate::base::clock::Timestamp;
use crate::base::error::Result;
use crate::daemons::heartbeat::record::HeartbeatRecord;
use crate::domain::task::dispatches::list_bucket;
use crate::domain::task::{
    DispatchRecord, DispatchState, Task, TaskQueue, TaskResult, TaskState, TaskStatus, TokenBudget,
};
use crate::store::Store;
use crate::store::events::{EventKind, Severity};
use crate::store::home::SpecBucket;
use serde_json::json;

/// Why a zombie's task is not restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxRetriesExceeded,
    CircuitOpen,
    GlobalRateLimit,
    TypeRateLimit,
    InsufficientBudget,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::MaxRetriesExceeded => "max_retries_exceeded",
            Refusal::CircuitOpen => "circuit_breaker_open",
            Refusal::GlobalRateLimit => "global_rate_limit",
            Refusal::TypeRateLimit => "worker_type_rate_limit",
            Refusal::InsufficientBudget => "insufficient_budget",
        }
    }
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Restart { delay_seconds: f64 },
    Fail { refusal: Refusal, reason: String },
}

/// What the decision looks at besides the task.
#[derive(Debug, Clone)]
pub(crate) struct Conditions<'a> {
    pub breaker_open: bool,
    /// Restarts decided in the last minute: (time, worker type).
    pub recent_restarts: &'a [(Timestamp, String)],
    /// Tokens available in the budget now (None: not checked).
    pub budget_available: Option<u64>,
    pub jitter_draw: f64,
}

/// The refusal when `count` restarts (`of` says of what, or is empty) in the last minute reach
/// the limit `max`; the reason names the limit's key in the policy.
fn over_rate_limit(count: u32, max: u32, refusal: Refusal, of: &str) -> Option<Decision> {
    let key = match refusal {
        Refusal::TypeRateLimit => "per_type_max_per_minute",
        _ => "global_max_per_minute",
    };
    (count >= max)
        .then(|| Decision::Fail { refusal, reason: format!("{count} restarts{of} in the last minute ({key} {max})") })
}

/// Decides for a task whose attempt number `task.attempts` became a zombie. Pure.
pub(crate) fn decide(task: &Task, policy: &RestartPolicy, c: &Conditions) -> Decision {
    let wt = task.worker_type.as_str();
    let retries_used = task.attempts.saturating_sub(1);
    let max_retries = policy.max_retries(wt);
    if retries_used >= max_retries || task.attempts >= task.max_attempts {
        return Decision::Fail {
            refusal: Refusal::MaxRetriesExceeded,
            reason: format!(
                "{} attempt(s) made; {wt} allows {max_retries} retries and the task {} attempts",
                task.attempts, task.max_attempts
            ),
        };
    }
    if c.breaker_open {
        return Decision::Fail {
            refusal: Refusal::CircuitOpen,
            reason: format!("the circuit breaker of {wt} is open"),
        };
    }
    let limits = &policy.rate_limits;
    let global = c.recent_restarts.len() as u32;
    if let Some(refused) = over_rate_limit(global, limits.global_max_per_minute, Refusal::GlobalRateLimit, "") {
        return refused;
    }
    let of_type = c.recent_restarts.iter().filter(|(_, t)| t == wt).count() as u32;
    let of_wt = format!(" of {wt}");
    if let Some(refused) = over_rate_limit(of_type, limits.per_type_max_per_minute, Refusal::TypeRateLimit, &of_wt) {
        return refused;
    }
    if policy.token_budget.check_before_restart
        && let Some(available) = c.budget_available
        && available < task.budget
    {
        return Decision::Fail {
            refusal: Refusal::InsufficientBudget,
            reason: format!("the task needs {} tokens and {available} are available", task.budget),
        };
    }
    Decision::Restart { delay_seconds: policy.delay_seconds(task.attempts.max(1), c.jitter_draw) }
}

/// One decision made by [`process_zombies`].
#[derive(Debug, Clone, PartialEq)]
pub struct Made {
    pub task_id: String,
    pub dispatch_id: String,
    pub decision: Decision,
}

/// True when the zombie's processes are known to be gone (the heartbeat daemon finished its
/// cleanup, or the spec came from elsewhere without a cleanup record). A heartbeat record that
/// does not decode (a malformed time) says nothing: the zombie is skipped, never restarted.
fn cleanup_done(store: &Store, spec: &DispatchRecord) -> bool {
    let path = crate::domain::task::dispatch_record::spec_path(store.home(), SpecBucket::Zombie, &spec.dispatch_id);
    match HeartbeatRecord::of(spec, &path) {
        Ok(hb) => hb.zombie_cleanup.is_none_or(|c| c.completed_at.is_some()),
        Err(e) => {
            tracing::warn!("skipping dispatch spec: {e}");
            false
        }
    }
}

fn owns_task(task: &Task, dispatch_id: &str) -> bool {
    matches!(&task.state, TaskState::InProgress { dispatch_id: d, .. } if d == dispatch_id)
}

/// Decides for every zombie whose task still waits for a decision.
pub(crate) fn process_zombies(store: &Store, policy: &RestartPolicy, now: Timestamp) -> Result<Vec<Made>> {
    let zombies: Vec<DispatchRecord> =
        list_bucket(store, SpecBucket::Zombie)?.into_iter().filter(|z| cleanup_done(store, z)).collect();
    if zombies.is_empty() {
        return Ok(Vec::new());
    }
    // A cheap look first: most passes find nothing to decide.
    let queue: TaskQueue = store.load()?;
    let pending: Vec<&DispatchRecord> = zombies
        .iter()
        .filter(|z| queue.tasks.iter().any(|t| t.task_id == z.task_id && owns_task(t, &z.dispatch_id)))
        .collect();
    let mut made = Vec::new();
    for spec in pending {
        if let Some(m) = decide_one(store, policy, spec, now)? {
            made.push(m);
        }
    }
    Ok(made)
}

fn decide_one(store: &Store, policy: &RestartPolicy, spec: &DispatchRecord, now: Timestamp) -> Result<Option<Made>> {
    let reason = match &spec.state {
        DispatchState::Zombie { reason, .. } => reason.clone(),
        other => other.status().as_str().to_string(),
    };
    let breakers: Breakers = store.load()?;
    let records = history::read(store.home())?;
    let recent = history::recent_restarts(&records, now);
    let guard = store.lock(crate::store::files::TASK_QUEUE)?;
    let mut queue: TaskQueue = store.load()?;
    let Some(task) = queue.tasks.iter_mut().find(|t| t.task_id == spec.task_id && owns_task(t, &spec.dispatch_id))
    else {
        return Ok(None);
    };
    // Lock order task-queue → token-budget: the budget is only read here.
    let budget_available =
        if policy.token_budget.check_before_restart { Some(store.load::<TokenBudget>()?.available) } else { None };
    let decision = decide(
        task,
        policy,
        &Conditions {
            breaker_open: policy.circuit_breaker.enabled && breaker::is_open(&breakers, &task.worker_type, now),
            recent_restarts: &recent,
            budget_available,
            jitter_draw: fastrand::f64(),
        },
    );
    let started_at = match &task.state {
        TaskState::InProgress { started_at, .. } => Some(*started_at),
        _ => None,
    };
    let what = format!("dispatch {} became a zombie ({reason})", spec.dispatch_id);
    let error = match &decision {
        Decision::Restart { delay_seconds } => {
            let at = now + chrono::Duration::microseconds((delay_seconds * 1e6) as i64);
            task.state = TaskState::PendingRetry { next_retry_at: at, waiting_reason: None };
            format!("{what}; auto-fix restarts it in {delay_seconds:.0}s")
        }
        Decision::Fail { reason: why, .. } => {
            task.state = TaskState::Failed { started_at, completed_at: now };
            format!("{what}; not restarted: {why}")
        }
    };
    task.result = Some(TaskResult {
        exit_code: None,
        signal: None,
        duration_seconds: None,
        error: Some(error.clone()),
        tokens_used: spec.tokens_used,
    });
    let task_id = task.task_id.clone();
    let worker_type = task.worker_type.clone();
    let attempt = task.attempts;
    debug_assert_ne!(task.status(), TaskStatus::InProgress);
    queue.updated_at = Some(now);
    store.write_locked(&guard, &queue)?;
    drop(guard);

    let mut data = json!({
        "task_id": task_id, "dispatch_id": spec.dispatch_id, "worker_type": worker_type,
        "attempt": attempt, "zombie_reason": reason,
    });
    match &decision {
        Decision::Restart { delay_seconds } => {
            data["decision"] = json!("restart");
            data["delay_seconds"] = json!(delay_seconds);
            history::append(store.home(), "restart_decision", data.clone(), now)?;
            store.emit(EventKind::AutoRestartScheduled, Severity::Info, format!("task {task_id}: {error}"), data)?;
        }
        Decision::Fail { refusal, reason: why } => {
            data["decision"] = json!("fail");
            data["reason_code"] = json!(refusal.code());
            data["reason"] = json!(why);
            history::append(store.home(), "restart_decision", data.clone(), now)?;
            store.emit(
                EventKind::AutoRestartRefused,
                Severity::Warning,
                format!("task {task_id} failed: {error}"),
                data,
            )?;
        }
    }
    Ok(Some(Made { task_id, dispatch_id: spec.dispatch_id.clone(), decision }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(attempts: u32) -> Task {
        Task {
            worker_type: "scan-worker".into(),
            state: TaskState::InProgress {
                started_at: crate::base::clock::parse_ts("2030-01-01T00:00:00Z").unwrap(),
                dispatch_id: "d".into(),
            },
            created_at: crate::base::clock::parse_ts("2030-01-01T00:00:00Z").unwrap(),
            attempts,
            max_attempts: 10,
            ..Task::sample("t")
        }
    }

    fn free() -> Conditions<'static> {
        Conditions { breaker_open: false, recent_restarts: &[], budget_available: Some(1000), jitter_draw: 0.0 }
    }

    /// A zombie whose cleanup record holds a malformed time is not taken for cleaned up (before,
    /// the record read as "no cleanup" and the task was restarted beside its processes).
    #[test]
    fn a_zombie_with_a_malformed_cleanup_time_is_not_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(crate::store::home::Home::at(dir.path()));
        let spec = |completed_at: serde_json::Value| DispatchRecord {
            dispatched_at: crate::base::clock::parse_ts("2030-01-01T00:00:00Z").unwrap(),
            heartbeat: Some(json!({"last_heartbeat": null, "sequence": 0, "missed_count": 0, "zombie_cleanup": {
                "reason": "r", "detected_at": "2030-01-01T00:00:00.000000Z", "pid": 1, "pgid": 1,
                "proc_start_ticks": 1, "tokens_returned": 0, "completed_at": completed_at}})),
            ..DispatchRecord::sample("d", "t")
        };
        assert!(cleanup_done(&store, &spec(json!("2030-01-01T00:00:10.000000Z"))));
        assert!(!cleanup_done(&store, &spec(serde_json::Value::Null)), "cleanup not finished");
        assert!(!cleanup_done(&store, &spec(json!("soon"))), "a malformed time says nothing");
    }

    #[test]
    fn delays_follow_the_attempt() {
        let p = RestartPolicy::default();
        let d: Vec<Decision> = (1..=3).map(|a| decide(&task(a), &p, &free())).collect();
        assert_eq!(
            d,
            vec![
                Decision::Restart { delay_seconds: 30.0 },
                Decision::Restart { delay_seconds: 60.0 },
                Decision::Restart { delay_seconds: 120.0 }
            ]
        );
        assert!(matches!(decide(&task(4), &p, &free()), Decision::Fail { refusal: Refusal::MaxRetriesExceeded, .. }));
    }

    #[test]
    fn per_type_rate_limit_allows_three_and_blocks_the_fourth() {
        let p = RestartPolicy::default();
        let now = crate::base::clock::parse_ts("2030-01-01T00:01:00Z").unwrap();
        let mut recent: Vec<(Timestamp, String)> = vec![(now, "fix-worker".into())];
        for i in 0..4 {
            let c = Conditions { recent_restarts: &recent, ..free() };
            let d = decide(&task(1), &p, &c);
            if i < 3 {
                assert!(matches!(d, Decision::Restart { .. }), "restart {} should be allowed: {d:?}", i + 1);
                recent.push((now, "scan-worker".into()));
            } else {
                assert!(matches!(d, Decision::Fail { refusal: Refusal::TypeRateLimit, .. }), "{d:?}");
            }
        }
    }

    #[test]
    fn breaker_budget_and_global_limit_refuse() {
        let p = RestartPolicy::default();
        let c = Conditions { breaker_open: true, ..free() };
        assert!(matches!(decide(&task(1), &p, &c), Decision::Fail { refusal: Refusal::CircuitOpen, .. }));
        let c = Conditions { budget_available: Some(99), ..free() };
        assert!(matches!(decide(&task(1), &p, &c), Decision::Fail { refusal: Refusal::InsufficientBudget, .. }));
        let now = chrono::Utc::now();
        let many: Vec<(Timestamp, String)> = (0..10).map(|i| (now, format!("type-{i}"))).collect();
        let c = Conditions { recent_restarts: &many, ..free() };
        assert!(matches!(decide(&task(1), &p, &c), Decision::Fail { refusal: Refusal::GlobalRateLimit, .. }));
    }
}
