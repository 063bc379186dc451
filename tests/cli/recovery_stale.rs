//! `cortex recover-stale` and `cortex reset` with real processes.
use crate::support::records::{dispatch, write_dispatch};
use crate::support::*;
use std::os::unix::process::CommandExt;
use std::time::Duration;

fn ago(minutes: i64) -> String {
    cortex::base::clock::format_ts(chrono::Utc::now() - chrono::Duration::minutes(minutes))
}

fn running_spec(
    id: &str,
    pid: i32,
    ticks: u64,
    started_minutes_ago: i64,
    heartbeat: Option<String>,
) -> serde_json::Value {
    let at = ago(started_minutes_ago);
    let mut v = dispatch(
        id,
        &format!("task-{id}"),
        &at,
        serde_json::json!({
            "status": "running", "started_at": at, "pid": pid, "pgid": pid, "proc_start_ticks": ticks,
            "command": ["sleep", "30"], "timeout_seconds": 7200.0,
        }),
    );
    if let Some(hb) = heartbeat {
        v["heartbeat"] = serde_json::json!({"last_seen": hb});
    }
    v
}

fn put(h: &TestHome, bucket: &str, v: &serde_json::Value) {
    write_dispatch(h, bucket, v.clone());
}

fn sleeper() -> std::process::Child {
    std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap()
}

fn ticks(pid: u32) -> u64 {
    cortex::base::procfs::start_ticks(pid as i32).expect("start ticks")
}

