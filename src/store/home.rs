//! The home: the directory that holds Cortex's runtime state, how it is found, and the path of
//! every file in it. No other module builds a path under the home by hand.

use crate::base::daemon_name::{Daemon, PidOwner};
use crate::base::error::{Error, Result};
use crate::store::files;
use std::path::{Path, PathBuf};

/// Environment variables that name the home, in the order they are consulted.
pub const HOME_ENV_VARS: [&str; 2] = ["CORTEX_HOME", "COMMIT_RELAY_HOME"];

/// A resolved home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Uses `root` as the home (made absolute; it need not exist yet).
    pub fn at(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir().map(|d| d.join(root)).unwrap_or_else(|_| root.to_path_buf())
        };
        crate::store::open::register_root(&root);
        Home { root }
    }

    /// Resolves the home: `--home`, then `CORTEX_HOME`, then `COMMIT_RELAY_HOME`, then the current
    /// directory if it holds `cortex.toml` or `coordination/`, else `~/.cortex`.
    ///
    /// The home found must be trusted (`home_trust::check`): owned by the current user and not
    /// group- or world-writable, unless listed in `CORTEX_SAFE_HOMES` or the user's safe-homes file.
    pub fn resolve(explicit: Option<&Path>) -> Result<Self> {
        let (home, source) = Home::find(explicit)?;
        crate::base::home_trust::check(home.root(), &source)?;
        Ok(home)
    }

    /// The home `resolve` would use and where it came from, unchecked.
    fn find(explicit: Option<&Path>) -> Result<(Self, String)> {
        if let Some(p) = explicit {
            return Ok((Home::at(p), "--home".into()));
        }
        for var in HOME_ENV_VARS {
            if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                return Ok((Home::at(PathBuf::from(v)), var.into()));
            }
        }
        if let Ok(cwd) = std::env::current_dir()
            && (cwd.join("cortex.toml").is_file() || cwd.join("coordination").is_dir())
        {
            return Ok((Home::at(cwd), "the current directory".into()));
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => Ok((Home::at(PathBuf::from(h).join(".cortex")), "~/.cortex".into())),
            None => Err(Error::Config {
                path: None,
                detail: "cannot find the Cortex home: pass --home DIR or set CORTEX_HOME".into(),
            }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path relative to the home root.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// The path relative to the home, for messages and manifests.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }

    pub fn config_file(&self) -> PathBuf {
        self.join("cortex.toml")
    }
    pub fn coordination(&self) -> PathBuf {
        self.join("coordination")
    }
    /// A file under `coordination/`, by its path relative to it.
    pub fn coord(&self, rel: &str) -> PathBuf {
        self.coordination().join(rel)
    }
    /// A registered coordination file (`files.rs`), at the path the registry gives it.
    pub fn coord_file(&self, file: &files::CoordFile) -> PathBuf {
        self.coord(file.rel)
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.coord(".locks")
    }
    /// The dedicated lock file of `name` (never a data file).
    pub fn lock_file(&self, name: crate::store::LockName) -> PathBuf {
        self.locks_dir().join(name.file_name())
    }
    pub fn quarantine_dir(&self) -> PathBuf {
        self.coord("quarantine")
    }
    pub fn task_queue(&self) -> PathBuf {
        self.coord_file(files::TASK_QUEUE)
    }
    pub fn token_budget(&self) -> PathBuf {
        self.coord_file(files::TOKEN_BUDGET)
    }
    pub fn scheduler_state(&self) -> PathBuf {
        self.coord_file(files::SCHEDULER_STATE)
    }
    pub fn events_file(&self) -> PathBuf {
        self.coord_file(files::EVENTS)
    }
    pub fn worker_specs(&self, bucket: SpecBucket) -> PathBuf {
        self.coord("worker-specs").join(bucket.dir_name())
    }
    pub fn run_dir(&self) -> PathBuf {
        self.join("run")
    }
    pub fn pid_file(&self, owner: impl Into<PidOwner>) -> PathBuf {
        self.run_dir().join(format!("{}.pid", owner.into()))
    }
    /// The daemon's own status mark (ready, heartbeat), written by the daemon only.
    pub fn daemon_mark(&self, daemon: Daemon) -> PathBuf {
        self.run_dir().join(format!("{daemon}.state.json"))
    }
    pub fn system_logs(&self) -> PathBuf {
        self.join("agents/logs/system")
    }
    pub fn daemon_log(&self, daemon: Daemon) -> PathBuf {
        self.system_logs().join(format!("{daemon}-daemon.log"))
    }
    pub fn worker_logs(&self) -> PathBuf {
        self.join("agents/logs/workers")
    }
    /// Runtime files written by the tasks' processes (heartbeat, usage), flat: `<id>.<kind>.json`.
    /// One directory for all, not one per dispatch: a directory created and removed per task
    /// costs an inode and a block each way, which on ext4 every later file creation pays for.
    pub fn dispatch_runtime_dir(&self) -> PathBuf {
        self.run_dir().join("dispatches")
    }
    /// `CORTEX_HEARTBEAT_FILE` of a dispatch: JSON `{sequence, timestamp, tokens_used?, message?}`.
    pub fn heartbeat_file(&self, dispatch_id: &str) -> PathBuf {
        self.dispatch_runtime_dir().join(format!("{dispatch_id}.heartbeat.json"))
    }
    /// `CORTEX_USAGE_FILE` of a dispatch: JSON `{tokens_used}` written by the task.
    pub fn usage_file(&self, dispatch_id: &str) -> PathBuf {
        self.dispatch_runtime_dir().join(format!("{dispatch_id}.usage.json"))
    }
    /// The end records of Slurm jobs (`crate::domain::slurm::JobEndRecord`), written by the jobs' scripts
    /// on the node (the home is on a filesystem the nodes share).
    pub fn slurm_dir(&self) -> PathBuf {
        self.run_dir().join("slurm")
    }
    /// `run/slurm/<dispatch_id>.end.json`: the exit status a Slurm job's script recorded itself.
    pub fn slurm_end_record(&self, dispatch_id: &str) -> PathBuf {
        self.slurm_dir().join(format!("{dispatch_id}.end.json"))
    }
    /// The dispatch id a runtime file belongs to (`<id>.heartbeat.json` → `<id>`).
    pub fn runtime_file_dispatch(name: &str) -> Option<&str> {
        name.strip_suffix(".heartbeat.json").or_else(|| name.strip_suffix(".usage.json"))
    }
    /// The failure-pattern daemon's own progress (event-log offset, recent occurrences).
    pub fn failure_pattern_state(&self) -> PathBuf {
        self.coord("patterns/failure-pattern-state.json")
    }
    /// cortex-notify's directory: its state and its outbox.
    pub fn notify_dir(&self) -> PathBuf {
        self.coord("notify")
    }
    /// `coordination/notify/state.json`: cortex-notify's event-log offset, rule throttles and
    /// open digests, delivery counters (written by cortex-notify only).
    pub fn notify_state(&self) -> PathBuf {
        self.notify_dir().join("state.json")
    }
    /// `coordination/notify/outbox/`: one `<key>.json` per notification and sink, written before
    /// it is sent (written by cortex-notify only).
    pub fn notify_outbox(&self) -> PathBuf {
        self.notify_dir().join("outbox")
    }
    /// Logs of dispatches the heartbeat daemon cleaned up as zombies, by day (`YYYY-MM-DD`).
    pub fn zombie_logs(&self, date: &str) -> PathBuf {
        self.join("agents/logs/zombie-workers").join(date)
    }
    /// The auto-fix daemon's directory: fix history and backups of files it changed.
    pub fn auto_fix_dir(&self) -> PathBuf {
        self.coord("auto-fix")
    }
    /// `coordination/auto-fix/fix-history.jsonl`: every restart decision and fix, one per line.
    pub fn fix_history(&self) -> PathBuf {
        self.coord_file(files::FIX_HISTORY)
    }
    /// Copies of files taken before auto-fix changed them (the source of rollbacks).
    pub fn fix_backups(&self) -> PathBuf {
        self.auto_fix_dir().join("backups")
    }
    /// `coordination/patterns/failure-patterns.jsonl`, written by the failure-pattern daemon.
    pub fn failure_patterns_file(&self) -> PathBuf {
        self.coord_file(files::FAILURE_PATTERNS)
    }
    pub fn backups_dir(&self) -> PathBuf {
        self.join("backups")
    }
    /// The automatic backup written before a restore replaces the current state.
    pub fn pre_restore_backups(&self) -> PathBuf {
        self.backups_dir().join("pre-restore")
    }
    /// The automatic backup written before `cortex reset`.
    pub fn pre_reset_backups(&self) -> PathBuf {
        self.backups_dir().join("pre-reset")
    }
    /// Operator configuration beside `cortex.toml` (optional).
    pub fn home_config_dir(&self) -> PathBuf {
        self.join("config")
    }
    /// Prompt templates of agent workers (optional).
    pub fn prompts_dir(&self) -> PathBuf {
        self.join("agents/prompts")
    }
    /// A path named in `cortex.toml`: absolute as given, relative to the home otherwise.
    pub fn configured_path(&self, configured: &str) -> PathBuf {
        let p = Path::new(configured);
        if p.is_absolute() { p.to_path_buf() } else { self.join(p) }
    }
    /// A dispatch's standard output.
    pub fn dispatch_stdout(&self, dispatch_id: &str) -> PathBuf {
        self.worker_logs().join(format!("{dispatch_id}.out"))
    }
    /// A dispatch's standard error.
    pub fn dispatch_stderr(&self, dispatch_id: &str) -> PathBuf {
        self.worker_logs().join(format!("{dispatch_id}.err"))
    }
    /// A task's own working directory (`[worker] workdir = "per-task"`).
    pub fn task_workdir(&self, task_id: &str) -> PathBuf {
        self.join("agents/work").join(task_id)
    }
    /// The operator's "keep it stopped" intent for a daemon, written by `cortex stop`, removed by
    /// `cortex start`; pm and `cortex run` never restart a daemon that has one.
    pub fn stop_intent(&self, daemon: Daemon) -> PathBuf {
        self.run_dir().join(format!("{daemon}.stopped"))
    }
    /// The PID of a daemon's instance that cortex last asked to stop (`cortex stop`, `restart`,
    /// `health-check --fix`): its exit is not a crash, even once `cortex start` removed the
    /// stop intent.
    pub fn stop_asked(&self, daemon: Daemon) -> PathBuf {
        self.run_dir().join(format!("{daemon}.stop-asked"))
    }
    /// The restart policy's state (restarts, FAILED), written by the active supervisor.
    pub fn supervisor_state(&self) -> PathBuf {
        self.run_dir().join("supervisor-state.json")
    }
    /// `archives/logs/`: `cortex logs archive` writes `<date>.tar.gz` there.
    pub fn log_archives(&self) -> PathBuf {
        self.join("archives/logs")
    }
}

/// The sub-directories of `coordination/worker-specs/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecBucket {
    Active,
    Completed,
    Failed,
    Zombie,
    Quarantine,
}

