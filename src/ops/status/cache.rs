//! What the status views are made of, read and cached by file identity: a [`StatusReader`]
//! keeps each coordination file it parsed (the scheduler state, the task queue summary, the
//! token budget, `cortex.toml`) with the [`FileIdentity`] it had, and parses it again only after
//! that changed; it indexes the dispatch records of each worker-specs bucket the same way (a
//! directory re-listed only when it changed, a spec re-parsed only when it changed), and
//! follows the event log by offset. An identity read while its file is racily clean is not
//! kept ([`FileIdentity::is_racy`]). A file that could not be read is remembered by identity
//! too, so an unchanged corrupt file is not parsed again on every request.
//!
//! A one-shot reader (the CLI) simply reads everything once.

use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::domain::scheduler_state::SchedulerState;
use crate::domain::task::dispatches::read_spec;
use crate::domain::task::{DispatchRecord, QueueCounts, TaskQueue, TaskStatus, TokenBudget};
use crate::store::Store;
use crate::store::config::Config;
use crate::store::events::acks::{AckFollower, AckSet};
use crate::store::events::{Event, Severity};
use crate::store::home::{Home, SpecBucket};
use crate::store::identity::FileIdentity;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A value derived from one file, recomputed only when the file's identity changes.
/// A file that could not be read is remembered the same way, so an unchanged corrupt file is
/// not parsed again on every request (its error is repeated instead).
struct Cached<T>(Mutex<Option<(CacheKey, Loaded<T>)>>);

/// A file's identity, and a second file's for a value read from two (the queue's snapshot and
/// its journal).
type CacheKey = (FileIdentity, Option<FileIdentity>);

/// What a [`Cached`] file gave: its value, or the text of the error reading it.
type Loaded<T> = std::result::Result<Arc<T>, String>;

impl<T> Cached<T> {
    fn new() -> Self {
        Cached(Mutex::new(None))
    }

    fn get(&self, path: &Path, load: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        self.get_with(path, None, load)
    }

    /// [`Cached::get`] of a value read from `path` and `also`: recomputed when either changed.
    fn get_with(&self, path: &Path, also: Option<&Path>, load: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let second = match also {
            Some(p) => FileIdentity::stat(p)?,
            None => None,
        };
        let key = FileIdentity::stat(path)?.map(|k| (k, second));
        let mut c = lock(&self.0);
        if let (Some(k), Some((ck, v))) = (key, c.as_ref())
            && k == *ck
        {
            return v.clone().map_err(Error::Other);
        }
        // Stat before reading: a change during the read shows as a new key next time.
        let key = key.filter(|(k, second)| !k.is_racy() && !second.is_some_and(|s| s.is_racy()));
        match load() {
            Ok(v) => {
                let v = Arc::new(v);
                *c = key.map(|k| (k, Ok(v.clone())));
                Ok(v)
            }
            Err(e) => {
                *c = key.map(|k| (k, Err(e.to_string())));
                Err(e)
            }
        }
    }
}

/// Counts of the task queue (from the counts its writers keep: O(1), see
/// `task::journal::read_counts`).
#[derive(Debug, Default)]
pub struct QueueSummary {
    pub counts: BTreeMap<TaskStatus, usize>,
    pub total: usize,
}

/// Creation time of each queued task (task id → time), for enqueue→start latency: read from the
/// whole queue, only by the views that need it (`/metrics`, a dispatch view's task lookup).
#[derive(Debug, Default)]
pub struct QueueCreated {
    pub created: HashMap<String, Timestamp>,
}

impl QueueSummary {
    fn of_counts(c: &QueueCounts) -> QueueSummary {
        let mut s = QueueSummary { total: c.total as usize, ..Default::default() };
        for status in TaskStatus::ALL {
            let n = c.count(status) as usize;
            if n > 0 {
                s.counts.insert(status, n);
            }
        }
        s
    }

    pub fn count(&self, status: TaskStatus) -> usize {
        self.counts.get(&status).copied().unwrap_or(0)
    }
}

/// One dispatch record and where it was found.
#[derive(Debug, Clone)]
pub struct SpecEntry {
    pub bucket: SpecBucket,
    pub record: DispatchRecord,
}

impl SpecEntry {
    /// Starting or running, in `active/` (a record elsewhere has ended whatever it says).
    pub fn is_active(&self) -> bool {
        self.bucket == SpecBucket::Active && self.record.status().is_active()
    }
}

#[derive(Default)]
struct BucketIndex {
    dir_key: Option<FileIdentity>,
    /// file name → (identity, record, or why it cannot be read: parsed once per version).
    entries: HashMap<String, (FileIdentity, std::result::Result<Arc<SpecEntry>, FileError>)>,
}

