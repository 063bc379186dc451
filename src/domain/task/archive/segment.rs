//! Sealed segments of the task archive and their sidecar indexes, under `coordination/task-archive/`.
//!
//! The active segment stays `coordination/task-archive.jsonl` (the coordinator's append-with-the-
//! queue protocol is unchanged). Once it passes `[archive] segment_bytes`, the coordinator seals it
//! in its commit, under the `task-queue` lock (so nothing appends meanwhile):
//!
//! 1. it reads the active file once and writes the index `seg-NNNNNN.idx` atomically
//!    (`store::atomic`: temporary, fsync, rename, fsync directory);
//! 2. it renames the active file to `seg-NNNNNN.jsonl` (same bytes, same inode) and fsyncs both
//!    directories; the next append creates a new active file;
//! 3. past `[archive] keep_segments` (0: keep all) it deletes the oldest segments, the `.jsonl`
//!    before its `.idx`.
//!
//! A segment exists when its `.jsonl` does; an `.idx` without its `.jsonl` (a seal killed after
//! step 1, a retention killed between its two deletions) is ignored and replaced or removed by
//! the next seal. Readers open the active file before they list the segments, so a seal between
//! the two shows them a task twice (same line, deduplicated by id), never not at all. An index that
//! does not describe its segment (missing, unreadable, another size) is not trusted: the segment
//! is scanned instead (correct, slower) and `cortex validate` names it.
//!
//! The index (text, one compact JSON value per line): a header line ([`IndexHeader`]: the
//! segment's size, line and task counts, counts by status, first and last completion time, and
//! where each status's section starts and ends), then one [`Entry`] per task id — the id's last
//! line in the segment: status, byte offset, length — sorted by (status, id). A lookup by id is
//! a binary search in each status's section (three in practice: an archive holds completed, failed
//! and cancelled tasks), a listing by status walks one section from a binary-searched start: both
//! read a few blocks of the index and the matching lines of the segment, whatever the segment's
//! size.

use super::super::model::{Task, TaskStatus};
use crate::base::error::{Error, Result};
use crate::store::{Store, atomic, jsonl};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The format written in each index's header.
pub const INDEX_FORMAT: u32 = 1;

/// One sealed segment: its number (oldest is lowest) and paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub number: u32,
    pub path: PathBuf,
    pub index_path: PathBuf,
}

/// The first line of an index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexHeader {
    pub format: u32,
    /// The segment's number (0 for an index built in memory): an index copied from another
    /// segment is not this one's.
    pub segment: u32,
    /// The segment's size in bytes: an index naming another size is not this segment's.
    pub bytes: u64,
    /// Non-blank lines, and those that are not a task (skipped by every reader).
    pub lines: u64,
    pub bad_lines: u64,
    /// Distinct task ids (entries).
    pub tasks: u64,
    /// Entries by status.
    pub counts: BTreeMap<TaskStatus, u64>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub first_completed_at: Option<crate::base::clock::Timestamp>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub last_completed_at: Option<crate::base::clock::Timestamp>,
    /// The smallest and largest task id: a lookup skips a segment whose range cannot hold the id
    /// (ids sort by creation time, so segments' ranges barely overlap).
    #[serde(default)]
    pub first_id: Option<String>,
    #[serde(default)]
    pub last_id: Option<String>,
    /// Byte range in the index of each status's entries, `[start, end)`.
    pub sections: BTreeMap<TaskStatus, (u64, u64)>,
}

/// One task of a segment: its last line there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "id")]
    pub task_id: String,
    #[serde(rename = "s")]
    pub status: TaskStatus,
    /// Byte offset of the line in the segment, and its length without the newline.
    #[serde(rename = "o")]
    pub offset: u64,
    #[serde(rename = "n")]
    pub len: u64,
}

/// What a seal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub segment: u32,
    pub tasks: u64,
    pub bytes: u64,
    /// Segments deleted by `[archive] keep_segments`.
    pub removed: Vec<u32>,
}

/// `task-archive/catalog.json`: every sealed segment's index header in one small file, rewritten
/// (atomically) by each seal before its rename, so a reader learns which segments can hold an id
/// or a status from one read instead of one per segment. An entry is used only for a listed
/// segment whose size it names; any other segment's own index is read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    pub format: u32,
    pub segments: BTreeMap<u32, IndexHeader>,
}

/// `task-archive/catalog.json`.
pub fn catalog_path(store: &Store) -> PathBuf {
    dir(store).join("catalog.json")
}

