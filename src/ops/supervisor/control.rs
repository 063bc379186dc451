//! What the operator asks for: start, stop and restart of daemons, one at a time and each under
//! its per-daemon lock, so `cortex`, pm and `cortex run` never act on the same daemon at once.

use super::process::{self, Detach, Stopped};
use super::registry;
use crate::base::daemon_name::Daemon;
use crate::base::error::{Error, Result};
use crate::store::config::Config;
use crate::store::events::{EventKind, Severity};
use crate::store::home::Home;
use crate::store::pidfile::{self, PidStatus};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The outcome of starting one daemon.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StartResult {
    pub daemon: String,
    /// `started`, `already_running` or `failed`.
    pub outcome: String,
    pub pid: Option<u32>,
    pub took_ms: u128,
    /// The PID of a stale PID file that was taken over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
}

impl StartResult {
    pub(crate) fn ok(&self) -> bool {
        self.outcome != "failed"
    }

    fn failed(daemon: Daemon, error: String, started: Instant, log_tail: Vec<String>) -> StartResult {
        StartResult {
            daemon: daemon.to_string(),
            outcome: "failed".into(),
            pid: None,
            took_ms: started.elapsed().as_millis(),
            stale_pid: None,
            error: Some(error),
            log_tail,
        }
    }
}

/// How long to wait for the per-daemon lock: someone else's start or stop of it.
fn lock_wait(config: &Config) -> Duration {
    Duration::from_secs_f64(
        config.supervisor.ready_timeout_seconds.max(0.0) + config.supervisor.stop_timeout_seconds.max(0.0) + 15.0,
    )
}

pub(crate) fn ready_timeout(config: &Config) -> Duration {
    Duration::from_secs_f64(config.supervisor.ready_timeout_seconds.max(0.1))
}

/// The last `n` lines of a daemon's log.
pub(crate) fn log_tail(home: &Home, daemon: Daemon, n: usize) -> Vec<String> {
    let text = std::fs::read(home.daemon_log(daemon)).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|s| s.to_string()).collect()
}

/// Starts `daemon` detached and waits until it is ready. Clears the operator's stop intent and a
/// FAILED mark (the operator wants it running). A running daemon is left as it is.
pub(crate) fn start_one(home: &Home, config: &Config, daemon: Daemon) -> StartResult {
    let began = Instant::now();
    let _guard = match registry::lock_daemon(home, daemon, lock_wait(config)) {
        Ok(g) => g,
        Err(e) => return StartResult::failed(daemon, e.to_string(), began, Vec::new()),
    };
    if let Err(e) = registry::clear_stop_intent(home, daemon).and_then(|()| registry::clear_failed(home, daemon)) {
        return StartResult::failed(daemon, e.to_string(), began, Vec::new());
    }
    let stale_pid = match pidfile::status(home, daemon) {
        Ok(PidStatus::Running(pid)) => {
            return StartResult {
                daemon: daemon.to_string(),
                outcome: "already_running".into(),
                pid: Some(pid),
                took_ms: began.elapsed().as_millis(),
                stale_pid: None,
                error: None,
                log_tail: Vec::new(),
            };
        }
        Ok(PidStatus::Stale(pid)) => Some(pid.unwrap_or(0)),
        Ok(PidStatus::Absent) => None,
        Err(e) => return StartResult::failed(daemon, e.to_string(), began, Vec::new()),
    };
    let mut child = match process::spawn(home, daemon, Detach::Session) {
        Ok(c) => c,
        Err(e) => return StartResult::failed(daemon, e.to_string(), began, Vec::new()),
    };
    match process::wait_ready(home, daemon, &mut child, ready_timeout(config)) {
        Ok(()) => StartResult {
            daemon: daemon.to_string(),
            outcome: "started".into(),
            pid: Some(child.id()),
            took_ms: began.elapsed().as_millis(),
            stale_pid,
            error: None,
            log_tail: Vec::new(),
        },
        Err(not_ready) => {
            process::terminate_child(&mut child, stop_timeout(config));
            let msg = format!("{daemon} {not_ready}");
            let _ = crate::store::events::emit(
                home,
                EventKind::DaemonStartFailed,
                Severity::Error,
                "cortex",
                format!("{msg}; see {}", home.daemon_log(daemon).display()),
                serde_json::json!({"daemon": daemon, "error": not_ready.to_string()}),
            );
            StartResult::failed(daemon, not_ready.to_string(), began, log_tail(home, daemon, 10))
        }
    }
}

