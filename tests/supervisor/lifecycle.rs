//! `cortex start`, `stop`, `status`, `health-check` with the real daemon binaries.
use crate::support::fleet::Fleet;
use crate::support::supervisor::*;
use crate::support::*;
use std::time::{Duration, Instant};

#[test]
fn start_all_status_running_double_start_noop_stop_all() {
    let f = Fleet::new("");
    let out = f.ok(&["start"]);
    for d in cortex::base::daemon_name::NAMES {
        assert!(out.contains(&format!("{d}: started (PID ")), "{out}");
    }
    let status = f.ok(&["status"]);
    for d in cortex::base::daemon_name::NAMES {
        let line = status.lines().find(|l| l.starts_with(&format!("{d}: "))).unwrap_or_else(|| panic!("{status}"));
        assert!(line.starts_with(&format!("{d}: RUNNING (PID {}, uptime ", f.pid(d).unwrap())), "{line}");
        assert!(line.contains(" MB, ") && line.ends_with("% CPU)"), "{line}");
    }
    assert!(status.contains("Scheduler: running") && status.contains("Tasks: 0 queued, 0 in progress"), "{status}");
    assert!(status.contains(&format!("API: http://127.0.0.1:{}", f.api_port)), "{status}");
    let json: serde_json::Value = serde_json::from_str(&f.ok(&["--json", "status"])).unwrap();
    assert_eq!(json["all_running"], true);
    assert_eq!(json["daemons"][0]["state"], "running");

    // A second start changes nothing.
    let pids: Vec<u32> = cortex::base::daemon_name::NAMES.iter().map(|d| f.pid(d).unwrap()).collect();
    let again = f.ok(&["start"]);
    assert!(again.contains(&format!("worker: already running (PID {})", pids[0])), "{again}");
    let after: Vec<u32> = cortex::base::daemon_name::NAMES.iter().map(|d| f.pid(d).unwrap()).collect();
    assert_eq!(pids, after);

    let stopped = f.ok(&["stop"]);
    assert!(
        stopped.find("api: stopped").unwrap() < stopped.find("worker: stopped").unwrap(),
        "reverse order: {stopped}"
    );
    for p in pids {
        wait_until(Duration::from_secs(5), "daemon process gone", || gone(p));
    }
    let out = f.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("worker: STOPPED"), "{}", text(&out.stdout));
    assert!(!f.h.join("run/worker.pid").exists(), "stop removes its own PID file");
}

