//! Support for the supervisor tests (their home and daemons are a `Fleet::new`): processes and
//! their threads, and the operator's scripts run on the fleet's home.
#![allow(dead_code)]

use crate::support::fleet::Fleet;
use crate::support::*;
use std::process::{Command, Output};

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn sigkill(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
}

pub(crate) fn gone(pid: u32) -> bool {
    // A zombie (not yet reaped by init) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

/// True when process `pid` has a thread named `name` (pm's watcher threads are `watch-<daemon>`
/// for a daemon someone else started and `reap-<daemon>` for its own children).
pub(crate) fn has_thread(pid: u32, name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    rd.flatten().any(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
}

/// True when the supervisor process `sup` watches `daemon` (either way).
pub(crate) fn watching(sup: u32, daemon: &str) -> bool {
    let cut = |s: String| s.chars().take(15).collect::<String>();
    has_thread(sup, &cut(format!("watch-{daemon}"))) || has_thread(sup, &cut(format!("reap-{daemon}")))
}

/// Runs a script of this checkout (`rel`, e.g. `scripts/start-cortex.sh`) on the fleet's home with
/// this build's binaries, as an operator would; `cron` also names the `cortex` binary through
/// `CORTEX_BIN`, as a crontab line does.
pub(crate) fn run_script(f: &Fleet, rel: &str, args: &[&str], cron: bool) -> Output {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    let mut cmd = Command::new("bash");
    cmd.arg(path)
        .args(args)
        .env("CORTEX_HOME", f.h.path())
        .env_remove("COMMIT_RELAY_HOME")
        .env("CORTEX_BIN_DIR", bin_dir())
        .env("CORTEX_API_BIND", format!("127.0.0.1:{}", f.api_port))
        .stdin(std::process::Stdio::null());
    if cron {
        cmd.env("CORTEX_BIN", bin("cortex"));
    }
    cmd.output().unwrap()
}
