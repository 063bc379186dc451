//! Acting on the validator's verdicts ([`crate::ops::validate`]): an invalid JSON file is copied to
//! quarantine (through [`crate::store::Store::parse_checked`], which names the JSON pointer) and
//! reported with `integration_validation_failed`; a JSONL file with bad lines is reported with
//! `jsonl_malformed_lines` and its count. Each problem is reported once — again only when the
//! file's content (JSON) or bad-line count (JSONL) changes, or after it was fixed and broke again.

use crate::base::error::Error;
use crate::ops::validate::{FileReport, Verdict};
use crate::store::Store;
use crate::store::events::{EventKind, Severity};
use crate::store::files;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What was last reported per file: a content hash (JSON), or for JSONL the bad-line count with
/// the file's inode and which lines are bad: appending good lines changes none of them, while a
/// file replaced by another bad one (a new inode, other bad lines) is a new incident even with
/// the same count.
#[derive(Debug, Default)]
pub(crate) struct FileWatch {
    json_reported: HashMap<String, String>,
    jsonl_counts: HashMap<String, (usize, u64, String)>,
    journal: JournalFollow,
}

/// How far the queue's journal (`task-queue.journal.jsonl`) was checked: the snapshot's
/// generation and the journal's inode it belongs to, the byte offset, and what was found so far.
#[derive(Debug, Default)]
struct JournalFollow {
    generation: u64,
    inode: u64,
    offset: u64,
    lines: usize,
    bad: usize,
    problems: Vec<String>,
}

/// The schema `validate` applies to a file (by its path relative to the home).
fn schema_of(rel: &str) -> Option<&'static str> {
    let rel_coord = rel.strip_prefix("coordination/")?;
    if let Some(f) = files::by_rel(rel_coord) {
        return Some(f.schema);
    }
    let parts: Vec<&str> = rel_coord.split('/').collect();
    (parts.len() == 3 && parts[0] == "worker-specs" && parts[2].ends_with(".json")).then_some(files::DISPATCH_SCHEMA)
}

/// The JSON pointer at the start of a validator problem (`at /rules/0/pattern: ...`), if any.
fn pointer_of(problem: &str) -> &str {
    problem.strip_prefix("at ").and_then(|p| p.split(':').next()).filter(|p| p.starts_with('/')).unwrap_or("/")
}

impl FileWatch {
    /// The queue's journal changed: checks only the lines appended since the last check (from
    /// the start again when a compaction emptied it or another file took its name), never the
    /// whole backlog; the snapshot itself is checked when it is replaced (a compaction). Bad
    /// lines are reported like any JSONL file's (`jsonl_malformed_lines`, once per new count).
    /// Returns the number of events emitted.
    pub(crate) fn check_queue_journal(&mut self, store: &Store) -> usize {
        let path = store.path(files::TASK_QUEUE_JOURNAL);
        let rel = format!("coordination/{}", files::TASK_QUEUE_JOURNAL.rel);
        let meta = match path.symlink_metadata() {
            Ok(m) if m.file_type().is_file() => m,
            // Missing (nothing appended yet), a link or another type: reported as any file is.
            _ => {
                self.journal = JournalFollow::default();
                return crate::ops::validate::check_file(store.home(), &path).map_or(0, |r| self.handle(store, &r));
            }
        };
        let generation = crate::domain::task::journal::snapshot_generation(store).unwrap_or(0);
        let f = &mut self.journal;
        if f.generation != generation || f.inode != meta.ino() || meta.len() < f.offset {
            *f = JournalFollow { generation, inode: meta.ino(), ..JournalFollow::default() };
        }
        let bytes = match crate::store::open::read(&path) {
            Ok(mut file) => {
                use std::io::{Read, Seek, SeekFrom};
                let mut buf = Vec::new();
                let read = file.seek(SeekFrom::Start(f.offset)).and_then(|_| file.read_to_end(&mut buf));
                match read {
                    Ok(_) => buf,
                    Err(_) => return 0,
                }
            }
            Err(_) => return 0,
        };
        let checked = crate::domain::task::journal::check_lines(&bytes, f.offset);
        f.offset += checked.consumed;
        f.lines += checked.lines;
        f.bad += checked.bad;
        let room = 5usize.saturating_sub(f.problems.len());
        f.problems.extend(checked.problems.into_iter().take(room));
        let report = FileReport {
            file: rel,
            verdict: if f.bad > 0 { Verdict::Corrupt } else { Verdict::Ok },
            problems: if f.bad > 0 {
                vec![format!("{} malformed line(s): {}", f.bad, f.problems.join("; "))]
            } else {
                Vec::new()
            },
            lines: Some(f.lines),
            bad_lines: Some(f.bad),
        };
        self.handle_jsonl(store, &report)
    }

