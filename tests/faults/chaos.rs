//! Chaos soak: a full Cortex (`cortex start`, pm included) runs N tasks while a random daemon is
//! SIGKILLed every 0.5 s (pm restarts it; the test restarts pm), the scheduler is paused and
//! resumed at random moments, `cortex backup` runs, and a separate reader process parses every
//! coordination file continuously. At the end: every task terminal exactly once, no task ran
//! twice at once, attempts within max_attempts, no dispatch while paused, the budget balances,
//! no parse failure, every backup verifies and restores into a home that passes `validate`.
//!
//! Short form (200 tasks) in the normal test run; `CORTEX_CHAOS_LONG=1` runs 1,000 tasks
//! (`CORTEX_CHAOS_TASKS=N` sets N); `scripts/chaos.sh` runs the long form on a release build.
use crate::support::reexec;
use crate::support::task::configure;
use crate::support::*;
use cortex::base::clock::{Timestamp, parse_ts};
use cortex::domain::task::model::{Task, TaskQueue};
use cortex::domain::task::ops::{NewTask, add_task};
use cortex::store::pidfile::{self, PidStatus};
use cortex::{Home, Store};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What a task does on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    /// Exits 1 on its first attempt, succeeds on the next.
    FailFirst,
    /// Always exits 1 (fails after max_attempts).
    FailAlways,
    /// Ignores SIGTERM.
    IgnoreTerm,
    /// Ignores SIGTERM and outlives its timeout: every attempt ends TERM, grace, KILL (`timeout`).
    Timeout,
}

impl Kind {
    fn of(i: usize) -> Kind {
        if i % 20 == 19 {
            return Kind::Timeout;
        }
        match i % 10 {
            0 | 5 => Kind::FailFirst,
            3 => Kind::FailAlways,
            7 | 8 => Kind::IgnoreTerm,
            _ => Kind::Ok,
        }
    }

    fn max_attempts(self) -> u32 {
        if matches!(self, Kind::FailAlways | Kind::Timeout) { 2 } else { 3 }
    }

    fn expected(self) -> &'static str {
        if matches!(self, Kind::FailAlways | Kind::Timeout) { "failed" } else { "completed" }
    }

    fn timeout_seconds(self) -> Option<f64> {
        (self == Kind::Timeout).then_some(0.5)
    }
}

/// A home on tmpfs when there is one (this test checks consistency under faults, not the disk).
fn shm_home() -> TestHome {
    let h = match tempfile::Builder::new().prefix("cortex-chaos-").tempdir_in("/dev/shm") {
        Ok(dir) => TestHome::in_dir(dir),
        Err(_) => TestHome::empty(),
    };
    h.cortex_ok(&["init"]);
    h
}