pub(crate) fn stop_timeout(config: &Config) -> Duration {
    Duration::from_secs_f64(config.supervisor.stop_timeout_seconds.max(0.0))
}

/// How to stop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StopOptions {
    pub timeout: Duration,
    pub force: bool,
    /// Worker only: also kill the process groups of running dispatches.
    pub kill_tasks: bool,
    /// Record the operator's intent so pm and `cortex run` leave the daemon stopped.
    pub record_intent: bool,
}

/// The outcome of stopping one daemon.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StopResult {
    pub daemon: String,
    /// `stopped`, `killed_after_timeout`, `killed`, `not_running`, `cleaned_stale` or `failed`.
    pub outcome: String,
    pub pid: Option<u32>,
    pub took_ms: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_killed: Option<usize>,
    /// The task processes stopped (`--force`, `--kill-tasks`), found by their environment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub task_processes_killed: Vec<crate::domain::task::processes::TaskProcess>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StopResult {
    pub(crate) fn ok(&self) -> bool {
        self.outcome != "failed"
    }
}

/// Stops `daemon`: SIGTERM, up to `timeout`, then SIGKILL (`force`: SIGKILL at once). Removes
/// its PID file afterwards, and a stale one of this home.
pub(crate) fn stop_one(home: &Home, config: &Config, daemon: Daemon, opts: StopOptions) -> StopResult {
    let began = Instant::now();
    let mut result = StopResult {
        daemon: daemon.to_string(),
        outcome: "failed".into(),
        pid: None,
        took_ms: 0,
        tasks_killed: None,
        task_processes_killed: Vec::new(),
        error: None,
    };
    let outcome = stop_inner(home, config, daemon, opts, &mut result);
    result.took_ms = began.elapsed().as_millis();
    match outcome {
        Ok(o) => result.outcome = o.into(),
        Err(e) => result.error = Some(e.to_string()),
    }
    result
}

fn stop_inner(
    home: &Home,
    config: &Config,
    daemon: Daemon,
    opts: StopOptions,
    result: &mut StopResult,
) -> Result<&'static str> {
    let _guard = registry::lock_daemon(home, daemon, lock_wait(config))?;
    if opts.record_intent {
        registry::set_stop_intent(home, daemon, "cortex stop")?;
    }
    let outcome = match pidfile::status(home, daemon)? {
        PidStatus::Absent => "not_running",
        PidStatus::Stale(pid) => {
            result.pid = pid;
            // Only our own file: it is stale when its lock is free; take the lock to be sure.
            if let Some(_g) = crate::store::lock::try_lock_pid_file(&home.pid_file(daemon))? {
                process::remove_leftovers(home, daemon);
            }
            "cleaned_stale"
        }
        PidStatus::Running(pid) => {
            result.pid = Some(pid);
            registry::record_stop_asked(home, daemon, pid)?;
            let (how, pid_lock) = match process::stop_pid(home, daemon, pid, opts.timeout, opts.force) {
                Ok(stopped) => stopped,
                // It let go of its PID file between the status read and the proof (it was on its
                // way out): nothing is signalled, and holding the lock now, nothing restarts it
                // before the caller has tidied up.
                Err(refused @ Error::Refused(_)) => {
                    match crate::store::lock::try_lock_pid_file(&home.pid_file(daemon))? {
                        Some(lock) => (Stopped::Graceful, lock),
                        None => return Err(refused),
                    }
                }
                Err(e) => return Err(e),
            };
            process::remove_leftovers(home, daemon);
            drop(pid_lock);
            if how == Stopped::KilledAfterTimeout {
                let _ = crate::store::events::emit(
                    home,
                    EventKind::DaemonKilled,
                    Severity::Warning,
                    "cortex",
                    format!(
                        "{daemon} (PID {pid}) ignored SIGTERM for {:.1}s and was killed",
                        opts.timeout.as_secs_f64()
                    ),
                    serde_json::json!({"daemon": daemon, "pid": pid, "timeout_seconds": opts.timeout.as_secs_f64()}),
                );
            }
            match how {
                Stopped::Graceful => "stopped",
                Stopped::KilledAfterTimeout => "killed_after_timeout",
                Stopped::Killed => "killed",
            }
        }
    };
    // `--force` stops everything of the home, the tasks included, like `--kill-tasks`.
    if (opts.kill_tasks || opts.force) && daemon == Daemon::Worker {
        let store = crate::store::Store::new(home.clone()).with_lock_timeout(config.lock_timeout()).with_source("cli");
        let grace = Duration::from_secs_f64(config.worker.grace_seconds.max(0.0));
        let stopped = crate::domain::task::processes::stop_home_tasks(&store, grace)?;
        result.tasks_killed = Some(stopped.count());
        result.task_processes_killed = stopped.processes;
    }
    Ok(outcome)
}

