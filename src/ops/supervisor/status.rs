//! `cortex status` and `cortex health-check`: each daemon's state in the runbook's words, from its
//! PID-file lock, its mark, /proc and the supervisor state; plus the scheduler state and the
//! task counts.

use super::process::proc_stats;
use super::registry;
use crate::base::daemon_name::Daemon;
use crate::store::config::Config;
use crate::store::daemon_mark::read_mark;
use crate::store::home::Home;
use crate::store::pidfile::{self, PidStatus};
use serde::Serialize;

/// What one daemon is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DaemonState {
    Running,
    /// PID file locked, not ready yet.
    Starting,
    /// Running but its heartbeat mark is older than `hung_after_seconds`.
    Hung,
    /// PID file exists, nobody holds it: the process died.
    Stale,
    Stopped,
    /// The supervisor gave up after the start limit.
    Failed,
    Disabled,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DaemonStatus {
    pub name: Daemon,
    pub state: DaemonState,
    pub enabled: bool,
    pub pid: Option<u32>,
    pub uptime_seconds: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub cpu_percent: Option<f64>,
    pub heartbeat_age_seconds: Option<f64>,
    /// Restarts made by the supervisor (pm or `cortex run`).
    pub restarts: u32,
    pub last_restart_cause: Option<String>,
    /// True when the operator stopped it with `cortex stop`.
    pub stopped_by_operator: bool,
}

impl DaemonStatus {
    /// The runbook's line: `worker: RUNNING (PID 4242, uptime 2h03m, 6.1 MB, 0.2% CPU)`.
    pub(crate) fn line(&self) -> String {
        let name = &self.name;
        let pid = self.pid.unwrap_or(0);
        match self.state {
            DaemonState::Running => format!(
                "{name}: RUNNING (PID {pid}, uptime {}, {:.1} MB, {:.1}% CPU)",
                crate::base::clock::human_duration(self.uptime_seconds.unwrap_or(0) as i64),
                self.rss_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0),
                self.cpu_percent.unwrap_or(0.0)
            ),
            DaemonState::Starting => format!("{name}: STARTING (PID {pid}, not ready yet)"),
            DaemonState::Hung => {
                format!("{name}: HUNG (PID {pid}, no heartbeat for {:.0}s)", self.heartbeat_age_seconds.unwrap_or(0.0))
            }
            DaemonState::Stale => format!("{name}: STALE (PID file exists but process dead)"),
            DaemonState::Stopped if self.stopped_by_operator => format!("{name}: STOPPED (by cortex stop)"),
            DaemonState::Stopped => format!("{name}: STOPPED"),
            DaemonState::Failed => format!("{name}: FAILED (gave up after {} restarts)", self.restarts),
            DaemonState::Disabled if *name == Daemon::Slurm => {
                format!("{name}: DISABLED (cortex.toml [slurm] enabled = false, or [daemons] disabled)")
            }
            DaemonState::Disabled => format!("{name}: DISABLED (cortex.toml [daemons] disabled)"),
        }
    }

    /// Running and heartbeating.
    pub(crate) fn healthy(&self) -> bool {
        self.state == DaemonState::Running
    }
}

/// Seconds since the daemon's mark was refreshed, when the mark belongs to `pid`.
pub(crate) fn heartbeat_age(home: &Home, daemon: Daemon, pid: u32) -> Option<f64> {
    let mark = read_mark(home, daemon).filter(|m| m.pid == pid)?;
    let at = mark.heartbeat_at;
    Some((chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0)
}

/// The status of one daemon.
pub(crate) fn daemon_status(
    home: &Home,
    config: &Config,
    sup: &registry::SupervisorState,
    daemon: Daemon,
) -> DaemonStatus {
    let name = daemon.as_str();
    let record = sup.daemons.get(name).cloned().unwrap_or_default();
    let mut st = DaemonStatus {
        name: daemon,
        state: DaemonState::Stopped,
        enabled: config.daemon_enabled(daemon),
        pid: None,
        uptime_seconds: None,
        rss_bytes: None,
        cpu_percent: None,
        heartbeat_age_seconds: None,
        restarts: record.restarts,
        last_restart_cause: record.last_cause.clone(),
        stopped_by_operator: registry::stop_intent(home, daemon).is_some(),
    };
    match pidfile::status(home, daemon) {
        Ok(PidStatus::Running(pid)) => {
            st.pid = Some(pid);
            if let Some(p) = proc_stats(pid) {
                st.uptime_seconds = Some(p.uptime_secs as u64);
                st.rss_bytes = Some(p.rss_bytes);
                st.cpu_percent = Some(p.cpu_percent);
            }
            let mark = read_mark(home, daemon).filter(|m| m.pid == pid);
            st.heartbeat_age_seconds = heartbeat_age(home, daemon, pid);
            st.state = if mark.is_none_or(|m| m.ready_at.is_none()) {
                DaemonState::Starting
            } else if st.heartbeat_age_seconds.is_some_and(|a| a > config.supervisor.hung_after_seconds as f64) {
                DaemonState::Hung
            } else {
                DaemonState::Running
            };
        }
        Ok(PidStatus::Stale(pid)) => {
            st.pid = pid;
            st.state = if record.failed { DaemonState::Failed } else { DaemonState::Stale };
        }
        Ok(PidStatus::Absent) | Err(_) => {
            st.state = if record.failed {
                DaemonState::Failed
            } else if st.enabled {
                DaemonState::Stopped
            } else {
                DaemonState::Disabled
            };
        }
    }
    st
}

/// Counts of tasks by state.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct TaskCounts {
    pub queued: usize,
    pub in_progress: usize,
    pub pending_retry: usize,
}

