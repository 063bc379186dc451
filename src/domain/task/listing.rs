//! `cortex task list` (and the API's archive listing) over a queue of any length: the exact live
//! view — the snapshot, its journal, the unfolded intake — read once, one task at a time, keeping
//! only what the listing needs.
//!
//! The snapshot is streamed (`snapshot_read`, through [`Holder::take_snapshot_text`]): of each
//! task line only `task_id`, `status`, `worker_type` and `created_at` are decoded. A task the
//! filter keeps is held as its sort key and its place in the snapshot (~40 bytes); every task as a
//! 128-bit keyed hash of its id (16 bytes), so the journal's changes and removals and the intake's
//! tasks find their place in the fold order afterwards; the journal's records are held whole
//! (O(journal)). Then the page is chosen by key, and only the tasks printed are read back by
//! offset from the snapshot file kept open (a compaction renaming a new one in does not move
//! them), checked against the queue schema's `$defs/task` and decoded whole. Memory: ~16 bytes
//! per queued task, ~40 per task the filter keeps, the journal's changed records, the page; plus
//! the snapshot's bytes while it is read.
//!
//! The order is the one the whole load gave (the queue in fold order — snapshot lines, a journal
//! record replacing its task in place or appended, a removal dropping it — then the intake's
//! tasks not in the queue; the filter; a stable sort by `created_at`): the key is `created_at`
//! and the place in that fold order. Two different ids taken for one would need their 128-bit
//! hashes, keyed at random per process, to collide.

use super::intake;
use super::journal::{self, Holder};
use super::model::{Task, TaskStatus};
use super::ops::TaskFilter;
use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::store::Store;
use crate::store::files::TASK_QUEUE;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

/// What a task line is decoded into while the snapshot streams.
#[derive(Deserialize)]
struct Light<'a> {
    #[serde(borrow)]
    task_id: Cow<'a, str>,
    #[serde(borrow)]
    worker_type: Cow<'a, str>,
    status: TaskStatus,
    #[serde(with = "crate::base::clock::ts")]
    created_at: Timestamp,
}

/// The four fields a listing needs, read straight from a task's compact JSON by a scan of its
/// top-level keys (strings and nesting tracked, nothing else decoded): about a third of a serde
/// pass. None unless the text is that simple — each key once, the four values plain strings
/// (no escape, no control character), a known status, a time `parse_ts` reads — and then the
/// serde decode ([`Light`]) reads it. The scan does not validate the rest of the line: a task
/// that is printed is read back and checked whole ([`read_line`]).
fn quick(text: &str) -> Option<(&str, &str, TaskStatus, Timestamp)> {
    let b = text.as_bytes();
    let ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
            *i += 1;
        }
    };
    // A plain string at `i` (its opening quote): its content and the index after it.
    let plain = |i: usize| -> Option<(&str, usize)> {
        let start = i + 1;
        let len = b.get(start..)?.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        (b[start + len] == b'"').then(|| (&text[start..start + len], start + len + 1))
    };
    // Skips the value at `i`; the index after it.
    let skip = |mut i: usize| -> Option<usize> {
        let mut depth = 0usize;
        loop {
            match *b.get(i)? {
                b'"' => {
                    i += 1;
                    loop {
                        match *b.get(i)? {
                            b'\\' => i += 2,
                            b'"' => break,
                            _ => i += 1,
                        }
                    }
                    i += 1;
                }
                b'{' | b'[' => {
                    depth += 1;
                    i += 1;
                }
                b'}' | b']' | b',' if depth == 0 => return Some(i),
                b'}' | b']' => {
                    depth -= 1;
                    i += 1;
                }
                _ => i += 1,
            }
            if depth == 0 && matches!(b.get(i), Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                return Some(i);
            }
        }
    };
    let (mut id, mut wt, mut status, mut created) = (None, None, None, None);
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut i = 1;
    ws(&mut i);
    if b.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        ws(&mut i);
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (key, after) = plain(i)?;
        i = after;
        ws(&mut i);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        ws(&mut i);
        let slot = match key {
            "task_id" => Some(&mut id),
            "worker_type" => Some(&mut wt),
            "status" => Some(&mut status),
            "created_at" => Some(&mut created),
            _ => None,
        };
        match slot {
            Some(slot) => {
                if slot.is_some() || b.get(i) != Some(&b'"') {
                    return None;
                }
                let (value, after) = plain(i)?;
                *slot = Some(value);
                i = after;
            }
            None => i = skip(i)?,
        }
        ws(&mut i);
        match b.get(i)? {
            b',' => i += 1,
            b'}' => break,
            _ => return None,
        }
    }
    i += 1;
    ws(&mut i);
    if i != b.len() {
        return None;
    }
    let status = TaskStatus::ALL.into_iter().find(|s| Some(s.as_str()) == status)?;
    Some((id?, wt?, status, crate::base::clock::parse_ts(created?)?))
}

