//! The task and dispatch records. States are enums whose variants carry their own timestamps
//! (as in pueue v4), so a finished task without `completed_at` or a running dispatch without a
//! start time cannot be written. On disk they are flat objects (`"status": "in_progress",
//! "started_at": ...`) so operators query them with jq.

use crate::base::clock::Timestamp;
use crate::domain::task::worker_types::{ExecutorKind, SlurmOptions};
use crate::store::Document;
use crate::store::files::{self, CoordFile};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Declares the name-only companion of a state enum: the enum of its variants' names, `ALL` (in
/// declaration order), `as_str` (the name on disk) and the state's `status()`. One list of
/// variants serves all four, so a state added to one cannot be missing from another. A state
/// that reports another's name (`DispatchState::Slurm`: starting, then running) gives its
/// `status()` arms after the list, in `also { pattern => status }`.
macro_rules! state_names {
    (
        $(#[$attr:meta])*
        $state:ident => $status:ident { $($variant:ident = $name:literal),+ $(,)? }
        $(also { $($pat:pat => $to:expr),+ $(,)? })?
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $status {
            $($variant),+
        }

        impl $status {
            pub const ALL: [$status; [$($name),+].len()] = [$($status::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($status::$variant => $name),+
                }
            }
        }

        impl $state {
            pub fn status(&self) -> $status {
                match self {
                    $($state::$variant { .. } => $status::$variant,)+
                    $($($pat => $to,)+)?
                }
            }
        }
    };
}

/// Task priority; ordering is dispatch order (Critical first when sorted descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Medium,
    High,
    Critical,
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Priority::Low),
            "medium" | "normal" => Ok(Priority::Medium),
            "high" => Ok(Priority::High),
            "critical" => Ok(Priority::Critical),
            _ => Err(format!("unknown priority {s:?}: use low, medium, high or critical")),
        }
    }
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

/// Why an eligible task is not dispatched yet (the `waiting_reason` of a queued or
/// pending-retry task, which the coordinator sets and `cortex task list` shows). On disk the
/// snake_case name; a name this version does not know reads back as `Other`, so a queue
/// written by another version still loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitingReason {
    /// `not_before` (a delayed task) is still in the future.
    Delay,
    /// Its prerequisite task (`after`) has not completed yet.
    After,
    /// The circuit breaker of its worker type is open.
    CircuitBreaker,
    /// The token budget cannot cover it yet.
    Budget,
    /// Its worker type runs on Slurm and `[slurm] enabled` is false.
    SlurmDisabled,
    /// A reason written by another version.
    Other(String),
}

impl WaitingReason {
    pub fn as_str(&self) -> &str {
        match self {
            WaitingReason::Delay => "delay",
            WaitingReason::After => "after",
            WaitingReason::CircuitBreaker => "circuit_breaker",
            WaitingReason::Budget => "budget",
            WaitingReason::SlurmDisabled => "slurm_disabled",
            WaitingReason::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> WaitingReason {
        match s {
            "delay" => WaitingReason::Delay,
            "after" => WaitingReason::After,
            "circuit_breaker" => WaitingReason::CircuitBreaker,
            "budget" => WaitingReason::Budget,
            "slurm_disabled" => WaitingReason::SlurmDisabled,
            other => WaitingReason::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for WaitingReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for WaitingReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WaitingReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(WaitingReason::parse(&String::deserialize(d)?))
    }
}

/// Where a task is in its life, with the times that belong to that state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TaskState {
    Queued {
        /// Why an eligible task is not dispatched yet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waiting_reason: Option<WaitingReason>,
    },
    InProgress {
        #[serde(with = "crate::base::clock::ts")]
        started_at: Timestamp,
        dispatch_id: String,
    },
    PendingRetry {
        #[serde(with = "crate::base::clock::ts")]
        next_retry_at: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waiting_reason: Option<WaitingReason>,
    },
    Completed {
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::base::clock::ts::option")]
        started_at: Option<Timestamp>,
        #[serde(with = "crate::base::clock::ts")]
        completed_at: Timestamp,
    },
    Failed {
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::base::clock::ts::option")]
        started_at: Option<Timestamp>,
        #[serde(with = "crate::base::clock::ts")]
        completed_at: Timestamp,
    },
    Cancelled {
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::base::clock::ts::option")]
        started_at: Option<Timestamp>,
        #[serde(with = "crate::base::clock::ts")]
        completed_at: Timestamp,
    },
}

state_names! {
    /// The state's name alone, for filters and counts.
    TaskState => TaskStatus {
        Queued = "queued", InProgress = "in_progress", PendingRetry = "pending_retry",
        Completed = "completed", Failed = "failed", Cancelled = "cancelled",
    }
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskStatus::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            format!("unknown status {s:?}: use queued, in_progress, pending_retry, completed, failed or cancelled")
        })
    }
}

