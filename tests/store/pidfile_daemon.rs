//! PID files and the daemon skeleton, with the real daemon binaries: a second copy refuses to
//! start; a stale PID file (lock free, any PID in it, even a live one) is taken over;
//! `pidfile::status` tells Absent/Running/Stale by the lock; two homes side by side do not see
//! each other; a daemon logs under agents/logs/system/, reopens its log on SIGHUP, exits 0 on
//! SIGTERM/SIGINT, records daemon_started/daemon_stopped and keeps a ready mark in run/.

use crate::support::reexec::kill_hard;
use crate::support::*;
use cortex::Home;
use cortex::store::pidfile::{PidStatus, status};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn home(h: &TestHome) -> Home {
    Home::at(h.path())
}

/// Starts a daemon and waits until its mark says it is ready.
fn start_ready(h: &TestHome, name: &str) -> Child {
    let child = h.spawn_daemon(name);
    let pid = child.id();
    wait_until(WAIT, &format!("{name} to be ready"), || {
        cortex::store::daemon_mark::read_mark(&home(h), cortex::base::daemon_name::Daemon::parse(name).unwrap())
            .is_some_and(|m| m.pid == pid && m.ready_at.is_some())
    });
    child
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal the daemon");
}

fn pid_in_file(h: &TestHome, name: &str) -> String {
    std::fs::read_to_string(h.join(&format!("run/{name}.pid"))).unwrap().trim().to_string()
}

#[test]
fn a_second_instance_refuses_to_start() {
    let h = TestHome::new();
    let mut first = start_ready(&h, "worker");
    let second = Command::new(bin("cortex-worker"))
        .arg("--home")
        .arg(h.path())
        .env_remove("CORTEX_HOME")
        .env_remove("COMMIT_RELAY_HOME")
        .stdin(Stdio::null())
        .output()
        .expect("run a second worker");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "the second copy must fail: {stderr}");
    assert!(stderr.contains("already running"), "clear message: {stderr}");
    assert!(stderr.contains(&format!("PID {}", first.id())), "names the running PID: {stderr}");
    assert!(first.try_wait().unwrap().is_none(), "the first daemon keeps running");
    assert_eq!(pid_in_file(&h, "worker"), first.id().to_string(), "the PID file is untouched");
    assert_eq!(status(&home(&h), cortex::base::daemon_name::Daemon::Worker).unwrap(), PidStatus::Running(first.id()));
    assert_eq!(h.events_of("daemon_started").len(), 1, "the refused copy records no start");
    assert!(terminate(&mut first).success());
}

#[test]
fn a_stale_pid_file_is_taken_over_whatever_pid_it_holds() {
    let h = TestHome::new();
    assert_eq!(status(&home(&h), cortex::base::daemon_name::Daemon::Metrics).unwrap(), PidStatus::Absent);
    // PID 1 and this test's own PID are alive: only the free lock makes the file stale.
    for fake in [1, std::process::id()] {
        std::fs::write(h.join("run/metrics.pid"), format!("{fake}\n")).unwrap();
        assert_eq!(
            status(&home(&h), cortex::base::daemon_name::Daemon::Metrics).unwrap(),
            PidStatus::Stale(Some(fake))
        );
        let mut d = start_ready(&h, "metrics");
        assert_eq!(pid_in_file(&h, "metrics"), d.id().to_string());
        assert_eq!(status(&home(&h), cortex::base::daemon_name::Daemon::Metrics).unwrap(), PidStatus::Running(d.id()));
        let pid = d.id();
        kill_hard(&mut d);
        assert_eq!(
            status(&home(&h), cortex::base::daemon_name::Daemon::Metrics).unwrap(),
            PidStatus::Stale(Some(pid)),
            "SIGKILL leaves it stale"
        );
    }
}

#[test]
fn status_follows_the_lock_through_a_clean_stop() {
    let h = TestHome::new();
    assert_eq!(status(&home(&h), cortex::base::daemon_name::Daemon::Pm).unwrap(), PidStatus::Absent);
    let mut d = start_ready(&h, "pm");
    let pid = d.id();
    assert_eq!(status(&home(&h), cortex::base::daemon_name::Daemon::Pm).unwrap(), PidStatus::Running(pid));
    assert!(terminate(&mut d).success());
    assert_eq!(status(&home(&h), cortex::base::daemon_name::Daemon::Pm).unwrap(), PidStatus::Stale(Some(pid)));
}

#[test]
fn two_homes_side_by_side_are_independent() {
    let (a, b) = (TestHome::new(), TestHome::new());
    let mut da = start_ready(&a, "heartbeat");
    let mut db = start_ready(&b, "heartbeat");
    assert_eq!(status(&home(&a), cortex::base::daemon_name::Daemon::Heartbeat).unwrap(), PidStatus::Running(da.id()));
    assert_eq!(status(&home(&b), cortex::base::daemon_name::Daemon::Heartbeat).unwrap(), PidStatus::Running(db.id()));
    let pid_a = da.id();
    assert!(terminate(&mut da).success());
    assert_eq!(status(&home(&a), cortex::base::daemon_name::Daemon::Heartbeat).unwrap(), PidStatus::Stale(Some(pid_a)));
    assert_eq!(
        status(&home(&b), cortex::base::daemon_name::Daemon::Heartbeat).unwrap(),
        PidStatus::Running(db.id()),
        "b is untouched"
    );
    assert!(b.events_of("daemon_stopped").is_empty(), "a's stop is not recorded in b");
    assert!(terminate(&mut db).success());
}

