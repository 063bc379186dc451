//! The task archive `coordination/task-archive.jsonl`: finished tasks moved out of the live queue,
//! one task per line, append-only. The coordinator appends finished tasks and flushes them with the
//! queue that drops them, which it renames only once both are durable, so a crash in between leaves the task in both places (the next
//! coordinator drops it from the queue without appending it again: [`last_ends`]); readers
//! prefer the queue, and within the archive the last line of a task id wins (a retried task comes
//! back to the queue and is archived again when it finishes).
//!
//! Past `[archive] segment_bytes` the coordinator seals the file into `task-archive/` with an
//! index ([`segment`]): readers look a task up in the active file and then in the sealed
//! segments' indexes, newest first, so a lookup or a page of a listing costs the same after a
//! million archived tasks as after a thousand.

pub mod segment;

use super::model::{Task, TaskStatus};
use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::store::files::TASK_ARCHIVE;
use crate::store::{Store, jsonl};
use segment::{Index, Segment};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Appends finished tasks with one `write` and returns the file, not yet flushed, for a caller
/// that flushes it together with other files (the coordinator: with the queue that drops them,
/// which it renames only once both are durable). None when there was nothing to append.
pub fn append_unsynced(store: &Store, tasks: &[&Task]) -> Result<Option<std::fs::File>> {
    if tasks.is_empty() {
        return Ok(None);
    }
    let path = store.path(TASK_ARCHIVE);
    let mut buf = Vec::with_capacity(tasks.len() * 600);
    for t in tasks {
        serde_json::to_writer(&mut buf, t).map_err(|e| Error::encode("task", e))?;
        buf.push(b'\n');
    }
    // Through the JSONL appender: a line a full disk cut short is closed first, so the first
    // task of this append is never glued onto it (and lost to every reader).
    jsonl::append_raw_unsynced(&path, &buf).map(Some)
}

/// The archive's size now (0 when it does not exist): where a following append starts.
pub fn len(store: &Store) -> u64 {
    std::fs::metadata(store.path(TASK_ARCHIVE)).map(|m| m.len()).unwrap_or(0)
}

/// The tasks whose lines stand whole in the archive after byte `from` (a multi-task append that
/// a full disk cut: the lines before the cut are there, and must not be appended again).
pub fn whole_lines_since(store: &Store, from: u64) -> Vec<Task> {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    let read = std::fs::File::open(store.path(TASK_ARCHIVE))
        .and_then(|mut f| f.seek(SeekFrom::Start(from)).and_then(|_| f.read_to_end(&mut bytes)));
    if read.is_err() {
        return Vec::new();
    }
    bytes
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| line.ends_with(b"\n"))
        .filter_map(|line| serde_json::from_slice::<Task>(line).ok())
        .collect()
}

