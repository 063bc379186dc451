//! The queue's storage: the snapshot `task-queue.json` plus the append-only journal
//! `task-queue.journal.jsonl`, so a change costs what changed, not what is queued.
//!
//! The snapshot keeps its format (operators' `jq` over it keeps working) and carries a header
//! field `journal_generation`. The journal holds commits: each is a group of compact lines
//! appended with ONE `write` — the whole new record of each changed task (`{"generation":G,
//! "task":{...}}`) or the removal of one (`{"generation":G,"removed":"task-…"}`) — closed by a
//! commit line (`{"generation":G,"commit":{"start":S,"lines":K,"intake_offset":…,"updated_at":…,
//! "counts":{…}}}`) naming where the group started and how many lines it has. Writers hold the
//! `task-queue` lock; the commit counts once the journal is fsynced (the coordinator fsyncs it in
//! its group commit with the budget, the archive and the new specs).
//!
//! Reading ([`load`], the one reader every caller goes through — `Store::load::<TaskQueue>`
//! delegates here): the snapshot, then every complete group of the snapshot's generation, in
//! order. Lines of another generation are stale (left by a writer killed between a compaction's
//! snapshot replace and the journal's reset, or by a snapshot replaced by hand) and ignored; a
//! group without its commit line (a writer killed mid-append, a full disk) is not committed and
//! ignored, and the next writer truncates it away before appending; any other bad line is
//! skipped, counted and quarantined (invariants 4 and 7). Readers take no lock: they read the
//! snapshot, then the journal, and check the snapshot's identity again; a compaction in between
//! (a new inode) makes them read again.
//!
//! Compaction ([`needs_compaction`]): once the journal has grown past half the snapshot's size
//! (and at least [`COMPACT_MIN_BYTES`]), the writer replaces the snapshot atomically with a new
//! generation and then empties the journal — amortised O(1) bytes per change. Crash-safety, step
//! by step: before the snapshot's rename, readers see the old snapshot and its journal (nothing
//! changed); after the rename and before the truncation, the journal's lines carry the old
//! generation and are ignored, so none is applied twice, and none is lost since the new snapshot
//! contains them; after the truncation, the next commit appends lines of the new generation. A
//! generation is never reused: it is the later of the previous one plus one and the time in
//! nanoseconds, so a snapshot reset by hand (generation 0, which is never appended to: its first
//! writer compacts) can never adopt an old journal's lines.
//!
//! A home written before the journal (a `task-queue.json` without `journal_generation`) loads
//! unchanged; its first write is a compaction that adds the header.

use super::model::{QueueCounts, Task, TaskQueue};
use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::store::Store;
use crate::store::files::{TASK_QUEUE, TASK_QUEUE_JOURNAL};
use crate::store::identity::FileIdentity;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The journal is compacted only once it holds at least this many bytes (so a short queue is not
/// rewritten on every change).
pub const COMPACT_MIN_BYTES: u64 = 256 * 1024;

/// The journal is compacted once it is larger than the snapshot divided by this.
pub const COMPACT_DIVISOR: u64 = 2;

/// How many times a reader reads again when a compaction replaced the snapshot under it.
const READ_ATTEMPTS: usize = 50;

/// The commit line closing a group of journal lines.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// Byte offset in the journal where this group's first line starts.
    pub start: u64,
    /// How many task/removal lines the group has before this commit line.
    pub lines: u64,
    pub intake_offset: u64,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub updated_at: Option<Timestamp>,
    /// The queue's counts after this commit (for O(1) status reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<QueueCounts>,
}

/// One journal line as written.
#[derive(Serialize)]
struct LineOut<'a> {
    generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<&'a Task>,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit: Option<&'a Commit>,
}

/// One journal line as read.
#[derive(Deserialize)]
struct LineIn {
    generation: u64,
    #[serde(default)]
    task: Option<serde_json::Value>,
    #[serde(default)]
    removed: Option<String>,
    #[serde(default)]
    commit: Option<Commit>,
}

/// Where a reader or writer is in the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JournalPos {
    /// The snapshot the position belongs to (None: no snapshot file).
    pub(crate) snapshot: Option<FileIdentity>,
    /// The snapshot's generation (0: a snapshot without a journal, never appended to).
    pub generation: u64,
    /// Byte offset just after the last committed group of this generation: where the next
    /// commit is appended (anything after it is an uncommitted tail the writer truncates).
    pub end: u64,
    /// The journal's length when read.
    pub len: u64,
    /// The journal's identity (device, inode, size, times) when it was read or written, the
    /// bytes read being exactly its `len` (None: no journal file).
    pub(crate) journal: Option<FileIdentity>,
    /// The last commit read or written (its bytes end at `end`; at most its last
    /// [`TAIL_HASHED`] bytes): their length and a hash. A journal truncated below `end` and grown
    /// again (a commit taken back after a failed flush, then another appended) no longer has them
    /// there, whatever its length.
    pub(crate) tail: (u32, u64),
    /// `journal` was taken outside its file's timestamp tick (see [`unchanged`]).
    pub(crate) journal_trusted: bool,
}

/// How many bytes at most of the last commit (its group's last bytes, its commit line included)
/// a position remembers the hash of.
const TAIL_HASHED: usize = 4096;

