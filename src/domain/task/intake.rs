//! The task intake `coordination/task-intake.jsonl`: how new tasks enter the queue in O(1).
//!
//! `cortex task add` (and the API) append one line — the whole new task record — while holding a
//! SHARED flock on `.locks/task-intake.lock`, with one `write` and an fdatasync: the add path
//! never reads or rewrites the queue. Whoever writes the queue (the coordinator, or an operation
//! such as cancel that needs the whole picture) folds the intake while holding the `task-queue`
//! lock: it takes the intake lock EXCLUSIVE only to read the new lines, appends their tasks to
//! the queue and records in the queue's `intake_offset` the bytes consumed, in the same atomic
//! queue write. So a large queue's write never blocks an `add`.
//!
//! After the queue write, a fully consumed intake is renamed to `task-intake.jsonl.folded` (under
//! the exclusive lock, only if nothing was appended since), so the live intake holds only unfolded
//! lines and a hand-reset queue (`echo '{"tasks": []}' > task-queue.json`) never resurrects folded
//! tasks. The queue's offset then still counts the renamed file's bytes: whoever next folds or
//! reads sees a `.folded` file of exactly that length and reads the new intake from its start; the
//! next fold records the new offset and removes the `.folded` file. Folding also skips task ids
//! the queue already holds, so nothing is ever added twice. Readers take the shared lock to see
//! the queue and the unfolded tail together ([`snapshot`]).

use super::model::{Task, TaskQueue};
use crate::base::error::{Error, Result};
use crate::store::Store;
use crate::store::events::EventKind;
use crate::store::files::TASK_INTAKE;
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

/// A shared lock on the intake; dropping it releases the lock.
pub struct SharedIntakeLock {
    _guard: crate::store::lock::LockGuard,
}

/// Takes the intake lock SHARED (appenders, consistent readers), waiting at most `timeout`.
pub fn lock_shared(store: &Store) -> Result<SharedIntakeLock> {
    Ok(SharedIntakeLock { _guard: store.lock_shared(TASK_INTAKE.lock)? })
}

/// Appends a new task to the intake: one line, one `write`, fdatasync. O(1) in the queue size.
pub fn append(store: &Store, task: &Task) -> Result<()> {
    let path = store.path(TASK_INTAKE);
    let mut line = Vec::with_capacity(512);
    serde_json::to_writer(&mut line, task).map_err(|e| Error::encode("task", e))?;
    line.push(b'\n');
    let _lock = lock_shared(store)?;
    // One `write` (closing a line a full disk cut short first), never through a link, fdatasync.
    crate::store::jsonl::append_raw_durable(&path, &line)
}

/// Parses intake bytes into tasks; returns (tasks, bad line count, bytes consumed). A final line
/// without a newline is not consumed. Bad lines are quarantined (a copy each) and reported.
fn parse_lines(store: &Store, bytes: &[u8]) -> (Vec<Task>, usize, usize) {
    let path = store.path(TASK_INTAKE);
    let mut tasks = Vec::new();
    let mut bad = 0;
    let mut consumed = 0;
    while let Some(nl) = bytes[consumed..].iter().position(|&b| b == b'\n') {
        let line = &bytes[consumed..consumed + nl];
        consumed += nl + 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let parsed = store.parse_checked(&path, line, Some(TASK_INTAKE.schema)).and_then(|v| {
            serde_json::from_value::<Task>(v).map_err(|e| {
                // Schema-valid but not a task this version can read: kept like any bad line,
                // since the intake is rotated away once consumed.
                let expected = crate::base::schema::bounded(&e.to_string(), crate::base::schema::MAX_EXPECTED_CHARS);
                let quarantined = store.quarantine(&path, line, "cannot be read as a task", &expected, "");
                Error::Invalid { path: path.clone(), pointer: String::new(), expected, quarantined }
            })
        });
        match parsed {
            Ok(t) => tasks.push(t),
            Err(e) => {
                bad += 1;
                tracing::warn!("skipping a bad intake line: {e}");
            }
        }
    }
    (tasks, bad, consumed)
}

