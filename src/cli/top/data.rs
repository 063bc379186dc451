//! What `cortex top` shows, read from the home: the daemons (from their PID files, marks and
//! `/proc`, with CPU measured between two reads), the scheduler switch, the running and recently
//! ended tasks (from the dispatch records, through the status views' cache), queue depth by
//! priority, throughput (ended dispatches per minute) and the newest events. Files are read
//! again only when the watcher said they changed ([`Data::refresh_files`]); the daemons and the
//! tasks' last output lines have refreshes of their own.

use crate::base::clock::Timestamp;
use crate::base::daemon_name::Daemon;
use crate::domain::scheduler_state::SchedulerState;
use crate::domain::task::model::{DispatchState, Priority, Task, TaskQueue, TaskStatus};
use crate::ops::status::{DispatchView, SpecEntry, StatusReader};
use crate::ops::supervisor::registry;
use crate::ops::supervisor::status::{DaemonState, daemon_status};
use crate::store::events::Event;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Minutes of throughput history the sparkline shows.
pub(super) const THROUGHPUT_MINUTES: usize = 30;
/// Newest events kept.
const EVENTS_KEPT: usize = 50;
/// Ended tasks listed under the running ones.
const ENDED_SHOWN: usize = 8;

pub(super) struct DaemonRow {
    pub name: Daemon,
    pub state: DaemonState,
    pub pid: Option<u32>,
    pub uptime_seconds: Option<u64>,
    pub rss_bytes: Option<u64>,
    /// Share of one core between the last two reads (None on the first).
    pub cpu_percent: Option<f64>,
}

/// One row of the task table: a running dispatch or a recently ended one.
pub(super) struct TaskRow {
    pub task_id: String,
    pub dispatch_id: String,
    pub status: &'static str,
    pub running: bool,
    pub priority: Option<Priority>,
    pub worker_type: String,
    pub description: String,
    pub attempt: u32,
    /// When it started (running) or ended.
    pub since: Option<Timestamp>,
    pub last_line: String,
}

#[derive(Default)]
pub(super) struct Data {
    pub daemons: Vec<DaemonRow>,
    pub scheduler: Option<Arc<SchedulerState>>,
    pub tasks: Vec<TaskRow>,
    /// Queued and pending-retry tasks per priority (critical first).
    pub depth: Vec<(Priority, usize, usize)>,
    pub counts: HashMap<TaskStatus, usize>,
    /// Ended dispatches per minute, oldest minute first, the current one last.
    pub throughput: Vec<u64>,
    /// Newest first.
    pub events: Vec<Event>,
    /// Files that could not be read.
    pub problems: Vec<String>,
    cpu: HashMap<u32, (u64, Instant)>,
    /// Each task's description and priority as last seen (None: not found in the archive).
    known: HashMap<String, Option<(String, Priority)>>,
}

impl Data {
    /// Each daemon's state (from its PID file's lock, its mark and the supervisor's state: what
    /// `cortex status` reads), uptime and memory, and its CPU since the previous call.
    pub(super) fn refresh_daemons(&mut self, reader: &StatusReader) {
        let home = reader.home();
        let config = reader.config();
        let sup = registry::read_state(home);
        self.daemons = Daemon::ALL
            .iter()
            .map(|&d| {
                let s = daemon_status(home, &config, &sup, d);
                DaemonRow {
                    name: d,
                    state: s.state,
                    pid: s.pid,
                    uptime_seconds: s.uptime_seconds,
                    rss_bytes: s.rss_bytes,
                    cpu_percent: None,
                }
            })
            .collect();
        self.sample_daemons();
    }

    /// CPU, memory and uptime of the daemons known to run, from `/proc/<pid>/stat` alone (the
    /// state needs the kernel's lock table, which costs more: [`Data::refresh_daemons`]). False
    /// when one of them is gone, so the caller reads the states again.
    pub(super) fn sample_daemons(&mut self) -> bool {
        let now = Instant::now();
        let mut cpu = HashMap::new();
        let mut all_there = true;
        for row in &mut self.daemons {
            let Some(pid) = row
                .pid
                .filter(|_| matches!(row.state, DaemonState::Running | DaemonState::Starting | DaemonState::Hung))
            else {
                continue;
            };
            let Some(stat) = i32::try_from(pid).ok().and_then(crate::base::procfs::stat) else {
                all_there = false;
                continue;
            };
            let ticks = stat.cpu_ticks();
            row.cpu_percent = self.cpu.get(&pid).and_then(|(before, at)| {
                let secs = now.duration_since(*at).as_secs_f64();
                (secs > 0.0)
                    .then(|| ticks.saturating_sub(*before) as f64 / crate::base::procfs::clock_ticks() / secs * 100.0)
            });
            row.rss_bytes = Some(stat.rss_bytes());
            row.uptime_seconds = Some(stat.age_secs() as u64);
            cpu.insert(pid, (ticks, now));
        }
        self.cpu = cpu;
        all_there
    }

