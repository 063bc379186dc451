//! The coordinator's parked tasks: waiting tasks that cannot be dispatched before a known time
//! (a queued task's `--delay` whose waiting reason `delay` is recorded, a pending retry's
//! `next_retry_at`), held apart from the working queue the cycle plans over, ordered by that
//! time. A cycle's in-memory work (the intake fold, the ends, the plan, the counts) then costs
//! what can move, not the backlog: a backlog of tasks not yet due is looked at only when its
//! earliest task falls due ([`Parked::unpark_due`]).
//!
//! A parked task is exactly what the plan would leave alone: its due time is in the future, so
//! [`super::plan::plan`] would record the waiting reason it already has and dispatch nothing.
//! Parked tasks are still in the queue: they are written at a compaction ([`Parked::lines`]),
//! counted ([`Parked::counts`]), found as `--after` prerequisites and as known ids by the intake
//! fold, and a journal line others append for one (a cancel, a retry) brings it back first
//! ([`Parked::take`]).
//!
//! Memory: a parked task is not held decoded. One read from the snapshot is held as where its
//! text is in that file (the coordinator keeps the snapshot it read open; the file is never
//! written in place, and a compaction or a snapshot replaced by anyone else makes the
//! coordinator load again), one parked later as its compact JSON line: about 150 bytes per task
//! read from the snapshot (its id twice, its due time, an offset), the line's length more for
//! the others.

use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::domain::task::journal::Holder;
use crate::domain::task::model::{QueueCounts, Task, TaskState, TaskStatus, WaitingReason};
use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::FileExt;

/// Where a parked task's compact JSON line is.
#[derive(Debug)]
enum Line {
    /// In the snapshot file held open: offset and length.
    Snapshot(u64, u32),
    /// In memory.
    Held(Box<[u8]>),
}

/// One parked task: its due time, status (for `--after` lookups) and line.
#[derive(Debug)]
struct Entry {
    due: Timestamp,
    status: TaskStatus,
    line: Line,
}

/// Parked tasks by id and by due time, with their counts kept as they move.
#[derive(Debug, Default)]
pub(crate) struct Parked {
    tasks: HashMap<Box<str>, Entry>,
    by_due: BTreeSet<(Timestamp, Box<str>)>,
    counts: QueueCounts,
    /// The snapshot file the [`Line::Snapshot`] entries point into.
    snapshot: Option<std::fs::File>,
}

/// When a task may be parked: its due time, if it is after `now` and the plan would record
/// nothing new on it (a queued task waiting for its delay with the reason `delay` recorded, a
/// pending retry without a waiting reason).
pub(crate) fn parkable_until(t: &Task, now: Timestamp) -> Option<Timestamp> {
    let due = match &t.state {
        TaskState::Queued { waiting_reason: Some(WaitingReason::Delay) } => t.not_before?,
        TaskState::PendingRetry { next_retry_at, waiting_reason: None, .. } => *next_retry_at,
        _ => return None,
    };
    (due > now).then_some(due)
}

impl Parked {
    /// Moves the tasks of `tasks` that can be parked at `now` out of it (the others keep their
    /// order).
    pub(crate) fn park_from(&mut self, tasks: &mut Vec<Task>, now: Timestamp) -> Result<()> {
        if !tasks.iter().any(|t| parkable_until(t, now).is_some()) {
            return Ok(());
        }
        for t in std::mem::take(tasks) {
            match parkable_until(&t, now) {
                Some(due) => {
                    let line = serde_json::to_vec(&t).map_err(|e| Error::encode(format!("task {}", t.task_id), e))?;
                    self.insert(due, &t, Line::Held(line.into_boxed_slice()));
                }
                None => tasks.push(t),
            }
        }
        Ok(())
    }

    fn insert(&mut self, due: Timestamp, t: &Task, line: Line) {
        let id: Box<str> = t.task_id.as_str().into();
        self.counts.add(t);
        self.by_due.insert((due, id.clone()));
        let entry = Entry { due, status: t.status(), line };
        if let Some(old) = self.tasks.insert(id, entry) {
            // Not expected (ids are unique in a queue); kept consistent all the same.
            self.by_due.remove(&(old.due, t.task_id.as_str().into()));
            self.by_due.insert((due, t.task_id.as_str().into()));
            if let Ok(old) = self.decode(&old.line) {
                self.counts.remove(&old);
            }
        }
    }