fn read_from(path: &std::path::Path, start: u64) -> Result<Vec<u8>> {
    let mut f = match crate::store::open::read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(crate::store::open::refuse_link(path, "open", e)),
    };
    f.seek(SeekFrom::Start(start)).map_err(|e| Error::io(path, "seek", e))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|e| Error::io(path, "read", e))?;
    Ok(buf)
}

fn intake_len(store: &Store) -> Result<u64> {
    let path = store.path(TASK_INTAKE);
    match std::fs::metadata(&path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(&path, "stat", e)),
    }
}

/// True when the intake holds lines the queue has not folded yet (a cheap stat).
pub fn has_pending(store: &Store, queue: &TaskQueue) -> Result<bool> {
    let len = intake_len(store)?;
    Ok(len != queue.intake_offset)
}

fn folded_path(store: &Store) -> std::path::PathBuf {
    let mut p = store.path(TASK_INTAKE).into_os_string();
    p.push(".folded");
    p.into()
}

/// Where the unfolded part of the live intake starts, given the queue's recorded offset: 0 when
/// the offset counts a renamed-away (`.folded`) intake or the intake is shorter than it (it was
/// replaced by hand), else the offset.
fn unfolded_start(store: &Store, queue: &TaskQueue) -> Result<u64> {
    if std::fs::metadata(folded_path(store)).is_ok_and(|m| m.len() == queue.intake_offset) {
        return Ok(0);
    }
    let len = intake_len(store)?;
    Ok(if len < queue.intake_offset { 0 } else { queue.intake_offset })
}

/// What a fold did; after writing the queue the caller calls [`IntakeFold::finish`].
pub struct IntakeFold {
    /// Ids of the tasks added to the queue.
    pub added: Vec<String>,
    pub bad_lines: usize,
    rotate: bool,
    remove_folded: bool,
}

impl IntakeFold {
    /// Call after the queue (with the new tasks and `intake_offset`) was written: removes the
    /// previous `.folded` file and renames the fully consumed intake away.
    pub fn finish(self, store: &Store, queue: &TaskQueue) -> Result<()> {
        let folded = folded_path(store);
        if self.remove_folded {
            remove_durable(&folded)?;
        }
        if self.rotate {
            let _x = store.lock_named(TASK_INTAKE.lock)?;
            if intake_len(store)? == queue.intake_offset {
                crate::store::atomic::rename_durable(&store.path(TASK_INTAKE), &folded)?;
            }
        }
        Ok(())
    }
}

fn remove_durable(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => crate::store::atomic::fsync_dir(path.parent().unwrap_or(std::path::Path::new("."))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, "remove", e)),
    }
}

/// Folds new intake lines into `queue` (the caller holds the `task-queue` lock). Returns None
/// when there is nothing to do; otherwise the caller writes the queue and calls `finish`.
pub fn fold(store: &Store, queue: &mut TaskQueue) -> Result<Option<IntakeFold>> {
    fold_known(store, queue, &|_| false)
}

