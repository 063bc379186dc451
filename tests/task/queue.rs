//! Task intake, validation, routing, ordering and the pause hook, without or with the daemons.
use crate::support::task::*;
use crate::support::*;
use cortex::base::clock::SystemClock;
use cortex::daemons::coordinator::Coordinator;
use cortex::domain::task::ops::{NewTask, add_task};
use cortex::store::config::Config;
use serde_json::Value;

/// The worker's part, by hand: a dispatch's spec moved from `active/` to `completed/`, ended
/// with exit 0 now.
fn complete_by_hand(h: &TestHome, dispatch_id: &str) {
    let active = h.join(&format!("coordination/worker-specs/active/{dispatch_id}.json"));
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&active).unwrap()).unwrap();
    spec["status"] = "completed".into();
    spec["ended_at"] = cortex::base::clock::now_string().into();
    spec["exit_code"] = 0.into();
    spec["duration_s"] = 0.0.into();
    let done = h.join(&format!("coordination/worker-specs/completed/{dispatch_id}.json"));
    std::fs::write(&done, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    std::fs::remove_file(&active).unwrap();
}

fn intake_lines(h: &TestHome) -> usize {
    std::fs::read_to_string(h.join("coordination/task-intake.jsonl")).unwrap_or_default().lines().count()
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let h = TestHome::new();
    let cases: &[&[&str]] = &[
        &["--description", "x", "--priority", "urgent"],
        &["--description", "   "],
        &["--description", "x", "--type", "no-such-worker"],
        &["--description", "x", "--budget", "500001"],
        &["--description", "x", "--after", "task-does-not-exist"],
        &["--description", "x", "--timeout", "soon"],
        &["--description", "x", "--max-attempts", "0"],
    ];
    for args in cases {
        let mut a = vec!["task", "add"];
        a.extend_from_slice(args);
        let out = h.cortex(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(!err.trim().is_empty(), "{args:?}: no error message");
    }
    let err = String::from_utf8_lossy(&h.cortex(&["task", "add", "--description", "x", "--type", "nope"]).stderr)
        .into_owned();
    assert!(err.contains("unknown worker type \"nope\"") && err.contains("scan-worker"), "{err}");
    let err = String::from_utf8_lossy(&h.cortex(&["task", "add", "--description", "x", "--budget", "900000"]).stderr)
        .into_owned();
    assert!(err.contains("larger than the total token budget 500000"), "{err}");
    assert_eq!(intake_lines(&h), 0, "nothing queued");
    assert!(!h.join("coordination/moe/routing-decisions.jsonl").exists(), "no routing decision recorded");
    // A good one is accepted and listed at once (from the intake, before any coordinator runs).
    let id = add(&h, &["--description", "fine"]);
    assert_eq!(intake_lines(&h), 1);
    let t = show(&h, &id);
    assert_eq!((t["status"].as_str(), t["priority"].as_str()), (Some("queued"), Some("medium")));
}

#[test]
fn routing_default_rules_fallback_and_explicit_type() {
    let h = TestHome::new();
    let cases = [
        ("Implement the login form", "implementation-worker", "implement", "rule"),
        ("Run a SECURITY scan", "scan-worker", "scan", "rule"),
        ("fix the flaky bug", "fix-worker", "fix", "rule"),
        ("summarise last week", "analysis-worker", "default", "fallback"),
    ];
    let mut ids = Vec::new();
    for (desc, wt, rule, strategy) in cases {
        let id = add(&h, &["--description", desc]);
        let t = show(&h, &id);
        assert_eq!(t["worker_type"], wt, "{desc}");
        assert_eq!(t["routing"]["rule"], rule, "{desc}");
        assert_eq!(t["routing"]["strategy"], strategy, "{desc}");
        ids.push(id);
    }
    // A matching rule below min_confidence falls back to the default rule.
    let mut router: Value = h.read_json("coordination/moe/router-config.json");
    router["rules"].as_array_mut().unwrap().insert(
        0,
        serde_json::json!({"name": "docs", "pattern": "docs", "worker_type": "implementation-worker", "confidence": 0.3}),
    );
    std::fs::write(h.join("coordination/moe/router-config.json"), router.to_string()).unwrap();
    let low = add(&h, &["--description", "update the docs"]);
    let t = show(&h, &low);
    assert_eq!(
        (t["worker_type"].as_str(), t["routing"]["strategy"].as_str()),
        (Some("analysis-worker"), Some("fallback"))
    );
    // An explicit type skips routing.
    let explicit = add(&h, &["--description", "implement it", "--type", "scan-worker"]);
    let t = show(&h, &explicit);
    assert_eq!((t["worker_type"].as_str(), t["routing"]["strategy"].as_str()), (Some("scan-worker"), Some("explicit")));
    // Every decision is logged.
    let log = std::fs::read_to_string(h.join("coordination/moe/routing-decisions.jsonl")).unwrap();
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["task_id"], ids[0].as_str());
    assert_eq!(lines[4]["strategy"], "fallback");
    h.cortex_ok(&["validate"]);
}

