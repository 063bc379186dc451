//! The queue's snapshot + journal (`task::journal`) with the real binaries: the coordinator
//! SIGKILLed at a compaction (between the snapshot's replace and the journal's reset) and right
//! after appending a commit, again and again, loses no task and runs none twice; a torn journal
//! line is ignored and cut away by the next writer; a change shows in `task list --json` before
//! any compaction; a queue written before the journal loads; a backup of a home with a non-empty
//! journal restores every task.
use crate::support::task::*;
use crate::support::*;
use serde_json::Value;
use std::process::{Child, Stdio};

const JOURNAL: &str = "coordination/task-queue.journal.jsonl";

/// A task that records each run under the home and exits 0.
fn recorded() -> String {
    "mkdir -p $CORTEX_HOME/runs; echo $CORTEX_DISPATCH_ID >> $CORTEX_HOME/runs/$CORTEX_TASK_ID".to_string()
}

fn runs_of(h: &TestHome, id: &str) -> usize {
    std::fs::read_to_string(h.join(&format!("runs/{id}"))).map(|s| s.lines().count()).unwrap_or(0)
}

fn list(h: &TestHome, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["task", "list", "--json"];
    a.extend_from_slice(args);
    let v: Value = serde_json::from_str(&h.cortex_ok(&a)).unwrap();
    v["tasks"].as_array().cloned().unwrap_or_default()
}

fn generation(h: &TestHome) -> u64 {
    h.read_json("coordination/task-queue.json")["journal_generation"].as_u64().unwrap_or(0)
}