impl Catalog {
    /// The catalog as stored (empty when missing or unreadable: readers then open each index).
    pub fn load(store: &Store) -> Catalog {
        crate::store::open::read_bytes(&catalog_path(store))
            .ok()
            .and_then(|b| serde_json::from_slice::<Catalog>(&b).ok())
            .filter(|c| c.format == INDEX_FORMAT)
            .unwrap_or_default()
    }

    /// The header of a listed segment, if the catalog has it and it names the segment's size.
    pub fn header_of(&self, seg: &Segment) -> Option<&IndexHeader> {
        let h = self.segments.get(&seg.number)?;
        let len = std::fs::symlink_metadata(&seg.path).ok().filter(|m| m.is_file())?.len();
        (h.bytes == len && h.segment == seg.number).then_some(h)
    }

    /// The header of a segment: from the catalog, else from its own index (None: unreadable).
    pub fn header_or_index(&self, seg: &Segment) -> Option<IndexHeader> {
        self.header_of(seg).cloned().or_else(|| open_index_file(seg).ok().map(|(_, h)| h))
    }
}

/// False when a segment's header shows it cannot hold `task_id`; true when it may (or nothing
/// says: no header).
pub fn may_hold(header: Option<&IndexHeader>, task_id: &str) -> bool {
    match header {
        Some(h) => match (&h.first_id, &h.last_id) {
            (Some(first), Some(last)) => first.as_str() <= task_id && task_id <= last.as_str(),
            _ => h.tasks > 0,
        },
        None => true,
    }
}

/// `coordination/task-archive/`.
pub fn dir(store: &Store) -> PathBuf {
    store.home().coord(crate::store::files::TASK_ARCHIVE_SEGMENTS)
}

fn names(number: u32) -> (String, String) {
    (format!("seg-{number:06}.jsonl"), format!("seg-{number:06}.idx"))
}

fn number_of(name: &str, ext: &str) -> Option<u32> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(ext)?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn segment_at(dir: &Path, number: u32) -> Segment {
    let (seg, idx) = names(number);
    Segment { number, path: dir.join(seg), index_path: dir.join(idx) }
}

/// The sealed segments, oldest first (those whose `.jsonl` exists).
pub fn list(store: &Store) -> Vec<Segment> {
    let dir = dir(store);
    let mut out: Vec<Segment> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .flatten()
            .filter_map(|e| number_of(&e.file_name().to_string_lossy(), ".jsonl"))
            .map(|n| segment_at(&dir, n))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort_by_key(|s| s.number);
    out
}

/// Reads a segment (or the active file) once and builds its index. Only whole lines that are tasks
/// are indexed (a line a full disk cut, or any other bad line, is counted and skipped, as every
/// reader skips it); the last line of an id wins.
pub fn build_index(mut reader: impl BufRead) -> std::io::Result<(IndexHeader, Vec<Entry>)> {
    let mut by_id: std::collections::HashMap<String, (Entry, Option<crate::base::clock::Timestamp>)> =
        std::collections::HashMap::new();
    let mut header = IndexHeader {
        format: INDEX_FORMAT,
        segment: 0,
        bytes: 0,
        lines: 0,
        bad_lines: 0,
        tasks: 0,
        counts: BTreeMap::new(),
        first_completed_at: None,
        last_completed_at: None,
        first_id: None,
        last_id: None,
        sections: BTreeMap::new(),
    };
    let mut buf = Vec::new();
    let mut offset = 0u64;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        let start = offset;
        offset += n as u64;
        let whole = buf.ends_with(b"\n");
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        header.lines += 1;
        let task = if whole { serde_json::from_slice::<Task>(line).ok() } else { None };
        let Some(task) = task else {
            header.bad_lines += 1;
            continue;
        };
        let entry =
            Entry { task_id: task.task_id.clone(), status: task.status(), offset: start, len: line.len() as u64 };
        let completed = task.completed_at();
        by_id.insert(task.task_id, (entry, completed));
    }
    header.bytes = offset;
    let mut entries = Vec::with_capacity(by_id.len());
    for (entry, completed) in by_id.into_values() {
        if let Some(c) = completed {
            if header.first_completed_at.is_none_or(|f| c < f) {
                header.first_completed_at = Some(c);
            }
            if header.last_completed_at.is_none_or(|l| c > l) {
                header.last_completed_at = Some(c);
            }
        }
        *header.counts.entry(entry.status).or_default() += 1;
        entries.push(entry);
    }
    header.tasks = entries.len() as u64;
    header.first_id = entries.iter().map(|e| &e.task_id).min().cloned();
    header.last_id = entries.iter().map(|e| &e.task_id).max().cloned();
    entries.sort_by(|a, b| (a.status, &a.task_id).cmp(&(b.status, &b.task_id)));
    Ok((header, entries))
}

