//! The exec shim: each dispatch runs as `cortex-exec-shim --cortex-exec-shim GO_FD DISPATCH_ID
//! EXIT_JOURNAL EXIT_LOCK STDOUT_LOG STDERR_LOG -- COMMAND...` (or the worker's own binary in that
//! mode), the leader of the dispatch's own process group. It opens the dispatch's log files as its
//! stdout and stderr (here, not in the worker: creating a file costs an inode allocation, which
//! on a busy ext4 is the worker's largest single cost per task, and the shims run in parallel while
//! the worker's loop is serial), then waits for the worker's go-ahead on a pipe (sent only
//! after the worker recorded the dispatch `running`; if the worker dies first the pipe closes and
//! the shim exits without running anything), runs the command as its child, waits for it, and
//! appends its exit status to the exit journal (`super::exits`) before it exits. So a worker
//! that restarts and re-adopts the dispatch still learns the real exit code. A log that cannot
//! be opened fails the dispatch with that error, without running the command. The shim survives
//! SIGTERM/SIGINT/SIGHUP (the group's TERM is for the command) so that it can record how the
//! command ended; SIGKILL ends it with the rest of the group.

use super::exits::ExitReport;
use crate::domain::task::processes::SHIM_ARG;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::os::unix::process::ExitStatusExt;

/// In the worker binary's `main`: runs the shim and exits when the arguments ask for it;
/// returns otherwise.
pub fn run_if_requested() {
    let mut args = std::env::args_os();
    args.next();
    if args.next().is_some_and(|a| a == SHIM_ARG) {
        std::process::exit(shim_main(args.collect()));
    }
}

/// A line to the dispatch's stderr log, best effort: `eprintln!` panics when the write fails (a
/// full disk), and a panicking shim loses the command's exit code.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Opens the dispatch's logs (created, appended to) as this process's stdout and stderr, which
/// the command inherits. The error names the log that could not be opened.
fn redirect_output(stdout: &std::path::Path, stderr: &std::path::Path) -> Result<(), String> {
    // A link planted at a log's path is refused, not followed (the worker may run as root).
    let open = |path: &std::path::Path| {
        crate::store::open::append(path).map_err(|e| format!("cannot open the log {}: {e}", path.display()))
    };
    let redirect_failed =
        |path: &std::path::Path, e: nix::Error| format!("cannot send output to {}: {e}", path.display());
    nix::unistd::dup2_stdout(open(stdout)?).map_err(|e| redirect_failed(stdout, e))?;
    nix::unistd::dup2_stderr(open(stderr)?).map_err(|e| redirect_failed(stderr, e))
}

fn shim_main(args: Vec<OsString>) -> i32 {
    let usage = || {
        eprintln!(
            "usage: cortex-worker {SHIM_ARG} GO_FD DISPATCH_ID EXIT_JOURNAL EXIT_LOCK STDOUT_LOG STDERR_LOG \
             -- COMMAND [ARGS...] (started by the worker only)"
        );
        2
    };
    if args.len() < 8 || args[6] != "--" {
        return usage();
    }
    let Some(go_fd) = args[0].to_str().and_then(|s| s.parse::<i32>().ok()).filter(|fd| *fd > 2) else {
        return usage();
    };
    let dispatch_id = args[1].to_string_lossy().into_owned();
    let (journal, lock) = (std::path::PathBuf::from(&args[2]), std::path::PathBuf::from(&args[3]));
    // The home the worker gave us: the logs, the journal and its lock are opened walking from it
    // without following a link (`store::open`), as in the worker, not as plain paths.
    if let Some(home) = std::env::var_os("CORTEX_HOME").filter(|h| !h.is_empty()) {
        crate::store::open::register_root(std::path::Path::new(&home));
    }
    let logs_opened = redirect_output(std::path::Path::new(&args[4]), std::path::Path::new(&args[5]));
    let argv = &args[7..];
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP] {
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    // SAFETY: the worker passed us this descriptor (the read end of the go pipe); we own it.
    let mut go = unsafe { std::fs::File::from_raw_fd(go_fd) };
    let mut byte = [0u8; 1];
    let proceed = matches!(go.read(&mut byte), Ok(1) if byte[0] == b'1');
    drop(go);
    if !proceed {
        // The worker died before recording the dispatch: run nothing; it will be started afresh.
        return 0;
    }
    let started_at = crate::base::clock::now();
    let mut report = ExitReport { dispatch_id, started_at, ..ExitReport::default() };
    match logs_opened {
        // Nothing runs without its logs; the error says why (the dispatch fails with it).
        Err(e) => report.error = Some(e),
        Ok(()) => run_command(argv, &mut report),
    }
    report.ended_at = crate::base::clock::now();
    if let Err(e) = super::exits::append(&journal, &lock, &report) {
        say(&format!("cortex: cannot record the exit status in {}: {e}", journal.display()));
    }
    match (report.exit_code, report.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    }
}

/// Runs the command as this process's child and waits for it, noting how it ended in `report`.
fn run_command(argv: &[OsString], report: &mut ExitReport) {
    match std::process::Command::new(&argv[0]).args(&argv[1..]).spawn() {
        Err(e) => {
            report.exit_code = Some(127);
            report.error = Some(format!("cannot run {:?}: {e}", argv[0]));
            say(&format!("cortex: {}", report.error.as_deref().unwrap_or("")));
        }
        Ok(mut child) => {
            report.pid = Some(child.id());
            loop {
                match child.wait() {
                    Ok(st) => {
                        report.exit_code = st.code();
                        report.signal = st.signal();
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        report.error = Some(format!("cannot wait for the command: {e}"));
                        break;
                    }
                }
            }
        }
    }
}
