//! The task processes of one home, found in `/proc` rather than through the dispatch specs
//! (which an operator may have removed): every live process whose environment names this home
//! in `CORTEX_HOME` and a dispatch in `CORTEX_DISPATCH_ID`. The worker sets both on each task's
//! exec shim, and the command and whatever it starts inherit them, daemonised or not. Only
//! processes of our own user are looked at (root could read every user's environment), and only
//! those of this home: never matched machine-wide by name.
//!
//! Used by the worker (a task process whose record vanished, found again after a restart), the
//! coordinator (does a dispatch without a spec still run?), `cortex reset` and
//! `cortex stop --force` (stop every task process of the home).

use crate::base::error::Result;
use crate::base::procfs;
use crate::base::text::safe;
use crate::store::home::Home;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// The first argument that selects the exec shim's mode (`cortex-worker --cortex-exec-shim …`):
/// how a task's shim is told apart from the worker itself.
pub const SHIM_ARG: &str = "--cortex-exec-shim";

/// The environment the worker gives each task (besides `CORTEX_HOME`), by which its processes
/// are known.
pub const TASK_ENV_VARS: [&str; 5] =
    ["CORTEX_DISPATCH_ID", "CORTEX_TASK_ID", "CORTEX_ATTEMPT", "CORTEX_HEARTBEAT_FILE", "CORTEX_USAGE_FILE"];

/// The `CORTEX_*` environment every task gets, wherever it runs (locally, or in a Slurm job): its
/// home, task, dispatch, attempt, and the heartbeat and usage files it may write.
pub(crate) fn task_env(home: &Home, rec: &super::model::DispatchRecord) -> Vec<(String, String)> {
    let id = &rec.dispatch_id;
    vec![
        ("CORTEX_HOME".to_string(), home.root().display().to_string()),
        ("CORTEX_TASK_ID".to_string(), rec.task_id.clone()),
        ("CORTEX_DISPATCH_ID".to_string(), id.clone()),
        ("CORTEX_ATTEMPT".to_string(), rec.attempt.to_string()),
        ("CORTEX_HEARTBEAT_FILE".to_string(), home.heartbeat_file(id).display().to_string()),
        ("CORTEX_USAGE_FILE".to_string(), home.usage_file(id).display().to_string()),
    ]
}

/// Set to `slurm` in a Slurm job's environment (its batch script exports it): such processes are
/// not the worker's, whatever host they run on.
pub const EXECUTOR_VAR: &str = "CORTEX_EXECUTOR";

/// One live process of a dispatch of this home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskProcess {
    pub pid: i32,
    pub pgid: i32,
    #[serde(skip)]
    pub start_ticks: u64,
    pub dispatch_id: String,
    /// `CORTEX_TASK_ID` of its environment (empty when absent).
    pub task_id: String,
    /// `CORTEX_ATTEMPT` of its environment.
    #[serde(skip)]
    pub attempt: Option<u32>,
    /// The dispatch's exec shim (the leader of its process group), not the command.
    pub shim: bool,
    /// Its command line (for the shim: the task's command, after `--`).
    pub command: Vec<String>,
}

impl TaskProcess {
    /// True while this very process (same start time) runs.
    pub fn alive(&self) -> bool {
        crate::base::procfs::is_alive(self.pid, self.start_ticks)
    }
}

/// The home's root in the one spelling processes are compared by.
fn canonical(root: &Path) -> std::path::PathBuf {
    std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf())
}

/// The process `pid` if it is a live task process of the home whose canonical root is `root`.
fn task_process(pid: i32, root: &Path, root_text: &str) -> Option<TaskProcess> {
    // Tasks run as the worker's user. Root may read every process's environment: another user's
    // process naming this home in its environment is none of ours (never signalled, never taken
    // for a run of a task).
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(format!("/proc/{pid}")).ok()?.uid() != nix::unistd::geteuid().as_raw() {
        return None;
    }
    let environ = procfs::environ(pid)?;
    let var = |name: &str| procfs::env_var(&environ, name).map(|v| String::from_utf8_lossy(v).into_owned());
    let (home, dispatch) = (var("CORTEX_HOME")?, var("CORTEX_DISPATCH_ID")?);
    // A Slurm job's processes (on a node that is this host) are Slurm's and cortex-slurm's to
    // stop, never an orphan of this home's worker.
    if var(EXECUTOR_VAR).is_some_and(|e| e == "slurm") {
        return None;
    }
    let (task, attempt) = (var("CORTEX_TASK_ID"), var("CORTEX_ATTEMPT").and_then(|a| a.parse().ok()));
    if !crate::domain::task::dispatches::is_valid_id(&dispatch)
        || (home != root_text && canonical(Path::new(&home)) != root)
    {
        return None;
    }
    let stat = procfs::stat(pid).filter(procfs::Stat::is_running)?;
    let (pgid, start_ticks) = (stat.pgrp, stat.start_ticks);
    let argv: Vec<String> =
        procfs::cmdline(pid).unwrap_or_default().iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let shim = argv.get(1).is_some_and(|a| a == SHIM_ARG) && argv.get(3) == Some(&dispatch);
    let command = if shim { argv.iter().skip_while(|a| *a != "--").skip(1).cloned().collect() } else { argv };
    Some(TaskProcess {
        pid,
        pgid,
        start_ticks,
        dispatch_id: dispatch,
        task_id: task.unwrap_or_default(),
        attempt,
        shim,
        command,
    })
}