/// The index file's bytes: the header (with each section's byte range) and the sorted entries.
pub fn encode_index(header: &IndexHeader, entries: &[Entry]) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(entries.len() * 64);
    let mut ranges: BTreeMap<TaskStatus, (u64, u64)> = BTreeMap::new();
    for e in entries {
        let at = body.len() as u64;
        serde_json::to_writer(&mut body, e).map_err(|e| Error::encode("archive index entry", e))?;
        body.push(b'\n');
        let r = ranges.entry(e.status).or_insert((at, at));
        r.1 = body.len() as u64;
    }
    // Section offsets are relative to the body until the header's own length is known; the
    // header's length depends on the offsets' digits, so settle it by iterating.
    let mut head = header.clone();
    let mut head_len = 0u64;
    loop {
        head.sections = ranges.iter().map(|(s, (a, b))| (*s, (a + head_len, b + head_len))).collect();
        let mut bytes = serde_json::to_vec(&head).map_err(|e| Error::encode("archive index header", e))?;
        bytes.push(b'\n');
        if bytes.len() as u64 == head_len {
            bytes.extend_from_slice(&body);
            return Ok(bytes);
        }
        head_len = bytes.len() as u64;
    }
}

/// A segment's index, trusted only when it describes the segment as it is; otherwise the segment
/// is indexed in memory by reading it.
pub enum Index {
    File { file: File, header: IndexHeader },
    Memory { header: IndexHeader, entries: Vec<Entry> },
}

/// Why a segment's index was not used.
pub fn index_problem(seg: &Segment) -> Option<String> {
    open_index_file(seg).err()
}

fn open_index_file(seg: &Segment) -> std::result::Result<(File, IndexHeader), String> {
    let seg_len = crate::store::open::read(&seg.path)
        .and_then(|f| f.metadata())
        .map(|m| m.len())
        .map_err(|e| format!("{}: {}", seg.path.display(), crate::store::open::read_problem(&e)))?;
    let file = crate::store::open::read(&seg.index_path)
        .map_err(|e| format!("{}: {}", seg.index_path.display(), crate::store::open::read_problem(&e)))?;
    let mut first = Vec::new();
    BufReader::new(&file)
        .take(64 * 1024)
        .read_until(b'\n', &mut first)
        .map_err(|e| format!("{}: {e}", seg.index_path.display()))?;
    let value: serde_json::Value = serde_json::from_slice(first.strip_suffix(b"\n").unwrap_or(&first))
        .map_err(|e| format!("{}: header: {e}", seg.index_path.display()))?;
    let header: IndexHeader = crate::store::decode_value(&value)
        .map_err(|(pointer, expected)| format!("{}: header {pointer}: {expected}", seg.index_path.display()))?;
    if header.format != INDEX_FORMAT {
        return Err(format!("{}: /format is {}, expected {INDEX_FORMAT}", seg.index_path.display(), header.format));
    }
    if header.segment != seg.number {
        return Err(format!("{}: /segment is {}, expected {}", seg.index_path.display(), header.segment, seg.number));
    }
    if header.bytes != seg_len {
        return Err(format!(
            "{}: /bytes is {} but {} has {seg_len} bytes",
            seg.index_path.display(),
            header.bytes,
            seg.path.display()
        ));
    }
    Ok((file, header))
}

