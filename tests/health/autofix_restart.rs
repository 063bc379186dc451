//! Auto-fix restart decisions and circuit breakers over real files in a temporary home, with a
//! manual clock: backoff delays, idempotence, waiting for the heartbeat daemon's cleanup, the
//! per-type rate limit (3 allowed, the 4th refused), and a breaker that trips, half-opens with
//! one trial dispatch, and closes on its success.

use crate::support::health::*;
use chrono::Duration;
use cortex::base::clock::{Clock, format_ts};
use cortex::daemons::auto_fix::breaker;
use cortex::domain::task::{DispatchRecord, DispatchState, TaskState};
use cortex::store::home::SpecBucket;

type Rig = AutoFixRig;

impl Rig {
    fn spec(&self, id: &str, task: &str, wt: &str, state: DispatchState) -> DispatchRecord {
        DispatchRecord {
            dispatch_id: id.into(),
            task_id: task.into(),
            worker_type: wt.into(),
            state,
            dispatched_at: self.clock.now() - Duration::seconds(10),
            attempt: 1,
            command: vec!["true".into()],
            budget_reserved: 100,
            timeout_seconds: 60.0,
            stdout_path: String::new(),
            stderr_path: String::new(),
            heartbeat: None,
            tokens_used: Some(10),
            executor: Default::default(),
            slurm: None,
        }
    }

    fn zombie(&self, id: &str, task: &str, wt: &str) {
        let s = self.spec(
            id,
            task,
            wt,
            DispatchState::Zombie { ended_at: self.clock.now(), reason: "no_heartbeat".into() },
        );
        write_spec(&self.home, SpecBucket::Zombie, &s);
    }

    fn failed(&self, id: &str, wt: &str) {
        let s = self.spec(
            id,
            &format!("t-{id}"),
            wt,
            DispatchState::Failed {
                ended_at: self.clock.now(),
                exit_code: Some(1),
                signal: None,
                duration_s: None,
                error: "exit 1".into(),
            },
        );
        write_spec(&self.home, SpecBucket::Failed, &s);
    }

    fn task_state(&self, id: &str) -> TaskState {
        read_queue(&self.home).tasks.into_iter().find(|t| t.task_id == id).unwrap().state
    }
}

fn retry_delay(rig: &Rig, task: &str) -> i64 {
    match rig.task_state(task) {
        TaskState::PendingRetry { next_retry_at, .. } => (next_retry_at - rig.clock.now()).num_seconds(),
        other => panic!("task {task} is {other:?}, not pending_retry"),
    }
}

#[test]
fn zombies_are_restarted_with_backoff_once() {
    let rig = Rig::new();
    patch_json(
        &rig.home.coord("config/worker-restart-policy.json"),
        serde_json::json!({"max_retries_by_type": {"default": 10}}),
    );
    // One type each so the per-type rate limit stays out of the way.
    let cases = [(1, 30), (2, 60), (3, 120), (5, 300)];
    let mut tasks = Vec::new();
    for (i, (attempts, _)) in cases.iter().enumerate() {
        tasks.push(in_progress_task(&format!("t{i}"), &format!("type-{i}"), &format!("z{i}"), *attempts, 100));
        rig.zombie(&format!("z{i}"), &format!("t{i}"), &format!("type-{i}"));
    }
    write_queue(&rig.home, tasks);
    let r = rig.pass();
    assert_eq!(r.decisions.len(), 4);
    for (i, (_, delay)) in cases.iter().enumerate() {
        assert_eq!(retry_delay(&rig, &format!("t{i}")), *delay, "attempt {} waits {delay}s", cases[i].0);
    }
    let q = read_queue(&rig.home);
    assert!(q.tasks[0].result.as_ref().unwrap().error.as_ref().unwrap().contains("zombie"));
    assert_eq!(rig.t.events_of("auto_restart_scheduled").len(), 4);
    // Idempotent: another pass (or a restart of the daemon) decides nothing again.
    assert!(rig.pass().decisions.is_empty());
    let history = std::fs::read_to_string(rig.home.fix_history()).unwrap();
    assert_eq!(history.lines().filter(|l| l.contains("\"restart_decision\"")).count(), 4);
}

