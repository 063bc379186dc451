//! Stopping and starting this home's daemons around a restore or reset, in one small place
//! (starting goes through the supervisor's `cortex start` path). Which daemons run is
//! decided by their PID-file locks (`pidfile::status`), never by process names; stopping is
//! SIGTERM, a grace period, then SIGKILL (invariant 9).

use crate::base::daemon_name::Daemon;
use crate::base::error::{Error, Result};
use crate::store::config::Config;
use crate::store::home::Home;
use crate::store::pidfile::{self, PidStatus};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// The daemons of `home` that run now, in start order, with their PIDs.
pub(crate) fn running(home: &Home) -> Result<Vec<(Daemon, u32)>> {
    let mut out = Vec::new();
    for d in Daemon::ALL {
        if let PidStatus::Running(pid) = pidfile::status(home, d)? {
            out.push((d, pid));
        }
    }
    Ok(out)
}

/// A refusal that names the running daemons and what to do.
pub(crate) fn refuse_while_running(home: &Home, what: &str) -> Result<()> {
    let run = running(home)?;
    if run.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = run.iter().map(|(d, p)| format!("{d} (PID {p})")).collect();
    Err(Error::refused(format!(
        "refusing to {what} while daemons of {} run: {}; stop them with `cortex stop`, or pass --stop to stop them and start them again afterwards",
        home.root().display(),
        names.join(", ")
    )))
}

/// Stops every running daemon of `home`: pm first and alone, so it cannot restart the others
/// while they stop, then the rest in reverse start order. Each stop is recorded as asked for
/// (`run/<daemon>.stop-asked`), so neither pm nor `cortex run` takes it for a crash. Returns the
/// daemons it stopped.
pub(crate) fn stop_all(home: &Home, config: &Config) -> Result<Vec<Daemon>> {
    let grace = Duration::from_secs_f64(config.supervisor.stop_timeout_seconds.max(0.1));
    let (pm, _): (Vec<_>, Vec<_>) = running(home)?.into_iter().partition(|(d, _)| *d == Daemon::Pm);
    stop_these(home, &pm, grace)?;
    let mut rest = running(home)?;
    rest.reverse();
    stop_these(home, &rest, grace)?;
    Ok(pm.into_iter().chain(rest).map(|(d, _)| d).collect())
}

/// SIGTERM to each daemon (proven ours first), then SIGKILL to those still running at `grace`.
fn stop_these(home: &Home, run: &[(Daemon, u32)], grace: Duration) -> Result<()> {
    // Each is proven to be our daemon (lock holder, binary, home) before it is signalled.
    let mut proven = Vec::new();
    for (d, pid) in run {
        crate::ops::supervisor::registry::record_stop_asked(home, *d, *pid)?;
        let p = crate::ops::supervisor::process::prove_daemon(home, *d, *pid)?;
        p.signal(Signal::SIGTERM)?;
        proven.push((*d, p));
    }
    let deadline = Instant::now() + grace;
    let mut stubborn = Vec::new();
    for (d, p) in proven {
        if !wait_pidfile_free(home, d, deadline.saturating_duration_since(Instant::now()))? {
            stubborn.push((d, p));
        }
    }
    for (d, p) in &stubborn {
        tracing::warn!("{d} (PID {}) ignored SIGTERM for {grace:?}; sending SIGKILL", p.pid);
        p.signal(Signal::SIGKILL)?;
        if !wait_pidfile_free(home, *d, Duration::from_secs(5))? {
            return Err(Error::other(format!("{d} (PID {}) did not stop even after SIGKILL", p.pid)));
        }
    }
    Ok(())
}

/// Waits until nobody holds the daemon's PID-file lock (the daemon has exited).
fn wait_pidfile_free(home: &Home, daemon: Daemon, timeout: Duration) -> Result<bool> {
    match crate::store::lock::lock_pid_file(&home.pid_file(daemon), timeout) {
        Ok(guard) => {
            drop(guard);
            Ok(true)
        }
        Err(Error::LockTimeout { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Starts these daemons again (start order) the way `cortex start` does
/// (`supervisor::control::start_one`): detached, and each waited for until it is ready (its PID
/// file locked by the process just started and its ready mark written), so a caller that goes on
/// to signal or stop one finds its real PID. A locked PID file alone is not enough: between
/// taking the lock and writing its PID, a starting daemon's file still holds nothing (or the
/// previous daemon's PID).
pub(crate) fn start(home: &Home, config: &Config, daemons: &[Daemon]) -> Result<()> {
    for d in Daemon::ALL.into_iter().filter(|d| daemons.contains(d)) {
        let started = crate::ops::supervisor::control::start_one(home, config, d);
        if let Some(e) = started.error {
            return Err(Error::other(format!("{d} did not start: {e}; see {}", home.daemon_log(d).display())));
        }
    }
    Ok(())
}
