//! Daemon processes: spawning one (detached in its own session, or as a child in its own process
//! group), waiting until it is ready, proving a PID is this home's daemon before anything
//! signals it (it holds the PID file's lock per the kernel, runs `cortex-<daemon>`, has this
//! home; signals then go through a pidfd), stopping it (SIGTERM, a deadline on its PID-file
//! lock, then SIGKILL), the running worker's task process groups, and what /proc says about a
//! process.

use crate::base::daemon_name::Daemon;
use crate::base::error::{Error, Result};
use crate::base::procfs;
use crate::store::daemon_mark::read_mark;
use crate::store::home::Home;
use crate::store::lock::{LockGuard, lock_pid_file};
use crate::store::pidfile::{self, PidStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How a spawned daemon is detached from whoever started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// A new session (`cortex start`, pm): no controlling terminal, outlives its starter.
    Session,
    /// Its own process group under the starter (`cortex run`, which reaps and stops it).
    Group,
}

/// Starts the daemon's binary for `home`: stdin from /dev/null, stdout and stderr appended to its
/// log. Returns the child (the caller reaps it or lets init adopt it).
pub fn spawn(home: &Home, daemon: Daemon, detach: Detach) -> Result<Child> {
    let bin = super::registry::binary(daemon)?;
    let log_path = home.daemon_log(daemon);
    // Never through a link planted at the log's name, nor one at a directory above it.
    let log = crate::store::open::append(&log_path)?;
    let err = log.try_clone().map_err(|e| Error::io(&log_path, "duplicate the descriptor of", e))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("--home")
        .arg(home.root())
        .current_dir(home.root())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        // The daemons never talk to systemd; only the supervisor does.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    // A daemon started from inside a task (`cortex restart` in a task's command) is no process of
    // that task: without these it would be taken for one (`domain::task::processes`).
    for var in crate::domain::task::processes::TASK_ENV_VARS {
        cmd.env_remove(var);
    }
    match detach {
        Detach::Group => {
            cmd.process_group(0);
        }
        Detach::Session => {
            // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
            }
        }
    }
    cmd.spawn().map_err(|e| Error::io(&bin, "start", e))
}

/// Why a started daemon did not become ready.
#[derive(Debug, Clone)]
pub enum NotReady {
    Exited(ExitStatus),
    Timeout(Duration),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Exited(st) => write!(f, "exited during start-up ({})", describe_exit(*st)),
            NotReady::Timeout(d) => write!(f, "not ready after {:.1}s", d.as_secs_f64()),
        }
    }
}

/// True when `daemon` runs as `pid` and has marked itself ready.
pub fn is_ready(home: &Home, daemon: Daemon, pid: u32) -> bool {
    matches!(pidfile::status(home, daemon), Ok(PidStatus::Running(p)) if p == pid)
        && read_mark(home, daemon).is_some_and(|m| m.pid == pid && m.ready_at.is_some())
}

/// Waits until the child is ready (PID file locked by it and a ready mark), it exits, or the
/// timeout passes. Wakes on changes under `run/` (where both appear); a short fallback re-check
/// covers an exit that changes no file.
pub fn wait_ready(home: &Home, daemon: Daemon, child: &mut Child, timeout: Duration) -> Result<(), NotReady> {
    use notify::Watcher;
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel::<()>();
    let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.send(());
    });
    let _watcher = watcher.and_then(|mut w| w.watch(&home.run_dir(), notify::RecursiveMode::NonRecursive).map(|()| w));
    let pid = child.id();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(NotReady::Exited(st));
        }
        if is_ready(home, daemon, pid) {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(NotReady::Timeout(timeout));
        }
        let _ = rx.recv_timeout((deadline - now).min(Duration::from_millis(100)));
    }
}

/// Stops a child that failed to start: SIGTERM, `grace`, then SIGKILL; reaps it.
pub fn terminate_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = kill(pid, Signal::SIGKILL);
    child.wait().ok()
}

