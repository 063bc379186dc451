//! A full disk (ENOSPC): the home lives on a small tmpfs (mounted by the test as root, unmounted
//! at the end; skipped with a loud message where mounting is not permitted). With every daemon
//! running, the disk is filled, then store writes, event appends, schedule changes and a backup
//! are attempted; with the daemons stopped, a restore. Each time:
//! - the previous version of every file stays intact (JSON byte-identical; JSONL: the old
//!   content is still its prefix), no temporary file or partial archive is left behind;
//! - the CLI fails with an error that says the disk is full;
//! - no daemon spins (CPU time from /proc over a few seconds) and none exits;
//! - once space is back, every daemon records an `error` event saying its writes failed (the
//!   `storage_write_failed` event), the same commands succeed, and everything validates.
//!
//! The same checks with a file size limit (RLIMIT_FSIZE = 0, EFBIG) run without root.
//!
//! And the disk filling up while tasks run through the coordinator and the worker: nothing is
//! lost or run twice at once, nobody spins, and the run finishes by itself once space is back.
use crate::support::faults::*;
use crate::support::fleet::Fleet;
use crate::support::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted on a temporary directory; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("cortex-diskfull-").tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "\n!!!! SKIPPED: cannot mount a tmpfs here ({}); the disk-full test needs root (CAP_SYS_ADMIN) !!!!\n",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("\n!!!! SKIPPED: cannot run mount ({e}); the disk-full test needs root !!!!\n");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// Fills the file system: one big file until ENOSPC, then small ones until not even a page is left.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let mut small = 0;
    while small < 64 {
        let mut g = std::fs::File::create(dir.join(format!("filler-{small}"))).unwrap();
        if g.write_all(&[0u8; 4096]).is_err() {
            break;
        }
        small += 1;
    }
    filler
}

fn unfill(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("filler") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// Every file under a directory with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.insert(p, b);
            }
        }
    }
    out
}

/// The previous version of every file is intact: JSON identical or a complete replacement that
/// still validates (a daemon's own successful write); JSONL still starts with its old content.
fn assert_intact(h: &TestHome, before: &BTreeMap<PathBuf, Vec<u8>>, during: &str) {
    for (path, old) in before {
        let name = path.file_name().unwrap().to_string_lossy();
        if name.ends_with(".lock") || name.ends_with(".pid") {
            continue;
        }
        let now = std::fs::read(path).unwrap_or_else(|e| panic!("{during}: {} vanished: {e}", path.display()));
        if name.ends_with(".jsonl") {
            assert!(now.starts_with(old), "{during}: {} lost its old content", path.display());
        } else if now != *old {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&now).is_ok(),
                "{during}: {} was replaced by something that is not JSON",
                path.display()
            );
        }
    }
    let temps: Vec<_> = snapshot(&h.join("coordination"))
        .into_keys()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp."))
        .collect();
    assert!(temps.is_empty(), "{during}: temporary files left behind: {temps:?}");
}

fn assert_fails_for_space(out: &std::process::Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} succeeded on a full disk");
    assert!(
        err.contains("No space left") || err.contains("File too large"),
        "{what}: the error does not say the disk is full: {err}"
    );
}

