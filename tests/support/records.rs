//! Dispatch records and tasks written by hand, the way the coordinator and the worker write them:
//! the one builder of each for every test that fabricates one.
#![allow(dead_code)]

use crate::support::TestHome;
use cortex::domain::task::DispatchRecord;

/// Writes a dispatch record into `coordination/worker-specs/<bucket>/<id>.json`.
pub(crate) fn write_dispatch(h: &TestHome, bucket: &str, record: serde_json::Value) {
    let id = record["dispatch_id"].as_str().expect("dispatch_id").to_string();
    let dir = h.join(&format!("coordination/worker-specs/{bucket}"));
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".tmp-{id}"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&record).unwrap()).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{id}.json"))).unwrap();
}

/// A dispatch record: the fields every record has, then `fields` merged over them: the state's
/// (`{"status": "running", "pid": ...}`) and any field a test wants other than the default here.
pub(crate) fn dispatch(id: &str, task: &str, dispatched_at: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut rec = serde_json::json!({
        "dispatch_id": id,
        "task_id": task,
        "worker_type": "scan-worker",
        "dispatched_at": dispatched_at,
        "attempt": 1,
        "command": ["sh", "-c", "true"],
        "budget_reserved": 100,
        "timeout_seconds": 60.0,
        "stdout_path": format!("agents/logs/workers/{id}.out"),
        "stderr_path": format!("agents/logs/workers/{id}.err"),
    });
    for (k, v) in fields.as_object().expect("fields object") {
        rec[k] = v.clone();
    }
    rec
}

/// A running dispatch (the pid is this test process: alive, and never signalled by these tests).
pub(crate) fn running(id: &str, task: &str) -> serde_json::Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    dispatch(
        id,
        task,
        &now,
        serde_json::json!({"status": "running", "started_at": now, "pid": std::process::id(), "pgid": std::process::id(), "proc_start_ticks": 0}),
    )
}

/// A dispatch dispatched and ended `ago` seconds ago, in the end state `fields` (`ended_at` added).
fn ended(id: &str, task: &str, ago: i64, mut fields: serde_json::Value) -> serde_json::Value {
    let t = chrono::Utc::now() - chrono::Duration::seconds(ago);
    let ts = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    fields["ended_at"] = ts.clone().into();
    dispatch(id, task, &ts, fields)
}

/// A completed dispatch, dispatched `ago` seconds ago.
pub(crate) fn completed(id: &str, task: &str, ago: i64) -> serde_json::Value {
    ended(id, task, ago, serde_json::json!({"status": "completed", "exit_code": 0, "duration_s": 1.5}))
}

/// A failed dispatch, dispatched `ago` seconds ago.
pub(crate) fn failed(id: &str, task: &str, ago: i64) -> serde_json::Value {
    ended(id, task, ago, serde_json::json!({"status": "failed", "exit_code": 2, "error": "exit status 2"}))
}

/// The record as the library's type, for tests that work with `DispatchRecord`.
pub(crate) fn typed(record: serde_json::Value) -> DispatchRecord {
    serde_json::from_value(record).expect("a dispatch record the library reads")
}

/// A task of the queue or the archive in state `status`, `extra` (the state's fields:
/// `started_at`, `dispatch_id`, `completed_at`...) merged over the fields every task has.
pub(crate) fn task_record(id: &str, status: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut t = serde_json::json!({
        "task_id": id, "description": "d", "priority": "medium", "worker_type": "scan-worker", "status": status,
        "created_at": "2026-05-01T09:00:00Z", "created_by": "test", "max_attempts": 3, "budget": 10,
    });
    for (k, v) in extra.as_object().expect("extra object") {
        t[k] = v.clone();
    }
    t
}