thread_local! {
    /// Lines of archived tasks this thread's readers parsed (the active file's lines, and each
    /// line read from a sealed segment through its index): what the tests count to prove a
    /// lookup costs the same whatever the history.
    static LINES_PARSED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Archived lines parsed by this thread's readers so far ([`LINES_PARSED`]).
pub fn lines_parsed() -> u64 {
    LINES_PARSED.with(|c| c.get())
}

fn count_parsed() {
    LINES_PARSED.with(|c| c.set(c.get() + 1));
}

/// What a reader sees of the archive: the active file, opened before the sealed segments are
/// listed (a seal in between shows the same tasks twice, never not at all: see
/// [`segment`]), and the segments, oldest first.
struct View {
    active: Vec<Task>,
    segs: Segs,
}

/// The sealed segments a reader walks, oldest first: their headers from the catalog (one small
/// read for all), their indexes opened only when a lookup or a listing reaches them.
struct Segs {
    segments: Vec<Segment>,
    headers: Vec<Option<segment::IndexHeader>>,
    indexes: Vec<std::cell::OnceCell<Option<Index>>>,
}

impl Segs {
    fn new(store: &Store, segments: Vec<Segment>) -> Segs {
        let catalog = segment::Catalog::load(store);
        let headers = segments.iter().map(|s| catalog.header_of(s).cloned()).collect();
        let indexes = segments.iter().map(|_| std::cell::OnceCell::new()).collect();
        Segs { segments, headers, indexes }
    }

    fn len(&self) -> usize {
        self.segments.len()
    }

    /// The segment's index (opened once), or None when it cannot be read (named in the log).
    fn index(&self, i: usize) -> Option<&Index> {
        self.indexes[i]
            .get_or_init(|| match Index::open(&self.segments[i]) {
                Ok(x) => Some(x),
                Err(e) => {
                    tracing::warn!("archive segment {} skipped: {e}", self.segments[i].path.display());
                    None
                }
            })
            .as_ref()
    }

    /// The segment's header: the catalog's, else its index's.
    fn header(&self, i: usize) -> Option<&segment::IndexHeader> {
        self.headers[i].as_ref().or_else(|| self.index(i).map(Index::header))
    }

    /// The entry of `task_id` in segment `i`; the index is not opened when the header's id range
    /// excludes it.
    fn lookup(&self, i: usize, task_id: &str) -> Result<Option<segment::Entry>> {
        if !segment::may_hold(self.headers[i].as_ref(), task_id) {
            return Ok(None);
        }
        match self.index(i) {
            Some(x) => x.lookup(task_id),
            None => Ok(None),
        }
    }

    /// The newest segment holding a line of `task_id`, and its entry.
    fn newest(&self, task_id: &str) -> Result<Option<(usize, segment::Entry)>> {
        for i in (0..self.len()).rev() {
            if let Some(e) = self.lookup(i, task_id)? {
                return Ok(Some((i, e)));
            }
        }
        Ok(None)
    }
}

/// The active file's tasks in line order (whole lines that are tasks).
fn read_active(store: &Store) -> Result<(Option<std::fs::File>, Vec<Task>)> {
    let path = store.path(TASK_ARCHIVE);
    let file = match crate::store::open::read(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, Vec::new())),
        Err(e) => return Err(crate::store::open::refuse_link(&path, "open", e)),
    };
    let mut out = Vec::new();
    let reader = std::io::BufReader::with_capacity(1 << 16, &file);
    jsonl::for_each_line_in(reader, |_, line| {
        count_parsed();
        if let Ok(t) = serde_json::from_slice::<Task>(line) {
            out.push(t);
        }
        true
    })
    .map_err(|e| Error::io(&path, "read", e))?;
    Ok((Some(file), out))
}

impl View {
    fn open(store: &Store) -> Result<View> {
        let (file, mut active) = read_active(store)?;
        let segments = segment::list(store);
        // Sealed while we read it: the newest segment is the file we read.
        if let (Some(f), Some(last)) = (&file, segments.last()) {
            use std::os::unix::fs::MetadataExt;
            let ours = f.metadata().map(|m| (m.dev(), m.ino())).ok();
            let sealed = std::fs::metadata(&last.path).map(|m| (m.dev(), m.ino())).ok();
            if ours.is_some() && ours == sealed {
                active.clear();
            }
        }
        Ok(View { active, segs: Segs::new(store, segments) })
    }
}

/// The last archived record of a task: the active file (searched for the id with `memmem`, only
/// the lines holding it parsed), then each sealed segment's index, newest first (a binary search
/// each; only the task's own line is read from a segment).
pub fn find(store: &Store, task_id: &str) -> Result<Option<Task>> {
    let needle = format!("\"task_id\":{}", serde_json::Value::String(task_id.to_string()));
    let path = store.path(TASK_ARCHIVE);
    let bytes = match crate::store::open::read(&path) {
        Ok(f) => segment::read_all(f, &path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(crate::store::open::refuse_link(&path, "open", e)),
    };
    let mut found = None;
    for at in memchr::memmem::find_iter(&bytes, needle.as_bytes()) {
        let start = memchr::memrchr(b'\n', &bytes[..at]).map_or(0, |i| i + 1);
        let end = memchr::memchr(b'\n', &bytes[at..]).map_or(bytes.len(), |i| at + i);
        count_parsed();
        if let Ok(t) = serde_json::from_slice::<Task>(&bytes[start..end])
            && t.task_id == task_id
        {
            found = Some(t);
        }
    }
    if found.is_some() {
        return Ok(found);
    }
    // Listed after the active file was read: a seal in between moved it into the newest
    // segment, which is then searched too.
    let segs = Segs::new(store, segment::list(store));
    for i in (0..segs.len()).rev() {
        if let Some(entry) = segs.lookup(i, task_id)? {
            count_parsed();
            if let Some(t) = segment::read_task(&segs.segments[i].path, &entry)? {
                return Ok(Some(t));
            }
        }
    }
    Ok(None)
}

/// The last archived status of each of `ids` that is in the archive.
pub fn statuses(store: &Store, ids: &HashSet<String>) -> Result<HashMap<String, TaskStatus>> {
    Ok(last_ends(store, ids)?.into_iter().map(|(id, end)| (id, end.status)).collect())
}

/// What tells one archived end of a task from another: a retried task is archived again with
/// more dispatches, or (failed by its prerequisite, cancelled before it ran) with a new
/// completion time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedEnd {
    pub status: TaskStatus,
    pub dispatches: usize,
    pub completed_at: Option<Timestamp>,
}