/// Where a listed task is read from.
enum Src {
    /// Its compact JSON in the snapshot.
    Line { offset: u64, len: u32 },
    /// Held whole (a journal record, an intake task, a snapshot read whole).
    Held(Box<Task>),
    /// Replaced or removed by the journal.
    Gone,
}

/// A task the filter keeps: its sort key and where it is.
struct Entry {
    created_at: Timestamp,
    /// Its place in the fold order.
    pos: u32,
    /// Its id, held only when the listing is in id order (with the archive).
    id: Option<Box<str>>,
    /// It is the task `after_id` names / its id sorts after `after_id`.
    is_after: bool,
    id_after: bool,
    src: Src,
}

/// What the journal did, in order, applied once the snapshot is read.
enum JournalOp {
    Put(Box<Task>),
    Remove(String),
}

/// The task ids' 128-bit hash, keyed at random for this process.
struct IdHash(RandomState, RandomState);

impl IdHash {
    fn new() -> IdHash {
        IdHash(RandomState::new(), RandomState::new())
    }
    fn of(&self, id: &str) -> u128 {
        ((self.0.hash_one(id) as u128) << 64) | self.1.hash_one(id) as u128
    }
}

/// The [`Holder`] the queue is read into.
struct Scan<'f> {
    filter: &'f TaskFilter,
    by_id: bool,
    hash: IdHash,
    /// Every snapshot task's id hash, by its place.
    ids: Vec<u128>,
    /// The tasks the filter keeps, by place.
    entries: Vec<Entry>,
    journal: Vec<JournalOp>,
    file: Option<std::fs::File>,
}

impl<'f> Scan<'f> {
    fn new(filter: &'f TaskFilter, by_id: bool) -> Scan<'f> {
        Scan {
            filter,
            by_id,
            hash: IdHash::new(),
            ids: Vec::new(),
            entries: Vec::new(),
            journal: Vec::new(),
            file: None,
        }
    }

    fn keeps(&self, status: TaskStatus, worker_type: &str) -> bool {
        self.filter.status.is_none_or(|s| s == status)
            && self.filter.worker_type.as_deref().is_none_or(|w| w == worker_type)
    }

    /// The entry of a task at `pos` if the filter keeps it.
    fn entry(
        &self,
        pos: u32,
        id: &str,
        status: TaskStatus,
        worker_type: &str,
        created_at: Timestamp,
        src: Src,
    ) -> Option<Entry> {
        if !self.keeps(status, worker_type) {
            return None;
        }
        let after = self.filter.after_id.as_deref();
        Some(Entry {
            created_at,
            pos,
            id: self.by_id.then(|| id.into()),
            is_after: after == Some(id),
            id_after: after.is_none_or(|a| id > a),
            src,
        })
    }

    fn held(&self, pos: u32, task: Task) -> Option<Entry> {
        let (status, created_at) = (task.status(), task.created_at);
        let id = task.task_id.clone();
        let wt = task.worker_type.clone();
        self.entry(pos, &id, status, &wt, created_at, Src::Held(Box::new(task)))
    }

    fn next_pos(&self) -> Result<u32> {
        u32::try_from(self.ids.len()).map_err(|_| Error::other("more than 4 billion queued tasks"))
    }
}

impl Holder for Scan<'_> {
    fn clear(&mut self) {
        self.ids.clear();
        self.entries.clear();
        self.journal.clear();
        self.file = None;
    }
    fn snapshot_opened(&mut self, file: &std::fs::File) {
        self.file = file.try_clone().ok();
    }
    /// The four fields read from the text (see [`quick`]); a text not read so is checked,
    /// decoded and given to [`Holder::put_snapshot_line`].
    fn take_snapshot_text(&mut self, text: &str, offset: u64) -> bool {
        let (Ok(pos), Ok(len)) = (self.next_pos(), u32::try_from(text.len())) else { return false };
        let light;
        let (id, worker_type, status, created_at) = match quick(text) {
            Some(fields) => fields,
            None => match serde_json::from_str::<Light>(text) {
                Ok(l) => {
                    light = l;
                    (&*light.task_id, &*light.worker_type, light.status, light.created_at)
                }
                Err(_) => return false,
            },
        };
        if let Some(e) = self.entry(pos, id, status, worker_type, created_at, Src::Line { offset, len }) {
            self.entries.push(e);
        }
        self.ids.push(self.hash.of(id));
        true
    }
    fn put_snapshot_line(&mut self, task: Task, offset: u64, len: u32) {
        let Ok(pos) = self.next_pos() else { return };
        self.ids.push(self.hash.of(&task.task_id));
        let (status, created_at) = (task.status(), task.created_at);
        if let Some(e) =
            self.entry(pos, &task.task_id, status, &task.worker_type, created_at, Src::Line { offset, len })
        {
            self.entries.push(e);
        }
    }
    /// A snapshot read whole (not in the writers' layout).
    fn put_new(&mut self, task: Task) {
        let Ok(pos) = self.next_pos() else { return };
        self.ids.push(self.hash.of(&task.task_id));
        if let Some(e) = self.held(pos, task) {
            self.entries.push(e);
        }
    }
    fn put(&mut self, task: Task) {
        self.journal.push(JournalOp::Put(Box::new(task)));
    }
    fn remove(&mut self, task_id: &str) {
        self.journal.push(JournalOp::Remove(task_id.to_string()));
    }
}