fn tail_of(line: &[u8]) -> (u32, u64) {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    line.hash(&mut h);
    (line.len() as u32, h.finish())
}

/// True when the journal still holds, just before `pos.end`, the commit `pos` last read or wrote
/// (always true before any commit).
fn tail_holds(store: &Store, pos: &JournalPos) -> Result<bool> {
    let (len, hash) = pos.tail;
    if pos.end == 0 || len == 0 {
        return Ok(true);
    }
    let jpath = path(store);
    let f = match crate::store::open::read(&jpath) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(crate::store::open::refuse_link(&jpath, "open", e)),
    };
    let Some(start) = pos.end.checked_sub(len as u64) else { return Ok(false) };
    let mut buf = vec![0u8; len as usize];
    match std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, start) {
        Ok(()) => Ok(tail_of(&buf).1 == hash),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(Error::io(&jpath, "read", e)),
    }
}

/// True when the journal is, by its identity, as `pos` read or wrote it: nothing to catch up.
/// An identity taken within its file's timestamp tick is not trusted (a change in the same tick
/// could keep it): the caller catches up, which checks the last commit line is still there.
pub fn unchanged(store: &Store, pos: &JournalPos) -> bool {
    pos.journal_trusted && FileIdentity::stat(&path(store)).ok().flatten() == pos.journal
}

impl JournalPos {
    /// The position of a writer that just replaced the snapshot (`snapshot`, of `generation`)
    /// and emptied the journal (`journal`, its identity now).
    pub(crate) fn after_compaction(
        snapshot: Option<FileIdentity>,
        generation: u64,
        journal: Option<FileIdentity>,
    ) -> JournalPos {
        let mut pos = JournalPos { snapshot, generation, len: journal.map_or(0, |j| j.len), ..JournalPos::default() };
        pos.identify(journal);
        pos
    }

    /// Records the journal's identity as of now (`journal`, `journal_trusted`).
    fn identify(&mut self, identity: Option<FileIdentity>) {
        self.journal = identity;
        self.journal_trusted = identity.is_none_or(|j| !j.is_racy());
    }
}

/// What [`load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub queue: TaskQueue,
    pub pos: JournalPos,
    /// Lines of the current generation that could not be read (skipped, quarantined).
    pub bad_lines: usize,
    /// Lines of another generation (ignored; removed by the next writer).
    pub stale_lines: usize,
    /// The counts of the last commit read (None: from the snapshot's header, if any).
    pub counts: Option<QueueCounts>,
}

/// The journal's path.
pub fn path(store: &Store) -> std::path::PathBuf {
    store.path(TASK_QUEUE_JOURNAL)
}

fn read_tail(path: &Path, start: u64) -> Result<(Vec<u8>, u64)> {
    read_tail_identified(path, start).map(|(bytes, len, _)| (bytes, len))
}

/// The journal's bytes from `start` up to its length as stat'ed on the open file (an append
/// after that is left for the next read), that length, and the identity stat'ed.
fn read_tail_identified(path: &Path, start: u64) -> Result<(Vec<u8>, u64, Option<FileIdentity>)> {
    let f = match crate::store::open::read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0, None)),
        Err(e) => return Err(crate::store::open::refuse_link(path, "open", e)),
    };
    let meta = f.metadata().map_err(|e| Error::io(path, "stat", e))?;
    let identity = Some(FileIdentity::of(&meta));
    let len = meta.len();
    if start > len {
        return Ok((Vec::new(), len, identity));
    }
    let mut f = f;
    f.seek(SeekFrom::Start(start)).map_err(|e| Error::io(path, "seek", e))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.take(len - start).read_to_end(&mut buf).map_err(|e| Error::io(path, "read", e))?;
    let read_len = start + buf.len() as u64;
    Ok((buf, read_len, identity))
}

/// A group of lines read but not yet closed by its commit line.
enum Op {
    Upsert(Box<Task>),
    Remove(String),
}

/// The result of parsing journal bytes from a given offset.
struct Parsed {
    groups: Vec<(Vec<Op>, Commit)>,
    /// Offset after the last complete group.
    end: u64,
    bad: usize,
    stale: usize,
    /// A commit line did not match the group read before it (a concurrent truncation): read again.
    inconsistent: bool,
    /// The last commit line taken (see [`JournalPos::tail`]).
    tail: Option<(u32, u64)>,
}