impl ArchivedEnd {
    pub fn of(t: &Task) -> ArchivedEnd {
        ArchivedEnd { status: t.state.status(), dispatches: t.dispatches.len(), completed_at: t.completed_at() }
    }
}

/// The last archived end of each of `ids` that is in the archive: the active file, then the
/// sealed segments' indexes, newest first, for the ids not found yet.
pub fn last_ends(store: &Store, ids: &HashSet<String>) -> Result<HashMap<String, ArchivedEnd>> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let view = View::open(store)?;
    for t in &view.active {
        if ids.contains(&t.task_id) {
            out.insert(t.task_id.clone(), ArchivedEnd::of(t));
        }
    }
    let mut missing: Vec<&String> = ids.iter().filter(|id| !out.contains_key(*id)).collect();
    let segs = &view.segs;
    for i in (0..segs.len()).rev() {
        if missing.is_empty() {
            break;
        }
        let mut still = Vec::new();
        for id in missing {
            let task = match segs.lookup(i, id)? {
                Some(entry) => {
                    count_parsed();
                    segment::read_task(&segs.segments[i].path, &entry)?
                }
                None => None,
            };
            match task {
                Some(t) => {
                    out.insert(t.task_id.clone(), ArchivedEnd::of(&t));
                }
                None => still.push(id),
            }
        }
        missing = still;
    }
    Ok(out)
}

/// Which archived tasks [`list`] returns: by status and worker type, after a task id, at most so
/// many.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    pub status: Option<TaskStatus>,
    pub worker_type: Option<&'a str>,
    /// Only tasks whose id sorts after this one (the last id of the previous page).
    pub after_id: Option<&'a str>,
    pub limit: Option<usize>,
}

/// Every archived task (the last record of each id) in task id order, and the count of bad lines
/// (the active file's and those each sealed segment's index counted). Reads the whole history:
/// for tests and tools, never a daemon's loop or a request.
pub fn all(store: &Store) -> Result<(Vec<Task>, usize)> {
    let tasks = list(store, &Query::default(), &|_| false)?;
    let active: jsonl::JsonlRead<Task> = jsonl::read(&store.path(TASK_ARCHIVE))?;
    let segs = Segs::new(store, segment::list(store));
    let sealed: u64 = (0..segs.len()).filter_map(|i| segs.header(i)).map(|h| h.bad_lines).sum();
    Ok((tasks, active.bad_lines.len() + sealed as usize))
}

/// Where the next candidate of the merge comes from.
enum Source<'a> {
    Active(std::vec::IntoIter<Task>),
    Sealed { seg: usize, cursor: segment::Cursor<'a> },
}

