//! `cortex-slurm`'s failure modes against a REAL dev cluster (`scripts/slurm-dev.sh`): a `sbatch`
//! that hangs or outlives a killed daemon, munge failing, an outage longer than Slurm's
//! `MinJobAge`, a cancel racing a job's completion, a restart between a timeout's `scancel` and
//! the next poll, a directory fsync that fails, and the ends Slurm itself decides (PREEMPTED,
//! NODE_FAIL, a requeue). The rig (`slurm_daemon::Rig`) runs the coordinator and cortex-slurm as
//! real processes; `sbatch` is, where a test says so, the real one behind a small gate script.

use crate::slurm_daemon::{DEADLINE, Rig, dispatches};
use crate::support::bin;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A `sbatch` for the tests: the real one, except that it fails as with munge down while
/// `<dir>/munge-down` exists, and holds a script holding `cortex-hold-submit` until
/// `<dir>/release-submits` exists (noting each hold in `<dir>/held-submits`).
fn gate_sbatch(dir: &Path) -> PathBuf {
    let path = dir.join("sbatch-gate");
    let d = dir.display();
    let text = format!(
        r#"#!/bin/sh
if [ -e "{d}/munge-down" ]; then
    echo 'sbatch: error: Munge encode failed: Failed to access "/run/munge/munge.socket.2": No such file or directory' >&2
    echo 'sbatch: error: Batch job submission failed: Protocol authentication error' >&2
    exit 1
fi
script=$(cat)
case "$script" in
*cortex-hold-submit*)
    echo held >>"{d}/held-submits"
    while [ ! -e "{d}/release-submits" ]; do sleep 0.1; done ;;
esac
printf '%s\n' "$script" | exec sbatch "$@"
"#
    );
    std::fs::write(&path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

fn dispatch_of(rig: &Rig, task: &str) -> Option<Value> {
    dispatches(&rig.show(task)).into_iter().next()
}

fn wait_running(rig: &Rig, task: &str) -> Value {
    let mut d = Value::Null;
    rig.wait(&format!("task {task} running in Slurm"), || {
        d = dispatch_of(rig, task).unwrap_or(Value::Null);
        d["started_at"].is_string()
    });
    d
}

fn spawn_slurm(rig: &Rig, env: &[(&str, &str)]) -> std::process::Child {
    let mut c = Command::new(bin("cortex-slurm"));
    c.arg("--home")
        .arg(rig.h.path())
        .env_remove("CORTEX_HOME")
        .env("SLURM_CONF", &rig.cluster.conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn kill_slurm(rig: &mut Rig) {
    let child = rig.child("slurm");
    child.kill().unwrap();
    child.wait().unwrap();
    rig.daemons.retain(|(n, _)| *n != "slurm");
}

fn wait_exit(rig: &Rig, child: &mut std::process::Child, what: &str) -> Option<i32> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        assert!(Instant::now() < deadline, "{what}\n{}", rig.diag());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn one_job_each(rig: &Rig) {
    for (name, jobs) in rig.cluster.jobs_by_name() {
        assert_eq!(jobs.len(), 1, "{name}: {jobs:?}\n{}", rig.diag());
    }
}

fn daemon_log(rig: &Rig) -> String {
    std::fs::read_to_string(rig.h.join("agents/logs/system/slurm-daemon.log")).unwrap_or_default()
}

/// A cancel goes out while a submission hangs in `sbatch`; cortex-slurm SIGKILLed while that
/// `sbatch` still runs, restarted: the dead daemon's `sbatch` is stopped before the restart looks
/// for the job by name, so the dispatch has one job; munge failing is an outage (the dispatch
/// waits, `slurm_unreachable`), not a refusal of the job.
#[test]
fn slurm_hung_or_orphaned_sbatch_and_munge_down_submit_once() {
    let gate_dir = tempfile::Builder::new().prefix("cortex-gate").tempdir().unwrap();
    let gate = gate_sbatch(gate_dir.path());
    let sbatch = format!("\"{}\"", gate.display());
    let Some(mut rig) =
        Rig::custom("slurm_hung_or_orphaned_sbatch_and_munge_down_submit_once", &[], &[("slurm", "sbatch", &sbatch)])
    else {
        return;
    };
    let (held_file, release) = (gate_dir.path().join("held-submits"), gate_dir.path().join("release-submits"));

    // A running job, then a submission that hangs in sbatch: the cancel of the first does not
    // wait for the second's sbatch.
    let long = rig.add(&["--", "sleep", "300"]);
    wait_running(&rig, &long);
    let held = rig.add(&["--", "sh", "-c", "echo held-once", "cortex-hold-submit"]);
    rig.wait("the held sbatch running", || lines(&held_file) == 1);
    let dispatch = dispatch_of(&rig, &long).unwrap()["dispatch_id"].as_str().unwrap().to_string();
    let cancel = rig.h.join(&format!("coordination/worker-specs/active/{dispatch}.cancel"));
    std::fs::write(&cancel, br#"{"requested_at":"2026-01-01T00:00:00Z","requested_by":"test"}"#).unwrap();
    let started = Instant::now();
    rig.wait_status(&long, "cancelled");
    // Well within the 30 s after which cortex-slurm would stop the hung sbatch (and then see
    // the cancel, were it waiting behind it).
    assert!(started.elapsed() < Duration::from_secs(20), "the cancel waited behind the hung sbatch");
    assert!(!release.exists() && lines(&held_file) == 1);
    eprintln!("cancel ended the job {:.1} s after the request, while a sbatch hung", started.elapsed().as_secs_f64());

    // SIGKILLed while that sbatch hangs; restarted, it submits the intent again (one hold more).
    let d = dispatch_of(&rig, &held).unwrap();
    assert!(d["job_id"].is_null(), "{d}");
    let name = format!("cortex-{}", d["dispatch_id"].as_str().unwrap());
    kill_slurm(&mut rig);
    rig.start("slurm", &[]);
    rig.wait("the restarted daemon's sbatch held", || lines(&held_file) == 2);
    // Both holds released: a sbatch of the killed daemon still running would now submit too.
    std::fs::write(&release, b"").unwrap();
    let done = rig.wait_status(&held, "completed");
    assert_eq!(dispatches(&done).len(), 1);
    // A surviving sbatch of the dead daemon would have submitted the moment the gate opened,
    // long before the live one's job ran and completed.
    let jobs = rig.cluster.jobs_by_name();
    assert_eq!(jobs.get(&name).map(Vec::len), Some(1), "one job for {name}: {jobs:?}\n{}", daemon_log(&rig));
    assert_eq!(rig.log(done["dispatch_records"][0]["dispatch_id"].as_str().unwrap(), "out"), b"held-once\n");

    // munge down: sbatch fails with an authentication error. The dispatch waits, then runs once.
    std::fs::write(gate_dir.path().join("munge-down"), b"").unwrap();
    let m = rig.add(&["--max-attempts", "1", "--", "sh", "-c", "echo after-munge"]);
    rig.wait("a slurm_unreachable event for munge", || !rig.h.events_of("slurm_unreachable").is_empty());
    rig.wait("the record saying Slurm is unreachable", || {
        dispatch_of(&rig, &m).is_some_and(|d| d["reason"].as_str().is_some_and(|r| r.contains("Slurm unreachable")))
    });
    assert_eq!(rig.show(&m)["status"], "in_progress");
    std::fs::remove_file(gate_dir.path().join("munge-down")).unwrap();
    let done = rig.wait_status(&m, "completed");
    assert_eq!(dispatches(&done).len(), 1);
    assert_eq!(rig.log(done["dispatch_records"][0]["dispatch_id"].as_str().unwrap(), "out"), b"after-munge\n");
    one_job_each(&rig);
}

/// slurmctld down for longer than Slurm's `MinJobAge` (2 s here) while a task waits to be
/// submitted: its intent never reached Slurm, so it is submitted when Slurm is back — not
/// ended `lost` as if it might have run and been purged.
#[test]
fn slurm_outage_longer_than_min_job_age_submits_the_waiting_intent() {
    let Some(rig) = Rig::custom(
        "slurm_outage_longer_than_min_job_age_submits_the_waiting_intent",
        &[("SLURM_DEV_MIN_JOB_AGE", "2")],
        &[],
    ) else {
        return;
    };
    // A first task: the daemon has read MinJobAge (2 s) once it completed.
    let first = rig.add(&["--", "true"]);
    rig.wait_status(&first, "completed");
    let dev = |what: &str| {
        let out = Command::new(crate::support::slurm::script_path())
            .arg(what)
            .arg(rig.cluster.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "slurm-dev.sh {what}: {}", String::from_utf8_lossy(&out.stderr));
    };
    dev("stop-controller");
    let waiting = rig.add(&["--max-attempts", "1", "--", "sh", "-c", "echo after-outage"]);
    rig.wait("the record saying Slurm is unreachable", || {
        dispatch_of(&rig, &waiting)
            .is_some_and(|d| d["reason"].as_str().is_some_and(|r| r.contains("Slurm unreachable")))
    });
    // A task cancelled while its intent waits for Slurm (never submitted): cancelled at once,
    // with Slurm still down.
    let doomed = rig.add(&["--", "sleep", "300"]);
    rig.wait("the doomed task's record saying Slurm is unreachable", || {
        dispatch_of(&rig, &doomed)
            .is_some_and(|d| d["reason"].as_str().is_some_and(|r| r.contains("Slurm unreachable")))
    });
    let id = dispatch_of(&rig, &doomed).unwrap()["dispatch_id"].as_str().unwrap().to_string();
    let cancel = rig.h.join(&format!("coordination/worker-specs/active/{id}.cancel"));
    std::fs::write(&cancel, br#"{"requested_at":"2026-01-01T00:00:00Z","requested_by":"test"}"#).unwrap();
    rig.wait_status(&doomed, "cancelled");
    // The outage must outlast MinJobAge: this wait is the scenario itself, not a guess at timing.
    let since = Instant::now();
    rig.wait("the outage outlasting MinJobAge (2 s) twice over", || since.elapsed() > Duration::from_secs(5));
    dev("start");
    let done = rig.wait_status(&waiting, "completed");
    let ds = dispatches(&done);
    assert_eq!(ds.len(), 1, "{done}");
    assert_eq!(rig.log(ds[0]["dispatch_id"].as_str().unwrap(), "out"), b"after-outage\n");
}

/// A cancel that arrives after the job's command completed leaves it completed; a restart
/// between a timeout's `scancel` and the poll that sees the job end still records `timeout`; an
/// intent whose directory fsync fails is not followed by `sbatch`.
#[test]
fn slurm_stop_races_and_restarts_keep_the_true_end() {
    let Some(mut rig) = Rig::new("slurm_stop_races_and_restarts_keep_the_true_end") else { return };

    // Completed wins: the job's command completes while cortex-slurm is stopped (SIGSTOP); a
    // cancel request is written; cortex-slurm resumes and sees both at once.
    let release = rig.h.join("release-done");
    let script = format!("while [ ! -e '{}' ]; do sleep 0.1; done; echo finished", release.display());
    let done_task = rig.add(&["--max-attempts", "1", "--", "sh", "-c", &script]);
    let d = wait_running(&rig, &done_task);
    let (dispatch, job) = (d["dispatch_id"].as_str().unwrap().to_string(), d["job_id"].to_string());
    let pid = nix::unistd::Pid::from_raw(rig.child("slurm").id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::fs::write(&release, b"").unwrap();
    rig.wait("the job completed in Slurm", || {
        rig.cluster
            .jobs_by_name()
            .get(&format!("cortex-{dispatch}"))
            .is_some_and(|j| j == &[format!("{job}:COMPLETED")])
    });
    let cancel = rig.h.join(&format!("coordination/worker-specs/active/{dispatch}.cancel"));
    std::fs::write(&cancel, br#"{"requested_at":"2026-01-01T00:00:00Z","requested_by":"test"}"#).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let t = rig.wait_status(&done_task, "completed");
    assert_eq!(dispatches(&t)[0]["status"], "completed", "{t}");
    assert_eq!(rig.log(&dispatch, "out"), b"finished\n");

    // A timeout's scancel, then the daemon dies before any poll (test hook), the job ends
    // meanwhile; the restarted daemon records `timeout`, not what Slurm says of a TERMed job.
    kill_slurm(&mut rig);
    let mut crashing = spawn_slurm(&rig, &[("CORTEX_TEST_SLURM_CRASH_AFTER_SCANCEL", "slurm")]);
    let slow = rig.add(&["--timeout", "3s", "--max-attempts", "1", "--", "sleep", "300"]);
    assert_eq!(wait_exit(&rig, &mut crashing, "the scancel hook never fired"), Some(3));
    let d = dispatch_of(&rig, &slow).unwrap();
    let name = format!("cortex-{}", d["dispatch_id"].as_str().unwrap());
    rig.wait("the TERMed job ended in Slurm", || {
        rig.cluster.jobs_by_name().get(&name).is_some_and(|j| {
            j.len() == 1 && !j[0].ends_with(":RUNNING") && !j[0].ends_with(":COMPLETING") && !j[0].ends_with(":PENDING")
        })
    });
    rig.start("slurm", &[]);
    let t = rig.wait_status(&slow, "failed");
    assert_eq!(dispatches(&t)[0]["status"], "timeout", "{t}");

    // The intent's directory fsync fails (test hook, while the flag file exists): no sbatch.
    kill_slurm(&mut rig);
    let flag = rig.h.join("fail-dir-sync");
    std::fs::write(&flag, b"").unwrap();
    let flag_s = flag.display().to_string();
    rig.start("slurm", &[("CORTEX_TEST_SLURM_FAIL_DIR_SYNC", &flag_s)]);
    let durable = rig.add(&["--", "sh", "-c", "echo durable"]);
    let failed_syncs = || daemon_log(&rig).matches("cannot make the dispatch records durable").count();
    let before = failed_syncs();
    // Two failed attempts: any sbatch the first one had let through would have run by the second.
    rig.wait("two failed fsyncs of the intent", || failed_syncs() >= before + 2);
    let d = dispatch_of(&rig, &durable).unwrap();
    let name = format!("cortex-{}", d["dispatch_id"].as_str().unwrap());
    assert!(!rig.cluster.jobs_by_name().contains_key(&name), "no sbatch after a failed fsync\n{}", rig.diag());
    std::fs::remove_file(&flag).unwrap();
    let t = rig.wait_status(&durable, "completed");
    assert_eq!(dispatches(&t).len(), 1);
    one_job_each(&rig);
}

/// The ends Slurm decides, through the retry policy: a job preempted by a higher-tier
/// partition's job (PREEMPTED), one whose node went down (NODE_FAIL), and one an operator
/// requeued (`scontrol requeue`: cancelled by cortex-slurm so it cannot run again; the
/// dispatch fails and the retry policy runs the task anew).
#[test]
fn slurm_preempted_node_fail_and_requeued_end_through_the_retry_policy() {
    let Some(rig) = Rig::new("slurm_preempted_node_fail_and_requeued_end_through_the_retry_policy") else { return };
    let scontrol = |args: &[&str]| {
        let mut a = vec!["scontrol"];
        a.extend_from_slice(args);
        let out = rig.cluster.run(&a);
        assert!(out.status.success(), "scontrol {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let cpus = String::from_utf8(Command::new("nproc").output().unwrap().stdout).unwrap().trim().to_string();

    // PREEMPTED: the whole node taken, then a job of partition `urgent` (PriorityTier 2).
    let cpus_opt = format!("cpus={cpus}");
    let pre = rig.add(&["--max-attempts", "1", "--slurm-opt", &cpus_opt, "--", "sleep", "300"]);
    wait_running(&rig, &pre);
    let out = rig.cluster.run(&["sbatch", "--parsable", "-p", "urgent", "-o", "/dev/null", "--wrap", "sleep 1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = rig.wait_status(&pre, "failed");
    let d = &dispatches(&t)[0];
    assert_eq!(d["status"], "failed", "{d}");
    assert!(d["error"].as_str().unwrap_or("").contains("PREEMPTED"), "{d}");

    // NODE_FAIL: the node set down while the job runs; attempt 2 runs once it is back.
    let again = "if [ \"$CORTEX_ATTEMPT\" = 1 ]; then tail -f /dev/null; fi; echo attempt-$CORTEX_ATTEMPT";
    let nf = rig.add(&["--max-attempts", "2", "--", "sh", "-c", again]);
    wait_running(&rig, &nf);
    scontrol(&["update", "nodename=localhost", "state=down", "reason=cortex-test"]);
    rig.wait("the first dispatch failed with NODE_FAIL", || {
        dispatches(&rig.show(&nf)).iter().any(|d| d["status"] == "failed")
    });
    // Back in service (ReturnToService=2 may have done it already: then this is refused).
    let _ = rig.cluster.run(&["scontrol", "update", "nodename=localhost", "state=resume"]);
    let t = rig.wait_status(&nf, "completed");
    let ds = dispatches(&t);
    assert_eq!(ds.len(), 2, "{t}");
    let first = ds.iter().find(|d| d["attempt"] == 1).unwrap();
    assert!(first["error"].as_str().unwrap_or("").contains("NODE_FAIL"), "{first}");
    let second = ds.iter().find(|d| d["attempt"] == 2).unwrap();
    assert_eq!(rig.log(second["dispatch_id"].as_str().unwrap(), "out"), b"attempt-2\n");

    // Requeued by an operator: the job is cancelled (it must not run again under Slurm's
    // control), the dispatch fails, attempt 2 completes.
    let rq = rig.add(&["--max-attempts", "2", "--", "sh", "-c", again]);
    let d = wait_running(&rig, &rq);
    let job = d["job_id"].to_string();
    scontrol(&["update", &format!("jobid={job}"), "requeue=1"]);
    scontrol(&["requeue", &job]);
    let t = rig.wait_status(&rq, "completed");
    let ds = dispatches(&t);
    assert_eq!(ds.len(), 2, "{t}");
    let first = ds.iter().find(|d| d["attempt"] == 1).unwrap();
    assert_eq!(first["status"], "failed", "{first}");
    assert!(first["error"].as_str().unwrap_or("").contains("requeued by Slurm"), "{first}");
    let name = format!("cortex-{}", first["dispatch_id"].as_str().unwrap());
    rig.wait("the requeued job cancelled in Slurm", || {
        rig.cluster.jobs_by_name().get(&name).is_some_and(|j| j == &[format!("{job}:CANCELLED")])
    });
    let second = ds.iter().find(|d| d["attempt"] == 2).unwrap();
    assert_eq!(rig.log(second["dispatch_id"].as_str().unwrap(), "out"), b"attempt-2\n");
}

/// A Slurm job whose heartbeat goes stale (`CORTEX_HEARTBEAT_FILE`, written once, then silence)
/// is handled like a local one: past the policy's zombie threshold and its re-check, its job is
/// cancelled and the dispatch ends `zombie`; a job that keeps beating runs to completion.
#[test]
fn slurm_job_with_a_stale_heartbeat_ends_zombie() {
    // auto-fix decides a zombie's restart when it runs; without it the coordinator folds the
    // zombie through the retry policy (as for a local zombie).
    let Some(rig) =
        Rig::custom("slurm_job_with_a_stale_heartbeat_ends_zombie", &[], &[("daemons", "disabled", "[\"auto-fix\"]")])
    else {
        return;
    };
    let policy = rig.h.join("coordination/config/heartbeat-policy.json");
    let mut p: Value = serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
    for (k, v) in [
        ("heartbeat_interval_seconds", 1.0),
        ("warning_seconds", 2.0),
        ("critical_seconds", 3.0),
        ("zombie_threshold_seconds", 4.0),
        ("recheck_delay_seconds", 1.0),
    ] {
        p[k] = serde_json::json!(v);
    }
    std::fs::write(&policy, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
    let beating = rig.add(&[
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do touch \"$CORTEX_HEARTBEAT_FILE\"; sleep 1; done; echo alive",
    ]);
    let stale =
        rig.add(&["--max-attempts", "1", "--", "sh", "-c", "touch \"$CORTEX_HEARTBEAT_FILE\"; exec tail -f /dev/null"]);
    let t = rig.wait_status(&stale, "failed");
    let d = &dispatches(&t)[0];
    assert_eq!(d["status"], "zombie", "{d}");
    let name = format!("cortex-{}", d["dispatch_id"].as_str().unwrap());
    rig.wait("the stale job ended in Slurm", || {
        rig.cluster
            .jobs_by_name()
            .get(&name)
            .is_some_and(|j| j.len() == 1 && (j[0].ends_with(":CANCELLED") || j[0].ends_with(":FAILED")))
    });
    assert!(!rig.h.events_of("zombie_detected").is_empty());
    let t = rig.wait_status(&beating, "completed");
    assert_eq!(rig.log(dispatches(&t)[0]["dispatch_id"].as_str().unwrap(), "out"), b"alive\n");
}