    fn bytes<'a>(&'a self, line: &'a Line) -> Result<std::borrow::Cow<'a, [u8]>> {
        match line {
            Line::Held(b) => Ok(std::borrow::Cow::Borrowed(b)),
            Line::Snapshot(offset, len) => {
                let f = self.snapshot.as_ref().ok_or_else(|| Error::other("a parked task's snapshot is not open"))?;
                let mut buf = vec![0u8; *len as usize];
                f.read_exact_at(&mut buf, *offset).map_err(|e| {
                    Error::other(format!("cannot read a parked task back from the queue's snapshot: {e}"))
                })?;
                Ok(std::borrow::Cow::Owned(buf))
            }
        }
    }

    fn decode(&self, line: &Line) -> Result<Task> {
        let bytes = self.bytes(line)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::other(format!("a parked task's line does not read back as a task: {e}")))
    }

    /// Moves the tasks due at `now` back into `tasks` (appended, earliest first); returns how
    /// many.
    pub(crate) fn unpark_due(&mut self, tasks: &mut Vec<Task>, now: Timestamp) -> Result<usize> {
        let mut n = 0;
        while let Some((due, id)) = self.by_due.first()
            && *due <= now
        {
            let id = id.clone();
            tasks.extend(self.take(&id)?);
            n += 1;
        }
        Ok(n)
    }

    /// Takes a parked task out (to change it); None when it is not parked.
    pub(crate) fn take(&mut self, task_id: &str) -> Result<Option<Task>> {
        let Some(entry) = self.tasks.remove(task_id) else { return Ok(None) };
        self.by_due.remove(&(entry.due, task_id.into()));
        let t = self.decode(&entry.line)?;
        self.counts.remove(&t);
        Ok(Some(t))
    }

    pub(crate) fn contains(&self, task_id: &str) -> bool {
        self.tasks.contains_key(task_id)
    }

    /// The status of a parked task (queued or pending retry), for `--after` lookups.
    pub(crate) fn status(&self, task_id: &str) -> Option<TaskStatus> {
        self.tasks.get(task_id).map(|e| e.status)
    }

    /// The earliest time a parked task falls due.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        self.by_due.first().map(|(due, _)| *due)
    }

    #[cfg(any(test, debug_assertions))]
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The parked tasks' counts (kept as they are parked and taken back).
    pub(crate) fn counts(&self) -> &QueueCounts {
        &self.counts
    }

    /// Every parked task's compact JSON line, in due order (a compaction writes them after the
    /// working queue's tasks).
    pub(crate) fn lines(&self) -> impl Iterator<Item = Result<std::borrow::Cow<'_, [u8]>>> {
        self.by_due.iter().filter_map(|(_, id)| self.tasks.get(id)).map(|e| {
            let bytes = self.bytes(&e.line)?;
            if !bytes.contains(&b'\n') {
                return Ok(bytes);
            }
            // From a pretty-printed snapshot: one line again.
            let task = self.decode(&e.line)?;
            let line = serde_json::to_vec(&task).map_err(|err| Error::encode(format!("task {}", task.task_id), err))?;
            Ok(std::borrow::Cow::Owned(line))
        })
    }

    /// Every parked task, decoded (the debug builds' check of what is on disk).
    #[cfg(debug_assertions)]
    pub(crate) fn tasks(&self) -> Vec<Task> {
        self.by_due.iter().filter_map(|(_, id)| self.tasks.get(id)).filter_map(|e| self.decode(&e.line).ok()).collect()
    }
}

/// A full load of the queue for the coordinator ([`crate::domain::task::journal::load_into`]):
/// the tasks not due at `now` parked as they are read (a task read from the snapshot as where its
/// line is), the others into the working queue in order.
pub(crate) struct Loading<'a> {
    pub(crate) now: Timestamp,
    pub(crate) parked: &'a mut Parked,
    working: Vec<Option<Task>>,
    index: HashMap<String, usize>,
}

impl<'a> Loading<'a> {
    pub(crate) fn new(now: Timestamp, parked: &'a mut Parked) -> Self {
        Loading { now, parked, working: Vec::new(), index: HashMap::new() }
    }

