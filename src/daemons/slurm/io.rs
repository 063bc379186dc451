//! The Slurm daemon's command threads: `sbatch` and `squeue`, the two commands that can take long
//! (a slow or hung controller: up to the command deadline each), run on two threads of their own
//! (one for submissions, one for polls; each runs its requests in the order asked), so that the
//! daemon's loop never waits for them — a cancel or a timeout's `scancel` goes out at once, and
//! a poll sees the job end, whatever submission is under way. Each answer wakes the loop. `sbatch` runs marked with [`SUBMITTER_VAR`] and dies with this thread
//! (`PR_SET_PDEATHSIG`): a restarted daemon finds and stops any that outlived its killed
//! predecessor before it looks for the job by name ([`stop_leftover_submitters`]).

use crate::base::procfs;
use crate::base::wake::Wake;
use crate::domain::slurm::{SUBMITTER_VAR, parse};
use crate::ops::slurm_command::{self as run, Ran, RunError};
use crate::store::home::Home;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

/// The longest any one Slurm command may take before it is stopped and Slurm taken as
/// unreachable.
pub(super) const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// One `sbatch` to run: the dispatch, the argv and the batch script (its stdin).
pub(super) struct Prepared {
    pub(super) id: String,
    pub(super) argv: Vec<String>,
    pub(super) script: String,
}

pub(super) enum Request {
    /// `sbatch` for each, in order; after one that finds Slurm unreachable the rest are not tried.
    Submit(Vec<Prepared>),
    /// One `squeue` (its argv).
    Poll(Vec<String>),
}

/// What became of one `sbatch`.
pub(super) enum Attempt {
    Ran(Result<Ran, RunError>),
    /// Not run: an earlier one of the batch found Slurm unreachable.
    NotTried,
}

pub(super) enum Reply {
    Submitted(Vec<(String, Attempt)>),
    Polled(Result<Ran, RunError>),
}

/// Whether a command's outcome says the controller could not be reached (nothing about the job
/// is known).
pub(super) fn unreachable(outcome: &Result<Ran, RunError>) -> bool {
    match outcome {
        Ok(ran) => !ran.success && parse::controller_unreachable(&ran.stderr),
        Err(_) => true,
    }
}

/// Starts the two command threads; returns where to send submissions and polls.
/// `crash_after_sbatch` is the test hook: exit right after an `sbatch` returned, before the loop
/// could record the job id.
pub(super) fn spawn(
    home_root: String,
    replies: Sender<Reply>,
    waker: Option<Sender<Wake>>,
    crash_after_sbatch: bool,
) -> std::io::Result<(Sender<Request>, Sender<Request>)> {
    let (submit_tx, submit_rx) = std::sync::mpsc::channel();
    let (poll_tx, poll_rx) = std::sync::mpsc::channel();
    spawn_one("slurm-sbatch", home_root.clone(), submit_rx, replies.clone(), waker.clone(), crash_after_sbatch)?;
    spawn_one("slurm-squeue", home_root, poll_rx, replies, waker, false)?;
    Ok((submit_tx, poll_tx))
}

fn spawn_one(
    name: &str,
    home_root: String,
    requests: Receiver<Request>,
    replies: Sender<Reply>,
    waker: Option<Sender<Wake>>,
    crash_after_sbatch: bool,
) -> std::io::Result<()> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let marker = [(SUBMITTER_VAR, home_root.as_str())];
        for request in requests {
            let reply = match request {
                Request::Submit(batch) => {
                    let mut out = Vec::with_capacity(batch.len());
                    let mut down = false;
                    for p in batch {
                        if down {
                            out.push((p.id, Attempt::NotTried));
                            continue;
                        }
                        let ran = run::run_with_env(&p.argv, Some(p.script.as_bytes()), COMMAND_DEADLINE, &marker);
                        if crash_after_sbatch && ran.as_ref().is_ok_and(|r| r.success) {
                            tracing::warn!("test hook: exiting after sbatch returned for {}", p.id);
                            std::process::exit(3);
                        }
                        down = unreachable(&ran);
                        out.push((p.id, Attempt::Ran(ran)));
                    }
                    Reply::Submitted(out)
                }
                Request::Poll(argv) => Reply::Polled(run::run(&argv, None, COMMAND_DEADLINE)),
            };
            if replies.send(reply).is_err() {
                return;
            }
            if let Some(w) = &waker {
                let _ = w.send(Wake::Message(WAKE.into()));
            }
        }
    })?;
    Ok(())
}

/// The message the command thread wakes the loop with.
pub(super) const WAKE: &str = "slurm-command";

/// The processes of this user marked as `sbatch` runs of the home at `root` — not a Slurm job's
/// (a job inherits its submitter's environment, marker included, but also gets `SLURM_JOB_ID`).
fn leftover_submitters(root: &str) -> Vec<(i32, i32)> {
    use std::os::unix::fs::MetadataExt;
    let me = std::process::id() as i32;
    let uid = nix::unistd::geteuid().as_raw();
    let own_job = std::env::var("SLURM_JOB_ID").ok();
    procfs::pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|pid| std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid))
        .filter_map(|pid| {
            let environ = procfs::environ(pid)?;
            let var = |name: &str| procfs::env_var(&environ, name).map(|v| String::from_utf8_lossy(v).into_owned());
            if var(SUBMITTER_VAR).as_deref() != Some(root) || var("SLURM_JOB_ID") != own_job {
                return None;
            }
            let stat = procfs::stat(pid).filter(procfs::Stat::is_running)?;
            Some((pid, stat.pgrp))
        })
        .collect()
}

/// Stops every `sbatch` a previous cortex-slurm of this home left running (SIGKILL to its
/// process group) and waits until they are gone, at most `deadline`. Until then a job submitted
/// by one of them could still appear after this daemon looked for it by name and found none.
/// Returns how many there were; an error when some outlived the deadline.
pub(super) fn stop_leftover_submitters(home: &Home, deadline: Duration) -> Result<usize, String> {
    let root = home.root().display().to_string();
    let mut roots = vec![root.clone()];
    if let Ok(c) = std::fs::canonicalize(Path::new(&root)) {
        roots.push(c.display().to_string());
    }
    let found: Vec<(i32, i32)> = roots.iter().flat_map(|r| leftover_submitters(r)).collect();
    if found.is_empty() {
        return Ok(0);
    }
    for &(pid, pgid) in &found {
        tracing::warn!("stopping sbatch (PID {pid}, group {pgid}) left running by a previous cortex-slurm");
        // Our sbatch leads its own group (wrappers included); otherwise the process alone.
        let _ = if pgid == pid {
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL)
        } else {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        };
    }
    let until = Instant::now() + deadline;
    loop {
        let left: Vec<(i32, i32)> = roots.iter().flat_map(|r| leftover_submitters(r)).collect();
        if left.is_empty() {
            return Ok(found.len());
        }
        if Instant::now() >= until {
            return Err(format!("sbatch processes {left:?} left by a previous cortex-slurm do not end"));
        }
        // SIGKILL was sent: the kernel ends them within moments; this wait is bounded.
        std::thread::sleep(Duration::from_millis(20));
    }
}
