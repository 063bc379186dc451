//! The wrappers: `scripts/start-cortex.sh`, `scripts/stop-cortex.sh`,
//! `scripts/dashboards/daemon-monitor.sh` with the runbook's flags, and the menu of
//! `scripts/wizards/daemon-control.sh`.
mod common;
mod supervisor_support;
use common::*;
use std::path::PathBuf;
use std::process::{Command, Output};
use supervisor_support::*;

fn script(f: &Fleet, rel: &str, args: &[&str]) -> Output {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    Command::new("bash")
        .arg(path)
        .args(args)
        .env("CORTEX_HOME", f.h.path())
        .env_remove("COMMIT_RELAY_HOME")
        .env("CORTEX_BIN_DIR", bin_dir())
        .env("CORTEX_API_BIND", format!("127.0.0.1:{}", f.port))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn scripts_parse() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let mut all: Vec<PathBuf> = Vec::new();
    for sub in ["", "daemons", "dashboards", "lib", "wizards"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "sh") {
                all.push(e.path());
            }
        }
    }
    assert!(all.len() >= 14, "{all:?}");
    for path in all {
        let rel = path.display().to_string();
        let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "{rel}: {}", text(&out.stderr));
    }
}

#[test]
fn daemon_monitor_flags() {
    let f = Fleet::new("[supervisor]\nstabilization_seconds = 0.2\n");
    let dm = "scripts/dashboards/daemon-monitor.sh";
    let out = script(&f, dm, &["--start", "worker"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let pid = f.ready("worker").unwrap();
    let out = script(&f, dm, &["--status"]);
    assert_eq!(out.status.code(), Some(1), "not every daemon runs");
    assert!(text(&out.stdout).contains(&format!("worker: RUNNING (PID {pid},")), "{}", text(&out.stdout));
    let out = script(&f, dm, &["--restart", "worker"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let new = f.ready("worker").unwrap();
    assert_ne!(new, pid);
    let out = script(&f, dm, &["--stop", "worker"]);
    assert!(text(&out.stdout).contains(&format!("worker: stopped (PID {new}")), "{}", text(&out.stdout));
    assert!(f.pid("worker").is_none());

    let out = script(&f, dm, &["--start-all"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let out = script(&f, dm, &[]);
    assert!(out.status.success(), "no flag means --status, all running: {}", text(&out.stdout));
    let out = script(&f, dm, &["--stop-all"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(cortex::daemon::DAEMONS.iter().all(|d| f.pid(d).is_none()));

    assert_eq!(script(&f, dm, &["--start"]).status.code(), Some(2));
    assert_eq!(script(&f, dm, &["--bogus"]).status.code(), Some(2));
    assert_eq!(script(&f, dm, &["--start", "nosuch"]).status.code(), Some(1));
    assert!(text(&script(&f, dm, &["--help"]).stdout).contains("--stop-all"));
}

/// The runbook's "Using daemon control wizard ... Select option 1: Start all daemons".
#[test]
fn daemon_control_wizard_menu() {
    let f = Fleet::new("");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/wizards/daemon-control.sh");
    let run = |input: &str| {
        use std::io::Write;
        let mut child = Command::new("bash")
            .arg(&path)
            .env("CORTEX_HOME", f.h.path())
            .env_remove("COMMIT_RELAY_HOME")
            .env("CORTEX_BIN_DIR", bin_dir())
            .env("CORTEX_API_BIND", format!("127.0.0.1:{}", f.port))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("1\nq\n");
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(cortex::daemon::DAEMONS.iter().all(|d| f.ready(d).is_some()), "option 1 starts all daemons");
    let out = run("6\nworker\n4\nq\n");
    let s = text(&out.stdout);
    assert!(s.contains("worker: STOPPED"), "option 6 stops one, option 4 shows it: {s}");
    assert!(f.pid("worker").is_none());
    let out = run("5\nnosuch\n");
    assert_eq!(out.status.code(), Some(2), "an unknown daemon name is refused");
    let out = run("2\nq\n");
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(cortex::daemon::DAEMONS.iter().all(|d| f.pid(d).is_none()), "option 2 stops all daemons");
}

#[test]
fn start_and_stop_cortex_wrappers() {
    let f = Fleet::new("");
    let out = script(&f, "scripts/start-cortex.sh", &[]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    assert!(s.contains("worker: started") && s.contains("api: RUNNING"), "{s}");
    assert!(s.contains(&format!("API address: http://127.0.0.1:{}", f.port)), "{s}");
    assert!(cortex::daemon::DAEMONS.iter().all(|d| f.ready(d).is_some()));
    let out = script(&f, "scripts/stop-cortex.sh", &["--force"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("worker: killed"), "{}", text(&out.stdout));
    assert!(cortex::daemon::DAEMONS.iter().all(|d| f.pid(d).is_none()));
}

#[test]
fn direct_start_wrapper_runs_a_daemon_in_the_foreground() {
    let f = Fleet::new("");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/daemons/heartbeat-monitor-daemon.sh");
    let mut child = Command::new("bash")
        .arg(path)
        .env("CORTEX_HOME", f.h.path())
        .env_remove("COMMIT_RELAY_HOME")
        .env("CORTEX_BIN_DIR", bin_dir())
        .env("DEBUG", "1")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // exec: the script's process is the daemon.
    wait_until(std::time::Duration::from_secs(60), "heartbeat ready", || f.ready("heartbeat") == Some(child.id()));
    let st = terminate(&mut child);
    assert!(st.success(), "{st}");
    assert!(f.pid("heartbeat").is_none());
}
