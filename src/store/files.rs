//! The registry of coordination files: for each, its path under `coordination/`, whether it is
//! JSON or JSONL, its embedded JSON Schema, its embedded default content, and the lock that
//! guards its read-modify-writes. `init`, `validate`, backups, repair and the integration daemon
//! all walk this one table.

use crate::store::LockName;

/// JSON (replaced atomically) or JSONL (appended line by line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Json,
    Jsonl,
}

/// One coordination file.
#[derive(Debug)]
pub struct CoordFile {
    /// Path relative to `coordination/`.
    pub rel: &'static str,
    pub kind: FileKind,
    /// Schema name (see [`crate::base::schema`]); for JSONL, the schema of each line.
    pub schema: &'static str,
    /// Content `cortex init` writes when the file is missing.
    pub default: Option<&'static str>,
    /// The lock (under `coordination/.locks/`) that guards writes to this file.
    pub lock: LockName,
    /// Created by `init` and `repair` when missing.
    pub essential: bool,
    /// Operator-edited configuration (restored by `restore --only config`).
    pub is_config: bool,
}

macro_rules! default_file {
    ($rel:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/coordination/defaults/", $rel))
    };
}

pub const TASK_QUEUE: &CoordFile = &CoordFile {
    rel: "task-queue.json",
    kind: FileKind::Json,
    schema: "task-queue",
    default: Some(default_file!("task-queue.json")),
    lock: LockName::TaskQueue,
    essential: true,
    is_config: false,
};

/// The queue's journal: changes since the snapshot `task-queue.json` (see `task::journal`).
pub const TASK_QUEUE_JOURNAL: &CoordFile = &CoordFile {
    rel: "task-queue.journal.jsonl",
    kind: FileKind::Jsonl,
    schema: "task-queue-journal",
    default: None,
    lock: LockName::TaskQueue,
    essential: false,
    is_config: false,
};

pub const TOKEN_BUDGET: &CoordFile = &CoordFile {
    rel: "token-budget.json",
    kind: FileKind::Json,
    schema: "token-budget",
    default: Some(default_file!("token-budget.json")),
    lock: LockName::TokenBudget,
    essential: true,
    is_config: false,
};

pub const SCHEDULER_STATE: &CoordFile = &CoordFile {
    rel: "scheduler-state.json",
    kind: FileKind::Json,
    schema: "scheduler-state",
    default: Some(default_file!("scheduler-state.json")),
    lock: LockName::Scheduler,
    essential: true,
    is_config: false,
};

pub const EVENTS: &CoordFile = &CoordFile {
    rel: "dashboard-events.jsonl",
    kind: FileKind::Jsonl,
    schema: "event",
    default: Some(""),
    lock: LockName::Events,
    essential: true,
    is_config: false,
};

pub const WORKER_TYPES: &CoordFile = &CoordFile {
    rel: "config/worker-types.json",
    kind: FileKind::Json,
    schema: "worker-types",
    default: Some(default_file!("config/worker-types.json")),
    lock: LockName::WorkerTypes,
    essential: true,
    is_config: true,
};

pub const HEARTBEAT_POLICY: &CoordFile = &CoordFile {
    rel: "config/heartbeat-policy.json",
    kind: FileKind::Json,
    schema: "heartbeat-policy",
    default: Some(default_file!("config/heartbeat-policy.json")),
    lock: LockName::HeartbeatPolicy,
    essential: true,
    is_config: true,
};

pub const RESTART_POLICY: &CoordFile = &CoordFile {
    rel: "config/worker-restart-policy.json",
    kind: FileKind::Json,
    schema: "worker-restart-policy",
    default: Some(default_file!("config/worker-restart-policy.json")),
    lock: LockName::WorkerRestartPolicy,
    essential: true,
    is_config: true,
};

pub const ROUTER_CONFIG: &CoordFile = &CoordFile {
    rel: "moe/router-config.json",
    kind: FileKind::Json,
    schema: "router-config",
    default: Some(default_file!("moe/router-config.json")),
    lock: LockName::RouterConfig,
    essential: true,
    is_config: true,
};

pub const ROUTING_DECISIONS: &CoordFile = &CoordFile {
    rel: "moe/routing-decisions.jsonl",
    kind: FileKind::Jsonl,
    schema: "routing-decision",
    default: None,
    lock: LockName::RoutingDecisions,
    essential: false,
    is_config: false,
};

pub const SCHEDULES: &CoordFile = &CoordFile {
    rel: "schedules.json",
    kind: FileKind::Json,
    schema: "schedules",
    default: Some(default_file!("schedules.json")),
    lock: LockName::Schedules,
    essential: true,
    is_config: false,
};

pub const CIRCUIT_BREAKERS: &CoordFile = &CoordFile {
    rel: "circuit-breakers.json",
    kind: FileKind::Json,
    schema: "circuit-breakers",
    default: Some(default_file!("circuit-breakers.json")),
    lock: LockName::CircuitBreakers,
    essential: true,
    is_config: false,
};

