//! Each coordination file corrupted in turn (truncated, not JSON, a field of the wrong type):
//! `cortex validate` names it ([CORRUPT]/[INVALID], with the JSON pointer) and exits 1; a writer
//! in another process (the real `Store::update`) refuses and leaves the bad file exactly as it
//! was; a copy of the bad bytes is kept under coordination/quarantine/; a `file_quarantined`
//! event records file, pointer and copy. The event log (JSONL) is checked line by line instead:
//! bad lines are named by number (and JSON pointer), and an append keeps them as they are.

use crate::support::reexec::{self, child, param, param_name, report};
use crate::support::*;
use cortex::domain::scheduler_state::SchedulerState;
use cortex::domain::task::model::{TaskQueue, TokenBudget};
use cortex::store::Document;
use cortex::store::files::{self, CoordFile};
use cortex::{Home, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Any registered coordination file as an untyped document: `Raw<I>` is `files::ALL[I]`.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct Raw<const I: usize>(Value);

impl<const I: usize> Document for Raw<I> {
    const FILE: &'static CoordFile = files::ALL[I];
}

/// Sets the field at `pointer` (a valid value: the schema is checked before the write).
fn touch_raw<const I: usize>(store: &Store, pointer: &str, value: Value) -> cortex::Result<()> {
    store.update::<Raw<I>, _>(|d| {
        if let Some(slot) = d.0.pointer_mut(pointer) {
            *slot = value;
        }
        Ok(())
    })
}

/// Child: one read-modify-write of coordination/FILE through the store; reports its error.
#[test]
fn child_writer() {
    if reexec::role().as_deref() != Some("writer") {
        return;
    }
    let store = Store::new(Home::at(param::<String>("HOME"))).with_source("test-writer");
    let rel: String = param("FILE");
    let now = chrono::Utc::now();
    let result = match rel.as_str() {
        "task-queue.json" => store.update::<TaskQueue, _>(|q| {
            q.updated_at = Some(now);
            Ok(())
        }),
        "token-budget.json" => store.update::<TokenBudget, _>(|b| {
            b.used += 1;
            b.recompute();
            Ok(())
        }),
        "scheduler-state.json" => store.update::<SchedulerState, _>(|s| {
            s.updated_at = Some(now);
            Ok(())
        }),
        other => {
            let (pointer, value): (String, String) = (param("POINTER"), param("VALUE"));
            let value: Value = serde_json::from_str(&value).expect("VALUE is JSON");
            match files::ALL.iter().position(|f| f.rel == other).expect("a registered file") {
                5 => touch_raw::<5>(&store, &pointer, value),
                6 => touch_raw::<6>(&store, &pointer, value),
                7 => touch_raw::<7>(&store, &pointer, value),
                8 => touch_raw::<8>(&store, &pointer, value),
                i => panic!("no writer for files::ALL[{i}] ({other})"),
            }
        }
    };
    match result {
        Ok(()) => report("ok"),
        Err(e) => report(format!("error {e}")),
    }
}

/// The JSON files a fresh home has, with a field, a value of the wrong type for it, and a good
/// value the untyped writer sets.
const CASES: [(&CoordFile, &str, &str, &str); 7] = [
    (files::TASK_QUEUE, "/tasks", "\"none\"", ""),
    (files::TOKEN_BUDGET, "/total", "\"lots\"", ""),
    (files::SCHEDULER_STATE, "/paused", "\"no\"", ""),
    (files::WORKER_TYPES, "/worker_types/scan-worker/default_budget", "\"many\"", "1234"),
    (files::HEARTBEAT_POLICY, "/require_heartbeat", "\"yes\"", "true"),
    (files::RESTART_POLICY, "/backoff/jitter", "0", "true"),
    (files::ROUTER_CONFIG, "/rules/0/confidence", "\"high\"", "0.95"),
];

fn writer(h: &TestHome, case: (&CoordFile, &str, &str, &str)) -> std::process::Output {
    let (file, pointer, _, good) = case;
    child(module_path!(), "child_writer", "writer")
        .env(param_name("HOME"), h.path())
        .env(param_name("FILE"), file.rel)
        .env(param_name("POINTER"), pointer)
        .env(param_name("VALUE"), good)
        .output()
        .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Truncated,
    NotJson,
    WrongType,
}

fn damaged(original: &[u8], damage: Damage, pointer: &str, wrong: &str) -> Vec<u8> {
    match damage {
        Damage::Truncated => original[..original.len() / 2].to_vec(),
        Damage::NotJson => b"<html><body>502 Bad Gateway</body></html>\n".to_vec(),
        Damage::WrongType => {
            let mut v: Value = serde_json::from_slice(original).unwrap();
            *v.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} in the default")) =
                serde_json::from_str(wrong).unwrap();
            serde_json::to_vec_pretty(&v).unwrap()
        }
    }
}