/// How the task's worker type was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingInfo {
    /// Name (or pattern) of the rule that matched; None for an explicit `--type`.
    pub rule: Option<String>,
    pub confidence: f64,
    /// `explicit`, `rule`, `fallback`.
    pub strategy: String,
}

/// The outcome of the last attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_seconds: Option<f64>,
    pub error: Option<String>,
    pub tokens_used: Option<u64>,
}

/// One task in `task-queue.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub task_id: String,
    pub description: String,
    pub priority: Priority,
    pub worker_type: String,
    /// The argv to run; empty means the worker type's template.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(flatten)]
    pub state: TaskState,
    #[serde(with = "crate::base::clock::ts")]
    pub created_at: Timestamp,
    pub created_by: String,
    #[serde(default)]
    pub attempts: u32,
    pub max_attempts: u32,
    /// Tokens reserved for each attempt.
    pub budget: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingInfo>,
    /// Per-task timeout; else the worker type's `default_duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Run only after this task completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Not dispatched before this time (`--delay`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::base::clock::ts::option")]
    pub not_before: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    /// Ids of every dispatch (attempt), oldest first.
    #[serde(default)]
    pub dispatches: Vec<String>,
    /// The schedule that created the task, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    /// Free-form repository the task concerns (`create-task.sh --repo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Where it runs, when not where its worker type says (`task add --executor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorKind>,
    /// Its own `sbatch` options (`task add --slurm-opt KEY=VALUE`), over its worker type's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmOptions>,
}

impl Task {
    pub fn status(&self) -> TaskStatus {
        self.state.status()
    }

    /// When the current or last attempt started.
    pub fn started_at(&self) -> Option<Timestamp> {
        match &self.state {
            TaskState::InProgress { started_at, .. } => Some(*started_at),
            TaskState::Completed { started_at, .. }
            | TaskState::Failed { started_at, .. }
            | TaskState::Cancelled { started_at, .. } => *started_at,
            TaskState::Queued { .. } | TaskState::PendingRetry { .. } => None,
        }
    }

    /// When the task finished (terminal states only).
    pub fn completed_at(&self) -> Option<Timestamp> {
        match &self.state {
            TaskState::Completed { completed_at, .. }
            | TaskState::Failed { completed_at, .. }
            | TaskState::Cancelled { completed_at, .. } => Some(*completed_at),
            _ => None,
        }
    }

    /// When a pending retry is due.
    pub fn next_retry_at(&self) -> Option<Timestamp> {
        match &self.state {
            TaskState::PendingRetry { next_retry_at, .. } => Some(*next_retry_at),
            _ => None,
        }
    }

    /// The id of the running dispatch.
    pub fn current_dispatch(&self) -> Option<&str> {
        match &self.state {
            TaskState::InProgress { dispatch_id, .. } => Some(dispatch_id),
            _ => None,
        }
    }

    /// Why a waiting task is not dispatched yet.
    pub fn waiting_reason(&self) -> Option<&WaitingReason> {
        match &self.state {
            TaskState::Queued { waiting_reason } | TaskState::PendingRetry { waiting_reason, .. } => {
                waiting_reason.as_ref()
            }
            _ => None,
        }
    }

    /// Sets the waiting reason of a queued or pending task; returns true when it changed.
    pub fn set_waiting_reason(&mut self, reason: Option<WaitingReason>) -> bool {
        match &mut self.state {
            TaskState::Queued { waiting_reason } | TaskState::PendingRetry { waiting_reason, .. } => {
                if *waiting_reason == reason {
                    return false;
                }
                *waiting_reason = reason;
                true
            }
            _ => false,
        }
    }
}

