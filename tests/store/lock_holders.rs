//! Locks and PID files against hostile or careless changes, with real processes: a waiter never
//! writes through a lock path swapped for a symbolic link (renameat2 exchange); `cortex stop`
//! never signals a process a planted PID file names; deleting a held lock file never gives two
//! holders; a lock timeout names the real holder from the kernel's lock table; `cortex locks`.

use crate::support::reexec::{self, child, kill_hard, param, param_name, report};
use crate::support::*;
use cortex::Home;
use cortex::store::holders;
use cortex::store::lock::{LockName, Mode};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// util-linux `flock` holding a file (a process that is not Cortex), in its own process group;
/// the group (flock and its `sleep`) is killed when dropped.
struct FlockHolder(Child);

impl FlockHolder {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for FlockHolder {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Holds `path` with util-linux `flock` (`-o`: only flock itself holds the lock, not its
/// `sleep`); waits until the kernel's lock table shows it.
fn flock_holder(path: &Path) -> FlockHolder {
    use std::os::unix::process::CommandExt;
    let c = Command::new("flock")
        .args(["-x", "-o"])
        .arg(path)
        .args(["sleep", "300"])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run util-linux flock");
    let pid = c.id();
    wait_until(Duration::from_secs(10), "flock to hold the file", || {
        holders::all_holders(path).iter().any(|h| h.pid == pid && h.exclusive)
    });
    FlockHolder(c)
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => !s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

/// 16.1: while a waiter waits, the lock path is exchanged with a symbolic link to a victim file
/// in a tight loop. The waiter must never open the link: the victim stays byte for byte.
#[test]
fn a_waiter_never_writes_through_a_lock_path_swapped_for_a_link() {
    let h = TestHome::new();
    let dir = h.join("coordination/.locks");
    let lock = dir.join("task-queue.lock");
    let link = dir.join("task-queue.swap");
    let victim = h.join("victim.txt");
    let precious = "precious content that must never change\n";
    std::fs::write(&victim, precious).unwrap();
    for run in 0..5 {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let mut holder = Some(flock_holder(&lock));
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let attacker = std::thread::spawn({
            let (stop, swaps, lock, link) = (stop.clone(), swaps.clone(), lock.clone(), link.clone());
            move || {
                use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
                while !stop.load(Ordering::Relaxed) {
                    renameat2(AT_FDCWD, &lock, AT_FDCWD, &link, RenameFlags::RENAME_EXCHANGE).expect("exchange");
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // Waiters come and go while the holder holds the lock, then once it is free; on a loaded
        // machine the attacker may get little CPU, so the waiters go on until it has swapped a
        // hundred times (within a deadline).
        let mut outcomes = Vec::new();
        let started = std::time::Instant::now();
        let mut attempt = 0;
        while attempt < 40 || (swaps.load(Ordering::Relaxed) <= 100 && started.elapsed() < Duration::from_secs(60)) {
            if attempt == 30 {
                drop(holder.take());
            }
            attempt += 1;
            let r = cortex::store::lock::lock_at(&lock, TASK_QUEUE, Mode::Exclusive, Duration::from_millis(20));
            outcomes.push(r.map(|_| "locked".to_string()).unwrap_or_else(|e| e.to_string()));
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), precious, "run {run}: the victim was written");
        }
        stop.store(true, Ordering::Relaxed);
        attacker.join().unwrap();
        drop(holder);
        assert!(swaps.load(Ordering::Relaxed) > 100, "the attack ran");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), precious, "run {run}: the victim was written");
        for o in &outcomes {
            assert!(
                o == "locked" || o.contains("timed out") || o.contains("symbolic link"),
                "run {run}: an unexpected outcome: {o}"
            );
        }
        // Put the real lock file back under its name for the next run.
        if std::fs::symlink_metadata(&lock).is_ok_and(|m| m.file_type().is_symlink()) {
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &lock,
                nix::fcntl::AT_FDCWD,
                &link,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .unwrap();
        }
    }
}

/// 16.2: a regular `run/metrics.pid` holds a stranger's PID and its flock is held by a helper.
/// `cortex stop metrics` must signal neither, and say why.
#[test]
fn stop_never_signals_the_process_a_planted_pid_file_names() {
    let h = TestHome::new();
    let mut stranger = Command::new("sleep").arg("300").stdin(Stdio::null()).spawn().unwrap();
    let pid_file = h.join("run/metrics.pid");
    std::fs::create_dir_all(h.join("run")).unwrap();
    std::fs::write(&pid_file, format!("{}\n", stranger.id())).unwrap();
    let helper = flock_holder(&pid_file);
    let out = h.cortex(&["stop", "metrics"]);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "stop must fail: {all}");
    assert!(all.contains(&format!("not signalling PID {}", helper.id())), "names the lock holder: {all}");
    assert!(all.contains("cortex-metrics"), "says what did not match: {all}");
    assert!(alive(stranger.id()), "the stranger was signalled: {all}");
    assert!(alive(helper.id()), "the lock holder was signalled: {all}");
    // `cortex status` names the real holder, not the planted number.
    let status = String::from_utf8_lossy(&h.cortex(&["status"]).stdout).into_owned();
    assert!(!status.contains(&format!("PID {}", stranger.id())), "{status}");
    drop(helper);
    kill_hard(&mut stranger);
}

const TASK_QUEUE: LockName = LockName::TaskQueue;

/// The lock named by the parameter LOCK.
fn lock_param() -> LockName {
    let name = param::<String>("LOCK");
    LockName::parse(&name).unwrap_or_else(|| panic!("no lock named {name:?}"))
}

/// Child: takes lock LOCK (a store lock name) and holds it until its stdin closes.
#[test]
fn child_lock_holder() {
    if reexec::role().as_deref() != Some("holder") {
        return;
    }
    let home = Home::at(param::<String>("HOME"));
    let _guard =
        cortex::store::lock::lock_exclusive(&home, lock_param(), Duration::from_secs(5)).expect("take the lock");
    report("locked");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    report("released");
}

/// Child: tries lock LOCK for WAIT_MS; reports `locked` or the error.
#[test]
fn child_lock_taker() {
    if reexec::role().as_deref() != Some("taker") {
        return;
    }
    let home = Home::at(param::<String>("HOME"));
    let wait = Duration::from_millis(param("WAIT_MS"));
    match cortex::store::lock::lock_exclusive(&home, lock_param(), wait) {
        Ok(_g) => report("locked"),
        Err(e) => report(format!("error {e}")),
    }
}

fn spawn_holder(h: &TestHome, lock: &str) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut c = child(module_path!(), "child_lock_holder", "holder")
        .env(param_name("HOME"), h.path())
        .env(param_name("LOCK"), lock)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("RESULT locked") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the holder exited before locking");
    }
    (c, out)
}

fn take(h: &TestHome, lock: &str, wait_ms: u64) -> String {
    let out = child(module_path!(), "child_lock_taker", "taker")
        .env(param_name("HOME"), h.path())
        .env(param_name("LOCK"), lock)
        .env(param_name("WAIT_MS"), wait_ms.to_string())
        .output()
        .unwrap();
    reexec::results("taker", &out).join("\n")
}

/// 17.1: deleting a held lock file, or the whole `coordination/.locks/`, must never give a
/// second holder: the next acquirer waits for the holder of the deleted file, and gets the lock
/// the moment it lets go.
#[test]
fn deleting_a_held_lock_file_never_gives_two_holders() {
    let h = TestHome::new();
    for remove_dir in [false, true] {
        let (mut holder, _out) = spawn_holder(&h, "task-queue");
        if remove_dir {
            std::fs::remove_dir_all(h.join("coordination/.locks")).unwrap();
        } else {
            std::fs::remove_file(h.join("coordination/.locks/task-queue.lock")).unwrap();
        }
        let got = take(&h, "task-queue", 300);
        assert!(got.starts_with("error") && got.contains("timed out"), "a second holder: {got}");
        assert!(got.contains(&format!("pid {}", holder.id())), "names the real holder: {got}");
        assert!(got.contains("deleted"), "says the lock file was deleted: {got}");
        // `cortex locks` shows it held on its deleted file.
        let locks: serde_json::Value = serde_json::from_str(&h.cortex_ok(&["locks", "--json"])).unwrap();
        let q = locks["locks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["path"] == "coordination/.locks/task-queue.lock")
            .cloned();
        let q = q.expect("task-queue lock listed");
        assert_eq!(q["holders"][0]["pid"], holder.id(), "{q}");
        // The waiter gets it once the holder releases (its stdin closes).
        let waiter = std::thread::spawn({
            let home = h.path().to_path_buf();
            move || {
                let out = child(module_path!(), "child_lock_taker", "taker")
                    .env(param_name("HOME"), home)
                    .env(param_name("LOCK"), "task-queue")
                    .env(param_name("WAIT_MS"), "20000")
                    .output()
                    .unwrap();
                reexec::results("taker", &out).join("\n")
            }
        });
        wait_until(Duration::from_secs(10), "the waiter to wait", || {
            std::fs::read_dir(h.join("coordination/.locks"))
                .is_ok_and(|d| d.flatten().any(|e| e.file_name() == "task-queue.lock"))
        });
        drop(holder.stdin.take());
        let _ = holder.wait();
        assert_eq!(waiter.join().unwrap(), "locked");
    }
}

/// 17.5: with the scheduler lock held by a process that is not Cortex, the timeout names that
/// process (PID and command), not the last Cortex process that wrote its note.
/// `cortex locks --json` shows every lock with its real holder.
#[test]
fn a_lock_timeout_names_the_real_holder_and_cortex_locks_lists_it() {
    let h = TestHome::new();
    h.set_config("store", "lock_timeout_seconds", "0.3");
    h.cortex_ok(&["scheduler", "pause", "--reason", "drill"]);
    let lock = h.join("coordination/.locks/scheduler.lock");
    let note = std::fs::read_to_string(&lock).unwrap();
    assert!(note.starts_with("pid "), "a Cortex process left its note: {note:?}");
    let holder = flock_holder(&lock);
    let out = h.cortex(&["scheduler", "resume"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(err.contains(&format!("held by pid {} (flock)", holder.id())), "names the real holder: {err}");
    assert!(err.contains("last note: pid"), "the note only as a hint: {err}");

    let locks: serde_json::Value = serde_json::from_str(&h.cortex_ok(&["locks", "--json"])).unwrap();
    let all = locks["locks"].as_array().unwrap();
    let s = all.iter().find(|l| l["path"] == "coordination/.locks/scheduler.lock").expect("scheduler lock listed");
    assert_eq!(s["state"], "held", "{s}");
    assert_eq!(s["holders"][0]["pid"], holder.id(), "{s}");
    assert_eq!(s["holders"][0]["command"], "flock", "{s}");
    assert_eq!(s["since_source"], "file_mtime", "the note is not the holder's: {s}");
    let free = all.iter().find(|l| l["path"] == "coordination/.locks/task-queue.lock").expect("task-queue listed");
    assert_eq!(free["state"], "free", "{free}");
    assert!(all.iter().any(|l| l["kind"] == "lock" && l["path"] == "coordination/.locks/worker-types.lock"));
    let text = h.cortex_ok(&["locks"]);
    assert!(text.contains(&format!("held by PID {} (flock, exclusive)", holder.id())), "{text}");
}

/// 17.1, one daemon: its PID file deleted (then replaced by a planted one) while it runs. It is
/// still found by its lock, a second copy refuses to start, it writes its PID file again within a
/// second, and `cortex stop` stops it.
#[test]
fn a_running_daemon_whose_pid_file_is_deleted_is_found_and_never_started_twice() {
    let h = TestHome::new();
    let mut daemon = h.spawn_daemon("metrics");
    let pid = daemon.id();
    let home = Home::at(h.path());
    let pid_file = h.join("run/metrics.pid");
    let running = || matches!(cortex::store::pidfile::status(&home, cortex::base::daemon_name::Daemon::Metrics), Ok(cortex::store::pidfile::PidStatus::Running(p)) if p == pid);
    wait_until(Duration::from_secs(60), "metrics running", || {
        running() && std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == pid.to_string())
    });
    std::fs::remove_file(&pid_file).unwrap();
    assert!(running(), "found by the lock on its deleted PID file");
    // A second copy that started would run for good: it is waited for with a deadline.
    let mut copy = Command::new(bin("cortex-metrics"))
        .arg("--home")
        .arg(h.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while copy.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = copy.kill();
            let _ = copy.wait();
            panic!("a second metrics started beside PID {pid} and ran");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = copy.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(!second.status.success(), "a second metrics started: {err}");
    assert!(err.contains(&format!("PID {pid}")), "names the running daemon: {err}");
    wait_until(Duration::from_secs(5), "the PID file written again", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == pid.to_string())
    });
    // Replaced by a planted file (a rename over it): written again too.
    let planted = h.join("run/planted.tmp");
    std::fs::write(&planted, "1\n").unwrap();
    std::fs::rename(&planted, &pid_file).unwrap();
    wait_until(Duration::from_secs(5), "the PID file written again", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == pid.to_string())
    });
    assert!(running());
    let out = h.cortex(&["stop", "metrics"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let st = daemon.wait().unwrap();
    assert!(st.success(), "stopped by SIGTERM, cleanly: {st}");
}
