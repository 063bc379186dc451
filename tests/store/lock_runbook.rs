//! Runbooks 002/003 told operators to remove "stale" PID files. Done while every daemon runs,
//! with tasks running: every PID file removed, then every lock file (the whole
//! `coordination/.locks/`), then the shipped cron line `cortex health-check --fix` and
//! `scripts/start-cortex.sh`. There must still be exactly one process per daemon for this home,
//! `cortex status` must say RUNNING, `cortex stop` must stop them all, and no task may run twice.

use crate::support::fleet::Fleet;
use crate::support::supervisor::*;
use crate::support::*;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// The processes of each daemon binary started for `home` (by its `--home`), from /proc.
fn daemon_processes(home: &Path) -> HashMap<String, Vec<u32>> {
    let home = std::fs::canonicalize(home).unwrap();
    let mut out: HashMap<String, Vec<u32>> = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else { continue };
        let name = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = name.strip_suffix(" (deleted)").unwrap_or(&name).to_string();
        let Some(daemon) = name.strip_prefix("cortex-") else { continue };
        if !cortex::base::daemon_name::NAMES.contains(&daemon) || gone(pid) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let theirs =
            args.windows(2).find(|w| w[0] == b"--home").map(|w| PathBuf::from(std::ffi::OsStr::from_bytes(w[1])));
        if theirs.and_then(|p| std::fs::canonicalize(p).ok()).as_deref() == Some(home.as_path()) {
            out.entry(daemon.to_string()).or_default().push(pid);
        }
    }
    out
}

fn assert_one_each(f: &Fleet, when: &str) {
    let procs = daemon_processes(f.h.path());
    for d in cortex::base::daemon_name::NAMES {
        let pids = procs.get(d).cloned().unwrap_or_default();
        assert_eq!(pids.len(), 1, "{when}: {d} runs as {pids:?} (one process per daemon per home)");
    }
}

/// Kills (SIGKILL) every daemon process of the home left when the test ends, found by its
/// `--home`: a failing run may leave a second fleet that `cortex stop` cannot see.
struct KillLeftovers(PathBuf);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for pid in daemon_processes(&self.0).into_values().flatten() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn start_script(f: &Fleet) -> Output {
    run_script(f, "scripts/start-cortex.sh", &[], false)
}

#[test]
fn deleting_pid_and_lock_files_while_everything_runs_never_starts_a_second_fleet() {
    let f = Fleet::new("[worker]\ngrace_seconds = 0.5\n");
    let _leftovers = KillLeftovers(f.h.path().to_path_buf());
    f.ok(&["start"]);
    assert_one_each(&f, "after start");

    let log = f.h.join("marks.log");
    let script = format!(
        "echo \"start $CORTEX_TASK_ID $CORTEX_DISPATCH_ID\" >> {l}; sleep 0.4; echo \"end $CORTEX_TASK_ID\" >> {l}",
        l = log.display()
    );
    let ids: Vec<String> = (0..12)
        .map(|i| {
            f.ok(&["task", "add", "--description", &format!("t{i}"), "--", "sh", "-c", &script]).trim().to_string()
        })
        .collect();
    wait_until(Duration::from_secs(60), "a task to start", || {
        std::fs::read_to_string(&log).is_ok_and(|s| !s.is_empty())
    });

    // The operator's "cleanup": every PID file, then every lock file.
    for d in cortex::base::daemon_name::NAMES {
        std::fs::remove_file(f.h.join(&format!("run/{d}.pid"))).unwrap();
    }
    // `rm -rf`: a daemon may create a lock file between the listing and the rmdir (the
    // directory is then not empty); the operator runs it again, as this does.
    wait_until(Duration::from_secs(10), "coordination/.locks removed", || {
        match std::fs::remove_dir_all(f.h.join("coordination/.locks")) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => false,
            Err(e) => panic!("rm -rf coordination/.locks: {e}"),
        }
    });

    let st = f.run(&["status"]);
    let s = text(&st.stdout);
    assert!(s.contains("worker: RUNNING") && !s.contains("STOPPED"), "status still finds the daemons:\n{s}");
    let fix = f.run(&["health-check", "--fix"]);
    assert_eq!(fix.status.code(), Some(0), "healthy: {}{}", text(&fix.stdout), text(&fix.stderr));
    let out = start_script(&f);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("already running"), "{}", text(&out.stdout));
    assert_one_each(&f, "after health-check --fix and start-cortex.sh");

    // Each daemon writes its PID file again within a second.
    // (Within a second when the machine is idle; a loaded test machine gets ten.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let last = cortex::base::daemon_name::NAMES
            .iter()
            .filter_map(|d| {
                let file = std::fs::read_to_string(f.h.join(&format!("run/{d}.pid"))).ok();
                let held = f.pid(d);
                let in_file = file.as_deref().and_then(|s| s.trim().parse::<u32>().ok());
                let ok = in_file.is_some() && in_file == held;
                (!ok).then(|| format!("{d}: file {file:?}, lock holder {held:?}"))
            })
            .collect::<Vec<_>>();
        if last.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "PID files not written again: {last:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until(Duration::from_secs(120), "every task finished", || {
        let all: serde_json::Value = serde_json::from_str(&f.ok(&["task", "list", "--all", "--json"])).unwrap();
        let tasks = all["tasks"].as_array().cloned().unwrap_or_default();
        ids.iter().all(|id| {
            tasks.iter().any(|t| t["task_id"] == id.as_str() && matches!(t["status"].as_str(), Some("completed")))
        })
    });
    let marks = std::fs::read_to_string(&log).unwrap();
    for id in &ids {
        let starts = marks
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(id.as_str()) && l.starts_with("start"))
            .count();
        assert_eq!(starts, 1, "task {id} ran {starts} times:\n{marks}");
    }
    assert_one_each(&f, "after the tasks");
    let st = f.ok(&["status"]);
    for d in cortex::base::daemon_name::NAMES {
        assert!(st.contains(&format!("{d}: RUNNING")), "{st}");
    }

    f.ok(&["stop"]);
    // Each has released its PID file; the processes are gone a moment later.
    let mut left = HashMap::new();
    let gone_in_time = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < gone_in_time {
        left = daemon_processes(f.h.path());
        if left.values().all(|v| v.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(left.values().all(|v| v.is_empty()), "stop left {left:?}");
}