/// `coordination/task-queue.json` (its `Document` impl is beside its encoder, `queue_file.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskQueue {
    pub tasks: Vec<Task>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub updated_at: Option<Timestamp>,
    /// Bytes of `task-intake.jsonl` already folded into `tasks` (see `task::intake`).
    #[serde(default)]
    pub intake_offset: u64,
    /// The generation of `task-queue.journal.jsonl` lines that apply to this snapshot (see
    /// `task::journal`); 0 (absent) in a queue written before the journal or by hand.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub journal_generation: u64,
    /// The counts as of the last write (the snapshot's header, then each journal commit's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<QueueCounts>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How many tasks of the queue are in each state, and why the waiting ones wait: kept by every
/// writer in the snapshot's header and each journal commit, so `GET /status`, `/health` and the
/// metrics read them without loading the queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    pub total: u64,
    #[serde(default)]
    pub queued: u64,
    #[serde(default)]
    pub in_progress: u64,
    #[serde(default)]
    pub pending_retry: u64,
    #[serde(default)]
    pub completed: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub cancelled: u64,
    /// Waiting (queued or pending-retry) tasks by `waiting_reason`.
    #[serde(default)]
    pub waiting: BTreeMap<String, u64>,
}

impl QueueCounts {
    pub fn of(tasks: &[Task]) -> QueueCounts {
        let mut c = QueueCounts { total: tasks.len() as u64, ..QueueCounts::default() };
        for t in tasks {
            *c.slot(t.status()) += 1;
            if let Some(r) = t.waiting_reason() {
                *c.waiting.entry(r.as_str().to_string()).or_default() += 1;
            }
        }
        c
    }

    /// Counts one more task (counts kept by deltas as tasks move).
    pub fn add(&mut self, t: &Task) {
        self.total += 1;
        *self.slot(t.status()) += 1;
        if let Some(r) = t.waiting_reason() {
            *self.waiting.entry(r.as_str().to_string()).or_default() += 1;
        }
    }

    /// Counts one task less (the inverse of [`QueueCounts::add`]).
    pub fn remove(&mut self, t: &Task) {
        self.total = self.total.saturating_sub(1);
        let slot = self.slot(t.status());
        *slot = slot.saturating_sub(1);
        if let Some(r) = t.waiting_reason()
            && let Some(n) = self.waiting.get_mut(r.as_str())
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.waiting.remove(r.as_str());
            }
        }
    }

    /// The sum of two counts (the working queue's and the parked tasks').
    pub fn plus(mut self, other: &QueueCounts) -> QueueCounts {
        self.total += other.total;
        self.queued += other.queued;
        self.in_progress += other.in_progress;
        self.pending_retry += other.pending_retry;
        self.completed += other.completed;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        for (k, v) in &other.waiting {
            *self.waiting.entry(k.clone()).or_default() += v;
        }
        self
    }

    fn slot(&mut self, s: TaskStatus) -> &mut u64 {
        match s {
            TaskStatus::Queued => &mut self.queued,
            TaskStatus::InProgress => &mut self.in_progress,
            TaskStatus::PendingRetry => &mut self.pending_retry,
            TaskStatus::Completed => &mut self.completed,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Cancelled => &mut self.cancelled,
        }
    }

    pub fn count(&self, s: TaskStatus) -> u64 {
        match s {
            TaskStatus::Queued => self.queued,
            TaskStatus::InProgress => self.in_progress,
            TaskStatus::PendingRetry => self.pending_retry,
            TaskStatus::Completed => self.completed,
            TaskStatus::Failed => self.failed,
            TaskStatus::Cancelled => self.cancelled,
        }
    }
}

/// `coordination/token-budget.json`. `reservations` maps dispatch id → reserved tokens;
/// `available = total - used - sum(reservations)`, never below 0. The runbook's reset (a file
/// with only total/used/available) reads as no reservations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenBudget {
    pub total: u64,
    pub used: u64,
    pub available: u64,
    #[serde(default)]
    pub reservations: BTreeMap<String, u64>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub last_updated: Option<Timestamp>,
}

impl Document for TokenBudget {
    const FILE: &'static CoordFile = files::TOKEN_BUDGET;
}