fn configure_chaos(h: &TestHome, port: u16, slots: u32) {
    let bind = format!("\"127.0.0.1:{port}\"");
    configure(
        h,
        &[
            ("api", "bind", &bind),
            ("retry", "backoff_strategy", "\"none\""),
            ("retry", "backoff_base_seconds", "0.1"),
            ("retry", "backoff_max_seconds", "0.5"),
            ("worker", "grace_seconds", "0.3"),
            ("daemons", "heartbeat_interval_seconds", "1"),
            ("supervisor", "backoff_initial_seconds", "0.1"),
            ("supervisor", "backoff_max_seconds", "0.5"),
            ("supervisor", "start_limit", "1000000"),
            ("supervisor", "stable_uptime_seconds", "1"),
            ("supervisor", "ready_timeout_seconds", "60.0"),
            ("heartbeat", "interval_seconds", "1"),
            ("metrics", "interval_seconds", "1"),
            ("integration", "interval_seconds", "1"),
            ("failure_pattern", "interval_seconds", "1"),
            ("auto_fix", "interval_seconds", "1"),
            ("scheduler", "tick_interval_seconds", "1"),
        ],
    );
    configure(h, &[("scheduler", "max_concurrent_dispatches", &slots.to_string())]);
    h.cortex_ok(&["config", "check"]);
    std::fs::write(
        h.join("coordination/token-budget.json"),
        r#"{"total": 1000000000, "used": 0, "available": 1000000000}"#,
    )
    .unwrap();
    // A third of the tasks fail on purpose: the breaker of their worker type must not stop the run.
    let policy = h.join("coordination/config/worker-restart-policy.json");
    let mut p: Value = serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
    p["circuit_breaker"]["failure_threshold"] = 1_000_000.into();
    std::fs::write(&policy, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
}

/// The task's shell script: start mark, sleep, usage, end mark, exit (one `printf` = one
/// `write` on an O_APPEND descriptor per mark).
fn script(log: &Path, kind: Kind, sleep_ms: u64, tokens: u64) -> String {
    let mark = |what: &str| {
        format!(
            "printf '{what} %s %s %s %s\\n' \"$CORTEX_TASK_ID\" \"$CORTEX_ATTEMPT\" \"$(date +%s%N)\" \
             \"$CORTEX_DISPATCH_ID\" >> '{}'",
            log.display()
        )
    };
    let trap = if matches!(kind, Kind::IgnoreTerm | Kind::Timeout) { "trap '' TERM; " } else { "" };
    let sleep_ms = if kind == Kind::Timeout { 5000 } else { sleep_ms };
    let exit = match kind {
        Kind::FailFirst => "[ \"$CORTEX_ATTEMPT\" -gt 1 ] || exit 1",
        Kind::FailAlways => "exit 1",
        _ => "exit 0",
    };
    format!(
        "{trap}{}; sleep {}.{:03}; echo {tokens} > \"$CORTEX_USAGE_FILE\"; {}; {exit}",
        mark("start"),
        sleep_ms / 1000,
        sleep_ms % 1000,
        mark("end")
    )
}

/// Shared record of what the chaos threads did.
#[derive(Default)]
struct Chaos {
    kills: BTreeMap<String, u32>,
    pm_restarts: u32,
    pauses: Vec<(Timestamp, Timestamp)>,
    backups: Vec<PathBuf>,
    errors: Vec<String>,
}

fn run_cortex(h: &TestHome, args: &[&str]) -> Result<String, String> {
    let out = h.cortex(args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "cortex {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn json_ts(out: &str, field: &str) -> Result<Timestamp, String> {
    let v: Value = serde_json::from_str(out).map_err(|e| format!("{out}: {e}"))?;
    v[field].as_str().and_then(parse_ts).ok_or_else(|| format!("no {field} in {out}"))
}

/// Sleeps up to `d`, returning early when `stop` is set.
fn nap(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())));
    }
}

/// SIGKILLs a random running daemon every 0.5 s; restarts pm when it was the one.
fn killer(h: &TestHome, stop: &AtomicBool, chaos: &Mutex<Chaos>) {
    let home = Home::at(h.path());
    while !stop.load(Ordering::SeqCst) {
        nap(stop, Duration::from_millis(500));
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let running: Vec<(&str, u32)> = cortex::base::daemon_name::NAMES
            .iter()
            .filter_map(|d| match pidfile::status(&home, cortex::base::daemon_name::Daemon::parse(d).unwrap()) {
                Ok(PidStatus::Running(p)) if p != 0 => Some((*d, p)),
                _ => None,
            })
            .collect();
        if running.is_empty() {
            continue;
        }
        let (name, pid) = running[fastrand::usize(..running.len())];
        let killed =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).is_ok();
        if !killed {
            continue;
        }
        *chaos.lock().unwrap().kills.entry(name.to_string()).or_default() += 1;
        if name == "pm" {
            // pm is nobody's child: the operator (here, the test) starts it again.
            wait_until(
                Duration::from_secs(10),
                "killed pm released its PID file",
                || !matches!(pidfile::status(&home, cortex::base::daemon_name::Daemon::Pm), Ok(PidStatus::Running(p)) if p == pid),
            );
            match run_cortex(h, &["start", "pm"]) {
                Ok(_) => chaos.lock().unwrap().pm_restarts += 1,
                Err(e) => chaos.lock().unwrap().errors.push(e),
            }
        }
    }
}

