//! The exit journal `run/dispatch-exits.jsonl`: how a task's exec shim hands the command's exit
//! status to the worker. Each shim appends one line, its [`ExitReport`], while holding a SHARED
//! flock on `.locks/dispatch-exits.lock` (one `write`, then fdatasync) and only then exits. So
//! a worker that reaps the shim finds the line, and a worker that starts after its predecessor
//! died finds the reports of dispatches that ended while no worker ran.
//!
//! One shared append-only file rather than a file per dispatch: on ext4 without a journal (this
//! project's test machine) every inode created and deleted per task is skipped by each later
//! file creation for a minute or more (the allocator's `recently_deleted` check), which was the
//! largest single cost of a busy task path.
//!
//! The worker reads the journal from its last offset in the file it last read (identified by
//! device and inode: a journal replaced by another file is read from its start) and keeps each report until the dispatch
//! it belongs to has ended; once every line is consumed and the file has grown past
//! [`COMPACT_AT`] bytes, it empties the file (ftruncate, under the lock EXCLUSIVE, so no append
//! is in flight). A crash that undoes a truncate only brings back reports of dispatches that
//! already ended, which nobody looks up again (dispatch ids are never reused).
//!
//! Both locks go through [`crate::store::lock`] (deadline, holder note, a timeout naming the
//! holders); `dispatch-exits` is always taken alone ([`LockName::DispatchExits`]).

use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::store::LockName;
use crate::store::home::Home;
use crate::store::lock::{Mode, lock_at};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The journal is emptied once fully consumed and at least this long.
pub(crate) const COMPACT_AT: u64 = 256 * 1024;

/// How long a shim waits for its shared lock. The exclusive holder (the worker emptying the
/// journal) holds it for one read and a truncate; a shim that gives up says so on its stderr
/// (the task's log) and exits with the command's status, which a worker that is its parent
/// still reaps.
pub(crate) const APPEND_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// What the shim records about the command's end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ExitReport {
    pub dispatch_id: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Set when the command could not be started.
    pub error: Option<String>,
    pub pid: Option<u32>,
    #[serde(with = "crate::base::clock::ts")]
    pub started_at: Timestamp,
    #[serde(with = "crate::base::clock::ts")]
    pub ended_at: Timestamp,
}

/// The journal's path in a home.
pub(crate) fn journal_path(home: &Home) -> PathBuf {
    home.run_dir().join("dispatch-exits.jsonl")
}

/// The lock that orders appends (shared) against emptying the journal (exclusive).
pub(crate) fn lock_path(home: &Home) -> PathBuf {
    home.lock_file(LockName::DispatchExits)
}

/// The shim's side: appends one report durably under the shared lock.
pub(crate) fn append(journal: &Path, lock: &Path, report: &ExitReport) -> Result<()> {
    append_within(journal, lock, report, APPEND_LOCK_TIMEOUT)
}

/// [`append`] waiting at most `timeout` for the lock.
fn append_within(journal: &Path, lock: &Path, report: &ExitReport, timeout: Duration) -> Result<()> {
    let mut line = serde_json::to_vec(report).map_err(|e| Error::encode("exit report", e))?;
    line.push(b'\n');
    let _guard = lock_at(lock, LockName::DispatchExits, Mode::Shared, timeout)?;
    crate::store::jsonl::append_raw_durable(journal, &line)
}

/// The worker's view of the journal: reports read so far and not yet taken.
#[derive(Debug)]
pub(crate) struct ExitJournal {
    path: PathBuf,
    lock: PathBuf,
    /// How long emptying the journal waits for the lock (appends in flight hold it shared); an
    /// attempt that gives up is made again on a later step.
    lock_timeout: Duration,
    /// Bytes read and parsed (always at a line boundary) of the file `file` identifies.
    offset: u64,
    /// Device and inode of the file `offset` counts in: a journal replaced by another file (by
    /// hand, a restore) is read from its start, whatever its length.
    file: Option<(u64, u64)>,
    reports: HashMap<String, ExitReport>,
    /// Lines that did not parse, counted (invariant 4) and skipped.
    pub bad_lines: usize,
}

