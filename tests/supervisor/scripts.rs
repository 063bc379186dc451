//! The wrappers: `scripts/start-cortex.sh`, `scripts/stop-cortex.sh`,
//! `scripts/dashboards/daemon-monitor.sh` with the runbook's flags, and the menu of
//! `scripts/wizards/daemon-control.sh`.
use crate::support::fleet::Fleet;
use crate::support::supervisor::*;
use crate::support::*;
use std::path::PathBuf;
use std::process::{Command, Output};

fn script(f: &Fleet, rel: &str, args: &[&str]) -> Output {
    run_script(f, rel, args, false)
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
    assert!(cortex::base::daemon_name::NAMES.iter().all(|d| f.pid(d).is_none()));

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
            .env("CORTEX_API_BIND", format!("127.0.0.1:{}", f.api_port))
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
    assert!(cortex::base::daemon_name::NAMES.iter().all(|d| f.ready(d).is_some()), "option 1 starts all daemons");
    let out = run("6\nworker\n4\nq\n");
    let s = text(&out.stdout);
    assert!(s.contains("worker: STOPPED"), "option 6 stops one, option 4 shows it: {s}");
    assert!(f.pid("worker").is_none());
    let out = run("5\nnosuch\n");
    assert_eq!(out.status.code(), Some(2), "an unknown daemon name is refused");
    let out = run("2\nq\n");
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(cortex::base::daemon_name::NAMES.iter().all(|d| f.pid(d).is_none()), "option 2 stops all daemons");
}