#[test]
fn gone_silent_and_never_started_dispatches_become_lost() {
    let h = TestHome::new();
    // A process that has exited.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    put(&h, "active", &running_spec("d-dead", dead_pid as i32, 12345, 5, None));
    // A live process, but the spec's start time is another's: the PID was reused.
    let mut reused = sleeper();
    put(&h, "active", &running_spec("d-reused", reused.id() as i32, ticks(reused.id()) + 1, 5, None));
    // A live process silent for 2 hours.
    let mut silent = sleeper();
    put(&h, "active", &running_spec("d-silent", silent.id() as i32, ticks(silent.id()), 120, None));
    // Live, 2 hours old, but with a recent heartbeat: healthy.
    let mut beating = sleeper();
    put(&h, "active", &running_spec("d-beating", beating.id() as i32, ticks(beating.id()), 120, Some(ago(1))));
    // Live and young: healthy.
    let mut young = sleeper();
    put(&h, "active", &running_spec("d-young", young.id() as i32, ticks(young.id()), 5, None));
    // Recorded by the coordinator 2 hours ago and never picked up.
    let mut starting = running_spec("d-starting", 0, 0, 120, None);
    for k in ["started_at", "pid", "pgid", "proc_start_ticks"] {
        starting.as_object_mut().unwrap().remove(k);
    }
    starting["status"] = "starting".into();
    put(&h, "active", &starting);

    let out = h.cortex_ok(&["recover-stale", "--dry-run"]);
    assert!(out.contains("4 stale"), "{out}");
    assert!(h.join("coordination/worker-specs/active/d-dead.json").exists(), "dry run moved a spec");

    let out = h.cortex_ok(&["recover-stale", "--older-than", "60m"]);
    assert!(out.contains("6 active dispatch(es) checked, 4 moved to failed/ as lost"), "{out}");
    for id in ["d-dead", "d-reused", "d-silent", "d-starting"] {
        assert!(!h.join(&format!("coordination/worker-specs/active/{id}.json")).exists(), "{id} still active");
        let f = h.read_json(&format!("coordination/worker-specs/failed/{id}.json"));
        assert_eq!(f["status"], "lost", "{id}");
        assert!(f["ended_at"].is_string() && f["reason"].is_string(), "{id}: {f}");
    }
    for id in ["d-beating", "d-young"] {
        assert!(h.join(&format!("coordination/worker-specs/active/{id}.json")).exists(), "{id} must stay");
    }
    // The silent process group was stopped; the reused PID's process was left alone.
    wait_until(Duration::from_secs(10), "silent process stopped", || silent.try_wait().unwrap().is_some());
    assert!(reused.try_wait().unwrap().is_none(), "a process that is not ours was signalled");
    assert_eq!(h.events_of("dispatch_lost").len(), 4);
    h.cortex_ok(&["validate"]);
    for c in [&mut reused, &mut beating, &mut young] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn reset_refuses_without_yes_and_then_resets_completely() {
    let h = TestHome::new();
    let queue = serde_json::json!({"tasks": [{
        "task_id": "t-1", "description": "d", "priority": "low", "worker_type": "scan-worker", "command": [],
        "status": "in_progress", "started_at": ago(1), "dispatch_id": "d-live", "created_at": ago(2),
        "created_by": "ops", "attempts": 1, "max_attempts": 3, "budget": 100, "dispatches": ["d-live"]
    }]});
    std::fs::write(h.join("coordination/task-queue.json"), queue.to_string()).unwrap();
    std::fs::write(
        h.join("coordination/token-budget.json"),
        r#"{"total": 800000, "used": 5000, "available": 794900, "reservations": {"d-live": 100}}"#,
    )
    .unwrap();
    let mut live = sleeper();
    put(&h, "active", &running_spec("d-live", live.id() as i32, ticks(live.id()), 1, None));
    let mut z = running_spec("d-zombie", 1, 1, 600, None);
    z["status"] = "zombie".into();
    z["ended_at"] = ago(1).into();
    z["reason"] = "parent died".into();
    put(&h, "zombie", &z);
    let types = std::fs::read(h.join("coordination/config/worker-types.json")).unwrap();
    let queue_before = std::fs::read(h.join("coordination/task-queue.json")).unwrap();

    let out = h.cortex(&["reset"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--yes") && err.contains("pre-reset backup"), "{err}");
    assert_eq!(std::fs::read(h.join("coordination/task-queue.json")).unwrap(), queue_before, "refused but changed");
    assert!(live.try_wait().unwrap().is_none());

    let out = h.cortex_ok(&["reset", "--yes"]);
    assert!(out.contains("Cleared 1 task(s) and 2 active/zombie spec(s)"), "{out}");
    wait_until(Duration::from_secs(10), "dispatch process stopped", || live.try_wait().unwrap().is_some());
    assert_eq!(h.read_json("coordination/task-queue.json")["tasks"], serde_json::json!([]));
    let b = h.read_json("coordination/token-budget.json");
    assert_eq!(
        (b["total"].as_u64(), b["used"].as_u64(), b["available"].as_u64()),
        (Some(800000), Some(0), Some(800000))
    );
    assert_eq!(std::fs::read_dir(h.join("coordination/worker-specs/active")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(h.join("coordination/worker-specs/zombie")).unwrap().count(), 0);
    assert_eq!(std::fs::read(h.join("coordination/config/worker-types.json")).unwrap(), types, "config kept");
    let pre: Vec<_> = std::fs::read_dir(h.join("backups/pre-reset")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(pre.len(), 1);
    let v = cortex::ops::backup::verify::verify(&pre[0]).unwrap();
    assert!(v.manifest.file("coordination/worker-specs/active/d-live.json").is_some());
    assert_eq!(h.events_of("system_reset").len(), 1);
    h.cortex_ok(&["validate"]);
}

/// `recover-stale --dry-run` changes nothing and says so: a live silent dispatch's process group
/// "would be stopped" (it is not signalled); only the real run says it "was stopped".
#[test]
fn a_dry_run_says_what_it_would_stop_and_stops_nothing() {
    let h = TestHome::new();
    let mut silent = sleeper();
    put(&h, "active", &running_spec("d-silent", silent.id() as i32, ticks(silent.id()), 120, None));
    let out = h.cortex_ok(&["recover-stale", "--dry-run"]);
    assert!(out.contains("would mark lost d-silent"), "{out}");
    assert!(out.contains("(its process group would be stopped)"), "{out}");
    assert!(!out.contains("was stopped"), "a dry run claims it stopped a process group: {out}");
    assert!(silent.try_wait().unwrap().is_none(), "the dry run signalled the process");
    assert!(h.join("coordination/worker-specs/active/d-silent.json").exists());
    let out = h.cortex_ok(&["recover-stale"]);
    assert!(out.contains("marked lost d-silent") && out.contains("(its process group was stopped)"), "{out}");
    wait_until(Duration::from_secs(10), "silent process stopped", || silent.try_wait().unwrap().is_some());
}