/// With `strict`, a commit line that does not match the group before it stops the parse
/// (`inconsistent`: the caller reads again); without, the group is taken as it is (a journal
/// edited by hand: nothing it holds is dropped).
fn parse(store: &Store, bytes: &[u8], from: u64, generation: u64, quarantine: bool, strict: bool) -> Parsed {
    let jpath = path(store);
    let mut out = Parsed { groups: Vec::new(), end: from, bad: 0, stale: 0, inconsistent: false, tail: None };
    let mut group: Vec<Op> = Vec::new();
    let mut group_lines = 0u64;
    let mut group_start = from;
    let mut at = 0usize;
    while let Some(nl) = bytes[at..].iter().position(|&b| b == b'\n') {
        let line = &bytes[at..at + nl];
        let line_start = from + at as u64;
        at += nl + 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let parsed: std::result::Result<LineIn, String> = serde_json::from_slice(line).map_err(|e| e.to_string());
        let parsed = match parsed {
            Ok(l) => l,
            Err(e) => {
                out.bad += 1;
                group_lines += 1;
                if quarantine {
                    store.quarantine(&jpath, line, "has a line that is not a journal record", &e, "");
                }
                continue;
            }
        };
        if generation == 0 || parsed.generation != generation {
            // Not of this snapshot: ignored, and left out of `end` so the next writer truncates it.
            out.stale += 1;
            group.clear();
            group_lines = 0;
            group_start = from + at as u64;
            continue;
        }
        if group_lines == 0 && group.is_empty() {
            group_start = line_start;
        }
        if let Some(commit) = parsed.commit {
            if strict && (commit.start != group_start || commit.lines != group_lines) {
                out.inconsistent = true;
                return out;
            }
            out.groups.push((std::mem::take(&mut group), commit));
            group_lines = 0;
            let group_from = ((group_start - from) as usize).max(at.saturating_sub(TAIL_HASHED));
            out.tail = Some(tail_of(&bytes[group_from..at]));
            out.end = from + at as u64;
            group_start = out.end;
            continue;
        }
        group_lines += 1;
        if let Some(id) = parsed.removed {
            group.push(Op::Remove(id));
            continue;
        }
        let task =
            parsed.task.ok_or_else(|| "a line with neither task, removed nor commit".to_string()).and_then(|v| {
                if let Some(v) = crate::base::schema::check_def(TASK_QUEUE.schema, "task", &v, 1).into_iter().next() {
                    return Err(format!("task at {}: {}", v.pointer, v.expected));
                }
                serde_json::from_value::<Task>(v).map_err(|e| e.to_string())
            });
        match task {
            Ok(t) => group.push(Op::Upsert(Box::new(t))),
            Err(e) => {
                out.bad += 1;
                if quarantine {
                    let e = crate::base::schema::bounded(&e, crate::base::schema::MAX_EXPECTED_CHARS);
                    store.quarantine(&jpath, line, "has a line that is not a task record", &e, "");
                }
            }
        }
    }
    out
}

/// Applies committed groups to a queue in order: a task is replaced in place or appended, a
/// removed one dropped. Returns the last commit.
fn apply(queue: &mut TaskQueue, groups: Vec<(Vec<Op>, Commit)>) -> Option<Commit> {
    if groups.is_empty() {
        return None;
    }
    let mut index: HashMap<String, usize> =
        queue.tasks.iter().enumerate().map(|(i, t)| (t.task_id.clone(), i)).collect();
    let mut slots: Vec<Option<Task>> = std::mem::take(&mut queue.tasks).into_iter().map(Some).collect();
    let mut last = None;
    for (ops, commit) in groups {
        for op in ops {
            match op {
                Op::Upsert(t) => match index.get(&t.task_id) {
                    Some(&i) => slots[i] = Some(*t),
                    None => {
                        index.insert(t.task_id.clone(), slots.len());
                        slots.push(Some(*t));
                    }
                },
                Op::Remove(id) => {
                    if let Some(i) = index.remove(&id) {
                        slots[i] = None;
                    }
                }
            }
        }
        queue.intake_offset = commit.intake_offset;
        queue.updated_at = commit.updated_at;
        last = Some(commit);
    }
    queue.tasks = slots.into_iter().flatten().collect();
    last
}

/// Where a reader puts the queue's tasks as [`load_into`] reads them: a reader that needs little
/// of each task keeps little (the integration daemon keeps the dispatch of each, the metrics
/// the ids), and the coordinator holds the tasks not yet due apart.
pub trait Holder {
    /// Forgets every task: the read starts again (a compaction replaced the snapshot under it).
    fn clear(&mut self);
    /// The snapshot file the tasks are read from (a holder may keep it to read lines back).
    fn snapshot_opened(&mut self, _file: &std::fs::File) {}
    /// A task of the snapshot as its text (compact JSON) at `offset`, before it is checked and
    /// decoded: a holder that reads the little it keeps from the text itself (the API's tasks
    /// table) returns true, and the task is neither checked against the schema nor decoded;
    /// false (the default, and a holder's answer to a text it cannot read) goes on to
    /// [`Holder::put_snapshot_line`]. The writers checked every task they wrote.
    fn take_snapshot_text(&mut self, _text: &str, _offset: u64) -> bool {
        false
    }
    /// A task of the snapshot read from its line at `offset`, `len` bytes (its compact JSON).
    fn put_snapshot_line(&mut self, task: Task, _offset: u64, _len: u32) {
        self.put_new(task)
    }
    /// A task of the snapshot (its id is not held yet).
    fn put_new(&mut self, task: Task) {
        self.put(task)
    }
    /// A journal line's whole record: replaces the task of its id, or adds it.
    fn put(&mut self, task: Task);
    /// A journal line's removal.
    fn remove(&mut self, task_id: &str);
}

/// The tasks in a `Vec`, in the snapshot's order, a task replaced in place and a new one
/// appended (what [`load`] returns).
#[derive(Default)]
struct InOrder {
    tasks: Vec<Option<Task>>,
    /// Built at the first journal line (a load without one never hashes the ids).
    index: Option<HashMap<String, usize>>,
}

