//! A backlog of tasks not yet due: the coordinator parks them (holds them apart from the tasks a
//! cycle moves), and they stay part of the queue — listed, counted, found as prerequisites,
//! cancelled, written at a compaction, dispatched when due. And the coordinator and the CLI
//! around the journal: a journal changed in place is read again; a change whose commit took
//! effect is not reported as failed.
use crate::support::*;
use cortex::base::clock::SystemClock;
use cortex::daemons::coordinator::Coordinator;
use cortex::domain::task::ops::{NewTask, add_task};
use cortex::store::config::Config;
use std::time::Duration;

fn store_of(h: &TestHome) -> cortex::Store {
    cortex::Store::new(cortex::Home::at(h.path()))
}

fn coordinator(h: &TestHome) -> Coordinator {
    let store = store_of(h);
    let config = Config::load(store.home()).unwrap();
    let mut c = Coordinator::new(store, config, Box::new(SystemClock));
    c.reconcile_at_start().unwrap();
    c
}

fn add(h: &TestHome, description: &str, delay: Option<f64>, after: Option<&str>) -> String {
    let new = NewTask {
        description: description.into(),
        command: vec!["true".into()],
        delay_seconds: delay,
        after: after.map(str::to_string),
        ..NewTask::default()
    };
    add_task(&store_of(h), new).unwrap().task_id
}

fn task<'a>(queue: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    queue["tasks"].as_array().unwrap().iter().find(|t| t["task_id"] == id)
}