/// What the journal changed: the places it replaced or removed, those it removed, and the
/// entries of the records it wrote that the filter keeps, by place.
#[derive(Default)]
struct Changed {
    touched: HashSet<u32>,
    removed: HashSet<u32>,
    held: HashMap<u32, Entry>,
}

impl Scan<'_> {
    /// Applies the journal's operations in order, as the whole load does: a record replaces the
    /// task its id names (the last of that id in the snapshot) in place, or is appended; a
    /// removal drops it.
    fn apply_journal(&mut self) -> Result<Changed> {
        let ops = std::mem::take(&mut self.journal);
        let mut changed = Changed::default();
        if ops.is_empty() {
            return Ok(changed);
        }
        let named: HashSet<u128> = ops
            .iter()
            .map(|op| match op {
                JournalOp::Put(t) => self.hash.of(&t.task_id),
                JournalOp::Remove(id) => self.hash.of(id),
            })
            .collect();
        // The place of each id the journal names (the last, as the load's index keeps it).
        let mut index: HashMap<u128, u32> = HashMap::with_capacity(named.len());
        for (pos, h) in self.ids.iter().enumerate() {
            if named.contains(h) {
                index.insert(*h, pos as u32);
            }
        }
        for op in ops {
            match op {
                JournalOp::Put(t) => {
                    let h = self.hash.of(&t.task_id);
                    let pos = match index.get(&h) {
                        Some(&p) => p,
                        None => {
                            let p = self.next_pos()?;
                            self.ids.push(h);
                            index.insert(h, p);
                            p
                        }
                    };
                    changed.touched.insert(pos);
                    match self.held(pos, *t) {
                        Some(e) => changed.held.insert(pos, e),
                        None => changed.held.remove(&pos),
                    };
                }
                JournalOp::Remove(id) => {
                    if let Some(p) = index.remove(&self.hash.of(&id)) {
                        changed.touched.insert(p);
                        changed.removed.insert(p);
                        changed.held.remove(&p);
                    }
                }
            }
        }
        // Snapshot entries whose place the journal touched are read from `held` (or gone).
        for e in &mut self.entries {
            if changed.touched.contains(&e.pos) {
                e.src = Src::Gone;
            }
        }
        Ok(changed)
    }
}

/// The tasks of a listing in output order, each read when it is taken ([`Listing::tasks`]).
pub struct Listing {
    rows: Vec<Src>,
    /// The snapshot the rows' lines are in (kept open: a compaction does not move them).
    file: Option<std::fs::File>,
    path: std::path::PathBuf,
}