#[test]
fn stop_kills_a_daemon_that_ignores_sigterm_after_the_timeout() {
    let f = Fleet::new("");
    let out = f.run_env(&["start", "worker"], &[("CORTEX_TEST_IGNORE_SIGTERM", "worker")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid = f.pid("worker").unwrap();
    let t0 = Instant::now();
    let out = f.ok(&["stop", "worker", "--timeout", "1"]);
    let took = t0.elapsed();
    assert!(out.contains(&format!("worker: killed (PID {pid} ignored SIGTERM for 1.0s")), "{out}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "{took:?}");
    wait_until(Duration::from_secs(5), "worker gone", || gone(pid));
    assert_eq!(f.h.events_of("daemon_killed").len(), 1);

    // --force does not wait for SIGTERM at all.
    f.run_env(&["start", "worker"], &[("CORTEX_TEST_IGNORE_SIGTERM", "worker")]);
    let pid = f.pid("worker").unwrap();
    let t0 = Instant::now();
    let out = f.ok(&["stop", "--force"]);
    assert!(out.contains(&format!("worker: killed (PID {pid}, --force)")), "{out}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

#[test]
fn sigkilled_daemon_is_stale_and_start_takes_it_over() {
    let f = Fleet::new("");
    f.ok(&["start", "heartbeat", "metrics"]);
    let pid = f.pid("heartbeat").unwrap();
    sigkill(pid);
    wait_until(
        Duration::from_secs(5),
        "heartbeat stale",
        || matches!(f.status_of("heartbeat"), cortex::store::pidfile::PidStatus::Stale(Some(p)) if p == pid),
    );
    let out = f.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("heartbeat: STALE (PID file exists but process dead)"), "{}", text(&out.stdout));
    let out = f.ok(&["start", "heartbeat"]);
    assert!(out.contains(&format!("took over the stale PID file of PID {pid}")), "{out}");
    let new = f.ready("heartbeat").unwrap();
    assert_ne!(new, pid);
    // Stopping a stale one only tidies its file.
    sigkill(f.pid("metrics").unwrap());
    wait_until(Duration::from_secs(5), "metrics stale", || {
        matches!(f.status_of("metrics"), cortex::store::pidfile::PidStatus::Stale(_))
    });
    let out = f.ok(&["stop", "metrics"]);
    assert!(out.contains("metrics: was not running; removed its stale PID file"), "{out}");
    assert!(!f.h.join("run/metrics.pid").exists());
}

#[test]
fn start_reports_a_daemon_that_never_gets_ready_with_its_log() {
    // The coordinator starts with the fleet's generous ready timeout (on a loaded machine a debug
    // build can take more than 2 s); only the start that must time out gets 2 s.
    let f = Fleet::new("");
    f.ok(&["start", "coordinator"]);
    std::fs::write(f.h.join("cortex.toml"), "[supervisor]\nready_timeout_seconds = 2.0\n").unwrap();
    let out = f.run_env(&["start", "metrics", "coordinator"], &[("CORTEX_TEST_NEVER_READY", "metrics")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let s = text(&out.stdout);
    assert!(s.contains("metrics: FAILED to start: not ready after 2.0s"), "{s}");
    assert!(s.contains("last lines of agents/logs/system/metrics-daemon.log"), "{s}");
    assert!(s.contains("coordinator: already running"), "{s}");
    assert!(f.pid("metrics").is_none(), "a daemon that failed to start is not left running");
}

#[test]
fn health_check_exit_codes_and_fix() {
    let f = Fleet::new("[daemons]\ndisabled = [\"pm\"]\n");
    assert_eq!(f.run(&["health-check"]).status.code(), Some(2), "nothing runs: down");
    f.ok(&["start"]);
    assert!(f.pid("pm").is_none(), "disabled daemons are not started");
    let out = f.run(&["health-check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("Cortex is healthy"));

    let pid = f.pid("metrics").unwrap();
    sigkill(pid);
    wait_until(Duration::from_secs(5), "metrics dead", || f.pid("metrics").is_none());
    let out = f.run(&["--json", "health-check"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "degraded");

    let out = f.run(&["health-check", "--fix"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("Restarting dead daemon: metrics"), "{}", text(&out.stdout));
    assert!(f.ready("metrics").is_some());

    // An operator-stopped daemon is degraded but --fix leaves it stopped.
    f.ok(&["stop", "integration"]);
    let out = f.run(&["health-check", "--fix"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(f.pid("integration").is_none());

    f.ok(&["stop", "worker"]);
    assert_eq!(f.run(&["health-check"]).status.code(), Some(2), "no worker: down");
}

#[test]
fn two_homes_never_touch_each_others_daemons() {
    let a = Fleet::new("");
    let b = Fleet::new("");
    a.ok(&["start", "worker", "heartbeat"]);
    b.ok(&["start", "worker", "heartbeat"]);
    let b_pids = (b.pid("worker").unwrap(), b.pid("heartbeat").unwrap());
    let a_pid = a.pid("worker").unwrap();
    let hup = a.ok(&["logs", "reopen"]);
    assert!(hup.contains(&format!("worker: sent SIGHUP (PID {a_pid})")) && hup.lines().count() == 2, "{hup}");
    a.ok(&["stop", "--force"]);
    wait_until(Duration::from_secs(5), "home A's worker gone", || gone(a_pid));
    assert_eq!((b.pid("worker").unwrap(), b.pid("heartbeat").unwrap()), b_pids);
    let status = text(&b.run(&["status"]).stdout);
    assert!(status.contains("worker: RUNNING"), "{status}");
    wait_until(Duration::from_secs(5), "A's worker reopened its log", || {
        std::fs::read_to_string(a.h.join("agents/logs/system/worker-daemon.log"))
            .unwrap_or_default()
            .contains("log reopened")
    });
    assert!(
        !std::fs::read_to_string(b.h.join("agents/logs/system/worker-daemon.log")).unwrap().contains("log reopened")
    );
}
