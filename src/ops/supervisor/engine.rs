//! The restart engine shared by the pm daemon and `cortex run`: it knows which daemons are up,
//! learns the moment one dies (a thread blocked in `flock` on its PID file, or waiting on the
//! child it started), catches hung ones by their stale heartbeat mark, and restarts them per the
//! [`RestartPolicy`]. Every restart is an event naming the cause. A daemon the operator stopped
//! (`run/<name>.stopped`) is never restarted.

use super::policy::{Decision, RestartPolicy, RestartTrack};
use super::process::{self, Detach};
use super::registry::{self, DaemonRecord};
use crate::base::clock::Timestamp;
use crate::base::daemon_name::Daemon;
use crate::store::Store;
use crate::store::config::Config;
use crate::store::events::{EventKind, Severity};
use crate::store::home::Home;
use crate::store::pidfile::{self, PidStatus};
use crate::{base::wake::Wake, store::daemon_mark::read_mark};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The doorbell message the engine's threads send to the loop that owns the engine.
pub(crate) const NOTE: &str = "\u{0}supervisor-note";

/// Who runs the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The pm daemon: supervises the daemons it has seen ready (not itself), and steps aside while
    /// a `cortex run` supervises the home.
    Pm,
    /// `cortex run`: starts every daemon as its child and supervises all of them.
    Foreground,
}

#[derive(Debug)]
enum Phase {
    /// Not known to run (never seen ready, or stopped by the operator).
    Idle,
    /// Up and watched.
    Up { pid: u32, since: Instant, child: bool },
    /// Dead; restarts at `at`.
    Down { at: Instant, cause: Cause },
    /// Gave up after the start limit.
    Failed,
}

/// Why a daemon went down.
#[derive(Debug, Clone, Default)]
struct Cause {
    text: String,
    exit_code: Option<i32>,
    signal: Option<i32>,
    old_pid: Option<u32>,
}

struct Entry {
    daemon: Daemon,
    phase: Phase,
    track: RestartTrack,
    last_cause: Option<String>,
    last_restart_at: Option<Timestamp>,
}

enum Note {
    Exited { name: Daemon, pid: u32, status: Option<ExitStatus> },
    LockFree { name: Daemon, pid: u32 },
}

pub(crate) struct Engine {
    home: Home,
    config: Config,
    policy: RestartPolicy,
    mode: Mode,
    store: Store,
    entries: Vec<Entry>,
    notes: Arc<Mutex<Vec<Note>>>,
    waker: Sender<Wake>,
    next_hung_check: Instant,
    shutting_down: bool,
    observed_once: bool,
}

impl Engine {
    pub(crate) fn new(home: Home, config: Config, mode: Mode, waker: Sender<Wake>) -> Engine {
        let source = if mode == Mode::Pm { Daemon::Pm.as_str() } else { "supervisor" };
        let store = Store::new(home.clone()).with_lock_timeout(config.lock_timeout()).with_source(source);
        let saved = registry::read_state(&home);
        let entries = Daemon::ALL
            .into_iter()
            .map(|daemon| {
                let rec = saved.daemons.get(daemon.as_str()).cloned().unwrap_or_default();
                let mut track = RestartTrack::default();
                track.restarts = rec.restarts;
                track.failed = rec.failed;
                Entry {
                    daemon,
                    phase: if rec.failed { Phase::Failed } else { Phase::Idle },
                    track,
                    last_cause: rec.last_cause,
                    last_restart_at: rec.last_restart_at,
                }
            })
            .collect();
        Engine {
            policy: RestartPolicy::from_config(&config.supervisor),
            home,
            mode,
            store,
            entries,
            notes: Arc::new(Mutex::new(Vec::new())),
            waker,
            next_hung_check: Instant::now() + Duration::from_secs(1),
            config,
            shutting_down: false,
            observed_once: false,
        }
    }

    fn supervised(&self, daemon: Daemon) -> bool {
        self.config.daemon_enabled(daemon) && !(self.mode == Mode::Pm && daemon == Daemon::Pm)
    }

    /// pm steps aside while `cortex run` supervises the home.
    fn passive(&self) -> bool {
        self.mode == Mode::Pm && registry::foreground_seen(&self.home)
    }