/// Parked tasks are the queue's: a dependent of one waits (never "does not exist"), a cancel of
/// one applies, one falls due and is dispatched, and a restarted coordinator reads them back.
#[test]
fn parked_tasks_wait_are_cancelled_and_dispatched_when_due() {
    let h = TestHome::new();
    let late = add(&h, "late", Some(3600.0), None);
    let doomed = add(&h, "doomed", Some(3600.0), None);
    let soon = add(&h, "soon", Some(1.5), None);
    let dependent = add(&h, "dependent", None, Some(&late));
    let mut c = coordinator(&h);
    let r = c.cycle().unwrap();
    assert_eq!(r.folded, 4);
    assert!(r.dispatched.is_empty());
    assert!(r.next_due.is_some(), "woken when the soonest falls due");
    // Parked after that cycle; the next cycles still see them.
    for _ in 0..2 {
        let r = c.cycle().unwrap();
        assert!(r.ended.is_empty(), "nothing fails: {:?}", r.ended);
        assert!(r.next_due.is_some(), "the parked tasks' next due time is kept");
    }
    let q = h.queue_json();
    assert_eq!(q["tasks"].as_array().unwrap().len(), 4, "parked tasks are listed: {q}");
    assert_eq!(task(&q, &dependent).unwrap()["waiting_reason"], "after", "{q}");
    assert_eq!(task(&q, &late).unwrap()["waiting_reason"], "delay", "{q}");
    // A cancel of a parked task (appended to the journal by the CLI) applies.
    h.cortex_ok(&["task", "cancel", &doomed]);
    let r = c.cycle().unwrap();
    assert_eq!(r.archived, 1, "the cancelled task is archived");
    let shown = h.cortex_ok(&["task", "show", &doomed, "--json"]);
    assert!(shown.contains("\"cancelled\""), "{shown}");
    assert!(task(&h.queue_json(), &doomed).is_none());
    // The soon one falls due and is dispatched, without any file changing.
    let mut dispatched = Vec::new();
    wait_until(Duration::from_secs(10), "the delayed task is dispatched when due", || {
        dispatched.extend(c.cycle().unwrap().dispatched.into_iter().map(|d| d.task_id));
        !dispatched.is_empty()
    });
    assert_eq!(dispatched, vec![soon.clone()]);
    // A coordinator started afresh reads the same queue (the parked tasks are on disk).
    let mut again = coordinator(&h);
    let r = again.cycle().unwrap();
    assert!(r.dispatched.is_empty() && r.ended.is_empty(), "{r:?}");
    let q = h.queue_json();
    let mut ids: Vec<&str> = q["tasks"].as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want = vec![late.as_str(), soon.as_str(), dependent.as_str()];
    want.sort();
    assert_eq!(ids, want);
    // (Exits 1: no daemon runs; the queue's counts are there all the same.)
    let status = h.cortex(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let tasks = &status["tasks"];
    assert_eq!(
        (&tasks["queued"], &tasks["in_progress"]),
        (&2.into(), &1.into()),
        "counted, parked ones included: {tasks}"
    );
}

/// A compaction while tasks are parked writes them into the snapshot (copied as their lines),
/// and a coordinator started afresh reads them back from it.
#[test]
fn a_compaction_writes_the_parked_tasks_into_the_snapshot() {
    let h = TestHome::new();
    h.cortex_ok(&["scheduler", "pause", "--reason", "test"]);
    let parked: Vec<String> = (0..3).map(|i| add(&h, &format!("parked {i}"), Some(3600.0), None)).collect();
    let mut c = coordinator(&h);
    c.cycle().unwrap();
    c.cycle().unwrap();
    // Enough new tasks in one fold that its commit passes the compaction threshold (256 KiB).
    let long = "x".repeat(1500);
    for i in 0..200 {
        add(&h, &format!("{long} {i}"), None, None);
    }
    c.cycle().unwrap();
    let journal = std::fs::metadata(h.join("coordination/task-queue.journal.jsonl")).map(|m| m.len()).unwrap_or(0);
    assert_eq!(journal, 0, "the fold's commit was a compaction");
    let raw = std::fs::read_to_string(h.join("coordination/task-queue.json")).unwrap();
    for id in &parked {
        assert!(raw.contains(id.as_str()), "parked task {id} is in the snapshot");
    }
    let snapshot: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(snapshot["tasks"].as_array().unwrap().len(), 203);
    assert_eq!(snapshot["counts"]["total"], 203);
    assert_eq!(snapshot["counts"]["waiting"]["delay"], 3);
    h.cortex_ok(&["validate"]);
    let mut again = coordinator(&h);
    again.cycle().unwrap();
    assert_eq!(h.queue_json()["tasks"].as_array().unwrap().len(), 203);
}

/// The journal rewritten in place to the same length (a hand edit, a restore in place): the
/// coordinator reads the queue again instead of trusting the length it last saw. Without that,
/// its next commit is checked (debug builds) against a queue on disk it does not hold.
#[test]
fn a_journal_changed_in_place_to_the_same_length_is_read_again() {
    let h = TestHome::new();
    h.cortex_ok(&["scheduler", "pause", "--reason", "test"]);
    add(&h, "aaaa", None, None);
    let mut c = coordinator(&h);
    c.cycle().unwrap();
    add(&h, "first", None, None);
    c.cycle().unwrap();
    let path = h.join("coordination/task-queue.journal.jsonl");
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("\"first\""), "the task is in the journal: {text}");
    let edited = text.replace("\"first\"", "\"FIRST\"");
    assert_eq!(edited.len(), bytes.len());
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all(edited.as_bytes()).unwrap();
    }
    add(&h, "second", None, None);
    c.cycle().unwrap();
    let q = h.queue_json();
    let descriptions: Vec<&str> =
        q["tasks"].as_array().unwrap().iter().map(|t| t["description"].as_str().unwrap()).collect();
    assert!(descriptions.contains(&"FIRST") && descriptions.contains(&"second"), "{descriptions:?}");
    // The coordinator's next commit carries the queue as it is on disk.
    add(&h, "third", None, None);
    c.cycle().unwrap();
    assert_eq!(h.queue_json()["counts"]["total"], 4);
}

