//! SIGKILL of the worker or the coordinator while tasks run: every task ends exactly once, none
//! is lost, exit codes survive; and 1,000 trivial tasks end consistent.
use crate::support::task::*;
use crate::support::*;
use cortex::domain::task::ops::{NewTask, add_task};
use serde_json::Value;

/// A task that records each run, waits for `gate` under the home, then exits with `code`.
fn gated(h: &TestHome, gate: &str, code: i32) -> String {
    format!(
        "mkdir -p $CORTEX_HOME/runs; echo $CORTEX_DISPATCH_ID >> $CORTEX_HOME/runs/$CORTEX_TASK_ID; \
         while [ ! -f {}/{gate} ]; do sleep 0.05; done; exit {code}",
        h.path().display()
    )
}

fn runs_of(h: &TestHome, id: &str) -> usize {
    std::fs::read_to_string(h.join(&format!("runs/{id}"))).map(|s| s.lines().count()).unwrap_or(0)
}

fn assert_exactly_once(h: &TestHome, tasks: &[Value]) {
    for t in tasks {
        let id = t["task_id"].as_str().unwrap();
        assert_eq!(runs_of(h, id), 1, "task {id} ran once: {t}");
        assert_eq!(t["attempts"], 1, "{t}");
        assert_eq!(t["dispatches"].as_array().unwrap().len(), 1, "{t}");
    }
    assert_eq!(
        std::fs::read_dir(h.join("coordination/worker-specs/active")).unwrap().count(),
        0,
        "nothing left active"
    );
    let b = h.read_json("coordination/token-budget.json");
    assert!(b["reservations"].as_object().is_none_or(|r| r.is_empty()), "{b}");
}

#[test]
fn sigkill_of_the_worker_while_tasks_run() {
    let h = fast_home();
    let w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    // Two end while no worker runs (one with exit code 5); two end after the new worker adopted them.
    let early_ok = add(&h, &["--description", "early ok", "--", "sh", "-c", &gated(&h, "go1", 0)]);
    let early_bad =
        add(&h, &["--description", "early bad", "--max-attempts", "1", "--", "sh", "-c", &gated(&h, "go1", 5)]);
    let late_ok = add(&h, &["--description", "late ok", "--", "sh", "-c", &gated(&h, "go2", 0)]);
    let late_bad =
        add(&h, &["--description", "late bad", "--max-attempts", "1", "--", "sh", "-c", &gated(&h, "go2", 6)]);
    let ids = vec![early_ok.clone(), early_bad.clone(), late_ok.clone(), late_bad.clone()];
    wait_until(LONG, "all four running", || ids.iter().all(|id| runs_of(&h, id) == 1));
    w.kill9();
    std::fs::write(h.join("go1"), "").unwrap();
    wait_until(LONG, "early tasks recorded their exit", || {
        ids[..2].iter().all(|id| {
            let t = show(&h, id);
            let d = t["dispatches"][0].as_str().unwrap().to_string();
            let journal = std::fs::read_to_string(h.join("run/dispatch-exits.jsonl")).unwrap_or_default();
            journal.contains(&format!("\"dispatch_id\":\"{d}\""))
        })
    });
    assert_eq!(show(&h, &early_ok)["status"], "in_progress", "no worker: not folded yet");
    let _w2 = start(&h, "worker");
    assert!(h.events_of("worker_ready").last().unwrap()["data"]["adopted"].as_u64().unwrap() >= 2);
    let t = wait_status(&h, &early_ok, "completed");
    assert_eq!(t["result"]["exit_code"], 0);
    let t = wait_status(&h, &early_bad, "failed");
    assert_eq!(t["result"]["exit_code"], 5, "the real exit code survives the worker's death: {t}");
    std::fs::write(h.join("go2"), "").unwrap();
    wait_status(&h, &late_ok, "completed");
    let t = wait_status(&h, &late_bad, "failed");
    assert_eq!(t["result"]["exit_code"], 6, "{t}");
    let tasks = wait_finished(&h, &ids);
    assert_exactly_once(&h, &tasks);
}

