//! The live tasks the dashboard's tasks table pages through (`GET /tasks` without `all`), kept
//! as one compact row per task and followed incrementally: the queue is loaded once through a
//! [`Holder`] keeping only the rows, then each request applies only the journal lines appended
//! since its offset and the intake lines appended since its offset; the queue is loaded again
//! only when its snapshot was replaced (a compaction or an operator's edit, told by the file's
//! identity) or its journal no longer continues from the offset. So a request after a change
//! costs the change, and memory is a row per task, not a decoded `Task`.
//!
//! A row keeps the first [`DESCRIPTION_KEPT`] characters of the description (for display and the
//! text search; the task page shows the whole text): a description is unbounded.

use crate::base::clock::Timestamp;
use crate::base::error::Result;
use crate::domain::task::intake;
use crate::domain::task::journal::{self, Holder, JournalPos};
use crate::domain::task::model::{Priority, Task, TaskQueue, TaskStatus};
use crate::store::Store;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

/// Characters of a description a row keeps.
pub(crate) const DESCRIPTION_KEPT: usize = 200;

/// What the tasks table shows of a task and its filters look at.
pub(crate) struct Row {
    pub(crate) task_id: Box<str>,
    /// The first [`DESCRIPTION_KEPT`] characters.
    pub(crate) description: Box<str>,
    pub(crate) description_cut: bool,
    pub(crate) worker_type: Box<str>,
    pub(crate) schedule_id: Option<Box<str>>,
    pub(crate) created_at: Timestamp,
    pub(crate) started_at: Option<Timestamp>,
    pub(crate) completed_at: Option<Timestamp>,
    pub(crate) status: TaskStatus,
    pub(crate) priority: Priority,
    pub(crate) attempts: u32,
    pub(crate) max_attempts: u32,
}

impl Row {
    fn of(t: &Task) -> Row {
        let cut = t.description.char_indices().nth(DESCRIPTION_KEPT).map(|(i, _)| i);
        Row {
            task_id: t.task_id.as_str().into(),
            description: t.description[..cut.unwrap_or(t.description.len())].into(),
            description_cut: cut.is_some(),
            worker_type: t.worker_type.as_str().into(),
            schedule_id: t.schedule_id.as_deref().map(Into::into),
            created_at: t.created_at,
            started_at: t.started_at(),
            completed_at: t.completed_at(),
            status: t.status(),
            priority: t.priority,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
        }
    }

    /// The row as the tasks table reads it (`description_truncated` when the text was cut).
    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({
            "task_id": self.task_id,
            "status": self.status.as_str(),
            "priority": self.priority.as_str(),
            "worker_type": self.worker_type,
            "description": self.description,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "created_at": crate::base::clock::format_ts(self.created_at),
            "started_at": self.started_at.map(crate::base::clock::format_ts),
            "completed_at": self.completed_at.map(crate::base::clock::format_ts),
            "schedule_id": self.schedule_id,
        });
        if self.description_cut {
            v["description_truncated"] = Value::Bool(true);
        }
        v
    }
}

/// Where a row is in the order: its creation time, then the order it was first seen in (the
/// queue's order, then the intake's), as a stable sort by `created_at` leaves them.
type Key = (Timestamp, u64);

/// The rows, oldest first, with an index by id.
#[derive(Default)]
struct Rows {
    order: BTreeMap<Key, Row>,
    keys: HashMap<Box<str>, Key>,
    next: u64,
    /// Ids of rows read from the intake that the queue does not hold yet.
    pending: HashSet<Box<str>>,
}

impl Rows {
    fn insert(&mut self, row: Row) {
        match self.keys.get(&row.task_id).copied() {
            Some(key) if key.0 == row.created_at => {
                self.order.insert(key, row);
            }
            old => {
                if let Some(old) = old {
                    self.order.remove(&old);
                }
                let key = (row.created_at, self.next);
                self.next += 1;
                self.keys.insert(row.task_id.clone(), key);
                self.order.insert(key, row);
            }
        }
    }

    /// A task of the unfolded intake: kept unless the queue holds its id.
    fn put_pending(&mut self, task: &Task) {
        if !self.keys.contains_key(task.task_id.as_str()) {
            self.pending.insert(task.task_id.as_str().into());
            self.insert(Row::of(task));
        }
    }

