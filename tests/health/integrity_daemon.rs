//! The integration daemon (validator), as a real process over real files: each kind of
//! corruption is quarantined and reported with file and field; malformed JSONL lines are
//! reported once per new count; each cross-file inconsistency is reported once it lasts the
//! grace period, once, and its resolution is reported too.
use crate::support::records::{dispatch, task_record};
use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn start(h: &TestHome) -> std::process::Child {
    let child = h.spawn_daemon("integration");
    wait_until(WAIT, "integration ready", || {
        std::fs::read(h.join("run/integration.state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|m| m["ready_at"].is_string())
    });
    child
}

/// Replaces a file atomically (as every Cortex writer does), or writes it in place.
fn put(h: &TestHome, rel: &str, bytes: &[u8]) {
    let path = h.join(rel);
    let tmp = path.with_file_name(format!(".tmp.test.{}", path.file_name().unwrap().to_string_lossy()));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn failures_for(h: &TestHome, file: &str) -> Vec<Value> {
    h.events_of("integration_validation_failed").into_iter().filter(|e| e["data"]["file"] == file).collect()
}

fn quarantined(h: &TestHome, prefix: &str) -> usize {
    std::fs::read_dir(h.join("coordination/quarantine"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .count()
}

#[test]
fn each_kind_of_corruption_is_quarantined_and_reported() {
    let h = TestHome::new();
    let mut d = start(&h);
    assert!(h.events_of("integration_validation_failed").is_empty(), "a fresh home is clean");

    // Truncated JSON.
    put(&h, "coordination/task-queue.json", br#"{"tasks": [{"task_id": "t1", "descr"#);
    // Not JSON at all.
    put(&h, "coordination/moe/router-config.json", b"rules: everything -> scan-worker\n");
    // JSON of the wrong type in one field.
    put(&h, "coordination/token-budget.json", br#"{"total": "lots", "used": 0, "available": 0}"#);
    // A worker spec that breaks the dispatch schema.
    put(
        &h,
        "coordination/worker-specs/active/d-bad.json",
        br#"{"dispatch_id": "d-bad", "task_id": "t", "status": "sleeping", "dispatched_at": "x", "attempt": 1}"#,
    );

    wait_until(WAIT, "four validation failures", || {
        ["task-queue.json", "moe/router-config.json", "token-budget.json", "worker-specs/active/d-bad.json"]
            .iter()
            .all(|f| failures_for(&h, &format!("coordination/{f}")).len() == 1)
    });
    let q = &failures_for(&h, "coordination/task-queue.json")[0];
    assert_eq!(q["data"]["field"], "/");
    assert_eq!(q["data"]["verdict"], "CORRUPT");
    assert!(q["message"].as_str().unwrap().contains("coordination/task-queue.json"), "{q}");
    let b = &failures_for(&h, "coordination/token-budget.json")[0];
    assert_eq!(b["data"]["field"], "/total", "{b}");
    assert_eq!(b["data"]["verdict"], "INVALID");
    let s = &failures_for(&h, "coordination/worker-specs/active/d-bad.json")[0];
    assert_eq!(s["data"]["field"], "/status", "{s}");
    for (prefix, ev) in [("coordination__task-queue.json.", q), ("coordination__token-budget.json.", b)] {
        assert_eq!(quarantined(&h, prefix), 1, "{prefix} copied to quarantine");
        let copy = h.join(ev["data"]["quarantine_path"].as_str().unwrap());
        assert!(copy.exists(), "{}", copy.display());
    }
    assert_eq!(quarantined(&h, "coordination__moe__router-config.json."), 1);
    // The bad files stay where they are (reported, not fixed).
    assert_eq!(
        std::fs::read(h.join("coordination/token-budget.json")).unwrap(),
        br#"{"total": "lots", "used": 0, "available": 0}"#
    );

    // Malformed JSONL lines: reported with the count, once per new count.
    let events = h.join("coordination/dashboard-events.jsonl");
    cortex::store::jsonl::append_raw(&events, b"{\"half\": \nnot json\n").unwrap();
    wait_until(WAIT, "malformed lines reported", || !h.events_of("jsonl_malformed_lines").is_empty());
    let m = h.events_of("jsonl_malformed_lines");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["data"]["file"], "coordination/dashboard-events.jsonl");
    assert_eq!(m[0]["data"]["count"], 2);
    cortex::store::jsonl::append_raw(&events, b"{{{\n").unwrap();
    wait_until(WAIT, "the new count reported", || h.events_of("jsonl_malformed_lines").len() == 2);
    assert_eq!(h.events_of("jsonl_malformed_lines")[1]["data"]["count"], 3);

    // The same bad content is not reported again; a change of content is.
    put(&h, "coordination/task-queue.json", br#"{"tasks": [{"task_id": "t1", "descr"#);
    put(&h, "coordination/task-queue.json", br#"{"tasks": 7}"#);
    wait_until(WAIT, "new bad content reported", || failures_for(&h, "coordination/task-queue.json").len() == 2);
    assert_eq!(failures_for(&h, "coordination/task-queue.json")[1]["data"]["field"], "/tasks");
    assert!(terminate(&mut d).success());
    // Each bad JSON line count was reported once (no repeat for an unchanged count).
    assert_eq!(h.events_of("jsonl_malformed_lines").len(), 2);
}

fn running_spec(id: &str, task_id: &str) -> Value {
    let at = "2026-05-01T10:00:00Z";
    dispatch(
        id,
        task_id,
        at,
        json!({
            "status": "running", "started_at": at, "pid": 1, "pgid": 1, "proc_start_ticks": 1,
            "command": ["true"], "budget_reserved": 10, "stdout_path": "", "stderr_path": "",
        }),
    )
}

fn inconsistencies(h: &TestHome, kind: &str) -> Vec<Value> {
    h.events_of("integration_inconsistency").into_iter().filter(|e| e["data"]["kind"] == kind).collect()
}

#[test]
fn each_cross_file_inconsistency_is_reported_once_after_the_grace_period() {
    let h = TestHome::new();
    let toml = std::fs::read_to_string(h.join("cortex.toml"))
        .unwrap()
        .replace("consistency_grace_seconds = 10.0", "consistency_grace_seconds = 1.0");
    std::fs::write(h.join("cortex.toml"), toml).unwrap();
    let started = "2026-05-01T10:00:00Z";
    // c1/d-c1: consistent. a1: in_progress without a spec. b1: queued, yet d-b1 runs for it.
    put(
        &h,
        "coordination/task-queue.json",
        &serde_json::to_vec(&json!({"tasks": [
            task_record("c1", "in_progress", json!({"started_at": started, "dispatch_id": "d-c1"})),
            task_record("a1", "in_progress", json!({"started_at": started, "dispatch_id": "d-a1"})),
            task_record("b1", "queued", json!({})),
        ]}))
        .unwrap(),
    );
    put(&h, "coordination/worker-specs/active/d-c1.json", &serde_json::to_vec(&running_spec("d-c1", "c1")).unwrap());
    put(&h, "coordination/worker-specs/active/d-b1.json", &serde_json::to_vec(&running_spec("d-b1", "b1")).unwrap());
    // Reservations for d-c1 (fine) and d-gone (orphan); available should be 1000-100-60 = 840.
    put(
        &h,
        "coordination/token-budget.json",
        br#"{"total": 1000, "used": 100, "available": 900, "reservations": {"d-c1": 10, "d-gone": 50}}"#,
    );
    let mut d = start(&h);
    wait_until(WAIT, "all four kinds reported", || {
        ["task_without_dispatch", "dispatch_without_task", "budget_unbalanced", "orphan_reservation"]
            .iter()
            .all(|k| !inconsistencies(&h, k).is_empty())
    });
    let t = &inconsistencies(&h, "task_without_dispatch")[0];
    assert_eq!((t["data"]["task_id"].as_str(), t["data"]["dispatch_id"].as_str()), (Some("a1"), Some("d-a1")));
    let s = &inconsistencies(&h, "dispatch_without_task")[0];
    assert_eq!(s["data"]["dispatch_id"], "d-b1");
    assert!(s["message"].as_str().unwrap().contains("the task is queued"), "{s}");
    let b = &inconsistencies(&h, "budget_unbalanced")[0];
    assert_eq!((b["data"]["available"].as_u64(), b["data"]["expected_available"].as_u64()), (Some(900), Some(840)));
    let o = &inconsistencies(&h, "orphan_reservation")[0];
    assert_eq!(o["data"]["dispatch_id"], "d-gone");
    let all = h.events_of("integration_inconsistency");
    assert_eq!(all.len(), 4, "the consistent task c1 is not reported: {all:#?}");
    // Reported after lasting the grace period, not at first sight.
    let ready =
        cortex::base::clock::parse_ts(h.read_json("run/integration.state.json")["ready_at"].as_str().unwrap()).unwrap();
    for e in &all {
        let at = cortex::base::clock::parse_ts(e["timestamp"].as_str().unwrap()).unwrap();
        assert!(at - ready >= chrono::Duration::milliseconds(900), "reported {} after ready", at - ready);
    }

    // Fix the budget: the fix is reported, and nothing was reported twice in the meantime
    // (several checks ran: every change to the queue, budget or specs triggers one).
    put(
        &h,
        "coordination/token-budget.json",
        br#"{"total": 1000, "used": 100, "available": 890, "reservations": {"d-c1": 10}}"#,
    );
    wait_until(WAIT, "budget fixes reported", || h.events_of("integration_consistency_restored").len() == 2);
    let restored: Vec<String> = h
        .events_of("integration_consistency_restored")
        .iter()
        .map(|e| e["data"]["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(
        restored.contains(&"budget_unbalanced".to_string()) && restored.contains(&"orphan_reservation".to_string())
    );
    assert_eq!(h.events_of("integration_inconsistency").len(), 4, "each reported once");
    assert!(terminate(&mut d).success());
}

#[test]
fn a_transient_inconsistency_shorter_than_the_grace_period_is_not_reported() {
    let h = TestHome::new();
    let toml = std::fs::read_to_string(h.join("cortex.toml"))
        .unwrap()
        .replace("consistency_grace_seconds = 10.0", "consistency_grace_seconds = 1.0");
    std::fs::write(h.join("cortex.toml"), toml).unwrap();
    let mut d = start(&h);
    // The dispatch protocol: queue first (task in_progress), spec second.
    put(
        &h,
        "coordination/task-queue.json",
        &serde_json::to_vec(&json!({"tasks": [
            task_record("t1", "in_progress", json!({"started_at": "2026-05-01T10:00:00Z", "dispatch_id": "d-t1"})),
        ]}))
        .unwrap(),
    );
    // The window between the two writes is built on purpose: long enough for the validator to
    // see the task without its spec (it checks 100 ms after a change), shorter than the grace.
    std::thread::sleep(Duration::from_millis(400));
    put(&h, "coordination/worker-specs/active/d-t1.json", &serde_json::to_vec(&running_spec("d-t1", "t1")).unwrap());
    // Then a lasting problem, to know checks ran well past the transient.
    put(
        &h,
        "coordination/token-budget.json",
        br#"{"total": 100, "used": 0, "available": 90, "reservations": {"d-x": 10}}"#,
    );
    wait_until(WAIT, "the orphan reservation reported", || !inconsistencies(&h, "orphan_reservation").is_empty());
    assert!(inconsistencies(&h, "task_without_dispatch").is_empty(), "the transient was reported");
    assert!(inconsistencies(&h, "dispatch_without_task").is_empty());
    assert!(terminate(&mut d).success());
}