/// [`fold`] for a caller that holds some of the queue's tasks apart (the coordinator's parked
/// tasks): `held_apart` says whether an id is one of them, so an intake line repeating it is
/// not added twice.
pub fn fold_known(
    store: &Store,
    queue: &mut TaskQueue,
    held_apart: &dyn Fn(&str) -> bool,
) -> Result<Option<IntakeFold>> {
    let remove_folded = folded_path(store).exists();
    if !remove_folded && !has_pending(store, queue)? {
        return Ok(None);
    }
    let path = store.path(TASK_INTAKE);
    if path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
        // Someone else's file: its lines are not tasks of ours, nor copied into quarantine. The
        // rest of the cycle goes on; `cortex validate` and the integration daemon name the file.
        tracing::error!("{} is a symbolic link; not reading it (replace it with a regular file)", path.display());
        return Ok(None);
    }
    let (bytes, start, len) = {
        let _x = store.lock_named(TASK_INTAKE.lock)?;
        let start = unfolded_start(store, queue)?;
        let len = intake_len(store)?;
        (read_from(&path, start)?, start, len)
    };
    let (tasks, bad_lines, consumed) = parse_lines(store, &bytes);
    let mut known: HashSet<&str> = HashSet::with_capacity(queue.tasks.len());
    known.extend(queue.tasks.iter().map(|t| t.task_id.as_str()));
    let mut fresh: Vec<Task> = Vec::with_capacity(tasks.len());
    let mut fresh_ids: HashSet<String> = HashSet::new();
    for t in tasks {
        if known.contains(t.task_id.as_str()) || held_apart(&t.task_id) || !fresh_ids.insert(t.task_id.clone()) {
            continue;
        }
        fresh.push(t);
    }
    drop(known);
    let added: Vec<String> = fresh.iter().map(|t| t.task_id.clone()).collect();
    queue.tasks.extend(fresh);
    let end = start + consumed as u64;
    queue.intake_offset = end;
    let rotate = end > 0 && end == len && consumed == bytes.len();
    if bad_lines > 0 {
        let _ = store.emit(
            EventKind::TaskIntakeBadLines,
            crate::store::events::Severity::Error,
            format!(
                "{bad_lines} line(s) of coordination/task-intake.jsonl are not valid tasks; copies are in coordination/quarantine/"
            ),
            serde_json::json!({"bad_lines": bad_lines}),
        );
    }
    Ok(Some(IntakeFold { added, bad_lines, rotate, remove_folded }))
}

/// The queue and the tasks still in the intake, read consistently (under the shared lock).
pub struct Snapshot {
    pub queue: TaskQueue,
    /// Tasks added but not folded into the queue yet (in order).
    pub pending: Vec<Task>,
}

impl Snapshot {
    /// Every live task: the queue's, then the intake's not already in the queue.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        let in_queue: HashSet<&str> = if self.pending.is_empty() {
            HashSet::new()
        } else {
            self.queue.tasks.iter().map(|t| t.task_id.as_str()).collect()
        };
        self.queue.tasks.iter().chain(self.pending.iter().filter(move |t| !in_queue.contains(t.task_id.as_str())))
    }
}

/// One live task by id, from the queue (read one task at a time, keeping only that one) or the
/// unfolded intake, read consistently like [`snapshot`].
pub fn find(store: &Store, task_id: &str) -> Result<Option<Task>> {
    struct One<'a> {
        id: &'a str,
        found: Option<Task>,
    }
    impl super::journal::Holder for One<'_> {
        fn clear(&mut self) {
            self.found = None;
        }
        fn put(&mut self, t: Task) {
            if t.task_id == self.id {
                self.found = Some(t);
            }
        }
        fn remove(&mut self, task_id: &str) {
            if task_id == self.id {
                self.found = None;
            }
        }
    }
    let _lock = lock_shared(store)?;
    let mut one = One { id: task_id, found: None };
    let head = super::journal::load_into(store, &mut one)?.queue;
    if one.found.is_some() {
        return Ok(one.found);
    }
    let start = unfolded_start(store, &head)?;
    if intake_len(store)? <= start {
        return Ok(None);
    }
    let bytes = read_from(&store.path(TASK_INTAKE), start)?;
    Ok(bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Task>(line).ok())
        .find(|t| t.task_id == task_id))
}

/// Where the unfolded part of the live intake starts for `queue` (as [`snapshot`] reads it) and
/// the live intake's identity (None: no intake file). Call under [`lock_shared`], so a fold's
/// rename cannot fall between the two.
pub(crate) fn unfolded(
    store: &Store,
    queue: &TaskQueue,
) -> Result<(u64, Option<crate::store::identity::FileIdentity>)> {
    let start = unfolded_start(store, queue)?;
    Ok((start, crate::store::identity::FileIdentity::stat(&store.path(TASK_INTAKE))?))
}