#[test]
fn sigkill_of_the_coordinator_while_tasks_run() {
    let h = fast_home();
    let _w = start(&h, "worker");
    let c = start(&h, "coordinator");
    let ids: Vec<String> =
        (0..4).map(|i| add(&h, &["--description", &format!("t{i}"), "--", "sh", "-c", &gated(&h, "go", 0)])).collect();
    wait_until(LONG, "all running", || ids.iter().all(|id| runs_of(&h, id) == 1));
    c.kill9();
    // Work goes on without the coordinator: tasks end, new ones queue up.
    std::fs::write(h.join("go"), "").unwrap();
    let more: Vec<String> =
        (0..3).map(|i| add(&h, &["--description", &format!("m{i}"), "--", "sh", "-c", &gated(&h, "go", 0)])).collect();
    wait_until(LONG, "specs moved to completed", || {
        std::fs::read_dir(h.join("coordination/worker-specs/completed")).unwrap().count() == 4
    });
    let _c2 = start(&h, "coordinator");
    let all: Vec<String> = ids.iter().chain(&more).cloned().collect();
    let tasks = wait_finished(&h, &all);
    assert!(tasks.iter().all(|t| t["status"] == "completed"), "{tasks:?}");
    assert_exactly_once(&h, &tasks);
}

#[test]
fn dispatch_recorded_without_spec_is_lost_and_retried() {
    let h = fast_home();
    let store = cortex::Store::new(cortex::Home::at(h.path()));
    let t = add_task(&store, NewTask { description: "x".into(), command: vec!["true".into()], ..NewTask::default() })
        .unwrap();
    // What a coordinator killed between the queue write and the spec write leaves behind.
    let mut task = serde_json::to_value(&t).unwrap();
    task["status"] = "in_progress".into();
    task["started_at"] = cortex::base::clock::now_string().into();
    task["dispatch_id"] = "dsp-crashed".into();
    task["attempts"] = 1.into();
    task["dispatches"] = serde_json::json!(["dsp-crashed"]);
    std::fs::write(h.join("coordination/task-queue.json"), serde_json::json!({"tasks": [task]}).to_string()).unwrap();
    std::fs::remove_file(h.join("coordination/task-intake.jsonl")).unwrap();
    std::fs::write(
        h.join("coordination/token-budget.json"),
        r#"{"total": 500000, "used": 0, "available": 450000, "reservations": {"dsp-crashed": 50000}}"#,
    )
    .unwrap();
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let done = wait_status(&h, &t.task_id, "completed");
    assert_eq!(done["attempts"], 2, "the lost attempt counts: {done}");
    assert_eq!(done["dispatches"][0], "dsp-crashed");
    assert!(
        h.events_of("task_retry_scheduled").iter().any(|e| e["data"]["error"].as_str().unwrap_or("").contains("lost"))
    );
    wait_until(LONG, "reservation released", || {
        let b = h.read_json("coordination/token-budget.json");
        b["available"] == 500000 && b["reservations"].as_object().is_some_and(|r| r.is_empty())
    });
}

