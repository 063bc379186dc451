//! A task process whose record an operator removed (the emergency runbook's "Restore Worker
//! Specs": `rm worker-specs/active/*.json`) is owned by the worker all the same: it is stopped
//! and its end recorded with the true reason before the task can run again, whichever daemon
//! acts first and across SIGKILL of either. `cortex reset --yes` and `cortex stop --force` stop
//! every task process of the home, spec or no spec. Each task marks its start and end (with its
//! dispatch id) in a log outside the home, so two live copies of one task would show as two
//! starts without an end between them.
use crate::support::task::*;
use crate::support::*;
use cortex::domain::task::processes;
use cortex::store::home::Home;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The marks log (outside the home) and, when dropped, every task process of the home stopped:
/// nothing is left behind, whatever failed.
struct Marks {
    dir: tempfile::TempDir,
    home: PathBuf,
}

impl Marks {
    fn new(h: &TestHome) -> Marks {
        Marks { dir: tempfile::Builder::new().prefix("cortex-marks-").tempdir().unwrap(), home: h.path().to_path_buf() }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("marks.log")
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn starts(&self) -> usize {
        self.text().lines().filter(|l| l.starts_with("start ")).count()
    }

    /// A task whose first attempt marks its start and hangs until stopped (marking its end on
    /// SIGTERM); later attempts mark start and end and succeed.
    fn task(&self) -> String {
        let log = self.log();
        format!(
            "echo \"start $CORTEX_DISPATCH_ID\" >> {log}; \
             trap 'echo \"end $CORTEX_DISPATCH_ID\" >> {log}; exit 143' TERM; \
             if [ \"$CORTEX_ATTEMPT\" = 1 ]; then tail -f /dev/null & wait; fi; \
             echo \"end $CORTEX_DISPATCH_ID\" >> {log}",
            log = log.display()
        )
    }

    /// Asserts that no dispatch started while another one ran: starts and ends alternate.
    fn assert_never_two_at_once(&self) {
        let text = self.text();
        let mut open: Option<&str> = None;
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("start", id)) => {
                    assert!(open.is_none(), "two live copies: {id} started while {open:?} ran\n{text}");
                    open = Some(id);
                }
                Some(("end", id)) => {
                    assert_eq!(open, Some(id), "end without its start\n{text}");
                    open = None;
                }
                _ => panic!("bad mark line {line:?}"),
            }
        }
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        processes::stop_all(&Home::at(&self.home), Duration::from_millis(500));
    }
}

fn processes(h: &TestHome) -> Vec<processes::TaskProcess> {
    processes::find(&Home::at(h.path()))
}