impl InOrder {
    fn index(&mut self) -> &mut HashMap<String, usize> {
        let tasks = &self.tasks;
        self.index.get_or_insert_with(|| {
            tasks.iter().enumerate().filter_map(|(i, t)| Some((t.as_ref()?.task_id.clone(), i))).collect()
        })
    }

    fn into_tasks(self) -> Vec<Task> {
        self.tasks.into_iter().flatten().collect()
    }
}

impl Holder for InOrder {
    fn clear(&mut self) {
        *self = InOrder::default();
    }
    fn put_new(&mut self, task: Task) {
        if let Some(index) = self.index.as_mut() {
            index.insert(task.task_id.clone(), self.tasks.len());
        }
        self.tasks.push(Some(task));
    }
    fn put(&mut self, task: Task) {
        let next = self.tasks.len();
        match self.index().get(&task.task_id).copied() {
            Some(i) => self.tasks[i] = Some(task),
            None => {
                self.index().insert(task.task_id.clone(), next);
                self.tasks.push(Some(task));
            }
        }
    }
    fn remove(&mut self, task_id: &str) {
        if let Some(i) = self.index().remove(task_id) {
            self.tasks[i] = None;
        }
    }
}

/// The snapshot's header (tasks empty), its tasks given to `holder`: streamed one line at a
/// time when the file is in the writers' layout (`task::snapshot_read`), else read whole.
fn read_snapshot(store: &Store, holder: &mut dyn Holder) -> Result<TaskQueue> {
    match super::snapshot_read::stream(&store.path(TASK_QUEUE), holder)? {
        super::snapshot_read::Streamed::Header(head) => Ok(*head),
        super::snapshot_read::Streamed::Whole => {
            holder.clear();
            let mut queue: TaskQueue = store.load_snapshot()?;
            for t in std::mem::take(&mut queue.tasks) {
                holder.put_new(t);
            }
            Ok(queue)
        }
    }
}

/// Applies committed groups to a holder in order; returns the last commit.
fn apply_to(holder: &mut dyn Holder, head: &mut TaskQueue, groups: Vec<(Vec<Op>, Commit)>) -> Option<Commit> {
    let mut last = None;
    for (ops, commit) in groups {
        for op in ops {
            match op {
                Op::Upsert(t) => holder.put(*t),
                Op::Remove(id) => holder.remove(&id),
            }
        }
        head.intake_offset = commit.intake_offset;
        head.updated_at = commit.updated_at;
        last = Some(commit);
    }
    last
}

/// Reads the queue: the snapshot and every committed group of its generation. The one reader of
/// the queue's files (CLI, API, status, metrics, validate, integration, backup, repair).
pub fn load(store: &Store) -> Result<Loaded> {
    load_with(store, true)
}

/// [`load`] into a [`Holder`]: the `queue` returned is the header (no tasks); the tasks went to
/// `holder`.
pub fn load_into(store: &Store, holder: &mut dyn Holder) -> Result<Loaded> {
    load_holder(store, holder, true)
}

/// [`load`] without quarantining bad lines (pure readers such as `cortex validate`).
pub fn load_quiet(store: &Store) -> Result<Loaded> {
    load_with(store, false)
}

fn load_with(store: &Store, quarantine: bool) -> Result<Loaded> {
    let mut tasks = InOrder::default();
    let mut loaded = load_holder(store, &mut tasks, quarantine)?;
    loaded.queue.tasks = tasks.into_tasks();
    Ok(loaded)
}

/// True when the snapshot on disk is the one `pos` belongs to: the same identity (device,
/// inode, size, times) and, while that identity is within its timestamp tick (a change in the
/// same tick could keep it), the same generation in its header.
pub fn snapshot_is_current(store: &Store, pos: &JournalPos) -> bool {
    let now = FileIdentity::stat(&store.path(TASK_QUEUE)).ok().flatten();
    now.is_some()
        && now == pos.snapshot
        && (now.is_some_and(|s| !s.is_racy()) || snapshot_generation(store).is_ok_and(|g| g == pos.generation))
}

/// True when two identities of the snapshot are the same file with the same content as far as
/// `stat` tells (device, inode, size, times): a replace or an edit in place between them shows.
fn same_snapshot(a: Option<FileIdentity>, b: Option<FileIdentity>) -> bool {
    a == b
}

fn load_holder(store: &Store, holder: &mut dyn Holder, quarantine: bool) -> Result<Loaded> {
    let snap_path = store.path(TASK_QUEUE);
    let jpath = path(store);
    let mut attempt = 0;
    loop {
        attempt += 1;
        holder.clear();
        let before = FileIdentity::stat(&snap_path)?;
        let mut queue = read_snapshot(store, holder)?;
        let (bytes, len, journal) = read_tail_identified(&jpath, 0)?;
        let after = FileIdentity::stat(&snap_path)?;
        if !same_snapshot(before, after) && attempt < READ_ATTEMPTS {
            continue;
        }
        let generation = queue.journal_generation;
        let parsed = parse(store, &bytes, 0, generation, quarantine, attempt < READ_ATTEMPTS);
        if parsed.inconsistent {
            continue;
        }
        let counts = queue.counts.take();
        let last = apply_to(holder, &mut queue, parsed.groups);
        let counts = match last {
            Some(c) => c.counts,
            None => counts,
        };
        queue.counts = counts.clone();
        let mut pos = JournalPos {
            snapshot: after,
            generation,
            end: parsed.end,
            len,
            tail: parsed.tail.unwrap_or_default(),
            ..JournalPos::default()
        };
        pos.identify(journal);
        return Ok(Loaded { queue, pos, bad_lines: parsed.bad, stale_lines: parsed.stale, counts });
    }
}

