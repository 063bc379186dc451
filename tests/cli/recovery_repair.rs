//! `cortex repair` on each kind of corruption: nothing is thrown away, the result validates.
use crate::support::*;

fn task(id: &str) -> serde_json::Value {
    serde_json::json!({
        "task_id": id, "description": format!("task {id}"), "priority": "high", "worker_type": "scan-worker",
        "command": [], "status": "queued", "created_at": "2026-01-01T00:00:00Z", "created_by": "ops",
        "attempts": 0, "max_attempts": 3, "budget": 500, "dispatches": []
    })
}

#[test]
fn jsonl_bad_lines_move_to_rejected_and_good_lines_keep_their_order() {
    let h = TestHome::new();
    for i in 0..3 {
        h.cortex_ok(&["event", "emit", "--type", "e", "--message", &format!("good {i}")]);
    }
    let path = h.join("coordination/dashboard-events.jsonl");
    let good = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let corrupted = format!("{}\n{{not json\n{}\n\"a string, not an event\"\n{}\n", lines[0], lines[1], lines[2]);
    std::fs::write(&path, &corrupted).unwrap();
    assert!(!h.cortex(&["validate"]).status.success());

    let dry = h.cortex(&["repair", "--dry-run"]);
    assert!(String::from_utf8_lossy(&dry.stdout).contains("[WOULD FIX] coordination/dashboard-events.jsonl"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), corrupted, "dry run changed the file");

    let out = h.cortex_ok(&["repair"]);
    assert!(out.contains("2 malformed line(s) (line 2, 4)"), "{out}");
    let repaired = std::fs::read_to_string(&path).unwrap();
    assert!(repaired.starts_with(&good), "good lines kept in order:\n{repaired}");
    let rejected = std::fs::read_to_string(h.join("coordination/dashboard-events.jsonl.rejected")).unwrap();
    assert_eq!(rejected, "{not json\n\"a string, not an event\"\n");
    h.cortex_ok(&["validate"]);
    assert!(!h.events_of("file_repaired").is_empty());
}

#[test]
fn truncated_task_queue_is_salvaged_with_a_corrupt_copy() {
    let h = TestHome::new();
    let full =
        serde_json::to_string_pretty(&serde_json::json!({"tasks": [task("t-1"), task("t-2"), task("t-3")]})).unwrap();
    let cut = &full[..full.rfind("t-3").unwrap() + 10];
    let path = h.join("coordination/task-queue.json");
    std::fs::write(&path, cut).unwrap();

    let out = h.cortex_ok(&["repair"]);
    assert!(out.contains("2 task(s) salvaged"), "{out}");
    assert_eq!(std::fs::read_to_string(h.join("coordination/task-queue.json.corrupt")).unwrap(), cut);
    let q = h.read_json("coordination/task-queue.json");
    let ids: Vec<&str> = q["tasks"].as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["t-1", "t-2"]);
    h.cortex_ok(&["validate"]);

    // A queue that parses but holds one broken task: the rest is kept, the broken one rejected.
    let mut bad = task("t-bad");
    bad["priority"] = serde_json::json!("whenever");
    std::fs::write(&path, serde_json::json!({"tasks": [task("t-1"), bad, task("t-4")]}).to_string()).unwrap();
    h.cortex_ok(&["repair"]);
    let q = h.read_json("coordination/task-queue.json");
    assert_eq!(q["tasks"].as_array().unwrap().len(), 2);
    let rejected = std::fs::read_to_string(h.join("coordination/task-queue.json.rejected")).unwrap();
    assert!(rejected.contains("t-bad"));
    // The first .corrupt copy is never overwritten.
    assert_eq!(std::fs::read_to_string(h.join("coordination/task-queue.json.corrupt")).unwrap(), cut);
    h.cortex_ok(&["validate"]);
}

#[test]
fn missing_essentials_are_created_and_bad_budget_and_scheduler_rebuilt() {
    let h = TestHome::new();
    std::fs::remove_file(h.join("coordination/task-queue.json")).unwrap();
    std::fs::remove_file(h.join("coordination/dashboard-events.jsonl")).unwrap();
    std::fs::write(h.join("coordination/token-budget.json"), "{\"total\": 777000, \"used\": 12").unwrap();
    std::fs::write(h.join("coordination/scheduler-state.json"), "garbage").unwrap();
    let out = h.cortex_ok(&["repair"]);
    assert!(out.contains("coordination/task-queue.json: missing: created from its default"), "{out}");
    assert_eq!(h.read_json("coordination/task-queue.json")["tasks"], serde_json::json!([]));
    assert!(h.join("coordination/dashboard-events.jsonl").exists());
    let b = h.read_json("coordination/token-budget.json");
    assert_eq!(
        (b["total"].as_u64(), b["used"].as_u64(), b["available"].as_u64()),
        (Some(777000), Some(12), Some(776988))
    );
    assert_eq!(
        std::fs::read_to_string(h.join("coordination/token-budget.json.corrupt")).unwrap(),
        "{\"total\": 777000, \"used\": 12"
    );
    assert_eq!(h.read_json("coordination/scheduler-state.json")["state"], "paused", "rebuilt paused, not running");
    h.cortex_ok(&["validate"]);
}

