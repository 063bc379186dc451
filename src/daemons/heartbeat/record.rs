//! What the heartbeat daemon writes into a dispatch spec (`heartbeat` in
//! `worker-specs/<bucket>/<dispatch_id>.json`), and when: a read-modify-write under lock
//! `worker-specs` that only touches a spec still running the same process (the record itself
//! is read and written by `task::dispatch_record`).

use super::health::HealthStatus;
use super::liveness::Liveness;
use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::domain::task::dispatch_record::{self, read_spec, spec_path};
use crate::domain::task::{DispatchRecord, DispatchState};
use crate::store::Store;
use crate::store::home::SpecBucket;
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    #[serde(with = "crate::base::clock::ts")]
    pub detected_at: Timestamp,
    pub pid: i32,
    pub pgid: i32,
    pub proc_start_ticks: u64,
    pub tokens_returned: u64,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::base::clock::ts::option")]
    pub completed_at: Option<Timestamp>,
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
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub last_heartbeat: Option<Timestamp>,
    pub sequence: u64,
    pub missed_count: u32,
    #[serde(default)]
    pub liveness: Liveness,
    #[serde(default)]
    pub health: HealthRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::base::clock::ts::option")]
    pub checked_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zombie_cleanup: Option<ZombieCleanup>,
}

impl HeartbeatRecord {
    /// The record of the spec stored at `path` (default when absent). A record that does not
    /// decode (a malformed time, a field of the wrong type) is an error naming the file and the
    /// field (`/heartbeat/...`), like a spec that does not decode: the caller skips the spec and
    /// never overwrites the record.
    pub(crate) fn of(spec: &DispatchRecord, path: &Path) -> Result<HeartbeatRecord> {
        match &spec.heartbeat {
            None | Some(serde_json::Value::Null) => Ok(HeartbeatRecord::default()),
            Some(v) => crate::store::decode_value(v).map_err(|(pointer, expected)| Error::Invalid {
                path: path.to_path_buf(),
                pointer: format!("/heartbeat{pointer}"),
                expected,
                quarantined: None,
            }),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::parse_ts;
    use serde_json::{Value, json};

    fn spec(heartbeat: Value) -> DispatchRecord {
        DispatchRecord { heartbeat: Some(heartbeat), ..DispatchRecord::sample("d1", "t1") }
    }

    /// A record as the heartbeat daemon wrote it while its times were strings.
    fn written_before() -> Value {
        let mut v = serde_json::to_value(HeartbeatRecord::default()).unwrap();
        v["last_heartbeat"] = json!("2026-01-01T00:00:05.000000Z");
        v["checked_at"] = json!("2026-01-01T00:00:06.123456Z");
        v["zombie_cleanup"] = json!({
            "reason": "no heartbeat", "detected_at": "2026-01-01T00:00:07.000000Z", "pid": 10, "pgid": 10,
            "proc_start_ticks": 5, "tokens_returned": 0, "completed_at": "2026-01-01T00:00:08.500000Z",
            "processes_stopped": 1,
        });
        v
    }

    #[test]
    fn heartbeat_record_times_load_in_every_form_and_are_written_as_before() {
        let path = Path::new("/h/worker-specs/active/d1.json");
        let before = written_before();
        let rec = HeartbeatRecord::of(&spec(before.clone()), path).unwrap();
        assert_eq!(rec.last_heartbeat, parse_ts("2026-01-01T00:00:05Z"));
        assert_eq!(serde_json::to_value(&rec).unwrap(), before, "the same strings are written back");
        // Other RFC 3339 forms (offset, whole seconds, millis) read as the same instants.
        let mut other = before.clone();
        other["last_heartbeat"] = json!("2026-01-01T01:00:05+01:00");
        other["zombie_cleanup"]["completed_at"] = json!("2026-01-01T00:00:08.5Z");
        let rec2 = HeartbeatRecord::of(&spec(other), path).unwrap();
        assert_eq!(rec2, rec);
        // Absent or null optional times are None; an absent record is the default one.
        let mut bare = before;
        bare["last_heartbeat"] = Value::Null;
        bare.as_object_mut().unwrap().remove("checked_at");
        let rec3 = HeartbeatRecord::of(&spec(bare), path).unwrap();
        assert_eq!((rec3.last_heartbeat, rec3.checked_at), (None, None));
        assert_eq!(HeartbeatRecord::of(&spec(Value::Null), path).unwrap(), HeartbeatRecord::default());
    }

    /// Before, a record that did not decode was read as the default one: a malformed time in
    /// `zombie_cleanup` made an unfinished cleanup look absent (auto-fix would restart the task
    /// beside the zombie's processes) and the monitor overwrote the record.
    #[test]
    fn a_malformed_time_in_the_heartbeat_record_is_an_error_naming_the_spec_and_field() {
        let path = Path::new("/h/worker-specs/zombie/d1.json");
        for pointer in ["/last_heartbeat", "/checked_at", "/zombie_cleanup/detected_at", "/zombie_cleanup/completed_at"]
        {
            let mut v = written_before();
            *v.pointer_mut(pointer).unwrap() = json!("yesterday");
            let err = HeartbeatRecord::of(&spec(v), path).unwrap_err();
            match &err {
                Error::Invalid { path: p, pointer: got, expected, .. } => {
                    assert_eq!(p, path);
                    assert_eq!(got, &format!("/heartbeat{pointer}"));
                    assert!(expected.contains("\"yesterday\" is not an RFC 3339 time"), "{expected}");
                }
                other => panic!("{pointer}: {other}"),
            }
            assert!(err.to_string().contains("d1.json"), "{err}");
        }
    }
}
