//! The failure-pattern daemon, as a real process over real files: thresholds and confidence,
//! classification from specs and from events (each failure counted once, across restarts), out of
//! memory, and the storm guard.
use crate::support::records::{dispatch, write_dispatch};
use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn now() -> String {
    cortex::base::clock::now_string()
}

/// Writes a finished spec into `worker-specs/<bucket>/` the way the worker does (temp, rename),
/// with its stderr file.
fn write_spec(h: &TestHome, bucket: &str, id: &str, state: Value, stderr: &str) {
    let mut fields = json!({"command": ["scan"]});
    for (k, v) in state.as_object().unwrap() {
        fields[k] = v.clone();
    }
    std::fs::write(h.join(&format!("agents/logs/workers/{id}.err")), stderr).unwrap();
    write_dispatch(h, bucket, dispatch(id, &format!("t-{id}"), &now(), fields));
}

fn exit_failure(h: &TestHome, id: &str, n: usize) {
    write_spec(
        h,
        "failed",
        id,
        json!({"status": "failed", "ended_at": now(), "exit_code": 2, "duration_s": 1.5, "error": "exited with code 2"}),
        // Differs only in numbers, paths and times: one signature.
        &format!(
            "starting scan\n2026-05-0{}T10:00:0{}Z fatal: cannot open /data/run-{n}/input.json (errno {n})\n\n",
            n % 9 + 1,
            n % 9
        ),
    );
}