/// Brings a queue held in memory up to date with what others appended since `pos` (the caller
/// checked the snapshot is the one `pos` belongs to). Returns false when the journal no longer
/// continues from `pos` (it was truncated or replaced): the caller loads again.
pub fn catch_up(store: &Store, queue: &mut TaskQueue, pos: &mut JournalPos) -> Result<bool> {
    catch_up_touching(store, queue, pos, &mut |_, _| {})
}

/// [`catch_up`], calling `touched` with the queue and each task id a line changes or removes
/// before the lines are applied (the coordinator brings a parked task back into its queue first).
pub fn catch_up_touching(
    store: &Store,
    queue: &mut TaskQueue,
    pos: &mut JournalPos,
    touched: &mut dyn FnMut(&mut TaskQueue, &str),
) -> Result<bool> {
    let Some(parsed) = read_since(store, pos)? else { return Ok(false) };
    for (ops, _) in &parsed.groups {
        for op in ops {
            match op {
                Op::Upsert(t) => touched(queue, &t.task_id),
                Op::Remove(id) => touched(queue, id),
            }
        }
    }
    apply(queue, parsed.groups);
    Ok(true)
}

/// The committed groups appended since `pos`, `pos` moved after them; None when the journal no
/// longer continues from `pos` (truncated, replaced, or its last commit read is gone: a commit
/// taken back after a failed flush): the caller loads again, so nothing of a commit taken back
/// is kept.
fn read_since(store: &Store, pos: &mut JournalPos) -> Result<Option<Parsed>> {
    let (bytes, len, identity) = read_tail_identified(&path(store), pos.end)?;
    if len < pos.end {
        return Ok(None);
    }
    if identity.map(|i| (i.dev, i.ino)) != pos.journal.map(|i| (i.dev, i.ino)) && pos.end > 0 {
        // Another file took the journal's name.
        return Ok(None);
    }
    if !tail_holds(store, pos)? {
        return Ok(None);
    }
    let parsed = parse(store, &bytes, pos.end, pos.generation, true, true);
    if parsed.inconsistent || parsed.stale > 0 {
        return Ok(None);
    }
    pos.end = parsed.end;
    pos.len = len;
    if let Some(tail) = parsed.tail {
        pos.tail = tail;
    }
    pos.identify(identity);
    Ok(Some(parsed))
}

/// [`catch_up`] into a [`Holder`] (`head`: the queue's header, kept up to date).
pub fn catch_up_into(
    store: &Store,
    holder: &mut dyn Holder,
    head: &mut TaskQueue,
    pos: &mut JournalPos,
) -> Result<bool> {
    let Some(parsed) = read_since(store, pos)? else { return Ok(false) };
    apply_to(holder, head, parsed.groups);
    Ok(true)
}

/// How many bytes of the snapshot's start [`read_counts`] reads for its header.
const HEAD_BYTES: usize = 8 * 1024;

/// How many bytes of the journal's end [`read_counts`] reads for its last commit.
const TAIL_BYTES: u64 = 64 * 1024;

/// The queue's counts without loading it: the snapshot's header and the journal's last commit
/// of its generation — O(1) whatever the backlog. None when they cannot be read that way (a
/// snapshot written before the journal or by hand, a journal whose last commit is not in its
/// last 64 KiB): the caller counts a [`load`]ed queue instead.
pub fn read_counts(store: &Store) -> Result<Option<QueueCounts>> {
    let snap_path = store.path(TASK_QUEUE);
    for _ in 0..READ_ATTEMPTS {
        let before = FileIdentity::stat(&snap_path)?;
        let Some(header) = read_header(&snap_path)? else { return Ok(None) };
        if header.journal_generation == 0 {
            return Ok(None);
        }
        let jpath = path(store);
        let len = journal_len(store);
        let from = len.saturating_sub(TAIL_BYTES);
        let (bytes, _) = read_tail(&jpath, from)?;
        let after = FileIdentity::stat(&snap_path)?;
        if !same_snapshot(before, after) {
            continue;
        }
        let last_commit = bytes
            .split(|&b| b == b'\n')
            .rev()
            .filter_map(|line| serde_json::from_slice::<LineIn>(line).ok())
            .find(|l| l.generation == header.journal_generation && l.commit.is_some());
        return Ok(match last_commit {
            Some(l) => l.commit.and_then(|c| c.counts),
            None if from == 0 => header.counts,
            None => None,
        });
    }
    Ok(None)
}

/// The snapshot's header (every field but `tasks`) from its first bytes, when it is written
/// header first (as [`super::queue_file::encode`] writes it).
fn read_header(snap_path: &Path) -> Result<Option<TaskQueue>> {
    let mut f = match crate::store::open::read(snap_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::store::open::refuse_link(snap_path, "open", e)),
    };
    let mut head = vec![0u8; HEAD_BYTES];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(Error::io(snap_path, "read", e)),
        }
    }
    head.truncate(n);
    const MARK: &[u8] = b"\n  \"tasks\": [";
    let Some(at) = head.windows(MARK.len()).position(|w| w == MARK) else { return Ok(None) };
    let mut doc = head[..at].to_vec();
    doc.extend_from_slice(b"\"tasks\": []}");
    Ok(serde_json::from_slice::<TaskQueue>(&doc).ok())
}