/// One step of a restart.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RestartStep {
    pub daemon: String,
    pub old_pid: Option<u32>,
    pub new_pid: Option<u32>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
}

/// Restarts `daemons` one at a time (in the order given): stop, start, wait until ready and then
/// up and heartbeating for `stabilization`; stops at the first failure, leaving the rest running.
/// `progress` sees each step as it completes.
pub(crate) fn restart(
    home: &Home,
    config: &Config,
    daemons: &[Daemon],
    stabilization: Duration,
    mut progress: impl FnMut(&RestartStep),
) -> Vec<RestartStep> {
    let mut steps = Vec::new();
    for &daemon in daemons {
        let stop = stop_one(
            home,
            config,
            daemon,
            StopOptions { timeout: stop_timeout(config), force: false, kill_tasks: false, record_intent: true },
        );
        let mut step = RestartStep {
            daemon: daemon.to_string(),
            old_pid: stop.pid,
            new_pid: None,
            ok: false,
            error: None,
            log_tail: Vec::new(),
        };
        if let Some(e) = stop.error {
            step.error = Some(format!("stop failed: {e}"));
        } else {
            let start = start_one(home, config, daemon);
            step.new_pid = start.pid;
            if let Some(e) = start.error {
                step.error = Some(e);
                step.log_tail = start.log_tail;
            } else if let Err(e) = wait_stable(home, config, daemon, start.pid.unwrap_or(0), stabilization) {
                step.error = Some(e.to_string());
                step.log_tail = log_tail(home, daemon, 10);
            } else {
                step.ok = true;
            }
        }
        progress(&step);
        let ok = step.ok;
        steps.push(step);
        if !ok {
            break;
        }
    }
    steps
}

/// Waits `period` and fails if the daemon dies meanwhile (woken by its PID file's lock) or its
/// heartbeat is stale at the end.
pub(crate) fn wait_stable(home: &Home, config: &Config, daemon: Daemon, pid: u32, period: Duration) -> Result<()> {
    if !period.is_zero() {
        match crate::store::lock::lock_pid_file(&home.pid_file(daemon), period) {
            Ok(_g) => {
                return Err(Error::other(format!(
                    "{daemon} (PID {pid}) exited within the {:.1}s stabilisation period",
                    period.as_secs_f64()
                )));
            }
            Err(Error::LockTimeout { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if !matches!(pidfile::status(home, daemon)?, PidStatus::Running(p) if p == pid) {
        return Err(Error::other(format!("{daemon} (PID {pid}) is no longer running")));
    }
    if let Some(age) = super::status::heartbeat_age(home, daemon, pid)
        && age > config.supervisor.hung_after_seconds as f64
    {
        return Err(Error::other(format!("{daemon} (PID {pid}) has not heartbeated for {age:.0}s")));
    }
    Ok(())
}

/// Sends SIGHUP to every running daemon of this home (they reopen their logs).
pub(crate) fn reopen_logs(home: &Home) -> Vec<(String, u32)> {
    let mut done = Vec::new();
    for d in Daemon::ALL {
        // Only a process proven to be this home's daemon is signalled.
        if let Ok(Some(pid)) = super::process::signal_daemon(home, d, nix::sys::signal::Signal::SIGHUP) {
            done.push((d.to_string(), pid));
        }
    }
    done
}
