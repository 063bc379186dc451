//! What Cortex is doing, computed in one place for the CLI and the API: the scheduler's state
//! (`GET /scheduler/status`, `cortex scheduler status`), the system summary (`GET /status`),
//! health (`GET /health`), dispatch views (`GET /dispatches…`, `cortex dispatches`) and the
//! Prometheus metrics (`GET /metrics`).
//!
//! A [`StatusReader`] caches what it parsed by file identity (device, inode, size, mtime, ctime): a
//! long-lived reader (the api daemon) re-reads the task queue or a worker-specs directory only
//! after it changed, and follows the event log by offset. A one-shot reader (the CLI) simply
//! reads everything once.

use crate::clock::{Timestamp, format_ts, human_duration, parse_ts};
use crate::config::Config;
use crate::daemon::{DAEMONS, read_mark};
use crate::error::{Error, Result};
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
struct Cached<T>(Mutex<Option<(FileKey, Arc<T>)>>);

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
            return Ok(v.clone());
        }
        // Stat before reading: a change during the read shows as a new key next time.
        let v = Arc::new(load()?);
        *c = key.filter(|k| !k.is_racy()).map(|k| (k, v.clone()));
        Ok(v)
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
    /// file name → (identity, record; None for an unreadable spec, so it is reported once).
    entries: HashMap<String, (FileKey, Option<Arc<SpecEntry>>)>,
}

/// The dispatch records of every bucket, and the sorted list made from them.
#[derive(Default)]
struct SpecIndex {
    buckets: [BucketIndex; 4],
    snapshot: Option<Arc<Vec<Arc<SpecEntry>>>>,
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
        for (i, bucket) in DISPATCH_BUCKETS.iter().enumerate() {
            self.refresh_bucket(*bucket, &mut idx.buckets[i])?;
            out.extend(idx.buckets[i].entries.values().filter_map(|(_, e)| e.clone()));
        }
        out.sort_by(|a, b| {
            a.record
                .dispatched_at
                .cmp(&b.record.dispatched_at)
                .then_with(|| a.record.dispatch_id.cmp(&b.record.dispatch_id))
        });
        let snap = Arc::new(out);
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
                    Some(Arc::new(SpecEntry { bucket, record: rec, dispatched }))
                }
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("skipping dispatch spec: {e}");
                    None
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

    /// `GET /scheduler/status`, `cortex scheduler status`.
    pub fn scheduler_status(&self) -> Result<SchedulerStatus> {
        let cfg = self.config();
        let s = self.scheduler_state()?;
        let now = chrono::Utc::now();
        let coordinator = daemon_state(self.home(), "coordinator", &cfg);
        let mark = read_mark(self.home(), "coordinator");
        let up = coordinator == "running";
        let uptime = mark
            .as_ref()
            .filter(|_| up)
            .and_then(|m| parse_ts(&m.started_at))
            .map(|t| human_duration((now - t).num_seconds()));
        let paused = s.is_paused();
        let paused_duration = s
            .paused_at
            .as_deref()
            .filter(|_| paused)
            .and_then(parse_ts)
            .map(|t| human_duration((now - t).num_seconds()));
        let only_paused = |v: &Option<String>| if paused { v.clone() } else { None };
        Ok(SchedulerStatus {
            state: if paused { "paused" } else { "running" },
            paused,
            uptime,
            last_tick: mark.map(|m| m.last_loop_at),
            paused_at: only_paused(&s.paused_at),
            resumed_at: s.resumed_at.clone(),
            paused_duration,
            paused_by: only_paused(&s.paused_by),
            paused_from: only_paused(&s.paused_from),
            reason: only_paused(&s.reason),
            tick_interval: human_duration(cfg.scheduler.tick_interval_seconds as i64),
            coordinator,
        })
    }

    /// `GET /status`.
    pub fn system_status(&self) -> Result<SystemStatus> {
        let cfg = self.config();
        let now = chrono::Utc::now();
        let sched = self.scheduler_state()?;
        let queue = self.queue()?;
        let budget = self.token_budget()?;
        let dispatches = self.dispatches()?;
        let window = chrono::Duration::seconds(cfg.scheduler.recent_window_seconds as i64);
        let running_count = dispatches.iter().filter(|d| d.is_active()).count();
        let recent_dispatch_count =
            dispatches.iter().filter(|d| d.dispatched.is_some_and(|t| t >= now - window)).count();
        Ok(SystemStatus {
            running_count,
            recent_dispatch_count,
            recent_window_seconds: cfg.scheduler.recent_window_seconds,
            max_concurrent: cfg.scheduler.max_concurrent_dispatches,
            scheduler_state: if sched.is_paused() { "paused" } else { "running" },
            queued_count: queue.count(TaskStatus::Queued),
            pending_retry_count: queue.count(TaskStatus::PendingRetry),
            in_progress_count: queue.count(TaskStatus::InProgress),
            tasks_total: queue.total,
            uptime_s: coordinator_uptime(self.home(), &cfg, now),
            token_budget: BudgetView {
                total: budget.total,
                used: budget.used,
                reserved: budget.reserved(),
                available: budget.available,
            },
        })
    }

    /// `GET /health`: healthy when every enabled daemon runs and no critical event is younger
    /// than `[api] critical_window_seconds`.
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
        let hour = self.recent_events(now, chrono::Duration::hours(1))?;
        let critical_window = chrono::Duration::seconds(cfg.api.critical_window_seconds as i64);
        let criticals =
            self.recent_events(now, critical_window)?.into_iter().filter(|e| e.severity == Severity::Critical).count();
        if criticals > 0 {
            problems.push(format!(
                "{criticals} critical event(s) in the last {}",
                human_duration(cfg.api.critical_window_seconds as i64)
            ));
        }
        let events_1h = hour.len();
        let recent_events = hour.iter().take(RECENT_EVENTS_SHOWN).map(HealthEvent::of).collect();
        Ok(Health { healthy: problems.is_empty(), events_1h, daemons, problems, recent_events })
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
    pub state: &'static str,
    pub paused: bool,
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
}

#[derive(Debug, Clone, Serialize)]
pub struct BudgetView {
    pub total: u64,
    pub used: u64,
    pub reserved: u64,
    pub available: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SystemStatus {
    pub running_count: usize,
    pub recent_dispatch_count: usize,
    pub recent_window_seconds: u64,
    pub max_concurrent: u32,
    pub scheduler_state: &'static str,
    pub queued_count: usize,
    pub pending_retry_count: usize,
    pub in_progress_count: usize,
    pub tasks_total: usize,
    pub uptime_s: Option<i64>,
    pub token_budget: BudgetView,
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
}

impl HealthEvent {
    fn of(e: &Event) -> HealthEvent {
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