    /// Acts on one report; returns the number of events emitted.
    pub(crate) fn handle(&mut self, store: &Store, report: &FileReport) -> usize {
        let home = store.home();
        let path = home.join(&report.file);
        if report.lines.is_some() {
            return self.handle_jsonl(store, report);
        }
        if report.is_ok() {
            self.json_reported.remove(&report.file);
            return 0;
        }
        if report.verdict == Verdict::Missing {
            if self.json_reported.get(&report.file).map(String::as_str) == Some("missing") {
                return 0;
            }
            self.json_reported.insert(report.file.clone(), "missing".into());
            let _ = store.emit(
                EventKind::IntegrationValidationFailed,
                Severity::Error,
                format!("{} is missing: run `cortex repair` or `cortex init`", report.file),
                json!({"file": report.file, "field": "/", "verdict": report.verdict, "problem": "missing"}),
            );
            return 1;
        }
        // Never through a link planted at its name: its target is no file of ours and is not
        // copied into quarantine.
        let bytes = match crate::store::open::read_bytes(&path) {
            Ok(b) => b,
            Err(e) => return self.report_unreadable(store, report, &crate::store::open::read_problem(&e)),
        };
        let hash = crate::store::hex(&Sha256::digest(&bytes)[..8]);
        if self.json_reported.get(&report.file) == Some(&hash) {
            return 0;
        }
        self.json_reported.insert(report.file.clone(), hash);
        let (field, problem, quarantined) = quarantine(store, &path, &bytes, report);
        let _ = store.emit(
            EventKind::IntegrationValidationFailed,
            Severity::Error,
            format!(
                "{} is {} at {field}: {problem}{}",
                report.file,
                if report.verdict == Verdict::Corrupt { "not valid JSON" } else { "invalid" },
                quarantined
                    .as_ref()
                    .map(|q| format!("; a copy is kept at {}", home.relative(q).display()))
                    .unwrap_or_default()
            ),
            json!({
                "file": report.file,
                "field": field,
                "verdict": report.verdict,
                "problem": problem,
                "problems": report.problems,
                "quarantine_path": quarantined.map(|q| home.relative(&q).display().to_string()),
            }),
        );
        1
    }

    /// A file that exists but cannot be read (permissions, a directory, a dangling or looping
    /// link): reported once per kind of failure, nothing to quarantine.
    fn report_unreadable(&mut self, store: &Store, report: &FileReport, error: &str) -> usize {
        let error = error.strip_prefix("unreadable: ").unwrap_or(error);
        let key = format!("unreadable: {error}");
        if self.json_reported.get(&report.file) == Some(&key) {
            return 0;
        }
        self.json_reported.insert(report.file.clone(), key);
        let _ = store.emit(
            EventKind::IntegrationValidationFailed,
            Severity::Error,
            format!(
                "{} cannot be read ({error}); readers skip it until its permissions or type are fixed",
                report.file
            ),
            json!({"file": report.file, "field": "/", "verdict": report.verdict, "problem": format!("unreadable: {error}")}),
        );
        1
    }

    fn handle_jsonl(&mut self, store: &Store, report: &FileReport) -> usize {
        if report.verdict != Verdict::Ok && report.bad_lines == Some(0) {
            // Not one line could be read: the file itself is unreadable.
            let error = report.problems.first().cloned().unwrap_or_default();
            return self.report_unreadable(store, report, &error);
        }
        if report.is_ok() {
            self.json_reported.remove(&report.file);
        }
        let count = report.bad_lines.unwrap_or(0);
        if count == 0 {
            self.jsonl_counts.remove(&report.file);
            return 0;
        }
        let inode = std::fs::metadata(store.home().join(&report.file)).map(|m| m.ino()).unwrap_or(0);
        let key = (count, inode, report.problems.join("\n"));
        if self.jsonl_counts.get(&report.file) == Some(&key) {
            return 0;
        }
        self.jsonl_counts.insert(report.file.clone(), key);
        let _ = store.emit(
            EventKind::JsonlMalformedLines,
            Severity::Warning,
            format!(
                "{} has {count} malformed line(s) of {} ({}); readers skip them; `cortex repair` moves them aside",
                report.file,
                report.lines.unwrap_or(0),
                report.problems.join("; ")
            ),
            json!({"file": report.file, "count": count, "lines": report.lines, "problems": report.problems}),
        );
        1
    }
}