/// Pauses and resumes the scheduler at random moments, recording the times the commands returned.
fn pauser(h: &TestHome, stop: &AtomicBool, chaos: &Mutex<Chaos>) {
    while !stop.load(Ordering::SeqCst) {
        nap(stop, Duration::from_millis(300 + fastrand::u64(..1500)));
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let paused_at = match run_cortex(h, &["--json", "scheduler", "pause", "--reason", "chaos"])
            .and_then(|o| json_ts(&o, "paused_at"))
        {
            Ok(t) => t,
            Err(e) => {
                chaos.lock().unwrap().errors.push(e);
                continue;
            }
        };
        std::thread::sleep(Duration::from_millis(100 + fastrand::u64(..700)));
        // Resume whatever happens: a failed resume is retried until it works.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match run_cortex(h, &["--json", "scheduler", "resume"]).and_then(|o| json_ts(&o, "resumed_at")) {
                Ok(resumed_at) => {
                    chaos.lock().unwrap().pauses.push((paused_at, resumed_at));
                    break;
                }
                Err(e) => {
                    chaos.lock().unwrap().errors.push(e);
                    assert!(Instant::now() < deadline, "cannot resume the scheduler");
                }
            }
        }
    }
}

/// Runs `cortex backup` every 1–3 s.
fn backupper(h: &TestHome, stop: &AtomicBool, chaos: &Mutex<Chaos>) {
    while !stop.load(Ordering::SeqCst) {
        nap(stop, Duration::from_millis(1000 + fastrand::u64(..2000)));
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let r = run_cortex(h, &["--json", "backup", "--keep", "0"]).and_then(|o| {
            let v: Value = serde_json::from_str(&o).map_err(|e| format!("{o}: {e}"))?;
            v["path"].as_str().map(PathBuf::from).ok_or_else(|| format!("no path in {o}"))
        });
        match r {
            Ok(p) => chaos.lock().unwrap().backups.push(p),
            Err(e) => chaos.lock().unwrap().errors.push(e),
        }
    }
}

/// Adds the tasks over the first seconds of the run, in small batches.
fn adder(store: &Store, log: &Path, n: usize, stop: &AtomicBool, ids: &Mutex<Vec<(String, Kind)>>) {
    for i in 0..n {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let kind = Kind::of(i);
        let t = add_task(
            store,
            NewTask {
                description: format!("chaos {i} {kind:?}"),
                command: vec!["sh".into(), "-c".into(), script(log, kind, fastrand::u64(..=200), 1 + (i as u64 % 50))],
                budget: Some(100),
                max_attempts: Some(kind.max_attempts()),
                timeout_seconds: kind.timeout_seconds(),
                ..NewTask::default()
            },
        )
        .unwrap_or_else(|e| panic!("add task {i}: {e}"));
        ids.lock().unwrap().push((t.task_id, kind));
        if i % 20 == 19 {
            nap(stop, Duration::from_millis(100));
        }
    }
}

/// The finished tasks of the archive (last record of each id) and every raw archive line per id.
fn archived(store: &Store) -> (HashMap<String, Task>, HashMap<String, Vec<Value>>) {
    let (tasks, _) = cortex::domain::task::archive::all(store).unwrap();
    let mut lines: HashMap<String, Vec<Value>> = HashMap::new();
    // The sealed segments (oldest first) and then the active file.
    let mut text = String::new();
    for seg in cortex::domain::task::archive::segment::list(store) {
        text.push_str(&std::fs::read_to_string(&seg.path).unwrap_or_default());
    }
    text.push_str(&std::fs::read_to_string(store.home().coord("task-archive.jsonl")).unwrap_or_default());
    for l in text.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(l) {
            lines.entry(v["task_id"].as_str().unwrap_or("").to_string()).or_default().push(v);
        }
    }
    (tasks.into_iter().map(|t| (t.task_id.clone(), t)).collect(), lines)
}

/// Every dispatch spec that ended, from the completed/failed/zombie buckets.
fn ended_specs(h: &TestHome) -> Vec<Value> {
    let mut out = Vec::new();
    for b in ["completed", "failed", "zombie", "active"] {
        let dir = h.join(&format!("coordination/worker-specs/{b}"));
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !cortex::store::atomic::is_temp_name(&name) {
                let mut v: Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
                v["bucket"] = b.into();
                out.push(v);
            }
        }
    }
    out
}