/// The tasks of the live intake's complete lines from byte `start` (lines that are not tasks are
/// skipped, as [`snapshot`] skips them; the fold quarantines them) and the offset just after the
/// last complete line. Call under [`lock_shared`].
pub(crate) fn tasks_from(store: &Store, start: u64) -> Result<(Vec<Task>, u64)> {
    let bytes = read_from(&store.path(TASK_INTAKE), start)?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let tasks =
        bytes[..complete].split(|&b| b == b'\n').filter_map(|line| serde_json::from_slice::<Task>(line).ok()).collect();
    Ok((tasks, start + complete as u64))
}

/// Reads the queue and the unfolded intake together.
pub fn snapshot(store: &Store) -> Result<Snapshot> {
    let _lock = lock_shared(store)?;
    let queue: TaskQueue = store.load()?;
    let pending = pending(store, &queue)?;
    Ok(Snapshot { queue, pending })
}

/// The tasks added but not folded into `queue` (its header is enough: `intake_offset`), in
/// order, as [`snapshot`] reads them. Call under [`lock_shared`], after reading the queue.
pub(crate) fn pending(store: &Store, queue: &TaskQueue) -> Result<Vec<Task>> {
    let start = unfolded_start(store, queue)?;
    if intake_len(store)? <= start {
        return Ok(Vec::new());
    }
    let bytes = read_from(&store.path(TASK_INTAKE), start)?;
    Ok(bytes.split(|&b| b == b'\n').filter_map(|line| serde_json::from_slice::<Task>(line).ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::task::ops::{NewTask, add_task};

    use crate::store::fresh_store as store;

    fn add(store: &Store, d: &str) -> Task {
        add_task(store, NewTask { description: d.into(), command: vec!["true".into()], ..NewTask::default() }).unwrap()
    }

    #[test]
    fn a_schema_valid_line_that_is_not_a_task_is_quarantined_not_dropped() {
        // Regression (hostile_files with the coordinator running): a line the schema accepts but
        // the task type cannot read was skipped without a copy, then rotated away with the
        // consumed intake: lost.
        let (_d, store) = store();
        let good = add(&store, "good");
        let mut v = serde_json::to_value(&good).unwrap();
        v["task_id"] = "task-odd".into();
        v["status"] = "completed".into();
        v.as_object_mut().unwrap().remove("completed_at");
        let mut line = serde_json::to_vec(&v).unwrap();
        line.push(b'\n');
        crate::store::jsonl::append_raw(&store.path(TASK_INTAKE), &line).unwrap();
        let mut q: TaskQueue = store.load().unwrap();
        let f = fold(&store, &mut q).unwrap().unwrap();
        assert_eq!(f.added, vec![good.task_id.clone()]);
        let copies: Vec<Vec<u8>> = std::fs::read_dir(store.home().quarantine_dir())
            .unwrap()
            .flatten()
            .map(|e| std::fs::read(e.path()).unwrap())
            .collect();
        assert!(
            copies.iter().any(|c| c.as_slice() == &line[..line.len() - 1]),
            "the bad line is kept in quarantine ({} copies)",
            copies.len()
        );
    }

    #[test]
    fn fold_moves_tasks_once_and_renames_the_consumed_intake() {
        let (_d, store) = store();
        let path = store.path(TASK_INTAKE);
        let a = add(&store, "one");
        let b = add(&store, "two");
        let snap = snapshot(&store).unwrap();
        let ids: Vec<String> = snap.tasks().map(|t| t.task_id.clone()).collect();
        assert_eq!(ids, vec![a.task_id.clone(), b.task_id.clone()]);
        let mut q: TaskQueue = store.load().unwrap();
        let f = fold(&store, &mut q).unwrap().unwrap();
        assert_eq!(f.added.len(), 2);
        assert_eq!(q.intake_offset, std::fs::metadata(&path).unwrap().len());
        // Folding the same lines again (an offset lost with a hand-restored queue) adds nothing.
        drop(f);
        q.intake_offset = 0;
        let f = fold(&store, &mut q).unwrap().unwrap();
        assert!(f.added.is_empty(), "already folded tasks are skipped");
        assert_eq!(q.tasks.len(), 2);
        let guard = store.lock(crate::store::files::TASK_QUEUE).unwrap();
        store.write_locked(&guard, &q).unwrap();
        f.finish(&store, &q).unwrap();
        assert!(!path.exists() && folded_path(&store).exists(), "consumed intake renamed away");
        // New adds go to a new intake, read from its start although the offset counts the old one.
        let c = add(&store, "three");
        let snap = snapshot(&store).unwrap();
        assert_eq!(snap.tasks().count(), 3);
        assert_eq!(snap.pending[0].task_id, c.task_id);
        let f = fold(&store, &mut q).unwrap().unwrap();
        assert_eq!(f.added, vec![c.task_id.clone()]);
        store.write_locked(&guard, &q).unwrap();
        f.finish(&store, &q).unwrap();
        assert_eq!(q.tasks.len(), 3);
        assert!(fold(&store, &mut q).unwrap().is_some_and(|f| f.added.is_empty()));
        drop(guard);
        // A queue reset by hand (the runbook's echo) does not resurrect folded tasks.
        std::fs::write(store.path(crate::store::files::TASK_QUEUE), "{\"tasks\": []}").unwrap();
        let mut q: TaskQueue = store.load().unwrap();
        let d = add(&store, "four");
        let f = fold(&store, &mut q).unwrap().unwrap();
        assert_eq!(f.added, vec![d.task_id], "only the task added after the reset");
    }

    #[test]
    fn bad_line_is_quarantined_and_partial_tail_kept() {
        let (_d, store) = store();
        let path = store.path(TASK_INTAKE);
        add(&store, "one");
        crate::store::jsonl::append_raw(&path, b"{broken\n").unwrap();
        add(&store, "two");
        crate::store::jsonl::append_raw(&path, b"{\"task_id\":\"half").unwrap();
        let mut q: TaskQueue = store.load().unwrap();
        let f = fold(&store, &mut q).unwrap().unwrap();
        assert_eq!((f.added.len(), f.bad_lines), (2, 1));
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(q.intake_offset > 0 && q.intake_offset < len, "partial tail not consumed");
        drop(f);
        assert!(std::fs::read_dir(store.home().quarantine_dir()).unwrap().count() >= 1);
        // The next append starts on a fresh line.
        let three = add(&store, "three");
        let f = fold(&store, &mut q).unwrap().unwrap();
        assert_eq!(f.added, vec![three.task_id]);
    }

    #[test]
    fn a_linked_intake_is_neither_appended_to_nor_read() {
        let (_d, store) = store();
        let path = store.path(TASK_INTAKE);
        let outside = tempfile::tempdir().unwrap();
        // Someone else's file (a shell rc file, say) planted as the intake.
        let decoy = outside.path().join("bashrc");
        std::fs::write(&decoy, "{not a task, but someone's secret}\nexport X=1\n").unwrap();
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&decoy, &path).unwrap();
        let err = add_task(
            &store,
            NewTask { description: "$(touch pwned)".into(), command: vec!["true".into()], ..NewTask::default() },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&decoy).unwrap(), "{not a task, but someone's secret}\nexport X=1\n");
        // The coordinator's fold leaves it alone: nothing of it is copied into quarantine.
        let mut q: TaskQueue = store.load().unwrap();
        assert!(fold(&store, &mut q).unwrap().is_none());
        assert!(q.tasks.is_empty());
        let quarantined = std::fs::read_dir(store.home().quarantine_dir()).map(|d| d.count()).unwrap_or(0);
        assert_eq!(quarantined, 0, "the linked file's lines were copied into quarantine");
    }
}