impl Listing {
    /// A listing of tasks held whole.
    pub fn of(tasks: Vec<Task>) -> Listing {
        Listing {
            rows: tasks.into_iter().map(|t| Src::Held(Box::new(t))).collect(),
            file: None,
            path: Default::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The tasks in order: a snapshot line read back, checked against the queue schema's
    /// `$defs/task` and decoded here (an error names the file and the field).
    pub fn tasks(self) -> impl Iterator<Item = Result<Task>> {
        let Listing { rows, file, path } = self;
        rows.into_iter().map(move |src| match src {
            Src::Held(t) => Ok(*t),
            Src::Line { offset, len } => read_line(file.as_ref(), &path, offset, len),
            Src::Gone => Err(Error::other("a listed task is gone")),
        })
    }

    /// Every task, decoded (`ops::list_tasks`).
    pub fn into_vec(self) -> Result<Vec<Task>> {
        self.tasks().collect()
    }
}

fn read_line(file: Option<&std::fs::File>, path: &std::path::Path, offset: u64, len: u32) -> Result<Task> {
    let file = file.ok_or_else(|| Error::other(format!("{} was not kept open", path.display())))?;
    let mut buf = vec![0u8; len as usize];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, offset).map_err(|e| Error::io(path, "read", e))?;
    let invalid = |pointer: String, expected: String| Error::Invalid {
        path: path.to_path_buf(),
        pointer,
        expected: crate::base::schema::bounded(&expected, crate::base::schema::MAX_EXPECTED_CHARS),
        quarantined: None,
    };
    let at = format!("the task at byte {offset}");
    let value: serde_json::Value =
        serde_json::from_slice(&buf).map_err(|e| invalid(String::new(), format!("{at}: not JSON ({e})")))?;
    if let Some(v) = crate::base::schema::check_def(TASK_QUEUE.schema, "task", &value, 1).into_iter().next() {
        return Err(invalid(v.pointer, format!("{at}: {}", v.expected)));
    }
    serde_json::from_value(value).map_err(|e| invalid(String::new(), format!("{at}: {e}")))
}

/// The live tasks `filter` keeps, in the order and page `ops::list_tasks` gives: oldest first
/// (`created_at`, then fold order); after `after_id` by position when it is listed, else by id.
/// With `by_id`, in task id order instead (then fold order), after `after_id` by id: the live
/// part of a listing with the archive (`ids` then gets every live task's id hash, for
/// [`LiveIds`]).
fn scan(store: &Store, filter: &TaskFilter, by_id: bool) -> Result<(Listing, Option<LiveIds>)> {
    let _lock = intake::lock_shared(store)?;
    let mut scan = Scan::new(filter, by_id);
    let head = journal::load_into(store, &mut scan)?.queue;
    let changed = scan.apply_journal()?;
    let mut extra: Vec<Entry> = changed.held.into_values().collect();
    // The queue's ids now: every place but those removed (a replaced one keeps its id).
    let live = |p: usize| !changed.removed.contains(&(p as u32));
    // The intake's tasks not in the queue (each of them, repeats included, as the load lists them).
    let pending = intake::pending(store, &head)?;
    let mut pending_ids: Vec<u128> = Vec::new();
    if !pending.is_empty() {
        let hashes: HashSet<u128> = pending.iter().map(|t| scan.hash.of(&t.task_id)).collect();
        let in_queue: HashSet<u128> =
            scan.ids.iter().enumerate().filter(|(p, h)| hashes.contains(*h) && live(*p)).map(|(_, h)| *h).collect();
        let mut pos = scan.ids.len();
        for t in pending {
            let h = scan.hash.of(&t.task_id);
            if in_queue.contains(&h) {
                continue;
            }
            let p = u32::try_from(pos).map_err(|_| Error::other("more than 4 billion queued tasks"))?;
            pos += 1;
            pending_ids.push(h);
            if let Some(e) = scan.held(p, t) {
                extra.push(e);
            }
        }
    }
    let live_ids = by_id.then(|| {
        let mut ids: HashSet<u128> = scan.ids.iter().enumerate().filter(|(p, _)| live(*p)).map(|(_, h)| *h).collect();
        ids.extend(pending_ids);
        LiveIds { hash: IdHash(scan.hash.0.clone(), scan.hash.1.clone()), ids }
    });
    let Scan { entries, file, .. } = scan;
    let mut all: Vec<Entry> = entries.into_iter().filter(|e| !matches!(e.src, Src::Gone)).collect();
    all.append(&mut extra);
    let rows = if by_id { page_by_id(all, filter) } else { page_by_time(all, filter) };
    Ok((Listing { rows, file, path: store.path(TASK_QUEUE) }, live_ids))
}

fn page_by_time(mut all: Vec<Entry>, filter: &TaskFilter) -> Vec<Src> {
    let key = |e: &Entry| (e.created_at, e.pos);
    let after_key = all.iter().filter(|e| e.is_after).map(key).min();
    all.retain(|e| match after_key {
        Some(k) => key(e) > k,
        None => e.id_after,
    });
    take_page(all, filter.limit, |a, b| key(a).cmp(&key(b)))
}

fn page_by_id(mut all: Vec<Entry>, filter: &TaskFilter) -> Vec<Src> {
    all.retain(|e| e.id_after);
    take_page(all, filter.limit, |a, b| (&a.id, a.pos).cmp(&(&b.id, b.pos)))
}

/// The first `limit` entries in `order`, in order.
fn take_page(
    mut all: Vec<Entry>,
    limit: Option<usize>,
    order: impl Fn(&Entry, &Entry) -> std::cmp::Ordering,
) -> Vec<Src> {
    if let Some(l) = limit {
        if l == 0 {
            return Vec::new();
        }
        if all.len() > l {
            all.select_nth_unstable_by(l - 1, &order);
            all.truncate(l);
        }
    }
    all.sort_unstable_by(&order);
    all.into_iter().map(|e| e.src).collect()
}

/// The live tasks' ids, for leaving them out of the archive's listing.
pub(crate) struct LiveIds {
    hash: IdHash,
    ids: HashSet<u128>,
}

impl LiveIds {
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids.contains(&self.hash.of(id))
    }
}