fn store_of(h: &TestHome) -> cortex::Store {
    cortex::Store::new(cortex::Home::at(h.path()))
}

#[test]
fn paused_state_blocks_dispatch_in_the_same_critical_section() {
    let h = TestHome::new();
    let store = store_of(&h);
    std::fs::write(
        h.join("coordination/scheduler-state.json"),
        r#"{"state": "paused", "paused": true, "paused_at": "2026-01-01T00:00:00Z", "resumed_at": null,
            "paused_by": "ops", "reason": "maintenance", "updated_at": null}"#,
    )
    .unwrap();
    let t = add_task(&store, NewTask { description: "x".into(), command: vec!["true".into()], ..NewTask::default() })
        .unwrap();
    let config = Config::load(store.home()).unwrap();
    let mut c = Coordinator::new(store.clone(), config, Box::new(SystemClock));
    c.reconcile_at_start().unwrap();
    let r = c.cycle().unwrap();
    assert!(r.paused);
    assert_eq!(r.folded, 1, "the intake is folded while paused");
    assert!(r.dispatched.is_empty(), "nothing is dispatched while paused");
    assert_eq!(h.queue_json()["tasks"][0]["status"], "queued");
    // Resume: the next cycle dispatches.
    let actor = cortex::domain::scheduler_state::Actor { who: "test".into(), from: "test".into() };
    cortex::domain::scheduler_state::resume(&store, &actor).unwrap();
    let r = c.cycle().unwrap();
    assert_eq!(r.dispatched.len(), 1);
    assert_eq!(r.dispatched[0].task_id, t.task_id);
    assert!(h.join(&format!("coordination/worker-specs/active/{}.json", r.dispatched[0].dispatch_id)).exists());
    // Pause from another thread while cycles run: no dispatch is stamped after the pause.
    for _ in 0..20 {
        add_task(&store, NewTask { description: "y".into(), command: vec!["true".into()], ..NewTask::default() })
            .unwrap();
    }
    let pauser = {
        let store = store.clone();
        std::thread::spawn(move || {
            cortex::domain::scheduler_state::pause(&store, &actor, Some("test")).unwrap().timestamp
        })
    };
    let mut stamps = Vec::new();
    for _ in 0..50 {
        let r = c.cycle().unwrap();
        stamps.extend(r.dispatched.iter().map(|d| d.dispatched_at));
        // Free the slots as if the dispatches ended at once.
        for d in &r.dispatched {
            complete_by_hand(&h, &d.dispatch_id);
        }
    }
    let paused_at = pauser.join().unwrap();
    let r = c.cycle().unwrap();
    assert!(r.paused && r.dispatched.is_empty());
    for s in &stamps {
        assert!(*s < paused_at, "dispatch stamped {s} after the pause at {paused_at}");
    }
}

#[test]
fn priority_then_fifo_with_one_slot() {
    let h = fast_home();
    configure(&h, &[("scheduler", "max_concurrent_dispatches", "1")]);
    let order = h.join("order.txt");
    let record = |name: &str| format!("echo {name} >> {}", order.display());
    let mut ids = Vec::new();
    for (name, prio) in [
        ("low1", "low"),
        ("med1", "medium"),
        ("crit1", "critical"),
        ("high1", "high"),
        ("med2", "medium"),
        ("high2", "high"),
        ("low2", "low"),
        ("crit2", "critical"),
    ] {
        ids.push(add(&h, &["--description", name, "--priority", prio, "--", "sh", "-c", &record(name)]));
    }
    // Everything is queued before the coordinator starts, so the order is the coordinator's choice.
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let tasks = wait_finished(&h, &ids);
    assert!(tasks.iter().all(|t| t["status"] == "completed"), "{tasks:?}");
    let got: Vec<String> = std::fs::read_to_string(&order).unwrap().lines().map(str::to_string).collect();
    assert_eq!(got, ["crit1", "crit2", "high1", "high2", "med1", "med2", "low1", "low2"]);
}