impl TokenBudget {
    pub fn reserved(&self) -> u64 {
        self.reservations.values().sum()
    }

    /// Recomputes `available` from the other fields.
    pub fn recompute(&mut self) {
        self.available = self.total.saturating_sub(self.used).saturating_sub(self.reserved());
    }
}

/// Where a dispatch (one attempt of a task) is, with the times that belong to that state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DispatchState {
    /// Recorded by the coordinator; the worker has not started the process yet.
    Starting,
    Running {
        #[serde(with = "crate::base::clock::ts")]
        started_at: Timestamp,
        pid: i32,
        pgid: i32,
        /// Process start time (clock ticks since boot, from `/proc/<pid>/stat`) so a reused PID is
        /// never mistaken for our process.
        proc_start_ticks: u64,
    },
    Completed {
        #[serde(with = "crate::base::clock::ts")]
        ended_at: Timestamp,
        exit_code: i32,
        duration_s: f64,
    },
    Failed {
        #[serde(with = "crate::base::clock::ts")]
        ended_at: Timestamp,
        #[serde(default)]
        exit_code: Option<i32>,
        #[serde(default)]
        signal: Option<i32>,
        #[serde(default)]
        duration_s: Option<f64>,
        error: String,
    },
    Cancelled(SignalledEnd),
    Timeout(SignalledEnd),
    Lost {
        #[serde(with = "crate::base::clock::ts")]
        ended_at: Timestamp,
        reason: String,
    },
    Zombie {
        #[serde(with = "crate::base::clock::ts")]
        ended_at: Timestamp,
        reason: String,
    },
    /// A Slurm dispatch in the hands of `cortex-slurm` (never the worker's): from the intent to
    /// submit, recorded before `sbatch` runs, to the job's end. `job_id` is None between the
    /// intent and the job id being recorded (a crash there is recovered by finding the job by its
    /// name, `cortex-<dispatch_id>`, before submitting again); `started_at` is set once Slurm
    /// says the job runs. `reason` says why it waits (Slurm's pending reason, or Slurm
    /// unreachable); `job_state` is Slurm's state as last polled.
    Slurm {
        #[serde(with = "crate::base::clock::ts")]
        submitted_at: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_id: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_state: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::base::clock::ts::option")]
        started_at: Option<Timestamp>,
        /// The last `sbatch` for this intent certainly made no job (it never reached the
        /// controller, or none was run): submitting again is safe however old the intent is.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        not_submitted: bool,
        /// Why cortex-slurm is stopping the job, recorded before its first `scancel`, so that a
        /// restart ends it the same way (`timeout`, `cancelled`) whatever Slurm then says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stopping: Option<SlurmStop>,
    },
}

/// Why cortex-slurm stops a Slurm job (see `DispatchState::Slurm::stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlurmStop {
    Timeout,
    Cancel,
    /// Its heartbeat went stale past the heartbeat policy's `zombie_threshold_seconds` (ends
    /// `zombie`, as a local dispatch the heartbeat daemon cleans up).
    Zombie,
}

/// How a dispatch that was stopped ended (cancelled, or stopped at its timeout): on disk its
/// fields stand beside `"status"` like every state's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalledEnd {
    #[serde(with = "crate::base::clock::ts")]
    pub ended_at: Timestamp,
    /// The signal that ended the process, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub duration_s: Option<f64>,
}

state_names! {
    /// The dispatch state's name alone.
    DispatchState => DispatchStatus {
        Starting = "starting", Running = "running",
        Completed = "completed", Failed = "failed", Cancelled = "cancelled",
        Timeout = "timeout", Lost = "lost", Zombie = "zombie",
    }
    also {
        DispatchState::Slurm { started_at: None, .. } => DispatchStatus::Starting,
        DispatchState::Slurm { started_at: Some(_), .. } => DispatchStatus::Running,
    }
}

impl DispatchStatus {
    pub fn is_active(self) -> bool {
        matches!(self, DispatchStatus::Starting | DispatchStatus::Running)
    }
}

