//! Facts about processes from `/proc`, and exit notification for processes that are not our
//! children (re-adopted after a worker restart) through a pidfd.

use crate::daemon::Wake;
use std::sync::mpsc::Sender;

/// State letter and start time (clock ticks since boot) of a process, from `/proc/<pid>/stat`.
pub fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces or ')': split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 is the state (index 0 here), field 22 the start time (index 19).
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// The start time of a live process.
pub fn start_ticks(pid: i32) -> Option<u64> {
    stat(pid).map(|(_, t)| t)
}

/// True when `pid` is the very process that started at `ticks` and has not exited (a zombie
/// counts as exited; a reused PID has another start time).
pub fn alive(pid: i32, ticks: u64) -> bool {
    matches!(stat(pid), Some((state, t)) if t == ticks && state != 'Z' && state != 'X')
}

/// True while any process is in the process group.
pub fn group_exists(pgid: i32) -> bool {
    pgid > 1 && nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok()
}

/// Sends `sig` to a whole process group; false when the group is gone.
pub fn signal_group(pgid: i32, sig: nix::sys::signal::Signal) -> bool {
    pgid > 1 && nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig).is_ok()
}

/// Wakes the loop (a `Wake::Message`) when `pid` exits, through a pidfd polled by a small thread.
/// When no pidfd can be had (the process is already gone) it wakes at once.
pub fn notify_exit(pid: i32, waker: Sender<Wake>, message: String) {
    // SAFETY: a plain syscall with integer arguments.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        let _ = waker.send(Wake::Message(message));
        return;
    }
    let spawned = std::thread::Builder::new().name(format!("pidfd-{pid}")).spawn(move || {
        let mut pfd = nix::libc::pollfd { fd, events: nix::libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { nix::libc::poll(&mut pfd, 1, -1) };
            if n >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(nix::libc::EINTR) {
                break;
            }
        }
        // SAFETY: we own fd.
        unsafe { nix::libc::close(fd) };
        let _ = waker.send(Wake::Message(message));
    });
    if spawned.is_err() {
        // SAFETY: we own fd.
        unsafe { nix::libc::close(fd) };
    }
}

/// Makes this process the reaper of orphaned descendants (tasks that double-fork), so they are
/// reaped here rather than left as zombies.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_identified() {
        let me = std::process::id() as i32;
        let (state, ticks) = stat(me).unwrap();
        assert_ne!(state, 'Z');
        assert!(alive(me, ticks));
        assert!(!alive(me, ticks + 1), "another start time is another process");
    }
}
