//! Pause promises 3–6: the state persists across SIGKILL and restart, is readable with every
//! daemon down, double pause/resume succeed and change nothing, every transition is audited
//! (who, from where, why), and a failed pause (lock timeout) is a 500 that changes nothing.
use crate::support::api::*;
use crate::support::records::{running, write_dispatch};
use crate::support::*;
use std::time::Duration;

fn cli_as(h: &TestHome, user: &str, args: &[&str]) -> std::process::Output {
    h.cmd().env("USER", user).args(args).output().expect("run cortex")
}

#[test]
fn pause_survives_sigkill_and_restart_and_is_readable_with_daemons_down() {
    let h = TestHome::new();
    let mut api = Api::start(&h);
    let port = api.port;
    let (code, p) = api.post("/scheduler/pause", br#"{"reason": "maintenance window"}"#);
    assert_eq!(code, 200);
    let paused_at = p["timestamp"].as_str().unwrap().to_string();

    api.kill();
    // Every daemon is down: the CLI reads the file.
    let out = h.cortex_ok(&["--json", "scheduler", "status"]);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["state"], "paused");
    assert_eq!(s["paused_at"], paused_at.as_str());
    assert_eq!(s["reason"], "maintenance window");
    assert_eq!(s["coordinator"], "stopped");
    assert_eq!(s["uptime"], serde_json::Value::Null);
    let text = h.cortex_ok(&["scheduler", "status"]);
    assert!(text.contains("Scheduler: paused") && text.contains("maintenance window"), "{text}");
    let file = h.read_json("coordination/scheduler-state.json");
    assert_eq!(file["state"], "paused");
    assert_eq!(file["paused"], true);

    // Restart (the stale PID file left by SIGKILL is taken over): still paused, same timestamp.
    let api = Api::start_on(&h, port);
    let (_, s) = api.get("/scheduler/status");
    assert_eq!(s["state"], "paused");
    assert_eq!(s["paused_at"], paused_at.as_str());
    // Nothing resumes by itself.
    assert!(h.events_of("scheduler_resumed").is_empty());
}

#[test]
fn cli_pause_resume_are_audited_and_idempotent() {
    let h = TestHome::new();
    let out = cli_as(&h, "alice", &["scheduler", "pause", "--reason", "upgrade db"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Scheduler paused"));
    let state_file = h.join("coordination/scheduler-state.json");
    let before = std::fs::read(&state_file).unwrap();

    let out = cli_as(&h, "bob", &["scheduler", "pause", "--reason", "other"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Scheduler already paused") && stdout.contains("alice"), "{stdout}");
    assert_eq!(std::fs::read(&state_file).unwrap(), before, "a double pause rewrites nothing");
    let out = cli_as(&h, "bob", &["--json", "scheduler", "pause"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["message"], "Scheduler already paused");
    assert_eq!(v["status"], "success");
    assert_eq!(v["changed"], false);

    let paused = h.events_of("scheduler_paused");
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0]["data"]["paused_by"], "alice");
    assert_eq!(paused[0]["data"]["from"], "cli");
    assert_eq!(paused[0]["data"]["reason"], "upgrade db");
    assert_eq!(paused[0]["source"], "cli");
    assert!(paused[0]["message"].as_str().unwrap().contains("alice"));

    let out = cli_as(&h, "carol", &["scheduler", "resume"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Scheduler resumed"));
    let out = cli_as(&h, "carol", &["scheduler", "resume"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Scheduler already running"));
    let resumed = h.events_of("scheduler_resumed");
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0]["data"]["resumed_by"], "carol");
    assert_eq!(resumed[0]["data"]["from"], "cli");
    assert_eq!(resumed[0]["data"]["paused_at"], h.read_json("coordination/scheduler-state.json")["paused_at"]);

    let s: serde_json::Value = serde_json::from_str(&h.cortex_ok(&["--json", "scheduler", "status"])).unwrap();
    assert_eq!(s["state"], "running");
    assert_eq!(s["resumed_at"], resumed[0]["data"]["resumed_at"]);
}

#[test]
fn failed_pause_is_500_and_changes_nothing() {
    let h = TestHome::new();
    h.set_config("store", "lock_timeout_seconds", "0.3");
    let api = Api::start(&h);
    let before = std::fs::read(h.join("coordination/scheduler-state.json")).unwrap();

    // Someone holds the scheduler lock (a wedged process): the pause cannot be recorded.
    let lock = h.hold_lock("scheduler");
    let (code, e) = api.post("/scheduler/pause", b"");
    assert_eq!(code, 500, "{e}");
    assert_eq!(e["code"], 500);
    assert!(e["error"].as_str().unwrap().contains("lock"), "{e}");
    assert_eq!(std::fs::read(h.join("coordination/scheduler-state.json")).unwrap(), before);
    assert!(h.events_of("scheduler_paused").is_empty());
    // Reads keep working meanwhile.
    assert_eq!(api.get("/scheduler/status").1["state"], "running");

    // The CLI fails the same way, with a non-zero exit.
    let out = h.cortex(&["scheduler", "pause"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lock"));

    // The drill's recovery: the cause goes away, the retry succeeds.
    lock.unlock().unwrap();
    let (code, v) = api.post("/scheduler/pause", b"");
    assert_eq!(code, 200, "{v}");
    assert_eq!(api.get("/scheduler/status").1["state"], "paused");
}

#[test]
fn drain_pauses_cancels_and_waits() {
    let h = TestHome::new();
    // Nothing running: drain pauses and reports an empty system at once.
    let out = h.cortex_ok(&["--json", "scheduler", "drain", "--wait", "--timeout", "5"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["paused"], true);
    assert_eq!(v["drained"], true);
    assert_eq!(v["running_count"], 0);
    assert_eq!(h.read_json("coordination/scheduler-state.json")["state"], "paused");

    // One running dispatch and no worker to honour the cancel: the request file is written,
    // the wait ends at the timeout with exit 1 and says what is left.
    write_dispatch(&h, "active", running("d-stuck", "t-1"));
    let start = std::time::Instant::now();
    let out = h.cortex(&["scheduler", "drain", "--cancel-running", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Scheduler already paused"), "{stdout}");
    assert!(stdout.contains("Cancel requested: 1") && stdout.contains("1 dispatch(es) still running"), "{stdout}");
    assert!(start.elapsed() < Duration::from_secs(10));
    let req = h.read_json("coordination/worker-specs/active/d-stuck.cancel");
    assert!(req["requested_by"].as_str().unwrap().contains("cli drain"), "{req}");

    // When the dispatch ends (moved out of active/), a waiting drain finishes.
    let mut child = h
        .cmd()
        .args(["scheduler", "drain", "--wait", "--timeout", "30"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::fs::rename(
        h.join("coordination/worker-specs/active/d-stuck.json"),
        h.join("coordination/worker-specs/failed/d-stuck.json"),
    )
    .unwrap();
    let st = child.wait().unwrap();
    assert!(st.success());
}
