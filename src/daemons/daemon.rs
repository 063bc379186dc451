//! The daemon skeleton every `cortex-*` binary runs on: take the PID file, set up logging,
//! handle signals, record `daemon_started`/`daemon_stopped`, keep a heartbeat mark in
//! `run/<name>.state.json`, and give the daemon's loop one place to wait for anything that
//! should wake it (signals, file changes, child exits, messages from its own threads, or its next
//! deadline) — no fixed sleeps (invariant 5).

use crate::base::clock::Timestamp;
use crate::base::daemon_name::Daemon;
use crate::base::error::{Error, Result};
use crate::base::wake::Wake;
use crate::store::Store;
use crate::store::config::{Config, parse_size};
use crate::store::daemon_mark::DaemonMark;
use crate::store::events::{EventKind, Severity};
use crate::store::home::Home;
use crate::store::pidfile::PidFile;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// What a running daemon has at hand.
pub struct DaemonContext {
    pub daemon: Daemon,
    pub home: Home,
    pub config: Config,
    pub store: Store,
    pub started_at: Timestamp,
    tx: Sender<Wake>,
    rx: Receiver<Wake>,
    log: crate::store::rotation::LogFile,
    ready_at: Option<Timestamp>,
    last_loop_at: Timestamp,
    next_mark: Instant,
    mark_every: Duration,
    stopping: bool,
    _watchers: Vec<crate::base::watch::Watcher>,
    /// The pace of the watches made from now on ([`DaemonContext::pace_watches`]).
    watch_pace: Duration,
    /// Held for the daemon's life; taken out only to be released last, after the log.
    pidfile: Option<PidFile>,
    /// When to check next that `run/<name>.pid` still names the locked file.
    next_pid_check: Instant,
}

/// One of a daemon's watches, for [`DaemonContext::rewatch`].
#[derive(Debug, Clone, Copy)]
pub struct WatchId(usize);

/// The pace of the watches of the daemons off the task path (integration, heartbeat,
/// failure-pattern, auto-fix, pm; [`DaemonContext::pace_watches`]): they see a change at most this
/// late, and a busy fleet's stream of file events wakes each of them at most 20 times a second.
pub const OFF_PATH_PACE: Duration = Duration::from_millis(50);

impl DaemonContext {
    /// A sender the daemon's other threads use to wake the loop.
    pub fn waker(&self) -> Sender<Wake> {
        self.tx.clone()
    }

    /// True once SIGTERM/SIGINT has been received.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// Wakes the loop whenever something under one of `paths` changes (recursively for
    /// directories; [`crate::base::watch`]: changes only, never reads). Changes to our own temporary
    /// and lock files are ignored.
    pub fn watch(&mut self, paths: &[PathBuf]) -> Result<WatchId> {
        self.watch_at(paths, crate::base::watch::Depth::Recursive)
    }

    /// Replaces the watch `id` by one of `paths` (a file replaced by a new one, e.g. a rotated log,
    /// is watched by its inode): the old watch's thread and inotify descriptor end with it.
    pub fn rewatch(&mut self, id: WatchId, paths: &[PathBuf]) -> Result<()> {
        let watcher = self.new_watcher(paths, crate::base::watch::Depth::Recursive)?;
        self._watchers[id.0] = watcher;
        Ok(())
    }

    /// [`DaemonContext::watch`] of directories' own entries only (pm: `run/`, not the
    /// dispatches' heartbeat files below it).
    pub fn watch_flat(&mut self, paths: &[PathBuf]) -> Result<WatchId> {
        self.watch_at(paths, crate::base::watch::Depth::Flat)
    }

    fn watch_at(&mut self, paths: &[PathBuf], depth: crate::base::watch::Depth) -> Result<WatchId> {
        let watcher = self.new_watcher(paths, depth)?;
        self._watchers.push(watcher);
        Ok(WatchId(self._watchers.len() - 1))
    }

    /// Paces the watches made from now on ([`crate::base::watch::watch_paced`]): their changes
    /// reach the loop at most once per `pace`, a burst's in one wake-up. For the daemons off the
    /// task path, which let a burst settle before looking anyway: in a busy fleet each file event
    /// otherwise cost their watch thread a wake-up (a third of their CPU).
    pub fn pace_watches(&mut self, pace: Duration) {
        self.watch_pace = pace;
    }