fn remove_active_specs(h: &TestHome) {
    for e in std::fs::read_dir(h.join("coordination/worker-specs/active")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "json") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// Worker and coordinator started and one hanging task added (with `extra` flags of `task add`):
/// the daemons, the task id and its first dispatch id, once that attempt has started.
fn first_attempt_running(h: &TestHome, marks: &Marks, extra: &[&str]) -> (Daemon, Daemon, String, String) {
    let w = start(h, "worker");
    let c = start(h, "coordinator");
    let command = marks.task();
    let mut args = vec!["--description", "hangs"];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", command.as_str()]);
    let id = add(h, &args);
    wait_until(LONG, "first attempt started", || marks.starts() == 1);
    let first = dispatches(&show(h, &id))[0].clone();
    (w, c, id, first)
}

fn dispatches(t: &Value) -> Vec<String> {
    t["dispatches"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect()
}

fn log_contains(h: &TestHome, daemon: &str, text: &str) -> bool {
    std::fs::read_to_string(h.join(&format!("agents/logs/system/{daemon}-daemon.log"))).is_ok_and(|l| l.contains(text))
}

/// Both daemons up: the worker notices the removal, stops the task and records it `lost` with
/// the true reason; the retry starts only after the first run ended.
#[test]
fn removing_the_active_specs_while_a_task_runs_stops_it_before_the_retry() {
    let h = fast_home();
    let marks = Marks::new(&h);
    let (_w, _c, id, first) = first_attempt_running(&h, &marks, &["--max-attempts", "2"]);
    remove_active_specs(&h);
    let t = wait_status(&h, &id, "completed");
    marks.assert_never_two_at_once();
    assert_eq!(marks.starts(), 2, "{}", marks.text());
    let (bucket, rec) = spec(&h, &first).expect("the first dispatch's end is recorded anew");
    assert_eq!((bucket.as_str(), rec["status"].as_str()), ("failed", Some("lost")), "{rec}");
    let reason = rec["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("removed or replaced while it ran") && reason.contains("worker stopped"), "{rec}");
    assert_eq!(dispatches(&t).len(), 2, "{t}");
    assert!(h.events_of("dispatch_unrecorded").iter().any(|e| e["data"]["dispatch_id"] == first.as_str()));
    assert!(processes(&h).is_empty(), "nothing of the task runs: {:?}", processes(&h));
}

/// A running dispatch's spec moved to `failed/` by hand: the coordinator folds it and retries,
/// the worker stops the process, and the retry starts only after it ended.
#[test]
fn moving_a_running_spec_to_failed_by_hand_never_runs_the_task_twice() {
    let h = fast_home();
    let marks = Marks::new(&h);
    let (_w, _c, id, first) = first_attempt_running(&h, &marks, &["--max-attempts", "2"]);
    let specs = h.join("coordination/worker-specs");
    std::fs::create_dir_all(specs.join("failed")).unwrap();
    std::fs::rename(specs.join(format!("active/{first}.json")), specs.join(format!("failed/{first}.json"))).unwrap();
    wait_status(&h, &id, "completed");
    marks.assert_never_two_at_once();
    assert_eq!(marks.starts(), 2, "{}", marks.text());
    assert!(processes(&h).is_empty());
}

/// The worker SIGKILLed, the specs removed, the coordinator restarted: the coordinator does not
/// fold the dispatch while its process runs; the next worker finds the process without a record,
/// stops it, and only then may a retry start. Never two copies at once.
#[test]
fn a_retry_never_starts_beside_an_unrecorded_process_across_daemon_restarts() {
    let h = fast_home();
    let marks = Marks::new(&h);
    let w = start(&h, "worker");
    let c = start(&h, "coordinator");
    let id = add(&h, &["--description", "hangs", "--max-attempts", "3", "--", "sh", "-c", &marks.task()]);
    wait_until(LONG, "first attempt started", || marks.starts() == 1);
    w.kill9();
    remove_active_specs(&h);
    c.kill9();
    let _c = start(&h, "coordinator");
    wait_until(LONG, "the coordinator judged the dispatch without a spec", || {
        dispatches(&show(&h, &id)).len() > 1 || log_contains(&h, "coordinator", "its process still runs")
    });
    let t = show(&h, &id);
    assert_eq!((t["status"].as_str(), dispatches(&t).len()), (Some("in_progress"), 1), "not folded while it runs: {t}");
    assert_eq!(processes(&h).len(), 3, "shim, sh and tail still run: {:?}", processes(&h));
    let _w = start(&h, "worker");
    let t = wait_status(&h, &id, "completed");
    marks.assert_never_two_at_once();
    assert_eq!(marks.starts(), 2, "{}", marks.text());
    let first = &dispatches(&t)[0];
    assert!(!t.to_string().contains("but its spec was never written"), "the old false reason is not given: {t}");
    if let Some((_, rec)) = spec(&h, first) {
        assert_eq!(rec["status"], "lost", "{rec}");
    }
    assert!(processes(&h).is_empty());
}

/// Starts a worker and a coordinator, runs a hanging task, then SIGKILLs both and removes its
/// spec: a process of the home that no file names any more. Returns its PIDs.
fn orphan_task(h: &TestHome, marks: &Marks) -> Vec<i32> {
    let w = start(h, "worker");
    let c = start(h, "coordinator");
    add(h, &["--description", "orphan", "--", "sh", "-c", &marks.task()]);
    wait_until(LONG, "task started", || marks.starts() == 1);
    w.kill9();
    c.kill9();
    remove_active_specs(h);
    let pids: Vec<i32> = processes(h).iter().map(|p| p.pid).collect();
    assert_eq!(pids.len(), 3, "shim, sh and tail");
    pids
}

fn all_gone(pids: &[i32]) -> bool {
    pids.iter().all(|&p| !pid_running(p))
}

#[test]
fn reset_stops_task_processes_whose_spec_was_removed() {
    let h = fast_home();
    let marks = Marks::new(&h);
    let pids = orphan_task(&h, &marks);
    let out = h.cortex_ok(&["reset", "--yes"]);
    assert!(all_gone(&pids), "reset stopped every task process of the home: {out}");
    assert!(out.contains(&format!("PID {}", pids[0])), "it says what it stopped: {out}");
    marks.assert_never_two_at_once();
    assert!(marks.text().contains("end "), "stopped with TERM first: {}", marks.text());
}

#[test]
fn stop_force_stops_task_processes_too() {
    let h = fast_home();
    let marks = Marks::new(&h);
    let pids = orphan_task(&h, &marks);
    let out = h.cortex_ok(&["stop", "--force"]);
    assert!(all_gone(&pids), "stop --force stopped every task process of the home: {out}");
    assert!(out.contains("killed 3 running task process(es)"), "{out}");
    assert!(out.contains(&format!("PID {}", pids[0])), "it names them: {out}");
}

/// A plain stop leaves the tasks running for the next worker to re-adopt.
#[test]
fn plain_stop_keeps_tasks_running() {
    let h = fast_home();
    let marks = Marks::new(&h);
    let w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    add(&h, &["--description", "kept", "--", "sh", "-c", &marks.task()]);
    wait_until(LONG, "task started", || marks.starts() == 1);
    let out = h.cortex_ok(&["stop", "worker"]);
    let mut w = w;
    let _ = w.child.wait();
    assert!(!out.contains("killed"), "{out}");
    assert_eq!(processes(&h).len(), 3, "the task still runs");
}

/// An old `starting` spec of a running task put back into `active/` (a restored backup) waits
/// until the task's live process is gone: never two copies at once.
#[test]
fn a_spec_put_back_for_a_running_task_waits_for_it() {
    let h = fast_home();
    let marks = Marks::new(&h);
    let (_w, _c, id, first) = first_attempt_running(&h, &marks, &[]);
    let (_, mut old) = spec(&h, &first).unwrap();
    let put_back = "dsp-20200101000000000-abcdef";
    for k in ["pid", "pgid", "proc_start_ticks", "started_at"] {
        old.as_object_mut().unwrap().remove(k);
    }
    old["dispatch_id"] = put_back.into();
    old["status"] = "starting".into();
    old["attempt"] = 2.into();
    let path = h.join(&format!("coordination/worker-specs/active/{put_back}.json"));
    std::fs::write(path.with_extension("tmp"), serde_json::to_vec(&old).unwrap()).unwrap();
    std::fs::rename(path.with_extension("tmp"), &path).unwrap();
    wait_until(LONG, "the worker held the put-back spec (or ran it)", || {
        log_contains(&h, "worker", &format!("not starting dispatch {put_back} yet")) || marks.starts() > 1
    });
    marks.assert_never_two_at_once();
    h.cortex_ok(&["task", "cancel", &id, "--wait", "30s"]);
    wait_until(LONG, "the put-back spec ran once its task's process was gone", || marks.starts() == 2);
    wait_until(LONG, "it ended", || spec(&h, put_back).is_some_and(|(b, _)| b != "active"));
    marks.assert_never_two_at_once();
}

/// A `starting` spec removed before any worker ran it, the coordinator running all along: the
/// task is not stuck `in_progress`; it is folded `lost` with a true reason (and retried by policy).
#[test]
fn a_starting_spec_removed_before_it_ran_is_folded_lost() {
    let h = fast_home();
    let _c = start(&h, "coordinator");
    let id = add(&h, &["--description", "never ran", "--max-attempts", "1", "--", "true"]);
    wait_until(LONG, "dispatched", || {
        dispatches(&show(&h, &id)).first().is_some_and(|d| spec(&h, d).is_some_and(|(b, _)| b == "active"))
    });
    remove_active_specs(&h);
    // Any change the coordinator reacts to (it does not watch `active/`).
    add(&h, &["--description", "wake", "--", "true"]);
    let t = wait_status(&h, &id, "failed");
    let error = t["result"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("no record of the dispatch is in worker-specs/"), "{t}");
}