    /// Forgets the intake's rows the queue does not hold (the intake is read again).
    fn drop_pending(&mut self) {
        for id in std::mem::take(&mut self.pending) {
            if let Some(key) = self.keys.remove(&id) {
                self.order.remove(&key);
            }
        }
    }
}

impl Holder for Rows {
    fn clear(&mut self) {
        *self = Rows::default();
    }
    fn put(&mut self, task: Task) {
        self.pending.remove(task.task_id.as_str());
        self.insert(Row::of(&task));
    }
    fn remove(&mut self, task_id: &str) {
        self.pending.remove(task_id);
        if let Some(key) = self.keys.remove(task_id) {
            self.order.remove(&key);
        }
    }
}

/// Where the rows read from the intake end: the unfolded part's start, the intake's (device,
/// inode), and the offset after the last line read.
#[derive(Clone, Copy, PartialEq)]
struct IntakeAt {
    start: u64,
    file: Option<(u64, u64)>,
    read_to: u64,
}

/// The rows with the queue's header and the positions they were read up to.
struct Followed {
    rows: Rows,
    head: TaskQueue,
    pos: JournalPos,
    intake: Option<IntakeAt>,
    /// Whole loads of the queue so far (tests tell an incremental request from a reload).
    loads: u64,
}

/// The live tasks (queue and unfolded intake, as `cortex task list` reads them, oldest first),
/// followed by offset (see the module's doc).
#[derive(Default)]
pub(crate) struct LiveTasks {
    followed: std::sync::Mutex<Option<Followed>>,
}

impl LiveTasks {
    /// A page of the live tasks, as `ops::list_tasks` pages them (oldest first; after `after_id`
    /// by position, else by id), keeping those `keep` accepts: the rows and the id to go on from.
    pub(crate) fn page(
        &self,
        store: &Store,
        after_id: Option<&str>,
        limit: usize,
        keep: impl Fn(&Row) -> bool,
    ) -> Result<(Vec<Value>, Option<String>)> {
        let mut guard = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let followed = refresh(&mut guard, store)?;
        let rows = &followed.rows;
        let (iter, by_id): (Box<dyn Iterator<Item = &Row>>, Option<&str>) =
            match after_id.map(|a| (a, rows.keys.get(a))) {
                None => (Box::new(rows.order.values()), None),
                Some((_, Some(key))) => {
                    (Box::new(rows.order.range((Bound::Excluded(*key), Bound::Unbounded)).map(|(_, r)| r)), None)
                }
                Some((a, None)) => (Box::new(rows.order.values()), Some(a)),
            };
        let mut out = Vec::new();
        let mut last = None;
        for r in iter {
            if by_id.is_some_and(|a| &*r.task_id <= a) || !keep(r) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, last));
            }
            last = Some(r.task_id.to_string());
            out.push(r.to_json());
        }
        Ok((out, None))
    }

    /// How many times the queue was loaded whole so far (0 before the first request).
    #[cfg(test)]
    pub(crate) fn loads(&self) -> u64 {
        self.followed.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |f| f.loads)
    }
}