    fn new_watcher(&self, paths: &[PathBuf], depth: crate::base::watch::Depth) -> Result<crate::base::watch::Watcher> {
        for p in paths {
            crate::store::atomic::create_dir_all(if p.is_dir() || p.extension().is_none() {
                p
            } else {
                p.parent().unwrap_or(p)
            })?;
        }
        let tx = self.tx.clone();
        crate::base::watch::watch_paced(paths, depth, self.watch_pace, move |p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if crate::store::atomic::is_temp_name(name) || name.ends_with(".lock") {
                return true;
            }
            tx.send(Wake::Changed(p)).is_ok()
        })
    }

    /// Records that the daemon is ready (its loop is about to run); `cortex start` waits for it.
    pub fn mark_ready(&mut self) -> Result<()> {
        if test_hook(TEST_NEVER_READY, self.daemon.as_str()) {
            return Ok(());
        }
        self.ready_at = Some(chrono::Utc::now());
        self.write_mark()
    }

    fn write_mark(&mut self) -> Result<()> {
        let mark = DaemonMark {
            name: self.daemon.to_string(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at,
            ready_at: self.ready_at,
            heartbeat_at: crate::base::clock::now(),
            last_loop_at: self.last_loop_at,
        };
        let bytes = serde_json::to_vec(&mark)?;
        crate::store::atomic::write_replace_volatile(&self.home.daemon_mark(self.daemon), &bytes)?;
        self.next_mark = Instant::now() + self.mark_every;
        // Writes work again: report any that failed for lack of space meanwhile.
        crate::store::events::record_outage(&self.home, self.daemon.as_str());
        Ok(())
    }

    /// Writes the PID file again when it was removed or replaced (within a second: the check is
    /// one `lstat`, on its own timer deadline in [`DaemonContext::wait`]).
    fn check_pidfile(&mut self) {
        self.next_pid_check = Instant::now() + crate::store::pidfile::CHECK_EVERY;
        if let Some(pf) = self.pidfile.as_mut() {
            match pf.refresh() {
                Ok(true) => tracing::warn!("{} was removed or replaced; written again", pf.path().display()),
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot write the PID file again: {e}"),
            }
        }
    }

    /// Waits for the next reason to wake, at most until `deadline`. SIGHUP (reopen the log),
    /// the heartbeat mark and the PID file check are handled here, so a daemon whose loop hangs
    /// stops heartbeating.
    pub fn wait(&mut self, deadline: Option<Instant>) -> Wake {
        self.last_loop_at = chrono::Utc::now();
        loop {
            if Instant::now() >= self.next_mark
                && let Err(e) = self.write_mark()
            {
                tracing::warn!("cannot write heartbeat mark: {e}");
                self.next_mark = Instant::now() + self.mark_every;
            }
            if Instant::now() >= self.next_pid_check {
                self.check_pidfile();
            }
            let own = self.next_mark.min(self.next_pid_check);
            let until = match deadline {
                Some(d) => d.min(own),
                None => own,
            };
            let timeout = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(timeout) {
                Ok(Wake::Message(m)) if m == HUP => match self.log.reopen() {
                    Ok(()) => tracing::info!("log reopened on SIGHUP"),
                    Err(e) => eprintln!("cannot reopen log: {e}"),
                },
                Ok(w) => {
                    if let Wake::Shutdown(_) = w {
                        self.stopping = true;
                    }
                    return w;
                }
                Err(RecvTimeoutError::Timeout) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Wake::Deadline;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Wake::Shutdown(0),
            }
        }
    }

    /// Waits until `until` without waking for each message meanwhile, then returns the first
    /// one pending as [`DaemonContext::wait`] would (the rest: [`DaemonContext::drain_pending`]),
    /// or `Wake::Deadline`. For a loop that already has a pass due at `until` (a burst of file
    /// changes settling): more changes cannot make it sooner, and waking for each one costs a
    /// thread switch per file event (a third of the integration daemon's CPU in a busy fleet).
    /// `until` must be near (a settling time): a signal waits until then too.
    pub fn wait_settling(&mut self, until: Instant) -> Wake {
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        self.wait(Some(Instant::now()))
    }

    /// The loop of a daemon that acts on whatever woke it: `step` does a pass and returns its next
    /// deadline; it runs again on any wake-up (coalesced) until a shutdown signal. What the daemon
    /// started keeps running after it returns (the worker's tasks, Slurm's jobs): the next
    /// instance adopts them from their records.
    pub fn run_steps(&mut self, mut step: impl FnMut() -> Option<Instant>) -> Result<()> {
        loop {
            let deadline = step();
            if let Wake::Shutdown(_) = self.wait(deadline) {
                return Ok(());
            }
            if self.drain_pending().iter().any(|w| matches!(w, Wake::Shutdown(_))) {
                return Ok(());
            }
        }
    }

    /// Drains wake-ups that are already queued (after handling one, to coalesce bursts).
    pub fn drain_pending(&mut self) -> Vec<Wake> {
        let mut out = Vec::new();
        while let Ok(w) = self.rx.try_recv() {
            match w {
                Wake::Message(m) if m == HUP => {
                    let _ = self.log.reopen();
                }
                Wake::Shutdown(s) => {
                    self.stopping = true;
                    out.push(Wake::Shutdown(s));
                }
                other => out.push(other),
            }
        }
        out
    }
}