#[test]
fn retries_exhausted_fails_the_task_with_the_reason() {
    let rig = Rig::new();
    write_queue(&rig.home, vec![in_progress_task("t", "scan-worker", "z", 4, 100)]);
    rig.zombie("z", "t", "scan-worker");
    rig.pass();
    assert!(matches!(rig.task_state("t"), TaskState::Failed { .. }));
    let err = read_queue(&rig.home).tasks[0].result.clone().unwrap().error.unwrap();
    assert!(err.contains("not restarted") && err.contains("retries"), "{err}");
    let ev = rig.t.events_of("auto_restart_refused");
    assert_eq!(ev[0]["data"]["reason_code"], "max_retries_exceeded");
}

#[test]
fn waits_for_the_heartbeat_daemon_to_finish_the_cleanup() {
    let rig = Rig::new();
    write_queue(&rig.home, vec![in_progress_task("t", "scan-worker", "z", 1, 100)]);
    let mut s = rig.spec(
        "z",
        "t",
        "scan-worker",
        DispatchState::Zombie { ended_at: rig.clock.now(), reason: "no_heartbeat".into() },
    );
    s.heartbeat = Some(serde_json::json!({"last_heartbeat": null, "sequence": 0, "missed_count": 0,
        "zombie_cleanup": {"reason": "no_heartbeat", "detected_at": format_ts(rig.clock.now()), "pid": 1, "pgid": 1,
                           "proc_start_ticks": 1, "tokens_returned": 0}}));
    write_spec(&rig.home, SpecBucket::Zombie, &s);
    assert!(rig.pass().decisions.is_empty());
    assert!(matches!(rig.task_state("t"), TaskState::InProgress { .. }));
    s.heartbeat.as_mut().unwrap()["zombie_cleanup"]["completed_at"] = serde_json::json!(format_ts(rig.clock.now()));
    write_spec(&rig.home, SpecBucket::Zombie, &s);
    assert_eq!(rig.pass().decisions.len(), 1);
}