#[test]
fn daemon_logs_reopens_on_sighup_and_stops_cleanly() {
    let h = TestHome::new();
    let mut d = start_ready(&h, "coordinator");
    let pid = d.id();
    let mark =
        cortex::store::daemon_mark::read_mark(&home(&h), cortex::base::daemon_name::Daemon::Coordinator).unwrap();
    assert_eq!(mark.name, "coordinator");
    assert!(mark.ready_at.is_some(), "ready_at is a timestamp");

    let log = h.join("agents/logs/system/coordinator-daemon.log");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_until(WAIT, "the start line in the daemon log", || read(&log).contains("coordinator daemon starting"));

    // logrotate's way: rename the file away, then SIGHUP.
    let rotated = h.join("agents/logs/system/coordinator-daemon.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal(&d, Signal::SIGHUP);
    wait_until(WAIT, "new lines in a new log file after SIGHUP", || read(&log).contains("log reopened on SIGHUP"));
    assert!(!read(&rotated).contains("log reopened"), "the renamed file gets no new lines");

    signal(&d, Signal::SIGTERM);
    let st = wait_exit(&mut d);
    assert_eq!(st.code(), Some(0), "SIGTERM exits 0");
    assert!(read(&log).contains("coordinator daemon stopped"), "the stop is logged in the new file");
    assert!(!h.join("run/coordinator.state.json").exists(), "the daemon removes its own mark");
    for t in ["daemon_started", "daemon_stopped"] {
        let ev = h.events_of(t);
        assert_eq!(ev.len(), 1, "{t}");
        assert_eq!(
            (ev[0]["data"]["daemon"].as_str(), ev[0]["data"]["pid"].as_u64()),
            (Some("coordinator"), Some(pid as u64))
        );
        assert_eq!(ev[0]["source"], "coordinator");
    }

    // SIGINT is a clean stop too.
    let mut d = start_ready(&h, "coordinator");
    signal(&d, Signal::SIGINT);
    assert_eq!(wait_exit(&mut d).code(), Some(0), "SIGINT exits 0");
    assert_eq!(h.events_of("daemon_stopped").len(), 2);
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let mut st = None;
    wait_until(WAIT, "the daemon to exit", || {
        st = child.try_wait().unwrap();
        st.is_some()
    });
    st.unwrap()
}

#[test]
fn concurrent_starts_leave_exactly_one_daemon() {
    let h = TestHome::new();
    let mut copies: Vec<Child> = (0..4).map(|_| h.spawn_daemon("integration")).collect();
    // Status checks (shared locks held for an instant) race with the starts.
    let mut running = None;
    wait_until(WAIT, "one copy to run and the others to give up", || {
        let _ = status(&home(&h), cortex::base::daemon_name::Daemon::Integration);
        let alive: Vec<u32> =
            copies.iter_mut().filter_map(|c| c.try_wait().unwrap().is_none().then(|| c.id())).collect();
        running = (alive.len() == 1).then(|| alive[0]);
        running.is_some()
    });
    let winner = running.unwrap();
    wait_until(WAIT, "the winner to be ready", || {
        cortex::store::daemon_mark::read_mark(&home(&h), cortex::base::daemon_name::Daemon::Integration)
            .is_some_and(|m| m.pid == winner && m.ready_at.is_some())
    });
    assert_eq!(status(&home(&h), cortex::base::daemon_name::Daemon::Integration).unwrap(), PidStatus::Running(winner));
    assert_eq!(pid_in_file(&h, "integration"), winner.to_string());
    for mut c in copies {
        if c.id() == winner {
            assert!(terminate(&mut c).success());
            continue;
        }
        let out = c.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("already running"), "a losing copy says why: {stderr}");
    }
    assert_eq!(h.events_of("daemon_started").len(), 1);
}

/// Blocked flock requests on the file with inode `ino` (the `->` lines of /proc/locks).
fn blocked_waiters(ino: u64) -> usize {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().filter(|l| l.contains("->") && l.split_whitespace().any(|f| f.ends_with(&format!(":{ino}")))).count()
}

/// Regression: two copies that both waited behind a status check (a shared lock held for a
/// moment) raced after it ended; the loser failed with a bare "cannot lock ... would block"
/// instead of saying the daemon is already running.
#[test]
fn copies_waiting_behind_a_status_check_still_refuse_clearly() {
    use std::os::unix::fs::MetadataExt;
    let h = TestHome::new();
    let pid_path = h.join("run/auto-fix.pid");
    std::fs::write(&pid_path, "").unwrap();
    let checker = std::fs::File::open(&pid_path).unwrap();
    checker.lock_shared().unwrap();
    let ino = std::fs::metadata(&pid_path).unwrap().ino();
    let mut copies: Vec<Child> = (0..2).map(|_| h.spawn_daemon("auto-fix")).collect();
    wait_until(WAIT, "both copies to wait for the PID file lock", || blocked_waiters(ino) >= 2);
    checker.unlock().unwrap();
    let mut winner = None;
    wait_until(WAIT, "one copy to run and the other to give up", || {
        let alive: Vec<u32> =
            copies.iter_mut().filter_map(|c| c.try_wait().unwrap().is_none().then(|| c.id())).collect();
        let exited = copies.len() - alive.len();
        winner = (alive.len() == 1 && exited == 1).then(|| alive[0]);
        winner.is_some()
    });
    for mut c in copies {
        if Some(c.id()) == winner {
            assert!(terminate(&mut c).success());
            continue;
        }
        let out = c.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("already running"), "the losing copy must say why: {stderr}");
        assert!(stderr.contains(&format!("PID {}", winner.unwrap())), "and name the winner: {stderr}");
    }
}