/// True when the snapshot at `path` is in its writers' layout and every task line in it meets
/// the schema and reads as a task, checked one line at a time (`cortex validate` and the
/// integration daemon; false: check it whole, which names the problem).
pub fn snapshot_streams(path: &Path) -> bool {
    struct Discard;
    impl Holder for Discard {
        fn clear(&mut self) {}
        fn put(&mut self, _: Task) {}
        fn remove(&mut self, _: &str) {}
    }
    matches!(super::snapshot_read::stream(path, &mut Discard), Ok(super::snapshot_read::Streamed::Header(_)))
}

/// The generation of the snapshot on disk, from its header (0: none, or not readable that way).
pub fn snapshot_generation(store: &Store) -> Result<u64> {
    Ok(read_header(&store.path(TASK_QUEUE))?.map_or(0, |h| h.journal_generation))
}

/// What [`check_lines`] found in journal bytes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LineCheck {
    /// Complete lines read.
    pub lines: usize,
    /// Lines that are not journal records (bad JSON, wrong shape, a task breaking its schema).
    pub bad: usize,
    /// Bytes of whole lines (an incomplete last line is left for the next check).
    pub consumed: u64,
    /// The first problems, each naming its byte offset in the journal.
    pub problems: Vec<String>,
}

/// Checks journal lines starting at byte `from` of the journal (the integration daemon checks
/// only what was appended since its last check): each line must be a journal record, and a
/// task record must meet the queue schema's `$defs/task`. Lines of other generations are
/// checked the same (they are ignored by readers, not bad).
pub fn check_lines(bytes: &[u8], from: u64) -> LineCheck {
    let mut out = LineCheck::default();
    let mut at = 0usize;
    while let Some(nl) = bytes[at..].iter().position(|&b| b == b'\n') {
        let line = &bytes[at..at + nl];
        let offset = from + at as u64;
        at += nl + 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        out.lines += 1;
        let problem = match serde_json::from_slice::<serde_json::Value>(line) {
            Err(e) => Some(format!("not JSON ({e})")),
            Ok(v) => crate::base::schema::check(TASK_QUEUE_JOURNAL.schema, &v, 1)
                .into_iter()
                .next()
                .map(|v| format!("at {}: {}", v.pointer, v.expected))
                .or_else(|| {
                    let task = v.get("task")?;
                    let v = crate::base::schema::check_def(TASK_QUEUE.schema, "task", task, 1).into_iter().next()?;
                    Some(format!("at /task{}: {}", v.pointer, v.expected))
                }),
        };
        if let Some(p) = problem {
            out.bad += 1;
            if out.problems.len() < 5 {
                out.problems.push(format!("byte {offset}: {}", crate::base::schema::bounded(&p, 200)));
            }
        }
    }
    out.consumed = at as u64;
    out
}

/// What a reader that needs little of each task keeps of it ([`TaskStates`]): its status, and for a task in
/// progress its dispatch and worker type.
#[derive(Debug, Clone, PartialEq)]
pub enum HeldState {
    InProgress { dispatch_id: Box<str>, worker_type: Box<str> },
    Other(super::model::TaskStatus),
}

/// Every queued task's [`HeldState`] by id: about 100 bytes per task, for the integration
/// daemon's consistency check and the metrics' counts.
#[derive(Debug, Default)]
pub struct TaskStates {
    pub tasks: HashMap<Box<str>, HeldState>,
    /// The ids of the tasks in progress, in order (a check of the running ones costs them, not
    /// the backlog).
    pub in_progress: std::collections::BTreeSet<Box<str>>,
}

impl Holder for TaskStates {
    fn clear(&mut self) {
        self.tasks.clear();
        self.in_progress.clear();
    }
    fn put(&mut self, task: Task) {
        let state = match &task.state {
            super::model::TaskState::InProgress { dispatch_id, .. } => HeldState::InProgress {
                dispatch_id: dispatch_id.as_str().into(),
                worker_type: task.worker_type.as_str().into(),
            },
            other => HeldState::Other(other.status()),
        };
        let id = task.task_id.into_boxed_str();
        if matches!(state, HeldState::InProgress { .. }) {
            self.in_progress.insert(id.clone());
        } else {
            self.in_progress.remove(&id);
        }
        self.tasks.insert(id, state);
    }
    fn remove(&mut self, task_id: &str) {
        self.tasks.remove(task_id);
        self.in_progress.remove(task_id);
    }
}

/// A queue's [`TaskStates`] kept in memory by a reader that follows it (the integration
/// daemon's consistency check): brought up to date by reading only the journal lines appended
/// since its offset, and loaded whole only when the snapshot was replaced (a compaction, an
/// operator's edit) or the journal no longer continues from its offset.
#[derive(Debug, Default)]
pub struct Follower {
    held: Option<(TaskStates, TaskQueue)>,
    pos: JournalPos,
}

