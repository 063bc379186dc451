//! What Cortex is doing, computed in one place for the CLI and the API: the scheduler's state
//! (`GET /scheduler/status`, `cortex scheduler status`), the system summary (`GET /status`),
//! health (`GET /health`), dispatch views (`GET /dispatches…`, `cortex dispatches`) and the
//! Prometheus metrics (`GET /metrics`).
//!
//! These views degrade, never fail: a coordination file that cannot be read (corrupt, breaking
//! its schema, unreadable) is named in the view's `errors` list ([`FileError`]), what depends
//! on it is reported as unknown (`null`, state `"unknown"`), and `GET /health` is unhealthy.
//! What runs is counted from the dispatch records, never from the task queue, so a corrupt
//! queue cannot make a busy system look drained.
//!
//! A [`StatusReader`] caches what it parsed by file identity (device, inode, size, mtime, ctime): a
//! long-lived reader (the api daemon) re-reads the task queue or a worker-specs directory only
//! after it changed, and follows the event log by offset. A one-shot reader (the CLI) simply
//! reads everything once.

use crate::clock::{Timestamp, format_ts, human_duration, parse_ts};
use crate::config::Config;
use crate::daemon::{DAEMONS, read_mark};
use crate::error::{Error, Result};
use crate::events::acks::{AckFollower, AckSet};
use crate::events::{Event, Severity};
use crate::home::{Home, SpecBucket};
use crate::pidfile::{PidStatus, status as pid_status};
use crate::scheduler::SchedulerState;
use crate::store::Store;
use crate::task::dispatches::read_spec;
use crate::task::{DispatchRecord, DispatchState, DispatchStatus, TaskQueue, TaskStatus, TokenBudget};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The identity of a file's content as far as `stat` can tell: replaced (new inode), grown,
/// or touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    /// Also changes when a tool sets the mtime back (`touch -d`, `cp -p`, `rsync -t`).
    ctime: i64,
    ctime_nsec: i64,
}

impl FileKey {
    fn of(meta: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }

    /// True when the file changed so recently that another change within the same timestamp
    /// tick (file times come from a coarse clock) would leave this key unchanged: such a key
    /// must not be trusted for caching ("racily clean", as git calls it).
    fn is_racy(&self) -> bool {
        let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else { return true };
        let mtime_ns = self.mtime as i128 * 1_000_000_000 + self.mtime_nsec as i128;
        let ctime_ns = self.ctime as i128 * 1_000_000_000 + self.ctime_nsec as i128;
        now.as_nanos() as i128 - mtime_ns.max(ctime_ns) < RACY_WINDOW_NS
    }

    fn stat(path: &Path) -> Result<Option<FileKey>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(FileKey::of(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, "stat", e)),
        }
    }
}

/// Changes younger than this are re-checked on the next read (see [`FileKey::is_racy`]).
const RACY_WINDOW_NS: i128 = 100_000_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A value derived from one file, recomputed only when the file's identity changes.
/// A file that could not be read is remembered the same way, so an unchanged corrupt file is
/// not parsed again on every request (its error is repeated instead).
struct Cached<T>(Mutex<Option<(FileKey, Loaded<T>)>>);

/// What a [`Cached`] file gave: its value, or the text of the error reading it.
type Loaded<T> = std::result::Result<Arc<T>, String>;

impl<T> Cached<T> {
    fn new() -> Self {
        Cached(Mutex::new(None))
    }

