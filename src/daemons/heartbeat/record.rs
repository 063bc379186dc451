//! What the heartbeat daemon writes into a dispatch spec (`heartbeat` in
//! `worker-specs/<bucket>/<dispatch_id>.json`), and when: a read-modify-write under lock
//! `worker-specs` that only touches a spec still running the same process (the record itself
//! is read and written by `task::dispatch_record`).

use super::health::HealthStatus;
use super::liveness::Liveness;
use crate::base::error::Result;
use crate::domain::task::dispatch_record::{self, read_spec, spec_path};
use crate::domain::task::{DispatchRecord, DispatchState};
use crate::store::Store;
use crate::store::home::SpecBucket;
use serde::{Deserialize, Serialize};

/// `heartbeat.health` of a spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HealthRecord {
    pub status: HealthStatus,
    pub health_score: u32,
    pub cpu_usage_percent: Option<f64>,
    pub memory_usage_mb: Option<f64>,
    pub tokens_used: Option<u64>,
    pub tokens_remaining: Option<u64>,
}

impl Default for HealthRecord {
    fn default() -> Self {
        HealthRecord {
            status: HealthStatus::Healthy,
            health_score: 100,
            cpu_usage_percent: None,
            memory_usage_mb: None,
            tokens_used: None,
            tokens_remaining: None,
        }
    }
}

/// How the zombie pipeline handled a dispatch (kept so an interrupted cleanup is finished after
/// a restart, and so auto-fix waits until the processes are gone before restarting the task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ZombieCleanup {
    pub reason: String,
    pub detected_at: String,
    pub pid: i32,
    pub pgid: i32,
    pub proc_start_ticks: u64,
    pub tokens_returned: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// The last signal sent to the group (`SIGTERM`, `SIGKILL`), None if nothing was running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default)]
    pub processes_stopped: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_dir: Option<String>,
}

/// `heartbeat` of a spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct HeartbeatRecord {
    pub last_heartbeat: Option<String>,
    pub sequence: u64,
    pub missed_count: u32,
    #[serde(default)]
    pub liveness: Liveness,
    #[serde(default)]
    pub health: HealthRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zombie_cleanup: Option<ZombieCleanup>,
}

impl HeartbeatRecord {
    /// The record of a spec (default when absent or unreadable).
    pub(crate) fn of(spec: &DispatchRecord) -> HeartbeatRecord {
        spec.heartbeat.clone().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default()
    }

    /// Equal apart from when it was checked.
    pub(crate) fn same_as(&self, other: &HeartbeatRecord) -> bool {
        HeartbeatRecord { checked_at: None, ..self.clone() } == HeartbeatRecord { checked_at: None, ..other.clone() }
    }
}

/// Stores `record` in the active spec of `dispatch_id` if it still runs process `pid`. Returns
/// false (and writes nothing) when the dispatch has ended or moved meanwhile.
pub(crate) fn store_record(store: &Store, dispatch_id: &str, pid: i32, record: &HeartbeatRecord) -> Result<bool> {
    let _guard = store.lock_named(crate::store::LockName::WorkerSpecs)?;
    let path = spec_path(store.home(), SpecBucket::Active, dispatch_id);
    let Some(mut spec) = read_spec(store, &path)? else { return Ok(false) };
    if !matches!(spec.state, DispatchState::Running { pid: p, .. } if p == pid) {
        return Ok(false);
    }
    spec.heartbeat = Some(serde_json::to_value(record)?);
    dispatch_record::write(&path, &spec)?;
    Ok(true)
}