impl Follower {
    /// The queue's task states as they are now.
    pub fn refresh(&mut self, store: &Store) -> Result<&TaskStates> {
        let current = match self.held.as_mut() {
            Some((states, head)) if snapshot_is_current(store, &self.pos) => {
                unchanged(store, &self.pos) || catch_up_into(store, states, head, &mut self.pos)?
            }
            _ => false,
        };
        if !current {
            let mut states = TaskStates::default();
            let loaded = load_into(store, &mut states)?;
            self.pos = loaded.pos;
            self.held = Some((states, loaded.queue));
        }
        Ok(&self.held.get_or_insert_default().0)
    }
}

/// The journal's length (0 when missing).
pub fn journal_len(store: &Store) -> u64 {
    std::fs::symlink_metadata(path(store)).map(|m| m.len()).unwrap_or(0)
}

/// [`COMPACT_MIN_BYTES`], or in debug builds `CORTEX_COMPACT_MIN_BYTES` (the tests compact
/// after a few changes to SIGKILL writers mid-compaction).
fn compact_min_bytes() -> u64 {
    if cfg!(debug_assertions)
        && let Some(n) = std::env::var("CORTEX_COMPACT_MIN_BYTES").ok().and_then(|v| v.parse().ok())
    {
        return n;
    }
    COMPACT_MIN_BYTES
}

/// True when the writer should compact instead of appending `adding` bytes.
pub fn needs_compaction(pos: &JournalPos, adding: u64) -> bool {
    if pos.generation == 0 {
        return true;
    }
    let snapshot = pos.snapshot.map_or(0, |s| s.len);
    let after = pos.end + adding;
    after >= compact_min_bytes() && after > snapshot / COMPACT_DIVISOR
}

/// A fresh generation after `previous`: never reused (see the module documentation).
pub fn next_generation(previous: u64) -> u64 {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    now.max(previous.saturating_add(1)).max(1)
}

/// Encodes one commit: the changed tasks' whole records, the removals, and the commit line.
/// Each task is checked against the queue schema's `$defs/task` (a violation refuses the write,
/// naming the task and field).
pub fn encode_commit<'a>(
    generation: u64,
    start: u64,
    changed: impl IntoIterator<Item = &'a Task>,
    removed: &[String],
    mut commit: Commit,
) -> Result<Vec<u8>> {
    let jrel = TASK_QUEUE_JOURNAL.rel;
    let mut out = Vec::with_capacity(1024);
    let mut lines = 0u64;
    for task in changed {
        let value = serde_json::to_value(task).map_err(|e| Error::encode(format!("task {}", task.task_id), e))?;
        if let Some(v) = crate::base::schema::check_def(TASK_QUEUE.schema, "task", &value, 1).into_iter().next() {
            return Err(Error::Invalid {
                path: jrel.into(),
                pointer: format!("/task{}", v.pointer),
                expected: format!("refusing to write task {}: {}", task.task_id, v.expected),
                quarantined: None,
            });
        }
        let line = LineOut { generation, task: Some(task), removed: None, commit: None };
        serde_json::to_writer(&mut out, &line).map_err(|e| Error::encode(jrel, e))?;
        out.push(b'\n');
        lines += 1;
    }
    for id in removed {
        let line = LineOut { generation, task: None, removed: Some(id), commit: None };
        serde_json::to_writer(&mut out, &line).map_err(|e| Error::encode(jrel, e))?;
        out.push(b'\n');
        lines += 1;
    }
    commit.start = start;
    commit.lines = lines;
    let line = LineOut { generation, task: None, removed: None, commit: Some(&commit) };
    serde_json::to_writer(&mut out, &line).map_err(|e| Error::encode(jrel, e))?;
    out.push(b'\n');
    Ok(out)
}

/// Appends an encoded commit at `pos.end` with one `write` (the caller holds the `task-queue`
/// lock): an uncommitted or stale tail is truncated first. Returns the journal, not yet flushed:
/// the commit counts once the caller fsynced it. On success `pos` points after the commit.
pub fn append_commit(store: &Store, pos: &mut JournalPos, bytes: &[u8]) -> Result<std::fs::File> {
    use std::io::Write;
    let jpath = path(store);
    let existed = jpath.symlink_metadata().is_ok();
    let mut f = crate::store::open::append(&jpath).inspect_err(crate::store::outage::note)?;
    let len = f.metadata().map_err(|e| Error::io(&jpath, "stat", e))?.len();
    if len < pos.end {
        // Shorter than what this writer read under the lock: someone truncated it by hand.
        // Extending it would write zeros; the caller loads the queue again instead.
        return Err(Error::other(format!(
            "{} is shorter ({len} bytes) than its last commit read ({} bytes): it was truncated by hand;              the queue is read again",
            jpath.display(),
            pos.end
        )));
    }
    if len != pos.end {
        f.set_len(pos.end).map_err(|e| Error::io(&jpath, "truncate the uncommitted tail of", e))?;
    }
    let written = f.write_all(bytes).map_err(|e| Error::io(&jpath, "append to", e));
    if let Err(e) = written {
        crate::store::outage::note(&e);
        // Cut short (a full disk): no commit line, so nothing of it counts; removed now if we can.
        let _ = f.set_len(pos.end);
        pos.len = f.metadata().map_or(pos.len, |m| m.len());
        // Its own change: the wake-up it causes is recognised as such (no spin on a full disk).
        pos.identify(f.metadata().ok().map(|m| FileIdentity::of(&m)));
        return Err(e);
    }
    pos.end += bytes.len() as u64;
    pos.len = pos.end;
    pos.tail = tail_of(&bytes[bytes.len().saturating_sub(TAIL_HASHED)..]);
    pos.identify(f.metadata().ok().map(|m| FileIdentity::of(&m)));
    if !existed && let Err(e) = crate::store::atomic::fsync_dir(jpath.parent().unwrap_or(Path::new("."))) {
        // Written: taken back so the failure reported is true (the caller's change is not done).
        let _ = f.set_len(pos.end - bytes.len() as u64);
        return Err(e);
    }
    Ok(f)
}