thread_local! {
    /// Indexes this thread opened: the tests count them to prove a lookup opens the segments
    /// whose id range holds the id, not every segment.
    static INDEX_OPENS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Indexes opened by this thread so far.
pub fn index_opens() -> u64 {
    INDEX_OPENS.with(|c| c.get())
}

impl Index {
    /// The segment's index file, or (not usable) the segment read into a memory index.
    pub fn open(seg: &Segment) -> Result<Index> {
        INDEX_OPENS.with(|c| c.set(c.get() + 1));
        match open_index_file(seg) {
            Ok((file, header)) => Ok(Index::File { file, header }),
            Err(why) => {
                tracing::warn!("archive segment {}: index not used ({why}); reading the segment", seg.path.display());
                let file = crate::store::open::read(&seg.path)
                    .map_err(|e| crate::store::open::refuse_link(&seg.path, "open", e))?;
                let (header, entries) = build_index(BufReader::with_capacity(1 << 16, file))
                    .map_err(|e| Error::io(&seg.path, "read", e))?;
                Ok(Index::Memory { header, entries })
            }
        }
    }

    pub fn header(&self) -> &IndexHeader {
        match self {
            Index::File { header, .. } | Index::Memory { header, .. } => header,
        }
    }

    /// False when the segment's id range cannot hold `task_id` (its header says so).
    pub fn might_hold(&self, task_id: &str) -> bool {
        let h = self.header();
        match (&h.first_id, &h.last_id) {
            (Some(first), Some(last)) => first.as_str() <= task_id && task_id <= last.as_str(),
            _ => h.tasks > 0,
        }
    }

    /// The entry of `task_id`, if the segment holds it.
    pub fn lookup(&self, task_id: &str) -> Result<Option<Entry>> {
        if !self.might_hold(task_id) {
            return Ok(None);
        }
        let statuses: Vec<TaskStatus> = self.header().counts.keys().copied().collect();
        for status in statuses {
            let mut cursor = self.cursor(status, Some(task_id), true)?;
            if let Some(e) = cursor.next_entry()?
                && e.task_id == task_id
            {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// The entries of `status` in id order from the first id ≥ `from` (> `from` unless
    /// `inclusive`), or from the start.
    pub fn cursor(&self, status: TaskStatus, from: Option<&str>, inclusive: bool) -> Result<Cursor<'_>> {
        match self {
            Index::Memory { entries, .. } => {
                let lo = entries.partition_point(|e| e.status < status);
                let hi = entries.partition_point(|e| e.status <= status);
                let section = &entries[lo..hi];
                let at = match from {
                    None => 0,
                    Some(f) if inclusive => section.partition_point(|e| e.task_id.as_str() < f),
                    Some(f) => section.partition_point(|e| e.task_id.as_str() <= f),
                };
                Ok(Cursor::Memory(section[at..].iter()))
            }
            Index::File { file, header } => {
                let Some(&(start, end)) = header.sections.get(&status) else {
                    return Ok(Cursor::Memory([].iter()));
                };
                let at = match from {
                    None => start,
                    Some(f) => lower_bound(file, start, end, f, inclusive)?,
                };
                let reader = BufReader::with_capacity(8 * 1024, At { file, pos: at, end });
                Ok(Cursor::File { reader, buf: Vec::new() })
            }
        }
    }
}

/// Entries of one status section, in id order.
pub enum Cursor<'a> {
    Memory(std::slice::Iter<'a, Entry>),
    File { reader: BufReader<At<'a>>, buf: Vec<u8> },
}

/// Reads a byte range of a file by `pread`, with its own position: several cursors share one
/// descriptor (and its file offset) without disturbing one another.
pub struct At<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (self.end.saturating_sub(self.pos) as usize).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Cursor<'_> {
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        match self {
            Cursor::Memory(it) => Ok(it.next().cloned()),
            Cursor::File { reader, buf } => loop {
                buf.clear();
                let n = reader.read_until(b'\n', buf).map_err(|e| Error::io(Path::new("archive index"), "read", e))?;
                if n == 0 {
                    return Ok(None);
                }
                if let Ok(e) = serde_json::from_slice::<Entry>(buf.strip_suffix(b"\n").unwrap_or(buf)) {
                    return Ok(Some(e));
                }
            },
        }
    }
}

/// Reads the line starting at `pos` (up to `end`): its bytes without the newline and where the
/// next line starts.
fn line_at(file: &File, pos: u64, end: u64) -> Result<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let mut at = pos;
    let mut chunk = [0u8; 512];
    while at < end {
        let want = ((end - at) as usize).min(chunk.len());
        let n = file.read_at(&mut chunk[..want], at).map_err(|e| Error::io(Path::new("archive index"), "read", e))?;
        if n == 0 {
            break;
        }
        if let Some(i) = chunk[..n].iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&chunk[..i]);
            return Ok((out, at + i as u64 + 1));
        }
        out.extend_from_slice(&chunk[..n]);
        at += n as u64;
    }
    Ok((out, end))
}

