//! Processes of a dispatch, seen through [`crate::base::procfs`]: the members of its process group
//! that are provably ours, their CPU and memory, and stopping the group (SIGTERM, a grace
//! period, SIGKILL) with waits on pidfds, not sleeps.

use crate::base::procfs::{self, Stat, group_members, is_alive};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// The members of a dispatch's process group that are provably ours: the group exists only while
/// a process in it lives, and its id cannot be reused meanwhile; every member started at or
/// after the leader. If the leader's PID now names a different process, the group is gone.
pub(crate) fn owned_members(pid: i32, pgid: i32, start_ticks: u64) -> Vec<Stat> {
    if let Some(leader) = procfs::stat(pid)
        && leader.start_ticks != start_ticks
    {
        return Vec::new();
    }
    if pgid != pid
        && let Some(g) = procfs::stat(pgid)
        && g.start_ticks < start_ticks
    {
        // The group id names an older process than our leader: not a group we made.
        return Vec::new();
    }
    group_members(pgid).into_iter().filter(|m| m.start_ticks >= start_ticks).collect()
}

/// The members of a dispatch's group whose CPU and memory a heartbeat pass samples: the leader
/// (while it is the process we started) and its descendants in the group, found from its
/// `children` lists — what the dispatch owns, not every process on the host. A member whose
/// parent exited (reparented to the worker, the subreaper) is not counted here; stopping the
/// group ([`stop_group`]) still finds every member.
pub(crate) fn sampled_members(pid: i32, pgid: i32, start_ticks: u64) -> Vec<Stat> {
    match procfs::stat(pid) {
        Some(leader) if leader.start_ticks == start_ticks => procfs::tree(pid)
            .into_iter()
            .filter(|m| m.pgrp == pgid && m.start_ticks >= start_ticks && m.is_running())
            .collect(),
        _ => Vec::new(),
    }
}

/// CPU ticks and resident memory of a set of processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Usage {
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
    pub processes: usize,
}

pub(crate) fn usage_of(members: &[Stat]) -> Usage {
    Usage {
        cpu_ticks: members.iter().map(Stat::cpu_ticks).sum(),
        rss_bytes: members.iter().map(Stat::rss_bytes).sum(),
        processes: members.len(),
    }
}

/// What stopping a group did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StopOutcome {
    /// Processes that were running when we started.
    pub found: usize,
    /// The last signal sent (`SIGTERM` or `SIGKILL`), None when nothing was running.
    pub signal: Option<&'static str>,
    /// Processes still running at the end (0 unless something refused to die).
    pub remaining: usize,
}

/// Stops a dispatch's process group: SIGTERM, up to `grace` for every member to exit, then
/// SIGKILL and a short wait. Only signals the group after checking it is ours.
pub(crate) fn stop_group(pid: i32, pgid: i32, start_ticks: u64, grace: Duration) -> StopOutcome {
    let members = owned_members(pid, pgid, start_ticks);
    let mut out = StopOutcome { found: members.len(), ..Default::default() };
    if members.is_empty() {
        return out;
    }
    let watched: Vec<(i32, u64)> = members.iter().map(|m| (m.pid, m.start_ticks)).collect();
    if killpg(Pid::from_raw(pgid), Signal::SIGTERM).is_ok() {
        out.signal = Some("SIGTERM");
    }
    if wait_all_exited(&watched, Instant::now() + grace) {
        return out;
    }
    // Members may have forked meanwhile: look again before the last resort.
    let left = owned_members(pid, pgid, start_ticks);
    if !left.is_empty() && killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
        out.signal = Some("SIGKILL");
    }
    let left: Vec<(i32, u64)> = left.iter().map(|m| (m.pid, m.start_ticks)).collect();
    wait_all_exited(&left, Instant::now() + Duration::from_secs(5));
    out.remaining = owned_members(pid, pgid, start_ticks).len();
    out
}

/// Waits until every `(pid, start_ticks)` has exited (or was reaped), at most until `deadline`.
/// Blocks in `poll` on pidfds; falls back to a short re-check where pidfds are unavailable.
pub(crate) fn wait_all_exited(procs: &[(i32, u64)], deadline: Instant) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds: Vec<(i32, u64, OwnedFd)> = Vec::new();
    let mut unwatchable: Vec<(i32, u64)> = Vec::new();
    for &(pid, ticks) in procs {
        match procfs::pidfd(pid) {
            // Opened after the check would race with PID reuse; check identity after opening.
            Ok(fd) if is_alive(pid, ticks) => fds.push((pid, ticks, fd)),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {}
            Err(_) => unwatchable.push((pid, ticks)),
        }
    }
    loop {
        fds.retain(|(pid, ticks, _)| is_alive(*pid, *ticks));
        unwatchable.retain(|(pid, ticks)| is_alive(*pid, *ticks));
        if fds.is_empty() && unwatchable.is_empty() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let step = if unwatchable.is_empty() { left } else { left.min(Duration::from_millis(20)) };
        let ms = step.as_millis().clamp(1, i32::MAX as u128) as i32;
        if fds.is_empty() {
            std::thread::sleep(step);
            continue;
        }
        let mut pfds: Vec<PollFd> = fds.iter().map(|(_, _, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)).collect();
        let _ = poll(&mut pfds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX));
    }
}