/// One mark of the shared log.
#[derive(Debug, Clone)]
struct Mark {
    start: bool,
    task: String,
    attempt: u32,
    /// Nanoseconds since the epoch (`date +%s%N`).
    ts: i128,
    dispatch: String,
}

fn parse_log(path: &Path) -> (Vec<Mark>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut bad = 0;
    let mut out = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        match (f.as_slice(), f.first().copied()) {
            ([_, task, attempt, ts, dispatch], Some(w @ ("start" | "end")))
                if attempt.parse::<u32>().is_ok() && ts.parse::<i128>().is_ok() =>
            {
                out.push(Mark {
                    start: w == "start",
                    task: task.to_string(),
                    attempt: attempt.parse().unwrap(),
                    ts: ts.parse().unwrap(),
                    dispatch: dispatch.to_string(),
                })
            }
            _ => bad += 1,
        }
    }
    (out, bad)
}

#[test]
fn chaos_soak() {
    if reexec::role().is_some() {
        return;
    }
    let long = std::env::var("CORTEX_CHAOS_LONG").is_ok_and(|v| v == "1");
    let n: usize =
        std::env::var("CORTEX_CHAOS_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(if long { 1000 } else { 200 });
    let chaos_limit = Duration::from_secs(if long { 1800 } else { 75 });
    let settle_limit = Duration::from_secs(if long { 300 } else { 45 });
    let t0 = Instant::now();

    let h = shm_home();
    let _stop_all = StopAll(&h);
    configure_chaos(&h, free_port(), 6);
    let store = Store::new(Home::at(h.path()));
    let log = h.join("chaos.log");
    let home = Home::at(h.path());

    // The reader: a separate process parsing every coordination file until told to stop.
    let reader_stop = h.join("reader.stop");
    let reader = reexec::child(module_path!(), "chaos_reader_child", "reader")
        .env(reexec::param_name("HOME"), h.path())
        .env(reexec::param_name("STOP"), &reader_stop)
        .spawn()
        .expect("start the reader");

    h.cortex_ok(&["start"]);
    let stop = AtomicBool::new(false);
    let chaos = Mutex::new(Chaos::default());
    let ids: Mutex<Vec<(String, Kind)>> = Mutex::new(Vec::new());
    let mut finished_in_chaos = false;
    std::thread::scope(|s| {
        s.spawn(|| adder(&store, &log, n, &stop, &ids));
        s.spawn(|| killer(&h, &stop, &chaos));
        s.spawn(|| pauser(&h, &stop, &chaos));
        s.spawn(|| backupper(&h, &stop, &chaos));
        let deadline = Instant::now() + chaos_limit;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            let ids = ids.lock().unwrap().clone();
            if ids.len() == n {
                let (done, _) = archived(&store);
                if ids.iter().all(|(id, _)| done.contains_key(id)) {
                    finished_in_chaos = true;
                    break;
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
    });
    let chaos_took = t0.elapsed();
    let chaos = chaos.into_inner().unwrap();
    let ids = ids.into_inner().unwrap();
    assert_eq!(ids.len(), n, "every task was added");

    // Whatever is still down comes back (pm restarts it; a daemon pm lost track of is a finding,
    // reported below), then everything must end.
    let down_after_chaos: Vec<&str> = cortex::base::daemon_name::NAMES
        .iter()
        .copied()
        .filter(|d| {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if matches!(
                    pidfile::status(&home, cortex::base::daemon_name::Daemon::parse(d).unwrap()),
                    Ok(PidStatus::Running(_))
                ) {
                    return false;
                }
                if Instant::now() >= deadline {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .collect();
    let mut violations: Vec<String> = chaos.errors.iter().map(|e| format!("chaos command: {e}")).collect();
    for d in &down_after_chaos {
        violations.push(format!("daemon {d} stayed down 15 s after the chaos ended (pm did not restart it)"));
    }
    if !down_after_chaos.is_empty() {
        h.cortex_ok(&["start"]);
    }
    let settle_deadline = Instant::now() + settle_limit;
    let (tasks, lines) = loop {
        let (done, lines) = archived(&store);
        if ids.iter().all(|(id, _)| done.contains_key(id)) {
            break (done, lines);
        }
        if Instant::now() >= settle_deadline {
            let missing: Vec<&String> = ids.iter().map(|(id, _)| id).filter(|id| !done.contains_key(*id)).collect();
            let q: TaskQueue = store.load().unwrap();
            panic!(
                "{} tasks not finished {settle_limit:?} after the chaos ended: {:?}\nqueue: {}",
                missing.len(),
                &missing[..missing.len().min(5)],
                serde_json::to_string(&q.tasks.iter().take(5).collect::<Vec<_>>()).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Wait for the last specs' budget settlement to be written (folded in the same cycle).
    wait_until(Duration::from_secs(30), "no active dispatch left", || {
        std::fs::read_dir(h.join("coordination/worker-specs/active"))
            .map(|d| d.flatten().all(|e| !e.file_name().to_string_lossy().ends_with(".json")))
            .unwrap_or(true)
    });
    std::fs::write(&reader_stop, "").unwrap();
    let reader_out = reexec::finish("reader", reader);

    // 1. Terminal exactly once, with the expected outcome.
    let (marks, bad_marks) = parse_log(&log);
    if bad_marks > 0 {
        violations.push(format!("{bad_marks} malformed lines in the shared log"));
    }
    let specs = ended_specs(&h);
    let lost: HashSet<String> = specs
        .iter()
        .filter(|s| s["status"] == "lost")
        .filter_map(|s| s["task_id"].as_str().map(str::to_string))
        .collect();
    let spec_ids: HashSet<&str> = specs.iter().filter_map(|s| s["dispatch_id"].as_str()).collect();
    let q: TaskQueue = store.load().unwrap();
    for t in &q.tasks {
        violations.push(format!("task {} still in the queue ({:?})", t.task_id, t.status()));
    }
    let mut lost_tasks = 0;
    for (id, kind) in &ids {
        let t = &tasks[id];
        let status = t.status().as_str();
        // Lost: the worker found it gone, or its spec was never written (coordinator killed between
        // the queue write and the spec write; the protocol's documented window).
        let task_lost = lost.contains(id) || t.dispatches.iter().any(|d| !spec_ids.contains(d.as_str()));
        lost_tasks += task_lost as usize;
        if task_lost {
            println!("chaos: task {id} ({kind:?}) had a lost dispatch: {} {:?} {:?}", status, t.dispatches, t.result);
        }
        if status != kind.expected() && !(task_lost && status == "failed") {
            violations.push(format!(
                "task {id} ({kind:?}) ended {status}, expected {}: {:?}",
                kind.expected(),
                t.result
            ));
        }
        let recs = &lines[id];
        if recs.iter().any(|r| r["status"] != recs[0]["status"] || r["dispatches"] != recs[0]["dispatches"]) {
            violations.push(format!("task {id} archived with different outcomes: {recs:?}"));
        }
        // 3. Attempts within max_attempts.
        if t.attempts > t.max_attempts || t.dispatches.len() as u32 != t.attempts {
            violations.push(format!(
                "task {id}: attempts {} (max {}), dispatches {:?}",
                t.attempts, t.max_attempts, t.dispatches
            ));
        }
    }

    // 2. Never twice at once; each dispatch ran its command at most once.
    let killed: HashMap<String, i128> = specs
        .iter()
        .filter(|s| matches!(s["status"].as_str(), Some("timeout" | "cancelled" | "lost")))
        .filter_map(|s| {
            let d = s["dispatch_id"].as_str()?.to_string();
            let at = s["ended_at"].as_str().and_then(parse_ts)?;
            Some((d, at.timestamp_nanos_opt()? as i128))
        })
        .collect();
    let (overlap_violations, attempts_seen) = check_marks(&marks, &killed);
    violations.extend(overlap_violations);
    for (id, _) in &ids {
        let t = &tasks[id];
        let seen = attempts_seen.get(id.as_str()).map_or(0, |s| s.len()) as u32;
        if seen > t.max_attempts {
            violations.push(format!("task {id} ran {seen} attempts (max {})", t.max_attempts));
        }
        if t.status().as_str() == "completed" && seen == 0 {
            violations.push(format!("task {id} completed without running"));
        }
    }

    // 4. No dispatch started while the scheduler was paused.
    let paused_violations = check_pauses(&specs, &chaos.pauses);
    let dispatched_while_paused = paused_violations.len();
    violations.extend(paused_violations);

    // 5. The budget balances.
    let b: Value = h.read_json("coordination/token-budget.json");
    let settled: u64 = specs.iter().filter_map(|s| s["tokens_used"].as_u64()).sum();
    let (total, used, available) =
        (b["total"].as_u64().unwrap(), b["used"].as_u64().unwrap(), b["available"].as_u64().unwrap());
    if b["reservations"].as_object().is_some_and(|r| !r.is_empty()) {
        violations.push(format!("leaked reservations: {}", b["reservations"]));
    }
    if available != total - used {
        violations.push(format!("budget: available {available} != total {total} - used {used}"));
    }
    if used != settled {
        violations.push(format!("budget: used {used} != tokens reported by ended dispatches {settled}"));
    }

    // 6. The reader saw no torn or invalid file.
    let reader_figure = |k: &str| -> u64 {
        reader_out.iter().find_map(|l| l.strip_prefix(&format!("{k} ")).and_then(|v| v.parse().ok())).unwrap_or(0)
    };
    let (parse_checks, parse_failures) = (reader_figure("checks"), reader_figure("failures"));
    if parse_failures > 0 {
        let details: Vec<&String> = reader_out.iter().filter(|l| l.starts_with("failure ")).collect();
        violations.push(format!("reader: {parse_failures} parse failures: {details:?}"));
    }
    if parse_checks == 0 {
        violations.push("the reader checked nothing".into());
    }

    // 7. Every backup verifies and restores into a fresh home that validates.
    for p in &chaos.backups {
        let p_s = p.display().to_string();
        if let Err(e) = run_cortex(&h, &["restore", "--verify-only", "--file", &p_s]) {
            violations.push(format!("backup {p_s} does not verify: {e}"));
            continue;
        }
        let fresh = shm_home();
        if let Err(e) = run_cortex(&fresh, &["restore", "--file", &p_s, "--yes"]) {
            violations.push(format!("backup {p_s} does not restore: {e}"));
            continue;
        }
        if let Err(e) = run_cortex(&fresh, &["validate"]) {
            violations.push(format!("home restored from {p_s} does not validate: {e}"));
        }
    }
    if let Err(e) = run_cortex(&h, &["validate"]) {
        violations.push(format!("the home does not validate after the run: {e}"));
    }

    let total_kills: u32 = chaos.kills.values().sum();
    println!(
        "chaos: tasks {n} (finished during chaos: {finished_in_chaos}), dispatches {}, lost-dispatch tasks {lost_tasks}, \
         kills {total_kills} {:?}, pm restarts by the test {}, pauses {}, dispatches while paused {dispatched_while_paused}, \
         backups {}, parse checks {parse_checks}, parse failures {parse_failures}, violations {}, chaos {:.1}s, total {:.1}s",
        specs.len(),
        chaos.kills,
        chaos.pm_restarts,
        chaos.pauses.len(),
        chaos.backups.len(),
        violations.len(),
        chaos_took.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(total_kills > 0 && !chaos.pauses.is_empty(), "the chaos did something");
    assert!(violations.is_empty(), "{} violations:\n{}", violations.len(), violations.join("\n"));
}

/// Walks the shared log in order (each mark is one O_APPEND write, so the file order is the order
/// of the writes): a task's attempt may start only when its previous attempt wrote its end mark,
/// or was killed (`killed`: dispatch id -> when its spec says it ended, ns) before this start.
/// Each dispatch runs its command at most once. Returns the violations and the attempts seen.
fn check_marks(marks: &[Mark], killed: &HashMap<String, i128>) -> (Vec<String>, HashMap<String, HashSet<u32>>) {
    let mut violations = Vec::new();
    let mut open: HashMap<&str, &Mark> = HashMap::new();
    let mut started: HashSet<&str> = HashSet::new();
    let mut attempts: HashMap<String, HashSet<u32>> = HashMap::new();
    for m in marks {
        if m.start {
            if let Some(o) = open.get(m.task.as_str()) {
                match killed.get(&o.dispatch) {
                    Some(end) if *end <= m.ts => {}
                    _ => violations.push(format!(
                        "task {} attempt {} ({}) started while attempt {} ({}) ran",
                        m.task, m.attempt, m.dispatch, o.attempt, o.dispatch
                    )),
                }
            }
            if !started.insert(&m.dispatch) {
                violations.push(format!("dispatch {} of task {} ran its command twice", m.dispatch, m.task));
            }
            attempts.entry(m.task.clone()).or_default().insert(m.attempt);
            open.insert(&m.task, m);
        } else {
            match open.remove(m.task.as_str()) {
                Some(o) if o.dispatch == m.dispatch => {}
                other => violations.push(format!("end of {} ({}) does not close {:?}", m.task, m.dispatch, other)),
            }
        }
    }
    for (task, m) in &open {
        if !killed.contains_key(&m.dispatch) {
            violations.push(format!("task {task} attempt {} ({}) never wrote its end mark", m.attempt, m.dispatch));
        }
    }
    (violations, attempts)
}

/// Dispatches stamped inside a pause (after the pause's state was written under the `scheduler`
/// lock, before the resume's).
fn check_pauses(specs: &[Value], pauses: &[(Timestamp, Timestamp)]) -> Vec<String> {
    let mut violations = Vec::new();
    for s in specs {
        let Some(at) = s["dispatched_at"].as_str().and_then(parse_ts) else {
            violations.push(format!("spec without dispatched_at: {s}"));
            continue;
        };
        if let Some((p, r)) = pauses.iter().find(|(p, r)| *p < at && at < *r) {
            violations.push(format!("dispatch {} at {at} while paused {p}..{r}", s["dispatch_id"]));
        }
    }
    violations
}

/// The checkers above catch what they are meant to (a test that cannot fail is a defect).
#[test]
fn chaos_checkers_catch_violations() {
    let m = |start: bool, task: &str, attempt: u32, ts: i128, dispatch: &str| Mark {
        start,
        task: task.into(),
        attempt,
        ts,
        dispatch: dispatch.into(),
    };
    let none = HashMap::new();
    // Clean: sequential attempts, and two tasks interleaved.
    let ok = [m(true, "a", 1, 1, "d1"), m(true, "b", 1, 2, "d3"), m(false, "a", 1, 3, "d1"), m(true, "a", 2, 4, "d2")];
    let ok = [&ok[..], &[m(false, "a", 2, 5, "d2"), m(false, "b", 1, 6, "d3")]].concat();
    let (v, seen) = check_marks(&ok, &none);
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(seen["a"].len(), 2);
    // Overlap: attempt 2 starts before attempt 1 ended.
    let overlap =
        [m(true, "a", 1, 1, "d1"), m(true, "a", 2, 2, "d2"), m(false, "a", 1, 3, "d1"), m(false, "a", 2, 4, "d2")];
    assert!(check_marks(&overlap, &none).0.iter().any(|v| v.contains("started while")));
    // A dispatch run twice, and a run without its end.
    let twice = [m(true, "a", 1, 1, "d1"), m(false, "a", 1, 2, "d1"), m(true, "a", 1, 3, "d1")];
    let v = check_marks(&twice, &none).0;
    assert!(v.iter().any(|v| v.contains("twice")) && v.iter().any(|v| v.contains("never wrote")), "{v:?}");
    // A killed attempt: fine when the next one started after the kill, not before.
    let killed_run = [m(true, "a", 1, 10, "d1"), m(true, "a", 2, 30, "d2"), m(false, "a", 2, 40, "d2")];
    assert!(check_marks(&killed_run, &HashMap::from([("d1".to_string(), 20)])).0.is_empty());
    assert_eq!(check_marks(&killed_run, &HashMap::from([("d1".to_string(), 35)])).0.len(), 1);
    // Pauses: a dispatch stamped inside one is caught, one outside is not.
    let ts = |s: &str| parse_ts(s).unwrap();
    let pauses = [(ts("2026-01-01T00:00:01Z"), ts("2026-01-01T00:00:02Z"))];
    let spec = |at: &str| serde_json::json!({"dispatch_id": "d", "dispatched_at": at});
    assert_eq!(check_pauses(&[spec("2026-01-01T00:00:01.500000Z")], &pauses).len(), 1);
    assert!(
        check_pauses(&[spec("2026-01-01T00:00:00.999999Z"), spec("2026-01-01T00:00:02.000001Z")], &pauses).is_empty()
    );
}

/// Stops every daemon of the home (and the task processes) when the test ends.
struct StopAll<'a>(&'a TestHome);

impl Drop for StopAll<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for d in cortex::base::daemon_name::NAMES {
                let log = std::fs::read_to_string(self.0.join(&format!("agents/logs/system/{d}-daemon.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = log.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).collect();
                if !lines.is_empty() {
                    eprintln!(
                        "--- {d}-daemon.log (last warnings)\n{}",
                        lines[lines.len().saturating_sub(8)..].join("\n")
                    );
                }
            }
        }
        let _ = self.0.cortex(&["stop", "--force", "--kill-tasks"]);
    }
}

/// The reader child: parses every JSON file under `coordination/` and `run/` and every complete
/// new line of every JSONL file, over and over, until the stop file appears. Files that vanish
/// between listing and reading (renamed to another bucket) are not failures.
#[test]
fn chaos_reader_child() {
    if reexec::role().as_deref() != Some("reader") {
        return;
    }
    let home: PathBuf = reexec::param("HOME");
    let stop: PathBuf = reexec::param("STOP");
    let mut checks = 0u64;
    let mut failures = 0u64;
    let mut offsets: HashMap<PathBuf, (u64, u64)> = HashMap::new();
    let mut details = Vec::new();
    let fail = |what: String, details: &mut Vec<String>| {
        if details.len() < 10 {
            details.push(what);
        }
    };
    while !stop.exists() {
        let mut files = Vec::new();
        walk(&home.join("coordination"), &mut files);
        walk(&home.join("run"), &mut files);
        for p in files {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
            // Quarantine copies are bad by definition; run/dispatches/ holds the tasks' own
            // heartbeat and usage files, which the task (not Cortex) writes however it likes.
            if cortex::store::atomic::is_temp_name(&name)
                || p.components().any(|c| c.as_os_str() == "quarantine")
                || p.starts_with(home.join("run/dispatches"))
            {
                continue;
            }
            if name.ends_with(".json") {
                let Ok(bytes) = std::fs::read(&p) else { continue };
                checks += 1;
                if let Err(e) = serde_json::from_slice::<Value>(&bytes) {
                    failures += 1;
                    fail(format!("{}: {e} ({} bytes)", p.display(), bytes.len()), &mut details);
                }
            } else if name.ends_with(".jsonl") {
                use std::io::{Read, Seek, SeekFrom};
                use std::os::unix::fs::MetadataExt;
                let Ok(mut f) = std::fs::File::open(&p) else { continue };
                let Ok(meta) = f.metadata() else { continue };
                let (ino, mut off) = offsets.get(&p).copied().unwrap_or((meta.ino(), 0));
                if ino != meta.ino() || meta.len() < off {
                    off = 0;
                }
                // A new file that reused the inode number: start over unless `off` is a line start.
                let mut prev = [0u8; 1];
                if off > 0
                    && (f.seek(SeekFrom::Start(off - 1)).is_err()
                        || f.read_exact(&mut prev).is_err()
                        || prev[0] != b'\n')
                {
                    off = 0;
                }
                let mut buf = Vec::new();
                if f.seek(SeekFrom::Start(off)).is_err() || f.read_to_end(&mut buf).is_err() {
                    continue;
                }
                let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                for line in buf[..complete].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    checks += 1;
                    if let Err(e) = serde_json::from_slice::<Value>(line) {
                        failures += 1;
                        fail(
                            format!("{}: line at offset {off}: {e}: {}", p.display(), String::from_utf8_lossy(line)),
                            &mut details,
                        );
                    }
                }
                offsets.insert(p, (meta.ino(), off + complete as u64));
            }
        }
    }
    reexec::report(format!("checks {checks}"));
    reexec::report(format!("failures {failures}"));
    for d in details {
        reexec::report(format!("failure {d}"));
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            walk(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}
