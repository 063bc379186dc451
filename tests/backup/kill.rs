//! A restore SIGKILLed at any step leaves the current state as it was: before the swap nothing
//! live was touched; during the swap the journal lets the next `cortex repair` (or restore) roll it
//! back; after the commit mark it is completed instead. The restore is paused at an exact step
//! with `CORTEX_PAUSE_AT` (debug builds) and killed there.
use crate::support::*;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

const EVENTS: &str = "coordination/dashboard-events.jsonl";

/// Backed-up files (except the event log) → bytes.
type State = BTreeMap<String, Vec<u8>>;

fn state(h: &TestHome) -> State {
    let home = cortex::Home::at(h.path());
    cortex::ops::backup::snapshot::sources(&home)
        .0
        .into_iter()
        .filter(|s| s.rel != EVENTS)
        .map(|s| (s.rel, std::fs::read(&s.abs).unwrap()))
        .collect()
}

fn write(h: &TestHome, rel: &str, content: &str) {
    let p = h.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A home with a backup of state X, then changed to state Y (the current state).
fn setup() -> (TestHome, State, State) {
    let h = TestHome::new();
    write(&h, "config/extra.toml", "x = 1\n");
    write(&h, "agents/prompts/p.md", "prompt X\n");
    h.cortex_ok(&["event", "emit", "--type", "x", "--message", "state X"]);
    h.cortex_ok(&["backup"]);
    let x = state(&h);
    write(&h, "config/extra.toml", "y = 2\n");
    write(&h, "agents/prompts/p.md", "prompt Y\n");
    write(&h, "coordination/task-queue.json", "{\"tasks\": [], \"updated_at\": \"2026-05-05T00:00:00Z\"}\n");
    let toml = std::fs::read_to_string(h.join("cortex.toml")).unwrap().replace("keep = 14", "keep = 5");
    write(&h, "cortex.toml", &toml);
    h.cortex_ok(&["event", "emit", "--type", "y", "--message", "state Y"]);
    let y = state(&h);
    assert_ne!(x, y);
    (h, x, y)
}

fn restore_killed_at(h: &TestHome, point: &str) {
    let mut child = h
        .cmd()
        .args(["restore", "--latest", "--yes"])
        .env("CORTEX_PAUSE_AT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !wait_for_pause(&mut child, Duration::from_secs(30)) {
        let _ = child.kill();
        panic!("restore never reached {point}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn no_restore_leftovers(h: &TestHome) -> bool {
    std::fs::read_dir(h.path()).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().starts_with(".tmp.restore"))
}

#[test]
fn killed_before_the_swap_nothing_live_changed() {
    for point in ["restore-before-pre-backup", "restore-after-extract"] {
        let (h, _x, y) = setup();
        let events = std::fs::read(h.join(EVENTS)).unwrap();
        restore_killed_at(&h, point);
        assert_eq!(state(&h), y, "{point}: the live state changed");
        assert_eq!(std::fs::read(h.join(EVENTS)).unwrap(), events, "{point}");
        // The next command clears the leftovers (the staging tree exists once extraction began).
        let had_stage = !no_restore_leftovers(&h);
        assert_eq!(had_stage, point == "restore-after-extract", "{point}");
        let out = h.cortex_ok(&["repair"]);
        assert_eq!(out.contains("interrupted restore"), had_stage, "{point}: {out}");
        assert!(no_restore_leftovers(&h));
        assert_eq!(state(&h), y);
    }
}

#[test]
fn killed_during_the_swap_is_rolled_back() {
    for point in ["restore-swap-0", "restore-swap-1", "restore-swap-3", "restore-before-commit"] {
        let (h, _x, y) = setup();
        let events = std::fs::read(h.join(EVENTS)).unwrap();
        restore_killed_at(&h, point);
        let out = h.cortex_ok(&["repair"]);
        assert!(out.contains("rolled back"), "{point}: {out}");
        assert_eq!(state(&h), y, "{point}: not rolled back to the state before the restore");
        assert!(std::fs::read(h.join(EVENTS)).unwrap().starts_with(&events), "{point}: events lost");
        assert!(no_restore_leftovers(&h), "{point}");
        assert!(h.join("coordination/.locks").is_dir(), "{point}: lock directory not carried back");
        h.cortex_ok(&["validate"]);
        assert_eq!(h.events_of("restore_recovered").len(), 1, "{point}");
    }
}

#[test]
fn killed_after_the_commit_mark_is_completed() {
    let (h, x, _y) = setup();
    restore_killed_at(&h, "restore-after-commit");
    let out = h.cortex_ok(&["restore", "--latest", "--dry-run"]);
    assert!(out.contains("0 changed, 0 added, 0 removed"), "the restore had committed: {out}");
    h.cortex_ok(&["repair"]);
    assert_eq!(state(&h), x);
    assert!(no_restore_leftovers(&h));
    // And a later restore (of the pre-restore backup) still works.
    let pre = std::fs::read_dir(h.join("backups/pre-restore")).unwrap().flatten().next().unwrap().path();
    h.cortex_ok(&["restore", "--file", &pre.display().to_string(), "--yes"]);
}