/// The dispatch records of every bucket, the sorted list made from them, and the specs that
/// could not be read.
#[derive(Default)]
struct SpecIndex {
    buckets: [BucketIndex; 4],
    snapshot: Option<DispatchIndex>,
}

/// Every readable dispatch record (oldest dispatch first) and the specs that could not be read.
type DispatchIndex = (Arc<Vec<Arc<SpecEntry>>>, Arc<Vec<FileError>>);

/// A file a status view could not read, and why (the view reports it instead of failing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileError {
    /// Its path relative to the home (`coordination/task-queue.json`).
    pub file: String,
    pub error: String,
}

/// The coordination files every view is made of, each as read or as the reason it could not
/// be (see [`StatusReader::snapshot`]).
pub struct Snapshot {
    pub scheduler: Option<Arc<SchedulerState>>,
    pub queue: Option<Arc<QueueSummary>>,
    pub budget: Option<Arc<TokenBudget>>,
    /// Every readable dispatch record (None only when a worker-specs directory cannot be listed).
    pub dispatches: Option<Arc<Vec<Arc<SpecEntry>>>>,
    /// What could not be read, one entry per file.
    pub errors: Vec<FileError>,
}

impl Snapshot {
    /// Dispatches starting or running now, from their records (what really runs).
    pub fn running_count(&self) -> Option<usize> {
        self.dispatches.as_ref().map(|d| d.iter().filter(|d| d.is_active()).count())
    }

    /// `"paused"`, `"running"`, or `"unknown"` when `scheduler-state.json` cannot be read.
    pub fn scheduler_state(&self) -> &'static str {
        match &self.scheduler {
            Some(s) if s.is_paused() => "paused",
            Some(_) => "running",
            None => "unknown",
        }
    }
}

/// Events newer than a window, followed by byte offset through the append-only log.
struct EventTail {
    file: Option<(u64, u64)>,
    offset: u64,
    keep: chrono::Duration,
    events: VecDeque<(Timestamp, Event)>,
}

/// On first read of a huge event log, only its last this-many bytes are read: older lines are
/// outside every window we report on.
const EVENT_TAIL_START_BYTES: u64 = 16 * 1024 * 1024;

impl EventTail {
    fn refresh(&mut self, path: &Path, now: Timestamp) -> Result<()> {
        // Never through a link planted at the log's name (another file's lines are no events of
        // ours), nor a FIFO.
        let mut f = match crate::store::open::read(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.file = None;
                self.offset = 0;
                self.events.clear();
                return Ok(());
            }
            Err(e) => return Err(crate::store::open::refuse_link(path, "open", e)),
        };
        let meta = f.metadata().map_err(|e| Error::io(path, "stat", e))?;
        let id = (meta.dev(), meta.ino());
        let mut skip_partial = false;
        if self.file != Some(id) || meta.len() < self.offset {
            self.file = Some(id);
            self.events.clear();
            self.offset = meta.len().saturating_sub(EVENT_TAIL_START_BYTES);
            skip_partial = self.offset > 0;
        }
        if meta.len() > self.offset {
            f.seek(SeekFrom::Start(self.offset)).map_err(|e| Error::io(path, "seek", e))?;
            let mut buf = Vec::with_capacity((meta.len() - self.offset) as usize);
            f.take(meta.len() - self.offset).read_to_end(&mut buf).map_err(|e| Error::io(path, "read", e))?;
            let Some(end) = buf.iter().rposition(|&b| b == b'\n') else { return self.prune(now) };
            let mut lines = buf[..end].split(|&b| b == b'\n');
            if skip_partial {
                lines.next();
            }
            let cutoff = now - self.keep;
            for line in lines {
                if let Ok(ev) = serde_json::from_slice::<Event>(line)
                    && ev.timestamp >= cutoff
                {
                    self.events.push_back((ev.timestamp, ev));
                }
            }
            self.offset += end as u64 + 1;
        }
        self.prune(now)
    }

    fn prune(&mut self, now: Timestamp) -> Result<()> {
        let cutoff = now - self.keep;
        while self.events.front().is_some_and(|(t, _)| *t < cutoff) {
            self.events.pop_front();
        }
        Ok(())
    }
}

/// Reads (and caches) everything the status views are made of.
pub struct StatusReader {
    store: Store,
    config: Mutex<(Option<FileIdentity>, Arc<Config>)>,
    scheduler: Cached<SchedulerState>,
    budget: Cached<TokenBudget>,
    queue: Cached<QueueSummary>,
    created: Cached<QueueCreated>,
    specs: Mutex<SpecIndex>,
    events: Mutex<EventTail>,
    acks: Mutex<AckFollower>,
}

const DISPATCH_BUCKETS: [SpecBucket; 4] =
    [SpecBucket::Active, SpecBucket::Completed, SpecBucket::Failed, SpecBucket::Zombie];