#[test]
fn start_and_stop_cortex_wrappers() {
    let f = Fleet::new("");
    let out = script(&f, "scripts/start-cortex.sh", &[]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    assert!(s.contains("worker: started") && s.contains("api: RUNNING"), "{s}");
    assert!(s.contains(&format!("API address: http://127.0.0.1:{}", f.api_port)), "{s}");
    assert!(cortex::base::daemon_name::NAMES.iter().all(|d| f.ready(d).is_some()));
    let out = script(&f, "scripts/stop-cortex.sh", &["--force"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("worker: killed"), "{}", text(&out.stdout));
    assert!(cortex::base::daemon_name::NAMES.iter().all(|d| f.pid(d).is_none()));
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

/// The same run as `script`, with the cron-facing scripts' binary variable set too.
fn cron_script(f: &Fleet, rel: &str, args: &[&str]) -> Output {
    run_script(f, rel, args, true)
}

/// Runbook 002's two calls of `scripts/emit-event.sh` (one line; continued over three lines),
/// and the older positional form of `cortex event emit`.
#[test]
fn emit_event_wrapper_takes_the_runbook_forms() {
    let f = Fleet::new("");
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            "./scripts/emit-event.sh --type \"emergency_recovery\" --severity \"critical\" \\\n    \
             --message \"System recovered from P1 failure\"\n\
             ./scripts/emit-event.sh \\\n    --type \"system_recovery_complete\" \\\n    --severity \"info\" \\\n    \
             --message \"System recovered and verified\"\n\
             ./scripts/emit-event.sh operator_note '{\"note\": \"disk swapped\"}' ops",
        )
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CORTEX_HOME", f.h.path())
        .env_remove("COMMIT_RELAY_HOME")
        .env("CORTEX_BIN", bin("cortex"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 3, "one event id per call: {}", text(&out.stdout));
    let ev = &f.h.events_of("emergency_recovery")[0];
    assert_eq!(ev["severity"], "critical");
    assert_eq!(ev["message"], "System recovered from P1 failure");
    let ev = &f.h.events_of("system_recovery_complete")[0];
    assert_eq!(
        (ev["severity"].as_str(), ev["message"].as_str()),
        (Some("info"), Some("System recovered and verified"))
    );
    let ev = &f.h.events_of("operator_note")[0];
    assert_eq!((ev["data"]["note"].as_str(), ev["source"].as_str()), (Some("disk swapped"), Some("ops")));
    let out = cron_script(&f, "scripts/emit-event.sh", &[]);
    assert_eq!(out.status.code(), Some(2), "no type: a usage error");
}

/// Runbook 002's cron line for `scripts/health-check.sh`: a timestamped verdict and the exit
/// status of `cortex health-check` (2 down, 0 healthy); `--fix` restarts what is dead.
#[test]
fn health_check_wrapper_reports_and_fixes() {
    let f = Fleet::new(
        "[daemons]\ndisabled = [\"coordinator\", \"worker\", \"metrics\", \"integration\", \"failure-pattern\", \"auto-fix\", \"notify\", \"api\", \"pm\"]\n",
    );
    let out = cron_script(&f, "scripts/health-check.sh", &[]);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "nothing runs: down: {s}{}", text(&out.stderr));
    assert!(s.starts_with('[') && s.contains("] health check") && s.contains("Cortex is down"), "{s}");
    let out = cron_script(&f, "scripts/health-check.sh", &["--fix"]);
    assert!(text(&out.stdout).contains("Restarting dead daemon: heartbeat"), "{}", text(&out.stdout));
    assert!(f.ready("heartbeat").is_some(), "--fix started heartbeat");
    let out = cron_script(&f, "scripts/health-check.sh", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    f.ok(&["stop"]);
}

/// Runbook 002's "dashboard works": `scripts/dashboards/system-live.sh &`, then kill it. One
/// frame shows the daemons, the scheduler, the running dispatches and the events; left running,
/// it redraws, and it ends on SIGTERM.
#[test]
fn system_live_dashboard_draws_refreshes_and_stops() {
    let f = Fleet::new("");
    f.h.cortex_ok(&["scheduler", "pause", "--reason", "dashboard drill"]);
    let out = script(&f, "scripts/dashboards/system-live.sh", &["--once"]);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "no daemon runs: {s}{}", text(&out.stderr));
    for want in [
        "Cortex live view",
        "worker: STOPPED",
        "Scheduler: paused",
        "dashboard drill",
        "Running dispatches:",
        "Recent events:",
        "scheduler_paused",
    ] {
        assert!(s.contains(want), "{want:?} missing from the frame:\n{s}");
    }
    let log = f.h.join("live.out");
    let mut child = Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/dashboards/system-live.sh"))
        .args(["--interval", "0.2"])
        .env("CORTEX_HOME", f.h.path())
        .env_remove("COMMIT_RELAY_HOME")
        .env("CORTEX_BIN_DIR", bin_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until(std::time::Duration::from_secs(30), "three frames", || {
        std::fs::read_to_string(&log).unwrap_or_default().matches("Cortex live view").count() >= 3
    });
    let st = terminate(&mut child);
    assert!(st.success(), "{st}");
    assert!(!std::fs::read(&log).unwrap().contains(&0x1b), "escape codes written to a file");
    assert_eq!(script(&f, "scripts/dashboards/system-live.sh", &["--bogus"]).status.code(), Some(2));
}

/// `config/crontab.example`'s backup line works for a home made by `cortex init` (which has no
/// scripts/ of its own), run as cron would: `sh -c` with the crontab's variables.
#[test]
fn crontab_example_backup_line_works_for_an_initialised_home() {
    let f = Fleet::new("");
    let crontab =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/crontab.example")).unwrap();
    let line = crontab.lines().find(|l| !l.starts_with('#') && l.contains("backup")).expect("a backup line");
    let command = line.splitn(6, ' ').nth(5).expect("five time fields, then the command");
    std::fs::create_dir_all(f.h.join("agents/logs/system")).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CORTEX_HOME", f.h.path())
        .env("CORTEX", bin("cortex"))
        .output()
        .unwrap();
    let log = std::fs::read_to_string(f.h.join("agents/logs/system/backup.log")).unwrap_or_default();
    assert!(out.status.success(), "`{command}` failed: {log}");
    let archives: Vec<_> = std::fs::read_dir(f.h.join("backups"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.gz"))
        .collect();
    assert_eq!(archives.len(), 1, "{log}");
}
