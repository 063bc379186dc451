//! A backup taken while real writers run restores to a consistent state. Writers are processes:
//! this test binary re-run with `CORTEX_BACKUP_LOAD_WRITER` set does read-modify-writes of the
//! queue, the budget and the worker specs under the documented locks (task-queue → token-budget →
//! worker-specs), and many `cortex event emit` processes append events. Each archive is restored
//! into a fresh home, which must pass `cortex validate` and the cross-file invariants.
use crate::support::reexec::test_name;
use crate::support::*;
use cortex::domain::task::model::{DispatchRecord, DispatchState, Priority, Task, TaskQueue, TaskState, TokenBudget};
use cortex::store::home::SpecBucket;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const WRITER_ENV: &str = "CORTEX_BACKUP_LOAD_WRITER";
const TEST_NAME: &str = "backup_under_load_restores_a_consistent_state";
const BUDGET: u64 = 100;
const MAX_QUEUE: usize = 150;

fn spec_path(home: &cortex::Home, bucket: SpecBucket, id: &str) -> PathBuf {
    home.worker_specs(bucket).join(format!("{id}.json"))
}

/// One writer process: `home|add` or `home|finish`, until `home/stop-writers` exists.
fn writer(arg: &str) {
    let (home, role) = arg.split_once('|').unwrap();
    let home = cortex::Home::at(home);
    let store = cortex::Store::new(home.clone()).with_lock_timeout(Duration::from_secs(60)).with_source("load-writer");
    let stop = home.join("stop-writers");
    let mut n = 0u64;
    // Stop with the test too (a failed test must not leave writers behind).
    let parent = nix::unistd::getppid();
    while !stop.exists() && nix::unistd::getppid() == parent {
        let q = store.lock_named(cortex::store::LockName::TaskQueue).unwrap();
        let b = store.lock_named(cortex::store::LockName::TokenBudget).unwrap();
        let s = store.lock_named(cortex::store::LockName::WorkerSpecs).unwrap();
        let now = chrono::Utc::now();
        if role == "add" {
            let task_id = cortex::domain::task::model::new_id("task");
            let dispatch_id = format!("d{task_id}");
            let added = store
                .update_locked::<TaskQueue, _>(&q, |queue| {
                    if queue.tasks.len() >= MAX_QUEUE {
                        return Ok(false);
                    }
                    queue.tasks.push(Task {
                        task_id: task_id.clone(),
                        description: format!("load {n}"),
                        priority: Priority::Medium,
                        worker_type: "scan-worker".into(),
                        command: vec!["true".into()],
                        state: TaskState::InProgress { started_at: now, dispatch_id: dispatch_id.clone() },
                        created_at: now,
                        created_by: "load".into(),
                        attempts: 1,
                        max_attempts: 3,
                        budget: BUDGET,
                        routing: None,
                        timeout_seconds: None,
                        after: None,
                        not_before: None,
                        result: None,
                        dispatches: vec![dispatch_id.clone()],
                        schedule_id: None,
                        repo: None,
                        executor: None,
                        slurm: None,
                    });
                    Ok(true)
                })
                .unwrap();
            if added {
                store
                    .update_locked::<TokenBudget, _>(&b, |budget| {
                        budget.reservations.insert(dispatch_id.clone(), BUDGET);
                        budget.recompute();
                        Ok(())
                    })
                    .unwrap();
                let rec = DispatchRecord {
                    dispatch_id: dispatch_id.clone(),
                    task_id,
                    worker_type: "scan-worker".into(),
                    state: DispatchState::Starting,
                    dispatched_at: now,
                    attempt: 1,
                    command: vec!["true".into()],
                    budget_reserved: BUDGET,
                    timeout_seconds: 60.0,
                    stdout_path: "o".into(),
                    stderr_path: "e".into(),
                    heartbeat: None,
                    tokens_used: None,
                    executor: Default::default(),
                    slurm: None,
                };
                let bytes = serde_json::to_vec(&rec).unwrap();
                cortex::store::atomic::write_atomic(&spec_path(&home, SpecBucket::Active, &dispatch_id), &bytes)
                    .unwrap();
            }
        } else {
            let done = store
                .update_locked::<TaskQueue, _>(&q, |queue| {
                    Ok(if queue.tasks.is_empty() { None } else { Some(queue.tasks.remove(0)) })
                })
                .unwrap();
            if let Some(task) = done {
                let dispatch_id = task.dispatches[0].clone();
                store
                    .update_locked::<TokenBudget, _>(&b, |budget| {
                        budget.reservations.remove(&dispatch_id);
                        budget.used += BUDGET;
                        budget.recompute();
                        Ok(())
                    })
                    .unwrap();
                let active = spec_path(&home, SpecBucket::Active, &dispatch_id);
                let mut rec: DispatchRecord = serde_json::from_slice(&std::fs::read(&active).unwrap()).unwrap();
                rec.state = DispatchState::Completed { ended_at: now, exit_code: 0, duration_s: 0.1 };
                cortex::store::atomic::write_atomic(&active, &serde_json::to_vec(&rec).unwrap()).unwrap();
                cortex::store::atomic::rename_durable(&active, &spec_path(&home, SpecBucket::Completed, &dispatch_id))
                    .unwrap();
            }
        }
        drop((s, b, q));
        n += 1;
    }
}

