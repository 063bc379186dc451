//! Hostile coordination files, with every daemon running (api, metrics, integration,
//! failure-pattern, heartbeat, auto-fix, coordinator, worker): each registered file in turn is made empty, truncated,
//! not JSON, valid JSON of the wrong shape, a symbolic link to a copy of /etc/passwd outside the
//! home, and (for three representative files) huge; so is a dispatch spec in
//! `worker-specs/active/`. Each time:
//! - every daemon keeps running, and its loop keeps turning (heartbeat marks refresh);
//! - the integration daemon reports it (an event naming the file) and `cortex validate` fails
//!   naming it;
//! - a bad JSON file is quarantined (a byte-exact copy) and never overwritten; a JSONL file is
//!   only ever appended to; nothing is written through the symbolic link;
//! - once the file is put back, `cortex validate` passes again.
//!
//! Unreadable files (permission bits) are in `unreadable.rs`.
//!
//! The huge file is 16 MB in the normal run and 100 MB in the long form
//! (`CORTEX_HOSTILE_HUGE_MB=100`): at 100 MB each huge case costs the debug-build daemons and
//! `cortex validate` several seconds of parsing and a 100 MB quarantine copy, about 25 s more in
//! all on 2 cores (measured: 73 s for the whole file at 100 MB, 48 s at 1 MB), too much for every
//! run. 16 MB already exceeds every buffer and limit in the readers.
use crate::support::faults::*;
use crate::support::fleet::Fleet;
use crate::support::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Empty,
    Truncated,
    NotJson,
    WrongShape,
    Symlink,
    Huge,
}