impl DispatchState {
    pub fn ended_at(&self) -> Option<Timestamp> {
        match self {
            DispatchState::Starting | DispatchState::Running { .. } | DispatchState::Slurm { .. } => None,
            DispatchState::Completed { ended_at, .. }
            | DispatchState::Failed { ended_at, .. }
            | DispatchState::Cancelled(SignalledEnd { ended_at, .. })
            | DispatchState::Timeout(SignalledEnd { ended_at, .. })
            | DispatchState::Lost { ended_at, .. }
            | DispatchState::Zombie { ended_at, .. } => Some(*ended_at),
        }
    }
}

/// One attempt of a task: `worker-specs/active/<dispatch_id>.json` while it runs, then
/// `completed/` or `failed/` (or `zombie/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchRecord {
    pub dispatch_id: String,
    pub task_id: String,
    pub worker_type: String,
    #[serde(flatten)]
    pub state: DispatchState,
    #[serde(with = "crate::base::clock::ts")]
    pub dispatched_at: Timestamp,
    pub attempt: u32,
    /// The argv, after template substitution.
    pub command: Vec<String>,
    /// Tokens reserved for this attempt.
    pub budget_reserved: u64,
    /// Seconds before the worker stops the process.
    pub timeout_seconds: f64,
    pub stdout_path: String,
    pub stderr_path: String,
    /// Filled by the heartbeat daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_used: Option<u64>,
    /// Where it runs, copied from its worker type when dispatched (a later edit of
    /// `worker-types.json` does not change a dispatch in flight): the worker runs `local` ones,
    /// `cortex-slurm` the `slurm` ones.
    #[serde(default, skip_serializing_if = "ExecutorKind::is_local")]
    pub executor: ExecutorKind,
    /// The `sbatch` options of a Slurm dispatch, copied from its worker type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmOptions>,
}

impl DispatchRecord {
    pub fn status(&self) -> DispatchStatus {
        self.state.status()
    }

    /// A Slurm dispatch (`cortex-slurm`'s, never the worker's).
    pub fn is_slurm(&self) -> bool {
        self.executor == ExecutorKind::Slurm || matches!(self.state, DispatchState::Slurm { .. })
    }
}

/// A new id: a prefix, the time in milliseconds (so ids sort by creation) and randomness.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}-{:06x}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"), fastrand::u32(..0x100_0000))
}

#[cfg(test)]
impl Task {
    /// A queued medium-priority task for unit tests; tests change the fields they care about.
    pub(crate) fn sample(task_id: &str) -> Task {
        Task {
            task_id: task_id.into(),
            description: "d".into(),
            priority: Priority::Medium,
            worker_type: "w".into(),
            command: vec![],
            state: TaskState::Queued { waiting_reason: None },
            created_at: crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap(),
            created_by: "me".into(),
            attempts: 0,
            max_attempts: 3,
            budget: 100,
            routing: None,
            timeout_seconds: None,
            after: None,
            not_before: None,
            result: None,
            dispatches: vec![],
            schedule_id: None,
            repo: None,
            executor: None,
            slurm: None,
        }
    }
}