/// How a running daemon was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited after SIGTERM within the timeout.
    Graceful,
    /// It outlived the timeout and was killed.
    KilledAfterTimeout,
    /// `--force`: killed at once.
    Killed,
}

/// A process proven to be `daemon` of this home, held by a pidfd so a signal can never reach
/// another process that reused the PID.
pub struct DaemonProcess {
    pub pid: u32,
    pidfd: std::os::fd::OwnedFd,
}

impl DaemonProcess {
    /// Sends `sig` to the proven process (through its pidfd).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal reads only its arguments; the pidfd is ours and open.
        let rc = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig as nix::libc::c_int,
                std::ptr::null::<nix::libc::siginfo_t>(),
                0,
            )
        };
        match rc {
            0 => Ok(()),
            _ => match std::io::Error::last_os_error() {
                e if e.raw_os_error() == Some(nix::libc::ESRCH) => Ok(()),
                e => Err(Error::system(format!("send {} to PID {}", sig.as_str(), self.pid), e)),
            },
        }
    }
}

/// The `--home` a process was started with (`--home DIR` or `--home=DIR` in its command line),
/// else its `CORTEX_HOME`/`COMMIT_RELAY_HOME`, else its working directory.
fn process_home(pid: i32) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let args = procfs::cmdline(pid)?;
    let os = |b: &[u8]| std::ffi::OsStr::from_bytes(b).to_os_string();
    for (i, a) in args.iter().enumerate() {
        if a == b"--home" {
            return args.get(i + 1).map(|v| os(v).into());
        }
        if let Some(v) = a.strip_prefix(b"--home=") {
            return Some(os(v).into());
        }
    }
    let environ = procfs::environ(pid).unwrap_or_default();
    for var in ["CORTEX_HOME", "COMMIT_RELAY_HOME"] {
        if let Some(v) = procfs::env_var(&environ, var) {
            return Some(os(v).into());
        }
    }
    procfs::cwd(pid)
}

/// Proves that `pid` is `daemon` of this home before anything signals it: it holds the daemon's
/// PID-file lock (the kernel's lock table, on the file or a deleted predecessor), its
/// executable is the daemon's binary (`cortex-<daemon>`, also when an upgrade replaced the file),
/// and its home is this home. Refuses naming the PID and what did not match.
pub fn prove_daemon(home: &Home, daemon: Daemon, pid: u32) -> Result<DaemonProcess> {
    let refuse = |why: String| Err(Error::refused(format!("not signalling PID {pid} as {daemon}: {why}")));
    if pid == 0 {
        return Err(Error::refused(format!("{daemon} is starting (its PID file has no PID yet); try again")));
    }
    let pidfd = match procfs::pidfd(pid as i32) {
        Ok(fd) => fd,
        Err(e) => return refuse(format!("the process cannot be reached ({e})")),
    };
    let path = home.pid_file(daemon);
    let holders = pidfile::lock_holders(home, daemon);
    if !holders.iter().any(|h| h.pid == pid) {
        let who = if holders.is_empty() { "nobody".to_string() } else { crate::store::holders::describe(&holders) };
        return refuse(format!(
            "it does not hold the lock of {} (the kernel's lock table names {who})",
            path.display()
        ));
    }
    let want = daemon.binary_name();
    let proc_pid = i32::try_from(pid).unwrap_or(-1);
    let exe = procfs::exe(proc_pid);
    let exe_name = exe.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    let exe_name = exe_name.as_deref().map(|n| n.strip_suffix(" (deleted)").unwrap_or(n));
    if exe_name != Some(want.as_str()) {
        let shown = exe.map(|p| p.display().to_string()).unwrap_or_else(|| "unreadable".into());
        return refuse(format!("its executable is {shown}, not {want}"));
    }
    let ours = std::fs::canonicalize(home.root()).unwrap_or_else(|_| home.root().to_path_buf());
    let theirs = process_home(proc_pid);
    let theirs_canon = theirs.as_ref().map(|p| {
        let p = if p.is_relative() {
            procfs::cwd(proc_pid).map(|c| c.join(p)).unwrap_or_else(|| p.clone())
        } else {
            p.clone()
        };
        std::fs::canonicalize(&p).unwrap_or(p)
    });
    if theirs_canon.as_deref() != Some(ours.as_path()) {
        let shown = theirs.map(|p| p.display().to_string()).unwrap_or_else(|| "unknown".into());
        return refuse(format!("its home is {shown}, not {}", ours.display()));
    }
    Ok(DaemonProcess { pid, pidfd })
}