    /// The working queue's tasks.
    pub(crate) fn into_working(self) -> Vec<Task> {
        self.working.into_iter().flatten().collect()
    }

    fn working_push(&mut self, task: Task) {
        self.index.insert(task.task_id.clone(), self.working.len());
        self.working.push(Some(task));
    }
}

impl Holder for Loading<'_> {
    fn clear(&mut self) {
        *self.parked = Parked::default();
        self.working.clear();
        self.index.clear();
    }

    fn snapshot_opened(&mut self, file: &std::fs::File) {
        self.parked.snapshot = file.try_clone().ok();
    }

    fn put_snapshot_line(&mut self, task: Task, offset: u64, len: u32) {
        match parkable_until(&task, self.now) {
            Some(due) if self.parked.snapshot.is_some() => self.parked.insert(due, &task, Line::Snapshot(offset, len)),
            _ => self.put_new(task),
        }
    }

    fn put_new(&mut self, task: Task) {
        match parkable_until(&task, self.now).and_then(|due| Some((due, serde_json::to_vec(&task).ok()?))) {
            Some((due, line)) => self.parked.insert(due, &task, Line::Held(line.into_boxed_slice())),
            None => self.working_push(task),
        }
    }

    fn put(&mut self, task: Task) {
        if let Some(&i) = self.index.get(&task.task_id) {
            self.working[i] = Some(task);
            return;
        }
        if let Some(old) = self.parked.tasks.remove(task.task_id.as_str()) {
            self.parked.by_due.remove(&(old.due, task.task_id.as_str().into()));
            if let Ok(old) = self.parked.decode(&old.line) {
                self.parked.counts.remove(&old);
            }
        }
        self.put_new(task);
    }

    fn remove(&mut self, task_id: &str) {
        if let Some(i) = self.index.remove(task_id) {
            self.working[i] = None;
        } else if let Some(old) = self.parked.tasks.remove(task_id) {
            self.parked.by_due.remove(&(old.due, task_id.into()));
            if let Ok(old) = self.parked.decode(&old.line) {
                self.parked.counts.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn task(id: &str, state: TaskState, not_before: Option<Timestamp>) -> Task {
        Task { task_id: id.into(), state, not_before, ..Task::sample(id) }
    }

    #[test]
    fn parks_only_what_the_plan_leaves_alone_and_unparks_in_due_order() {
        let now = crate::base::clock::now();
        let later = now + Duration::seconds(60);
        let delay = TaskState::Queued { waiting_reason: Some(WaitingReason::Delay) };
        let mut tasks = vec![
            task("a", delay.clone(), Some(now + Duration::seconds(120))),
            task("b", TaskState::Queued { waiting_reason: None }, Some(later)),
            task("c", delay.clone(), Some(later)),
            task("d", delay.clone(), Some(now - Duration::seconds(1))),
            task("e", TaskState::Queued { waiting_reason: None }, None),
        ];
        let a = tasks[0].clone();
        let mut p = Parked::default();
        p.park_from(&mut tasks, now).unwrap();
        let left: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        assert_eq!(left, ["b", "d", "e"], "a reason not yet recorded, a due task and an undelayed one stay");
        assert_eq!(p.len(), 2);
        assert_eq!(p.counts().total, 2);
        assert_eq!(p.counts().queued, 2);
        assert_eq!(p.counts().waiting.get("delay"), Some(&2));
        assert_eq!(p.next_due(), Some(later));
        assert_eq!(p.status("a"), Some(TaskStatus::Queued));
        assert_eq!(p.lines().count(), 2);
        assert_eq!(p.unpark_due(&mut tasks, now).unwrap(), 0);
        assert_eq!(p.unpark_due(&mut tasks, later).unwrap(), 1);
        assert_eq!(tasks.last().map(|t| t.task_id.as_str()), Some("c"));
        assert_eq!(p.take("a").unwrap(), Some(a), "a parked task reads back whole");
        assert_eq!(p.len(), 0);
        assert_eq!(p.counts(), &QueueCounts { waiting: Default::default(), ..QueueCounts::default() });
        assert_eq!(p.next_due(), None);
    }
}