#[test]
fn after_and_delay() {
    let h = fast_home();
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let first = add(&h, &["--description", "first", "--", "sh", "-c", "sleep 0.5"]);
    let second = add(&h, &["--description", "second", "--after", &first, "--", "true"]);
    let t = wait_status(&h, &second, "completed");
    let f = show(&h, &first);
    assert_eq!(f["status"], "completed");
    assert!(
        t["started_at"].as_str().unwrap() >= f["completed_at"].as_str().unwrap(),
        "ran only after its prerequisite"
    );
    // A prerequisite that fails fails its dependants.
    let bad = add(&h, &["--description", "bad", "--max-attempts", "1", "--", "sh", "-c", "exit 4"]);
    let dep = add(&h, &["--description", "dep", "--after", &bad, "--", "true"]);
    let d = wait_status(&h, &dep, "failed");
    assert!(d["result"]["error"].as_str().unwrap().contains(&bad), "{d}");
    assert_eq!(d["attempts"], 0, "it never ran");
    // --delay: waits with a reason, then starts no earlier than asked.
    let delayed = add(&h, &["--description", "later", "--delay", "1s", "--", "true"]);
    let q = show(&h, &delayed);
    assert_eq!((q["status"].as_str(), q["waiting_reason"].as_str()), (Some("queued"), Some("delay")));
    let t = wait_status(&h, &delayed, "completed");
    let created = cortex::base::clock::parse_ts(t["created_at"].as_str().unwrap()).unwrap();
    let started = cortex::base::clock::parse_ts(t["started_at"].as_str().unwrap()).unwrap();
    assert!(started - created >= chrono::Duration::milliseconds(1000), "started after {:?}", started - created);
}

#[test]
fn paused_coordinator_daemon_folds_but_does_not_dispatch() {
    let h = fast_home();
    std::fs::write(
        h.join("coordination/scheduler-state.json"),
        r#"{"state": "paused", "paused": true, "paused_at": "2026-01-01T00:00:00Z", "resumed_at": null,
            "paused_by": "ops", "reason": "drill", "updated_at": null}"#,
    )
    .unwrap();
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let id = add(&h, &["--description", "held", "--", "true"]);
    wait_until(LONG, "task folded into the queue", || {
        h.queue_json()["tasks"].as_array().is_some_and(|t| t.iter().any(|t| t["task_id"] == id.as_str()))
    });
    // Fold and dispatch happen in one cycle: folded without a dispatch means the pause held.
    assert_eq!(show(&h, &id)["status"], "queued");
    assert_eq!(std::fs::read_dir(h.join("coordination/worker-specs/active")).unwrap().count(), 0);
    std::fs::write(
        h.join("coordination/scheduler-state.json"),
        r#"{"state": "running", "paused": false, "paused_at": null, "resumed_at": null, "paused_by": null, "reason": null, "updated_at": null}"#,
    )
    .unwrap();
    wait_status(&h, &id, "completed");
}

#[test]
fn a_dispatch_whose_spec_was_not_written_is_folded_lost_even_after_a_cycle_that_failed() {
    let h = TestHome::new();
    let store = store_of(&h);
    let t = add_task(
        &store,
        NewTask { description: "x".into(), command: vec!["true".into()], max_attempts: Some(1), ..NewTask::default() },
    )
    .unwrap();
    let config = Config::load(store.home()).unwrap();
    let mut c = Coordinator::new(store.clone(), config, Box::new(SystemClock));
    c.reconcile_at_start().unwrap();
    // Cycle 1: the dispatch is recorded in the queue, but its spec cannot be written.
    let active = h.join("coordination/worker-specs/active");
    let away = h.join("coordination/worker-specs/active.away");
    std::fs::rename(&active, &away).unwrap();
    std::fs::write(&active, b"not a directory").unwrap();
    let r = c.cycle().unwrap();
    assert_eq!(r.dispatched.len(), 1);
    std::fs::remove_file(&active).unwrap();
    std::fs::rename(&away, &active).unwrap();
    assert_eq!(show(&h, &t.task_id)["status"], "in_progress");
    assert!(!active.join(format!("{}.json", r.dispatched[0].dispatch_id)).exists());
    // Cycle 2 folds the dispatch `lost` (its only attempt: the task fails and is archived), but
    // cannot write: the archive is not a file now.
    let archive = h.join("coordination/task-archive.jsonl");
    let _ = std::fs::remove_file(&archive);
    std::fs::create_dir(&archive).unwrap();
    assert!(c.cycle().is_err(), "the cycle cannot archive");
    assert_eq!(show(&h, &t.task_id)["status"], "in_progress", "nothing of the failed cycle was written");
    // Cycle 3, writes working again: the loss is folded after all, not forgotten.
    std::fs::remove_dir(&archive).unwrap();
    c.cycle().unwrap();
    let shown = show(&h, &t.task_id);
    assert_eq!(shown["status"], "failed", "{shown}");
    h.cortex_ok(&["validate"]);
}