/// A cancel whose journal commit took effect is reported done even when the intake's
/// housekeeping after it fails (here: the folded intake cannot be removed).
#[test]
fn a_change_that_took_effect_is_not_reported_as_failed() {
    let h = TestHome::new();
    let id = add(&h, "to cancel", None, None);
    let folded = h.join("coordination/task-intake.jsonl.folded");
    std::fs::create_dir_all(folded.join("in-the-way")).unwrap();
    let out = h.cortex(&["task", "cancel", &id]);
    assert!(
        out.status.success(),
        "the cancel took effect but was reported failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(task(&h.queue_json(), &id).unwrap()["status"], "cancelled");
}

/// A queue from before the journal (generation 0, as a tool or an old home writes it) is
/// compacted by the coordinator's first cycle after start-up, with nothing to do: the first
/// `add` after start then appends one journal commit instead of waiting for the whole
/// snapshot's write (and every follower's reload of it).
#[test]
fn a_queue_from_before_the_journal_is_compacted_at_start_not_by_the_first_add() {
    use std::os::unix::fs::MetadataExt;
    let h = TestHome::new();
    let snapshot = h.path().join("coordination/task-queue.json");
    let tasks: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"{{"task_id":"task-old-{i:04}","description":"old {i}","priority":"medium","worker_type":"analysis-worker","command":["true"],"status":"queued","created_at":"2026-01-01T00:00:00.000000Z","created_by":"test","attempts":0,"max_attempts":3,"budget":10,"waiting_reason":"delay","not_before":"2099-01-01T00:00:00.000000Z","dispatches":[]}}"#
            )
        })
        .collect();
    std::fs::write(&snapshot, format!(r#"{{"tasks": [{}], "updated_at": null, "intake_offset": 0}}"#, tasks.join(",")))
        .unwrap();
    let mut c = coordinator(&h);
    let r = c.cycle().unwrap();
    assert_eq!(r.folded, 0);
    let q = h.queue_json();
    assert!(
        q["journal_generation"].as_u64().is_some_and(|g| g > 0),
        "the first cycle compacts a generation-0 queue: {}",
        q["journal_generation"]
    );
    assert_eq!(q["tasks"].as_array().unwrap().len(), 50);
    let compacted = std::fs::metadata(&snapshot).unwrap().ino();
    // The first add after start: one journal commit, the snapshot left as it is.
    let id = add(&h, "first add", None, None);
    assert_eq!(c.cycle().unwrap().folded, 1);
    assert_eq!(std::fs::metadata(&snapshot).unwrap().ino(), compacted, "the add's fold rewrote the snapshot");
    let journal = std::fs::read_to_string(h.path().join("coordination/task-queue.journal.jsonl")).unwrap();
    assert!(journal.contains(&id), "the added task is in the journal");
    // And a restarted coordinator reads all 51, and writes nothing with nothing to do.
    let mut again = coordinator(&h);
    again.cycle().unwrap();
    assert_eq!(std::fs::metadata(&snapshot).unwrap().ino(), compacted, "a restart rewrote the snapshot");
    let q = h.queue_json();
    assert_eq!(q["tasks"].as_array().unwrap().len(), 51);
    assert_eq!(q["counts"]["total"], 51, "{}", q["counts"]);
}

/// A backlog of tasks that can run now (more than the slots): the coordinator holds them apart
/// and each cycle decodes only what it dispatches. They are dispatched in priority, then age
/// order, cycle after cycle; a cancel of a held one applies; they are counted, written at a
/// compaction and read back by a coordinator started afresh.
#[test]
fn ready_tasks_beyond_the_slots_are_held_apart_and_dispatched_in_order() {
    use cortex::domain::task::model::Priority;
    let h = TestHome::new();
    h.cortex_ok(&["scheduler", "pause", "--reason", "test"]);
    // Budget for all of them (the default one covers ten).
    std::fs::write(
        h.join("coordination/token-budget.json"),
        r#"{"total": 1000000000, "used": 0, "available": 1000000000}"#,
    )
    .unwrap();
    let priorities = [Priority::Low, Priority::Medium, Priority::High, Priority::Critical];
    let mut added: Vec<(Priority, String)> = Vec::new();
    for i in 0..40 {
        let priority = priorities[(i * 7) % 4];
        let new = NewTask {
            description: format!("ready {i}"),
            command: vec!["true".into()],
            priority: Some(priority),
            ..NewTask::default()
        };
        added.push((priority, add_task(&store_of(&h), new).unwrap().task_id));
    }
    // The order the plan must follow: priority first, then the order they were added (age).
    let mut want: Vec<(Priority, String)> = added.clone();
    want.sort_by_key(|(priority, _)| std::cmp::Reverse(*priority));
    let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();

    let store = store_of(&h);
    let mut config = Config::load(store.home()).unwrap();
    config.scheduler.max_concurrent_dispatches = 4;
    let mut c = Coordinator::new(store.clone(), config.clone(), Box::new(SystemClock));
    c.reconcile_at_start().unwrap();
    assert_eq!(c.cycle().unwrap().folded, 40);
    assert_eq!(c.working_len(), 0, "paused: every ready task is held apart, none decoded");
    h.cortex_ok(&["scheduler", "resume"]);
    let r = c.cycle().unwrap();
    let first: Vec<String> = r.dispatched.iter().map(|d| d.task_id.clone()).collect();
    assert_eq!(first, want[..4], "the first four in priority, then age order");
    assert_eq!(c.working_len(), 4, "the working queue holds the dispatched tasks only");
    // A cancel of a held task (the CLI appends it to the journal) applies to it.
    let doomed = want[10].clone();
    h.cortex_ok(&["task", "cancel", &doomed]);
    let r = c.cycle().unwrap();
    assert_eq!(r.archived, 1, "the cancelled held task is archived");
    assert!(r.dispatched.is_empty(), "no slot is free");
    let q = h.queue_json();
    assert_eq!(q["counts"]["total"], 39, "held tasks are counted: {}", q["counts"]);
    assert_eq!(q["counts"]["queued"], 35, "{}", q["counts"]);
    // More slots, cycle after cycle (coordinators started afresh read the held tasks back from
    // the queue on disk): the rest follow in the same order, the cancelled one skipped.
    let mut order = first;
    for slots in [12, 24, 40] {
        config.scheduler.max_concurrent_dispatches = slots;
        let mut c = Coordinator::new(store.clone(), config.clone(), Box::new(SystemClock));
        c.reconcile_at_start().unwrap();
        order.extend(c.cycle().unwrap().dispatched.into_iter().map(|d| d.task_id));
    }
    let expected: Vec<String> = want.into_iter().filter(|id| *id != doomed).collect();
    assert_eq!(order, expected);
    h.cortex_ok(&["validate"]);
}

/// Adds a task that runs until the file it returns exists: a prerequisite the test completes.
fn add_gate(h: &TestHome) -> (String, std::path::PathBuf) {
    let release = h.join("release");
    let gate = NewTask {
        description: "gate".into(),
        command: vec!["sh".into(), "-c".into(), format!("until [ -e '{}' ]; do sleep 0.02; done", release.display())],
        ..NewTask::default()
    };
    (add_task(&store_of(h), gate).unwrap().task_id, release)
}

/// Tasks waiting for a prerequisite that is in the queue unfinished are held apart, blocked on
/// it, never decoded by a cycle: a cycle's working queue is what can move. They are written at a
/// compaction and read back by a restarted coordinator; a prerequisite cancelled fails its
/// dependents; one that completes releases them in that same cycle (a chain one link at a time),
/// and they run.
#[test]
fn tasks_blocked_on_a_prerequisite_are_held_apart_and_released_when_it_ends() {
    use crate::support::task::{show, start};
    let h = TestHome::new();
    std::fs::write(
        h.join("coordination/token-budget.json"),
        r#"{"total": 1000000000, "used": 0, "available": 1000000000}"#,
    )
    .unwrap();
    let (gate, release) = add_gate(&h);
    let dependents: Vec<String> = (0..20).map(|i| add(&h, &format!("dependent {i}"), None, Some(&gate))).collect();
    let link1 = add(&h, "link 1", None, Some(&gate));
    let link2 = add(&h, "link 2", None, Some(&link1));
    let late = add(&h, "late gate", Some(3600.0), None);
    let doomed: Vec<String> = (0..3).map(|i| add(&h, &format!("doomed {i}"), None, Some(&late))).collect();

    let _worker = start(&h, "worker");
    let mut c = coordinator(&h);
    let r = c.cycle().unwrap();
    assert_eq!(r.folded, 27);
    assert_eq!(r.dispatched.iter().map(|d| d.task_id.as_str()).collect::<Vec<_>>(), [gate.as_str()]);
    assert_eq!(c.working_len(), 1, "only the running gate is in the working queue");
    let q = h.queue_json();
    for id in dependents.iter().chain([&link1, &link2]).chain(&doomed) {
        assert_eq!(task(&q, id).unwrap()["waiting_reason"], "after", "{id}");
    }
    assert_eq!(q["counts"]["total"], 27, "held tasks are counted: {}", q["counts"]);
    // A restarted coordinator reads them back held (a dependent of a held dependent too).
    let mut c = coordinator(&h);
    assert!(c.cycle().unwrap().dispatched.is_empty());
    assert_eq!(c.working_len(), 1, "read back blocked, not into the working queue");

    // A prerequisite cancelled: its dependents fail, in that cycle.
    h.cortex_ok(&["task", "cancel", &late]);
    let r = c.cycle().unwrap();
    assert_eq!(r.archived, 4, "the cancelled gate and its three dependents");
    for id in &doomed {
        let t = show(&h, id);
        assert_eq!(t["status"], "failed", "{t}");
        assert!(t["result"]["error"].as_str().unwrap().contains(&late), "{t}");
    }

    // The gate completes: its dependents are released and dispatched in the cycle that folds
    // its end (four slots), the rest held ready; link 2 waits for link 1.
    std::fs::write(&release, b"").unwrap();
    wait_until(Duration::from_secs(30), "the gate's end folded", || {
        c.cycle().unwrap().ended.iter().any(|e| e.task_id == gate)
    });
    let q = h.queue_json();
    assert_eq!(task(&q, &link2).unwrap()["waiting_reason"], "after");
    let mut finished: Vec<String> = Vec::new();
    wait_until(Duration::from_secs(60), "every dependent and the chain completed", || {
        let r = c.cycle().unwrap();
        finished.extend(r.ended.iter().map(|e| e.task_id.clone()));
        assert!(c.working_len() <= 4, "no more than the running ones are decoded: {}", c.working_len());
        dependents.iter().chain([&link1, &link2]).all(|id| finished.contains(id))
    });
    for id in dependents.iter().chain([&link1, &link2]) {
        assert_eq!(show(&h, id)["status"], "completed", "{id}");
    }
    let pos = |id: &String| finished.iter().position(|f| f == id).unwrap();
    assert!(pos(&link1) < pos(&link2), "the chain ran in order");
    h.cortex_ok(&["validate"]);
}

/// A task released from waiting for its prerequisite meets its worker type's circuit breaker
/// like any other: the breakers are asked after the release, so an open breaker keeps it queued
/// (`circuit_breaker`) in the very cycle that folds its prerequisite's end.
#[test]
fn a_released_dependent_waits_for_its_types_open_breaker() {
    use crate::support::task::{show, start};
    let h = TestHome::new();
    let at = chrono::Utc::now();
    let breakers = serde_json::json!({"breakers": {"scan-worker": {"state": "open", "opened_at": at.to_rfc3339(),
        "half_open_at": (at + chrono::Duration::hours(1)).to_rfc3339(), "reason": "test",
        "failures_in_window": 5, "trips": 1}}, "updated_at": at.to_rfc3339()});
    std::fs::write(h.join("coordination/circuit-breakers.json"), breakers.to_string()).unwrap();
    let (gate, release) = add_gate(&h);
    let store = store_of(&h);
    let scan = NewTask {
        description: "scan after the gate".into(),
        command: vec!["true".into()],
        worker_type: Some("scan-worker".into()),
        after: Some(gate.clone()),
        ..NewTask::default()
    };
    let dependent = add_task(&store, scan).unwrap().task_id;
    let _worker = start(&h, "worker");
    let mut c = coordinator(&h);
    c.cycle().unwrap();
    assert_eq!(c.working_len(), 1, "the dependent is held blocked");
    std::fs::write(&release, b"").unwrap();
    let mut dispatched: Vec<String> = Vec::new();
    wait_until(Duration::from_secs(30), "the gate's end folded", || {
        let r = c.cycle().unwrap();
        dispatched.extend(r.dispatched.iter().map(|d| d.task_id.clone()));
        r.ended.iter().any(|e| e.task_id == gate)
    });
    c.cycle().unwrap();
    assert!(!dispatched.contains(&dependent), "dispatched past its type's open breaker");
    let t = show(&h, &dependent);
    assert_eq!((t["status"].as_str(), t["waiting_reason"].as_str()), (Some("queued"), Some("circuit_breaker")), "{t}");
}
