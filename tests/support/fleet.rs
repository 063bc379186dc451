//! `Fleet`: the daemons of one test home, stopped when the fleet is dropped. They are started
//! either as this test's own children, each daemon binary directly (`Fleet::start*`: the fault and
//! hostile tests), or by the operator's commands on the fleet's home (`Fleet::new`, then
//! `cortex start`, pm, `cortex run` or the scripts: the supervisor tests).
#![allow(dead_code)]

use crate::support::faults::{DAEMONS, TASK_DAEMONS, configure_fast, mark};
use crate::support::*;
use cortex::Home;
use cortex::store::pidfile::{self, PidStatus};
use std::io::Read;
use std::process::{Child, Command, Output};
use std::time::Duration;

pub(crate) struct Fleet {
    pub h: TestHome,
    /// The API's port: `[api] bind` for daemons started as children, `CORTEX_API_BIND` for the
    /// commands of [`Fleet::cmd`].
    pub api_port: u16,
    /// The daemons this test started as its children (none after [`Fleet::new`]).
    pub children: Vec<(String, Child)>,
    /// Daemons were (or may have been) started by commands: `cortex stop --force` when dropped.
    by_commands: bool,
}

impl Fleet {
    /// A fresh home for daemons the test starts with commands; `toml` replaces its cortex.toml.
    /// Unless it says otherwise, daemons get 60 s to become ready: the test machine may be heavily
    /// loaded, and a fast start passes at once.
    pub(crate) fn new(toml: &str) -> Fleet {
        let h = TestHome::new();
        let toml = if toml.contains("ready_timeout_seconds") {
            toml.to_string()
        } else if toml.contains("[supervisor]\n") {
            toml.replace("[supervisor]\n", "[supervisor]\nready_timeout_seconds = 60.0\n")
        } else {
            format!("{toml}\n[supervisor]\nready_timeout_seconds = 60.0\n")
        };
        std::fs::write(h.join("cortex.toml"), toml).unwrap();
        Fleet { h, api_port: free_port(), children: Vec::new(), by_commands: true }
    }

    /// Starts every daemon of [`DAEMONS`] as a child and waits until each has marked itself ready.
    pub(crate) fn start(h: &TestHome) -> Fleet {
        let api_port = configure_fast(h);
        Fleet::start_configured(h, api_port)
    }

    /// Starts the daemons in a home already configured (see [`configure_fast`]).
    pub(crate) fn start_configured(h: &TestHome, api_port: u16) -> Fleet {
        Fleet::start_as(h, api_port, None)
    }

    /// Starts the daemons as another user (`Some(uid)`, its primary group too), or as this one.
    pub(crate) fn start_as(h: &TestHome, api_port: u16, user: Option<u32>) -> Fleet {
        Fleet::start_with(h, api_port, user, &[])
    }

    /// Every daemon of [`DAEMONS`] and [`TASK_DAEMONS`], in a home configured here.
    pub(crate) fn start_all(h: &TestHome) -> Fleet {
        let api_port = configure_fast(h);
        let names: Vec<&str> = DAEMONS.iter().chain(TASK_DAEMONS.iter()).copied().collect();
        Fleet::start_named(h, api_port, None, &[], &names)
    }

    /// [`Fleet::start_as`] with extra environment variables for the daemons.
    pub(crate) fn start_with(
        h: &TestHome,
        api_port: u16,
        user: Option<u32>,
        env: &[(&str, &std::path::Path)],
    ) -> Fleet {
        Fleet::start_named(h, api_port, user, env, &DAEMONS)
    }

    /// Starts the named daemons as children and waits until each has marked itself ready.
    pub(crate) fn start_named(
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
                let mut c = Command::new(bin(&format!("cortex-{d}")));
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
        let mut fleet = Fleet { h: h.clone(), api_port, children, by_commands: false };
        wait_until(Duration::from_secs(30), "every daemon ready", || {
            fleet.assert_alive("starting");
            names.iter().all(|d| mark(h, d).is_some_and(|m| !m["ready_at"].is_null()))
        });
        fleet
    }