#[test]
fn full_disk_loses_nothing_spins_nothing_and_resumes() {
    let Some(mnt) = Tmpfs::mount("4M") else { return };
    let h = TestHome::in_dir(tempfile::Builder::new().prefix("home-").tempdir_in(mnt.path()).unwrap());
    h.cortex_ok(&["init"]);
    let mut fleet = Fleet::start(&h);
    h.cortex_ok(&["backup"]);
    let backups_before = snapshot(&h.join("backups"));
    assert_eq!(backups_before.len(), 1);
    let before = snapshot(&h.join("coordination"));

    // Writes can fail from the moment the filling starts, before `fill` returns.
    let full_since = chrono::Utc::now();
    fill(mnt.path());

    // A store write (read-modify-write of scheduler-state.json): refused, old file intact.
    let out = h.cortex(&["scheduler", "pause", "--reason", "disk full test"]);
    assert_fails_for_space(&out, "cortex scheduler pause");
    assert_eq!(h.read_json("coordination/scheduler-state.json")["state"], "running");
    // A schedule change.
    let out = h.cortex(&["schedule", "add", "--name", "full", "--every", "1h", "--", "true"]);
    assert_fails_for_space(&out, "cortex schedule add");
    // Event appends: a few may still fit in a partly used page; the rest fail with the reason.
    let mut failed = 0;
    for i in 0..50 {
        let out = h.cortex(&[
            "event",
            "emit",
            "--type",
            "disk_probe",
            "--message",
            &format!("probe {i} {}", "p".repeat(500)),
        ]);
        if !out.status.success() {
            assert_fails_for_space(&out, "cortex event emit");
            failed += 1;
        }
    }
    assert!(failed > 0, "every append succeeded: the disk is not full");
    // A backup: refused, no partial archive, the old one intact.
    let out = h.cortex(&["backup"]);
    assert_fails_for_space(&out, "cortex backup");
    assert_eq!(snapshot(&h.join("backups")), backups_before, "a partial archive was left, or the old one changed");
    assert_intact(&h, &before, "writes on a full disk");

    // Nobody spins while the disk is full (each daemon's heartbeat mark write fails every second).
    let shares = cpu_shares(&fleet, Duration::from_secs(3));
    for (name, share) in &shares {
        assert!(*share < 0.25, "cortex-{name} used {:.0}% of a core while the disk was full", share * 100.0);
    }
    fleet.assert_alive("the full disk");
    eprintln!("CPU share per daemon on a full disk: {shares:?}");

    // Space comes back: every daemon notices by itself and records what failed.
    unfill(mnt.path());
    fleet.assert_loops_running(chrono::Utc::now(), "space coming back");
    wait_until(Duration::from_secs(20), "every daemon records its failed writes", || {
        let reported: Vec<String> = h
            .events_of("storage_write_failed")
            .into_iter()
            .filter(|e| e["severity"] == "error")
            .map(|e| e["source"].as_str().unwrap_or("").to_string())
            .collect();
        DAEMONS.iter().all(|d| reported.iter().any(|s| s == d))
    });
    let ev = h.events_of("storage_write_failed").pop().unwrap();
    assert!(ev["message"].as_str().unwrap().contains("No space left"), "{ev}");
    assert!(ev["data"]["failed_writes"].as_u64().unwrap() >= 1, "{ev}");
    assert!(ev["data"]["first_failed_at"].as_str().and_then(cortex::base::clock::parse_ts).unwrap() >= full_since);

    h.cortex_ok(&["scheduler", "pause", "--reason", "space is back"]);
    h.cortex_ok(&["scheduler", "resume"]);
    h.cortex_ok(&["schedule", "add", "--name", "after", "--every", "1h", "--", "true"]);
    h.cortex_ok(&["backup"]);
    h.cortex_ok(&["event", "emit", "--type", "after_probe", "--message", "space is back"]);
    // A line cut by the full disk is skipped by readers and moved aside by repair.
    h.cortex(&["repair"]);
    let out = h.cortex(&["validate"]);
    assert!(out.status.success(), "validate after space came back:\n{}", String::from_utf8_lossy(&out.stdout));
    drop(fleet);

    // --- A restore on a full disk (daemons stopped, as restore requires).
    let before = snapshot(&h.join("coordination"));
    fill(mnt.path());
    let archive = backups_before.keys().next().unwrap().clone();
    let out = h.cortex(&["restore", "--file", archive.to_str().unwrap(), "--yes"]);
    assert_fails_for_space(&out, "cortex restore");
    // Lock files record their last holder; everything else must be exactly as before.
    let data = |m: BTreeMap<PathBuf, Vec<u8>>| -> BTreeMap<PathBuf, Vec<u8>> {
        m.into_iter().filter(|(p, _)| !p.components().any(|c| c.as_os_str() == ".locks")).collect()
    };
    assert!(data(snapshot(&h.join("coordination"))) == data(before), "a failed restore changed coordination files");
    unfill(mnt.path());
    h.cortex_ok(&["restore", "--file", archive.to_str().unwrap(), "--yes"]);
    let out = h.cortex(&["validate"]);
    assert!(out.status.success(), "validate after the restore:\n{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(h.read_json("coordination/schedules.json")["schedules"].as_array().map(Vec::len), Some(0));
}

/// `cortex <args>` with RLIMIT_FSIZE 0 (every write that grows a file fails with EFBIG;
/// SIGXFSZ ignored, as a service manager would set it, so the write returns the error).
fn cortex_with_no_file_size(h: &TestHome, args: &[&str]) -> std::process::Output {
    let mut line =
        format!("trap '' XFSZ; ulimit -f 0; exec '{}' --home '{}'", bin("cortex").display(), h.path().display());
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    Command::new("sh").arg("-c").arg(line).env_remove("CORTEX_HOME").output().expect("run sh")
}

#[test]
fn file_size_limit_fails_cleanly_and_keeps_every_file() {
    let h = TestHome::new();
    let before = snapshot(&h.join("coordination"));
    let out = cortex_with_no_file_size(&h, &["scheduler", "pause", "--reason", "limit"]);
    assert_fails_for_space(&out, "cortex scheduler pause under RLIMIT_FSIZE");
    let out = cortex_with_no_file_size(&h, &["event", "emit", "--type", "limit_probe", "--message", "m"]);
    assert_fails_for_space(&out, "cortex event emit under RLIMIT_FSIZE");
    let out = cortex_with_no_file_size(&h, &["schedule", "add", "--name", "n", "--every", "1h", "--", "true"]);
    assert_fails_for_space(&out, "cortex schedule add under RLIMIT_FSIZE");
    let out = cortex_with_no_file_size(&h, &["backup"]);
    assert_fails_for_space(&out, "cortex backup under RLIMIT_FSIZE");
    assert_intact(&h, &before, "writes under RLIMIT_FSIZE");
    let backups: Vec<_> = snapshot(&h.join("backups")).into_keys().filter(|p| !p.ends_with(".gitkeep")).collect();
    assert!(backups.is_empty(), "a partial archive was left: {backups:?}");
    // Without the limit, all of it works, and the event log shows no trace of a cut line.
    h.cortex_ok(&["scheduler", "pause", "--reason", "no limit"]);
    h.cortex_ok(&["event", "emit", "--type", "limit_probe", "--message", "m"]);
    h.cortex_ok(&["backup"]);
    let out = h.cortex(&["validate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The CPU share of one core each process used over `window` (the measurement is the sleep).
fn cpu_shares_of(pids: &[(String, u32)], window: Duration) -> Vec<(String, f64)> {
    let before: Vec<Duration> = pids.iter().map(|(_, p)| cpu_time(*p)).collect();
    let start = std::time::Instant::now();
    std::thread::sleep(window);
    let elapsed = start.elapsed().as_secs_f64();
    pids.iter().zip(before).map(|((n, p), b)| (n.clone(), (cpu_time(*p) - b).as_secs_f64() / elapsed)).collect()
}

/// One line of the tasks' shared log (outside the home, so the full disk does not cut it).
#[derive(Debug)]
struct Mark {
    start: bool,
    task: String,
    attempt: u32,
    dispatch: String,
}

fn marks(log: &Path) -> Vec<Mark> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 4).then(|| Mark {
                start: f[0] == "start",
                task: f[1].to_string(),
                attempt: f[2].parse().unwrap_or(0),
                dispatch: f[3].to_string(),
            })
        })
        .collect()
}

