//! Stopping and starting this home's daemons around a restore or reset, in one small place
//! (the supervisor's `cortex stop`/`cortex start` can take over here). Which daemons run is
//! decided by their PID-file locks (`pidfile::status`), never by process names; stopping is
//! SIGTERM, a grace period, then SIGKILL (invariant 9).

use crate::config::Config;
use crate::daemon::{DAEMONS, binary_name};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::pidfile::{self, PidStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// The daemons of `home` that run now, in start order, with their PIDs.
pub fn running(home: &Home) -> Result<Vec<(&'static str, u32)>> {
    let mut out = Vec::new();
    for d in DAEMONS {
        if let PidStatus::Running(pid) = pidfile::status(home, d)? {
            out.push((d, pid));
        }
    }
    Ok(out)
}

/// A refusal that names the running daemons and what to do.
pub fn refuse_while_running(home: &Home, what: &str) -> Result<()> {
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

/// Stops every running daemon of `home` (reverse start order); returns the names it stopped.
pub fn stop_all(home: &Home, config: &Config) -> Result<Vec<&'static str>> {
    let mut run = running(home)?;
    run.reverse();
    for (_, pid) in &run {
        if *pid > 0 {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
        }
    }
    let grace = Duration::from_secs_f64(config.supervisor.stop_timeout_seconds.max(0.1));
    let deadline = Instant::now() + grace;
    let mut stubborn = Vec::new();
    for (d, pid) in &run {
        if !wait_pidfile_free(home, d, deadline.saturating_duration_since(Instant::now()))? {
            stubborn.push((*d, *pid));
        }
    }
    for (d, pid) in &stubborn {
        tracing::warn!("{d} (PID {pid}) ignored SIGTERM for {grace:?}; sending SIGKILL");
        if *pid > 0 {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        if !wait_pidfile_free(home, d, Duration::from_secs(5))? {
            return Err(Error::other(format!("{d} (PID {pid}) did not stop even after SIGKILL")));
        }
    }
    Ok(run.into_iter().map(|(d, _)| d).collect())
}

/// Waits until nobody holds the daemon's PID-file lock (the daemon has exited).
fn wait_pidfile_free(home: &Home, daemon: &str, timeout: Duration) -> Result<bool> {
    match crate::store::lock::lock_exclusive(&home.pid_file(daemon), timeout) {
        Ok(guard) => {
            drop(guard);
            Ok(true)
        }
        Err(Error::LockTimeout { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Starts the named daemons again (start order), detached in their own process groups, and
/// waits until each holds its PID file.
pub fn start(home: &Home, config: &Config, names: &[&str]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .ok_or_else(|| Error::other("cannot find the directory of the cortex binary"))?;
    for d in DAEMONS.iter().filter(|d| names.contains(d)) {
        let bin = dir.join(binary_name(d));
        std::process::Command::new(&bin)
            .arg("--home")
            .arg(home.root())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io(&bin, "start", e))?;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(config.supervisor.ready_timeout_seconds.max(1.0));
    for d in DAEMONS.iter().filter(|d| names.contains(d)) {
        while !matches!(pidfile::status(home, d)?, PidStatus::Running(_)) {
            if Instant::now() >= deadline {
                return Err(Error::other(format!(
                    "{d} did not start within {:?}; see {}",
                    config.supervisor.ready_timeout_seconds,
                    home.daemon_log(d).display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}
