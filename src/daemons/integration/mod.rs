//! The integration daemon (validator): validates every coordination file against its schema when
//! it changes and on a slow timer (`[integration] interval_seconds`), quarantines invalid files
//! with an `integration_validation_failed` event naming file and field, reports JSONL files with
//! malformed lines (`jsonl_malformed_lines`, once per new count), and checks cross-file
//! consistency (`integration_inconsistency`, once it outlasts `consistency_grace_seconds`;
//! `integration_consistency_restored` when it is gone). It reports; it never fixes.
//!
//! - [`files`]: acting on per-file verdicts of [`crate::ops::validate`] (the one validator).
//! - [`consistency`]: queue ↔ specs ↔ budget checks and the grace/once tracker.

pub(crate) mod consistency;
pub(crate) mod files;

use crate::base::error::Result;
use crate::domain::task::{TokenBudget, dispatches};
use crate::store::Store;
use crate::store::events::{EventKind, Severity};
use crate::store::home::SpecBucket;
use crate::store::identity::FileIdentity;
use crate::{base::wake::Wake, daemons::daemon::DaemonContext};
use consistency::Tracker;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a burst of changes to one file settles before it is checked.
const SETTLE: Duration = Duration::from_millis(100);
/// A JSONL file that keeps changing (the event log) is re-read at most once per this gap, which
/// grows with its size (half a second per MiB, from 0.5 s up to 10 s), so re-reading costs a few
/// percent of one core at most.
fn jsonl_gap(path: &Path) -> Duration {
    let mib = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) as f64 / (1024.0 * 1024.0);
    Duration::from_secs_f64((mib * 0.5).clamp(0.5, 10.0))
}

/// The validator's memory between passes.
pub struct Integrity {
    store: Store,
    files: files::FileWatch,
    tracker: Tracker,
    /// Each file's identity when it was last validated on a change, trusted ones only (not
    /// within its timestamp tick): a change event for a file whose identity is the same again
    /// (a burst already validated, a rescan) costs one `stat`, not a parse and a schema check.
    validated: HashMap<PathBuf, FileIdentity>,
    /// Files validated on a change since start (logged at debug level with each one).
    pub validations: u64,
    /// The queue, followed by journal offset for the consistency check.
    queue: crate::domain::task::journal::Follower,
    /// The queue's snapshot as it was last found valid, by a full pass or on its change event (a
    /// trusted identity): the next passes skip it while it is the same file (it is replaced
    /// whole, at a compaction, and a change is validated on its event), so a compaction's
    /// snapshot is read once, not again by the next full pass.
    snapshot_valid: Option<FileIdentity>,
    /// Whole reads of the queue's snapshot since start (for tests).
    pub snapshot_reads: u64,
}

impl Integrity {
    pub fn new(store: Store, grace: Duration) -> Self {
        Integrity {
            store,
            files: files::FileWatch::default(),
            tracker: Tracker::new(grace),
            validated: HashMap::new(),
            validations: 0,
            queue: Default::default(),
            snapshot_valid: None,
            snapshot_reads: 0,
        }
    }

    /// Validates every coordination file; returns the number of events emitted.
    pub fn validate_all(&mut self) -> usize {
        use crate::store::files::{TASK_QUEUE, TASK_QUEUE_JOURNAL};
        let journal = format!("coordination/{}", TASK_QUEUE_JOURNAL.rel);
        let snapshot = FileIdentity::stat(&self.store.path(TASK_QUEUE))
            .ok()
            .flatten()
            .and_then(|i| i.trusted_at(std::time::SystemTime::now()));
        let unchanged = snapshot.is_some() && snapshot == self.snapshot_valid;
        // The journal is followed by offset below; the snapshot, unchanged since it was last
        // found valid, is not read again (a pass costs what changed, not the backlog).
        let reports = crate::ops::validate::validate_home_skipping(self.store.home(), &|f| {
            f.rel == TASK_QUEUE_JOURNAL.rel || (unchanged && f.rel == TASK_QUEUE.rel)
        });
        let snapshot_rel = format!("coordination/{}", TASK_QUEUE.rel);
        if let Some(r) = reports.iter().find(|r| r.file == snapshot_rel) {
            self.snapshot_reads += 1;
            self.snapshot_valid = if r.is_ok() { snapshot } else { None };
        }
        // The queue's journal is followed by offset (checked whole only after a compaction).
        let others: usize =
            reports.iter().filter(|r| r.file != journal).map(|r| self.files.handle(&self.store, r)).sum();
        others + self.files.check_queue_journal(&self.store)
    }

