//! Support for the fault tests (hostile input, disk full, security): the daemons available today
//! running together in one temporary home, liveness checks (the process is alive AND its loop
//! still refreshes its heartbeat mark), CPU time from `/proc`, and event waits.
#![allow(dead_code)]

use crate::support::*;
use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

/// The long-running daemons besides the worker and coordinator: each must survive whatever
/// these tests do to its files.
pub const DAEMONS: [&str; 6] = ["api", "metrics", "integration", "failure-pattern", "heartbeat", "auto-fix"];

/// The task path's daemons, which [`Fleet::start_all`] adds to [`DAEMONS`].
pub const TASK_DAEMONS: [&str; 2] = ["coordinator", "worker"];

/// Daemons running in one home; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Fleet {
    pub children: Vec<(String, Child)>,
    pub api_port: u16,
}

/// Settings that make the daemons quick to observe: heartbeat marks every second, the API on a
/// free loopback port.
pub fn configure_fast(h: &TestHome) -> u16 {
    let port = free_port();
    h.set_config("api", "bind", &format!("\"127.0.0.1:{port}\""));
    h.set_config("daemons", "heartbeat_interval_seconds", "1");
    port
}

impl Fleet {
    /// Starts every daemon of [`DAEMONS`] and waits until each has marked itself ready.
    pub fn start(h: &TestHome) -> Fleet {
        let api_port = configure_fast(h);
        Fleet::start_configured(h, api_port)
    }

    /// Starts the daemons in a home already configured (see [`configure_fast`]).
    pub fn start_configured(h: &TestHome, api_port: u16) -> Fleet {
        Fleet::start_as(h, api_port, None)
    }

    /// Starts the daemons as another user (`Some(uid)`, its primary group too), or as this one.
    pub fn start_as(h: &TestHome, api_port: u16, user: Option<u32>) -> Fleet {
        Fleet::start_with(h, api_port, user, &[])
    }

    /// Every daemon of [`DAEMONS`] and [`TASK_DAEMONS`], in a home configured here.
    pub fn start_all(h: &TestHome) -> Fleet {
        let api_port = configure_fast(h);
        let names: Vec<&str> = DAEMONS.iter().chain(TASK_DAEMONS.iter()).copied().collect();
        Fleet::start_named(h, api_port, None, &[], &names)
    }

    /// [`Fleet::start_as`] with extra environment variables for the daemons.
    pub fn start_with(h: &TestHome, api_port: u16, user: Option<u32>, env: &[(&str, &std::path::Path)]) -> Fleet {
        Fleet::start_named(h, api_port, user, env, &DAEMONS)
    }

    /// Starts the named daemons and waits until each has marked itself ready.
    pub fn start_named(
        h: &TestHome,
        api_port: u16,
        user: Option<u32>,
        env: &[(&str, &std::path::Path)],
        names: &[&str],
    ) -> Fleet {
        use std::os::unix::process::CommandExt;
        let children = names
            .iter()
            .map(|d| {
                let mut c = std::process::Command::new(bin(&format!("cortex-{d}")));
                c.arg("--home")
                    .arg(h.path())
                    .env_remove("CORTEX_HOME")
                    .env_remove("COMMIT_RELAY_HOME")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped());
                for (k, v) in env {
                    c.env(k, v);
                }
                if let Some(uid) = user {
                    c.uid(uid).gid(uid);
                }
                (d.to_string(), c.spawn().expect("spawn daemon"))
            })
            .collect();
        let mut fleet = Fleet { children, api_port };
        wait_until(Duration::from_secs(30), "every daemon ready", || {
            fleet.assert_alive(h, "starting");
            names.iter().all(|d| mark(h, d).is_some_and(|m| !m["ready_at"].is_null()))
        });
        fleet
    }

    /// Panics (with the daemon's stderr and log tail) if any daemon has exited.
    pub fn assert_alive(&mut self, h: &TestHome, during: &str) {
        for (name, child) in self.children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(e) = child.stderr.as_mut() {
                    let _ = e.read_to_string(&mut err);
                }
                let log = std::fs::read_to_string(h.join(&format!("agents/logs/system/{name}-daemon.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!(
                    "cortex-{name} exited ({status}) during {during}\nstderr: {err}\nlog tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }

    /// Waits until every daemon's loop has refreshed its heartbeat mark after `since` (a wedged
    /// loop, or one spinning without reaching its wait, never does).
    pub fn assert_loops_running(&mut self, h: &TestHome, since: chrono::DateTime<chrono::Utc>, during: &str) {
        wait_until(Duration::from_secs(15), &format!("every daemon's loop alive after {during}"), || {
            self.assert_alive(h, during);
            self.children.iter().map(|(d, _)| d.as_str()).all(|d| {
                mark(h, d)
                    .and_then(|m| m["heartbeat_at"].as_str().and_then(cortex::clock::parse_ts))
                    .is_some_and(|t| t > since)
            })
        });
    }

    pub fn pid(&self, name: &str) -> u32 {
        self.children.iter().find(|(n, _)| n == name).map(|(_, c)| c.id()).expect("daemon")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for (_, child) in self.children.iter_mut() {
            terminate(child);
        }
    }
}

/// A daemon's heartbeat mark `run/<name>.state.json`.
pub fn mark(h: &TestHome, daemon: &str) -> Option<serde_json::Value> {
    let bytes = std::fs::read(h.join(&format!("run/{daemon}.state.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The share of one core each daemon used over `window` (measured from /proc).
pub fn cpu_shares(fleet: &Fleet, window: Duration) -> Vec<(String, f64)> {
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
pub fn file_events(h: &TestHome, event_type: &str, file: &str) -> Vec<serde_json::Value> {
    h.events_of(event_type).into_iter().filter(|e| e["data"]["file"] == file).collect()
}

/// True when running as root (permission bits do not stop root's reads).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