/// Returns the heap the whole read freed (the snapshot's bytes, each task decoded on its way to
/// a row) to the system, so the API's resident size is its rows, not its peak.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Brings the rows up to date: the journal lines and intake lines appended since they were read;
/// the whole queue again when its snapshot was replaced or its journal does not continue.
fn refresh<'a>(slot: &'a mut Option<Followed>, store: &Store) -> Result<&'a mut Followed> {
    // Under the intake's shared lock, as `intake::snapshot`: the queue and the unfolded intake
    // are seen together (a fold's read and rename hold it exclusive).
    let _lock = intake::lock_shared(store)?;
    let current = match slot.as_mut() {
        Some(f) if journal::snapshot_is_current(store, &f.pos) => {
            journal::unchanged(store, &f.pos) || journal::catch_up_into(store, &mut f.rows, &mut f.head, &mut f.pos)?
        }
        _ => false,
    };
    let f = match slot.take() {
        Some(f) if current => slot.insert(f),
        old => {
            let loads = old.as_ref().map_or(0, |f| f.loads);
            // The old rows go before the new are read: never both held.
            drop(old);
            let mut rows = Rows::default();
            let loaded = journal::load_into(store, &mut rows)?;
            give_back_freed_memory();
            tracing::debug!("GET /tasks: the queue loaded whole ({} tasks, load {})", rows.keys.len(), loads + 1);
            slot.insert(Followed { rows, head: loaded.queue, pos: loaded.pos, intake: None, loads: loads + 1 })
        }
    };
    let (start, identity) = intake::unfolded(store, &f.head)?;
    let file = identity.map(|i| (i.dev, i.ino));
    let len = identity.map_or(0, |i| i.len);
    let from = match f.intake {
        Some(at) if at.start == start && at.file == file && len >= at.read_to => at.read_to,
        _ => {
            f.rows.drop_pending();
            start
        }
    };
    let mut read_to = from;
    if len > from {
        let (tasks, end) = intake::tasks_from(store, from)?;
        for t in &tasks {
            f.rows.put_pending(t);
        }
        read_to = end;
    }
    f.intake = Some(IntakeAt { start, file, read_to });
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::task::ops::{NewTask, add_task, cancel_task};
    use crate::store::fresh_store;

    fn add(store: &Store, d: &str) -> Task {
        add_task(store, NewTask { description: d.into(), command: vec!["true".into()], ..NewTask::default() }).unwrap()
    }

    /// The whole live list as (id, status, description) in page order.
    fn all(live: &LiveTasks, store: &Store) -> Vec<(String, String, String)> {
        let (rows, next) = live.page(store, None, 500, |_| true).unwrap();
        assert!(next.is_none());
        rows.iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap().to_string();
                (s("task_id"), s("status"), s("description"))
            })
            .collect()
    }

    /// A queue with a snapshot of its own (a generation that takes journal lines) holding `tasks`.
    fn queue_of(store: &Store, tasks: Vec<Task>) {
        journal::write_snapshot(store, &TaskQueue { tasks, ..TaskQueue::default() }).unwrap();
    }

    #[test]
    fn a_task_added_or_cancelled_after_a_request_shows_on_the_next_without_a_reload() {
        let (_d, store) = fresh_store();
        queue_of(&store, Vec::new());
        let a = add(&store, "first");
        let live = LiveTasks::default();
        assert_eq!(all(&live, &store), vec![(a.task_id.clone(), "queued".into(), "first".into())]);
        // Folded into the queue (a journal commit) by the cancel, which the next request reads
        // by offset: the row changes status, in place.
        let b = add(&store, "second");
        cancel_task(&store, &a.task_id, "test", std::time::Duration::from_secs(5)).unwrap();
        let c = add(&store, "third");
        let now = all(&live, &store);
        assert_eq!(
            now,
            vec![
                (a.task_id.clone(), "cancelled".into(), "first".into()),
                (b.task_id.clone(), "queued".into(), "second".into()),
                (c.task_id.clone(), "queued".into(), "third".into()),
            ]
        );
        assert_eq!(live.loads(), 1, "the changes were applied by offset, the queue loaded once");
        // Paging goes on after an id by position.
        let (page, next) = live.page(&store, Some(&a.task_id), 1, |_| true).unwrap();
        assert_eq!(page[0]["task_id"], b.task_id.as_str());
        assert_eq!(next.as_deref(), Some(b.task_id.as_str()));
    }

    #[test]
    fn a_replaced_snapshot_is_loaded_again() {
        let (_d, store) = fresh_store();
        let mut a = add(&store, "before");
        let b = add(&store, "kept");
        let live = LiveTasks::default();
        assert_eq!(all(&live, &store).len(), 2);
        // A compaction (or an operator) replaces the snapshot: one task changed, one gone, and
        // the intake folded away.
        let folded = store.path(crate::store::files::TASK_INTAKE);
        let len = std::fs::metadata(&folded).unwrap().len();
        a.description = "after".into();
        journal::write_snapshot(
            &store,
            &TaskQueue { tasks: vec![a.clone()], intake_offset: len, ..TaskQueue::default() },
        )
        .unwrap();
        assert_eq!(all(&live, &store), vec![(a.task_id.clone(), "queued".into(), "after".into())], "{b:?} gone");
        assert_eq!(live.loads(), 2);
    }

    #[test]
    fn a_long_description_is_kept_cut() {
        let (_d, store) = fresh_store();
        let long = "é".repeat(DESCRIPTION_KEPT + 50);
        add(&store, &long);
        let live = LiveTasks::default();
        let (rows, _) = live.page(&store, None, 10, |_| true).unwrap();
        assert_eq!(rows[0]["description"].as_str().unwrap().chars().count(), DESCRIPTION_KEPT);
        assert_eq!(rows[0]["description_truncated"], true);
    }
}
