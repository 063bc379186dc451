//! `cortex init`: the second run creates nothing and leaves every byte as it was, edits are kept,
//! only missing files are filled in; concurrent inits of one empty directory each create a file at
//! most once, never overwrite each other, and leave no temporaries.

use crate::support::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

/// Every file under `root` (relative path → bytes) and every directory (→ None).
fn snapshot(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(rel, None);
                stack.push(p);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn created(json_out: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(json_out).unwrap();
    v["created"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect()
}

#[test]
fn init_twice_creates_nothing_and_keeps_edits() {
    let h = TestHome::empty();
    let first = created(&h.cortex_ok(&["--json", "init"]));
    for f in ["cortex.toml", "coordination/task-queue.json", "coordination/moe/router-config.json", "run"] {
        assert!(first.iter().any(|c| c == f), "the first init creates {f}: {first:?}");
    }
    let after_first = snapshot(h.path());
    for (rel, content) in &after_first {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(h.join(rel)).unwrap().permissions().mode() & 0o777;
        let want = if content.is_some() { 0o600 } else { 0o700 };
        assert_eq!(mode, want, "{rel} has mode {mode:o}");
    }

    let second = created(&h.cortex_ok(&["--json", "init"]));
    assert!(second.is_empty(), "the second init creates nothing: {second:?}");
    assert_eq!(snapshot(h.path()), after_first, "the second init changes no byte");
    let text = h.cortex_ok(&["init"]);
    assert!(text.contains("nothing to create"), "{text}");

    // Edits are kept; a deleted file is the only thing recreated.
    let toml = h.join("cortex.toml");
    let mut edited = std::fs::read_to_string(&toml).unwrap();
    edited = edited.replace("max_concurrent_dispatches = 4", "max_concurrent_dispatches = 15");
    assert!(edited.contains("max_concurrent_dispatches = 15"));
    std::fs::write(&toml, &edited).unwrap();
    let budget = h.join("coordination/token-budget.json");
    std::fs::write(&budget, r#"{"total": 900, "used": 100, "available": 800, "last_updated": null}"#).unwrap();
    std::fs::remove_file(h.join("coordination/config/heartbeat-policy.json")).unwrap();
    let before = snapshot(h.path());

    let third = created(&h.cortex_ok(&["--json", "init"]));
    assert_eq!(third, vec!["coordination/config/heartbeat-policy.json".to_string()]);
    let after = snapshot(h.path());
    assert_eq!(std::fs::read_to_string(&toml).unwrap(), edited, "the edited cortex.toml is kept");
    assert_eq!(h.read_json("coordination/token-budget.json")["total"], 900, "the edited budget is kept");
    assert_eq!(
        after["coordination/config/heartbeat-policy.json"],
        after_first["coordination/config/heartbeat-policy.json"]
    );
    let changed: Vec<_> = after.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
    assert_eq!(changed, vec!["coordination/config/heartbeat-policy.json"]);
    let out = h.cortex(&["validate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn concurrent_inits_do_not_clobber_each_other() {
    for round in 0..3 {
        let h = TestHome::empty();
        let children: Vec<_> = (0..6)
            .map(|_| h.cmd().args(["--json", "init"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
            .collect();
        let mut files_created: BTreeMap<String, usize> = BTreeMap::new();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
            for f in created(&String::from_utf8_lossy(&out.stdout)) {
                if h.join(&f).is_file() {
                    *files_created.entry(f).or_default() += 1;
                }
            }
        }
        let snap = snapshot(h.path());
        let files: Vec<&String> = snap.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| k).collect();
        for f in &files {
            assert_eq!(files_created.get(*f), Some(&1), "round {round}: {f} must be created exactly once");
            let name = Path::new(f).file_name().unwrap().to_string_lossy();
            assert!(!name.starts_with(".tmp."), "round {round}: temporary {f} left behind");
        }
        // Same bytes as a lone init.
        let lone = TestHome::new();
        let lone_snap = snapshot(lone.path());
        assert_eq!(snap, lone_snap, "round {round}: concurrent inits must produce what one init does");
    }
}