/// The start of the first line at or after `pos` within `[start, end)`.
fn line_start_from(file: &File, start: u64, end: u64, pos: u64) -> Result<u64> {
    if pos <= start {
        return Ok(start);
    }
    // The line containing byte pos-1 ends at its newline; the next line starts after it.
    let (_, next) = line_at(file, pos - 1, end)?;
    Ok(next)
}

fn entry_id(line: &[u8]) -> Option<String> {
    serde_json::from_slice::<Entry>(line).ok().map(|e| e.task_id)
}

/// Binary search in a section sorted by id: the start of the first entry whose id is ≥ `target`
/// (> `target` unless `inclusive`). A few `pread`s of one block each.
fn lower_bound(file: &File, start: u64, end: u64, target: &str, inclusive: bool) -> Result<u64> {
    let before = |id: &str| if inclusive { id < target } else { id <= target };
    let (mut lo, mut hi) = (start, end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let p = line_start_from(file, start, end, mid)?;
        if p >= hi {
            // No line starts in [mid, hi): decide on the line at lo.
            let (line, next) = line_at(file, lo, end)?;
            match entry_id(&line) {
                Some(id) if !before(&id) => return Ok(lo),
                _ => lo = next,
            }
            continue;
        }
        let (line, next) = line_at(file, p, end)?;
        match entry_id(&line) {
            Some(id) if !before(&id) => hi = p,
            _ => lo = next,
        }
    }
    Ok(lo)
}

/// The task at an entry of a segment (None if the line is not there any more: retention).
pub fn read_task(seg_path: &Path, entry: &Entry) -> Result<Option<Task>> {
    let file = match crate::store::open::read(seg_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::store::open::refuse_link(seg_path, "open", e)),
    };
    read_task_in(&file, seg_path, entry)
}

/// [`read_task`] from an open segment.
pub fn read_task_in(file: &File, seg_path: &Path, entry: &Entry) -> Result<Option<Task>> {
    let len = usize::try_from(entry.len).unwrap_or(usize::MAX).min(64 * 1024 * 1024);
    let mut buf = vec![0u8; len];
    match file.read_exact_at(&mut buf, entry.offset) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io(seg_path, "read", e)),
    }
    Ok(serde_json::from_slice::<Task>(&buf).ok().filter(|t| t.task_id == entry.task_id))
}

/// Seals the active file if it has reached `segment_bytes`. The caller holds the `task-queue` lock
/// (the coordinator in its commit, or `cortex archive seal`): nothing appends meanwhile.
pub fn seal_if_due(store: &Store, segment_bytes: u64, keep_segments: u32) -> Result<Option<Sealed>> {
    if super::len(store) < segment_bytes.max(1) {
        return Ok(None);
    }
    seal(store, keep_segments)
}

/// Seals the active file now (None when it is empty or missing): index, rename, retention. Each
/// step is crash-safe on its own (see the module doc); the caller holds the `task-queue` lock.
pub fn seal(store: &Store, keep_segments: u32) -> Result<Option<Sealed>> {
    let active = store.path(crate::store::files::TASK_ARCHIVE);
    let file = match crate::store::open::read(&active) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::store::open::refuse_link(&active, "open", e)),
    };
    let (mut header, entries) =
        build_index(BufReader::with_capacity(1 << 16, file)).map_err(|e| Error::io(&active, "read", e))?;
    if header.bytes == 0 {
        return Ok(None);
    }
    let dir = dir(store);
    atomic::create_dir_all(&dir)?;
    let existing = list(store);
    let number = existing.last().map_or(1, |s| s.number + 1);
    let seg = segment_at(&dir, number);
    header.segment = number;
    let bytes = encode_index(&header, &entries)?;
    atomic::write_atomic(&seg.index_path, &bytes)?;
    // The catalog: the listed segments' headers (from the old catalog, or their own index once)
    // and the new one's, before the rename, so a reader never sees a segment it lacks for long.
    let old = Catalog::load(store);
    let mut catalog = Catalog { format: INDEX_FORMAT, segments: BTreeMap::new() };
    for s in &existing {
        if let Some(h) = old.header_or_index(s) {
            catalog.segments.insert(s.number, h);
        }
    }
    let mut new_header = header.clone();
    new_header.sections = BTreeMap::new();
    catalog.segments.insert(number, new_header);
    let catalog_bytes = serde_json::to_vec(&catalog).map_err(|e| Error::encode("archive catalog", e))?;
    atomic::write_atomic(&catalog_path(store), &catalog_bytes)?;
    crate::store::pause_point("archive-seal-index-written");
    atomic::rename_durable(&active, &seg.path)?;
    crate::store::pause_point("archive-seal-renamed");
    let mut removed = Vec::new();
    let all: Vec<Segment> = existing.into_iter().chain(std::iter::once(seg)).collect();
    if keep_segments > 0 && all.len() > keep_segments as usize {
        for old in &all[..all.len() - keep_segments as usize] {
            remove_file(&old.path)?;
            let _ = std::fs::remove_file(&old.index_path);
            removed.push(old.number);
        }
    }
    remove_orphan_indexes(&dir);
    if !removed.is_empty() {
        atomic::fsync_dir(&dir)?;
    }
    Ok(Some(Sealed { segment: number, tasks: header.tasks, bytes: header.bytes, removed }))
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, "remove (archive retention)", e)),
    }
}

