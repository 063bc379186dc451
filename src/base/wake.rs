//! Why a waiting loop woke up: the one message type between a loop that waits (a daemon's
//! `DaemonContext::wait`, `cortex run`'s foreground supervisor) and whatever wakes it (signal
//! handlers, file watchers, child-exit watchers, the loop's own threads).

use std::path::PathBuf;

/// Why a daemon's loop woke up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// SIGTERM or SIGINT: finish up and return.
    Shutdown(i32),
    /// A watched path changed.
    Changed(PathBuf),
    /// SIGCHLD: a child may have exited.
    ChildExited,
    /// A message from one of the daemon's own threads.
    Message(String),
    /// The deadline passed.
    Deadline,
}
