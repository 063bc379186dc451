//! Health end to end with the real daemons in temporary homes: the coordinator holds a worker
//! type behind its circuit breaker (kept by auto-fix) while other types run, lets one trial
//! through after the reset timeout and the rest once it closes; a task that never heartbeats is
//! cleaned up as a zombie by the heartbeat daemon (group and grandchildren), left in progress by
//! the coordinator and restarted by auto-fix — or, with auto-fix disabled, folded by the
//! coordinator under the `[retry]` policy.

use crate::support::task::*;
use crate::support::*;
use cortex::base::clock::parse_ts;
use serde_json::{Value, json};
use std::path::Path;

/// Merges `patch` into a JSON config file under the home.
fn patch_json(path: &Path, patch: Value) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for (k, val) in patch.as_object().unwrap() {
        v[k] = val.clone();
    }
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn queue_task(h: &TestHome, id: &str) -> Option<Value> {
    h.queue_json()["tasks"].as_array()?.iter().find(|t| t["task_id"] == id).cloned()
}

fn breaker(h: &TestHome, worker_type: &str) -> Value {
    std::fs::read(h.join("coordination/circuit-breakers.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .map(|v| v["breakers"][worker_type].clone())
        .unwrap_or(Value::Null)
}

/// The dispatch records of a task (any bucket), oldest first.
fn task_specs(h: &TestHome, task: &Value) -> Vec<(String, Value)> {
    task["dispatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| spec(h, d.as_str().unwrap()).unwrap_or_else(|| panic!("spec of {d}")))
        .collect()
}

#[test]
fn circuit_breaker_holds_one_type_lets_one_trial_through_and_closes() {
    let h = fast_home();
    patch_json(
        &h.join("coordination/config/worker-restart-policy.json"),
        json!({"circuit_breaker": {"enabled": true, "failure_threshold": 3, "failure_window_seconds": 60,
                                   "reset_timeout_seconds": 4}}),
    );
    let _worker = start(&h, "worker");
    let _coord = start(&h, "coordinator");
    let _autofix = start(&h, "auto-fix");

    // Three failures of fix-worker trip its breaker.
    let failing: Vec<String> = (0..3)
        .map(|i| {
            add(
                &h,
                &[
                    "--description",
                    &format!("bad fix {i}"),
                    "--type",
                    "fix-worker",
                    "--max-attempts",
                    "1",
                    "--budget",
                    "10",
                    "--",
                    "sh",
                    "-c",
                    "exit 3",
                ],
            )
        })
        .collect();
    let ended = wait_finished(&h, &failing);
    assert!(ended.iter().all(|t| t["status"] == "failed"), "{ended:?}");
    wait_until(LONG, "fix-worker breaker open", || breaker(&h, "fix-worker")["state"] == "open");
    let opened = breaker(&h, "fix-worker");
    let half_open_at = parse_ts(opened["half_open_at"].as_str().unwrap()).unwrap();
    assert_eq!(h.events_of("circuit_breaker_tripped").len(), 1);

    // Further fix-worker tasks wait behind the breaker; scan-worker tasks still run.
    let held: Vec<String> = (0..3)
        .map(|i| {
            add(
                &h,
                &[
                    "--description",
                    &format!("good fix {i}"),
                    "--type",
                    "fix-worker",
                    "--budget",
                    "10",
                    "--",
                    "sh",
                    "-c",
                    "exit 0",
                ],
            )
        })
        .collect();
    let scans: Vec<String> = (0..2)
        .map(|i| {
            add(&h, &["--description", &format!("scan {i}"), "--type", "scan-worker", "--budget", "10", "--", "true"])
        })
        .collect();
    let scanned = wait_finished(&h, &scans);
    assert!(scanned.iter().all(|t| t["status"] == "completed"), "{scanned:?}");
    // On a loaded machine the breaker may half-open before this looks: then one held task is
    // the trial and leaves the queued state; what matters (no dispatch before half_open_at) is
    // checked below from the dispatch times.
    wait_until(LONG, "held tasks marked circuit_breaker (or the breaker half-open)", || {
        chrono::Utc::now() >= half_open_at
            || held.iter().all(|id| queue_task(&h, id).is_some_and(|t| t["waiting_reason"] == "circuit_breaker"))
    });
    if chrono::Utc::now() < half_open_at {
        for id in &held {
            let t = queue_task(&h, id).unwrap();
            assert_eq!(t["status"], "queued", "{t}");
            assert_eq!(t["attempts"], 0, "{t}");
        }
    }

    // After the reset timeout: one trial, its success closes the breaker, then the rest run.
    let done = wait_finished(&h, &held);
    assert!(done.iter().all(|t| t["status"] == "completed"), "{done:?}");
    wait_until(LONG, "breaker closed", || breaker(&h, "fix-worker")["state"] == "closed");
    assert_eq!(h.events_of("circuit_breaker_half_open").len(), 1);
    assert_eq!(h.events_of("circuit_breaker_closed").len(), 1);
    let closed_since = parse_ts(breaker(&h, "fix-worker")["since"].as_str().unwrap()).unwrap();
    let mut dispatched: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = done
        .iter()
        .map(|t| {
            let (_, s) = task_specs(&h, t).pop().unwrap();
            let at = parse_ts(s["dispatched_at"].as_str().unwrap()).unwrap();
            let end = parse_ts(s["ended_at"].as_str().unwrap()).unwrap();
            (at, end)
        })
        .collect();
    dispatched.sort();
    assert!(dispatched.iter().all(|(at, _)| *at >= half_open_at), "none before the half-open time: {dispatched:?}");
    let (trial_at, trial_end) = dispatched[0];
    assert!(trial_end <= closed_since, "the trial ended before the breaker closed");
    let during_trial = dispatched.iter().filter(|(at, _)| *at < closed_since).count();
    assert_eq!(during_trial, 1, "exactly one trial while half-open (trial at {trial_at}): {dispatched:?}");
}

/// A task script: attempt 1 hangs without heartbeating (with a child and a grandchild that
/// record their PIDs); a later attempt heartbeats and succeeds.
fn hang_once_script(h: &TestHome) -> String {
    let path = h.join("hang-once.sh");
    let script = format!(
        r#"#!/bin/sh
if [ "$CORTEX_ATTEMPT" = 1 ]; then
  sh -c 'echo $$ > "$CORTEX_HOME/grandchild.pid"; exec tail -f /dev/null' &
  echo $$ > "$CORTEX_HOME/child.pid"
  wait
  exit 0
fi
"{}" heartbeat --message "attempt $CORTEX_ATTEMPT" || exit 9
echo "attempt $CORTEX_ATTEMPT done"
"#,
        bin("cortex").display()
    );
    std::fs::write(&path, script).unwrap();
    path.display().to_string()
}

/// Every reservation settled once: none left open, `available = total - used`.
fn budget_settled(h: &TestHome) {
    wait_until(LONG, "reservations settled", || {
        let b = h.read_json("coordination/token-budget.json");
        b["reservations"].as_object().is_none_or(|r| r.is_empty())
    });
    let b = h.read_json("coordination/token-budget.json");
    let (total, used, available) =
        (b["total"].as_u64().unwrap(), b["used"].as_u64().unwrap(), b["available"].as_u64().unwrap());
    assert_eq!(available, total - used, "{b}");
    assert!(used <= 30, "at most the budgets of the dispatches made (10 each): {b}");
}

fn fast_heartbeat(h: &TestHome) {
    patch_json(
        &h.join("coordination/config/heartbeat-policy.json"),
        json!({"heartbeat_interval_seconds": 0.5, "warning_seconds": 0.5, "critical_seconds": 1,
               "zombie_threshold_seconds": 1.5, "require_heartbeat": true, "recheck_delay_seconds": 0.2,
               "grace_seconds": 1}),
    );
}

/// Waits for the zombie cleanup of attempt 1 and checks the whole group died.
fn zombie_cleaned_up(h: &TestHome, id: &str) -> (String, Value) {
    let child = read_pid(h, "child.pid");
    let grandchild = read_pid(h, "grandchild.pid");
    wait_until(LONG, "zombie_cleanup_completed", || !h.events_of("zombie_cleanup_completed").is_empty());
    let task = show(h, id);
    let (bucket, z) = task_specs(h, &task).remove(0);
    assert_eq!(bucket, "zombie", "{z}");
    assert_eq!(z["status"], "zombie", "{z}");
    assert!(z["heartbeat"]["zombie_cleanup"]["completed_at"].is_string(), "{z}");
    wait_until(LONG, "the group and its grandchild gone", || !pid_running(child) && !pid_running(grandchild));
    let pgid = z["heartbeat"]["zombie_cleanup"]["pgid"].as_i64().unwrap() as i32;
    assert!(z["heartbeat"]["zombie_cleanup"]["processes_stopped"].as_u64().unwrap() >= 3, "{z}");
    assert!(cortex::base::procfs::group_members(pgid).is_empty(), "group {pgid} still has members");
    (z["dispatch_id"].as_str().unwrap().to_string(), z)
}

/// Starts the worker, the coordinator and the heartbeat daemon and adds a task that hangs once
/// ([`hang_once_script`]); waits for the zombie cleanup of its first attempt. Returns the daemons
/// (running while the caller keeps them), the task's id and the zombie's dispatch id.
fn hung_attempt_cleaned_up(h: &TestHome) -> ([Daemon; 3], String, String) {
    let daemons = [start(h, "worker"), start(h, "coordinator"), start(h, "heartbeat")];
    let script = hang_once_script(h);
    let id = add(h, &["--description", "hangs once", "--type", "scan-worker", "--budget", "10", "--", "sh", &script]);
    let (zombie_id, _) = zombie_cleaned_up(h, &id);
    (daemons, id, zombie_id)
}

#[test]
fn zombie_is_cleaned_up_left_in_progress_and_restarted_by_auto_fix() {
    let h = fast_home();
    fast_heartbeat(&h);
    patch_json(
        &h.join("coordination/config/worker-restart-policy.json"),
        json!({"backoff": {"base_delay_seconds": 0.5, "max_delay_seconds": 1, "strategy": "fixed", "jitter": false}}),
    );
    let (_daemons, id, zombie_id) = hung_attempt_cleaned_up(&h);

    // With auto-fix enabled (not running yet) the coordinator leaves the zombie's task in
    // progress: a later cycle (another task runs through) does not fold it.
    let other = add(&h, &["--description", "other", "--type", "scan-worker", "--budget", "10", "--", "true"]);
    wait_status(&h, &other, "completed");
    let t = show(&h, &id);
    assert_eq!(t["status"], "in_progress", "{t}");
    assert_eq!(t["dispatch_id"], zombie_id.as_str(), "{t}");
    assert_eq!(t["attempts"], 1);

    // Auto-fix decides: a restart after the backoff; the new attempt heartbeats and completes.
    let _autofix = start(&h, "auto-fix");
    wait_until(LONG, "auto_restart_scheduled", || !h.events_of("auto_restart_scheduled").is_empty());
    let ev = h.events_of("auto_restart_scheduled").remove(0);
    assert_eq!(ev["data"]["task_id"], id.as_str());
    assert_eq!(ev["data"]["dispatch_id"], zombie_id.as_str());
    let done = wait_status(&h, &id, "completed");
    assert_eq!(done["attempts"], 2, "{done}");
    let specs = task_specs(&h, &done);
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[1].0, "completed");
    assert_eq!(specs[1].1["attempt"], 2);
    let out = std::fs::read_to_string(specs[1].1["stdout_path"].as_str().unwrap()).unwrap();
    assert!(out.contains("attempt 2 done"), "{out}");
    assert_eq!(h.events_of("auto_restart_scheduled").len(), 1);
    assert!(h.events_of("auto_restart_refused").is_empty());
    budget_settled(&h);
}

#[test]
fn zombie_is_folded_by_the_coordinator_when_auto_fix_is_disabled() {
    let h = fast_home();
    configure(&h, &[("daemons", "disabled", "[\"auto-fix\"]")]);
    fast_heartbeat(&h);
    let (_daemons, id, zombie_id) = hung_attempt_cleaned_up(&h);
    let done = wait_status(&h, &id, "completed");
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["dispatches"][0], zombie_id.as_str());
    assert!(h.events_of("auto_restart_scheduled").is_empty());
    let specs = task_specs(&h, &done);
    assert_eq!(specs[1].0, "completed");
    let out = std::fs::read_to_string(specs[1].1["stdout_path"].as_str().unwrap()).unwrap();
    assert!(out.contains("attempt 2 done"), "{out}");
    budget_settled(&h);
}

/// Regression: the coordinator held a type behind an open breaker until its slow safety tick
/// (30 s), not until the breaker's `half_open_at`, when auto-fix was not there to rewrite the
/// file at that moment.
#[test]
fn coordinator_wakes_at_half_open_time_without_auto_fix() {
    let h = fast_home();
    let now = chrono::Utc::now();
    let half_open_at = now + chrono::Duration::seconds(2);
    let breakers = json!({"breakers": {"fix-worker": {
        "state": "open", "opened_at": cortex::base::clock::format_ts(now),
        "half_open_at": cortex::base::clock::format_ts(half_open_at), "reason": "test",
        "failures_in_window": 3, "trips": 1}}});
    std::fs::write(h.join("coordination/circuit-breakers.json"), serde_json::to_vec_pretty(&breakers).unwrap())
        .unwrap();
    let _worker = start(&h, "worker");
    let _coord = start(&h, "coordinator");
    let id = add(&h, &["--description", "trial", "--type", "fix-worker", "--budget", "10", "--", "true"]);
    wait_until(LONG, "held behind the breaker", || {
        queue_task(&h, &id).is_some_and(|t| t["waiting_reason"] == "circuit_breaker")
    });
    let done = wait_status(&h, &id, "completed");
    let (_, s) = task_specs(&h, &done).pop().unwrap();
    let at = parse_ts(s["dispatched_at"].as_str().unwrap()).unwrap();
    assert!(at >= half_open_at, "dispatched before the half-open time");
    assert!(at < half_open_at + chrono::Duration::seconds(5), "dispatched {at}, half-open at {half_open_at}");
}