/// Copies a bad JSON file to quarantine; returns the offending field (JSON pointer), the problem
/// and the copy's path.
fn quarantine(
    store: &Store,
    path: &Path,
    bytes: &[u8],
    report: &FileReport,
) -> (String, String, Option<std::path::PathBuf>) {
    match store.parse_checked(path, bytes, schema_of(&report.file)) {
        Err(Error::Corrupt { detail, quarantined, .. }) => ("/".into(), detail, quarantined),
        Err(Error::Invalid { pointer, expected, quarantined, .. }) => {
            (if pointer.is_empty() { "/".into() } else { pointer }, expected, quarantined)
        }
        // Parses and matches its schema: the problem is a cross-reference (router rules).
        _ => {
            let problem = report.problems.first().cloned().unwrap_or_default();
            let field = pointer_of(&problem).to_string();
            let q = store.quarantine(path, bytes, "fails a cross-check", &problem, &field);
            (field, problem, q)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonl_report(file: &str, bad: usize, lines: &str) -> FileReport {
        FileReport {
            file: file.into(),
            verdict: Verdict::Corrupt,
            problems: vec![format!("{bad} malformed line(s): line {lines}")],
            lines: Some(bad),
            bad_lines: Some(bad),
        }
    }

    #[test]
    fn jsonl_replaced_with_the_same_bad_count_is_reported_again() {
        // Regression (hostile input): a JSONL file fixed and broken again before the daemon
        // looked at it in between, with as many bad lines as before, was never reported again.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(crate::Home::at(dir.path()));
        let rel = "coordination/dashboard-events.jsonl";
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"bad\nbad\n").unwrap();
        let mut watch = FileWatch::default();
        assert_eq!(watch.handle(&store, &jsonl_report(rel, 2, "1, 2")), 1);
        // Good lines appended: the same bad lines are not news.
        assert_eq!(watch.handle(&store, &jsonl_report(rel, 2, "1, 2")), 0);
        // Replaced by another bad file with the same count: reported.
        let tmp = dir.path().join("coordination/.tmp.x");
        std::fs::write(&tmp, b"worse\nworse\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(watch.handle(&store, &jsonl_report(rel, 2, "1, 2")), 1);
        // Removed, then another bad file that reuses the inode, other lines bad: reported.
        assert_eq!(watch.handle(&store, &jsonl_report(rel, 2, "3, 4")), 1);
    }

    #[test]
    fn unreadable_file_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(crate::Home::at(dir.path()));
        let report = FileReport {
            file: "coordination/task-queue.json".into(),
            verdict: Verdict::Corrupt,
            problems: vec!["unreadable: Permission denied (os error 13)".into()],
            lines: None,
            bad_lines: None,
        };
        // The file does not exist: it cannot be read, which is what is reported.
        let mut watch = FileWatch::default();
        assert_eq!(watch.handle(&store, &report), 1);
        assert_eq!(watch.handle(&store, &report), 0);
        let events = crate::store::events::read_all(store.home()).unwrap().records;
        assert!(
            events
                .iter()
                .any(|e| e.event_type == EventKind::IntegrationValidationFailed && e.message.contains("cannot be read"))
        );
    }

    #[test]
    fn schema_and_pointer_lookup() {
        assert_eq!(schema_of("coordination/token-budget.json"), Some("token-budget"));
        assert_eq!(schema_of("coordination/worker-specs/active/d1.json"), Some("dispatch"));
        assert_eq!(schema_of("coordination/other.json"), None);
        assert_eq!(pointer_of("at /rules/0/pattern: bad"), "/rules/0/pattern");
        assert_eq!(pointer_of("not JSON"), "/");
    }

    /// The integration daemon's view of a coordination file planted as a link: reported as
    /// unreadable, its target neither read nor copied into quarantine (issue #16, item 4).
    #[test]
    fn a_linked_json_file_is_reported_not_copied_into_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let store = Store::new(crate::Home::at(dir.path()));
        let rel = "coordination/task-queue.json";
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let secret = outside.path().join("shadow");
        std::fs::write(&secret, "root:secret-hash:19000:0:99999:7:::\n").unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        let report = crate::ops::validate::check_json_file(&path, rel, Some("task-queue"));
        let mut watch = FileWatch::default();
        assert_eq!(watch.handle(&store, &report), 1);
        let copied: Vec<String> = std::fs::read_dir(store.home().quarantine_dir())
            .map(|d| d.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect())
            .unwrap_or_default();
        assert!(!copied.iter().any(|c| c.contains("secret-hash")), "the link's target was copied into quarantine");
        let events = crate::store::events::read_all(store.home()).unwrap().records;
        assert!(events.iter().any(|e| e.message.contains("symbolic link")), "{events:?}");
    }
}