    fn label(&self) -> &'static str {
        if self.mode == Mode::Pm { "pm" } else { "cortex run" }
    }

    /// Looks for daemons that started (by anyone: their PID file is locked) and watches them from
    /// then on. Called at start-up and when something under `run/` changed. At start-up, a daemon
    /// found dead after it had been ready (a stale PID file, its ready mark left behind, no stop
    /// intent) is restarted too.
    pub(crate) fn observe(&mut self) {
        let mut changed = false;
        for i in 0..self.entries.len() {
            let name = self.entries[i].daemon;
            if !self.supervised(self.entries[i].daemon) || matches!(self.entries[i].phase, Phase::Up { .. }) {
                continue;
            }
            // By the PID file's lock alone: this runs at every change under `run/`, and a daemon
            // whose PID file was removed writes it again within a second (a change: looked at
            // again then), where a look for a deleted file's holder reads `/proc` (~10 ms for
            // each daemon not running: pm idle used 0.13–0.23 % of a core, now ≤ 0.033 %).
            match pidfile::status_quick(&self.home, name) {
                Ok(PidStatus::Running(pid)) if pid != 0 => {
                    let e = &mut self.entries[i];
                    if matches!(e.phase, Phase::Failed | Phase::Down { .. }) {
                        // Someone (the operator) started it: its history starts over.
                        e.track.reset();
                        changed = true;
                    }
                    e.phase = Phase::Up { pid, since: Instant::now(), child: false };
                    self.watch_lock(name, pid);
                }
                Ok(PidStatus::Stale(Some(pid)))
                    if !self.observed_once
                        && matches!(self.entries[i].phase, Phase::Idle)
                        && read_mark(&self.home, name).is_some_and(|m| m.pid == pid && m.ready_at.is_some()) =>
                {
                    let cause = Cause {
                        text: "found dead (stale PID file, its ready mark left behind)".into(),
                        old_pid: Some(pid),
                        ..Cause::default()
                    };
                    self.died(i, cause, None);
                }
                _ => {}
            }
        }
        self.observed_once = true;
        if changed {
            self.save();
        }
    }

    /// A thread blocks in `flock` on the PID file; it returns the moment the daemon dies.
    fn watch_lock(&self, name: Daemon, pid: u32) {
        // The inode the daemon holds (its PID file, or a deleted one it still holds).
        let held = pidfile::open_held(&self.home, name, pid);
        let (notes, waker) = (self.notes.clone(), self.waker.clone());
        let _ = std::thread::Builder::new().name(format!("watch-{name}")).spawn(move || {
            match held {
                Some(f) => {
                    let _ = f.lock();
                    let _ = f.unlock();
                }
                // Between a removed PID file and the daemon writing it again: look again in a
                // second (rare; the lock is not reachable meanwhile).
                None => std::thread::sleep(Duration::from_secs(1)),
            }
            notes.lock().unwrap_or_else(|e| e.into_inner()).push(Note::LockFree { name, pid });
            let _ = waker.send(Wake::Message(NOTE.into()));
        });
    }

    /// A thread waits for the child to exit and reports its status.
    fn watch_child(&self, name: Daemon, mut child: Child) {
        let pid = child.id();
        let (notes, waker) = (self.notes.clone(), self.waker.clone());
        let _ = std::thread::Builder::new().name(format!("reap-{name}")).spawn(move || {
            let status = child.wait().ok();
            notes.lock().unwrap_or_else(|e| e.into_inner()).push(Note::Exited { name, pid, status });
            let _ = waker.send(Wake::Message(NOTE.into()));
        });
    }

    /// Handles what the watcher threads reported.
    pub(crate) fn handle_notes(&mut self) {
        let notes: Vec<Note> = std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()));
        for note in notes {
            let (name, pid) = match &note {
                Note::Exited { name, pid, .. } | Note::LockFree { name, pid } => (*name, *pid),
            };
            let Some(i) = self.entries.iter().position(|e| e.daemon == name) else { continue };
            let Phase::Up { pid: up_pid, since, child } = self.entries[i].phase else { continue };
            if up_pid != pid {
                continue;
            }
            let cause = match note {
                Note::Exited { status: Some(st), .. } => {
                    use std::os::unix::process::ExitStatusExt;
                    Cause {
                        text: process::describe_exit(st),
                        exit_code: st.code(),
                        signal: st.signal(),
                        old_pid: Some(pid),
                    }
                }
                Note::Exited { status: None, .. } => {
                    Cause { text: "exited (status unknown)".into(), old_pid: Some(pid), ..Cause::default() }
                }
                Note::LockFree { .. } => {
                    if child {
                        // Our own child: its exit status follows from the reaper thread.
                        continue;
                    }
                    if matches!(pidfile::status(&self.home, name), Ok(PidStatus::Running(p)) if p == pid) {
                        self.watch_lock(name, pid);
                        continue;
                    }
                    // Not our child, so no exit status; its mark tells a clean exit (the daemon
                    // removes it) from a kill, and a crash from a start that never got ready
                    // (which is the business of whoever started it).
                    let text = match read_mark(&self.home, name).filter(|m| m.pid == pid) {
                        Some(m) if m.ready_at.is_some() => "died abruptly (killed or crashed; it left its mark behind)",
                        Some(_) => {
                            self.entries[i].phase = Phase::Idle;
                            continue;
                        }
                        None => "exited on its own (clean shutdown not asked for by cortex stop)",
                    };
                    Cause { text: text.into(), old_pid: Some(pid), ..Cause::default() }
                }
            };
            self.died(i, cause, Some(since.elapsed()));
        }
    }

    /// A daemon went down: restart it later per the policy, or give up.
    fn died(&mut self, i: usize, cause: Cause, uptime: Option<Duration>) {
        let name = self.entries[i].daemon;
        let pid = cause.old_pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        if self.shutting_down || !self.supervised(self.entries[i].daemon) {
            self.entries[i].phase = Phase::Idle;
            return;
        }
        if registry::stop_intent(&self.home, name).is_some() {
            tracing::info!("{name} (PID {pid}) stopped by the operator; leaving it stopped");
            self.entries[i].phase = Phase::Idle;
            return;
        }
        // Stopped by cortex (`cortex restart` stops, then starts it again, removing the intent
        // before this supervisor may have seen the exit): asked for, not a crash.
        if cause.old_pid.is_some_and(|p| registry::stop_asked(&self.home, name, p)) {
            tracing::info!("{name} (PID {pid}) stopped by cortex (restart or stop); not restarting it");
            self.entries[i].phase = Phase::Idle;
            return;
        }
        if self.passive() {
            self.entries[i].phase = Phase::Idle;
            return;
        }
        let now = chrono::Utc::now();
        let decision = self.entries[i].track.on_death(&self.policy, now, uptime);
        let restart_in = match &decision {
            Decision::Restart { after, .. } => Some(after.as_secs_f64()),
            Decision::GiveUp { .. } => None,
        };
        let _ = self.store.emit(
            EventKind::DaemonExited,
            Severity::Warning,
            format!("{name} (PID {pid}) went down: {}", cause.text),
            serde_json::json!({"daemon": name, "pid": cause.old_pid, "cause": cause.text,
                "exit_code": cause.exit_code, "signal": cause.signal,
                "uptime_seconds": uptime.map(|u| u.as_secs_f64()), "restart_in_seconds": restart_in}),
        );
        self.entries[i].last_cause = Some(cause.text.clone());
        match decision {
            Decision::Restart { after, attempt } => {
                tracing::warn!("{name} went down ({}); restart {attempt} in {:.1}s", cause.text, after.as_secs_f64());
                self.entries[i].phase = Phase::Down { at: Instant::now() + after, cause };
            }
            Decision::GiveUp { restarts } => {
                self.entries[i].phase = Phase::Failed;
                // The state first, so whoever reads the event sees FAILED in `cortex status`.
                self.save();
                let msg = format!(
                    "{name} gave up after {restarts} restarts (start limit {} in {}s); last cause: {}; \
                     fix it, then `cortex start {name}`",
                    self.policy.start_limit,
                    self.policy.start_limit_window.as_secs(),
                    cause.text
                );
                tracing::error!("{msg}");
                let _ = self.store.emit(
                    EventKind::DaemonFailed,
                    Severity::Critical,
                    msg,
                    serde_json::json!({"daemon": name, "restarts": restarts, "cause": cause.text,
                        "start_limit": self.policy.start_limit,
                        "window_seconds": self.policy.start_limit_window.as_secs()}),
                );
            }
        }
        self.save();
    }

    /// Runs what is due: restarts whose backoff has passed, and the hung check.
    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        for i in 0..self.entries.len() {
            if let Phase::Down { at, .. } = self.entries[i].phase
                && at <= now
            {
                self.restart_now(i);
            }
        }
        if Instant::now() >= self.next_hung_check {
            self.check_hung();
            self.next_hung_check =
                Instant::now() + Duration::from_secs(self.config.daemons.heartbeat_interval_seconds.max(1));
        }
    }

    /// When the loop must wake next.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let restarts = self.entries.iter().filter_map(|e| match e.phase {
            Phase::Down { at, .. } => Some(at),
            _ => None,
        });
        restarts.chain(std::iter::once(self.next_hung_check)).min()
    }

    fn restart_now(&mut self, i: usize) {
        let name = self.entries[i].daemon;
        let Phase::Down { cause, .. } = std::mem::replace(&mut self.entries[i].phase, Phase::Idle) else { return };
        let lock_wait = super::control::ready_timeout(&self.config) + super::control::stop_timeout(&self.config);
        let _guard = match registry::lock_daemon(&self.home, name, lock_wait + Duration::from_secs(5)) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("cannot restart {name} now: {e}");
                self.entries[i].phase = Phase::Down { at: Instant::now() + self.policy.backoff_initial, cause };
                return;
            }
        };
        if registry::stop_intent(&self.home, name).is_some() || self.passive() || self.shutting_down {
            return;
        }
        match pidfile::status(&self.home, name) {
            Ok(PidStatus::Running(pid)) => {
                // Someone else started it meanwhile; watch it once it is ready.
                if process::is_ready(&self.home, name, pid) {
                    self.entries[i].phase = Phase::Up { pid, since: Instant::now(), child: false };
                    self.watch_lock(name, pid);
                }
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("{name}: {e}"),
        }
        let detach = if self.mode == Mode::Pm { Detach::Session } else { Detach::Group };
        let now = crate::base::clock::now();
        self.entries[i].track.on_restart(now);
        self.entries[i].last_restart_at = Some(now);
        let attempt = self.entries[i].track.consecutive;
        match self.launch(name, detach) {
            Ok(pid) => {
                self.entries[i].phase = Phase::Up { pid, since: Instant::now(), child: true };
                let msg = format!(
                    "{} restarted {name} (PID {pid}, was {}): {}",
                    self.label(),
                    cause.old_pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    cause.text
                );
                tracing::info!("{msg}");
                let _ = self.store.emit(
                    EventKind::DaemonRestarted,
                    Severity::Warning,
                    msg,
                    serde_json::json!({"daemon": name, "pid": pid, "old_pid": cause.old_pid, "cause": cause.text,
                        "exit_code": cause.exit_code, "signal": cause.signal, "attempt": attempt,
                        "restarts": self.entries[i].track.restarts, "by": self.label()}),
                );
                self.save();
            }
            Err(text) => {
                let cause = Cause { text: format!("restart failed: {text}"), ..Cause::default() };
                self.died(i, cause, None);
            }
        }
    }

    /// Spawns `name`, waits until it is ready and hands the child to a reaper thread.
    fn launch(&self, name: Daemon, detach: Detach) -> Result<u32, String> {
        let mut child = process::spawn(&self.home, name, detach).map_err(|e| e.to_string())?;
        match process::wait_ready(&self.home, name, &mut child, super::control::ready_timeout(&self.config)) {
            Ok(()) => {
                let pid = child.id();
                self.watch_child(name, child);
                Ok(pid)
            }
            Err(nr) => {
                process::terminate_child(&mut child, super::control::stop_timeout(&self.config));
                Err(nr.to_string())
            }
        }
    }

    /// Kills and restarts daemons whose heartbeat mark is older than `hung_after_seconds`.
    fn check_hung(&mut self) {
        if self.passive() {
            return;
        }
        let limit = self.config.supervisor.hung_after_seconds as f64;
        for i in 0..self.entries.len() {
            let Phase::Up { pid, since, .. } = self.entries[i].phase else { continue };
            let name = self.entries[i].daemon;
            let Some(age) = super::status::heartbeat_age(&self.home, name, pid) else { continue };
            if age <= limit {
                continue;
            }
            let cause = Cause {
                text: format!("missed heartbeat (last {age:.0}s ago, limit {limit:.0}s)"),
                old_pid: Some(pid),
                ..Cause::default()
            };
            tracing::warn!("{name} (PID {pid}) is hung: {}", cause.text);
            self.entries[i].phase = Phase::Idle;
            let timeout = super::control::stop_timeout(&self.config);
            match process::stop_pid(&self.home, name, pid, timeout, false) {
                Ok((_, guard)) => {
                    let _ = std::fs::remove_file(self.home.daemon_mark(name));
                    drop(guard);
                }
                Err(e) => tracing::error!("cannot stop hung {name}: {e}"),
            }
            self.died(i, cause, Some(since.elapsed()));
        }
    }

    /// `cortex run` start-up: every supervised daemon in start order, as a child (or watched, if
    /// it already runs). Returns the daemons that did not come up (they are retried per policy).
    pub(crate) fn start_all(&mut self) -> Vec<(String, String)> {
        let mut failures = Vec::new();
        for i in 0..self.entries.len() {
            let name = self.entries[i].daemon;
            if !self.supervised(self.entries[i].daemon) || registry::stop_intent(&self.home, name).is_some() {
                continue;
            }
            if let Ok(PidStatus::Running(pid)) = pidfile::status(&self.home, name) {
                self.entries[i].phase = Phase::Up { pid, since: Instant::now(), child: false };
                self.watch_lock(name, pid);
                continue;
            }
            match self.launch(name, Detach::Group) {
                Ok(pid) => {
                    self.entries[i].track.reset();
                    self.entries[i].phase = Phase::Up { pid, since: Instant::now(), child: true };
                }
                Err(text) => {
                    failures.push((name.to_string(), text.clone()));
                    self.died(i, Cause { text: format!("start failed: {text}"), ..Cause::default() }, None);
                }
            }
        }
        self.save();
        failures
    }

    /// `cortex run` shutdown: stops every daemon of the home in reverse start order.
    pub(crate) fn stop_all(&mut self) {
        self.shutting_down = true;
        let timeout = super::control::stop_timeout(&self.config);
        for i in (0..self.entries.len()).rev() {
            let name = self.entries[i].daemon;
            self.entries[i].phase = Phase::Idle;
            if let Ok(PidStatus::Running(pid)) = pidfile::status(&self.home, name)
                && pid != 0
            {
                match process::stop_pid(&self.home, name, pid, timeout, false) {
                    Ok((_, guard)) => {
                        process::remove_leftovers(&self.home, name);
                        drop(guard);
                    }
                    Err(e) => tracing::error!("cannot stop {name}: {e}"),
                }
            }
        }
    }

    /// Writes the policy's state to `run/supervisor-state.json`.
    fn save(&self) {
        let label = self.label().to_string();
        let records: Vec<(Daemon, DaemonRecord)> = self
            .entries
            .iter()
            .filter(|e| self.supervised(e.daemon))
            .map(|e| {
                let next = match &e.phase {
                    Phase::Down { at, .. } => {
                        let left = at.saturating_duration_since(Instant::now());
                        Some(crate::base::clock::now() + chrono::Duration::from_std(left).unwrap_or_default())
                    }
                    _ => None,
                };
                let failed = matches!(e.phase, Phase::Failed);
                let rec = DaemonRecord {
                    restarts: e.track.restarts,
                    failed,
                    failed_at: failed.then(crate::base::clock::now),
                    last_cause: e.last_cause.clone(),
                    last_restart_at: e.last_restart_at,
                    next_restart_at: next,
                };
                (e.daemon, rec)
            })
            .collect();
        let res = registry::update_state(&self.home, |s| {
            s.supervisor = Some(label);
            s.pid = Some(std::process::id());
            for (name, mut rec) in records {
                if let Some(old) = s.daemons.get(name.as_str())
                    && old.failed
                    && rec.failed
                {
                    rec.failed_at = old.failed_at;
                }
                if rec == DaemonRecord::default() {
                    s.daemons.remove(name.as_str());
                } else {
                    s.daemons.insert(name.to_string(), rec);
                }
            }
        });
        if let Err(e) = res {
            tracing::warn!("cannot write {}: {e}", self.home.supervisor_state().display());
        }
    }
}