/// Indexes whose segment is gone (a retention or a seal killed half-way).
fn remove_orphan_indexes(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = number_of(&name, ".idx")
            && !dir.join(names(n).0).exists()
        {
            let _ = std::fs::remove_file(dir.join(&name));
        }
    }
}

/// The ids `cortex task retry` brought back from the archive (`task-archive/retried.jsonl`).
pub fn retried(store: &Store) -> HashSet<String> {
    #[derive(Deserialize)]
    struct Line {
        task_id: String,
    }
    let path = store.home().coord(crate::store::files::TASK_ARCHIVE_RETRIED);
    match jsonl::read::<Line>(&path) {
        Ok(r) => r.records.into_iter().map(|l| l.task_id).collect(),
        Err(e) => {
            tracing::warn!("{e}; archived tasks retried before are read as their oldest archived line");
            HashSet::new()
        }
    }
}

/// Records (durably) that `task_id` is brought back from the archive, before the queue that holds
/// it again is written: a later line of it in a newer segment then supersedes the older one.
pub fn note_retried(store: &Store, task_id: &str) -> Result<()> {
    let path = store.home().coord(crate::store::files::TASK_ARCHIVE_RETRIED);
    atomic::create_dir_all(&dir(store))?;
    let mut line =
        serde_json::to_vec(&serde_json::json!({ "task_id": task_id })).map_err(|e| Error::encode("retried task", e))?;
    line.push(b'\n');
    jsonl::append_raw_durable(&path, &line)
}

/// Checks a sealed segment against its index (for `cortex validate` and the integration daemon, once
/// per new segment): the index must describe the segment's size and hold exactly the entries a
/// fresh read of the segment gives. Returns the problems.
pub fn check(seg: &Segment) -> Vec<String> {
    let (file, header) = match open_index_file(seg) {
        Ok(x) => x,
        Err(why) => return vec![why],
    };
    let fresh = match crate::store::open::read(&seg.path) {
        Ok(f) => build_index(BufReader::with_capacity(1 << 16, f)),
        Err(e) => return vec![format!("{}: {}", seg.path.display(), crate::store::open::read_problem(&e))],
    };
    let Ok((fresh_header, fresh_entries)) = fresh else {
        return vec![format!("{}: cannot be read", seg.path.display())];
    };
    let mut problems = Vec::new();
    if fresh_header.tasks != header.tasks || fresh_header.counts != header.counts {
        problems.push(format!(
            "{}: /tasks or /counts ({} tasks) do not match the segment ({} tasks)",
            seg.index_path.display(),
            header.tasks,
            fresh_header.tasks
        ));
    }
    let index = Index::File { file, header };
    for e in &fresh_entries {
        match index.lookup(&e.task_id) {
            Ok(Some(found)) if &found == e => {}
            _ => {
                problems.push(format!(
                    "{}: the entry of task {} does not match the segment",
                    seg.index_path.display(),
                    e.task_id
                ));
                break;
            }
        }
    }
    problems
}

/// The segment a path names (`coordination/task-archive/seg-NNNNNN.jsonl` or `.idx`).
pub fn segment_of_path(store: &Store, path: &Path) -> Option<Segment> {
    let dir = dir(store);
    if path.parent()? != dir {
        return None;
    }
    let name = path.file_name()?.to_string_lossy().to_string();
    let n = number_of(&name, ".jsonl").or_else(|| number_of(&name, ".idx"))?;
    Some(segment_at(&dir, n))
}

/// Reads all of a reader (the active file) into memory: used for the bounded active segment.
pub fn read_all(mut f: File, path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(|e| Error::io(path, "read", e))?;
    Ok(bytes)
}