/// A coordinator killed after its archive append and before the queue write that drops the
/// finished tasks leaves them in both (the queue as before the cycle, the ended specs in
/// `completed/`). The next coordinator folds them again and finds them archived with the same
/// end: it drops them from the queue without appending them a second time.
#[test]
fn tasks_a_killed_coordinator_left_in_queue_and_archive_are_archived_once() {
    let h = TestHome::new();
    let store = store_of(&h);
    let new = || NewTask { description: "x".into(), command: vec!["true".into()], ..NewTask::default() };
    let ids: Vec<String> = (0..2).map(|_| add_task(&store, new()).unwrap().task_id).collect();
    let config = Config::load(store.home()).unwrap();
    let mut c = Coordinator::new(store.clone(), config.clone(), Box::new(SystemClock));
    c.reconcile_at_start().unwrap();
    let r = c.cycle().unwrap();
    assert_eq!(r.dispatched.len(), 2);
    // The worker's part, by hand: each dispatch completed.
    for d in &r.dispatched {
        complete_by_hand(&h, &d.dispatch_id);
    }
    // The queue is its snapshot and its journal: both as before the cycle.
    let queue = h.join("coordination/task-queue.json");
    let journal = h.join("coordination/task-queue.journal.jsonl");
    let before_fold = std::fs::read(&queue).unwrap();
    let journal_before_fold = std::fs::read(&journal).unwrap_or_default();
    let archived_lines = |id: &str| {
        let text = std::fs::read_to_string(h.join("coordination/task-archive.jsonl")).unwrap_or_default();
        text.lines().filter(|l| l.contains(&format!("\"task_id\":\"{id}\""))).count()
    };
    c.cycle().unwrap();
    for id in &ids {
        assert_eq!(archived_lines(id), 1);
    }
    // Killed in between: the archive has the lines, the queue is the one before the cycle.
    drop(c);
    std::fs::write(&queue, &before_fold).unwrap();
    std::fs::write(&journal, &journal_before_fold).unwrap();
    let mut c = Coordinator::new(store.clone(), config, Box::new(SystemClock));
    c.reconcile_at_start().unwrap();
    let r = c.cycle().unwrap();
    assert_eq!(r.ended.len(), 2, "the ends are folded again");
    for id in &ids {
        assert_eq!(archived_lines(id), 1, "task {id} archived once");
        assert_eq!(show(&h, id)["status"], "completed");
    }
    let q = h.queue_json();
    assert_eq!(q["tasks"].as_array().unwrap().len(), 0, "{q}");
    h.cortex_ok(&["validate"]);
}

/// The start-up check compares the whole end, not only status and dispatch count: a task
/// cancelled before it ran, retried and cancelled again (no dispatch either time) is a new end
/// and is archived, not dropped as if archived already.
#[test]
fn a_task_cancelled_again_after_a_retry_is_archived_again_by_a_new_coordinator() {
    let h = TestHome::new();
    let store = store_of(&h);
    let id = add_task(&store, NewTask { description: "x".into(), command: vec!["true".into()], ..NewTask::default() })
        .unwrap()
        .task_id;
    let config = Config::load(store.home()).unwrap();
    let mut c = Coordinator::new(store.clone(), config.clone(), Box::new(SystemClock));
    c.reconcile_at_start().unwrap();
    // Paused: nothing is dispatched, the task stays queued.
    h.cortex_ok(&["scheduler", "pause", "--reason", "test"]);
    c.cycle().unwrap();
    h.cortex_ok(&["task", "cancel", &id]);
    c.cycle().unwrap();
    let archived = || {
        let text = std::fs::read_to_string(h.join("coordination/task-archive.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|t| t["task_id"] == id.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(archived().len(), 1);
    let first_end = archived()[0]["completed_at"].clone();
    h.cortex_ok(&["task", "retry", &id]);
    wait_until(LONG, "a new completion time", || cortex::base::clock::now_string() != first_end.as_str().unwrap_or(""));
    h.cortex_ok(&["task", "cancel", &id]);
    drop(c);
    let mut c = Coordinator::new(store.clone(), config, Box::new(SystemClock));
    c.reconcile_at_start().unwrap();
    c.cycle().unwrap();
    let lines = archived();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_ne!(lines[1]["completed_at"], first_end, "{lines:?}");
    assert_eq!(show(&h, &id)["status"], "cancelled");
}
