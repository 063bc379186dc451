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
    let mut f = match crate::store::open::read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(crate::store::open::refuse_link(path, "open", e)),
    };
    let len = f.metadata().map_err(|e| Error::io(path, "stat", e))?.len();
    if start > len {
        return Ok((Vec::new(), len));
    }
    f.seek(SeekFrom::Start(start)).map_err(|e| Error::io(path, "seek", e))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf).map_err(|e| Error::io(path, "read", e))?;
    let read_len = start + buf.len() as u64;
    Ok((buf, read_len))
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
}

/// With `strict`, a commit line that does not match the group before it stops the parse
/// (`inconsistent`: the caller reads again); without, the group is taken as it is (a journal
/// edited by hand: nothing it holds is dropped).
fn parse(store: &Store, bytes: &[u8], from: u64, generation: u64, quarantine: bool, strict: bool) -> Parsed {
    let jpath = path(store);
    let mut out = Parsed { groups: Vec::new(), end: from, bad: 0, stale: 0, inconsistent: false };
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

/// Reads the queue: the snapshot and every committed group of its generation. The one reader of
/// the queue's files (CLI, API, status, metrics, validate, integration, backup, repair).
pub fn load(store: &Store) -> Result<Loaded> {
    load_with(store, true)
}

/// [`load`] without quarantining bad lines (pure readers such as `cortex validate`).
pub fn load_quiet(store: &Store) -> Result<Loaded> {
    load_with(store, false)
}

fn load_with(store: &Store, quarantine: bool) -> Result<Loaded> {
    let snap_path = store.path(TASK_QUEUE);
    let jpath = path(store);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = FileIdentity::stat(&snap_path)?;
        let mut queue: TaskQueue = store.load_snapshot()?;
        let (bytes, len) = read_tail(&jpath, 0)?;
        let after = FileIdentity::stat(&snap_path)?;
        if before.map(|i| i.ino) != after.map(|i| i.ino) && attempt < READ_ATTEMPTS {
            continue;
        }
        let generation = queue.journal_generation;
        let parsed = parse(store, &bytes, 0, generation, quarantine, attempt < READ_ATTEMPTS);
        if parsed.inconsistent {
            continue;
        }
        let counts = queue.counts.take();
        let last = apply(&mut queue, parsed.groups);
        let counts = match last {
            Some(c) => c.counts,
            None => counts,
        };
        queue.counts = counts.clone();
        let pos = JournalPos { snapshot: after, generation, end: parsed.end, len };
        return Ok(Loaded { queue, pos, bad_lines: parsed.bad, stale_lines: parsed.stale, counts });
    }
}

/// Brings a queue held in memory up to date with what others appended since `pos` (the caller
/// checked the snapshot is the one `pos` belongs to). Returns false when the journal no longer
/// continues from `pos` (it was truncated or replaced): the caller loads again.
pub fn catch_up(store: &Store, queue: &mut TaskQueue, pos: &mut JournalPos) -> Result<bool> {
    let (bytes, len) = read_tail(&path(store), pos.end)?;
    if len < pos.end {
        return Ok(false);
    }
    let parsed = parse(store, &bytes, pos.end, pos.generation, true, true);
    if parsed.inconsistent || parsed.stale > 0 {
        return Ok(false);
    }
    apply(queue, parsed.groups);
    pos.end = parsed.end;
    pos.len = len;
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
        if before.map(|i| i.ino) != after.map(|i| i.ino) {
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

/// A queue kept in memory by a reader that follows it (the integration daemon's consistency
/// check): brought up to date by reading only the journal lines appended since its offset, and
/// loaded whole only when the snapshot was replaced (a compaction, an operator's edit).
#[derive(Debug, Default)]
pub struct Follower {
    queue: Option<TaskQueue>,
    pos: JournalPos,
}

impl Follower {
    /// The queue as it is now.
    pub fn refresh(&mut self, store: &Store) -> Result<&TaskQueue> {
        let snapshot = FileIdentity::stat(&store.path(TASK_QUEUE))?;
        let current = match self.queue.as_mut() {
            Some(q) if snapshot.is_some() && snapshot == self.pos.snapshot => {
                journal_len(store) == self.pos.len || catch_up(store, q, &mut self.pos)?
            }
            _ => false,
        };
        if !current {
            let loaded = load(store)?;
            self.pos = loaded.pos;
            self.queue = Some(loaded.queue);
        }
        Ok(self.queue.get_or_insert_default())
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
        return Err(e);
    }
    if !existed {
        crate::store::atomic::fsync_dir(jpath.parent().unwrap_or(Path::new(".")))?;
    }
    pos.end += bytes.len() as u64;
    pos.len = pos.end;
    Ok(f)
}

/// Takes back an appended commit whose flush failed (best effort: the cycle fails whole).
pub fn roll_back(store: &Store, pos: &mut JournalPos, to: u64) {
    let jpath = path(store);
    if let Ok(f) = crate::store::open::append(&jpath)
        && f.set_len(to).is_ok()
    {
        let _ = f.sync_all();
    }
    pos.end = to;
    pos.len = to;
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
    crate::store::atomic::write_atomic(&store.path(TASK_QUEUE), &bytes)?;
    reset(store)
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
        *pos = load_quiet(store)?.pos;
        return Ok(());
    }
    let f = append_commit(store, pos, &bytes)?;
    let jpath = path(store);
    f.sync_data().map_err(|e| Error::io(&jpath, "fsync", e)).inspect_err(crate::store::outage::note)
}

#[cfg(test)]
mod tests;