const HUP: &str = "\u{0}sighup";

/// Test-only hooks. Each variable holds a comma-separated list of daemon names it applies to, so
/// the supervisor's tests can drive real daemon processes into the failure modes operators meet:
/// one that ignores SIGTERM (only SIGKILL stops it), one that never becomes ready, and one that
/// logs numbered lines as fast as it can (log rotation under load). Unset in normal use.
pub const TEST_IGNORE_SIGTERM: &str = "CORTEX_TEST_IGNORE_SIGTERM";
pub const TEST_NEVER_READY: &str = "CORTEX_TEST_NEVER_READY";
pub const TEST_LOG_FLOOD: &str = "CORTEX_TEST_LOG_FLOOD";

/// True when the test hook `var` names `daemon`.
pub fn test_hook(var: &str, daemon: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v.split(',').any(|n| n.trim() == daemon))
}

fn spawn_signal_thread(tx: Sender<Wake>, ignore_sigterm: bool) -> Result<()> {
    use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGCHLD])
        .map_err(|e| Error::system("install signal handlers", e))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let wake = match sig {
                    SIGTERM if ignore_sigterm => continue,
                    SIGHUP => Wake::Message(HUP.into()),
                    SIGCHLD => Wake::ChildExited,
                    s => Wake::Shutdown(s),
                };
                if tx.send(wake).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Error::system("start the signal thread", e))?;
    Ok(())
}