impl SpecBucket {
    pub const ALL: [SpecBucket; 5] =
        [SpecBucket::Active, SpecBucket::Completed, SpecBucket::Failed, SpecBucket::Zombie, SpecBucket::Quarantine];

    pub fn dir_name(self) -> &'static str {
        match self {
            SpecBucket::Active => "active",
            SpecBucket::Completed => "completed",
            SpecBucket::Failed => "failed",
            SpecBucket::Zombie => "zombie",
            SpecBucket::Quarantine => "quarantine",
        }
    }
}

/// Directories every home has; `cortex init` creates them (0700).
pub fn home_dirs(home: &Home) -> Vec<PathBuf> {
    let mut dirs = vec![
        home.coordination(),
        home.coord("config"),
        home.coord("moe"),
        home.locks_dir(),
        home.quarantine_dir(),
        home.run_dir(),
        home.system_logs(),
        home.worker_logs(),
        home.backups_dir(),
    ];
    dirs.extend(SpecBucket::ALL.iter().map(|b| home.worker_specs(*b)));
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_home_wins() {
        let h = Home::resolve(Some(Path::new("/srv/cortex"))).unwrap();
        assert_eq!(h.root(), Path::new("/srv/cortex"));
        assert_eq!(h.pid_file(crate::base::daemon_name::Daemon::Worker), Path::new("/srv/cortex/run/worker.pid"));
        assert_eq!(
            h.lock_file(crate::store::LockName::TaskQueue),
            Path::new("/srv/cortex/coordination/.locks/task-queue.lock")
        );
    }
}