#[cfg(test)]
impl DispatchRecord {
    /// A record for unit tests: attempt 1 of `task_id`, starting, dispatched at 2026-01-01.
    pub(crate) fn sample(dispatch_id: &str, task_id: &str) -> DispatchRecord {
        DispatchRecord {
            dispatch_id: dispatch_id.into(),
            task_id: task_id.into(),
            worker_type: "shell".into(),
            state: DispatchState::Starting,
            dispatched_at: crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap(),
            attempt: 1,
            command: vec!["true".into()],
            budget_reserved: 0,
            timeout_seconds: 60.0,
            stdout_path: format!("agents/logs/workers/{dispatch_id}.out"),
            stderr_path: format!("agents/logs/workers/{dispatch_id}.err"),
            heartbeat: None,
            tokens_used: None,
            executor: Default::default(),
            slurm: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_round_trips_flat() {
        let t = Task {
            priority: Priority::High,
            worker_type: "scan-worker".into(),
            state: TaskState::InProgress {
                started_at: crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap(),
                dispatch_id: "d1".into(),
            },
            attempts: 1,
            budget: 10,
            dispatches: vec!["d1".into()],
            ..Task::sample("t1")
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["status"], "in_progress");
        assert_eq!(v["started_at"], "2026-01-01T00:00:00.000000Z");
        let q = serde_json::json!({"tasks": [v]});
        assert!(crate::base::schema::check("task-queue", &q, 3).is_empty());
        let back: Task = serde_json::from_value(q["tasks"][0].clone()).unwrap();
        assert_eq!(back, t);
    }

    /// A queue as an older version, an operator or `jq` may have left it: whole seconds, an
    /// offset, milliseconds, and a runbook's budget reset.
    const OLD_QUEUE: &str = r#"{"tasks": [
        {"task_id": "a", "description": "d", "priority": "medium", "worker_type": "w", "status": "completed",
         "started_at": "2025-06-01T10:00:00Z", "completed_at": "2025-06-01T12:00:00.5+02:00",
         "created_at": "2025-06-01T09:59:59.123Z", "created_by": "me", "max_attempts": 3, "budget": 1},
        {"task_id": "b", "description": "d", "priority": "medium", "worker_type": "w", "status": "pending_retry",
         "next_retry_at": "2025-06-01T10:00:00.000000Z", "not_before": "2025-06-01T10:00:00Z",
         "created_at": "2025-06-01T09:00:00Z", "created_by": "me", "max_attempts": 3, "budget": 1}],
        "updated_at": "2025-06-01T10:00:00Z"}"#;

    fn at(s: &str) -> Timestamp {
        crate::base::clock::parse_ts(s).unwrap()
    }