/// The live tasks `filter` keeps, oldest first, paged (see [`scan`]).
pub fn live(store: &Store, filter: &TaskFilter) -> Result<Listing> {
    Ok(scan(store, filter, false)?.0)
}

/// The live tasks `filter` keeps in task id order after `after_id`, at most `limit`, and every
/// live task's id (the live part of a listing with the archive).
pub(crate) fn live_by_id(store: &Store, filter: &TaskFilter) -> Result<(Listing, LiveIds)> {
    let (listing, ids) = scan(store, filter, true)?;
    Ok((listing, ids.expect("asked by id")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::parse_ts;
    use crate::domain::task::model::{TaskQueue, TaskState};
    use crate::domain::task::{archive, ops};

    fn task(id: &str, at: &str, status: TaskStatus, worker_type: &str) -> Task {
        let mut t = Task::sample(id);
        t.created_at = parse_ts(&format!("2026-01-01T10:00:{at}Z")).unwrap();
        t.worker_type = worker_type.into();
        t.description = format!("{id} created {at}");
        let done = parse_ts("2026-01-02T00:00:00Z").unwrap();
        t.state = match status {
            TaskStatus::Queued => TaskState::Queued { waiting_reason: None },
            TaskStatus::InProgress => TaskState::InProgress { started_at: done, dispatch_id: format!("d-{id}") },
            TaskStatus::PendingRetry => TaskState::PendingRetry { next_retry_at: done, waiting_reason: None },
            TaskStatus::Completed => TaskState::Completed { started_at: None, completed_at: done },
            TaskStatus::Failed => TaskState::Failed { started_at: None, completed_at: done },
            TaskStatus::Cancelled => TaskState::Cancelled { started_at: None, completed_at: done },
        };
        t
    }

    /// `ops::list_tasks` as it was before this module: the whole view decoded, filtered, sorted.
    fn reference(store: &Store, filter: &TaskFilter) -> Vec<Task> {
        let snap = intake::snapshot(store).unwrap();
        let live: Vec<Task> = snap.tasks().cloned().collect();
        let keep = |t: &Task| {
            filter.status.is_none_or(|s| t.status() == s)
                && filter.worker_type.as_ref().is_none_or(|w| &t.worker_type == w)
        };
        if filter.include_archive || filter.status.is_some_and(|s| s.is_terminal()) {
            let ids: HashSet<String> = live.iter().map(|t| t.task_id.clone()).collect();
            let query = archive::Query {
                status: filter.status,
                worker_type: filter.worker_type.as_deref(),
                after_id: filter.after_id.as_deref(),
                limit: filter.limit,
            };
            let mut out = archive::list(store, &query, &|id| ids.contains(id)).unwrap();
            out.extend(
                live.into_iter().filter(|t| filter.after_id.as_ref().is_none_or(|a| &t.task_id > a)).filter(keep),
            );
            out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
            if let Some(l) = filter.limit {
                out.truncate(l);
            }
            return out;
        }
        let mut out: Vec<Task> = live.into_iter().filter(keep).collect();
        out.sort_by_key(|a| a.created_at);
        if let Some(after) = &filter.after_id {
            match out.iter().position(|t| &t.task_id == after) {
                Some(p) => {
                    out.drain(..=p);
                }
                None => out.retain(|t| &t.task_id > after),
            }
        }
        if let Some(l) = filter.limit {
            out.truncate(l);
        }
        out
    }

    fn ids(tasks: &[Task]) -> Vec<&str> {
        tasks.iter().map(|t| t.task_id.as_str()).collect()
    }

    /// A queue whose fold order is not `created_at` order, with ties, a repeated id, journal
    /// records replacing, removing and re-adding tasks, an archive, and tasks still in the
    /// intake (one repeating a queued id, one given twice).
    fn fixture() -> (tempfile::TempDir, Store) {
        use TaskStatus::*;
        let (dir, store) = crate::store::fresh_store();
        let snapshot = vec![
            task("task-c", "03", Queued, "a"),
            task("task-a", "01", InProgress, "b"),
            task("task-e", "01", Queued, "a"),
            task("task-b", "05", Queued, "a"),
            task("task-d", "02", Queued, "b"),
            task("task-f", "04", PendingRetry, "a"),
            task("task-g", "07", Queued, "a"),
            task("task-k", "00", Failed, "b"),
            task("task-g", "06", Queued, "b"),
        ];
        let queue = TaskQueue { tasks: snapshot, journal_generation: 1, ..TaskQueue::default() };
        let guard = store.lock(TASK_QUEUE).unwrap();
        journal::write_snapshot(&store, &queue).unwrap();
        let mut pos = journal::load(&store).unwrap().pos;
        let mut commit = |changed: &[Task], removed: &[&str]| {
            let removed: Vec<String> = removed.iter().map(|r| r.to_string()).collect();
            let bytes =
                journal::encode_commit(pos.generation, pos.end, changed, &removed, journal::Commit::default()).unwrap();
            journal::append_commit(&store, &mut pos, &bytes).unwrap();
        };
        // task-d replaced in place (older now, in progress), task-b removed, task-h new.
        commit(&[task("task-d", "00.5", InProgress, "b"), task("task-h", "00.5", Queued, "a")], &["task-b"]);
        // The last task-g replaced, task-b back (appended), task-c removed, an unknown id removed.
        commit(&[task("task-g", "01", Failed, "a"), task("task-b", "03", Queued, "b")], &["task-c", "task-zzz"]);
        drop(guard);
        for t in [
            task("task-i", "00.2", Queued, "a"),
            task("task-a", "09", Queued, "a"),
            task("task-j", "06", Queued, "b"),
            task("task-j", "02", Queued, "b"),
            task("task-b", "08", Queued, "a"),
            task("task-c", "08", Queued, "a"),
        ] {
            intake::append(&store, &t).unwrap();
        }
        let archived = [
            task("task-a0", "00", Completed, "a"),
            task("task-k", "00", Failed, "a"),
            task("task-m", "00", Failed, "b"),
        ];
        archive::append_unsynced(&store, &archived.iter().collect::<Vec<_>>()).unwrap();
        (dir, store)
    }

    fn filters() -> Vec<TaskFilter> {
        let mut out = Vec::new();
        let statuses = [None, Some(TaskStatus::Queued), Some(TaskStatus::InProgress), Some(TaskStatus::Failed)];
        let types = [None, Some("a"), Some("b")];
        let afters = ["task-0", "task-a", "task-b", "task-c", "task-d", "task-g", "task-j", "task-bb", "task-zz"];
        for status in statuses {
            for wt in types {
                for after in afters.iter().copied().map(Some).chain([None]) {
                    for limit in [None, Some(0), Some(1), Some(2), Some(100)] {
                        for include_archive in [false, true] {
                            out.push(TaskFilter {
                                status,
                                worker_type: wt.map(String::from),
                                include_archive,
                                after_id: after.map(String::from),
                                limit,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_quick_scan_reads_what_serde_reads_or_leaves_the_line_to_it() {
        let mut t = task("task-q", "01.25", TaskStatus::InProgress, "wt");
        t.description = "{\"status\": \"failed\", [\\\"".into();
        t.command = vec!["a,b".into(), "}".into()];
        t.timeout_seconds = Some(2.5);
        t.dispatches = vec!["d".into()];
        let line = serde_json::to_string(&t).unwrap();
        let (id, wt, status, at) = quick(&line).expect("a compact task line");
        assert_eq!((id, wt, status, at), ("task-q", "wt", TaskStatus::InProgress, t.created_at));
        let pretty = serde_json::to_string_pretty(&t).unwrap();
        assert_eq!(quick(&pretty).map(|q| q.0), Some("task-q"), "white space anywhere");
        // Left to serde: an escaped id, a repeated key, a status it does not know, trailing text.
        let escaped = line.replace("\"task-q\"", "\"task\\u002dq\"");
        assert!(quick(&escaped).is_none());
        let light: Light = serde_json::from_str(&escaped).unwrap();
        assert_eq!(light.task_id, "task-q");
        assert!(quick(&line.replacen('{', "{\"status\":\"queued\",", 1)).is_none());
        assert!(quick(&line.replace("in_progress", "running")).is_none());
        assert!(quick(&format!("{line} x")).is_none());
        assert!(quick("{}").is_none());
    }

    #[test]
    fn every_filter_lists_what_the_whole_load_listed() {
        let (_d, store) = fixture();
        let all = ops::list_tasks(&store, &TaskFilter::default()).unwrap();
        // Oldest first, ties in fold order (snapshot places, journal records in place or
        // appended, then the intake): task-c removed from the queue is listed from the intake;
        // the intake's task-a and task-b repeat queued ids and are not; task-j is there twice.
        assert_eq!(
            ids(&all),
            vec![
                "task-k", "task-i", "task-d", "task-h", "task-a", "task-e", "task-g", "task-j", "task-b", "task-f",
                "task-j", "task-g", "task-c"
            ],
        );
        assert_eq!(
            all.iter().filter(|t| t.task_id == "task-g").map(|t| t.status()).collect::<Vec<_>>(),
            vec![TaskStatus::Failed, TaskStatus::Queued]
        );
        assert_eq!(all, reference(&store, &TaskFilter::default()));
        let mut checked = 0;
        for f in filters() {
            assert_eq!(ops::list_tasks(&store, &f).unwrap(), reference(&store, &f), "{f:?}");
            checked += 1;
        }
        assert!(checked > 1000);
        // The same snapshot in another layout (one line, as a tool writes it; its journal still
        // applies): read by the general reader, the same listings.
        let path = store.path(TASK_QUEUE);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(ops::list_tasks(&store, &TaskFilter::default()).unwrap(), all);
        for f in filters() {
            assert_eq!(ops::list_tasks(&store, &f).unwrap(), reference(&store, &f), "{f:?}");
        }
    }

    #[test]
    fn a_bad_task_fails_the_listing_that_prints_it_only() {
        let (_d, store) = crate::store::fresh_store();
        let tasks: Vec<Task> =
            (0..5).map(|i| task(&format!("task-{i}"), &format!("0{i}"), TaskStatus::Queued, "a")).collect();
        let guard = store.lock(TASK_QUEUE).unwrap();
        journal::write_snapshot(&store, &TaskQueue { tasks, journal_generation: 1, ..TaskQueue::default() }).unwrap();
        drop(guard);
        // task-3's priority breaks the schema; its id, status, type and time read fine.
        let path = store.path(TASK_QUEUE);
        let text = std::fs::read_to_string(&path).unwrap();
        let bad = text.replace(
            "\"task_id\":\"task-3\",\"description\":\"task-3 created 03\",\"priority\":\"medium\"",
            "\"task_id\":\"task-3\",\"description\":\"task-3 created 03\",\"priority\":\"urgent\"",
        );
        assert_ne!(bad, text);
        std::fs::write(&path, bad).unwrap();
        let page = ops::list_tasks(&store, &TaskFilter { limit: Some(2), ..TaskFilter::default() }).unwrap();
        assert_eq!(ids(&page), vec!["task-0", "task-1"]);
        let err = ops::list_tasks(&store, &TaskFilter { limit: Some(4), ..TaskFilter::default() }).unwrap_err();
        assert!(err.to_string().contains("task-queue.json"), "{err}");
    }
}