    /// Validates one changed file (if it is one the validator checks) unless its identity is
    /// the one it had when last validated.
    pub fn validate_changed(&mut self, path: &Path) -> usize {
        let identity = FileIdentity::stat(path).ok().flatten();
        if identity.is_some() && self.validated.get(path) == identity.as_ref() {
            return 0;
        }
        let (n, ok) = self.validate_checked(path);
        let trusted = identity.and_then(|i| i.trusted_at(std::time::SystemTime::now()));
        if path == self.store.path(crate::store::files::TASK_QUEUE) {
            // Stat'ed before the read: a snapshot replaced meanwhile has another identity.
            self.snapshot_valid = if ok { trusted } else { None };
        }
        match trusted {
            Some(i) => self.validated.insert(path.to_path_buf(), i),
            None => self.validated.remove(path),
        };
        n
    }

    /// Validates one changed file (if it is one the validator checks).
    pub fn validate_path(&mut self, path: &Path) -> usize {
        self.validate_checked(path).0
    }

    /// [`Integrity::validate_path`], and whether the file was found valid.
    fn validate_checked(&mut self, path: &Path) -> (usize, bool) {
        self.validations += 1;
        tracing::debug!(path = %path.display(), validations = self.validations, "validating a changed file");
        if path == self.store.path(crate::store::files::TASK_QUEUE_JOURNAL) {
            return (self.files.check_queue_journal(&self.store), false);
        }
        match crate::ops::validate::check_file(self.store.home(), path) {
            Some(r) => {
                if r.file == format!("coordination/{}", crate::store::files::TASK_QUEUE.rel) {
                    self.snapshot_reads += 1;
                }
                (self.files.handle(&self.store, &r), r.is_ok())
            }
            None => (0, false),
        }
    }

    /// Checks cross-file consistency; returns when a pending inconsistency should be re-checked.
    pub fn check_consistency(&mut self, now: Instant) -> Option<Instant> {
        // The queue followed by journal offset: a change costs the lines appended, not the backlog.
        let (queue, budget) = match (self.queue.refresh(&self.store), self.store.load::<TokenBudget>()) {
            (Ok(q), Ok(b)) => (q, b),
            // A bad file is the per-file validation's to report; nothing to compare until it is fixed.
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("consistency check skipped: {e}");
                return None;
            }
        };
        let active = match dispatches::list_bucket(&self.store, SpecBucket::Active) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("consistency check skipped: {e}");
                return None;
            }
        };
        let decisions = self.tracker.observe(consistency::check(queue, &budget, &active), now);
        for i in &decisions.report {
            tracing::warn!("{}", i.message);
            let mut data = i.data.clone();
            if let Some(m) = data.as_object_mut() {
                m.insert("kind".into(), i.kind.into());
            }
            let _ = self.store.emit(EventKind::IntegrationInconsistency, Severity::Warning, i.message.clone(), data);
        }
        for i in &decisions.resolved {
            let _ = self.store.emit(
                EventKind::IntegrationConsistencyRestored,
                Severity::Info,
                format!("resolved: {}", i.message),
                serde_json::json!({"kind": i.kind, "key": i.key}),
            );
        }
        decisions.recheck_at
    }
}

/// True for a changed path the validator cares about (not locks, temporaries or quarantine).
fn relevant(coordination: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(coordination) else { return false };
    !rel.components().any(|c| {
        let n = c.as_os_str().to_string_lossy();
        n.starts_with('.') || n == "quarantine" || n == "schemas" || n == "defaults"
    })
}

