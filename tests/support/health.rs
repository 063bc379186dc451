//! Support for the heartbeat and auto-fix tests: real process groups standing in for tasks, and
//! dispatch specs, tasks and reservations written by hand the way the coordinator and the worker
//! would write them.
#![allow(dead_code)]

use crate::support::TestHome;
use crate::support::records::{dispatch, typed};
use cortex::domain::task::{DispatchRecord, Priority, Task, TaskQueue, TaskState, TokenBudget};
use cortex::store::home::{Home, SpecBucket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A process group started for a test; the whole group is killed when dropped.
pub(crate) struct Group {
    pub child: Child,
    pub pid: i32,
    pub ticks: u64,
}

impl Group {
    /// Runs `sh -c script` as the leader of a new process group.
    pub(crate) fn start(script: &str) -> Group {
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let pid = child.id() as i32;
        let ticks = cortex::base::procfs::start_ticks(pid).expect("start ticks");
        Group { child, pid, ticks }
    }

    /// Running members of the group (the leader included while it runs).
    pub(crate) fn members(&self) -> Vec<i32> {
        cortex::base::procfs::group_members(self.pid).iter().map(|m| m.pid).collect()
    }

    /// Reaps the leader if it exited (so it does not linger as an unreaped child).
    pub(crate) fn reap(&mut self) {
        let _ = self.child.try_wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A running dispatch spec for `group`, as the worker writes it.
pub(crate) fn running_spec(
    id: &str,
    task_id: &str,
    worker_type: &str,
    group: &Group,
    started_at: cortex::base::clock::Timestamp,
    budget: u64,
) -> DispatchRecord {
    let at = cortex::base::clock::format_ts(started_at);
    typed(dispatch(
        id,
        task_id,
        &at,
        serde_json::json!({
            "worker_type": worker_type, "status": "running", "started_at": at,
            "pid": group.pid, "pgid": group.pid, "proc_start_ticks": group.ticks,
            "command": ["sh"], "budget_reserved": budget, "timeout_seconds": 3600.0,
        }),
    ))
}

pub(crate) fn write_spec(home: &Home, bucket: SpecBucket, spec: &DispatchRecord) {
    let path = cortex::domain::task::dispatches::spec_path(home, bucket, &spec.dispatch_id);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
}

pub(crate) fn read_spec(home: &Home, bucket: SpecBucket, id: &str) -> Option<serde_json::Value> {
    let path = cortex::domain::task::dispatches::spec_path(home, bucket, id);
    std::fs::read(path).ok().map(|b| serde_json::from_slice(&b).unwrap())
}

/// An in-progress task for a dispatch.
pub(crate) fn in_progress_task(
    task_id: &str,
    worker_type: &str,
    dispatch_id: &str,
    attempts: u32,
    budget: u64,
) -> Task {
    Task {
        task_id: task_id.into(),
        description: format!("test task {task_id}"),
        priority: Priority::Medium,
        worker_type: worker_type.into(),
        command: vec![],
        state: TaskState::InProgress { started_at: chrono::Utc::now(), dispatch_id: dispatch_id.into() },
        created_at: chrono::Utc::now(),
        created_by: "test".into(),
        attempts,
        max_attempts: 10,
        budget,
        routing: None,
        timeout_seconds: None,
        after: None,
        not_before: None,
        result: None,
        dispatches: vec![dispatch_id.into()],
        schedule_id: None,
        repo: None,
        executor: None,
        slurm: None,
    }
}

pub(crate) fn write_queue(home: &Home, tasks: Vec<Task>) {
    let q = TaskQueue { tasks, ..Default::default() };
    std::fs::write(home.task_queue(), serde_json::to_vec_pretty(&q).unwrap()).unwrap();
}

pub(crate) fn read_queue(home: &Home) -> TaskQueue {
    serde_json::from_slice(&std::fs::read(home.task_queue()).unwrap()).unwrap()
}

/// A budget of `total` with one reservation per `(dispatch_id, tokens)`.
pub(crate) fn write_budget(home: &Home, total: u64, used: u64, reservations: &[(&str, u64)]) {
    let mut b = TokenBudget {
        total,
        used,
        available: 0,
        reservations: reservations.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        last_updated: None,
    };
    b.recompute();
    std::fs::write(home.token_budget(), serde_json::to_vec_pretty(&b).unwrap()).unwrap();
}

pub(crate) fn read_budget(home: &Home) -> TokenBudget {
    serde_json::from_slice(&std::fs::read(home.token_budget()).unwrap()).unwrap()
}

/// Merges `patch` into a JSON config file under the home.
pub(crate) fn patch_json(path: &Path, patch: serde_json::Value) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for (k, val) in patch.as_object().unwrap() {
        v[k] = val.clone();
    }
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// A temporary home as the auto-fix daemon sees it, for its passes run in-process: the daemon's
/// store (events from `auto-fix`) and a manual clock starting now (microsecond precision, like
/// the files). `t` keeps the home and runs the CLI in it.
pub(crate) struct AutoFixRig {
    pub(crate) t: TestHome,
    pub(crate) home: Home,
    pub(crate) store: cortex::store::Store,
    pub(crate) clock: cortex::base::clock::ManualClock,
}

impl AutoFixRig {
    pub(crate) fn new() -> AutoFixRig {
        let t = TestHome::new();
        let home = Home::at(t.path());
        let start = cortex::base::clock::parse_ts(&cortex::base::clock::now_string()).unwrap();
        AutoFixRig {
            store: cortex::store::Store::new(home.clone()).with_source("auto-fix"),
            home,
            clock: cortex::base::clock::ManualClock::new(start),
            t,
        }
    }

    /// One auto-fix pass at the clock's time.
    pub(crate) fn pass(&self) -> cortex::daemons::auto_fix::PassReport {
        cortex::daemons::auto_fix::pass(&self.store, &self.clock).expect("pass")
    }
}