/// Everything `cortex status` shows.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Overview {
    pub home: String,
    pub daemons: Vec<DaemonStatus>,
    /// `running` or `paused` (None when the file cannot be read).
    pub scheduler: Option<String>,
    pub scheduler_reason: Option<String>,
    pub tasks: Option<TaskCounts>,
    pub api: String,
    /// Who keeps daemons alive: `pm`, `cortex run`, or none.
    pub supervisor: Option<String>,
    /// True when every enabled daemon runs.
    pub all_running: bool,
    /// cortex-notify's deliveries (None until notifications were configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notifications: Option<crate::ops::notify::list::NotifySummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

pub(crate) fn overview(home: &Home, config: &Config) -> Overview {
    let sup = registry::read_state(home);
    let daemons: Vec<DaemonStatus> = Daemon::ALL.map(|d| daemon_status(home, config, &sup, d)).into();
    let all_running = daemons.iter().filter(|d| d.enabled).all(|d| d.state == DaemonState::Running);
    let store = crate::store::Store::new(home.clone()).with_lock_timeout(config.lock_timeout()).with_source("cli");
    let mut problems = Vec::new();
    let (scheduler, scheduler_reason) = match store.load::<crate::domain::scheduler_state::SchedulerState>() {
        Ok(s) => (Some(if s.is_paused() { "paused" } else { "running" }.to_string()), s.reason.clone()),
        Err(e) => {
            problems.push(e.to_string());
            (None, None)
        }
    };
    let tasks = match store.load::<crate::domain::task::TaskQueue>() {
        Ok(q) => {
            let mut c = TaskCounts::default();
            for t in &q.tasks {
                match t.status() {
                    crate::domain::task::TaskStatus::Queued => c.queued += 1,
                    crate::domain::task::TaskStatus::InProgress => c.in_progress += 1,
                    crate::domain::task::TaskStatus::PendingRetry => c.pending_retry += 1,
                    _ => {}
                }
            }
            Some(c)
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let supervisor = if registry::foreground_active(home) {
        Some("cortex run".to_string())
    } else if daemons.iter().any(|d| d.name == Daemon::Pm && d.state == DaemonState::Running) {
        Some(Daemon::Pm.to_string())
    } else {
        None
    };
    let notifications = crate::ops::notify::list::summary(home);
    let day_ago = chrono::Utc::now() - chrono::Duration::hours(24);
    let failed: Vec<_> =
        notifications.iter().flat_map(|n| &n.recent_failures).filter(|f| f.failed_at >= day_ago).collect();
    if let Some(f) = failed.last() {
        problems.push(format!(
            "{} notification(s) could not be delivered in the last 24h; last: {} to sink {} (rule {}) at {}: {} (`cortex notify list`)",
            failed.len(),
            f.key,
            f.sink,
            f.rule,
            crate::base::clock::format_ts(f.failed_at),
            f.error
        ));
    }
    Overview {
        home: home.root().display().to_string(),
        notifications,
        daemons,
        scheduler,
        scheduler_reason,
        tasks,
        api: format!("http://{}", config.api_bind()),
        supervisor,
        all_running,
        problems,
    }
}

/// `cortex health-check`'s verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Health {
    /// Every enabled daemon runs and heartbeats.
    Healthy,
    /// Some enabled daemon is not running (or hung), but tasks can still run.
    Degraded,
    /// No task can run: nothing runs, or the worker or the coordinator is down.
    Down,
}

impl Health {
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Down => 2,
        }
    }
}

pub(crate) fn health(overview: &Overview) -> Health {
    let enabled: Vec<&DaemonStatus> = overview.daemons.iter().filter(|d| d.enabled).collect();
    if enabled.iter().all(|d| d.healthy()) {
        return Health::Healthy;
    }
    let essential_down = enabled
        .iter()
        .any(|d| [Daemon::Worker, Daemon::Coordinator].map(Daemon::as_str).contains(&d.name.as_str()) && !d.healthy());
    if essential_down || enabled.iter().all(|d| !d.healthy()) { Health::Down } else { Health::Degraded }
}