fn corrupt_each_file(damage: Damage) {
    let h = TestHome::new();
    for case in CASES {
        let (file, pointer, wrong, _) = case;
        let rel = format!("coordination/{}", file.rel);
        let path = h.join(&rel);
        let original = std::fs::read(&path).unwrap();
        let bad = damaged(&original, damage, pointer, wrong);
        std::fs::write(&path, &bad).unwrap();
        let what = format!("{rel} {damage:?}");

        // validate names the file, the verdict and (for a schema break) the pointer.
        let out = h.cortex(&["validate"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{what}: validate must exit 1:\n{stdout}");
        let tag = if matches!(damage, Damage::WrongType) { "[INVALID]" } else { "[CORRUPT]" };
        assert!(stdout.contains(&format!("{tag} {rel}\n")), "{what}: validate must say {tag} {rel}:\n{stdout}");
        if matches!(damage, Damage::WrongType) {
            assert!(stdout.contains(&format!("at {pointer}:")), "{what}: validate must name {pointer}:\n{stdout}");
        }
        let bad_lines = stdout.lines().filter(|l| l.starts_with('[') && !l.starts_with("[OK]")).count();
        assert_eq!(bad_lines, 1, "{what}: only the damaged file is reported:\n{stdout}");

        // A writer in another process refuses and does not overwrite it.
        let out = writer(&h, case);
        let lines = reexec::results(&format!("writer of {what}"), &out);
        let err = lines[0].strip_prefix("error ").unwrap_or_else(|| panic!("{what}: the writer must fail: {lines:?}"));
        assert!(err.contains(&path.display().to_string()), "{what}: the error names the file: {err}");
        if matches!(damage, Damage::WrongType) {
            assert!(err.contains(&format!("invalid at {pointer}")), "{what}: the error names the field: {err}");
        }
        assert!(err.contains("coordination/quarantine/"), "{what}: the error says where the copy is: {err}");
        assert_eq!(std::fs::read(&path).unwrap(), bad, "{what}: the bad file must not be overwritten");

        // The quarantine copy and the event.
        let events = h.events_of("file_quarantined");
        let ev = events.iter().find(|e| e["data"]["file"] == rel.as_str()).unwrap_or_else(|| {
            panic!("{what}: no file_quarantined event for {rel}: {events:?}");
        });
        let copy = h.join(ev["data"]["quarantine_path"].as_str().unwrap());
        assert!(copy.starts_with(h.join("coordination/quarantine")), "{what}: {}", copy.display());
        assert_eq!(std::fs::read(&copy).unwrap(), bad, "{what}: the quarantine copy holds the bad bytes");
        if matches!(damage, Damage::WrongType) {
            assert_eq!(ev["data"]["pointer"], pointer, "{what}: the event names the field");
        }
        assert_eq!(ev["severity"], "error");

        // Repaired by hand, the file is writable again and validate is clean.
        std::fs::write(&path, &original).unwrap();
        std::fs::remove_file(&copy).unwrap();
        let mut events_file = std::fs::read_to_string(h.join("coordination/dashboard-events.jsonl")).unwrap();
        events_file.clear();
        std::fs::write(h.join("coordination/dashboard-events.jsonl"), events_file).unwrap();
    }
    let out = h.cortex(&["validate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn truncated_files_are_named_kept_and_quarantined() {
    corrupt_each_file(Damage::Truncated);
}

#[test]
fn files_that_are_not_json_are_named_kept_and_quarantined() {
    corrupt_each_file(Damage::NotJson);
}

#[test]
fn fields_of_the_wrong_type_are_named_with_their_pointer_kept_and_quarantined() {
    corrupt_each_file(Damage::WrongType);
}

/// The writer really writes when the file is good (so the refusals above mean something).
#[test]
fn writer_succeeds_on_good_files() {
    let h = TestHome::new();
    for case in CASES {
        let out = writer(&h, case);
        assert_eq!(reexec::results(case.0.rel, &out), vec!["ok".to_string()], "{}", case.0.rel);
    }
    assert_eq!(h.read_json("coordination/token-budget.json")["used"], 1);
    assert_eq!(h.read_json("coordination/moe/router-config.json")["rules"][0]["confidence"], 0.95);
    assert_eq!(
        h.read_json("coordination/config/worker-types.json")["worker_types"]["scan-worker"]["default_budget"],
        1234
    );
    assert!(h.events_of("file_quarantined").is_empty());
}

/// Worker specs and unregistered JSON files under coordination/ are checked too.
#[test]
fn specs_and_other_json_files_are_checked() {
    let h = TestHome::new();
    std::fs::write(h.join("coordination/worker-specs/active/d-broken.json"), "{\"dispatch_id\": ").unwrap();
    std::fs::write(h.join("coordination/notes.json"), "not json").unwrap();
    std::fs::write(h.join("coordination/.tmp.task-queue.json.123.abc"), "{").unwrap();
    std::fs::write(h.join("coordination/quarantine/task-queue.json.x.bad"), "{").unwrap();
    let out = h.cortex(&["validate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("[CORRUPT] coordination/worker-specs/active/d-broken.json"), "{stdout}");
    assert!(stdout.contains("[CORRUPT] coordination/notes.json"), "{stdout}");
    assert!(!stdout.contains(".tmp."), "temporaries are not coordination files: {stdout}");
    assert!(!stdout.contains("quarantine/"), "quarantine copies are not checked: {stdout}");
}

fn event_line(n: u32) -> String {
    let e = cortex::store::events::Event::new(
        cortex::store::events::EventKind::parse("seeded"),
        cortex::store::events::Severity::Info,
        "test",
        format!("event {n}"),
    );
    serde_json::to_string(&e).unwrap()
}

/// The event log: each kind of damage is named by line (and pointer), and an append keeps it.
#[test]
fn event_log_damage_is_named_by_line_and_kept_by_appends() {
    let h = TestHome::new();
    let log = h.join("coordination/dashboard-events.jsonl");
    let (l1, l2) = (event_line(1), event_line(2));
    let wrong_type = l2.replace("\"severity\":\"info\"", "\"severity\":5");
    let cases: [(&str, String, &str, &str); 3] = [
        ("truncated", format!("{l1}\n{}", &l2[..l2.len() / 2]), "[CORRUPT]", "malformed line(s): line 2"),
        ("not JSON", format!("{l1}\n<<garbage>>\n{l2}\n"), "[CORRUPT]", "malformed line(s): line 2"),
        ("wrong type", format!("{l1}\n{wrong_type}\n"), "[INVALID]", "line 2 at /severity"),
    ];
    for (what, content, tag, detail) in cases {
        std::fs::write(&log, &content).unwrap();
        let out = h.cortex(&["validate"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{what}: {stdout}");
        assert!(stdout.contains(&format!("{tag} coordination/dashboard-events.jsonl")), "{what}: {stdout}");
        assert!(stdout.contains(detail), "{what}: validate should say {detail:?}: {stdout}");

        let id = h.cortex_ok(&["event", "emit", "--type", "after_damage", "--message", what]).trim().to_string();
        let after = std::fs::read_to_string(&log).unwrap();
        assert!(after.starts_with(&content), "{what}: the damaged lines are kept as they were");
        let read: cortex::store::jsonl::JsonlRead<Value> = cortex::store::jsonl::read(&log).unwrap();
        assert!(read.records.iter().any(|e| e["id"] == id.as_str()), "{what}: the new event is readable");
        let events = cortex::store::events::read_all(&Home::at(h.path())).unwrap();
        assert_eq!(events.bad_lines, vec![2], "{what}: readers skip and count the bad line");
    }
}

/// Regression: a task-queue.json that passes its schema but that the task type cannot read (an
/// `in_progress` task without `started_at`/`dispatch_id`) made every writer fail with no
/// quarantine copy and no event, so nothing told the operator what was kept or where.
#[test]
fn a_file_its_type_cannot_read_is_quarantined_too() {
    let h = TestHome::new();
    let path = h.join("coordination/task-queue.json");
    let bad = br#"{"tasks": [{"task_id": "t-1", "description": "d", "priority": "high", "status": "in_progress",
        "worker_type": "fix-worker", "created_at": "2026-01-01T00:00:00Z", "created_by": "ops",
        "max_attempts": 3, "budget": 1000}]}"#;
    std::fs::write(&path, bad).unwrap();
    let out = writer(&h, CASES[0]);
    let lines = reexec::results("writer", &out);
    let err = lines[0].strip_prefix("error ").unwrap_or_else(|| panic!("the writer must fail: {lines:?}"));
    assert!(err.contains(&path.display().to_string()) && err.contains("started_at"), "{err}");
    assert!(err.contains("coordination/quarantine/"), "the error says where the copy is: {err}");
    assert_eq!(std::fs::read(&path).unwrap(), bad, "not overwritten");
    let ev = h.events_of("file_quarantined");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["data"]["file"], "coordination/task-queue.json");
    assert_eq!(std::fs::read(h.join(ev[0]["data"]["quarantine_path"].as_str().unwrap())).unwrap(), bad);
}