/// True for a change that can affect cross-file consistency.
fn affects_consistency(store: &Store, path: &Path) -> bool {
    let home = store.home();
    path == home.task_queue()
        || path == store.path(crate::store::files::TASK_QUEUE_JOURNAL)
        || path == home.token_budget()
        || path.starts_with(home.worker_specs(SpecBucket::Active))
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The integration daemon's loop.
pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    let coordination = ctx.home.coordination();
    let grace = Duration::from_secs_f64(ctx.config.integration.consistency_grace_seconds.max(0.0));
    let mut integrity = Integrity::new(ctx.store.clone(), grace);
    ctx.pace_watches(crate::daemons::daemon::OFF_PATH_PACE);
    ctx.watch(std::slice::from_ref(&coordination))?;
    ctx.mark_ready()?;
    let every = Duration::from_secs(ctx.config.integration.interval_seconds.max(1));
    let mut next_full = Instant::now();
    let mut dirty: HashMap<PathBuf, Instant> = HashMap::new();
    let mut last_checked: HashMap<PathBuf, Instant> = HashMap::new();
    let mut consistency_due: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= next_full {
            integrity.validated.clear();
            integrity.validate_all();
            consistency_due = integrity.check_consistency(now);
            dirty.clear();
            next_full = now + every;
        } else {
            let due: Vec<PathBuf> = dirty.iter().filter(|(_, t)| **t <= now).map(|(p, _)| p.clone()).collect();
            for p in due {
                dirty.remove(&p);
                integrity.validate_changed(&p);
                last_checked.insert(p, Instant::now());
            }
            if consistency_due.is_some_and(|t| t <= now) {
                consistency_due = integrity.check_consistency(now);
            }
        }
        let deadline = earliest(earliest(Some(next_full), dirty.values().min().copied()), consistency_due);
        let first = if dirty.is_empty() {
            ctx.wait(deadline)
        } else {
            // Changes already wait out their settling time: the file events meanwhile are
            // collected then, not woken for one by one.
            ctx.wait_settling(deadline.unwrap_or(now).min(Instant::now() + SETTLE))
        };
        let mut wakes = vec![first];
        wakes.extend(ctx.drain_pending());
        for w in wakes {
            match w {
                Wake::Shutdown(_) => return Ok(()),
                Wake::Changed(p) if relevant(&coordination, &p) => {
                    let now = Instant::now();
                    if affects_consistency(&ctx.store, &p) {
                        consistency_due = earliest(consistency_due, Some(now + SETTLE));
                    }
                    let gap = if p.extension().is_some_and(|e| e == "jsonl") { jsonl_gap(&p) } else { Duration::ZERO };
                    let due = (now + SETTLE).max(last_checked.get(&p).map_or(now, |t| *t + gap));
                    dirty.entry(p).or_insert(due);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::task::TaskQueue;
    use crate::domain::task::journal;
    use crate::store::files::TASK_QUEUE;

    /// Waits (at most 5 s) until the file's identity can be trusted as unchanged (past its
    /// timestamp tick).
    fn wait_trusted(path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while FileIdentity::stat(path).unwrap().unwrap().trusted_at(std::time::SystemTime::now()).is_none() {
            assert!(Instant::now() < deadline, "{} never became trusted", path.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_snapshot_validated_on_its_change_is_not_read_again_by_the_next_full_pass() {
        // Regression (the add-cost benchmark behind 100,000 queued tasks): a compaction's new
        // snapshot was read whole on its change event and again by the next full pass, 270 ms
        // of CPU that landed among the operator's adds.
        let (_dir, store) = crate::store::fresh_store();
        let path = store.path(TASK_QUEUE);
        let mut integrity = Integrity::new(store.clone(), Duration::from_secs(10));
        integrity.validate_all();
        let first = integrity.snapshot_reads;

        // A compaction replaces the snapshot; its change event validates it once.
        journal::write_snapshot(&store, &TaskQueue::default()).unwrap();
        wait_trusted(&path);
        integrity.validate_changed(&path);
        assert_eq!(integrity.snapshot_reads, first + 1, "the changed snapshot was validated");
        integrity.validated.clear();
        integrity.validate_all();
        assert_eq!(integrity.snapshot_reads, first + 1, "the full pass read the snapshot validated on its change");

        // Another snapshot, seen first by a full pass: read there, once.
        journal::write_snapshot(&store, &TaskQueue::default()).unwrap();
        wait_trusted(&path);
        integrity.validate_all();
        assert_eq!(integrity.snapshot_reads, first + 2, "a replaced snapshot is read by the full pass");
        integrity.validate_all();
        assert_eq!(integrity.snapshot_reads, first + 2);
    }

    #[test]
    fn a_snapshot_found_invalid_on_its_change_is_read_again_by_the_next_full_pass() {
        let (_dir, store) = crate::store::fresh_store();
        let path = store.path(TASK_QUEUE);
        let mut integrity = Integrity::new(store.clone(), Duration::from_secs(10));
        integrity.validate_all();
        let first = integrity.snapshot_reads;
        crate::store::atomic::write_atomic(&path, br#"{"tasks": "none"}"#).unwrap();
        wait_trusted(&path);
        integrity.validate_changed(&path);
        integrity.validate_all();
        assert_eq!(integrity.snapshot_reads, first + 2, "an invalid snapshot is never skipped");
    }
}