    #[test]
    fn an_old_queue_with_every_accepted_time_form_still_loads() {
        let (_dir, store) = crate::store::fresh_store();
        let path = store.path(files::TASK_QUEUE);
        std::fs::write(&path, OLD_QUEUE).unwrap();
        let q: TaskQueue = store.load().unwrap();
        assert_eq!(q.tasks[0].started_at(), Some(at("2025-06-01T10:00:00Z")));
        assert_eq!(q.tasks[0].completed_at(), Some(at("2025-06-01T10:00:00.500Z")));
        assert_eq!(q.tasks[0].created_at, at("2025-06-01T09:59:59.123Z"));
        assert_eq!(q.tasks[1].next_retry_at(), Some(at("2025-06-01T10:00:00Z")));
        assert_eq!(q.tasks[1].not_before, Some(at("2025-06-01T10:00:00Z")));
        assert_eq!(q.updated_at, Some(at("2025-06-01T10:00:00Z")));
        // The runbook's budget reset (002) reads too.
        std::fs::write(
            store.path(files::TOKEN_BUDGET),
            r#"{"total": 1000, "used": 0, "available": 1000, "last_updated": "2025-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let b: TokenBudget = store.load().unwrap();
        assert_eq!(b.last_updated, Some(at("2025-01-01T00:00:00Z")));
    }

    #[test]
    fn a_malformed_time_in_the_queue_names_the_file_and_field_and_is_quarantined_not_overwritten() {
        let cases = [
            ("\"created_at\": \"2025-06-01T09:00:00Z\"", "\"created_at\": \"yesterday\"", "/tasks/1/created_at"),
            (
                "\"next_retry_at\": \"2025-06-01T10:00:00.000000Z\"",
                "\"next_retry_at\": \"soon\"",
                "/tasks/1/next_retry_at",
            ),
            ("\"not_before\": \"2025-06-01T10:00:00Z\"", "\"not_before\": \"2025-06-01\"", "/tasks/1/not_before"),
            ("\"updated_at\": \"2025-06-01T10:00:00Z\"", "\"updated_at\": \"now\"", "/updated_at"),
        ];
        for (good, bad, pointer) in cases {
            let (_dir, store) = crate::store::fresh_store();
            let path = store.path(files::TASK_QUEUE);
            let text = OLD_QUEUE.replacen(good, bad, 1);
            assert_ne!(text, OLD_QUEUE, "{good}");
            std::fs::write(&path, &text).unwrap();
            let err = store.load::<TaskQueue>().unwrap_err();
            let crate::base::error::Error::Invalid { path: p, pointer: got, expected, quarantined } = &err else {
                panic!("{pointer}: not Invalid: {err}")
            };
            assert_eq!(p, &path);
            assert_eq!(got, pointer, "{err}");
            assert!(expected.contains("is not an RFC 3339 time"), "{err}");
            assert!(quarantined.as_ref().is_some_and(|q| q.exists()), "{err}");
            assert!(err.to_string().contains("task-queue.json"), "{err}");
            // An update refuses to write over it.
            assert!(store.update::<TaskQueue, _>(|_| Ok(())).is_err());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
    }

    /// A cancelled or timed-out dispatch keeps its flat form on disk (`SignalledEnd`'s fields
    /// beside `"status"`), and a record without the optional fields still loads.
    #[test]
    fn a_signalled_end_is_flat_on_disk() {
        let end = SignalledEnd { ended_at: at("2026-01-01T00:00:05Z"), signal: Some(15), duration_s: Some(5.0) };
        let rec = DispatchRecord { state: DispatchState::Timeout(end), ..DispatchRecord::sample("d1", "t1") };
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["status"], "timeout");
        assert_eq!(v["ended_at"], "2026-01-01T00:00:05.000000Z");
        assert_eq!((v["signal"].as_i64(), v["duration_s"].as_f64()), (Some(15), Some(5.0)));
        assert_eq!(serde_json::from_value::<DispatchRecord>(v.clone()).unwrap(), rec);
        let mut bare = v;
        bare["status"] = "cancelled".into();
        bare.as_object_mut().unwrap().retain(|k, _| k != "signal" && k != "duration_s");
        let back: DispatchRecord = serde_json::from_value(bare).unwrap();
        let want = SignalledEnd { ended_at: at("2026-01-01T00:00:05Z"), signal: None, duration_s: None };
        assert_eq!(back.state, DispatchState::Cancelled(want));
    }

    #[test]
    fn a_malformed_time_in_a_dispatch_record_names_the_field() {
        let (_dir, store) = crate::store::fresh_store();
        let path = store.home().worker_specs(crate::store::home::SpecBucket::Completed).join("d1.json");
        let rec = serde_json::json!({"dispatch_id": "d1", "task_id": "t1", "worker_type": "w", "status": "completed",
            "ended_at": "2025-06-01T10:00:00Z", "exit_code": 0, "duration_s": 1.0,
            "dispatched_at": "2025-06-01T09:00:00+01:00", "attempt": 1, "command": ["true"], "budget_reserved": 0,
            "timeout_seconds": 1.0, "stdout_path": "", "stderr_path": ""});
        std::fs::write(&path, rec.to_string()).unwrap();
        let read = crate::domain::task::dispatch_record::read_spec(&store, &path).unwrap().unwrap();
        assert_eq!(read.dispatched_at, at("2025-06-01T08:00:00Z"));
        assert_eq!(read.state.ended_at(), Some(at("2025-06-01T10:00:00Z")));
        for (field, pointer) in [("dispatched_at", "/dispatched_at"), ("ended_at", "/ended_at")] {
            let mut bad = rec.clone();
            bad[field] = "2025-06-01T25:00:00Z".into();
            std::fs::write(&path, bad.to_string()).unwrap();
            let err = crate::domain::task::dispatch_record::read_spec(&store, &path).unwrap_err();
            let crate::base::error::Error::Invalid { pointer: got, expected, .. } = &err else { panic!("{err}") };
            assert_eq!(got, pointer, "{err}");
            assert!(expected.contains("is not an RFC 3339 time"), "{err}");
        }
    }

    #[test]
    fn waiting_reasons_are_their_names_on_disk_and_unknown_ones_load() {
        let mut t = Task::sample("t1");
        assert!(t.set_waiting_reason(Some(WaitingReason::CircuitBreaker)));
        assert!(!t.set_waiting_reason(Some(WaitingReason::CircuitBreaker)));
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["waiting_reason"], "circuit_breaker");
        assert_eq!(serde_json::from_value::<Task>(v).unwrap(), t);
        let mut v = serde_json::to_value(Task::sample("t2")).unwrap();
        v["waiting_reason"] = "paused".into();
        let back: Task = serde_json::from_value(v).unwrap();
        assert_eq!(back.waiting_reason(), Some(&WaitingReason::Other("paused".into())));
        assert_eq!(serde_json::to_value(&back).unwrap()["waiting_reason"], "paused");
    }
}