/// Every live task process of the home (this process excluded), in PID order.
pub fn find(home: &Home) -> Vec<TaskProcess> {
    let root = canonical(home.root());
    let root_text = home.root().display().to_string();
    let me = std::process::id() as i32;
    let mut out: Vec<TaskProcess> = procfs::pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter_map(|pid| task_process(pid, &root, &root_text))
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

/// One line saying which process it is: `PID 123 (exec shim of dispatch D, task T: cmd args)`.
pub fn describe(p: &TaskProcess) -> String {
    let what = if p.shim { "exec shim of dispatch" } else { "process of dispatch" };
    let task = if p.task_id.is_empty() { String::new() } else { format!(", task {}", safe(&p.task_id)) };
    let command = crate::base::text::shell_words(&p.command);
    format!("PID {} ({what} {}{task}: {command})", p.pid, safe(&p.dispatch_id))
}

/// Signals one task process: its whole group when it leads one that is not ours, and the
/// process itself (it may have left the group).
fn signal(p: &TaskProcess, sig: Signal) {
    let own_group = nix::unistd::getpgrp().as_raw();
    if p.pgid > 1 && p.pgid != own_group {
        let _ = killpg(Pid::from_raw(p.pgid), sig);
    }
    if p.alive() {
        let _ = kill(Pid::from_raw(p.pid), sig);
    }
}

/// Stops every task process of the home: SIGTERM to each (and its group), `grace`, then SIGKILL
/// to what is left, looking again until none is found (a process forked meanwhile is found
/// too) or 10 s after the grace. Returns every process signalled.
pub fn stop_all(home: &Home, grace: Duration) -> Vec<TaskProcess> {
    let mut stopped = find(home);
    for p in &stopped {
        signal(p, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while stopped.iter().any(TaskProcess::alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let left = find(home);
        if left.is_empty() || Instant::now() >= give_up {
            break;
        }
        for p in left {
            signal(&p, Signal::SIGKILL);
            if !stopped.iter().any(|s| s.pid == p.pid && s.start_ticks == p.start_ticks) {
                stopped.push(p);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stopped.sort_by_key(|p| p.pid);
    stopped
}

/// What stopping every task process of a home found: the processes found by their environment,
/// and the groups of running specs stopped after them (a command that cleared its environment but
/// stayed in its group).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stopped {
    pub processes: Vec<TaskProcess>,
    pub spec_groups: Vec<i32>,
}

impl Stopped {
    pub fn count(&self) -> usize {
        self.processes.len() + self.spec_groups.len()
    }
}

/// `cortex stop --force` and `--kill-tasks`: [`stop_all`], then the process groups the remaining
/// `running` specs name ([`kill_task_groups`]).
pub fn stop_home_tasks(store: &crate::store::Store, grace: Duration) -> crate::base::error::Result<Stopped> {
    let processes = stop_all(store.home(), grace);
    let spec_groups = kill_task_groups(store, grace)?;
    Ok(Stopped { processes, spec_groups })
}

/// Kills the process groups of the worker's running dispatches (`worker-specs/active/*.json`):
/// SIGTERM, `[worker] grace_seconds`, then SIGKILL. A group is only signalled when its leader's
/// start time still matches the spec (a reused PID is never hit). Returns the groups signalled.
pub fn kill_task_groups(store: &crate::store::Store, grace: Duration) -> Result<Vec<i32>> {
    use crate::domain::task::DispatchState;
    use crate::store::home::SpecBucket;
    let mut groups = Vec::new();
    for spec in crate::domain::task::dispatches::list_bucket(store, SpecBucket::Active)? {
        if let DispatchState::Running { pid, pgid, proc_start_ticks, .. } = spec.state
            && pgid > 1
            && procfs::start_ticks(pid) == Some(proc_start_ticks)
        {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
            groups.push(pgid);
        }
    }
    let deadline = Instant::now() + grace;
    let alive = |g: &i32| killpg(Pid::from_raw(*g), None).is_ok();
    while groups.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for g in groups.iter().filter(|g| alive(g)) {
        let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process started with a home's task environment is found for that home only.
    #[test]
    fn task_processes_are_found_by_their_home_only() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("CORTEX_HOME", dir.path())
            .env("CORTEX_DISPATCH_ID", "dsp-test-1")
            .env("CORTEX_TASK_ID", "task-test-1")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Until the exec, the child shows the parent's environment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut found = find(&home);
        while found.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            found = find(&home);
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].pid, found[0].pgid), (pid, pid));
        assert_eq!(found[0].task_id, "task-test-1");
        assert!(!found[0].shim);
        assert!(find(&Home::at(other.path())).is_empty(), "another home's search finds nothing");
        let stopped = stop_all(&home, Duration::from_secs(2));
        assert_eq!(stopped.len(), 1);
        let _ = child.wait();
        assert!(find(&home).is_empty());
    }

    /// Another user's process that names this home in its environment is not a task process,
    /// even for root, who can read its environment: it is never signalled or waited for.
    #[test]
    fn another_users_process_is_never_taken_for_a_task_process() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let marker = format!("dsp-foreign-{}", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("CORTEX_HOME", dir.path())
            .env("CORTEX_DISPATCH_ID", &marker)
            .uid(65534)
            .gid(65534)
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Wait until the child runs `sleep` as nobody with its own environment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let ready = || {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|e| e.windows(marker.len()).any(|w| w == marker.as_bytes()))
        };
        while !ready() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(ready(), "the child never showed its environment");
        let found = find(&home);
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.is_empty(), "another user's process was taken for a task process: {found:?}");
    }

    use std::os::unix::process::CommandExt;
}