impl StatusReader {
    /// A reader over `store`'s home, starting from `config` (re-read when `cortex.toml` changes).
    pub fn new(store: Store, config: Config) -> StatusReader {
        let key = FileIdentity::stat(&store.home().config_file()).ok().flatten();
        let keep = chrono::Duration::seconds(config.api.critical_window_seconds.max(3600) as i64);
        StatusReader {
            store,
            config: Mutex::new((key, Arc::new(config))),
            scheduler: Cached::new(),
            budget: Cached::new(),
            queue: Cached::new(),
            created: Cached::new(),
            specs: Mutex::new(Default::default()),
            events: Mutex::new(EventTail { file: None, offset: 0, keep, events: VecDeque::new() }),
            acks: Mutex::new(AckFollower::default()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn home(&self) -> &Home {
        self.store.home()
    }

    /// The current configuration. An edited `cortex.toml` that no longer parses keeps the last
    /// good one in force (and says so in the log).
    pub fn config(&self) -> Arc<Config> {
        let path = self.home().config_file();
        let key = FileIdentity::stat(&path).ok().flatten();
        let mut c = lock(&self.config);
        if key != c.0 || key.is_none_or(|k| k.is_racy()) {
            match Config::load(self.home()) {
                Ok(cfg) => *c = (key, Arc::new(cfg)),
                Err(e) => {
                    tracing::warn!("keeping the previous configuration: {e}");
                    c.0 = key;
                }
            }
        }
        c.1.clone()
    }

    /// `scheduler-state.json`, re-read only when it changed.
    pub fn scheduler_state(&self) -> Result<Arc<SchedulerState>> {
        self.scheduler.get(&self.home().scheduler_state(), || self.store.load())
    }

    /// Task counts, re-read only when the queue (snapshot or journal) changed: the counts its
    /// writers keep, read in O(1); counted from the whole queue only when they are not there
    /// (a queue written before them or by hand).
    pub fn queue(&self) -> Result<Arc<QueueSummary>> {
        let journal = self.store.path(crate::store::files::TASK_QUEUE_JOURNAL);
        self.queue.get_with(&self.home().task_queue(), Some(&journal), || {
            let counts = match crate::domain::task::journal::read_counts(&self.store)? {
                Some(c) => c,
                None => QueueCounts::of(&self.store.load::<TaskQueue>()?.tasks),
            };
            Ok(QueueSummary::of_counts(&counts))
        })
    }

    /// Creation time of each queued task, re-read only when the queue changed (the whole queue).
    pub fn queue_created(&self) -> Result<Arc<QueueCreated>> {
        let journal = self.store.path(crate::store::files::TASK_QUEUE_JOURNAL);
        self.created.get_with(&self.home().task_queue(), Some(&journal), || {
            let q = self.store.load::<TaskQueue>()?;
            let created = q.tasks.iter().map(|t| (t.task_id.clone(), t.created_at)).collect();
            Ok(QueueCreated { created })
        })
    }

    /// `token-budget.json`, re-read only when it changed.
    pub fn token_budget(&self) -> Result<Arc<TokenBudget>> {
        self.budget.get(&self.home().token_budget(), || self.store.load())
    }

    /// Every dispatch record (active, completed, failed, zombie), oldest dispatch first. The
    /// directories are re-listed only when they changed.
    pub fn dispatches(&self) -> Result<Arc<Vec<Arc<SpecEntry>>>> {
        self.dispatch_index().map(|(d, _)| d)
    }

    /// [`StatusReader::dispatches`] and the dispatch specs that could not be read.
    fn dispatch_index(&self) -> Result<DispatchIndex> {
        let mut keys = [None; 4];
        for (i, bucket) in DISPATCH_BUCKETS.iter().enumerate() {
            keys[i] = FileIdentity::stat(&self.home().worker_specs(*bucket))?;
        }
        let mut idx = lock(&self.specs);
        if let Some(snap) = &idx.snapshot
            && keys.iter().zip(&idx.buckets).all(|(k, b)| k.is_some() && *k == b.dir_key)
        {
            return Ok(snap.clone());
        }
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (i, bucket) in DISPATCH_BUCKETS.iter().enumerate() {
            self.refresh_bucket(*bucket, &mut idx.buckets[i])?;
            for (_, e) in idx.buckets[i].entries.values() {
                match e {
                    Ok(e) => out.push(e.clone()),
                    Err(err) => errors.push(err.clone()),
                }
            }
        }
        errors.sort_by(|a, b| a.file.cmp(&b.file));
        out.sort_by(|a, b| {
            a.record
                .dispatched_at
                .cmp(&b.record.dispatched_at)
                .then_with(|| a.record.dispatch_id.cmp(&b.record.dispatch_id))
        });
        let snap = (Arc::new(out), Arc::new(errors));
        idx.snapshot = Some(snap.clone());
        Ok(snap)
    }

    fn refresh_bucket(&self, bucket: SpecBucket, idx: &mut BucketIndex) -> Result<()> {
        let dir = self.home().worker_specs(bucket);
        let dir_key = FileIdentity::stat(&dir)?;
        if dir_key.is_some() && dir_key == idx.dir_key {
            return Ok(());
        }
        // A directory changed within the racy window is listed again next time.
        idx.dir_key = dir_key.filter(|k| !k.is_racy());
        if dir_key.is_none() {
            idx.entries.clear();
            return Ok(());
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                idx.entries.clear();
                return Ok(());
            }
            Err(e) => return Err(Error::io(&dir, "list", e)),
        };
        let mut seen = HashMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let key = FileIdentity::of(&meta);
            if let Some((k, e)) = idx.entries.remove(&name)
                && k == key
                && !key.is_racy()
            {
                seen.insert(name, (k, e));
                continue;
            }
            let rec = match read_spec(&self.store, &entry.path()) {
                Ok(Some(rec)) => Ok(Arc::new(SpecEntry { bucket, record: rec })),
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("skipping dispatch spec: {e}");
                    Err(self.file_error(&entry.path(), &e))
                }
            };
            seen.insert(name, (key, rec));
        }
        idx.entries = seen;
        Ok(())
    }

