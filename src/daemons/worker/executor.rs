//! How a dispatch's process is started, signalled and reaped. The worker loop talks to an
//! [`Executor`]; [`LocalExecutor`] runs processes on this host (a later one can submit to Slurm
//! with sbatch/squeue/scancel behind the same interface).

use super::procs;
use crate::base::error::{Error, Result};
use crate::domain::task::processes::SHIM_ARG;
use nix::sys::signal::Signal;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Everything needed to start one dispatch.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    pub command: Vec<String>,
    pub workdir: PathBuf,
    pub env: Vec<(String, String)>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub dispatch_id: String,
    /// Where the shim records the exit status, and the lock it appends under (`super::exits`).
    pub exit_journal: PathBuf,
    pub exit_lock: PathBuf,
    /// The directory of the tasks' heartbeat and usage files, created before the start.
    pub runtime_dir: PathBuf,
}

/// A started dispatch: the process group leader and its identity.
#[derive(Debug)]
pub struct Launched {
    pub pid: i32,
    pub pgid: i32,
    pub start_ticks: u64,
    /// Write end of the go pipe; [`Executor::release`] lets the command run.
    pub go: Option<OwnedFd>,
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    Exited(i32),
    Signaled(i32),
}

pub trait Executor {
    /// Starts the dispatch, held before its command until [`Executor::release`].
    fn launch(&mut self, plan: &LaunchPlan) -> Result<Launched>;
    /// Lets a launched dispatch run its command (after it was recorded `running`).
    fn release(&mut self, launched: &mut Launched) -> Result<()>;
    /// Signals the dispatch's whole process group; false when it is gone.
    fn signal(&self, pgid: i32, sig: Signal) -> bool;
    /// Children that ended since the last call (non-blocking).
    fn reap(&mut self) -> Vec<(i32, Reaped)>;
    /// Whether the identified process still runs.
    fn alive(&self, pid: i32, start_ticks: u64) -> bool;
}

/// Runs dispatches as local processes, each through the exec shim in its own process group, stdin /dev/null, stdout/stderr to the dispatch's log files.
pub(crate) struct LocalExecutor {
    /// The binary that contains the shim (this worker's own executable).
    pub shim_exe: PathBuf,
}

/// The small shim program's file name, looked for beside the worker's executable.
pub(crate) const SHIM_BINARY: &str = "cortex-exec-shim";

impl LocalExecutor {
    pub(crate) fn new() -> LocalExecutor {
        LocalExecutor { shim_exe: shim_exe() }
    }
}

/// `cortex-exec-shim` beside this executable when it is there (it links only the shim and starts
/// in about half the time of the worker's own binary, on every task's way to its first
/// instruction); else this executable's own shim mode through /proc/self/exe, which stays valid
/// for exec even after an upgrade replaced the file.
fn shim_exe() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(SHIM_BINARY)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

impl Default for LocalExecutor {
    fn default() -> Self {
        LocalExecutor::new()
    }
}

impl Executor for LocalExecutor {
    fn launch(&mut self, plan: &LaunchPlan) -> Result<Launched> {
        if plan.command.is_empty() {
            return Err(Error::other("the dispatch has an empty command"));
        }
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::system("create a pipe", e.into()))?;
        // Keep the shim's descriptor clear of 0-2, which the child's stdio takes.
        let read: OwnedFd = if read.as_raw_fd() <= 2 {
            nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
                .map(|fd| {
                    // SAFETY: fcntl returned a new descriptor that we now own.
                    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
                })
                .map_err(|e| Error::system("duplicate a pipe descriptor", e.into()))?
        } else {
            read
        };
        // Only the read end is inherited (by this child: spawns are sequential and the parent
        // closes it right after); the write end stays close-on-exec.
        nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
            .map_err(|e| Error::system("pass the go pipe", e.into()))?;
        let go_fd = read.as_raw_fd();
        // The shim opens the log files itself (an inode allocation each, paid in parallel by the
        // shims rather than in the worker's serial loop); their directory must exist.
        for log in [&plan.stdout, &plan.stderr] {
            if let Some(dir) = log.parent() {
                crate::store::atomic::create_dir_all(dir)?;
            }
        }
        crate::store::atomic::create_dir_all(&plan.workdir)?;
        crate::store::atomic::create_dir_all(&plan.runtime_dir)?;
        let mut cmd = Command::new(&self.shim_exe);
        cmd.arg0(SHIM_BINARY)
            .arg(SHIM_ARG)
            .arg(go_fd.to_string())
            .arg(&plan.dispatch_id)
            .arg(&plan.exit_journal)
            .arg(&plan.exit_lock)
            .arg(&plan.stdout)
            .arg(&plan.stderr)
            .arg("--")
            .args(&plan.command)
            .current_dir(&plan.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in &plan.env {
            cmd.env(k, v);
        }
        // Own process group (setpgid 0), which lets std use posix_spawn rather than fork.
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| Error::io(&self.shim_exe, "start the exec shim", e))?;
        drop(read);
        let pid = child.id() as i32;
        // The child is ours and unreaped: its PID cannot be reused before we read this.
        let start_ticks = crate::base::procfs::start_ticks(pid).unwrap_or(0);
        Ok(Launched { pid, pgid: pid, start_ticks, go: Some(write) })
    }

    fn release(&mut self, launched: &mut Launched) -> Result<()> {
        if let Some(fd) = launched.go.take() {
            let f = std::fs::File::from(fd);
            use std::io::Write;
            (&f).write_all(b"1").map_err(|e| Error::system(format!("release PID {}", launched.pid), e))?;
        }
        Ok(())
    }

    fn signal(&self, pgid: i32, sig: Signal) -> bool {
        procs::signal_group(pgid, sig)
    }

    fn reap(&mut self) -> Vec<(i32, Reaped)> {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let mut out = Vec::new();
        loop {
            match waitpid(nix::unistd::Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => out.push((pid.as_raw(), Reaped::Exited(code))),
                Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid.as_raw(), Reaped::Signaled(sig as i32))),
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        out
    }

    fn alive(&self, pid: i32, start_ticks: u64) -> bool {
        crate::base::procfs::is_alive(pid, start_ticks)
    }
}