#[test]
fn per_type_rate_limit_allows_three_and_blocks_the_fourth() {
    let rig = Rig::new();
    // Five zombies of one type would also trip its breaker (threshold 5): keep that out of it.
    patch_json(
        &rig.home.coord("config/worker-restart-policy.json"),
        serde_json::json!({"circuit_breaker": {"enabled": true, "failure_threshold": 10, "failure_window_seconds": 900, "reset_timeout_seconds": 1800}}),
    );
    let tasks = (0..4).map(|i| in_progress_task(&format!("t{i}"), "fix-worker", &format!("z{i}"), 1, 100)).collect();
    write_queue(&rig.home, tasks);
    for i in 0..4 {
        rig.zombie(&format!("z{i}"), &format!("t{i}"), "fix-worker");
    }
    let r = rig.pass();
    assert_eq!(r.decisions.len(), 4);
    let restarted =
        (0..4).filter(|i| matches!(rig.task_state(&format!("t{i}")), TaskState::PendingRetry { .. })).count();
    assert_eq!(restarted, 3);
    let refused = rig.t.events_of("auto_restart_refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["data"]["reason_code"], "worker_type_rate_limit");
    let failed =
        (0..4).map(|i| format!("t{i}")).find(|t| matches!(rig.task_state(t), TaskState::Failed { .. })).unwrap();
    let err =
        read_queue(&rig.home).tasks.into_iter().find(|t| t.task_id == failed).unwrap().result.unwrap().error.unwrap();
    assert!(err.contains("per_type_max_per_minute"), "{err}");

    // A minute later the window has room again.
    rig.clock.advance(Duration::seconds(61));
    let mut q = read_queue(&rig.home);
    q.tasks.push(in_progress_task("t9", "fix-worker", "z9", 1, 100));
    std::fs::write(rig.home.task_queue(), serde_json::to_vec(&q).unwrap()).unwrap();
    rig.zombie("z9", "t9", "fix-worker");
    rig.pass();
    assert!(matches!(rig.task_state("t9"), TaskState::PendingRetry { .. }));
}

#[test]
fn breaker_trips_half_opens_for_one_trial_and_closes() {
    let rig = Rig::new();
    write_queue(&rig.home, vec![]);
    let now = || rig.clock.now();
    for i in 0..4 {
        rig.failed(&format!("f{i}"), "scan-worker");
    }
    rig.pass();
    assert!(breaker::is_dispatch_allowed(&rig.store, "scan-worker", now()).unwrap());
    assert_eq!(
        rig.t.read_json("coordination/circuit-breakers.json")["breakers"]["scan-worker"]["failures_in_window"],
        4
    );
    rig.failed("f4", "scan-worker");
    let r = rig.pass();
    let tripped = rig.t.events_of("circuit_breaker_tripped");
    assert_eq!(tripped.len(), 1);
    assert_eq!(tripped[0]["data"]["worker_type"], "scan-worker");
    assert_eq!(rig.t.read_json("coordination/circuit-breakers.json")["breakers"]["scan-worker"]["state"], "open");
    assert!(!breaker::is_dispatch_allowed(&rig.store, "scan-worker", now()).unwrap());
    assert!(breaker::is_dispatch_allowed(&rig.store, "fix-worker", now()).unwrap());
    assert_eq!(r.next_pass.unwrap(), now() + Duration::seconds(1800), "wakes when the breaker half-opens");

    // A zombie of the type while open: not restarted.
    write_queue(&rig.home, vec![in_progress_task("t", "scan-worker", "z", 1, 100)]);
    rig.zombie("z", "t", "scan-worker");
    rig.pass();
    assert!(matches!(rig.task_state("t"), TaskState::Failed { .. }));
    assert_eq!(rig.t.events_of("auto_restart_refused")[0]["data"]["reason_code"], "circuit_breaker_open");
    assert_eq!(rig.t.events_of("circuit_breaker_tripped").len(), 1, "once per transition");

    rig.clock.advance(Duration::seconds(1800));
    rig.pass();
    assert_eq!(rig.t.events_of("circuit_breaker_half_open").len(), 1);
    assert_eq!(rig.t.read_json("coordination/circuit-breakers.json")["breakers"]["scan-worker"]["state"], "half_open");
    assert!(breaker::is_dispatch_allowed(&rig.store, "scan-worker", now()).unwrap(), "one trial allowed");
    // The trial is dispatched: no second one while it runs.
    rig.clock.advance(Duration::seconds(5));
    let g = Group::start("tail -f /dev/null");
    let mut trial = running_spec("trial", "t-trial", "scan-worker", &g, now(), 100);
    trial.dispatched_at = now();
    write_spec(&rig.home, SpecBucket::Active, &trial);
    assert!(!breaker::is_dispatch_allowed(&rig.store, "scan-worker", now()).unwrap());
    // It succeeds.
    rig.clock.advance(Duration::seconds(5));
    std::fs::remove_file(cortex::domain::task::dispatches::spec_path(&rig.home, SpecBucket::Active, "trial")).unwrap();
    trial.state = DispatchState::Completed { ended_at: now(), exit_code: 0, duration_s: 5.0 };
    write_spec(&rig.home, SpecBucket::Completed, &trial);
    rig.pass();
    assert_eq!(rig.t.events_of("circuit_breaker_closed").len(), 1);
    assert_eq!(rig.t.read_json("coordination/circuit-breakers.json")["breakers"]["scan-worker"]["state"], "closed");
    assert!(breaker::is_dispatch_allowed(&rig.store, "scan-worker", now()).unwrap());
}

#[test]
fn breaker_cli_lists_and_resets() {
    let rig = Rig::new();
    for i in 0..5 {
        rig.failed(&format!("f{i}"), "scan-worker");
    }
    rig.pass();
    let out = rig.t.cortex_ok(&["breaker", "list"]);
    assert!(out.contains("scan-worker") && out.contains("OPEN"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&rig.t.cortex_ok(&["--json", "breaker", "list"])).unwrap();
    assert_eq!(json["breakers"]["scan-worker"]["state"], "open");
    rig.t.cortex_ok(&["breaker", "reset", "scan-worker"]);
    assert_eq!(rig.t.read_json("coordination/circuit-breakers.json")["breakers"]["scan-worker"]["state"], "closed");
    assert_eq!(rig.t.events_of("circuit_breaker_reset").len(), 1);
    // Old failures no longer count after a reset.
    rig.pass();
    assert_eq!(rig.t.read_json("coordination/circuit-breakers.json")["breakers"]["scan-worker"]["state"], "closed");
    assert!(!rig.t.cortex(&["breaker", "reset", "no-such-type"]).status.success());
}