/// Archived tasks (the last record of each id) matching `query`, in task id order (ids sort by
/// creation time), leaving out the ids in `exclude` (the live queue's). A merge of the active
/// file (read whole: at most one segment) and each sealed segment's status sections from a
/// binary-searched start: the work is the matching entries up to `limit`, whatever the history.
pub fn list(store: &Store, query: &Query, exclude: &dyn Fn(&str) -> bool) -> Result<Vec<Task>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let view = View::open(store)?;
    let mut latest: HashMap<String, Task> = HashMap::new();
    for t in view.active {
        latest.insert(t.task_id.clone(), t);
    }
    let active_ids: HashSet<String> = latest.keys().cloned().collect();
    let mut active: Vec<Task> = latest
        .into_values()
        .filter(|t| query.after_id.is_none_or(|a| t.task_id.as_str() > a))
        .filter(|t| query.status.is_none_or(|s| t.status() == s))
        .collect();
    active.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    let segs = view.segs;
    let statuses: Vec<TaskStatus> = match query.status {
        Some(s) => vec![s],
        None => TaskStatus::ALL.to_vec(),
    };
    let mut sources: Vec<Source> = vec![Source::Active(active.into_iter())];
    let mut heads: Vec<Option<Candidate>> = Vec::new();
    let mut heap = BinaryHeap::new();
    // Segments join the merge in the order of their first id, once the merge has reached it: a
    // page touches the segments whose id range it covers, not every segment.
    let mut waiting: Vec<usize> = (0..segs.len())
        .filter(|&i| {
            segs.header(i).is_some_and(|h| {
                h.tasks > 0
                    && query.status.is_none_or(|s| h.counts.get(&s).copied().unwrap_or(0) > 0)
                    && query.after_id.is_none_or(|a| h.last_id.as_deref().is_none_or(|l| l > a))
            })
        })
        .collect();
    waiting.sort_by(|a, b| {
        let first = |i: &usize| segs.header(*i).and_then(|h| h.first_id.clone());
        first(b).cmp(&first(a))
    });
    let active_src = sources.pop().expect("the active source");
    push_source(&mut sources, &mut heads, &mut heap, active_src)?;
    let retried = segment::retried(store);
    let mut files: Vec<Option<Option<std::fs::File>>> = segs.segments.iter().map(|_| None).collect();
    let mut out = Vec::new();
    loop {
        // Bring in every segment whose first id the merge has reached.
        while let Some(&w) = waiting.last() {
            let first = segs.header(w).and_then(|h| h.first_id.as_deref()).unwrap_or("");
            if heap.peek().is_some_and(|Reverse((top, _))| top.as_str() < first) {
                break;
            }
            waiting.pop();
            let Some(index) = segs.index(w) else { continue };
            for s in &statuses {
                if index.header().counts.get(s).copied().unwrap_or(0) > 0 {
                    let src = Source::Sealed { seg: w, cursor: index.cursor(*s, query.after_id, false)? };
                    push_source(&mut sources, &mut heads, &mut heap, src)?;
                }
            }
        }
        let Some(Reverse((_, i))) = heap.pop() else { break };
        if query.limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let Some(c) = heads[i].take() else { continue };
        let next = next_candidate(&mut sources[i])?;
        if let Some(n) = &next {
            heap.push(Reverse((n.id().to_string(), i)));
        }
        heads[i] = next;
        let task = match c {
            Candidate::Active(t) => Some(*t),
            Candidate::Sealed { seg, entry } => {
                if exclude(&entry.task_id) || active_ids.contains(&entry.task_id) {
                    continue;
                }
                // A retried task may have a newer line in a newer segment: only that one counts.
                if retried.contains(&entry.task_id) && segs.newest(&entry.task_id)?.map(|(i, _)| i) != Some(seg) {
                    continue;
                }
                count_parsed();
                let path = &segs.segments[seg].path;
                let file = files[seg].get_or_insert_with(|| crate::store::open::read(path).ok());
                match file {
                    Some(f) => segment::read_task_in(f, path, &entry)?,
                    None => None,
                }
            }
        };
        let Some(t) = task else { continue };
        if exclude(&t.task_id) || query.worker_type.is_some_and(|w| t.worker_type != w) {
            continue;
        }
        out.push(t);
    }
    Ok(out)
}

/// Adds a source to the merge with its first candidate.
fn push_source<'a>(
    sources: &mut Vec<Source<'a>>,
    heads: &mut Vec<Option<Candidate>>,
    heap: &mut std::collections::BinaryHeap<std::cmp::Reverse<(String, usize)>>,
    mut src: Source<'a>,
) -> Result<()> {
    let c = next_candidate(&mut src)?;
    if let Some(c) = &c {
        heap.push(std::cmp::Reverse((c.id().to_string(), sources.len())));
    }
    heads.push(c);
    sources.push(src);
    Ok(())
}

enum Candidate {
    Active(Box<Task>),
    Sealed { seg: usize, entry: segment::Entry },
}

impl Candidate {
    fn id(&self) -> &str {
        match self {
            Candidate::Active(t) => &t.task_id,
            Candidate::Sealed { entry, .. } => &entry.task_id,
        }
    }
}

fn next_candidate(src: &mut Source) -> Result<Option<Candidate>> {
    Ok(match src {
        Source::Active(it) => it.next().map(|t| Candidate::Active(Box::new(t))),
        Source::Sealed { seg, cursor } => cursor.next_entry()?.map(|entry| Candidate::Sealed { seg: *seg, entry }),
    })
}

/// Counts of archived tasks by status, for the metrics daemon. The sealed segments' part comes
/// from their index headers and is kept between calls until a segment or a retry is added; the
/// active file (at most one segment) is read each time.
#[derive(Debug, Default)]
pub struct Tally {
    key: Option<(Vec<u32>, usize)>,
    /// Sealed counts without any line of a retried id.
    base: BTreeMap<TaskStatus, u64>,
    /// Each retried id's status in the newest segment holding it.
    retried_newest: HashMap<String, TaskStatus>,
}