/// The coordinator started with `env`, its stderr piped (for `paused at`).
fn spawn_coordinator(h: &TestHome, env: &[(&str, &str)]) -> Child {
    let mut c = std::process::Command::new(bin("cortex-coordinator"));
    c.arg("--home").arg(h.path()).env_remove("CORTEX_HOME").env_remove("COMMIT_RELAY_HOME");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn coordinator")
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sigkill_of_the_coordinator_at_compactions_and_appends_loses_nothing() {
    let h = fast_home();
    h.set_config("scheduler", "max_concurrent_dispatches", "4");
    let _w = start(&h, "worker");
    let mut ids = Vec::new();
    let mut pauses = 0;
    // Every third round the kill comes right after a commit was appended (before its flush and
    // the spec renames); the others between a compaction's snapshot replace and journal reset.
    for round in 0..9 {
        for i in 0..6 {
            let cmd = recorded();
            let description = format!("r{round} t{i} {}", "x".repeat(300));
            ids.push(add(&h, &["--description", &description, "--max-attempts", "9", "--", "sh", "-c", &cmd]));
        }
        let point = if round % 3 == 2 { "queue-journal-appended" } else { "queue-compacted" };
        let mut c = spawn_coordinator(&h, &[("CORTEX_PAUSE_AT", point), ("CORTEX_COMPACT_MIN_BYTES", "2048")]);
        if wait_for_pause(&mut c, LONG) {
            pauses += 1;
        }
        kill(c);
        // Whatever the kill left, every reader sees one record per task.
        let now = list(&h, &["--all"]);
        for id in &ids {
            let n = now.iter().filter(|t| t["task_id"] == id.as_str()).count();
            assert_eq!(n, 1, "task {id} listed {n} times after round {round}");
        }
    }
    assert!(pauses >= 6, "the coordinator reached its pause points ({pauses} of 9)");
    let _c = start(&h, "coordinator");
    let tasks = wait_finished(&h, &ids);
    for t in &tasks {
        let id = t["task_id"].as_str().unwrap();
        assert_eq!(t["status"], "completed", "{t}");
        // A dispatch recorded just before a kill whose spec was never written is folded lost and
        // retried; what must never happen is two runs of one dispatch or a run beside another.
        let runs = runs_of(&h, id);
        assert!(runs >= 1, "task {id} ran");
        let dispatches = std::fs::read_to_string(h.join(&format!("runs/{id}"))).unwrap();
        let distinct: std::collections::HashSet<&str> = dispatches.lines().collect();
        assert_eq!(distinct.len(), runs, "a dispatch of {id} ran twice: {dispatches}");
    }
    // Snapshot and journal agree with what the coordinator holds: a restart reads the same queue.
    let before = list(&h, &["--all"]);
    drop(_c);
    let c = start(&h, "coordinator");
    let after = list(&h, &["--all"]);
    assert_eq!(before.len(), after.len());
    drop(c);
    let validate = h.cortex(&["validate"]);
    let text = String::from_utf8_lossy(&validate.stdout);
    assert!(!text.contains("malformed"), "{text}");
}

#[test]
fn a_change_is_listed_before_any_compaction_and_a_torn_line_is_ignored() {
    let h = fast_home();
    h.cortex_ok(&["scheduler", "pause"]);
    let c = start(&h, "coordinator");
    let a = add(&h, &["--description", "a", "--", "true"]);
    let b = add(&h, &["--description", "b", "--", "true"]);
    wait_until(LONG, "folded", || !h.join("coordination/task-intake.jsonl").exists());
    drop(c);
    let gen_before = generation(&h);
    assert!(gen_before > 0, "the first write gave the snapshot a generation");
    let snapshot = std::fs::read(h.join("coordination/task-queue.json")).unwrap();
    h.cortex_ok(&["task", "cancel", &a]);
    assert_eq!(std::fs::read(h.join("coordination/task-queue.json")).unwrap(), snapshot, "no compaction");
    let listed = list(&h, &["--all"]);
    let st = |id: &str| listed.iter().find(|t| t["task_id"] == id).map(|t| t["status"].clone());
    assert_eq!(st(&a), Some("cancelled".into()), "{listed:?}");
    assert_eq!(st(&b), Some("queued".into()));
    // A writer killed mid-append: a whole task line without its commit, then half a line.
    let journal = std::fs::read(h.join(JOURNAL)).unwrap();
    let g = generation(&h);
    let mut torn = format!(
        "{{\"generation\":{g},\"task\":{{\"task_id\":\"task-ghost\",\"description\":\"g\",\"priority\":\"low\",\
         \"status\":\"queued\",\"worker_type\":\"analysis-worker\",\"created_at\":\"2026-01-01T00:00:00Z\",\
         \"created_by\":\"x\",\"max_attempts\":1,\"budget\":1}}}}\n"
    )
    .into_bytes();
    torn.extend_from_slice(b"{\"generation\":");
    let mut bytes = journal.clone();
    bytes.extend_from_slice(&torn);
    std::fs::write(h.join(JOURNAL), &bytes).unwrap();
    let listed = list(&h, &["--all"]);
    assert!(listed.iter().all(|t| t["task_id"] != "task-ghost"), "an uncommitted line is not a task");
    assert_eq!(listed.len(), 2);
    // The next writer cuts the torn tail away before appending.
    h.cortex_ok(&["task", "cancel", &b]);
    let after = std::fs::read(h.join(JOURNAL)).unwrap();
    assert_eq!(&after[..journal.len()], &journal[..]);
    assert!(!String::from_utf8_lossy(&after).contains("task-ghost"));
    assert_eq!(list(&h, &["--all", "--status", "cancelled"]).len(), 2);
}

#[test]
fn a_queue_written_before_the_journal_loads_and_is_converted() {
    let h = fast_home();
    h.cortex_ok(&["scheduler", "pause"]);
    let old = r#"{
  "tasks": [
    {"task_id": "task-old-1", "description": "from before", "priority": "medium", "worker_type": "analysis-worker",
     "command": ["true"], "status": "queued", "created_at": "2026-01-01T00:00:00.000000Z", "created_by": "old",
     "attempts": 0, "max_attempts": 3, "budget": 10, "dispatches": []}
  ],
  "updated_at": "2026-01-01T00:00:00.000000Z"
}
"#;
    std::fs::write(h.join("coordination/task-queue.json"), old).unwrap();
    assert_eq!(list(&h, &[]).len(), 1);
    let c = start(&h, "coordinator");
    let new = add(&h, &["--description", "new", "--", "true"]);
    wait_until(LONG, "folded", || generation(&h) > 0 && !h.join("coordination/task-intake.jsonl").exists());
    let ids: Vec<String> = list(&h, &[]).iter().map(|t| t["task_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, vec!["task-old-1".to_string(), new]);
    drop(c);
    // Operators' jq over the snapshot still works (one task per line, the same fields).
    let snap = h.read_json("coordination/task-queue.json");
    assert!(snap["tasks"].as_array().unwrap().iter().any(|t| t["task_id"] == "task-old-1"));
}

#[test]
fn backup_and_restore_of_a_home_with_a_journal_keep_every_task() {
    let h = fast_home();
    h.cortex_ok(&["scheduler", "pause"]);
    let c = start(&h, "coordinator");
    let ids: Vec<String> = (0..5).map(|i| add(&h, &["--description", &format!("t{i}"), "--", "true"])).collect();
    wait_until(LONG, "folded", || list(&h, &[]).len() == 5 && !h.join("coordination/task-intake.jsonl").exists());
    drop(c);
    h.cortex_ok(&["task", "cancel", &ids[0]]);
    h.cortex_ok(&["task", "cancel", &ids[1]]);
    assert!(std::fs::metadata(h.join(JOURNAL)).unwrap().len() > 0, "the cancels are in the journal");
    let at_backup = list(&h, &["--all"]);
    h.cortex_ok(&["backup"]);
    // Lost after the backup: the queue reset by hand, the journal gone.
    std::fs::write(h.join("coordination/task-queue.json"), r#"{"tasks": []}"#).unwrap();
    std::fs::remove_file(h.join(JOURNAL)).unwrap();
    assert!(list(&h, &["--all"]).is_empty());
    h.cortex_ok(&["restore", "--latest", "--yes"]);
    let restored = list(&h, &["--all"]);
    let key = |v: &[Value]| {
        let mut k: Vec<(String, String)> =
            v.iter().map(|t| (t["task_id"].as_str().unwrap().into(), t["status"].as_str().unwrap().into())).collect();
        k.sort();
        k
    };
    assert_eq!(key(&restored), key(&at_backup));
    assert_eq!(restored.iter().filter(|t| t["status"] == "cancelled").count(), 2);
}