impl ExitJournal {
    pub(crate) fn new(home: &Home) -> ExitJournal {
        ExitJournal {
            path: journal_path(home),
            lock: lock_path(home),
            lock_timeout: crate::store::DEFAULT_LOCK_TIMEOUT,
            offset: 0,
            file: None,
            reports: HashMap::new(),
            bad_lines: 0,
        }
    }

    /// Waits at most `timeout` for the lock when emptying the journal.
    pub(crate) fn with_lock_timeout(mut self, timeout: Duration) -> ExitJournal {
        self.lock_timeout = timeout;
        self
    }

    /// Reads the lines appended since the last call. Errors are logged: a report that cannot be
    /// read leaves its dispatch to be judged by what the worker saw (its reaped status).
    pub(crate) fn refresh(&mut self) {
        if let Err(e) = self.read_new() {
            tracing::error!("cannot read the exit journal: {e}");
        }
    }

    fn read_new(&mut self) -> Result<()> {
        // Never through a link (another file's lines are no exit reports) nor a FIFO.
        let mut f = match crate::store::open::read(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.offset = 0;
                self.file = None;
                return Ok(());
            }
            Err(e) => return Err(crate::store::open::refuse_link(&self.path, "open", e)),
        };
        let meta = f.metadata().map_err(|e| Error::io(&self.path, "stat", e))?;
        let len = meta.len();
        let file = Some((meta.dev(), meta.ino()));
        if file != self.file {
            // Another file than the one the offset counts in (replaced by rename, removed and
            // created again): its every line is new.
            self.offset = 0;
            self.file = file;
        } else if len < self.offset {
            // Emptied behind our back (by hand): read it again from the start.
            self.offset = 0;
        }
        if len == self.offset {
            return Ok(());
        }
        f.seek(SeekFrom::Start(self.offset)).map_err(|e| Error::io(&self.path, "seek", e))?;
        let mut bytes = Vec::with_capacity((len - self.offset) as usize);
        f.read_to_end(&mut bytes).map_err(|e| Error::io(&self.path, "read", e))?;
        // Only whole lines: a line still being written is read next time.
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else { return Ok(()) };
        for line in bytes[..end].split(|&b| b == b'\n') {
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            match serde_json::from_slice::<ExitReport>(line) {
                Ok(r) => {
                    self.reports.insert(r.dispatch_id.clone(), r);
                }
                Err(e) => {
                    self.bad_lines += 1;
                    tracing::warn!("skipping a bad line of {}: {e}", self.path.display());
                }
            }
        }
        self.offset += end as u64 + 1;
        Ok(())
    }

    /// Whether a report of this dispatch has been read.
    pub(crate) fn has(&self, dispatch_id: &str) -> bool {
        self.reports.contains_key(dispatch_id)
    }

    /// Removes and returns the report of a dispatch.
    pub(crate) fn take(&mut self, dispatch_id: &str) -> Option<ExitReport> {
        self.reports.remove(dispatch_id)
    }

    /// Forgets reports of dispatches that `keep` rejects (ended long ago, before a restart).
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.reports.retain(|id, _| keep(id));
    }

    /// Empties the journal when every line in it has been consumed and it has grown past
    /// [`COMPACT_AT`]; `pending` says whether some report read earlier is still needed (then
    /// nothing is done). Returns whether it was emptied.
    pub(crate) fn compact(&mut self, pending: bool) -> bool {
        if pending || !self.reports.is_empty() || self.offset < COMPACT_AT {
            return false;
        }
        match self.compact_locked() {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!("cannot empty the exit journal: {e}");
                false
            }
        }
    }

    fn compact_locked(&mut self) -> Result<bool> {
        let _guard = lock_at(&self.lock, LockName::DispatchExits, Mode::Exclusive, self.lock_timeout)?;
        // No append is in flight now; one that landed since the last read must be kept.
        self.read_new()?;
        let len = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let done = if self.reports.is_empty() && len == self.offset {
            let f = crate::store::open::open(&self.path, crate::store::open::How::Existing)?;
            f.set_len(0).map_err(|e| Error::io(&self.path, "truncate", e))?;
            self.offset = 0;
            true
        } else {
            false
        };
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, code: i32) -> ExitReport {
        ExitReport { dispatch_id: id.into(), exit_code: Some(code), ..ExitReport::default() }
    }

    #[test]
    fn reports_are_read_once_whole_lines_only_and_bad_lines_counted() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let (path, lock) = (journal_path(&home), lock_path(&home));
        let mut j = ExitJournal::new(&home);
        j.refresh();
        assert!(!j.has("a"), "no journal yet reads as empty");
        append(&path, &lock, &report("a", 0)).unwrap();
        append(&path, &lock, &report("b", 5)).unwrap();
        j.refresh();
        assert_eq!(j.take("b").unwrap().exit_code, Some(5));
        assert!(j.take("b").is_none(), "taken once");
        // A torn line (a shim killed mid-write) is not read until it is whole; a bad line is counted.
        crate::store::jsonl::append_raw(&path, b"{\"dispatch_id\": \"c\", \"exit_").unwrap();
        j.refresh();
        assert!(!j.has("c"));
        append(&path, &lock, &report("d", 1)).unwrap();
        j.refresh();
        assert_eq!(j.bad_lines, 1, "the torn line, closed by the next append, is skipped and counted");
        assert!(j.has("a") && j.has("d"));
    }

    /// The shim's times are `Timestamp`s: written as before (`format_ts`), read in any RFC 3339
    /// form; a line whose time does not parse is a bad line, skipped and counted (before, any
    /// string was taken).
    #[test]
    fn exit_report_times_are_written_canonically_and_a_malformed_one_is_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let (path, lock) = (journal_path(&home), lock_path(&home));
        let t = crate::base::clock::parse_ts("2026-01-01T00:00:01.5Z").unwrap();
        append(&path, &lock, &ExitReport { started_at: t, ended_at: t, ..report("a", 0) }).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#""started_at":"2026-01-01T00:00:01.500000Z","ended_at":"2026-01-01T00:00:01.500000Z""#),
            "{text}"
        );
        let line = |id: &str, started: &str| {
            format!(
                r#"{{"dispatch_id":"{id}","exit_code":0,"signal":null,"error":null,"pid":1,"started_at":"{started}","ended_at":"2026-01-01T00:00:02Z"}}"#
            ) + "\n"
        };
        crate::store::jsonl::append_raw(&path, line("b", "2026-01-01T01:00:01+01:00").as_bytes()).unwrap();
        crate::store::jsonl::append_raw(&path, line("c", "a while ago").as_bytes()).unwrap();
        let mut j = ExitJournal::new(&home);
        j.refresh();
        assert_eq!(j.take("a").unwrap().started_at, t);
        assert_eq!(j.take("b").unwrap().started_at, crate::base::clock::parse_ts("2026-01-01T00:00:01Z").unwrap());
        assert!(!j.has("c"), "a malformed time makes the line bad");
        assert_eq!(j.bad_lines, 1);
    }

    #[test]
    fn the_journal_is_emptied_only_when_every_report_is_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let (path, lock) = (journal_path(&home), lock_path(&home));
        let mut j = ExitJournal::new(&home);
        let n = (COMPACT_AT / 60) as usize + 10;
        for i in 0..n {
            append(&path, &lock, &report(&format!("dsp-{i}"), 0)).unwrap();
        }
        j.refresh();
        assert!(!j.compact(false), "unconsumed reports keep the file");
        for i in 0..n {
            j.take(&format!("dsp-{i}")).unwrap();
        }
        assert!(!j.compact(true), "a pending end keeps the file");
        // A report that landed after the last read is found under the lock and kept.
        append(&path, &lock, &report("late", 3)).unwrap();
        assert!(!j.compact(false));
        assert_eq!(j.take("late").unwrap().exit_code, Some(3));
        assert!(j.compact(false));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        append(&path, &lock, &report("after", 0)).unwrap();
        j.refresh();
        assert!(j.has("after"), "reading resumes from the start of the emptied file");
    }

    /// Both sides wait for the lock with a deadline, and a timeout names the holder (before,
    /// both blocked in `flock` without one: these calls never returned).
    #[test]
    fn the_journal_lock_has_a_deadline_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let (path, lock) = (journal_path(&home), lock_path(&home));
        let wait = Duration::from_millis(100);
        let take = |mode| {
            std::thread::scope(|s| {
                s.spawn(|| crate::store::lock::lock(&home, LockName::DispatchExits, mode, wait).unwrap())
                    .join()
                    .unwrap()
            })
        };
        // The worker empties the journal: a shim waits, gives up, says who holds the lock.
        let held = take(Mode::Exclusive);
        let err = append_within(&path, &lock, &report("a", 0), wait).unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("dispatch-exits.lock") && msg.contains(&format!("{}", std::process::id())), "{msg}");
        assert!(!path.exists(), "nothing appended without the lock");
        drop(held);
        // A shim appends: the worker's attempt to empty the journal gives up and is made later.
        let n = (COMPACT_AT / 60) as usize + 10;
        for i in 0..n {
            append(&path, &lock, &report(&format!("dsp-{i}"), 0)).unwrap();
        }
        let mut j = ExitJournal::new(&home).with_lock_timeout(wait);
        j.refresh();
        for i in 0..n {
            j.take(&format!("dsp-{i}")).unwrap();
        }
        let held = take(Mode::Shared);
        assert!(!j.compact(false), "not emptied while an append holds the lock");
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
        drop(held);
        assert!(j.compact(false));
    }

    #[test]
    fn a_replaced_journal_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let (path, lock) = (journal_path(&home), lock_path(&home));
        let mut j = ExitJournal::new(&home);
        append(&path, &lock, &report("a", 0)).unwrap();
        append(&path, &lock, &report("b", 0)).unwrap();
        j.refresh();
        assert!(j.take("a").is_some() && j.take("b").is_some());
        // Replaced by rename with a longer file (a restore, an operator's copy): its first line
        // is a report the worker has not read, and the old offset falls inside it.
        let replacement = dir.path().join("run/dispatch-exits.jsonl.new");
        let mut bytes = serde_json::to_vec(&report("finished-meanwhile", 0)).unwrap();
        bytes.push(b'\n');
        bytes.extend(std::fs::read(&path).unwrap());
        std::fs::write(&replacement, &bytes).unwrap();
        std::fs::rename(&replacement, &path).unwrap();
        j.refresh();
        assert_eq!(
            j.take("finished-meanwhile").map(|r| r.exit_code),
            Some(Some(0)),
            "the new file is read from its start, not from the old file's offset"
        );
        assert_eq!(j.bad_lines, 0, "no line is read from the middle");
    }

    #[test]
    fn an_append_waits_for_an_emptying_that_holds_a_deleted_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let (path, lock) = (journal_path(&home), lock_path(&home));
        // The worker empties the journal under the lock; meanwhile an operator deletes the
        // lock directory (runbooks 002/003).
        let emptying = crate::store::lock::lock_at(
            &lock,
            LockName::DispatchExits,
            Mode::Exclusive,
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        std::fs::remove_dir_all(home.locks_dir()).unwrap();
        let shim = std::thread::spawn({
            let (path, lock) = (path.clone(), lock.clone());
            move || append(&path, &lock, &report("a", 0))
        });
        let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while std::time::Instant::now() < until {
            assert!(!path.exists(), "a shim appended while the journal was being emptied");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(emptying);
        shim.join().unwrap().unwrap();
        let mut j = ExitJournal::new(&home);
        j.refresh();
        assert!(j.has("a"));
    }

    #[test]
    fn a_linked_journal_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let elsewhere = dir.path().join("elsewhere.jsonl");
        let mut line = serde_json::to_vec(&report("planted", 0)).unwrap();
        line.push(b'\n');
        std::fs::write(&elsewhere, &line).unwrap();
        std::fs::create_dir_all(home.run_dir()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, journal_path(&home)).unwrap();
        let mut j = ExitJournal::new(&home);
        j.refresh();
        assert!(!j.has("planted"), "a report was read through a link");
    }
}