/// Every JSON file under `coordination/` parses (temporaries aside); returns the ones that do not.
fn unparseable_json(h: &TestHome) -> Vec<String> {
    snapshot(&h.join("coordination"))
        .into_iter()
        .filter(|(p, _)| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".json")
                && !name.starts_with(".tmp.")
                && !p.components().any(|c| c.as_os_str() == "quarantine")
        })
        .filter(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).is_err())
        .map(|(p, b)| format!("{} ({} bytes)", p.display(), b.len()))
        .collect()
}

#[test]
fn disk_full_while_tasks_run_loses_no_task_runs_none_twice_and_resumes() {
    let Some(mnt) = Tmpfs::mount("6M") else { return };
    let h = TestHome::in_dir(tempfile::Builder::new().prefix("home-").tempdir_in(mnt.path()).unwrap());
    h.cortex_ok(&["init"]);
    let port = configure_fast(&h);
    task::configure(
        &h,
        &[
            ("scheduler", "max_concurrent_dispatches", "3"),
            ("retry", "backoff_strategy", "\"none\""),
            ("retry", "backoff_base_seconds", "0.1"),
            ("retry", "backoff_max_seconds", "0.5"),
            ("worker", "grace_seconds", "0.3"),
            // A dispatch whose end could not be written may be claimed as a zombie by the
            // heartbeat daemon; auto-fix decides its retry on its next pass (30 s by default).
            ("auto_fix", "interval_seconds", "1"),
        ],
    );
    // Its restart then waits the restart policy's backoff (30 s by default): 1 s here. Failed
    // writes fail attempts: the breaker must not stop the run.
    let policy = h.join("coordination/config/worker-restart-policy.json");
    let mut p: serde_json::Value = serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
    p["backoff"]["base_delay_seconds"] = 1.into();
    p["circuit_breaker"]["failure_threshold"] = 1_000_000.into();
    std::fs::write(&policy, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
    let mut fleet = Fleet::start_configured(&h, port);
    let coordinator = task::start(&h, "coordinator");
    let worker = task::start(&h, "worker");
    let outside = tempfile::tempdir().unwrap();
    let log = outside.path().join("marks.log");

    // 30 tasks; each writes start/end marks (one O_APPEND write each) and reports its usage.
    let store = cortex::Store::new(cortex::store::home::Home::at(h.path()));
    let n = 30;
    let mut ids = Vec::new();
    for i in 0..n {
        let mark = |what: &str| {
            format!(
                "printf '{what} %s %s %s\\n' \"$CORTEX_TASK_ID\" \"$CORTEX_ATTEMPT\" \"$CORTEX_DISPATCH_ID\" >> '{}'",
                log.display()
            )
        };
        let script = format!(
            "{}; sleep 0.2; printf '{{\"tokens_used\": {}}}' > \"$CORTEX_USAGE_FILE\" 2>/dev/null; {}",
            mark("start"),
            1 + i % 7,
            mark("end")
        );
        let t = cortex::domain::task::ops::add_task(
            &store,
            cortex::domain::task::ops::NewTask {
                description: format!("disk full {i}"),
                command: vec!["sh".into(), "-c".into(), script],
                budget: Some(100),
                max_attempts: Some(10),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("add task {i}: {e}"));
        ids.push(t.task_id);
    }

    // Fill the disk mid-run.
    wait_until(Duration::from_secs(60), "a few tasks started", || marks(&log).iter().filter(|m| m.start).count() >= 4);
    // Writes can fail from the moment the filling starts, before `fill` returns.
    let full_since = chrono::Utc::now();
    fill(mnt.path());
    let started_at_fill = marks(&log).iter().filter(|m| m.start).count();
    // Nobody spins while full (each write fails: specs, queue, marks, logs).
    let mut pids: Vec<(String, u32)> = fleet.children.iter().map(|(n, c)| (n.clone(), c.id())).collect();
    pids.push(("coordinator".into(), coordinator.pid() as u32));
    pids.push(("worker".into(), worker.pid() as u32));
    let shares = cpu_shares_of(&pids, Duration::from_secs(2));
    eprintln!("CPU share per daemon, disk full with tasks running ({started_at_fill} of {n} started): {shares:?}");
    for (name, share) in &shares {
        assert!(*share < 0.25, "cortex-{name} used {:.0}% of a core on the full disk", share * 100.0);
    }
    fleet.assert_alive("the full disk");
    let bad = unparseable_json(&h);
    assert!(bad.is_empty(), "JSON files not parseable on the full disk: {bad:?}");
    let started_while_full = marks(&log).iter().filter(|m| m.start).count();

    // Space comes back: the run finishes by itself.
    unfill(mnt.path());
    let back = std::time::Instant::now();
    let tasks = task::wait_finished(&h, &ids);
    let finished_after = back.elapsed();
    for t in &tasks {
        if t["status"] != "completed" {
            let id = t["task_id"].as_str().unwrap_or("");
            let history: Vec<String> = h
                .events()
                .into_iter()
                .filter(|e| e.to_string().contains(id))
                .map(|e| format!("{} {} {}: {}", e["timestamp"], e["source"], e["type"], e["message"]))
                .collect();
            panic!("task {id} ended {}: {t}\nits events:\n{}", t["status"], history.join("\n"));
        }
    }
    // Each of them that hit the full disk (its log says so) reports it once space is back. Which
    // ones did depends on timing: a write can succeed on the "full" disk in a page another
    // process freed, and under load the worker may have had nothing to write in the window.
    let hit_it = |d: &str| {
        std::fs::read_to_string(h.join(&format!("agents/logs/system/{d}-daemon.log")))
            .is_ok_and(|log| log.contains("No space left on device"))
    };
    let hit: Vec<&str> = ["coordinator", "worker"].into_iter().filter(|d| hit_it(d)).collect();
    assert!(!hit.is_empty(), "neither the coordinator nor the worker met the full disk: the test did not test it");
    for d in hit {
        wait_until(Duration::from_secs(20), &format!("{d} records its failed writes"), || {
            h.events_of("storage_write_failed").iter().any(|e| e["severity"] == "error" && e["source"] == d)
        });
    }
    let reported_after = back.elapsed();
    for ev in h
        .events_of("storage_write_failed")
        .into_iter()
        .filter(|e| e["source"] == "coordinator" || e["source"] == "worker")
    {
        assert!(
            ev["data"]["first_failed_at"].as_str().and_then(cortex::base::clock::parse_ts).unwrap() >= full_since,
            "{ev}"
        );
    }

    // Each task terminal exactly once in the archive, after the queue has let go of it.
    wait_until(Duration::from_secs(30), "every task archived", || {
        h.queue_json()["tasks"].as_array().is_some_and(|t| t.is_empty())
    });
    let archive = std::fs::read_to_string(h.join("coordination/task-archive.jsonl")).unwrap();
    for id in &ids {
        let lines: Vec<&str> = archive.lines().filter(|l| l.contains(&format!("\"task_id\":\"{id}\""))).collect();
        if lines.len() != 1 {
            let log = std::fs::read_to_string(h.join("agents/logs/system/coordinator-daemon.log")).unwrap_or_default();
            let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).collect();
            panic!(
                "task {id} archived {} times:\n{}\ncoordinator errors:\n{}",
                lines.len(),
                lines.join("\n"),
                errors.join("\n")
            );
        }
    }
    // No task ran twice at once; no dispatch ran its command twice; every run ended.
    let mut open: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let all = marks(&log);
    for m in &all {
        if m.start {
            assert!(seen.insert(m.dispatch.clone()), "dispatch {} ran its command twice", m.dispatch);
            if let Some(o) = open.insert(m.task.clone(), m.dispatch.clone()) {
                panic!("task {} attempt {} ({}) started while {o} ran", m.task, m.attempt, m.dispatch);
            }
        } else {
            assert_eq!(open.remove(&m.task).as_deref(), Some(m.dispatch.as_str()), "end mark {m:?} closes nothing");
        }
    }
    assert!(open.is_empty(), "runs without an end mark: {open:?}");
    for id in &ids {
        assert!(all.iter().any(|m| !m.start && &m.task == id), "task {id} never ran to its end");
    }
    // The budget balances: no leaked reservation, available = total - used = total - settled
    // (over every bucket of ended dispatches: one the heartbeat daemon claimed as a zombie on the
    // full disk keeps the tokens it reported there).
    let settled: u64 = ["completed", "failed", "zombie"]
        .iter()
        .flat_map(|b| {
            std::fs::read_dir(h.join(&format!("coordination/worker-specs/{b}"))).into_iter().flatten().flatten()
        })
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter_map(|s| s["tokens_used"].as_u64())
        .sum();
    let b = h.read_json("coordination/token-budget.json");
    assert!(b["reservations"].as_object().is_none_or(|r| r.is_empty()), "leaked reservations: {b}");
    let (total, used, available) =
        (b["total"].as_u64().unwrap(), b["used"].as_u64().unwrap(), b["available"].as_u64().unwrap());
    assert_eq!(available, total - used, "{b}");
    assert_eq!(used, settled, "budget used vs tokens the ended dispatches reported: {b}");
    let temps: Vec<_> = snapshot(&h.join("coordination"))
        .into_keys()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp."))
        .collect();
    assert!(temps.is_empty(), "temporary files left behind: {temps:?}");
    h.cortex(&["repair"]);
    let out = h.cortex(&["validate"]);
    assert!(out.status.success(), "validate after space came back:\n{}", String::from_utf8_lossy(&out.stdout));
    let failed: Vec<String> = std::fs::read_dir(h.join("coordination/worker-specs/failed"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map(|s| format!("{} {}", s["status"], s["error"]))
        .collect();
    eprintln!(
        "disk full with tasks running: {n} tasks, {} runs ({started_while_full} started before/while full), all completed \
         {:.1}s after space came back, failed writes reported after {:.1}s; failed dispatches: {failed:?}",
        all.iter().filter(|m| m.start).count(),
        finished_after.as_secs_f64(),
        reported_after.as_secs_f64()
    );
    drop((coordinator, worker));
}

/// Regression (found by the test above): when the disk was full as a dispatch ended, the worker
/// logged the failed write, deleted the dispatch's run directory (its usage report) and forgot
/// it; its next scan re-adopted the dead process and recorded it `lost` ("ended while no worker
/// watched it"), its reported tokens dropped, or with nothing waking the worker left the spec
/// `running` until the heartbeat daemon claimed it; and the exec shim, unable to write its exit
/// report or print why, panicked (exit 101). Now the worker keeps the final state and
/// writes it once space is back, by itself; the shim exits with the command's code.
#[test]
fn worker_records_an_end_it_could_not_write_once_space_is_back_not_lost() {
    let Some(mnt) = Tmpfs::mount("4M") else { return };
    let h = TestHome::in_dir(tempfile::Builder::new().prefix("home-").tempdir_in(mnt.path()).unwrap());
    h.cortex_ok(&["init"]);
    task::configure(
        &h,
        &[
            ("retry", "backoff_strategy", "\"none\""),
            ("retry", "backoff_base_seconds", "0.1"),
            ("daemons", "heartbeat_interval_seconds", "1"),
        ],
    );
    // Only the coordinator and the worker: no heartbeat daemon to claim the dispatch as a zombie.
    let _coordinator = task::start(&h, "coordinator");
    let _worker = task::start(&h, "worker");
    let outside = tempfile::tempdir().unwrap();
    let (started, go, ended) =
        (outside.path().join("started"), outside.path().join("go"), outside.path().join("ended"));
    let script = format!(
        "[ \"$CORTEX_ATTEMPT\" -gt 1 ] && exit 0; printf '{{\"tokens_used\": 42}}' > \"$CORTEX_USAGE_FILE\"; \
         touch '{}'; while [ ! -e '{}' ]; do sleep 0.02; done; touch '{}'",
        started.display(),
        go.display(),
        ended.display()
    );
    let id = task::add(&h, &["--description", "ends on a full disk", "--max-attempts", "3", "--", "sh", "-c", &script]);
    wait_until(Duration::from_secs(60), "the task runs", || started.exists());
    let running = task::show(&h, &id);
    let dispatch = running["dispatches"][0].as_str().unwrap().to_string();
    let (_, spec) = task::spec(&h, &dispatch).unwrap();
    let shim = spec["pid"].as_i64().unwrap() as i32;

    fill(mnt.path());
    std::fs::write(&go, b"").unwrap();
    // Reaped (gone from /proc, not even a zombie): the worker has tried to record the end.
    wait_until(Duration::from_secs(20), "the command ends and the worker reaps its shim", || {
        ended.exists() && !Path::new(&format!("/proc/{shim}")).exists()
    });
    let (bucket, _) = task::spec(&h, &dispatch).unwrap();
    assert_eq!(bucket, "active", "the end was recorded on a full disk? {:?}", task::spec(&h, &dispatch));

    unfill(mnt.path());
    wait_until(Duration::from_secs(15), "the worker records the end by itself", || {
        task::spec(&h, &dispatch).is_some_and(|(b, _)| b != "active")
    });
    let (bucket, spec) = task::spec(&h, &dispatch).unwrap();
    assert_eq!(bucket, "failed", "{spec}");
    assert_eq!(spec["status"], "failed", "the end seen by the worker, not `lost`: {spec}");
    assert_eq!(spec["tokens_used"], 42, "the usage the task reported was kept: {spec}");
    let error = spec["error"].as_str().unwrap_or("");
    assert!(error.contains("(exit 0)"), "the shim exited with the command's code, not a panic: {spec}");
    // Its retry runs and completes; the budget balances.
    let t = task::wait_status(&h, &id, "completed");
    assert_eq!(t["attempts"], 2, "{t}");
    wait_until(Duration::from_secs(10), "the budget settles", || {
        let b = h.read_json("coordination/token-budget.json");
        b["reservations"].as_object().is_none_or(|r| r.is_empty()) && b["used"] == 42
    });
}

/// Regression (found by the tasks-on-a-full-disk test): a finished task was appended to the
/// archive, then the queue write without it failed for lack of space; every retry of the cycle
/// appended it again (an append can still fit in the archive's last page when a new queue file
/// cannot), so one task had several archive lines. Now a task appended by a cycle whose queue
/// write failed is not appended again.
#[test]
fn task_archived_by_a_cycle_whose_queue_write_failed_is_not_archived_again() {
    let Some(mnt) = Tmpfs::mount("4M") else { return };
    let h = TestHome::in_dir(tempfile::Builder::new().prefix("home-").tempdir_in(mnt.path()).unwrap());
    h.cortex_ok(&["init"]);
    let _coordinator = task::start(&h, "coordinator");
    let _worker = task::start(&h, "worker");
    // One finished task first: the archive exists with room left in its last page.
    let first = task::add(&h, &["--description", "first", "--", "true"]);
    task::wait_status(&h, &first, "completed");
    let outside = tempfile::tempdir().unwrap();
    let go = outside.path().join("go");
    let script = format!("while [ ! -e '{}' ]; do sleep 0.02; done", go.display());
    let id = task::add(&h, &["--description", "ends while the queue is locked", "--", "sh", "-c", &script]);
    task::wait_status(&h, &id, "in_progress");
    let dispatch = task::show(&h, &id)["dispatches"][0].as_str().unwrap().to_string();

    // The coordinator cannot fold the end until the lock is released, by which time the disk is full.
    let store = cortex::Store::new(cortex::store::home::Home::at(h.path()));
    let queue_lock = store.lock_named(cortex::store::LockName::TaskQueue).unwrap();
    std::fs::write(&go, b"").unwrap();
    wait_until(Duration::from_secs(20), "the worker records the end", || {
        task::spec(&h, &dispatch).is_some_and(|(b, _)| b == "completed")
    });
    fill(mnt.path());
    drop(queue_lock);
    let archive = h.join("coordination/task-archive.jsonl");
    let lines_of =
        |id: &str| std::fs::read_to_string(&archive).unwrap_or_default().lines().filter(|l| l.contains(id)).count();
    // Cycles retry with a growing backoff (0.2 s, 0.4 s, ...): several in 2 s.
    wait_until(Duration::from_secs(10), "the coordinator archives the task", || lines_of(&id) >= 1);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        assert!(lines_of(&id) <= 1, "archived {} times while the queue could not be written", lines_of(&id));
        std::thread::sleep(Duration::from_millis(50));
    }
    unfill(mnt.path());
    wait_until(Duration::from_secs(20), "the queue lets go of the task", || {
        h.queue_json()["tasks"].as_array().is_some_and(|t| t.is_empty())
    });
    assert_eq!(lines_of(&id), 1, "the task is archived exactly once");
    // The cycle's commit did fail in between (reported once space was back): the queue's journal
    // append may fit in its file's last page, so the write that fails can be the budget's; the
    // whole commit is taken back either way.
    wait_until(Duration::from_secs(20), "the coordinator reports its failed writes", || {
        h.events_of("coordinator_error").iter().any(|e| {
            let m = e["message"].as_str().unwrap_or("");
            m.contains("task-queue") || m.contains("token-budget")
        })
    });
    assert_eq!(task::show(&h, &id)["status"], "completed");
}

/// Regression (found by the tasks-on-a-full-disk test): when the worker could not record a
/// dispatch `running` (the disk full), it rightly did not let the command run, but ended the
/// dispatch `cancelled`, so the coordinator ended the task `cancelled` with no retry: a task
/// nobody cancelled was dropped. Now that is a failed attempt, retried by the retry policy.
#[test]
fn dispatch_the_worker_could_not_record_running_is_retried_not_cancelled() {
    let Some(mnt) = Tmpfs::mount("4M") else { return };
    let h = TestHome::in_dir(tempfile::Builder::new().prefix("home-").tempdir_in(mnt.path()).unwrap());
    h.cortex_ok(&["init"]);
    task::configure(&h, &[("retry", "backoff_strategy", "\"none\""), ("retry", "backoff_base_seconds", "0.1")]);
    let _coordinator = task::start(&h, "coordinator");
    let worker = task::start(&h, "worker");
    let outside = tempfile::tempdir().unwrap();
    let ran = outside.path().join("ran");
    let script = format!("echo \"$CORTEX_ATTEMPT\" >> '{}'", ran.display());
    // The worker frozen: the coordinator writes the `starting` spec while there is space...
    let pid = nix::unistd::Pid::from_raw(worker.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let id = task::add(&h, &["--description", "starts on a full disk", "--", "sh", "-c", &script]);
    task::wait_status(&h, &id, "in_progress");
    let dispatch = task::show(&h, &id)["dispatches"][0].as_str().unwrap().to_string();
    assert_eq!(
        task::spec(&h, &dispatch).map(|(b, s)| (b, s["status"].clone())),
        Some(("active".into(), "starting".into()))
    );
    // ...and the worker finds it once the disk is full: it cannot record it running.
    fill(mnt.path());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    // It does not start the command; its shim exits; the end is recorded once space is back.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        assert!(!ran.exists(), "the command ran although its dispatch was never recorded running");
        std::thread::sleep(Duration::from_millis(50));
    }
    unfill(mnt.path());
    wait_until(Duration::from_secs(20), "the dispatch ends", || {
        task::spec(&h, &dispatch).is_some_and(|(b, _)| b != "active")
    });
    let (bucket, spec) = task::spec(&h, &dispatch).unwrap();
    assert_eq!((bucket.as_str(), spec["status"].as_str()), ("failed", Some("failed")), "{spec}");
    assert!(spec["error"].as_str().unwrap_or("").contains("not started"), "{spec}");
    let t = task::wait_status(&h, &id, "completed");
    assert_eq!(t["attempts"], 2, "{t}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "2\n", "only the second attempt ran its command");
}