/// Stops the daemon running as `pid` (its PID file is locked by it): proves it is our daemon,
/// SIGTERM, wait on the PID file's lock until `timeout`, then SIGKILL (or SIGKILL at once with
/// `force`). Returns how it went and the PID file's lock, now held by the caller (so nothing
/// restarts it before the caller has tidied up).
pub fn stop_pid(home: &Home, daemon: Daemon, pid: u32, timeout: Duration, force: bool) -> Result<(Stopped, LockGuard)> {
    let target = prove_daemon(home, daemon, pid)?;
    let path = home.pid_file(daemon);
    let first = if force { Signal::SIGKILL } else { Signal::SIGTERM };
    target.signal(first)?;
    match lock_pid_file(&path, if force { Duration::from_secs(10) } else { timeout }) {
        Ok(g) => return Ok((if force { Stopped::Killed } else { Stopped::Graceful }, g)),
        Err(Error::LockTimeout { .. }) if !force => {}
        Err(e) => return Err(e),
    }
    target.signal(Signal::SIGKILL)?;
    match lock_pid_file(&path, Duration::from_secs(10)) {
        Ok(g) => Ok((Stopped::KilledAfterTimeout, g)),
        Err(Error::LockTimeout { .. }) => Err(Error::other(format!(
            "{daemon} (PID {pid}) still holds {} 10 s after SIGKILL; the process may be stuck in the kernel (D state)",
            path.display()
        ))),
        Err(e) => Err(e),
    }
}

/// Sends `sig` to the running `daemon` of this home once it is proven to be ours (the lock
/// holder the kernel names, its binary, its home). Returns its PID; Ok(None) when not running.
pub fn signal_daemon(home: &Home, daemon: Daemon, sig: Signal) -> Result<Option<u32>> {
    match pidfile::status(home, daemon)? {
        PidStatus::Running(pid) => {
            let p = prove_daemon(home, daemon, pid)?;
            p.signal(sig)?;
            Ok(Some(pid))
        }
        _ => Ok(None),
    }
}

/// Removes a daemon's PID file and mark after it stopped. The caller holds the PID file's lock
/// (or has just seen it unlocked), so this is only ever our own stale file.
pub fn remove_leftovers(home: &Home, daemon: Daemon) {
    let _ = std::fs::remove_file(home.pid_file(daemon));
    let _ = std::fs::remove_file(home.daemon_mark(daemon));
}

/// Says how a process ended: `exit code 1`, `signal 9 (SIGKILL)`.
pub fn describe_exit(st: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => {
            let name = Signal::try_from(s).map(|s| s.as_str().to_string()).unwrap_or_else(|_| "unknown".into());
            format!("signal {s} ({name})")
        }
        _ => "unknown exit".into(),
    }
}

/// What /proc says about a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStats {
    pub rss_bytes: u64,
    /// Average CPU use over its life, percent of one core (like `ps %cpu`).
    pub cpu_percent: f64,
    pub uptime_secs: f64,
    /// Start time in clock ticks since boot (identifies the process across PID reuse).
    pub start_ticks: u64,
}

/// Reads what /proc says about `pid`; None when the process is gone.
pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let stat = procfs::stat(i32::try_from(pid).ok()?)?;
    let uptime_secs = stat.age_secs();
    let cpu_secs = stat.cpu_ticks() as f64 / procfs::clock_ticks();
    let cpu_percent = if uptime_secs > 0.0 { cpu_secs / uptime_secs * 100.0 } else { 0.0 };
    Some(ProcStats { rss_bytes: stat.rss_bytes(), cpu_percent, uptime_secs, start_ticks: stat.start_ticks })
}
