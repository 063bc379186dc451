//! Support for the fault tests (hostile input, disk full, security): the daemons they run (a
//! `Fleet::start*`), quick settings, heartbeat marks, CPU time from `/proc`, and event waits.
#![allow(dead_code)]

use crate::support::fleet::Fleet;
use crate::support::*;
use std::time::{Duration, Instant};

/// The long-running daemons besides the worker and coordinator: each must survive whatever
/// these tests do to its files.
pub(crate) const DAEMONS: [&str; 6] = ["api", "metrics", "integration", "failure-pattern", "heartbeat", "auto-fix"];

/// The task path's daemons, which `Fleet::start_all` adds to [`DAEMONS`].
pub(crate) const TASK_DAEMONS: [&str; 2] = ["coordinator", "worker"];

/// Settings that make the daemons quick to observe: heartbeat marks every second, the API on a
/// free loopback port.
pub(crate) fn configure_fast(h: &TestHome) -> u16 {
    let port = free_port();
    h.set_config("api", "bind", &format!("\"127.0.0.1:{port}\""));
    h.set_config("daemons", "heartbeat_interval_seconds", "1");
    port
}

/// A daemon's heartbeat mark `run/<name>.state.json`.
pub(crate) fn mark(h: &TestHome, daemon: &str) -> Option<serde_json::Value> {
    let bytes = std::fs::read(h.join(&format!("run/{daemon}.state.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub(crate) fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The share of one core each daemon used over `window` (measured from /proc).
pub(crate) fn cpu_shares(fleet: &Fleet, window: Duration) -> Vec<(String, f64)> {
    let before: Vec<(String, Duration)> = fleet.children.iter().map(|(n, c)| (n.clone(), cpu_time(c.id()))).collect();
    let start = Instant::now();
    // Measuring a rate over a window is the point here: this sleep is the measurement itself.
    std::thread::sleep(window);
    let elapsed = start.elapsed().as_secs_f64();
    fleet
        .children
        .iter()
        .zip(before)
        .map(|((n, c), (_, b))| (n.clone(), (cpu_time(c.id()) - b).as_secs_f64() / elapsed))
        .collect()
}

/// Events of `event_type` whose `data.file` is `file`.
pub(crate) fn file_events(h: &TestHome, event_type: &str, file: &str) -> Vec<serde_json::Value> {
    h.events_of(event_type).into_iter().filter(|e| e["data"]["file"] == file).collect()
}

/// True when running as root (permission bits do not stop root's reads).
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