#[test]
fn many_trivial_tasks_end_consistent() {
    let n: usize = std::env::var("CORTEX_TEST_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    // On tmpfs when there is one: this test checks consistency, not the disk (see scripts/bench.sh).
    let h = match tempfile::Builder::new().prefix("cortex-test-").tempdir_in("/dev/shm") {
        Ok(dir) => {
            let h = TestHome::in_dir(dir);
            h.cortex_ok(&["init"]);
            h
        }
        Err(_) => TestHome::new(),
    };
    configure(&h, &[("worker", "grace_seconds", "0.5"), ("scheduler", "max_concurrent_dispatches", "8")]);
    std::fs::write(
        h.join("coordination/token-budget.json"),
        r#"{"total": 1000000000, "used": 0, "available": 1000000000}"#,
    )
    .unwrap();
    let store = cortex::Store::new(cortex::Home::at(h.path()));
    let ids: Vec<String> = (0..n)
        .map(|i| {
            add_task(
                &store,
                NewTask {
                    description: format!("trivial {i}"),
                    command: vec!["true".into()],
                    budget: Some(10),
                    ..NewTask::default()
                },
            )
            .unwrap()
            .task_id
        })
        .collect();
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let archive = h.join("coordination/task-archive.jsonl");
    wait_until(std::time::Duration::from_secs(300), "all archived", || {
        std::fs::read_to_string(&archive).map(|s| s.lines().count()).unwrap_or(0) >= n
    });
    let lines: Vec<Value> =
        std::fs::read_to_string(&archive).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), n, "each task archived once");
    let mut seen = std::collections::HashSet::new();
    for t in &lines {
        let id = t["task_id"].as_str().unwrap();
        assert!(seen.insert(id.to_string()), "{id} archived twice");
        assert_eq!(t["status"], "completed", "{t}");
        assert_eq!(t["attempts"], 1);
        let d = t["dispatches"][0].as_str().unwrap();
        assert!(h.join(&format!("coordination/worker-specs/completed/{d}.json")).exists(), "{d}");
    }
    assert!(ids.iter().all(|id| seen.contains(id)));
    let q = h.queue_json();
    assert_eq!(q["tasks"].as_array().unwrap().len(), 0);
    let live: Value = serde_json::from_str(&h.cortex_ok(&["task", "list", "--json"])).unwrap();
    assert_eq!(live["count"], 0, "nothing left in the queue or the intake");
    let b = h.read_json("coordination/token-budget.json");
    assert!(b["reservations"].as_object().unwrap().is_empty());
    assert_eq!(b["available"].as_u64().unwrap(), b["total"].as_u64().unwrap() - b["used"].as_u64().unwrap());
    assert_eq!(std::fs::read_dir(h.join("coordination/worker-specs/active")).unwrap().count(), 0);
    let dispatched = h.events_of("task_dispatched").len();
    assert_eq!(dispatched, n, "one dispatch per task");
    h.cortex_ok(&["validate"]);
}

/// Found by the chaos soak: a worker SIGKILLed after it had SIGKILLed a timed-out (or cancelled)
/// dispatch's group, before reaping it, left a dispatch with no process and no exit report; the
/// next worker called it `lost` instead of `timeout` (or `cancelled`).
#[test]
fn worker_killed_mid_stop_ends_the_dispatch_timeout_or_cancelled_not_lost() {
    use cortex::domain::task::model::DispatchRecord;
    let h = fast_home();
    // A PID that no longer runs (and start ticks that would not match anyway).
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id() as i32;
    gone.wait().unwrap();
    let started = chrono::Utc::now() - chrono::Duration::seconds(10);
    let write = |id: &str, timeout_seconds: f64| {
        let at = cortex::base::clock::format_ts(started);
        let rec: DispatchRecord = crate::support::records::typed(crate::support::records::dispatch(
            id,
            &format!("task-{id}"),
            &at,
            serde_json::json!({
                "worker_type": "analysis-worker", "status": "running", "started_at": at,
                "pid": pid, "pgid": pid, "proc_start_ticks": 1,
                "command": ["sleep", "100"], "budget_reserved": 10, "timeout_seconds": timeout_seconds,
            }),
        ));
        std::fs::write(
            h.join(&format!("coordination/worker-specs/active/{id}.json")),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
    };
    write("dsp-timed-out", 1.0);
    write("dsp-cancelled", 3600.0);
    std::fs::write(
        h.join("coordination/worker-specs/active/dsp-cancelled.cancel"),
        r#"{"requested_at": "2026-01-01T00:00:00Z", "requested_by": "test"}"#,
    )
    .unwrap();
    write("dsp-vanished", 3600.0);
    let _w = start(&h, "worker");
    let ended = |id: &str| spec(&h, id).filter(|(b, _)| b == "failed").map(|(_, s)| s["status"].clone());
    wait_until(LONG, "the three dispatches ended", || {
        ["dsp-timed-out", "dsp-cancelled", "dsp-vanished"].iter().all(|id| ended(id).is_some())
    });
    assert_eq!(ended("dsp-timed-out").unwrap(), "timeout", "past its timeout: the stop had begun");
    assert_eq!(ended("dsp-cancelled").unwrap(), "cancelled", "a cancel was requested");
    assert_eq!(ended("dsp-vanished").unwrap(), "lost", "neither: nobody knows how it ended");
}