    /// Everything read from `coordination/`: the scheduler, the queue, the dispatch records, the
    /// events; and the running tasks' last output lines.
    pub(super) fn refresh_files(&mut self, reader: &StatusReader, now: Timestamp) {
        let store = reader.store();
        self.problems.clear();
        let snap = reader.snapshot();
        for e in &snap.errors {
            self.problems.push(format!("cannot read {}: {}", e.file, e.error));
        }
        self.scheduler = snap.scheduler.clone();
        let queue = match store.load::<TaskQueue>() {
            Ok(q) => Some(q),
            Err(e) => {
                self.problems.push(e.to_string());
                None
            }
        };
        let tasks: HashMap<&str, &Task> =
            queue.iter().flat_map(|q| q.tasks.iter()).map(|t| (t.task_id.as_str(), t)).collect();
        self.counts.clear();
        let mut depth: HashMap<Priority, (usize, usize)> = HashMap::new();
        for t in tasks.values() {
            let status = t.status();
            *self.counts.entry(status).or_default() += 1;
            let d = depth.entry(t.priority).or_default();
            match status {
                TaskStatus::Queued => d.0 += 1,
                TaskStatus::PendingRetry => d.1 += 1,
                _ => {}
            }
        }
        self.depth = [Priority::Critical, Priority::High, Priority::Medium, Priority::Low]
            .into_iter()
            .map(|p| {
                let (q, r) = depth.get(&p).copied().unwrap_or_default();
                (p, q, r)
            })
            .collect();
        let dispatches: Vec<Arc<SpecEntry>> = snap.dispatches.as_deref().cloned().unwrap_or_default();
        self.throughput = throughput(&dispatches, now);
        let mut ended: Vec<&Arc<SpecEntry>> = dispatches.iter().filter(|e| !e.is_active()).collect();
        ended.sort_by_key(|e| std::cmp::Reverse(e.record.state.ended_at()));
        ended.truncate(ENDED_SHOWN);
        // What the rows say of their task: from the queue, else remembered from an earlier
        // read, else (a task that ended before top started) from the archive, once per task.
        for t in tasks.values() {
            self.known.insert(t.task_id.clone(), Some((t.description.clone(), t.priority)));
        }
        for e in &ended {
            let id = &e.record.task_id;
            if !self.known.contains_key(id) {
                let found = crate::domain::task::archive::find(store, id).ok().flatten();
                self.known.insert(id.clone(), found.map(|t| (t.description, t.priority)));
            }
        }
        let known = &self.known;
        let row = |e: &SpecEntry| {
            let r = &e.record;
            let task = known.get(&r.task_id).and_then(|k| k.as_ref());
            let running = e.is_active();
            TaskRow {
                task_id: r.task_id.clone(),
                dispatch_id: r.dispatch_id.clone(),
                status: r.status().as_str(),
                running,
                priority: task.map(|t| t.1),
                worker_type: r.worker_type.clone(),
                description: task.map(|t| t.0.clone()).unwrap_or_default(),
                attempt: r.attempt,
                since: if running { started_at(&r.state).or(Some(r.dispatched_at)) } else { r.state.ended_at() },
                last_line: String::new(),
            }
        };
        let mut rows: Vec<TaskRow> = dispatches.iter().filter(|e| e.is_active()).map(|e| row(e)).collect();
        rows.extend(ended.into_iter().map(|e| row(e)));
        // Only what can still be shown is kept: the queue's tasks and the rows.
        let keep: std::collections::HashSet<String> =
            tasks.keys().map(|k| k.to_string()).chain(rows.iter().map(|r| r.task_id.clone())).collect();
        self.known.retain(|id, _| keep.contains(id));
        self.tasks = rows;
        self.refresh_output(reader, &dispatches);
        match crate::store::events::read_last(reader.home(), EVENTS_KEPT, |_| true) {
            Ok((mut events, _)) => {
                events.reverse();
                self.events = events;
            }
            Err(e) => self.problems.push(e.to_string()),
        }
    }

    /// The last line each listed task printed (its standard output's, else its standard error's).
    pub(super) fn refresh_output(&mut self, reader: &StatusReader, dispatches: &[Arc<SpecEntry>]) {
        let by_id: HashMap<&str, &SpecEntry> =
            dispatches.iter().map(|e| (e.record.dispatch_id.as_str(), e.as_ref())).collect();
        for row in &mut self.tasks {
            if let Some(entry) = by_id.get(row.dispatch_id.as_str()) {
                let view = DispatchView::of(reader.home(), entry, 2048);
                row.last_line = view
                    .output_tail
                    .as_deref()
                    .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()))
                    .unwrap_or_default()
                    .to_string();
            }
        }
    }

    /// The output lines alone, after a worker log changed.
    pub(super) fn refresh_output_only(&mut self, reader: &StatusReader) {
        if let Ok(d) = reader.dispatches() {
            self.refresh_output(reader, &d);
        }
    }
}

/// Ended dispatches per minute over the last [`THROUGHPUT_MINUTES`] minutes.
fn throughput(dispatches: &[Arc<SpecEntry>], now: Timestamp) -> Vec<u64> {
    let mut per_minute = vec![0u64; THROUGHPUT_MINUTES];
    for e in dispatches {
        let Some(at) = e.record.state.ended_at() else { continue };
        let age = (now - at).num_minutes();
        if (0..THROUGHPUT_MINUTES as i64).contains(&age) {
            per_minute[THROUGHPUT_MINUTES - 1 - age as usize] += 1;
        }
    }
    per_minute
}

/// When a dispatch's process (or Slurm job) started, while it runs.
fn started_at(state: &DispatchState) -> Option<Timestamp> {
    match state {
        DispatchState::Running { started_at, .. } => Some(*started_at),
        DispatchState::Slurm { started_at, .. } => *started_at,
        _ => None,
    }
}