impl Tally {
    /// The archived tasks by status, leaving out the ids in `exclude` (the live queue's).
    pub fn count(&mut self, store: &Store, exclude: &dyn Fn(&str) -> bool) -> Result<BTreeMap<TaskStatus, u64>> {
        let view = View::open(store)?;
        let retried = segment::retried(store);
        let segs = &view.segs;
        let key = (segs.segments.iter().map(|s| s.number).collect::<Vec<_>>(), retried.len());
        if self.key.as_ref() != Some(&key) {
            let mut base: BTreeMap<TaskStatus, u64> = BTreeMap::new();
            for i in 0..segs.len() {
                for (s, n) in segs.header(i).map(|h| &h.counts).into_iter().flatten() {
                    *base.entry(*s).or_default() += n;
                }
            }
            let mut retried_newest = HashMap::new();
            for id in &retried {
                for i in 0..segs.len() {
                    if let Some(e) = segs.lookup(i, id)? {
                        if let Some(n) = base.get_mut(&e.status) {
                            *n = n.saturating_sub(1);
                        }
                        retried_newest.insert(id.clone(), e.status);
                    }
                }
            }
            *self = Tally { key: Some(key), base, retried_newest };
        }
        let mut out = self.base.clone();
        let mut active: HashMap<&str, TaskStatus> = HashMap::new();
        for t in &view.active {
            active.insert(&t.task_id, t.status());
        }
        for (id, s) in &self.retried_newest {
            if !active.contains_key(id.as_str()) && !exclude(id) {
                *out.entry(*s).or_default() += 1;
            }
        }
        for (id, s) in active {
            if !exclude(id) {
                *out.entry(s).or_default() += 1;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::fresh_store;

    #[test]
    fn a_task_archived_after_a_line_a_full_disk_cut_is_found_not_glued_onto_it() {
        let (_dir, store) = fresh_store();
        let first = Task::sample("task-first");
        append_unsynced(&store, &[&first]).unwrap();
        // An append cut short by a full disk: part of a line, no newline.
        let path = store.path(TASK_ARCHIVE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(br#"{"task_id":"task-cut","descr"#);
        std::fs::write(&path, &bytes).unwrap();
        // The coordinator's append once space is back.
        let next = Task::sample("task-next");
        let f = append_unsynced(&store, &[&next]).unwrap().expect("a file to flush");
        f.sync_data().unwrap();
        assert_eq!(find(&store, "task-next").unwrap().map(|t| t.task_id), Some("task-next".to_string()));
        assert_eq!(find(&store, "task-first").unwrap().map(|t| t.task_id), Some("task-first".to_string()));
        let statuses = statuses(&store, &HashSet::from(["task-next".to_string()])).unwrap();
        assert!(statuses.contains_key("task-next"), "{statuses:?}");
    }

    #[test]
    fn the_whole_lines_of_an_append_a_full_disk_cut_are_found() {
        let (_dir, store) = fresh_store();
        append_unsynced(&store, &[&Task::sample("task-before")]).unwrap();
        let from = len(&store);
        // Two whole lines of a three-task append, then the cut.
        let mut bytes = std::fs::read(store.path(TASK_ARCHIVE)).unwrap();
        for id in ["task-a", "task-b"] {
            bytes.extend_from_slice(&serde_json::to_vec(&Task::sample(id)).unwrap());
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(br#"{"task_id":"task-c","desc"#);
        std::fs::write(store.path(TASK_ARCHIVE), &bytes).unwrap();
        let ids: Vec<String> = whole_lines_since(&store, from).into_iter().map(|t| t.task_id).collect();
        assert_eq!(ids, ["task-a", "task-b"]);
        assert!(whole_lines_since(&store, len(&store)).is_empty());
    }

    fn ended(id: &str, status: TaskStatus, at: &str) -> Task {
        use crate::domain::task::model::TaskState;
        let state = match status {
            TaskStatus::Completed => {
                TaskState::Completed { started_at: None, completed_at: crate::base::clock::parse_ts(at).unwrap() }
            }
            TaskStatus::Failed => {
                TaskState::Failed { started_at: None, completed_at: crate::base::clock::parse_ts(at).unwrap() }
            }
            _ => TaskState::Cancelled { started_at: None, completed_at: crate::base::clock::parse_ts(at).unwrap() },
        };
        Task { state, ..Task::sample(id) }
    }

    fn status_of(i: usize) -> TaskStatus {
        match i % 10 {
            0 | 3 => TaskStatus::Failed,
            7 => TaskStatus::Cancelled,
            _ => TaskStatus::Completed,
        }
    }

    /// Archives `n` tasks `task-00000`… in appends of `per_segment`, sealing after each: `n /
    /// per_segment` sealed segments, nothing active.
    fn sealed_history(store: &Store, n: usize, per_segment: usize) {
        for chunk in (0..n).collect::<Vec<_>>().chunks(per_segment) {
            let tasks: Vec<Task> =
                chunk.iter().map(|i| ended(&format!("task-{i:05}"), status_of(*i), "2026-01-01T00:00:00Z")).collect();
            append_unsynced(store, &tasks.iter().collect::<Vec<_>>()).unwrap();
            segment::seal(store, 0).unwrap().expect("sealed");
        }
    }

    #[test]
    fn a_lookup_in_sealed_segments_parses_only_the_tasks_own_line() {
        let (_dir, store) = fresh_store();
        sealed_history(&store, 3000, 100);
        assert_eq!(segment::list(&store).len(), 30);
        assert_eq!(len(&store), 0, "the active file was sealed");
        for id in ["task-00000", "task-01234", "task-02999"] {
            let (before, opens) = (lines_parsed(), segment::index_opens());
            let t = find(&store, id).unwrap().expect("found");
            assert_eq!(t.task_id, id);
            assert_eq!(t.status(), status_of(id[5..].parse().unwrap()));
            assert_eq!(lines_parsed() - before, 1, "{id}: one line read, not the history");
            assert_eq!(segment::index_opens() - opens, 1, "{id}: the catalog names its one segment");
        }
        // Without the catalog each index is opened to learn its id range: still one line read.
        std::fs::remove_file(segment::catalog_path(&store)).unwrap();
        let before = lines_parsed();
        assert!(find(&store, "task-00000").unwrap().is_some());
        assert_eq!(lines_parsed() - before, 1);
        let before = lines_parsed();
        assert!(find(&store, "task-99999").unwrap().is_none());
        assert!(find(&store, "task-0").unwrap().is_none());
        assert_eq!(lines_parsed() - before, 0);
        // The coordinator's lookups go through the same indexes.
        let ids: HashSet<String> = ["task-00003", "task-02990", "task-nope"].iter().map(|s| s.to_string()).collect();
        let before = lines_parsed();
        let ends = last_ends(&store, &ids).unwrap();
        assert_eq!(ends.len(), 2);
        assert_eq!(ends["task-00003"].status, TaskStatus::Failed);
        assert_eq!(lines_parsed() - before, 2);
    }

    #[test]
    fn a_page_by_status_reads_only_its_own_lines_in_id_order() {
        let (_dir, store) = fresh_store();
        sealed_history(&store, 3000, 100);
        // And some active lines, not sealed yet.
        let active: Vec<Task> =
            (3000..3050).map(|i| ended(&format!("task-{i:05}"), status_of(i), "2026-01-02T00:00:00Z")).collect();
        append_unsynced(&store, &active.iter().collect::<Vec<_>>()).unwrap();
        let q = Query { status: Some(TaskStatus::Failed), limit: Some(50), ..Query::default() };
        let before = lines_parsed();
        let opens = segment::index_opens();
        let page = list(&store, &q, &|_| false).unwrap();
        let parsed = lines_parsed() - before;
        // 50 failed tasks of 3,000 (two in ten) lie in the first three segments of 30.
        assert!(segment::index_opens() - opens <= 3, "{} indexes opened", segment::index_opens() - opens);
        let ids: Vec<String> = page.iter().map(|t| t.task_id.clone()).collect();
        let want: Vec<String> = (0..3050)
            .filter(|i| status_of(*i) == TaskStatus::Failed)
            .take(50)
            .map(|i| format!("task-{i:05}"))
            .collect();
        assert_eq!(ids, want);
        assert_eq!(parsed, 50 + 50, "the page's lines and the active file's, nothing else");
        // The next page starts after the last id.
        let q2 = Query { after_id: Some(&want[49]), ..q.clone() };
        let next = list(&store, &q2, &|_| false).unwrap();
        let want2: Vec<String> = (0..3050)
            .filter(|i| status_of(*i) == TaskStatus::Failed)
            .skip(50)
            .take(50)
            .map(|i| format!("task-{i:05}"))
            .collect();
        assert_eq!(next.iter().map(|t| t.task_id.clone()).collect::<Vec<_>>(), want2);
        // Everything, no filter: every task once.
        let every = list(&store, &Query::default(), &|_| false).unwrap();
        assert_eq!(every.len(), 3050);
        assert!(every.windows(2).all(|w| w[0].task_id < w[1].task_id));
        // The live queue's ids are left out.
        let live = HashSet::from(["task-00000".to_string()]);
        let first = list(&store, &Query { limit: Some(1), ..Query::default() }, &|id| live.contains(id)).unwrap();
        assert_eq!(first[0].task_id, "task-00001");
    }

    #[test]
    fn a_task_retried_from_a_sealed_segment_is_listed_and_counted_by_its_newest_line() {
        let (_dir, store) = fresh_store();
        sealed_history(&store, 300, 100);
        // task-00000 failed in segment 1; retried, it completes and lands in segment 4.
        segment::note_retried(&store, "task-00000").unwrap();
        append_unsynced(&store, &[&ended("task-00000", TaskStatus::Completed, "2026-02-01T00:00:00Z")]).unwrap();
        let failed = |store: &Store| {
            list(store, &Query { status: Some(TaskStatus::Failed), ..Query::default() }, &|_| false)
                .unwrap()
                .into_iter()
                .map(|t| t.task_id)
                .collect::<Vec<_>>()
        };
        assert!(!failed(&store).contains(&"task-00000".to_string()), "active line wins");
        segment::seal(&store, 0).unwrap().expect("sealed");
        assert!(!failed(&store).contains(&"task-00000".to_string()), "newer segment wins");
        assert_eq!(find(&store, "task-00000").unwrap().unwrap().status(), TaskStatus::Completed);
        let every = list(&store, &Query::default(), &|_| false).unwrap();
        assert_eq!(every.len(), 300);
        let mut tally = Tally::default();
        let counts = tally.count(&store, &|_| false).unwrap();
        let want_failed = (0..300).filter(|i| status_of(*i) == TaskStatus::Failed).count() as u64 - 1;
        assert_eq!(counts[&TaskStatus::Failed], want_failed);
        assert_eq!(counts.values().sum::<u64>(), 300);
        // In the live queue again: counted there, not here.
        let counts = tally.count(&store, &|id| id == "task-00000").unwrap();
        assert_eq!(counts.values().sum::<u64>(), 299);
    }

    #[test]
    fn a_seal_killed_after_its_index_loses_and_doubles_nothing() {
        let (_dir, store) = fresh_store();
        sealed_history(&store, 200, 100);
        let active: Vec<Task> =
            (200..250).map(|i| ended(&format!("task-{i:05}"), status_of(i), "2026-01-02T00:00:00Z")).collect();
        append_unsynced(&store, &active.iter().collect::<Vec<_>>()).unwrap();
        // What a seal killed after step 1 leaves: the next segment's index, no segment.
        let (header, entries) =
            segment::build_index(std::io::BufReader::new(std::fs::File::open(store.path(TASK_ARCHIVE)).unwrap()))
                .unwrap();
        let orphan = segment::dir(&store).join("seg-000003.idx");
        let header = segment::IndexHeader { segment: 3, ..header };
        std::fs::write(&orphan, segment::encode_index(&header, &entries).unwrap()).unwrap();
        let every = list(&store, &Query::default(), &|_| false).unwrap();
        assert_eq!(every.len(), 250);
        assert!(find(&store, "task-00249").unwrap().is_some());
        // The next seal takes number 3 again and replaces the orphan.
        append_unsynced(&store, &[&ended("task-00250", TaskStatus::Failed, "2026-01-03T00:00:00Z")]).unwrap();
        let s = segment::seal(&store, 0).unwrap().unwrap();
        assert_eq!(s.segment, 3);
        assert_eq!(s.tasks, 51);
        assert!(segment::index_problem(&segment::list(&store)[2]).is_none());
        assert!(segment::check(&segment::list(&store)[2]).is_empty());
        assert_eq!(list(&store, &Query::default(), &|_| false).unwrap().len(), 251);
    }

    #[test]
    fn a_segment_whose_index_is_missing_or_wrong_is_read_whole_and_named() {
        let (_dir, store) = fresh_store();
        sealed_history(&store, 300, 100);
        let segs = segment::list(&store);
        std::fs::remove_file(&segs[0].index_path).unwrap();
        // An index of another segment: its size does not match.
        std::fs::copy(&segs[2].index_path, &segs[1].index_path).unwrap();
        assert!(segment::index_problem(&segs[0]).is_some());
        assert!(!segment::check(&segs[0]).is_empty());
        assert_eq!(find(&store, "task-00001").unwrap().unwrap().task_id, "task-00001");
        assert_eq!(find(&store, "task-00150").unwrap().unwrap().task_id, "task-00150");
        assert_eq!(list(&store, &Query::default(), &|_| false).unwrap().len(), 300);
        assert!(segment::check(&segs[2]).is_empty());
    }

    /// The index header's completion times are `Timestamp`s: written as before, and a malformed
    /// one makes the index unusable (named, the segment read whole) instead of a string that
    /// compares wrongly.
    #[test]
    fn an_index_header_with_a_malformed_time_is_not_used_and_names_the_field() {
        let (_dir, store) = fresh_store();
        sealed_history(&store, 300, 100);
        let segs = segment::list(&store);
        let bytes = std::fs::read(&segs[0].index_path).unwrap();
        let end = bytes.iter().position(|&b| b == b'\n').unwrap();
        let mut header: serde_json::Value = serde_json::from_slice(&bytes[..end]).unwrap();
        let first = header["first_completed_at"].as_str().unwrap().to_string();
        assert_eq!(crate::base::clock::parse_ts(&first).map(crate::base::clock::format_ts), Some(first.clone()));
        assert!(segment::index_problem(&segs[0]).is_none());
        header["first_completed_at"] = serde_json::json!("the first of May");
        let mut bad = serde_json::to_vec(&header).unwrap();
        bad.extend_from_slice(&bytes[end..]);
        std::fs::write(&segs[0].index_path, &bad).unwrap();
        let problem = segment::index_problem(&segs[0]).expect("the index is not used");
        assert!(problem.contains("header /first_completed_at") && problem.contains("the first of May"), "{problem}");
        assert_eq!(find(&store, "task-00001").unwrap().unwrap().task_id, "task-00001");
    }

    #[test]
    fn retention_keeps_the_newest_segments() {
        let (_dir, store) = fresh_store();
        sealed_history(&store, 300, 100);
        append_unsynced(&store, &[&ended("task-00300", TaskStatus::Failed, "2026-01-03T00:00:00Z")]).unwrap();
        let s = segment::seal(&store, 2).unwrap().unwrap();
        assert_eq!(s.removed, vec![1, 2]);
        let left: Vec<u32> = segment::list(&store).iter().map(|s| s.number).collect();
        assert_eq!(left, vec![3, 4]);
        assert!(find(&store, "task-00000").unwrap().is_none());
        assert!(find(&store, "task-00250").unwrap().is_some());
        let idx: Vec<_> = std::fs::read_dir(segment::dir(&store))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".idx"))
            .collect();
        assert_eq!(idx.len(), 2, "the deleted segments' indexes are gone too");
    }

    #[test]
    fn the_index_binary_search_finds_every_id_and_no_other() {
        let entries: Vec<segment::Entry> = (0..1000)
            .map(|i| segment::Entry {
                task_id: format!("t-{:04}{}", i * 3, "x".repeat(i % 37)),
                status: TaskStatus::Completed,
                offset: i as u64 * 10,
                len: 9,
            })
            .collect();
        let mut counts = BTreeMap::new();
        counts.insert(TaskStatus::Completed, 1000);
        let header = segment::IndexHeader {
            format: segment::INDEX_FORMAT,
            segment: 1,
            bytes: 10_000,
            lines: 1000,
            bad_lines: 0,
            tasks: 1000,
            counts,
            first_completed_at: None,
            last_completed_at: None,
            first_id: None,
            last_id: None,
            sections: BTreeMap::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let seg = segment::Segment {
            number: 1,
            path: dir.path().join("seg-000001.jsonl"),
            index_path: dir.path().join("seg-000001.idx"),
        };
        std::fs::write(&seg.path, vec![b'\n'; 10_000]).unwrap();
        std::fs::write(&seg.index_path, segment::encode_index(&header, &entries).unwrap()).unwrap();
        let index = Index::open(&seg).unwrap();
        assert!(matches!(index, Index::File { .. }));
        for e in &entries {
            assert_eq!(index.lookup(&e.task_id).unwrap().as_ref(), Some(e));
            let missing = format!("{}a", e.task_id);
            assert_eq!(index.lookup(&missing).unwrap(), None);
        }
        assert_eq!(index.lookup("").unwrap(), None);
        assert_eq!(index.lookup("u").unwrap(), None);
        let mut c = index.cursor(TaskStatus::Completed, Some(&entries[500].task_id), false).unwrap();
        assert_eq!(c.next_entry().unwrap().as_ref(), Some(&entries[501]));
    }
}