fn huge_bytes() -> usize {
    std::env::var("CORTEX_HOSTILE_HUGE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(16usize) * 1024 * 1024
}

/// The hostile content for a file (None for the symbolic link, which is made separately). JSONL
/// contents give consecutive kinds different bad-line counts, so each is a new report.
fn content(kind: Kind, original: &[u8], jsonl: bool) -> Option<Vec<u8>> {
    Some(match kind {
        Kind::Empty => Vec::new(),
        Kind::Truncated => {
            let cut = if original.len() >= 8 { original[..original.len() / 2].to_vec() } else { b"{\"trunc".to_vec() };
            if jsonl { [b"{\"a\":1}\n".as_slice(), &cut].concat() } else { cut }
        }
        Kind::NotJson => b"\x00\xff\xfe not json at all {{{\n<<<also not json>>>\n".to_vec(),
        Kind::WrongShape => {
            if jsonl {
                b"[1, 2, 3]\n\"a string\"\n{\"type\": 42}\n".to_vec()
            } else {
                b"[1, 2, 3]\n".to_vec()
            }
        }
        Kind::Huge => {
            // Valid JSON of the wrong shape, one huge string: parses, breaks the schema.
            let n = huge_bytes();
            let mut v = Vec::with_capacity(n + 32);
            v.extend_from_slice(b"{\"tasks\": \"");
            v.resize(n, b'a');
            v.extend_from_slice(b"\"}\n");
            v
        }
        Kind::Symlink => return None,
    })
}

/// Replaces `path` by a rename (one change event), or by a symbolic link to `target`.
fn put(path: &Path, bytes: Option<&[u8]>, link_to: Option<&Path>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_file_name(format!(".hostile-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    match (bytes, link_to) {
        (Some(b), _) => std::fs::write(&tmp, b).unwrap(),
        (None, Some(target)) => std::os::unix::fs::symlink(target, &tmp).unwrap(),
        (None, None) => {
            let _ = std::fs::remove_file(path);
            return;
        }
    }
    std::fs::rename(&tmp, path).unwrap();
}

struct Case<'a> {
    h: &'a TestHome,
    rel: String,
    path: PathBuf,
    jsonl: bool,
    original: Option<Vec<u8>>,
    decoy: PathBuf,
}

impl Case<'_> {
    fn event_type(&self) -> &'static str {
        if self.jsonl { "jsonl_malformed_lines" } else { "integration_validation_failed" }
    }

    /// The intake has a consumer: the coordinator folds it, quarantining each bad line (a
    /// byte-exact copy, a `file_quarantined` event) and rotating the consumed file away, so its
    /// bad lines may be gone from the file before the integration daemon looks.
    fn consumed(&self) -> bool {
        self.rel == "coordination/task-intake.jsonl"
    }

    /// Reports about this file so far. A JSONL file that is a symbolic link is not read at all
    /// (readers refuse links): it is reported as unreadable (`integration_validation_failed`).
    fn reports(&self) -> usize {
        let mut n = file_events(self.h, self.event_type(), &self.rel).len();
        if self.jsonl {
            n += file_events(self.h, "integration_validation_failed", &self.rel).len();
        }
        // The coordinator reads the queue journal too: a line that is not a journal record makes
        // it quarantine the journal (a `file_quarantined` event), which may come before the
        // integration daemon's report.
        if self.consumed() || self.rel == "coordination/task-queue.journal.jsonl" {
            n += file_events(self.h, "file_quarantined", &self.rel).len();
        }
        n
    }

    /// Every complete, non-blank line of `bad` is in a quarantined copy of the intake.
    fn assert_lines_quarantined(&self, bad: &[u8], what: &str) {
        let copies: Vec<Vec<u8>> = std::fs::read_dir(self.h.join("coordination/quarantine"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("coordination__task-intake.jsonl."))
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let complete = &bad[..bad.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)];
        for line in complete.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
            assert!(
                copies.iter().any(|c| c.windows(line.len()).any(|w| w == line)),
                "{what}: a consumed bad line is in no quarantined copy: {}",
                String::from_utf8_lossy(line)
            );
        }
    }

    fn run(&self, fleet: &mut Fleet, kind: Kind) {
        let what = format!("{} made {kind:?}", self.rel);
        let reported_before = self.reports();
        let bad = content(kind, self.original.as_deref().unwrap_or(b""), self.jsonl);
        let decoy_before = std::fs::read(&self.decoy).unwrap();
        put(&self.path, bad.as_deref(), Some(&self.decoy));
        let bad_bytes = bad.clone().unwrap_or_else(|| decoy_before.clone());
        // An empty JSONL file is a valid one: nothing to report.
        let must_report = !(self.jsonl && kind == Kind::Empty);
        // Events cannot be appended through a link: the event log as a link is reported by
        // `cortex validate` alone (and the refusal is in the daemons' logs).
        let events_link = self.rel == "coordination/dashboard-events.jsonl" && kind == Kind::Symlink;

        if must_report && !events_link {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while self.reports() <= reported_before {
                fleet.assert_alive(&what);
                if std::time::Instant::now() > deadline {
                    let log = std::fs::read(self.h.join("coordination/dashboard-events.jsonl")).unwrap_or_default();
                    let tail = String::from_utf8_lossy(&log[log.len().saturating_sub(3000)..]).into_owned();
                    panic!("no {} event for {what} within 30 s; the event log ends with:\n{tail}", self.event_type());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        fleet.assert_alive(&what);

        let out = self.h.cortex(&["validate"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // A consumed intake may be folded away at any moment: then its lines are in quarantine.
        let holds_bad = || std::fs::read(&self.path).is_ok_and(|now| !now.is_empty() && now.starts_with(&bad_bytes));
        if self.consumed() && (out.status.success() || !holds_bad()) {
            assert!(!holds_bad(), "cortex validate passed with {what}:\n{stdout}");
            self.assert_lines_quarantined(&bad_bytes, &what);
            assert_eq!(std::fs::read(&self.decoy).unwrap(), decoy_before, "{what}: written through the link");
            put(&self.path, self.original.as_deref(), None);
            fleet.assert_alive(&format!("{what}, then folded away"));
            return;
        }
        if must_report {
            assert!(!out.status.success(), "cortex validate passed with {what}:\n{stdout}");
            assert!(stdout.contains(&self.rel), "cortex validate does not name {}:\n{stdout}", self.rel);
        } else {
            assert!(out.status.success(), "cortex validate failed with {what}:\n{stdout}");
        }

        // Never overwritten: a JSON file keeps its bad bytes (or stays the link); a JSONL file
        // starts with them (appends are allowed). The link's target is untouched.
        if kind == Kind::Symlink && (!self.consumed() || holds_bad()) {
            assert!(self.path.symlink_metadata().unwrap().file_type().is_symlink(), "{what}: the link was replaced");
        }
        let now = std::fs::read(&self.path).unwrap_or_default();
        if self.consumed() && !now.starts_with(&bad_bytes) {
            // Folded away since the check above.
            self.assert_lines_quarantined(&bad_bytes, &what);
        } else if self.jsonl {
            assert!(now.starts_with(&bad_bytes), "{what}: the JSONL file was rewritten");
        } else {
            assert!(now == bad_bytes, "{what}: the file was overwritten");
        }
        assert_eq!(std::fs::read(&self.decoy).unwrap(), decoy_before, "{what}: written through the link");

        // A bad JSON file is quarantined: a byte-exact copy named in the event. A link is not
        // read at all (its target is someone else's file): reported, nothing copied.
        if !self.jsonl && kind != Kind::Symlink {
            let ev = file_events(self.h, self.event_type(), &self.rel).pop().unwrap();
            let q = ev["data"]["quarantine_path"].as_str().unwrap_or_else(|| panic!("{what}: no quarantine: {ev}"));
            assert!(std::fs::read(self.h.join(q)).unwrap() == bad_bytes, "{what}: the quarantined copy differs");
        }

        // Put back: valid again.
        put(&self.path, self.original.as_deref(), None);
        let out = self.h.cortex(&["validate"]);
        assert!(
            out.status.success(),
            "cortex validate still fails after {} was put back:\n{}",
            self.rel,
            String::from_utf8_lossy(&out.stdout)
        );
        fleet.assert_alive(&format!("{what}, then put back"));
    }
}

#[test]
fn every_coordination_file_hostile_in_turn_daemons_survive_report_quarantine_recover() {
    let h = TestHome::new();
    let mut fleet = Fleet::start_all(&h);
    // The coordinator's first cycle rewrites a fresh home's queue (a generation-0 snapshot is
    // compacted into one that takes journal lines): a hostile file put before it would be
    // replaced by that write, not read. Wait for it, as an operator's edit after start would.
    wait_until(Duration::from_secs(30), "the coordinator's first compaction", || {
        std::fs::read(h.join("coordination/task-queue.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|q| q["journal_generation"].as_u64().is_some_and(|g| g > 0))
    });
    // The link target: a copy of /etc/passwd outside the home, so a write through the link
    // would be seen (and the real /etc/passwd is never at risk).
    let outside = tempfile::tempdir().unwrap();
    let decoy = outside.path().join("passwd");
    std::fs::write(
        &decoy,
        std::fs::read("/etc/passwd").unwrap_or_else(|_| b"root:x:0:0:root:/root:/bin/sh\n".to_vec()),
    )
    .unwrap();

    let started = std::time::Instant::now();
    let mut cases = 0;
    for f in cortex::store::files::ALL {
        let rel = format!("coordination/{}", f.rel);
        let path = h.join(&rel);
        let jsonl = f.kind == cortex::store::files::FileKind::Jsonl;
        let original = std::fs::read(&path).ok();
        let case = Case { h: &h, rel: rel.clone(), path, jsonl, original, decoy: decoy.clone() };
        let mut kinds = vec![Kind::Empty, Kind::Truncated, Kind::NotJson, Kind::WrongShape, Kind::Symlink];
        if matches!(f.rel, "task-queue.json" | "config/worker-types.json" | "moe/routing-decisions.jsonl") {
            kinds.push(Kind::Huge);
        }
        for kind in kinds {
            case.run(&mut fleet, kind);
            cases += 1;
        }
    }
    // A dispatch spec in active/ (read by the heartbeat daemon, the API and the integration
    // daemon), which did not exist before: put back means removed.
    let rel = "coordination/worker-specs/active/d-hostile.json".to_string();
    let case = Case { h: &h, path: h.join(&rel), rel, jsonl: false, original: None, decoy: decoy.clone() };
    for kind in [Kind::Empty, Kind::Truncated, Kind::NotJson, Kind::WrongShape, Kind::Symlink] {
        case.run(&mut fleet, kind);
        cases += 1;
    }
    let since = chrono::Utc::now();
    fleet.assert_loops_running(since, "all hostile files");
    // Still serving.
    let (code, _) = api::try_request(fleet.api_port, "GET", "/status", &[], b"").expect("api answers");
    assert_eq!(code, 200);
    eprintln!("hostile files: {cases} cases in {:.1}s, every daemon alive", started.elapsed().as_secs_f64());
}
