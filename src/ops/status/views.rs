//! The status views, made from what a [`StatusReader`] read: the scheduler's state
//! (`GET /scheduler/status`, `cortex scheduler status`), the system summary (`GET /status`),
//! health (`GET /health`) and the dispatch views (`GET /dispatches…`, `cortex dispatches`).
//! The Prometheus metrics are in [`super::metrics`].

use super::{FileError, SpecEntry, StatusReader};
use crate::base::clock::{Timestamp, format_ts, human_duration};
use crate::base::daemon_name::Daemon;
use crate::base::error::{Error, Result};
use crate::domain::scheduler_state::SchedulerState;
use crate::domain::task::{DispatchState, DispatchStatus, SignalledEnd, TaskStatus};
use crate::store::config::Config;
use crate::store::daemon_mark::read_mark;
use crate::store::events::acks::AckSet;
use crate::store::events::{Event, Severity};
use crate::store::home::{Home, SpecBucket};
use crate::store::pidfile::{PidStatus, status_quick as pid_status};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

impl StatusReader {
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
        let coordinator = daemon_state(self.home(), Daemon::Coordinator, &cfg);
        let mark = read_mark(self.home(), Daemon::Coordinator);
        let up = coordinator == "running";
        let uptime = mark.as_ref().filter(|_| up).map(|m| human_duration((now - m.started_at).num_seconds()));
        let paused = s.as_ref().map(|s| s.is_paused());
        let only_paused = |f: fn(&SchedulerState) -> &Option<String>| {
            s.as_deref().filter(|s| s.is_paused()).and_then(|s| f(s).clone())
        };
        let paused_at = s.as_deref().filter(|s| s.is_paused()).and_then(|s| s.paused_at);
        let paused_duration = paused_at.map(|t| human_duration((now - t).num_seconds()));
        Ok(SchedulerStatus {
            state: match paused {
                Some(true) => "paused",
                Some(false) => "running",
                None => "unknown",
            },
            paused,
            uptime,
            last_tick: mark.map(|m| format_ts(m.last_loop_at)),
            paused_at,
            resumed_at: s.as_ref().and_then(|s| s.resumed_at),
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
            snap.dispatches.as_ref().map(|d| d.iter().filter(|d| d.record.dispatched_at >= since).count());
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
            notifications: crate::ops::notify::list::summary(self.home()),
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
        for d in Daemon::ALL {
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
            errors.push(self.file_error(&self.store().path(crate::store::files::EVENT_ACKS), &e));
            AckSet::default()
        });
        let hour: Vec<&Event> = events.iter().filter(|e| e.timestamp >= now - chrono::Duration::hours(1)).collect();
        let critical_cutoff = now - critical_window;
        let criticals = events
            .iter()
            .filter(|e| e.severity == Severity::Critical && e.timestamp >= critical_cutoff)
            .filter(|e| !acks.covers(e))
            .count();
        if criticals > 0 {
            problems.push(format!(
                "{criticals} unacknowledged critical event(s) in the last {} (`cortex event ack ID|--all` once handled)",
                human_duration(cfg.api.critical_window_seconds as i64)
            ));
        }
        let undelivered = events
            .iter()
            .filter(|e| e.event_type == crate::store::events::EventKind::NotificationFailed)
            .filter(|e| e.timestamp >= critical_cutoff && !acks.covers(e))
            .count();
        if undelivered > 0 {
            problems.push(format!(
                "{undelivered} notification(s) could not be delivered in the last {} (`cortex notify list`; `cortex event ack ID|--all` once handled)",
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
        crate::ops::status::prometheus::render(self)
    }

    /// [`StatusReader::metrics`], each task's creation time looked up by `created` (the API's
    /// rows) rather than read from the whole queue.
    pub(crate) fn metrics_with(&self, created: crate::ops::status::prometheus::CreatedLookup) -> Result<String> {
        crate::ops::status::prometheus::render_with(self, created)
    }
}

/// How many events `GET /health` lists.
pub const RECENT_EVENTS_SHOWN: usize = 50;

/// "running", "stopped" (no PID file), "dead" (stale PID file), or "disabled". A cheap look
/// (`pidfile::status_quick`): clients poll these views.
pub fn daemon_state(home: &Home, daemon: Daemon, cfg: &Config) -> &'static str {
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
    let transition = state.into_iter().flat_map(|s| [s.paused_at, s.resumed_at]).flatten().max();
    transition.map_or(window_start, |t| t.max(window_start))
}

/// Seconds since the coordinator started, when it runs.
pub fn coordinator_uptime(home: &Home, cfg: &Config, now: Timestamp) -> Option<i64> {
    if daemon_state(home, Daemon::Coordinator, cfg) != "running" {
        return None;
    }
    let mark = read_mark(home, Daemon::Coordinator)?;
    Some((now - mark.started_at).num_seconds().max(0))
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
    #[serde(with = "crate::base::clock::ts::option")]
    pub paused_at: Option<Timestamp>,
    #[serde(with = "crate::base::clock::ts::option")]
    pub resumed_at: Option<Timestamp>,
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
    /// cortex-notify's deliveries: pending, totals by sink and result, recent failures (null
    /// until notifications were configured).
    pub notifications: Option<crate::ops::notify::list::NotifySummary>,
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
            event_type: e.event_type.to_string(),
            class: e.severity.as_str(),
            message: e.message.clone(),
            created_at: format_ts(e.timestamp),
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
    #[serde(with = "crate::base::clock::ts")]
    pub dispatched_at: Timestamp,
    #[serde(with = "crate::base::clock::ts::option")]
    pub started_at: Option<Timestamp>,
    #[serde(with = "crate::base::clock::ts::option")]
    pub ended_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    pub duration_s: Option<f64>,
    pub worker_type: String,
    pub log_path: String,
    pub output_tail: Option<String>,
    /// `slurm` for a dispatch run as a Slurm job (absent for a local one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor: Option<&'static str>,
    /// The Slurm job's id, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<u64>,
    /// Why a Slurm dispatch waits (Slurm's pending reason, or Slurm unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

impl DispatchView {
    pub fn of(home: &Home, entry: &SpecEntry, tail_bytes: u64) -> DispatchView {
        let r = &entry.record;
        let now = chrono::Utc::now();
        let (pid, started_at, exit_code, duration_s) = match &r.state {
            DispatchState::Starting => (None, None, None, None),
            DispatchState::Slurm { started_at, .. } => {
                (None, *started_at, None, started_at.map(|t| (now - t).num_milliseconds() as f64 / 1000.0))
            }
            DispatchState::Running { started_at, pid, .. } => {
                (Some(*pid), Some(*started_at), None, Some((now - *started_at).num_milliseconds() as f64 / 1000.0))
            }
            DispatchState::Completed { exit_code, duration_s, .. } => (None, None, Some(*exit_code), Some(*duration_s)),
            DispatchState::Failed { exit_code, duration_s, .. } => (None, None, *exit_code, *duration_s),
            DispatchState::Cancelled(SignalledEnd { duration_s, .. })
            | DispatchState::Timeout(SignalledEnd { duration_s, .. }) => (None, None, None, *duration_s),
            DispatchState::Lost { .. } | DispatchState::Zombie { .. } => (None, None, None, None),
        };
        let log_path = home.configured_path(&r.stdout_path);
        // Only the dispatch's own logs under the home are read: a record is data anyone who can
        // write a spec (a restored archive, a broken tool) controls, and its paths could name any
        // file the API may read (`/etc/shadow`), served to every caller of `/dispatches/<id>`.
        let own_log = |recorded: &str, expected: PathBuf| {
            let p = home.configured_path(recorded);
            (crate::domain::task::dispatches::is_valid_id(&r.dispatch_id) && p == expected).then_some(p)
        };
        let stdout = own_log(&r.stdout_path, home.dispatch_stdout(&r.dispatch_id));
        let stderr = own_log(&r.stderr_path, home.dispatch_stderr(&r.dispatch_id));
        let output_tail = (tail_bytes > 0)
            .then(|| {
                stdout
                    .and_then(|p| read_tail(&p, tail_bytes))
                    .filter(|s| !s.is_empty())
                    .or_else(|| stderr.and_then(|p| read_tail(&p, tail_bytes)))
            })
            .flatten();
        DispatchView {
            id: r.dispatch_id.clone(),
            task_id: r.task_id.clone(),
            status: r.status().as_str(),
            stage: entry.bucket.dir_name(),
            attempt: r.attempt,
            pid,
            dispatched_at: r.dispatched_at,
            started_at,
            ended_at: r.state.ended_at(),
            exit_code,
            duration_s,
            worker_type: r.worker_type.clone(),
            log_path: log_path.to_string_lossy().into_owned(),
            output_tail,
            executor: r.is_slurm().then_some("slurm"),
            job_id: match &r.state {
                DispatchState::Slurm { job_id, .. } => *job_id,
                _ => None,
            },
            waiting: match &r.state {
                DispatchState::Slurm { reason, .. } => reason.clone(),
                _ => None,
            },
        }
    }
}

/// The last `max` bytes of a file as text (None when it cannot be read).
fn read_tail(path: &Path, max: u64) -> Option<String> {
    if path.as_os_str().is_empty() {
        return None;
    }
    // Never through a link planted at the log's name.
    let mut f = crate::store::open::read(path).ok()?;
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
    })?;
    let dir = reader.home().worker_specs(SpecBucket::Active);
    crate::store::atomic::create_dir_all(&dir)?;
    watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|e| Error::watch(dir, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::parse_ts;

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