    pub(crate) fn home(&self) -> Home {
        Home::at(self.h.path())
    }

    /// `cortex --home H ...` with this fleet's API port.
    pub(crate) fn cmd(&self) -> Command {
        let mut c = self.h.cmd();
        c.env("CORTEX_API_BIND", format!("127.0.0.1:{}", self.api_port));
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run cortex")
    }

    pub(crate) fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.cmd();
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(args).output().expect("run cortex")
    }

    /// Runs and asserts success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(
            out.status.success(),
            "cortex {args:?} failed ({}): {}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// The PID of a running daemon (its PID file is locked).
    pub(crate) fn pid(&self, daemon: &str) -> Option<u32> {
        match pidfile::status(&self.home(), by_name(daemon)) {
            Ok(PidStatus::Running(p)) if p != 0 => Some(p),
            _ => None,
        }
    }

    pub(crate) fn status_of(&self, daemon: &str) -> PidStatus {
        pidfile::status(&self.home(), by_name(daemon)).unwrap()
    }

    /// The PID of a daemon that runs and has marked itself ready.
    pub(crate) fn ready(&self, daemon: &str) -> Option<u32> {
        self.pid(daemon).filter(|p| cortex::ops::supervisor::process::is_ready(&self.home(), by_name(daemon), *p))
    }

    /// Waits until `daemon` is ready with a PID other than `not`.
    pub(crate) fn wait_ready_other(&self, daemon: &str, not: Option<u32>, timeout: Duration) -> u32 {
        let mut got = 0;
        wait_until(timeout, &format!("{daemon} ready with a new PID"), || {
            got = self.ready(daemon).filter(|p| Some(*p) != not).unwrap_or(0);
            got != 0
        });
        got
    }

    /// Panics (with the daemon's stderr and log tail) if any daemon started as a child has exited.
    pub(crate) fn assert_alive(&mut self, during: &str) {
        for (name, child) in self.children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(e) = child.stderr.as_mut() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!(
                    "cortex-{name} exited ({status}) during {during}\nstderr: {err}\nlog tail:\n{}",
                    log_tail(&self.h, name, 15)
                );
            }
        }
    }

    /// Waits until the loop of every daemon started as a child has refreshed its heartbeat mark
    /// after `since` (a wedged loop, or one spinning without reaching its wait, never does).
    pub(crate) fn assert_loops_running(&mut self, since: chrono::DateTime<chrono::Utc>, during: &str) {
        wait_until(Duration::from_secs(15), &format!("every daemon's loop alive after {during}"), || {
            self.assert_alive(during);
            self.children.iter().map(|(d, _)| d.as_str()).all(|d| {
                mark(&self.h, d)
                    .and_then(|m| m["heartbeat_at"].as_str().and_then(cortex::base::clock::parse_ts))
                    .is_some_and(|t| t > since)
            })
        });
    }
}

/// The daemon a test names (the tests speak in names, as the command line does).
pub(crate) fn by_name(name: &str) -> cortex::base::daemon_name::Daemon {
    cortex::base::daemon_name::Daemon::parse(name).unwrap_or_else(|| panic!("no daemon named {name:?}"))
}

/// The last `n` lines of a daemon's log in the home.
fn log_tail(h: &TestHome, daemon: &str, n: usize) -> String {
    let log = std::fs::read_to_string(h.join(&format!("agents/logs/system/{daemon}-daemon.log"))).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Show what the daemons said, to explain the failure.
            for d in cortex::base::daemon_name::NAMES {
                let tail = log_tail(&self.h, d, 15);
                if !tail.is_empty() {
                    eprintln!("--- {d}-daemon.log (last lines)\n{tail}");
                }
            }
        }
        for (_, child) in self.children.iter_mut() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for (_, child) in self.children.iter_mut() {
            terminate(child);
        }
        if self.by_commands {
            let _ = self.run(&["stop", "--force"]);
        }
    }
}