/// Takes back an appended commit whose flush failed: the journal truncated back to where
/// `before` was, and `pos` set back to it. Returns whether the truncation is durable (false: the
/// commit may still be there; readers that applied it find its commit line gone or not, and
/// the caller loads again).
pub fn roll_back(store: &Store, pos: &mut JournalPos, before: JournalPos) -> bool {
    let jpath = path(store);
    let mut done = false;
    let mut identity = None;
    if let Ok(f) = crate::store::open::append(&jpath)
        && f.set_len(before.end).is_ok()
    {
        done = f.sync_all().is_ok();
        identity = f.metadata().ok().map(|m| FileIdentity::of(&m));
    }
    *pos = before;
    pos.len = before.end;
    pos.identify(identity);
    done
}

/// Empties the journal after a compaction's snapshot is durable (its lines are of the previous
/// generation by then: a crash before this leaves them ignored).
pub fn reset(store: &Store) -> Result<()> {
    let jpath = path(store);
    match jpath.symlink_metadata() {
        Ok(m) if m.len() == 0 => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&jpath, "stat", e)),
    }
    let f = crate::store::open::append(&jpath)?;
    f.set_len(0).map_err(|e| Error::io(&jpath, "truncate", e))?;
    f.sync_all().map_err(|e| Error::io(&jpath, "fsync", e))
}

/// Writes the whole queue as a new snapshot (a compaction): a new generation, the snapshot
/// replaced atomically, then the journal emptied. The caller holds the `task-queue` lock.
pub fn write_snapshot(store: &Store, queue: &TaskQueue) -> Result<()> {
    let mut q = queue.clone();
    q.journal_generation = next_generation(queue.journal_generation);
    q.counts = Some(QueueCounts::of(&q.tasks));
    let bytes = super::queue_file::encode(&store.path(TASK_QUEUE), &q, None)?;
    if let Err(e) = crate::store::atomic::write_atomic(&store.path(TASK_QUEUE), &bytes) {
        // Renamed into place before the error (a failed directory fsync): the write took effect
        // and must not be reported as not done; anything else did not.
        if snapshot_generation(store).ok() != Some(q.journal_generation) {
            return Err(e);
        }
        tracing::warn!("the queue's snapshot was replaced, but not confirmed durable: {e}");
    }
    // The new snapshot is in place; its journal's lines are of the previous generation now
    // (ignored by every reader), so emptying it can wait for the next writer.
    if let Err(e) = reset(store) {
        tracing::warn!("cannot empty the queue's journal after a compaction: {e}");
    }
    Ok(())
}

/// A change made under the `task-queue` lock to a queue loaded with [`load`]: tasks whose record
/// differs from `before` (or are new) are appended whole, tasks gone are appended as removals,
/// in one commit, fdatasynced; or the queue is compacted when the journal has grown enough.
pub fn write_change(store: &Store, before: &TaskQueue, after: &TaskQueue, pos: &mut JournalPos) -> Result<()> {
    let old: HashMap<&str, &Task> = before.tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
    let changed: Vec<&Task> = after.tasks.iter().filter(|t| old.get(t.task_id.as_str()) != Some(t)).collect();
    let now: std::collections::HashSet<&str> = after.tasks.iter().map(|t| t.task_id.as_str()).collect();
    let removed: Vec<String> =
        before.tasks.iter().filter(|t| !now.contains(t.task_id.as_str())).map(|t| t.task_id.clone()).collect();
    let commit = Commit {
        intake_offset: after.intake_offset,
        updated_at: after.updated_at,
        counts: Some(QueueCounts::of(&after.tasks)),
        ..Commit::default()
    };
    let bytes = encode_commit(pos.generation, pos.end, changed, &removed, commit)?;
    if needs_compaction(pos, bytes.len() as u64) {
        let mut q = after.clone();
        q.journal_generation = pos.generation;
        write_snapshot(store, &q)?;
        // Done: a position that cannot be read is left empty (the next writer under the lock
        // loads again), never reported as a failed change.
        *pos = load_quiet(store).map(|l| l.pos).unwrap_or_default();
        return Ok(());
    }
    let before = *pos;
    let f = append_commit(store, pos, &bytes)?;
    let jpath = path(store);
    match f.sync_data() {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = Error::io(&jpath, "fsync", e);
            crate::store::outage::note(&e);
            // Not durable: taken back, so the failure reported is true. If even that fails, the
            // change is in the journal and readers apply it: it took effect, say so.
            if roll_back(store, pos, before) {
                Err(e)
            } else {
                tracing::warn!("a queue change was appended but not confirmed durable: {e}");
                *pos = JournalPos::default();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
