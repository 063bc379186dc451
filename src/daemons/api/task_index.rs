//! The live tasks the dashboard's tasks table pages through (`GET /tasks` without `all`), kept
//! as one compact row per task and followed incrementally: the queue is loaded once through a
//! [`journal::Holder`] keeping only the rows, then each request applies only the journal lines appended
//! since its offset and the intake lines appended since its offset; the queue is loaded again
//! only when its snapshot was replaced (a compaction or an operator's edit, told by the file's
//! identity) or its journal no longer continues from the offset. So a request after a change
//! costs the change, and memory is a row per task, not a decoded `Task`.
//!
//! The rows themselves are [`Rows`]: fixed-size slots, their text in one arena.

use super::task_rows::{Row, Rows};
use crate::base::clock::Timestamp;
use crate::base::error::Result;
use crate::domain::task::intake;
use crate::domain::task::journal::{self, JournalPos};
use crate::domain::task::model::TaskQueue;
use crate::store::Store;
use serde_json::Value;

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
        keep: impl Fn(&Row<'_>) -> bool,
    ) -> Result<(Vec<Value>, Option<String>)> {
        let mut guard = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let followed = refresh(&mut guard, store)?;
        let rows = &followed.rows;
        let (iter, by_id): (Box<dyn Iterator<Item = Row<'_>>>, Option<&str>) =
            match after_id.map(|a| (a, rows.iter_after(a))) {
                None => (Box::new(rows.iter()), None),
                Some((_, Some(after))) => (Box::new(after), None),
                Some((a, None)) => (Box::new(rows.iter()), Some(a)),
            };
        let mut out = Vec::new();
        let mut last = None;
        for r in iter {
            if by_id.is_some_and(|a| r.task_id() <= a) || !keep(&r) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, last));
            }
            last = Some(r.task_id().to_string());
            out.push(r.to_json());
        }
        Ok((out, None))
    }

    /// The creation time of each of `ids` that is a live task (None for the others).
    pub(crate) fn created(&self, store: &Store, ids: &[&str]) -> Result<Vec<Option<Timestamp>>> {
        let mut guard = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let rows = &refresh(&mut guard, store)?.rows;
        Ok(ids.iter().map(|id| rows.get(id).map(|r| r.created_at())).collect())
    }

    /// How many times the queue was loaded whole so far (0 before the first request).
    #[cfg(test)]
    pub(crate) fn loads(&self) -> u64 {
        self.followed.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |f| f.loads)
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
            rows.shrink();
            crate::base::heap::give_back_freed_memory();
            tracing::debug!(
                "GET /tasks: the queue loaded whole ({} tasks, {} KiB of rows, load {})",
                rows.len(),
                rows.bytes() / 1024,
                loads + 1
            );
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
    use crate::domain::task::model::Task;
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
        let long = "é".repeat(super::super::task_rows::DESCRIPTION_KEPT + 50);
        add(&store, &long);
        let live = LiveTasks::default();
        let (rows, _) = live.page(&store, None, 10, |_| true).unwrap();
        assert_eq!(rows[0]["description"].as_str().unwrap().chars().count(), super::super::task_rows::DESCRIPTION_KEPT);
        assert_eq!(rows[0]["description_truncated"], true);
    }
}
