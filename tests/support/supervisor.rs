//! Support for the supervisor tests: a home whose daemons are stopped (SIGKILL) when the test
//! ends, its own API port, and quick looks at PID files and marks through the library.
#![allow(dead_code)]

use crate::support::*;
use cortex::Home;
use cortex::pidfile::{self, PidStatus};
use std::process::{Command, Output};
use std::time::Duration;

pub struct Fleet {
    pub h: TestHome,
    pub port: u16,
}

impl Fleet {
    /// A fresh home; `toml` replaces its cortex.toml. Unless it says otherwise, daemons get 60 s to
    /// become ready: the test machine may be heavily loaded, and a fast start passes at once.
    pub fn new(toml: &str) -> Fleet {
        let h = TestHome::new();
        let toml = if toml.contains("ready_timeout_seconds") {
            toml.to_string()
        } else if toml.contains("[supervisor]\n") {
            toml.replace("[supervisor]\n", "[supervisor]\nready_timeout_seconds = 60.0\n")
        } else {
            format!("{toml}\n[supervisor]\nready_timeout_seconds = 60.0\n")
        };
        std::fs::write(h.join("cortex.toml"), toml).unwrap();
        Fleet { h, port: free_port() }
    }

    pub fn home(&self) -> Home {
        Home::at(self.h.path())
    }

    /// `cortex --home H ...` with this fleet's API port.
    pub fn cmd(&self) -> Command {
        let mut c = self.h.cmd();
        c.env("CORTEX_API_BIND", format!("127.0.0.1:{}", self.port));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run cortex")
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.cmd();
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(args).output().expect("run cortex")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
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
    pub fn pid(&self, daemon: &str) -> Option<u32> {
        match pidfile::status(&self.home(), daemon) {
            Ok(PidStatus::Running(p)) if p != 0 => Some(p),
            _ => None,
        }
    }

    pub fn status_of(&self, daemon: &str) -> PidStatus {
        pidfile::status(&self.home(), daemon).unwrap()
    }

    /// The PID of a daemon that runs and has marked itself ready.
    pub fn ready(&self, daemon: &str) -> Option<u32> {
        self.pid(daemon).filter(|p| cortex::supervisor::process::is_ready(&self.home(), daemon, *p))
    }

    /// Waits until `daemon` is ready with a PID other than `not`.
    pub fn wait_ready_other(&self, daemon: &str, not: Option<u32>, timeout: Duration) -> u32 {
        let mut got = 0;
        wait_until(timeout, &format!("{daemon} ready with a new PID"), || {
            got = self.ready(daemon).filter(|p| Some(*p) != not).unwrap_or(0);
            got != 0
        });
        got
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Show what the daemons said, to explain the failure.
            for d in cortex::daemon::DAEMONS {
                let log = std::fs::read_to_string(self.h.join(&format!("agents/logs/system/{d}-daemon.log")))
                    .unwrap_or_default();
                if !log.is_empty() {
                    let lines: Vec<&str> = log.lines().collect();
                    eprintln!(
                        "--- {d}-daemon.log (last lines)\n{}",
                        lines[lines.len().saturating_sub(15)..].join("\n")
                    );
                }
            }
        }
        let _ = self.run(&["stop", "--force"]);
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn sigkill(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
}

pub fn gone(pid: u32) -> bool {
    // A zombie (not yet reaped by init) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

/// True when process `pid` has a thread named `name` (pm's watcher threads are `watch-<daemon>`
/// for a daemon someone else started and `reap-<daemon>` for its own children).
pub fn has_thread(pid: u32, name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    rd.flatten().any(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
}

/// True when the supervisor process `sup` watches `daemon` (either way).
pub fn watching(sup: u32, daemon: &str) -> bool {
    let cut = |s: String| s.chars().take(15).collect::<String>();
    has_thread(sup, &cut(format!("watch-{daemon}"))) || has_thread(sup, &cut(format!("reap-{daemon}")))
}

/// Runs a script of this checkout (`rel`, e.g. `scripts/start-cortex.sh`) on the fleet's home with
/// this build's binaries, as an operator would; `cron` also names the `cortex` binary through
/// `CORTEX_BIN`, as a crontab line does.
pub fn run_script(f: &Fleet, rel: &str, args: &[&str], cron: bool) -> Output {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    let mut cmd = Command::new("bash");
    cmd.arg(path)
        .args(args)
        .env("CORTEX_HOME", f.h.path())
        .env_remove("COMMIT_RELAY_HOME")
        .env("CORTEX_BIN_DIR", bin_dir())
        .env("CORTEX_API_BIND", format!("127.0.0.1:{}", f.port))
        .stdin(std::process::Stdio::null());
    if cron {
        cmd.env("CORTEX_BIN", bin("cortex"));
    }
    cmd.output().unwrap()
}
