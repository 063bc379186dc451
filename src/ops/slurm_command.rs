//! Running one Slurm command (`sbatch`, `squeue`, `scontrol`, `scancel`) with a deadline: its own
//! process group, the given bytes on stdin, stdout and stderr collected; past the deadline TERM
//! to the group, a grace, then KILL. Used by `cortex-slurm` (which never waits on Slurm without a
//! bound: `sbatch` alone takes ~9 s to give up on a controller that is down) and by
//! `cortex config check` (`scontrol ping`).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What a finished command left.
#[derive(Debug, Clone)]
pub(crate) struct Ran {
    pub(crate) success: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Why a command gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunError {
    /// It could not be started (not installed, not executable).
    Spawn(String),
    /// It ran past its deadline and was stopped.
    TimedOut { program: String, after: Duration },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Spawn(e) => f.write_str(e),
            RunError::TimedOut { program, after } => {
                write!(f, "{program} gave no answer within {:.0} s and was stopped", after.as_secs_f64())
            }
        }
    }
}

/// How long after TERM a command that outlived its deadline gets KILL.
const GRACE: Duration = Duration::from_secs(2);

/// Runs `argv` with `stdin` and waits at most `deadline` for it.
pub(crate) fn run(argv: &[String], stdin: Option<&[u8]>, deadline: Duration) -> Result<Ran, RunError> {
    run_with_env(argv, stdin, deadline, &[])
}

/// [`run`] with `env` added to the command's environment (`cortex-slurm` marks its `sbatch` so a
/// restarted daemon can find one left behind: [`crate::domain::slurm::SUBMITTER_VAR`]; cortex-notify
/// passes a command hook its variables). The command also gets SIGKILL when the thread that started
/// it dies (`PR_SET_PDEATHSIG`): a command of a daemon that was killed does not outlive it.
pub(crate) fn run_with_env(
    argv: &[String],
    stdin: Option<&[u8]>,
    deadline: Duration,
    env: &[(&str, &str)],
) -> Result<Ran, RunError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = Command::new(&program);
    cmd.args(&argv[1..])
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(|e| RunError::Spawn(format!("cannot run {program}: {e}")))?;
    let pgid = child.id() as i32;
    let input = stdin.map(<[u8]>::to_vec);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let (Some(bytes), Some(mut pipe)) = (input, child.stdin.take()) {
            // A command that exits without reading all of it gets EPIPE here; its exit says why.
            let _ = pipe.write_all(&bytes);
        }
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let err_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut s);
            }
            s
        });
        let mut stdout = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut stdout);
        }
        let stderr = err_reader.join().unwrap_or_default();
        let status = child.wait();
        let _ = tx.send(Ran {
            success: status.is_ok_and(|s| s.success()),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        });
    });
    match rx.recv_timeout(deadline) {
        Ok(ran) => Ok(ran),
        Err(_) => {
            let group = nix::unistd::Pid::from_raw(pgid);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
            if rx.recv_timeout(GRACE).is_err() {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            Err(RunError::TimedOut { program, after: deadline })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn output_and_stdin_and_deadline() {
        let ran =
            run(&argv(&["sh", "-c", "cat; echo oops >&2; exit 3"]), Some(b"hello"), Duration::from_secs(20)).unwrap();
        assert_eq!((ran.success, ran.stdout.as_str(), ran.stderr.as_str()), (false, "hello", "oops\n"));
        let started = std::time::Instant::now();
        let err = run(&argv(&["sh", "-c", "sleep 30"]), None, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, RunError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(run(&argv(&["/nonexistent/sbatch"]), None, Duration::from_secs(5)), Err(RunError::Spawn(_))));
    }

    /// A batch script far past a pipe's 64 KiB reaches the command whole, and the marker is in
    /// its environment.
    #[test]
    fn large_stdin_is_written_whole_and_the_marker_is_set() {
        let big: Vec<u8> = (0..1024 * 1024 + 7).map(|i| b'a' + (i % 26) as u8).collect();
        let ran = run_with_env(
            &argv(&["sh", "-c", "wc -c; printf %s \"$M\""]),
            Some(&big),
            Duration::from_secs(20),
            &[("M", "marked")],
        )
        .unwrap();
        assert!(ran.success, "{ran:?}");
        assert_eq!(ran.stdout.split_whitespace().collect::<Vec<_>>(), ["1048583", "marked"]);
    }
}