/// Runs a daemon: the whole life of a `cortex-<name>` process. `body` runs the daemon's loop and
/// returns when `ctx.wait` reports `Wake::Shutdown`. Returns the process exit code.
pub fn run(daemon: Daemon, body: impl FnOnce(&mut DaemonContext) -> Result<()>) -> std::process::ExitCode {
    let name = daemon.as_str();
    let args = DaemonArgs::parse_env();
    match run_inner(daemon, args, body) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The log has already recorded it (`run_inner` logs while its log guard lives; after
            // that guard is dropped, a tracing event has no writer left and tracing-subscriber
            // complains on stderr instead).
            eprintln!("cortex-{name}: {}", crate::base::text::safe(&e.to_string()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The arguments every daemon takes: `--home DIR`.
#[derive(Debug, Default)]
pub struct DaemonArgs {
    pub home: Option<PathBuf>,
}

impl DaemonArgs {
    fn parse_env() -> DaemonArgs {
        let mut args = DaemonArgs::default();
        let mut it = std::env::args_os().skip(1);
        while let Some(a) = it.next() {
            if a == "--home" {
                args.home = it.next().map(PathBuf::from);
            } else if let Some(s) = a.to_str().and_then(|s| s.strip_prefix("--home=")) {
                args.home = Some(PathBuf::from(s));
            } else if a == "--help" || a == "-h" {
                println!(
                    "usage: {} [--home DIR]\nRuns one Cortex daemon in the foreground; `cortex start` runs it detached.",
                    std::env::args().next().unwrap_or_default()
                );
                std::process::exit(0);
            } else if a == "--version" {
                println!("{}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
        }
        args
    }
}

fn run_inner(daemon: Daemon, args: DaemonArgs, body: impl FnOnce(&mut DaemonContext) -> Result<()>) -> Result<()> {
    let name = daemon.as_str();
    let home = Home::resolve(args.home.as_deref())?;
    let config = Config::load(&home)?;
    let pidfile = PidFile::acquire(&home, daemon, Duration::from_millis(500))?;
    let max_size = parse_size(&config.logs.max_size).unwrap_or(10 * 1024 * 1024);
    let log = crate::daemons::tracing_setup::init_daemon(
        &home.daemon_log(daemon),
        &config.logs.level,
        max_size,
        config.logs.keep,
    )?;
    log.file.set_rotate_lock(home.lock_file(crate::store::LockName::Logs));
    let store = Store::new(home.clone()).with_lock_timeout(config.lock_timeout()).with_source(name);
    let (tx, rx) = mpsc::channel();
    spawn_signal_thread(tx.clone(), test_hook(TEST_IGNORE_SIGTERM, name))
        .inspect_err(|e| tracing::error!("{name} daemon cannot start: {e}"))?;
    if test_hook(TEST_LOG_FLOOD, name) {
        std::thread::spawn(|| {
            for seq in 0u64.. {
                tracing::info!("flood line seq={seq}");
            }
        });
    }
    let now = chrono::Utc::now();
    let mut ctx = DaemonContext {
        daemon,
        home: home.clone(),
        mark_every: Duration::from_secs(config.daemons.heartbeat_interval_seconds.max(1)),
        config,
        store,
        started_at: now,
        tx,
        rx,
        log: log.file.clone(),
        ready_at: None,
        last_loop_at: now,
        next_mark: Instant::now(),
        stopping: false,
        _watchers: Vec::new(),
        watch_pace: Duration::ZERO,
        pidfile: Some(pidfile),
        next_pid_check: Instant::now() + crate::store::pidfile::CHECK_EVERY,
    };
    ctx.write_mark().inspect_err(|e| tracing::error!("{name} daemon cannot start: {e}"))?;
    tracing::info!(pid = std::process::id(), home = %home.root().display(), "{name} daemon starting");
    let _ = ctx.store.emit(
        EventKind::DaemonStarted,
        Severity::Info,
        format!("{name} daemon started (PID {})", std::process::id()),
        serde_json::json!({"daemon": name, "pid": std::process::id()}),
    );
    let result = body(&mut ctx);
    match &result {
        Ok(()) => {
            tracing::info!("{name} daemon stopped");
            let _ = ctx.store.emit(
                EventKind::DaemonStopped,
                Severity::Info,
                format!("{name} daemon stopped"),
                serde_json::json!({"daemon": name, "pid": std::process::id()}),
            );
        }
        Err(e) => {
            tracing::error!("{name} daemon failed: {e}");
            let _ = ctx.store.emit(
                EventKind::DaemonStopped,
                Severity::Error,
                format!("{name} daemon stopped on error: {e}"),
                serde_json::json!({"daemon": name, "pid": std::process::id(), "error": e.to_string()}),
            );
        }
    }
    let _ = std::fs::remove_file(home.daemon_mark(daemon));
    let pidfile = ctx.pidfile.take();
    drop(ctx);
    drop(log);
    drop(pidfile);
    result
}

/// The ids of `entries` whose deadline (None: none, or already being acted on) has passed at
/// `now`: the timeouts a daemon's timer pass acts on (the worker's processes, Slurm's jobs).
pub(crate) fn due<'a, T: 'a>(
    entries: impl IntoIterator<Item = (&'a String, &'a T)>,
    now: std::time::Instant,
    deadline: impl Fn(&T) -> Option<std::time::Instant>,
) -> Vec<String> {
    entries.into_iter().filter(|(_, v)| deadline(v).is_some_and(|d| now >= d)).map(|(id, _)| id.clone()).collect()
}