#[test]
fn unparsable_worker_specs_are_quarantined_and_config_problems_reported() {
    let h = TestHome::new();
    std::fs::write(h.join("coordination/worker-specs/active/d-broken.json"), "{\"dispatch_id\": ").unwrap();
    std::fs::write(h.join("coordination/config/worker-types.json"), "{nope").unwrap();
    let out = h.cortex(&["repair"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a problem left for the operator exits 1: {stdout}");
    assert!(
        stdout.contains("[MANUAL] coordination/config/worker-types.json") && stdout.contains("restore-defaults"),
        "{stdout}"
    );
    assert!(!h.join("coordination/worker-specs/active/d-broken.json").exists());
    let q = std::fs::read_to_string(h.join("coordination/worker-specs/quarantine/active__d-broken.json")).unwrap();
    assert_eq!(q, "{\"dispatch_id\": ");
    assert_eq!(
        std::fs::read_to_string(h.join("coordination/config/worker-types.json")).unwrap(),
        "{nope",
        "config untouched"
    );
    h.cortex_ok(&["config", "restore-defaults", "--file", "worker-types"]);
    h.cortex_ok(&["validate"]);
    assert_eq!(h.cortex(&["repair"]).status.code(), Some(0));
}

#[test]
fn restore_defaults_keeps_the_old_content() {
    let h = TestHome::new();
    let path = h.join("coordination/moe/router-config.json");
    let default = std::fs::read(&path).unwrap();
    let custom = r#"{"rules": [{"pattern": "x", "worker_type": "scan-worker", "confidence": 0.9}]}"#;
    std::fs::write(&path, custom).unwrap();
    let out = h.cortex_ok(&["config", "restore-defaults", "--file", "router-config.json"]);
    assert!(out.contains("reset to its default"), "{out}");
    assert_eq!(std::fs::read(&path).unwrap(), default);
    let kept: Vec<_> = std::fs::read_dir(h.join("coordination/moe"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("before-defaults"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read_to_string(kept[0].path()).unwrap(), custom);
    let out = h.cortex(&["config", "restore-defaults", "--file", "nonsense"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("worker-types.json"));
    h.cortex_ok(&["config", "restore-defaults"]);
    assert_eq!(h.events_of("config_defaults_restored").len(), 1);
}

/// A writer SIGKILLed between creating its temporary file and the rename leaves `.tmp.*` behind:
/// `cortex repair` removes it (and reports it), leaves a fresh one of a live writer alone.
#[test]
fn temporaries_of_killed_writers_are_swept() {
    let h = TestHome::new();
    // A writer that is surely gone: a child that ran and was reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = h.join(&format!("coordination/.tmp.task-queue.json.{dead}.0123456789abcdef"));
    let f = std::fs::File::create(&stale).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(600)).unwrap();
    let fresh = h.join(&format!("coordination/.tmp.token-budget.json.{}.0123456789abcdef", std::process::id()));
    std::fs::write(&fresh, b"{}").unwrap();

    let dry = h.cortex_ok(&["repair", "--dry-run"]);
    assert!(dry.contains("temporary file of a writer that died"), "{dry}");
    assert!(stale.exists(), "a dry run removes nothing");
    let out = h.cortex_ok(&["repair"]);
    assert!(out.contains(&format!(".tmp.task-queue.json.{dead}")), "{out}");
    assert!(!stale.exists(), "the dead writer's temporary file is gone");
    assert!(fresh.exists(), "a live writer's fresh temporary file stays");
}

/// Repairing the intake takes the queue's lock, then the intake's: the order the coordinator's
/// fold takes them in (it took them the other way round, and in a debug build the lock-order
/// check stopped `cortex repair` with a panic naming both).
#[test]
fn the_intake_is_repaired_under_the_queue_lock_then_its_own() {
    let h = TestHome::new();
    h.cortex_ok(&["task", "add", "--description", "first", "--", "true"]);
    let path = h.join("coordination/task-intake.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{not json\n");
    std::fs::write(&path, &bytes).unwrap();
    let out = h.cortex_ok(&["repair"]);
    assert!(out.contains("task-intake.jsonl"), "{out}");
    let rejected = std::fs::read_to_string(h.join("coordination/task-intake.jsonl.rejected")).unwrap();
    assert_eq!(rejected, "{not json\n");
    h.cortex_ok(&["task", "add", "--description", "second", "--", "true"]);
    h.cortex_ok(&["validate"]);
}

/// A coordination file planted as a symbolic link (to a file of someone else's) is reported,
/// never read through: nothing of the target is copied into the home (`.rejected`, `.corrupt`)
/// and the target is left as it was (issue #16, item 4).
#[test]
fn a_linked_file_is_reported_not_read_or_copied() {
    let h = TestHome::new();
    let outside = tempfile::tempdir().unwrap();
    let secret = "export DB_PASSWORD=hunter2\n{not a task}\n";
    let decoy = outside.path().join("bashrc");
    std::fs::write(&decoy, secret).unwrap();
    let json_decoy = outside.path().join("notes.txt");
    std::fs::write(&json_decoy, "private notes, not JSON").unwrap();
    for (rel, target) in
        [("coordination/task-intake.jsonl", &decoy), ("coordination/circuit-breakers.json", &json_decoy)]
    {
        let _ = std::fs::remove_file(h.join(rel));
        std::os::unix::fs::symlink(target, h.join(rel)).unwrap();
    }
    let out = h.cortex(&["repair"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("task-intake.jsonl") && text.contains("symbolic link"), "{text}");
    assert_eq!(std::fs::read_to_string(&decoy).unwrap(), secret);
    assert_eq!(std::fs::read_to_string(&json_decoy).unwrap(), "private notes, not JSON");
    let coordination = std::fs::read_dir(h.join("coordination")).unwrap();
    for entry in coordination.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".rejected") && !name.contains(".corrupt"), "{name} was written from a link's target");
    }
    assert!(std::fs::symlink_metadata(h.join("coordination/task-intake.jsonl")).unwrap().file_type().is_symlink());
}