fn spawn_writer(home: &Path, role: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &test_name(module_path!(), TEST_NAME), "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, format!("{}|{role}", home.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn spec_ids(home: &Path, bucket: &str) -> BTreeSet<String> {
    std::fs::read_dir(home.join("coordination/worker-specs").join(bucket))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().trim_end_matches(".json").to_string())
        .collect()
}

/// The cross-file invariants the writers keep inside their critical sections.
fn check_invariants(h: &TestHome, what: &str) -> (usize, usize) {
    let queue: TaskQueue = serde_json::from_value(h.queue_json()).unwrap();
    let budget: TokenBudget = serde_json::from_value(h.read_json("coordination/token-budget.json")).unwrap();
    let queued: BTreeSet<String> = queue.tasks.iter().map(|t| t.dispatches[0].clone()).collect();
    let active = spec_ids(h.path(), "active");
    let completed = spec_ids(h.path(), "completed");
    assert_eq!(queued, active, "{what}: queue and active specs disagree");
    assert_eq!(budget.reservations.keys().cloned().collect::<BTreeSet<_>>(), queued, "{what}: reservations");
    assert_eq!(budget.used, BUDGET * completed.len() as u64, "{what}: used vs completed specs");
    assert_eq!(budget.available, budget.total - budget.used - budget.reserved(), "{what}: available");
    (queued.len(), completed.len())
}

#[test]
fn backup_under_load_restores_a_consistent_state() {
    if let Ok(arg) = std::env::var(WRITER_ENV) {
        writer(&arg);
        return;
    }
    let backups: usize = std::env::var("CORTEX_LOAD_BACKUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let h = TestHome::new();
    std::fs::write(
        h.join("coordination/token-budget.json"),
        r#"{"total": 1000000000, "used": 0, "available": 1000000000}"#,
    )
    .unwrap();
    let mut writers: Vec<_> = ["add", "add", "finish"].iter().map(|r| spawn_writer(h.path(), r)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let emitters: Vec<_> = (0..2)
        .map(|i| {
            let stop = stop.clone();
            let home = h.path().to_path_buf();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let st = std::process::Command::new(bin("cortex"))
                        .args(["--home", &home.display().to_string(), "event", "emit", "--type", "load"])
                        .args(["--message", &format!("emitter {i} event {n}")])
                        .stdout(Stdio::null())
                        .status()
                        .unwrap();
                    assert!(st.success());
                    n += 1;
                }
                n
            })
        })
        .collect();
    wait_until(Duration::from_secs(30), "writers made progress", || spec_ids(h.path(), "completed").len() >= 5);

    let mut archives = Vec::new();
    let mut locked_ms = Vec::new();
    for _ in 0..backups {
        let out = h.cortex_ok(&["--json", "backup", "--keep", "0"]);
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        locked_ms.push(r["locked_ms"].as_u64().unwrap());
        archives.push(PathBuf::from(r["path"].as_str().unwrap()));
    }
    std::fs::write(h.join("stop-writers"), "").unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in &mut writers {
        assert!(w.wait().unwrap().success(), "a writer failed");
    }
    let emitted: usize = emitters.into_iter().map(|t| t.join().unwrap()).sum();
    check_invariants(&h, "live home");

    let mut seen = BTreeSet::new();
    for a in &archives {
        let fresh = TestHome::new();
        fresh.cortex_ok(&["restore", "--file", &a.display().to_string(), "--yes"]);
        let out = fresh.cortex(&["validate"]);
        assert!(out.status.success(), "restored {a:?} does not validate: {}", String::from_utf8_lossy(&out.stdout));
        seen.insert(check_invariants(&fresh, &a.display().to_string()));
    }
    assert!(seen.len() > 1, "the writers never changed anything between backups: {seen:?}");
    eprintln!("load: {emitted} events emitted, snapshot lock hold times (ms): {locked_ms:?}, states seen: {seen:?}");
}