fn patterns(h: &TestHome) -> Vec<Value> {
    std::fs::read_to_string(h.join("coordination/patterns/failure-patterns.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("pattern line is JSON"))
        .collect()
}

fn start(h: &TestHome) -> std::process::Child {
    let child = h.spawn_daemon("failure-pattern");
    wait_until(WAIT, "failure-pattern ready", || {
        std::fs::read(h.join("run/failure-pattern.state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|m| m["ready_at"].is_string())
    });
    child
}

fn state_occurrences(h: &TestHome) -> usize {
    std::fs::read(h.join("coordination/patterns/failure-pattern-state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|s| s["occurrences"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[test]
fn exit_failures_become_a_pattern_at_the_threshold_and_grow_in_confidence() {
    let h = TestHome::new();
    let mut d = start(&h);
    exit_failure(&h, "d-1", 1);
    exit_failure(&h, "d-2", 2);
    wait_until(WAIT, "two failures counted", || state_occurrences(&h) == 2);
    assert!(patterns(&h).is_empty(), "2 < threshold 3: no pattern yet");

    exit_failure(&h, "d-3", 3);
    wait_until(WAIT, "a pattern at 3 occurrences", || patterns(&h).len() == 1);
    let p = &patterns(&h)[0];
    assert_eq!(p["category"], "crash");
    assert_eq!(p["type"], "non_zero_exit");
    assert_eq!(p["worker_type"], "scan-worker");
    assert_eq!(p["exit_code"], 2);
    assert_eq!(p["message"], "<ts> fatal: cannot open <path> (errno <n>)");
    assert_eq!(p["confidence"], 0.33);
    assert_eq!(p["severity"], "medium");
    assert_eq!(p["frequency"]["total_occurrences"], 3);
    assert!(p["frequency"]["last_seen"].is_string() && p["created_at"].is_string() && p["updated_at"].is_string());
    assert!(p["pattern_id"].as_str().unwrap().starts_with("fp-"));
    // The event follows the record's write.
    wait_until(WAIT, "failure_pattern_detected", || h.events_of("failure_pattern_detected").len() == 1);
    let detected = h.events_of("failure_pattern_detected");
    assert_eq!(detected[0]["data"]["pattern_id"], p["pattern_id"]);

    for n in 4..=6 {
        exit_failure(&h, &format!("d-{n}"), n);
    }
    wait_until(WAIT, "confidence 0.67 at 2x", || patterns(&h)[0]["confidence"] == 0.67);
    assert_eq!(h.events_of("failure_pattern_detected").len(), 1, "same severity: no second event");

    // A failure event for a dispatch already counted from its spec is not counted again.
    h.cortex_ok(&[
        "event",
        "emit",
        "--type",
        "task_failed",
        "--severity",
        "error",
        "--message",
        "failed",
        "--data",
        r#"{"dispatch_id": "d-6", "worker_type": "scan-worker", "exit_code": 2}"#,
    ]);
    for n in 7..=9 {
        exit_failure(&h, &format!("d-{n}"), n);
    }
    wait_until(WAIT, "confidence 1.0 at 3x", || patterns(&h)[0]["confidence"] == 1.0);
    let p = &patterns(&h)[0];
    assert_eq!(p["severity"], "high", "3x the threshold raises the severity");
    assert_eq!(p["frequency"]["total_occurrences"], 9);
    wait_until(WAIT, "severity change: one more event", || h.events_of("failure_pattern_detected").len() == 2);
    let detected = h.events_of("failure_pattern_detected");
    assert_eq!(detected[1]["data"]["previous_severity"], "medium");
    assert_eq!(patterns(&h).len(), 1, "one record per pattern id");

    // A restart neither double-counts nor forgets.
    assert!(terminate(&mut d).success());
    let mut d = start(&h);
    exit_failure(&h, "d-10", 10);
    wait_until(WAIT, "the 10th failure counted", || patterns(&h)[0]["frequency"]["total_occurrences"] == 10);
    assert_eq!(state_occurrences(&h), 10);
    assert_eq!(h.events_of("failure_pattern_detected").len(), 2);
    assert!(terminate(&mut d).success());
}

/// Emits a failure event (`kind`: `dispatch_timeout`, `dispatch_lost`...) of dispatch
/// `dispatch_id` of `worker_type`, as the daemons report one.
fn emit_failure(h: &TestHome, kind: &str, severity: &str, message: &str, dispatch_id: &str, worker_type: &str) {
    let data = json!({"dispatch_id": dispatch_id, "worker_type": worker_type}).to_string();
    h.cortex_ok(&["event", "emit", "--type", kind, "--severity", severity, "--message", message, "--data", &data]);
}

/// A timeout of a build-worker dispatch.
fn emit_timeout(h: &TestHome, dispatch_id: &str) {
    emit_failure(h, "dispatch_timeout", "warning", "timed out", dispatch_id, "build-worker");
}

#[test]
fn failure_events_timeouts_and_oom_are_classified() {
    let h = TestHome::new();
    let mut d = start(&h);
    // Timeouts reported only as events (no spec): three make a pattern.
    for i in 0..3 {
        emit_timeout(&h, &format!("dt-{i}"));
    }
    // Out of memory: SIGKILL with the kernel's mark in stderr, from specs.
    for i in 0..3 {
        write_spec(
            &h,
            "failed",
            &format!("oom-{i}"),
            json!({"status": "failed", "ended_at": now(), "signal": 9, "error": "killed by signal 9"}),
            "allocating buffers\nKilled\n",
        );
    }
    wait_until(WAIT, "two patterns", || patterns(&h).len() == 2);
    let ps = patterns(&h);
    let timeout = ps.iter().find(|p| p["type"] == "timeout").expect("timeout pattern");
    assert_eq!(timeout["worker_type"], "build-worker");
    assert_eq!(timeout["category"], "timeout");
    let oom = ps.iter().find(|p| p["type"] == "out_of_memory").expect("oom pattern");
    assert_eq!(oom["category"], "resource");
    assert_eq!(oom["severity"], "high");

    // Restart: the event-log offset is persisted, so the 3 timeout events are not re-counted.
    assert!(terminate(&mut d).success());
    let mut d = start(&h);
    emit_timeout(&h, "dt-9");
    wait_until(WAIT, "4th timeout counted", || {
        patterns(&h).iter().any(|p| p["type"] == "timeout" && p["frequency"]["total_occurrences"] == 4)
    });
    assert!(terminate(&mut d).success());
    // Every line of the pattern store matches its schema.
    let out = h.cortex(&["validate"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[OK] coordination/patterns/failure-patterns.jsonl"), "{text}");
}

#[test]
fn storm_guard_pauses_the_scheduler_once_with_a_reason() {
    let h = TestHome::new();
    let toml = std::fs::read_to_string(h.join("cortex.toml"))
        .unwrap()
        .replace("storm_guard = false\nstorm_failures = 20", "storm_guard = true\nstorm_failures = 3");
    std::fs::write(h.join("cortex.toml"), toml).unwrap();
    let mut d = start(&h);
    for i in 0..4 {
        emit_failure(&h, "dispatch_lost", "error", "lost", &format!("dl-{i}"), "scan-worker");
    }
    wait_until(WAIT, "scheduler paused by the storm guard", || {
        h.read_json("coordination/scheduler-state.json")["state"] == "paused"
    });
    let s = h.read_json("coordination/scheduler-state.json");
    assert_eq!(s["paused_by"], "failure-pattern");
    assert_eq!(s["paused_from"], "storm-guard");
    assert!(s["reason"].as_str().unwrap().contains("4 failures"), "{s}");
    wait_until(WAIT, "storm event", || h.events_of("failure_storm_detected").len() == 1);
    // More failures during the same storm do not pause or report again.
    emit_failure(&h, "dispatch_lost", "error", "lost", "dl-9", "scan-worker");
    wait_until(WAIT, "5th failure counted", || state_occurrences(&h) == 5);
    assert_eq!(h.events_of("failure_storm_detected").len(), 1);
    assert_eq!(h.events_of("scheduler_paused").len(), 1);
    assert!(terminate(&mut d).success());
}

/// The inotify descriptors `pid` holds (`/proc/<pid>/fd` links to `anon_inode:inotify`).
fn inotify_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("inotify")))
                .count()
        })
        .unwrap_or(0)
}

/// The event log's inode in the daemon's persisted cursor.
fn cursor_inode(h: &TestHome) -> u64 {
    std::fs::read(h.join("coordination/patterns/failure-pattern-state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|s| s["events"]["ino"].as_u64())
        .unwrap_or(0)
}

/// Each rotation of the event log makes the daemon watch the new file; it must give up the old
/// watch (an inotify instance each, 128 per user by default), not keep one per rotation.
#[test]
fn rotations_of_the_event_log_do_not_pile_up_watches() {
    use std::os::unix::fs::MetadataExt;
    let h = TestHome::new();
    let mut d = start(&h);
    let events = h.join("coordination/dashboard-events.jsonl");
    emit_timeout(&h, "d-0");
    let first = std::fs::metadata(&events).unwrap().ino();
    wait_until(WAIT, "the log read", || cursor_inode(&h) == first);
    let before = inotify_descriptors(d.id());
    assert!(before > 0, "the daemon watches with inotify");
    for n in 1..=6 {
        // A new log put in place (as a rotation does), then a line in the old, still-watched one
        // wakes the daemon, which moves on to the new file.
        let fresh = h.join(&format!("coordination/events-new-{n}"));
        std::fs::write(&fresh, b"").unwrap();
        std::fs::rename(&events, h.join(&format!("coordination/dashboard-events.jsonl.{n}"))).unwrap();
        std::fs::rename(&fresh, &events).unwrap();
        let ino = std::fs::metadata(&events).unwrap().ino();
        std::fs::OpenOptions::new()
            .append(true)
            .open(h.join(&format!("coordination/dashboard-events.jsonl.{n}")))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"\n"))
            .unwrap();
        wait_until(WAIT, "the daemon moved to the new log", || cursor_inode(&h) == ino);
    }
    wait_until(WAIT, "as many inotify descriptors as before the rotations", || inotify_descriptors(d.id()) == before);
    assert!(terminate(&mut d).success());
}
