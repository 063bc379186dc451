//! Process groups of tasks (exists, signal), exit notification for processes that are not our
//! children (re-adopted after a worker restart) through a pidfd, and the subreaper setting. What
//! `/proc` says about a process is [`crate::base::procfs`].

use crate::base::wake::Wake;
use std::sync::mpsc::Sender;

/// True while any process is in the process group.
pub(crate) fn group_exists(pgid: i32) -> bool {
    pgid > 1 && nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok()
}

/// Sends `sig` to a whole process group; false when the group is gone.
pub(crate) fn signal_group(pgid: i32, sig: nix::sys::signal::Signal) -> bool {
    pgid > 1 && nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig).is_ok()
}

/// Wakes the loop (a `Wake::Message`) when `pid` exits, through a pidfd polled by a small thread.
/// When no pidfd can be had (the process is already gone) it wakes at once.
pub(crate) fn notify_exit(pid: i32, waker: Sender<Wake>, message: String) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let Ok(fd) = crate::base::procfs::pidfd(pid) else {
        let _ = waker.send(Wake::Message(message));
        return;
    };
    // The descriptor moves into the thread and is closed when it ends (or when it cannot start).
    let _ = std::thread::Builder::new().name(format!("pidfd-{pid}")).spawn(move || {
        while let Err(nix::errno::Errno::EINTR) =
            poll(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)], PollTimeout::NONE)
        {}
        drop(fd);
        let _ = waker.send(Wake::Message(message));
    });
}

/// Makes this process the reaper of orphaned descendants (tasks that double-fork), so they are
/// reaped here rather than left as zombies.
pub(crate) fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}