pub const FAILURE_PATTERNS: &CoordFile = &CoordFile {
    rel: "patterns/failure-patterns.jsonl",
    kind: FileKind::Jsonl,
    schema: "failure-pattern",
    default: None,
    lock: LockName::FailurePatterns,
    essential: false,
    is_config: false,
};

pub const TASK_INTAKE: &CoordFile = &CoordFile {
    rel: "task-intake.jsonl",
    kind: FileKind::Jsonl,
    schema: "task",
    default: None,
    lock: LockName::TaskIntake,
    essential: false,
    is_config: false,
};

pub const METRICS_SNAPSHOTS: &CoordFile = &CoordFile {
    rel: "metrics/metrics-snapshots.jsonl",
    kind: FileKind::Jsonl,
    schema: "metrics-snapshot",
    default: None,
    lock: LockName::Metrics,
    essential: false,
    is_config: false,
};

pub const TASK_ARCHIVE: &CoordFile = &CoordFile {
    rel: "task-archive.jsonl",
    kind: FileKind::Jsonl,
    schema: "task",
    default: None,
    lock: LockName::TaskArchive,
    essential: false,
    is_config: false,
};

/// The sealed segments of the task archive, under `coordination/`: `seg-NNNNNN.jsonl` (a former
/// `task-archive.jsonl`, unchanged) and its sidecar index `seg-NNNNNN.idx`
/// ([`crate::domain::task::archive::segment`]). Not a registered file: segments are never written again
/// once sealed, so the integration daemon checks each one once, when it appears.
pub const TASK_ARCHIVE_SEGMENTS: &str = "task-archive";

/// The task ids `cortex task retry` brought back from the archive, one `{"task_id": …}` per line,
/// appended under the `task-queue` lock: the only ids a sealed segment's index may hold a
/// superseded line of (readers look those up exactly).
pub const TASK_ARCHIVE_RETRIED: &str = "task-archive/retried.jsonl";

pub const FIX_REGISTRY: &CoordFile = &CoordFile {
    rel: "config/auto-fix-registry.json",
    kind: FileKind::Json,
    schema: "auto-fix-registry",
    default: Some(default_file!("config/auto-fix-registry.json")),
    lock: LockName::AutoFixRegistry,
    essential: true,
    is_config: true,
};

pub const FIX_HISTORY: &CoordFile = &CoordFile {
    rel: "auto-fix/fix-history.jsonl",
    kind: FileKind::Jsonl,
    schema: "fix-history",
    default: None,
    lock: LockName::FixHistory,
    essential: false,
    is_config: false,
};

pub const FAILURE_STREAKS: &CoordFile = &CoordFile {
    rel: "failure-streaks.json",
    kind: FileKind::Json,
    schema: "failure-streaks",
    default: Some("{\"worker_types\": {}}"),
    lock: LockName::FailureStreaks,
    essential: false,
    is_config: false,
};

pub const EVENT_ACKS: &CoordFile = &CoordFile {
    rel: "event-acks.jsonl",
    kind: FileKind::Jsonl,
    schema: "event-ack",
    default: None,
    lock: LockName::EventAcks,
    essential: false,
    is_config: false,
};

/// `config/notifications.json`: cortex-notify's rules and sinks. Optional: without it the notify
/// daemon sends nothing (and costs nothing).
pub const NOTIFICATIONS: &CoordFile = &CoordFile {
    rel: "config/notifications.json",
    kind: FileKind::Json,
    schema: "notifications",
    default: None,
    lock: LockName::Notifications,
    essential: false,
    is_config: true,
};

/// Every coordination file with a fixed name. Worker specs (`worker-specs/<bucket>/*.json`,
/// schema `dispatch`) are walked separately.
pub const ALL: &[&CoordFile] = &[
    TASK_QUEUE,
    TASK_QUEUE_JOURNAL,
    TOKEN_BUDGET,
    SCHEDULER_STATE,
    EVENTS,
    WORKER_TYPES,
    HEARTBEAT_POLICY,
    RESTART_POLICY,
    ROUTER_CONFIG,
    ROUTING_DECISIONS,
    SCHEDULES,
    FAILURE_PATTERNS,
    METRICS_SNAPSHOTS,
    CIRCUIT_BREAKERS,
    FIX_REGISTRY,
    FIX_HISTORY,
    TASK_INTAKE,
    TASK_ARCHIVE,
    FAILURE_STREAKS,
    EVENT_ACKS,
    NOTIFICATIONS,
];

/// Looks a file up by its path relative to `coordination/`.
pub fn by_rel(rel: &str) -> Option<&'static CoordFile> {
    ALL.iter().copied().find(|f| f.rel == rel)
}

/// The schema of worker-spec (dispatch record) files.
pub const DISPATCH_SCHEMA: &str = "dispatch";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_json_default_validates_against_its_schema() {
        for f in ALL {
            if let (Some(src), FileKind::Json) = (f.default, f.kind) {
                let v: serde_json::Value = serde_json::from_str(src).unwrap();
                assert_eq!(crate::base::schema::check(f.schema, &v, 5), vec![], "default of {}", f.rel);
            }
        }
    }
}
