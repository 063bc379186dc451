//! `cortex-slurm` against a REAL single-node Slurm cluster (`scripts/slurm-dev.sh`, one per test in
//! a temporary directory): the coordinator and the Slurm daemon run as real processes in a
//! temporary home whose worker type `gpu` has `"executor": "slurm"`; tasks are added with the
//! CLI and followed through their records, Slurm's own `squeue`, and the logs. No worker runs: a
//! Slurm dispatch must never need one. Skipped, with a message, only when Slurm is not installed.
//! Every wait is on a condition with a generous deadline (jobs take ~3 s to start here, much longer
//! under load), never a fixed sleep.

use crate::support::slurm::{Cluster, script_path};
use crate::support::{TestHome, bin, terminate};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const DEADLINE: Duration = Duration::from_secs(180);

impl Cluster {
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        Command::new(args[0]).args(&args[1..]).env("SLURM_CONF", &self.conf).stdin(Stdio::null()).output().unwrap()
    }

    /// Every job Slurm knows (running, queued, or ended within MinJobAge): name → job ids.
    pub(crate) fn jobs_by_name(&self) -> HashMap<String, Vec<String>> {
        self.try_jobs_by_name().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Cluster::jobs_by_name`], or why squeue failed (the controller may be stopped).
    pub(crate) fn try_jobs_by_name(&self) -> Result<HashMap<String, Vec<String>>, String> {
        let out = self.run(&["squeue", "--noheader", "--states=all", "--format=%i|%T|%j"]);
        if !out.status.success() {
            return Err(format!("squeue: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let mut by: HashMap<String, Vec<String>> = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.splitn(3, '|').collect();
            if f.len() == 3 {
                by.entry(f[2].to_string()).or_default().push(format!("{}:{}", f[0], f[1]));
            }
        }
        Ok(by)
    }
}

/// A home with Slurm enabled on the cluster, the `gpu` type on Slurm, and its daemons.
pub(crate) struct Rig {
    pub(crate) h: TestHome,
    pub(crate) cluster: Cluster,
    pub(crate) daemons: Vec<(&'static str, Child)>,
}

impl Rig {
    pub(crate) fn new(test: &str) -> Option<Rig> {
        Rig::custom(test, &[], &[])
    }

    /// A rig whose cluster gets `cluster_env` (`slurm-dev.sh` settings) and whose home gets the
    /// `(table, key, value)` settings of `config` (after the defaults below).
    pub(crate) fn custom(test: &str, cluster_env: &[(&str, &str)], config: &[(&str, &str, &str)]) -> Option<Rig> {
        let cluster = Cluster::start_with(test, "cd", cluster_env)?;
        let h = TestHome::new();
        h.set_config("slurm", "enabled", "true");
        h.set_config("slurm", "poll_interval_seconds", "0.5");
        for (table, key, value) in config {
            h.set_config(table, key, value);
        }
        h.set_config("worker", "grace_seconds", "2.0");
        h.set_config("retry", "backoff_base_seconds", "1.0");
        h.set_config("retry", "backoff_strategy", "\"fixed\"");
        let path = h.join("coordination/config/worker-types.json");
        let mut types: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        types["worker_types"]["gpu"] = serde_json::json!({
            "default_budget": 1, "default_duration": 10, "command": ["true"],
            "executor": "slurm", "slurm": {"cpus": 1}
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&types).unwrap()).unwrap();
        let mut rig = Rig { h, cluster, daemons: Vec::new() };
        rig.start("coordinator", &[]);
        rig.start("slurm", &[]);
        Some(rig)
    }

    pub(crate) fn start(&mut self, name: &'static str, env: &[(&str, &str)]) {
        let mut c = Command::new(bin(&format!("cortex-{name}")));
        c.arg("--home")
            .arg(self.h.path())
            .env_remove("CORTEX_HOME")
            .env("SLURM_CONF", &self.cluster.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().expect("spawn daemon");
        self.daemons.push((name, child));
        let mark = self.h.join(&format!("run/{name}.state.json"));
        self.wait(&format!("{name} ready"), || {
            std::fs::read(&mark).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok()).is_some_and(|v| {
                v["ready_at"].is_string() && v["pid"] == self.daemons.last().map(|d| d.1.id()).unwrap_or(0)
            })
        });
    }

    pub(crate) fn child(&mut self, name: &str) -> &mut Child {
        &mut self.daemons.iter_mut().rev().find(|(n, _)| *n == name).expect("daemon").1
    }

    pub(crate) fn add(&self, args: &[&str]) -> String {
        let mut a = vec!["task", "add", "--type", "gpu", "--description", "slurm test"];
        a.extend_from_slice(args);
        let out = self.h.cortex_ok(&a);
        out.split_whitespace().find(|w| w.starts_with("task-")).expect("task id in output").to_string()
    }

    pub(crate) fn show(&self, task: &str) -> Value {
        serde_json::from_str(&self.h.cortex_ok(&["--json", "task", "show", task])).expect("task show --json")
    }

    pub(crate) fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out after {DEADLINE:?} waiting for {what}\n{}", self.diag());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn wait_status(&self, task: &str, status: &str) -> Value {
        let mut last = Value::Null;
        self.wait(&format!("task {task} {status}"), || {
            last = self.show(task);
            last["status"] == status
        });
        last
    }

    pub(crate) fn diag(&self) -> String {
        let log = std::fs::read_to_string(self.h.join("agents/logs/system/slurm-daemon.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let marks: Vec<String> = ["coordinator", "slurm"]
            .iter()
            .map(|d| std::fs::read_to_string(self.h.join(&format!("run/{d}.state.json"))).unwrap_or_default())
            .collect();
        format!(
            "--- slurm daemon log (last lines)\n{}\n--- squeue\n{:?}\n--- marks\n{marks:?}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            self.cluster.try_jobs_by_name()
        )
    }

    pub(crate) fn log(&self, dispatch: &str, ext: &str) -> Vec<u8> {
        std::fs::read(self.h.join(&format!("agents/logs/workers/{dispatch}.{ext}"))).unwrap_or_default()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for (_, c) in self.daemons.iter_mut().rev() {
            if let Ok(None) = c.try_wait() {
                terminate(c);
            }
        }
    }
}

pub(crate) fn dispatches(task: &Value) -> Vec<Value> {
    task["dispatch_records"].as_array().cloned().unwrap_or_default()
}

/// Tasks complete with their output in the usual logs, argv byte for byte (quotes, `$()`,
/// newlines, 100 KB); a failing task is retried and fails after its attempts; a cancel through
/// the API and `scheduler drain --cancel-running` reach `scancel`; a task past its timeout ends
/// `timeout`; a task's own executor and options; Slurm's pending reason in the record. Each
/// dispatch is one Slurm job.
#[test]
fn slurm_tasks_complete_fail_retry_cancel_and_time_out() {
    let Some(rig) = Rig::new("slurm_tasks_complete_fail_retry_cancel_and_time_out") else { return };
    let api = crate::support::api::Api::start(&rig.h);
    let hostile = "it's \"$(touch /tmp/cortex-slurm-pwned)\" `id` \\n\nline two; $HOME * ?";
    let ok = rig.add(&["--", "printf", "%s|%s", hostile, "$CORTEX_TASK_ID"]);
    let big: String = (0..100 * 1024).map(|i| (b'!' + (i % 90) as u8) as char).collect();
    let large = rig.add(&["--", "printf", "%s", &big]);
    let failing = rig.add(&["--max-attempts", "2", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    let long = rig.add(&["--", "sleep", "300"]);

    let done = rig.wait_status(&ok, "completed");
    let d = &dispatches(&done)[0];
    assert_eq!(d["executor"], "slurm", "{d}");
    let id = d["dispatch_id"].as_str().unwrap();
    assert_eq!(rig.log(id, "out"), format!("{hostile}|$CORTEX_TASK_ID").into_bytes(), "argv byte for byte");
    assert!(!Path::new("/tmp/cortex-slurm-pwned").exists());
    assert_eq!(done["result"]["exit_code"], 0);

    let done = rig.wait_status(&large, "completed");
    let d = &dispatches(&done)[0];
    assert!(rig.log(d["dispatch_id"].as_str().unwrap(), "out") == big.as_bytes(), "100 KB argument byte for byte");

    let failed = rig.wait_status(&failing, "failed");
    let ds = dispatches(&failed);
    assert_eq!(ds.len(), 2, "two attempts: {failed}");
    for d in &ds {
        assert_eq!(d["status"], "failed", "{d}");
        assert_eq!(d["exit_code"], 3, "{d}");
        assert_eq!(rig.log(d["dispatch_id"].as_str().unwrap(), "err"), b"oops\n");
    }

    // Running in Slurm, then cancelled through the API: scancel ends the job.
    let mut job = String::new();
    rig.wait("the long task running in Slurm", || {
        let t = rig.show(&long);
        let Some(d) = dispatches(&t).into_iter().next() else { return false };
        job = d["job_id"].to_string();
        d["status"] == "slurm" && d["started_at"].is_string()
    });
    let dispatch = dispatches(&rig.show(&long))[0]["dispatch_id"].as_str().unwrap().to_string();
    let (code, body) = api.post(&format!("/dispatches/{dispatch}/cancel"), b"");
    // 200 once ended within the grace and margin, else 504 (still ending): either way it was asked.
    assert!(code == 200 || code == 504, "cancel: {code} {body}");
    rig.wait_status(&long, "cancelled");
    let name = format!("cortex-{dispatch}");
    // The 300-second task cannot end by itself this soon: the scancel (TERM to every step) ended it. Slurm
    // says FAILED (the batch shell died of the signal) or CANCELLED (the KILL's scancel).
    rig.wait("the job ended in Slurm by scancel", || {
        rig.cluster
            .jobs_by_name()
            .get(&name)
            .is_some_and(|j| j.len() == 1 && [format!("{job}:CANCELLED"), format!("{job}:FAILED")].contains(&j[0]))
    });

    // A timeout: the daemon stops the job at the task's exact timeout.
    let slow = rig.add(&["--timeout", "3s", "--max-attempts", "1", "--", "sleep", "300"]);
    let t = rig.wait_status(&slow, "failed");
    assert_eq!(dispatches(&t)[0]["status"], "timeout", "{t}");

    // A task of a local type sent to Slurm on its own (`--executor slurm --slurm-opt`): no worker
    // runs here, so only a Slurm job can complete it; its options are in its record.
    let own = rig.h.cortex_ok(&[
        "task",
        "add",
        "--type",
        "scan-worker",
        "--description",
        "own executor",
        "--executor",
        "slurm",
        "--slurm-opt",
        "cpus=1",
        "--slurm-opt",
        "extra=--comment=cortex-own",
    ]);
    let own = own.trim();
    let t = rig.wait_status(own, "completed");
    let d = &dispatches(&t)[0];
    assert_eq!((d["executor"].as_str(), d["slurm"]["cpus"].as_u64()), (Some("slurm"), Some(1)), "{d}");
    assert_eq!(d["slurm"]["extra_args"], serde_json::json!(["--comment=cortex-own"]), "{d}");
    let out = rig.log(d["dispatch_id"].as_str().unwrap(), "out");
    assert!(String::from_utf8_lossy(&out).starts_with("scan-worker: "), "{out:?}");

    // Held in Slurm's queue (`--begin` an hour away): the pending reason is in the record and in
    // `task show`; a cancel of a queued job is a plain scancel.
    let later = rig.add(&["--slurm-opt", "extra=--begin=now+3600", "--", "true"]);
    rig.wait("the pending reason in the record", || {
        dispatches(&rig.show(&later))
            .first()
            .is_some_and(|d| d["reason"] == "queued in Slurm (PENDING: BeginTime)" && d["job_state"] == "PENDING")
    });
    let text = rig.h.cortex_ok(&["task", "show", &later]);
    assert!(text.contains("PENDING: queued in Slurm (PENDING: BeginTime)"), "{text}");
    rig.h.cortex_ok(&["task", "cancel", &later]);
    rig.wait_status(&later, "cancelled");

    // `scheduler drain --cancel-running` reaches a running Slurm job too.
    let drained = rig.add(&["--", "sleep", "300"]);
    rig.wait("the drained task running in Slurm", || {
        dispatches(&rig.show(&drained)).first().is_some_and(|d| d["started_at"].is_string())
    });
    let out = rig.h.cortex_ok(&["--json", "scheduler", "drain", "--cancel-running", "--timeout", "120"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["drained"], true, "{v}");
    rig.wait_status(&drained, "cancelled");

    // One job per dispatch, never two.
    for (name, jobs) in rig.cluster.jobs_by_name() {
        assert_eq!(jobs.len(), 1, "{name}: {jobs:?}");
    }
    drop(api);
}

/// Paused: no sbatch follows. Then the Slurm daemon and the coordinator are SIGKILLed while jobs
/// run, and the Slurm daemon once more right
/// after `sbatch` returned (before the job id was recorded); restarted, every job is adopted and
/// none is submitted twice.
#[test]
fn slurm_daemon_killed_readopts_every_job_and_submits_none_twice() {
    let Some(mut rig) = Rig::new("slurm_daemon_killed_readopts_every_job_and_submits_none_twice") else { return };
    rig.h.cortex_ok(&["scheduler", "pause", "--reason", "test"]);
    let held = rig.add(&["--", "true"]);
    rig.wait("the coordinator to take the task in", || {
        rig.h.queue_json()["tasks"].as_array().is_some_and(|t| t.iter().any(|t| t["task_id"] == held.as_str()))
    });
    // The cycle that took it in decided not to dispatch it: no record, so nothing for sbatch.
    assert_eq!(rig.show(&held)["status"], "queued");
    let active = std::fs::read_dir(rig.h.join("coordination/worker-specs/active")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(active, 0, "no dispatch record while paused");
    assert!(rig.cluster.jobs_by_name().keys().all(|n| !n.starts_with("cortex-")), "{}", rig.diag());
    rig.h.cortex_ok(&["scheduler", "resume"]);

    // Each job runs until the test releases it (a file it creates after the restarts), so the
    // daemons are certainly killed while the jobs run.
    let release = rig.h.join("release-jobs");
    let release_arg = release.to_str().unwrap().to_string();
    let tasks: Vec<String> = (0..3)
        .map(|i| {
            let script = format!("while [ ! -e \"$1\" ]; do sleep 0.1; done; echo job{i}");
            rig.add(&["--", "sh", "-c", &script, "sh", &release_arg])
        })
        .collect();
    rig.wait("every task's job id recorded", || {
        tasks.iter().all(|t| dispatches(&rig.show(t)).first().is_some_and(|d| d["job_id"].is_u64()))
    });
    // Both the Slurm daemon and the coordinator SIGKILLed while the jobs run, then restarted.
    for name in ["slurm", "coordinator"] {
        let child = rig.child(name);
        child.kill().unwrap();
        child.wait().unwrap();
    }
    rig.daemons.clear();
    rig.start("coordinator", &[]);
    rig.start("slurm", &[]);
    for t in &tasks {
        assert_ne!(rig.show(t)["status"], "completed", "released before the restart");
    }
    std::fs::write(&release, b"").unwrap();
    for (i, t) in tasks.iter().enumerate() {
        let done = rig.wait_status(t, "completed");
        let d = &dispatches(&done)[0];
        assert_eq!(rig.log(d["dispatch_id"].as_str().unwrap(), "out"), format!("job{i}\n").into_bytes());
    }
    rig.wait_status(&held, "completed");

    // Killed between sbatch returning and the job id being recorded (the test hook exits there).
    let child = rig.child("slurm");
    terminate(child);
    rig.daemons.retain(|(n, _)| *n != "slurm");
    let mut c = Command::new(bin("cortex-slurm"));
    c.arg("--home")
        .arg(rig.h.path())
        .env("SLURM_CONF", &rig.cluster.conf)
        .env("CORTEX_TEST_SLURM_CRASH_AFTER_SBATCH", "slurm")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut crashing = c.spawn().unwrap();
    let crash = rig.add(&["--", "sh", "-c", "sleep 2; echo once"]);
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(st) = crashing.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the crash hook never fired\n{}", rig.diag());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(3));
    let d = dispatches(&rig.show(&crash))[0].clone();
    assert_eq!(d["status"], "slurm", "{d}");
    assert!(d["job_id"].is_null(), "the job id was not recorded: {d}");
    let dispatch = d["dispatch_id"].as_str().unwrap().to_string();
    rig.start("slurm", &[]);
    let done = rig.wait_status(&crash, "completed");
    assert_eq!(dispatches(&done).len(), 1);
    assert_eq!(rig.log(&dispatch, "out"), b"once\n");
    let jobs = rig.cluster.jobs_by_name();
    assert_eq!(jobs.get(&format!("cortex-{dispatch}")).map(Vec::len), Some(1), "one job for the dispatch: {jobs:?}");
    for (name, jobs) in jobs {
        assert_eq!(jobs.len(), 1, "{name}: {jobs:?}");
    }
}

/// slurmctld stopped while a job runs and a task waits to be submitted: nothing fails or is lost
/// (and a local worker started meanwhile leaves both alone),
/// the records say why they wait, one `slurm_unreachable` event; started again, the running job's
/// end is read and the waiting task submitted once (`slurm_reachable`).
#[test]
fn slurm_controller_stopped_and_started_again_loses_nothing() {
    let Some(mut rig) = Rig::new("slurm_controller_stopped_and_started_again_loses_nothing") else { return };
    let running = rig.add(&["--", "sh", "-c", "sleep 10; echo survived"]);
    rig.wait("the job running in Slurm", || {
        dispatches(&rig.show(&running)).first().is_some_and(|d| d["started_at"].is_string())
    });
    // The local worker starts while the job runs on this very host with this home's CORTEX_*
    // environment: it must take neither the job's processes for orphans nor the records for its own.
    rig.start("worker", &[]);
    let dev = |what: &str| {
        let out =
            Command::new(script_path()).arg(what).arg(rig.cluster.dir.path()).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "slurm-dev.sh {what}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let config_check = || {
        let out = rig.h.cmd().env("SLURM_CONF", &rig.cluster.conf).args(["config", "check"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let up = config_check();
    assert!(!up.contains("[slurm]"), "config check with the controller up: {up}");
    assert!(up.contains("filesystem the compute nodes share"), "{up}");
    dev("stop-controller");
    let down = config_check();
    assert!(down.contains("the Slurm controller does not answer"), "config check with the controller down: {down}");
    let waiting = rig.add(&["--", "sh", "-c", "echo after"]);
    rig.wait("one slurm_unreachable event", || !rig.h.events_of("slurm_unreachable").is_empty());
    rig.wait("the waiting task's record saying Slurm is unreachable", || {
        dispatches(&rig.show(&waiting))
            .first()
            .is_some_and(|d| d["reason"].as_str().is_some_and(|r| r.contains("Slurm unreachable")))
    });
    assert_eq!(rig.show(&running)["status"], "in_progress");
    assert_eq!(rig.show(&waiting)["status"], "in_progress");
    dev("start");
    let done = rig.wait_status(&running, "completed");
    assert_eq!(rig.log(dispatches(&done)[0]["dispatch_id"].as_str().unwrap(), "out"), b"survived\n");
    let done = rig.wait_status(&waiting, "completed");
    assert_eq!(dispatches(&done).len(), 1);
    assert_eq!(rig.log(dispatches(&done)[0]["dispatch_id"].as_str().unwrap(), "out"), b"after\n");
    assert_eq!(rig.h.events_of("slurm_unreachable").len(), 1, "one event per outage");
    assert_eq!(rig.h.events_of("slurm_reachable").len(), 1);
    for (name, jobs) in rig.cluster.jobs_by_name() {
        assert_eq!(jobs.len(), 1, "{name}: {jobs:?}");
    }
}