    fn get(&self, path: &Path, load: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let key = FileKey::stat(path)?;
        let mut c = lock(&self.0);
        if let (Some(k), Some((ck, v))) = (key, c.as_ref())
            && k == *ck
        {
            return v.clone().map_err(Error::Other);
        }
        // Stat before reading: a change during the read shows as a new key next time.
        let key = key.filter(|k| !k.is_racy());
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

/// Counts of the task queue, and what the latency histogram needs.
#[derive(Debug, Default)]
pub struct QueueSummary {
    pub counts: BTreeMap<TaskStatus, usize>,
    pub total: usize,
    /// task id → creation time, for enqueue→start latency.
    pub created: HashMap<String, Timestamp>,
}

impl QueueSummary {
    fn of(queue: &TaskQueue) -> QueueSummary {
        let mut s = QueueSummary { total: queue.tasks.len(), ..Default::default() };
        for t in &queue.tasks {
            *s.counts.entry(t.status()).or_default() += 1;
            if let Some(ts) = parse_ts(&t.created_at) {
                s.created.insert(t.task_id.clone(), ts);
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
    pub dispatched: Option<Timestamp>,
}

impl SpecEntry {
    /// Starting or running, in `active/` (a record elsewhere has ended whatever it says).
    pub fn is_active(&self) -> bool {
        self.bucket == SpecBucket::Active && self.record.status().is_active()
    }
}

#[derive(Default)]
struct BucketIndex {
    dir_key: Option<FileKey>,
    /// file name → (identity, record, or why it cannot be read: parsed once per version).
    entries: HashMap<String, (FileKey, std::result::Result<Arc<SpecEntry>, FileError>)>,
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
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.file = None;
                self.offset = 0;
                self.events.clear();
                return Ok(());
            }
            Err(e) => return Err(Error::io(path, "open", e)),
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
                    && let Some(t) = ev.time()
                    && t >= cutoff
                {
                    self.events.push_back((t, ev));
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
    config: Mutex<(Option<FileKey>, Arc<Config>)>,
    scheduler: Cached<SchedulerState>,
    budget: Cached<TokenBudget>,
    queue: Cached<QueueSummary>,
    specs: Mutex<SpecIndex>,
    events: Mutex<EventTail>,
    acks: Mutex<AckFollower>,
}

const DISPATCH_BUCKETS: [SpecBucket; 4] =
    [SpecBucket::Active, SpecBucket::Completed, SpecBucket::Failed, SpecBucket::Zombie];

impl StatusReader {
    /// A reader over `store`'s home, starting from `config` (re-read when `cortex.toml` changes).
    pub fn new(store: Store, config: Config) -> StatusReader {
        let key = FileKey::stat(&store.home().config_file()).ok().flatten();
        let keep = chrono::Duration::seconds(config.api.critical_window_seconds.max(3600) as i64);
        StatusReader {
            store,
            config: Mutex::new((key, Arc::new(config))),
            scheduler: Cached::new(),
            budget: Cached::new(),
            queue: Cached::new(),
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
        let key = FileKey::stat(&path).ok().flatten();
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

    /// Task counts, re-read only when `task-queue.json` changed.
    pub fn queue(&self) -> Result<Arc<QueueSummary>> {
        self.queue.get(&self.home().task_queue(), || Ok(QueueSummary::of(&self.store.load::<TaskQueue>()?)))
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
            keys[i] = FileKey::stat(&self.home().worker_specs(*bucket))?;
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
        let dir_key = FileKey::stat(&dir)?;
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
            let key = FileKey::of(&meta);
            if let Some((k, e)) = idx.entries.remove(&name)
                && k == key
                && !key.is_racy()
            {
                seen.insert(name, (k, e));
                continue;
            }
            let rec = match read_spec(&self.store, &entry.path()) {
                Ok(Some(rec)) => {
                    let dispatched = parse_ts(&rec.dispatched_at);
                    Ok(Arc::new(SpecEntry { bucket, record: rec, dispatched }))
                }
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
        f.refresh(&self.store.path(crate::files::EVENT_ACKS)).cloned()
    }

    /// Names a file that could not be read, for a view's `errors` list.
    fn file_error(&self, path: &Path, e: &Error) -> FileError {
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

    /// `GET /scheduler/status`, `cortex scheduler status`. Never fails: when
    /// `scheduler-state.json` cannot be read, `state` is `"unknown"`, `paused` is null and the
    /// file is named in `errors`.
    pub fn scheduler_status(&self) -> Result<SchedulerStatus> {
        let cfg = self.config();
        let (s, errors) = match self.scheduler_state() {
            Ok(s) => (Some(s), Vec::new()),
            Err(e) => (None, vec![self.file_error(&self.home().scheduler_state(), &e)]),
        };
        let now = chrono::Utc::now();
        let coordinator = daemon_state(self.home(), "coordinator", &cfg);
        let mark = read_mark(self.home(), "coordinator");
        let up = coordinator == "running";
        let uptime = mark
            .as_ref()
            .filter(|_| up)
            .and_then(|m| parse_ts(&m.started_at))
            .map(|t| human_duration((now - t).num_seconds()));
        let paused = s.as_ref().map(|s| s.is_paused());
        let only_paused = |f: fn(&SchedulerState) -> &Option<String>| {
            s.as_deref().filter(|s| s.is_paused()).and_then(|s| f(s).clone())
        };
        let paused_duration = only_paused(|s| &s.paused_at)
            .as_deref()
            .and_then(parse_ts)
            .map(|t| human_duration((now - t).num_seconds()));
        Ok(SchedulerStatus {
            state: match paused {
                Some(true) => "paused",
                Some(false) => "running",
                None => "unknown",
            },
            paused,
            uptime,
            last_tick: mark.map(|m| m.last_loop_at),
            paused_at: only_paused(|s| &s.paused_at),
            resumed_at: s.as_ref().and_then(|s| s.resumed_at.clone()),
            paused_duration,
            paused_by: only_paused(|s| &s.paused_by),
            paused_from: only_paused(|s| &s.paused_from),
            reason: only_paused(|s| &s.reason),
            tick_interval: human_duration(cfg.scheduler.tick_interval_seconds as i64),
            coordinator,
            errors,
        })
    }

    /// `GET /status`. Never fails: see [`StatusReader::snapshot`].
    pub fn system_status(&self) -> Result<SystemStatus> {
        let cfg = self.config();
        let now = chrono::Utc::now();
        let snap = self.snapshot();
        let since = recent_since(snap.scheduler.as_deref(), now, cfg.scheduler.recent_window_seconds);
        let recent_dispatch_count =
            snap.dispatches.as_ref().map(|d| d.iter().filter(|d| d.dispatched.is_some_and(|t| t >= since)).count());
        let count = |s: TaskStatus| snap.queue.as_ref().map(|q| q.count(s));
        Ok(SystemStatus {
            running_count: snap.running_count(),
            recent_dispatch_count,
            recent_since: format_ts(since),
            recent_window_seconds: cfg.scheduler.recent_window_seconds,
            max_concurrent: cfg.scheduler.max_concurrent_dispatches,
            scheduler_state: snap.scheduler_state(),
            queued_count: count(TaskStatus::Queued),
            pending_retry_count: count(TaskStatus::PendingRetry),
            in_progress_count: count(TaskStatus::InProgress),
            tasks_total: snap.queue.as_ref().map(|q| q.total),
            uptime_s: coordinator_uptime(self.home(), &cfg, now),
            token_budget: snap.budget.as_ref().map(|b| BudgetView {
                total: b.total,
                used: b.used,
                reserved: b.reserved(),
                available: b.available,
            }),
            errors: snap.errors,
        })
    }

    /// `GET /health`: healthy when every enabled daemon runs, every coordination file the
    /// status views read can be read, and no unacknowledged critical event is younger than
    /// `[api] critical_window_seconds`. Never fails: an unreadable event log or
    /// acknowledgements file is itself named in `errors` (and makes it unhealthy).
    pub fn health(&self) -> Result<Health> {
        let cfg = self.config();
        let now = chrono::Utc::now();
        let mut daemons = BTreeMap::new();
        let mut problems = Vec::new();
        for d in DAEMONS {
            let st = daemon_state(self.home(), d, &cfg);
            if st != "running" && st != "disabled" {
                problems.push(format!("daemon {d} is {st}"));
            }
            daemons.insert(d.to_string(), st.to_string());
        }
        let mut errors = self.snapshot().errors;
        let critical_window = chrono::Duration::seconds(cfg.api.critical_window_seconds as i64);
        let window = critical_window.max(chrono::Duration::hours(1));
        let events = self.recent_events(now, window).unwrap_or_else(|e| {
            errors.push(self.file_error(&self.home().events_file(), &e));
            Vec::new()
        });
        let acks = self.acks().unwrap_or_else(|e| {
            errors.push(self.file_error(&self.store.path(crate::files::EVENT_ACKS), &e));
            AckSet::default()
        });
        let hour: Vec<&Event> =
            events.iter().filter(|e| e.time().is_some_and(|t| t >= now - chrono::Duration::hours(1))).collect();
        let critical_cutoff = now - critical_window;
        let criticals = events
            .iter()
            .filter(|e| e.severity == Severity::Critical && e.time().is_some_and(|t| t >= critical_cutoff))
            .filter(|e| !acks.covers(e))
            .count();
        if criticals > 0 {
            problems.push(format!(
                "{criticals} unacknowledged critical event(s) in the last {} (`cortex event ack ID|--all` once handled)",
                human_duration(cfg.api.critical_window_seconds as i64)
            ));
        }
        for e in &errors {
            problems.push(format!("cannot read {}: {}", e.file, e.error));
        }
        let events_1h = hour.len();
        let recent_events = hour.iter().take(RECENT_EVENTS_SHOWN).map(|e| HealthEvent::of(e, acks.covers(e))).collect();
        Ok(Health { healthy: problems.is_empty(), events_1h, daemons, problems, errors, recent_events })
    }

    /// A dispatch's view, with the tail of its output when `with_output`.
    pub fn dispatch_view(&self, entry: &SpecEntry, with_output: bool) -> DispatchView {
        let cfg = self.config();
        DispatchView::of(self.home(), entry, if with_output { cfg.worker.output_tail_bytes } else { 0 })
    }

    /// `GET /metrics`: Prometheus text format.
    pub fn metrics(&self) -> Result<String> {
        crate::status::metrics::render(self)
    }
}

/// How many events `GET /health` lists.
pub const RECENT_EVENTS_SHOWN: usize = 50;

/// "running", "stopped" (no PID file), "dead" (stale PID file), or "disabled".
pub fn daemon_state(home: &Home, daemon: &str, cfg: &Config) -> &'static str {
    match pid_status(home, daemon) {
        Ok(PidStatus::Running(_)) => "running",
        _ if !cfg.daemon_enabled(daemon) => "disabled",
        Ok(PidStatus::Absent) => "stopped",
        Ok(PidStatus::Stale(_)) => "dead",
        Err(_) => "unknown",
    }
}

/// Where `recent_dispatch_count` starts counting: the later of the scheduler's last transition
/// (its `paused_at` or `resumed_at`) and `window_seconds` ago. So it reads as "new dispatches
/// since the pause" (0 right after a pause, whatever ran before it; more than 0 after one would
/// mean the pause was bypassed) and "new dispatches since the resume" (more than 0 soon after a
/// resume with queued work); long after any transition it is the dispatches of the last
/// `window_seconds` (`[scheduler] recent_window_seconds`). The coordinator stamps a dispatch
/// under the scheduler lock, before any pause that waits for that lock, so a dispatch made
/// before a pause is never counted after it. Without a readable scheduler state: the window.
pub fn recent_since(state: Option<&SchedulerState>, now: Timestamp, window_seconds: u64) -> Timestamp {
    let window_start = i64::try_from(window_seconds)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .and_then(|w| now.checked_sub_signed(w))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let transition = state
        .into_iter()
        .flat_map(|s| [s.paused_at.as_deref(), s.resumed_at.as_deref()])
        .flatten()
        .filter_map(parse_ts)
        .max();
    transition.map_or(window_start, |t| t.max(window_start))
}

/// Seconds since the coordinator started, when it runs.
pub fn coordinator_uptime(home: &Home, cfg: &Config, now: Timestamp) -> Option<i64> {
    if daemon_state(home, "coordinator", cfg) != "running" {
        return None;
    }
    let mark = read_mark(home, "coordinator")?;
    parse_ts(&mark.started_at).map(|t| (now - t).num_seconds().max(0))
}

#[derive(Debug, Clone, Serialize)]
pub struct SchedulerStatus {
    /// `running`, `paused`, or `unknown` (`scheduler-state.json` cannot be read: see `errors`).
    pub state: &'static str,
    /// Null when unknown.
    pub paused: Option<bool>,
    /// The coordinator's uptime (null while it is down).
    pub uptime: Option<String>,
    /// The coordinator's last loop.
    pub last_tick: Option<String>,
    pub paused_at: Option<String>,
    pub resumed_at: Option<String>,
    pub paused_duration: Option<String>,
    pub paused_by: Option<String>,
    pub paused_from: Option<String>,
    pub reason: Option<String>,
    pub tick_interval: String,
    /// The coordinator daemon: running, stopped, dead, disabled.
    pub coordinator: &'static str,
    /// Files that could not be read (empty when all is well).
    pub errors: Vec<FileError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BudgetView {
    pub total: u64,
    pub used: u64,
    pub reserved: u64,
    pub available: u64,
}

/// `GET /status`. A count whose file cannot be read is null (never a made-up 0), and the file
/// is named in `errors`.
#[derive(Debug, Clone, Serialize)]
pub struct SystemStatus {
    /// Dispatches starting or running, counted from their records in `worker-specs/active/`.
    pub running_count: Option<usize>,
    /// Dispatches made since `recent_since` (see [`recent_since`]).
    pub recent_dispatch_count: Option<usize>,
    /// The later of the scheduler's last pause/resume and `recent_window_seconds` ago.
    pub recent_since: String,
    pub recent_window_seconds: u64,
    pub max_concurrent: u32,
    /// `running`, `paused`, or `unknown`.
    pub scheduler_state: &'static str,
    pub queued_count: Option<usize>,
    pub pending_retry_count: Option<usize>,
    pub in_progress_count: Option<usize>,
    pub tasks_total: Option<usize>,
    pub uptime_s: Option<i64>,
    pub token_budget: Option<BudgetView>,
    /// Files that could not be read (empty when all is well).
    pub errors: Vec<FileError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthEvent {
    pub id: String,
    pub event_type: String,
    /// The severity class: critical, error, warning (info and debug are not listed).
    #[serde(rename = "type")]
    pub class: &'static str,
    pub message: String,
    pub created_at: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatch_id: Option<String>,
    /// Acknowledged (`cortex event ack`, `POST /events/<id>/ack`): listed, but not counted.
    pub acknowledged: bool,
}

impl HealthEvent {
    fn of(e: &Event, acknowledged: bool) -> HealthEvent {
        let field = |k: &str| e.data.get(k).and_then(|v| v.as_str()).map(str::to_string);
        HealthEvent {
            id: e.id.clone(),
            event_type: e.event_type.clone(),
            class: e.severity.as_str(),
            message: e.message.clone(),
            created_at: e.time().map(format_ts).unwrap_or_else(|| e.timestamp.clone()),
            source: e.source.clone(),
            task_id: field("task_id"),
            dispatch_id: field("dispatch_id"),
            acknowledged,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub healthy: bool,
    /// Warning, error and critical events in the last hour.
    pub events_1h: usize,
    pub daemons: BTreeMap<String, String>,
    /// Why it is unhealthy (empty when healthy).
    pub problems: Vec<String>,
    /// Files that could not be read (each is also a problem).
    pub errors: Vec<FileError>,
    /// The newest of those events, newest first.
    pub recent_events: Vec<HealthEvent>,
}

/// One dispatch as the API and `cortex dispatches` show it.
#[derive(Debug, Clone, Serialize)]
pub struct DispatchView {
    pub id: String,
    pub task_id: String,
    pub status: &'static str,
    /// Where its record is: active, completed, failed or zombie.
    pub stage: &'static str,
    pub attempt: u32,
    pub pid: Option<i32>,
    pub dispatched_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub exit_code: Option<i32>,
    pub duration_s: Option<f64>,
    pub worker_type: String,
    pub log_path: String,
    pub output_tail: Option<String>,
}

impl DispatchView {
    pub fn of(home: &Home, entry: &SpecEntry, tail_bytes: u64) -> DispatchView {
        let r = &entry.record;
        let now = chrono::Utc::now();
        let (pid, started_at, exit_code, duration_s) = match &r.state {
            DispatchState::Starting => (None, None, None, None),
            DispatchState::Running { started_at, pid, .. } => (
                Some(*pid),
                Some(started_at.clone()),
                None,
                parse_ts(started_at).map(|t| (now - t).num_milliseconds() as f64 / 1000.0),
            ),
            DispatchState::Completed { exit_code, duration_s, .. } => (None, None, Some(*exit_code), Some(*duration_s)),
            DispatchState::Failed { exit_code, duration_s, .. } => (None, None, *exit_code, *duration_s),
            DispatchState::Cancelled { duration_s, .. } | DispatchState::Timeout { duration_s, .. } => {
                (None, None, None, *duration_s)
            }
            DispatchState::Lost { .. } | DispatchState::Zombie { .. } => (None, None, None, None),
        };
        let log_path = home.configured_path(&r.stdout_path);
        let output_tail = (tail_bytes > 0)
            .then(|| {
                read_tail(&log_path, tail_bytes)
                    .filter(|s| !s.is_empty())
                    .or_else(|| read_tail(&home.configured_path(&r.stderr_path), tail_bytes))
            })
            .flatten();
        DispatchView {
            id: r.dispatch_id.clone(),
            task_id: r.task_id.clone(),
            status: r.status().as_str(),
            stage: entry.bucket.dir_name(),
            attempt: r.attempt,
            pid,
            dispatched_at: r.dispatched_at.clone(),
            started_at,
            ended_at: r.state.ended_at().map(str::to_string),
            exit_code,
            duration_s,
            worker_type: r.worker_type.clone(),
            log_path: log_path.to_string_lossy().into_owned(),
            output_tail,
        }
    }
}

/// The last `max` bytes of a file as text (None when it cannot be read).
fn read_tail(path: &Path, max: u64) -> Option<String> {
    if path.as_os_str().is_empty() {
        return None;
    }
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max))).ok()?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Parses a dispatch status name (`running`, `failed`, ...).
pub fn parse_dispatch_status(s: &str) -> std::result::Result<DispatchStatus, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!("unknown dispatch status {s:?}: use starting, running, completed, failed, cancelled, timeout, lost or zombie")
    })
}

/// Waits until no spec is left in `worker-specs/active/` (starting, running, or ended but not
/// yet moved by the worker) or the deadline passes; returns how many are left. Wakes on changes
/// in `active/`, not on a timer.
pub fn wait_no_active(reader: &StatusReader, timeout: Duration) -> Result<usize> {
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .map_err(|e| Error::other(format!("cannot start a file watcher: {e}")))?;
    let dir = reader.home().worker_specs(SpecBucket::Active);
    crate::store::atomic::create_dir_all(&dir)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| Error::other(format!("cannot watch {}: {e}", dir.display())))?;
    let deadline = Instant::now() + timeout;
    loop {
        // Every spec still in active/: one whose final state is written but not yet moved is
        // still being ended by the worker (its request and exit files go with the move).
        let active = reader.dispatches()?.iter().filter(|d| d.bucket == SpecBucket::Active).count();
        let left = deadline.saturating_duration_since(Instant::now());
        if active == 0 || left.is_zero() {
            return Ok(active);
        }
        // A watcher event or, as a backstop against a missed one, a periodic re-check.
        let _ = rx.recv_timeout(left.min(Duration::from_secs(1)));
        while rx.try_recv().is_ok() {}
    }
}

pub mod metrics;

#[cfg(test)]
mod tests {
    use super::*;

    fn state(paused_at: Option<&str>, resumed_at: Option<&str>, paused: bool) -> SchedulerState {
        let mut v = serde_json::json!({
            "state": if paused { "paused" } else { "running" },
            "paused": paused,
            "paused_at": paused_at,
            "resumed_at": resumed_at,
        });
        v["paused_by"] = serde_json::Value::Null;
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn recent_since_is_the_later_of_the_last_transition_and_the_window_start() {
        let now = parse_ts("2026-01-01T12:00:00Z").unwrap();
        let window_start = parse_ts("2026-01-01T11:55:00Z").unwrap();
        assert_eq!(recent_since(None, now, 300), window_start, "unknown state: the window");
        let never = state(None, None, false);
        assert_eq!(recent_since(Some(&never), now, 300), window_start);
        // Paused 10 s ago: counted from the pause (0 right after it, whatever ran before).
        let paused = state(Some("2026-01-01T11:59:50Z"), Some("2026-01-01T11:00:00Z"), true);
        assert_eq!(recent_since(Some(&paused), now, 300), parse_ts("2026-01-01T11:59:50Z").unwrap());
        // Resumed 20 s ago: counted from the resume.
        let resumed = state(Some("2026-01-01T11:59:30Z"), Some("2026-01-01T11:59:40Z"), false);
        assert_eq!(recent_since(Some(&resumed), now, 300), parse_ts("2026-01-01T11:59:40Z").unwrap());
        // Long after the last transition: the plain window.
        let old = state(Some("2026-01-01T10:00:00Z"), Some("2026-01-01T10:30:00Z"), false);
        assert_eq!(recent_since(Some(&old), now, 300), window_start);
        // A huge window does not overflow.
        assert!(recent_since(None, now, u64::MAX) < now);
    }
}
