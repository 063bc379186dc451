//! The records of `coordination/schedules.json`: a schedule, its state (with the times that
//! belong to that state, flattened on disk as `"state": "paused", "paused_at": ...`), its
//! misfire policy, the template of the task each run enqueues, and pending `run-now` requests.

use crate::base::clock::Timestamp;
use crate::domain::task::Priority;
use crate::store::Document;
use crate::store::files::{self, CoordFile};
use serde::{Deserialize, Serialize};

/// `coordination/schedules.json`, guarded by lock `schedules`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schedules {
    pub schedules: Vec<Schedule>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub updated_at: Option<Timestamp>,
}

impl Document for Schedules {
    const FILE: &'static CoordFile = files::SCHEDULES;
}

impl Schedules {
    /// A schedule by id, or by name among the schedules that are not archived.
    pub fn find(&self, id_or_name: &str) -> Option<&Schedule> {
        self.position(id_or_name).map(|i| &self.schedules[i])
    }

    pub fn find_mut(&mut self, id_or_name: &str) -> Option<&mut Schedule> {
        self.position(id_or_name).map(move |i| &mut self.schedules[i])
    }

    fn position(&self, id_or_name: &str) -> Option<usize> {
        self.schedules.iter().position(|s| s.schedule_id == id_or_name).or_else(|| {
            self.schedules
                .iter()
                .position(|s| s.name == id_or_name && !matches!(s.state, ScheduleState::Archived { .. }))
        })
    }
}

/// What happens to runs that were due while nothing could fire them (coordinator down, global
/// pause).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Missed runs are dropped (an event says how many); the schedule continues with its next slot.
    Skip,
    /// All missed runs together yield one run (for the latest missed slot).
    RunOnce,
    /// Every missed run is enqueued, up to `[scheduler] misfire_run_all_cap` (the most recent ones).
    RunAll,
}

impl MisfirePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MisfirePolicy::Skip => "skip",
            MisfirePolicy::RunOnce => "run_once",
            MisfirePolicy::RunAll => "run_all",
        }
    }
}

impl std::str::FromStr for MisfirePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.replace('-', "_").to_ascii_lowercase().as_str() {
            "skip" => Ok(MisfirePolicy::Skip),
            "run_once" => Ok(MisfirePolicy::RunOnce),
            "run_all" => Ok(MisfirePolicy::RunAll),
            _ => Err(format!("unknown misfire policy {s:?}: use skip, run_once or run_all")),
        }
    }
}

/// Where a schedule is in its life, with the times that belong to that state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ScheduleState {
    Active,
    Paused {
        #[serde(with = "crate::base::clock::ts")]
        paused_at: Timestamp,
        #[serde(default)]
        paused_by: Option<String>,
        #[serde(default)]
        reason: Option<String>,
    },
    Archived {
        #[serde(with = "crate::base::clock::ts")]
        archived_at: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        archived_by: Option<String>,
    },
}

impl ScheduleState {
    pub fn name(&self) -> &'static str {
        match self {
            ScheduleState::Active => "active",
            ScheduleState::Paused { .. } => "paused",
            ScheduleState::Archived { .. } => "archived",
        }
    }
}

/// The task every run of a schedule enqueues. Unset fields get the same defaults as
/// `cortex task add` at enqueue time (routing for the worker type, the worker type's budget,
/// `[retry] max_attempts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTemplate {
    pub description: String,
    pub priority: Priority,
    #[serde(default)]
    pub worker_type: Option<String>,
    /// The argv; empty means the worker type's command template.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub budget: Option<u64>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

/// A `run-now` request, waiting for the coordinator's next [`super::fire_due`]. Its task id is
/// fixed when the request is made, so a re-fired request after a crash enqueues the same task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    pub task_id: String,
    #[serde(with = "crate::base::clock::ts")]
    pub requested_at: Timestamp,
    #[serde(default)]
    pub requested_by: Option<String>,
    #[serde(default)]
    pub requested_from: Option<String>,
}

/// One schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub schedule_id: String,
    pub name: String,
    /// A 5-field cron expression or `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A fixed interval (`30s`, `15m`, `2h`), counted from `created_at` (whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// IANA zone of a cron expression; None means `[scheduler] timezone`.
    #[serde(default)]
    pub timezone: Option<String>,
    pub task: TaskTemplate,
    #[serde(flatten)]
    pub state: ScheduleState,
    pub misfire_policy: MisfirePolicy,
    pub max_instances: u32,
    /// The slot time of the last run enqueued.
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub last_run_at: Option<Timestamp>,
    #[serde(default)]
    pub last_task_id: Option<String>,
    /// The first slot not handled yet (the cursor of [`super::fire_due`]); None while paused or
    /// archived.
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub next_run_at: Option<Timestamp>,
    #[serde(with = "crate::base::clock::ts")]
    pub created_at: Timestamp,
    #[serde(default)]
    pub created_by: Option<String>,
    /// Runs enqueued so far.
    #[serde(default)]
    pub run_count: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_runs: Vec<RunRequest>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub updated_at: Option<Timestamp>,
}

impl Schedule {
    pub fn is_active(&self) -> bool {
        self.state == ScheduleState::Active
    }

    pub fn is_archived(&self) -> bool {
        matches!(self.state, ScheduleState::Archived { .. })
    }

    pub fn next_run(&self) -> Option<Timestamp> {
        self.next_run_at
    }

    /// The expression as an operator wrote it: `cron 0 3 * * 1-5` or `every 15m`.
    pub fn expression_label(&self) -> String {
        match (&self.cron, &self.every) {
            (Some(c), _) => format!("cron {c}"),
            (None, Some(e)) => format!("every {e}"),
            (None, None) => "(none)".into(),
        }
    }
}
