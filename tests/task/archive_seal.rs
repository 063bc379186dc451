//! SIGKILL of the coordinator in the middle of sealing the task archive (`CORTEX_PAUSE_AT`, debug
//! builds): after its restart every task is archived exactly once — one line in the segments and
//! the active file together — and `task show` / `task list --all` report each once, with every
//! sealed segment matching its index.
use crate::support::task::*;
use crate::support::*;
use cortex::domain::task::archive::segment;
use serde_json::Value;
use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Command, Stdio};

/// Starts the coordinator paused at `point` (it prints `paused at <point>` on stderr there) and
/// waits until it is there.
fn coordinator_paused_at(h: &TestHome, point: &str) -> std::process::Child {
    let mut child = Command::new(bin("cortex-coordinator"))
        .arg("--home")
        .arg(h.path())
        .env_remove("CORTEX_HOME")
        .env_remove("COMMIT_RELAY_HOME")
        .env("CORTEX_PAUSE_AT", point)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the coordinator");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("paused at") {
                let _ = tx.send(line);
            }
        }
    });
    match rx.recv_timeout(LONG) {
        Ok(line) => assert!(line.contains(point), "{line}"),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the coordinator never reached {point}");
        }
    }
    child
}

/// Every archived line of each task id, over the sealed segments and the active file.
fn archived_lines(h: &TestHome) -> HashMap<String, usize> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(h.join("coordination/task-archive"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl") && p.file_name().unwrap() != "retried.jsonl")
                .collect()
        })
        .unwrap_or_default();
    files.push(h.join("coordination/task-archive.jsonl"));
    let mut out = HashMap::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap_or_default().lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                *out.entry(v["task_id"].as_str().unwrap_or_default().to_string()).or_default() += 1;
            }
        }
    }
    out
}

fn kill_during_seal_loses_and_doubles_nothing(point: &str) {
    let h = fast_home();
    // A seal every few tasks.
    h.set_config("archive", "segment_bytes", "4096");
    let ids: Vec<String> = (0..40).map(|i| add(&h, &["--description", &format!("seal {i}"), "--", "true"])).collect();
    let _w = start(&h, "worker");
    let mut paused = coordinator_paused_at(&h, point);
    let _ = paused.kill();
    let _ = paused.wait();
    let _c = start(&h, "coordinator");
    let finished = wait_finished(&h, &ids);
    assert!(finished.iter().all(|t| t["status"] == "completed"), "{finished:?}");
    // Archived exactly once: no line lost, none appended again after the restart.
    wait_until(LONG, "every task archived", || {
        let lines = archived_lines(&h);
        ids.iter().all(|id| lines.contains_key(id))
    });
    let lines = archived_lines(&h);
    for id in &ids {
        assert_eq!(lines.get(id), Some(&1), "task {id}: {lines:?}");
    }
    // What the operator sees: each task once, completed.
    let all: Value = serde_json::from_str(&h.cortex_ok(&["task", "list", "--all", "--json"])).unwrap();
    let listed: Vec<&str> = all["tasks"].as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap()).collect();
    for id in &ids {
        assert_eq!(listed.iter().filter(|l| **l == id.as_str()).count(), 1, "{id} in {listed:?}");
        assert_eq!(show(&h, id)["status"], "completed");
    }
    // Sealed segments match their indexes, and more than one seal happened.
    let home = cortex::Home::at(h.path());
    let store = cortex::store::Store::new(home);
    let segs = segment::list(&store);
    assert!(segs.len() >= 2, "{segs:?}");
    for s in &segs {
        assert_eq!(segment::check(s), Vec::<String>::new(), "{s:?}");
    }
    // A page at a time walks the same tasks.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["task", "list", "--all", "--json", "--limit", "7"];
        if let Some(a) = &after {
            args.extend(["--after-id", a.as_str()]);
        }
        let page: Value = serde_json::from_str(&h.cortex_ok(&args)).unwrap();
        let page: Vec<String> =
            page["tasks"].as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap().to_string()).collect();
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        paged.extend(page);
    }
    let mut sorted = listed.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    sorted.sort();
    assert_eq!(paged, sorted);
}

#[test]
fn sigkill_after_the_index_is_written_before_the_rename() {
    kill_during_seal_loses_and_doubles_nothing("archive-seal-index-written");
}

#[test]
fn sigkill_after_the_rename_before_retention() {
    kill_during_seal_loses_and_doubles_nothing("archive-seal-renamed");
}

/// A backup holds the sealed segments, their indexes and the catalog; a restore brings them back
/// and the archived tasks are found through them again.
#[test]
fn a_backup_and_restore_bring_the_sealed_segments_back() {
    let h = TestHome::new();
    let line = |i: usize| {
        serde_json::json!({
            "task_id": format!("task-20260101000000000-{i:07}"), "description": "old", "priority": "medium",
            "worker_type": "shell", "status": if i.is_multiple_of(5) { "failed" } else { "completed" },
            "completed_at": "2026-01-01T00:00:01Z", "created_at": "2026-01-01T00:00:00Z", "created_by": "test",
            "attempts": 1, "max_attempts": 1, "budget": 10,
        })
        .to_string()
    };
    for chunk in 0..3 {
        let text: String = (chunk * 50..chunk * 50 + 50).map(|i| line(i) + "\n").collect();
        std::fs::write(h.join("coordination/task-archive.jsonl"), text).unwrap();
        h.cortex_ok(&["task", "seal-archive"]);
    }
    assert!(h.join("coordination/task-archive/seg-000003.jsonl").is_file());
    let out = h.cortex_ok(&["backup"]);
    assert!(out.contains("Backup created: "), "{out}");
    std::fs::remove_dir_all(h.join("coordination/task-archive")).unwrap();
    assert!(!h.cortex(&["task", "show", "task-20260101000000000-0000000"]).status.success());
    let out = h.cortex_ok(&["restore", "--latest", "--yes"]);
    assert!(out.contains("Restore complete"), "{out}");
    for rel in ["seg-000001.jsonl", "seg-000001.idx", "seg-000003.jsonl", "seg-000003.idx", "catalog.json"] {
        assert!(h.join(&format!("coordination/task-archive/{rel}")).is_file(), "{rel} restored");
    }
    assert_eq!(show(&h, "task-20260101000000000-0000000")["status"], "failed");
    let failed: Value =
        serde_json::from_str(&h.cortex_ok(&["task", "list", "--all", "--status", "failed", "--json"])).unwrap();
    assert_eq!(failed["count"], 30);
}