    /// Events of severity warning or worse younger than `window`, newest first.
    pub fn recent_events(&self, now: Timestamp, window: chrono::Duration) -> Result<Vec<Event>> {
        let mut tail = lock(&self.events);
        tail.refresh(&self.home().events_file(), now)?;
        let cutoff = now - window;
        Ok(tail
            .events
            .iter()
            .rev()
            .filter(|(t, e)| *t >= cutoff && e.severity >= Severity::Warning)
            .map(|(_, e)| e.clone())
            .collect())
    }

    /// The event with this id among those young enough for `/health` to count (the newest
    /// `max([api] critical_window_seconds, 1 h)` of the log), any severity.
    pub fn find_recent_event(&self, now: Timestamp, id: &str) -> Result<Option<Event>> {
        let mut tail = lock(&self.events);
        tail.refresh(&self.home().events_file(), now)?;
        Ok(tail.events.iter().rev().find(|(_, e)| e.id == id).map(|(_, e)| e.clone()))
    }

    /// What `coordination/event-acks.jsonl` acknowledges (read incrementally).
    pub fn acks(&self) -> Result<AckSet> {
        let mut f = lock(&self.acks);
        f.refresh(&self.store.path(crate::store::files::EVENT_ACKS)).cloned()
    }

    /// Names a file that could not be read, for a view's `errors` list.
    pub(super) fn file_error(&self, path: &Path, e: &Error) -> FileError {
        FileError { file: self.home().relative(path).display().to_string(), error: e.to_string() }
    }

    /// The value read from `path`, or None with the reason added to `errors`.
    fn kept<T>(&self, errors: &mut Vec<FileError>, path: &Path, read: Result<T>) -> Option<T> {
        read.map_err(|e| errors.push(self.file_error(path, &e))).ok()
    }

    /// Reads the scheduler state, the task queue, the token budget and the dispatch records,
    /// each on its own: one that cannot be read is named in `errors` and the others are still
    /// read.
    pub fn snapshot(&self) -> Snapshot {
        let mut errors = Vec::new();
        let scheduler = self.kept(&mut errors, &self.home().scheduler_state(), self.scheduler_state());
        let queue = self.kept(&mut errors, &self.home().task_queue(), self.queue());
        let budget = self.kept(&mut errors, &self.home().token_budget(), self.token_budget());
        let dispatches = match self.dispatch_index() {
            Ok((d, bad)) => {
                errors.extend(bad.iter().cloned());
                Some(d)
            }
            Err(e) => {
                errors.push(self.file_error(&self.home().coordination().join("worker-specs"), &e));
                None
            }
        };
        Snapshot { scheduler, queue, budget, dispatches, errors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_event_log_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere.jsonl");
        let now = chrono::Utc::now();
        let line = serde_json::json!({"id": "evt-planted", "timestamp": crate::base::clock::format_ts(now), "type": "x",
            "severity": "critical", "source": "t", "message": "planted", "data": {}});
        std::fs::write(&elsewhere, format!("{line}\n")).unwrap();
        let log = dir.path().join("dashboard-events.jsonl");
        std::os::unix::fs::symlink(&elsewhere, &log).unwrap();
        let mut tail = EventTail { file: None, offset: 0, keep: chrono::Duration::hours(1), events: VecDeque::new() };
        let err = tail.refresh(&log, now).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(tail.events.is_empty());
    }
}
