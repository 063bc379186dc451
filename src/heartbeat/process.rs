//! Processes of a dispatch, seen through `/proc`: identity (PID plus start time, so a reused PID
//! is never mistaken for ours), the members of its process group, their CPU and memory, and
//! stopping the group (SIGTERM, a grace period, SIGKILL) with waits on pidfds, not sleeps.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    /// `R`, `S`, `D`, `Z` (exited, not reaped), `X`, ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// User plus system CPU time, clock ticks.
    pub cpu_ticks: u64,
    /// Start time, clock ticks since boot.
    pub start_ticks: u64,
    pub rss_pages: u64,
}

impl ProcStat {
    /// True while the process runs (an exited but unreaped process does not count).
    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the content of `/proc/<pid>/stat`. The command name may hold spaces and parentheses,
/// so fields are counted from the last `)`.
pub fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|s| s.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        cpu_ticks: num(14)? + num(15)?,
        start_ticks: num(22)?,
        rss_pages: num(24)?,
    })
}

/// Reads `/proc/<pid>/stat`; None when the process does not exist.
pub fn read_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// The start time of a process (what the worker records as `proc_start_ticks`).
pub fn start_ticks(pid: i32) -> Option<u64> {
    read_stat(pid).map(|s| s.start_ticks)
}

/// True when `pid` is still the process that started at `start_ticks` and has not exited.
pub fn is_alive(pid: i32, start_ticks: u64) -> bool {
    read_stat(pid).is_some_and(|s| s.start_ticks == start_ticks && s.is_running())
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    }
}

/// Bytes per memory page.
pub fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
}

/// Every running process whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(read_stat)
        .filter(|s| s.pgrp == pgid && s.is_running())
        .collect()
}

/// The members of a dispatch's process group that are provably ours: the group exists only while
/// a process in it lives, and its id cannot be reused meanwhile; every member started at or
/// after the leader. If the leader's PID now names a different process, the group is gone.
pub fn owned_members(pid: i32, pgid: i32, start_ticks: u64) -> Vec<ProcStat> {
    if let Some(leader) = read_stat(pid)
        && leader.start_ticks != start_ticks
    {
        return Vec::new();
    }
    if pgid != pid
        && let Some(g) = read_stat(pgid)
        && g.start_ticks < start_ticks
    {
        // The group id names an older process than our leader: not a group we made.
        return Vec::new();
    }
    group_members(pgid).into_iter().filter(|m| m.start_ticks >= start_ticks).collect()
}

/// CPU ticks and resident memory of a set of processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
    pub processes: usize,
}

pub fn usage_of(members: &[ProcStat]) -> Usage {
    let page = page_size();
    Usage {
        cpu_ticks: members.iter().map(|m| m.cpu_ticks).sum(),
        rss_bytes: members.iter().map(|m| m.rss_pages * page).sum(),
        processes: members.len(),
    }
}

/// What stopping a group did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// Processes that were running when we started.
    pub found: usize,
    /// The last signal sent (`SIGTERM` or `SIGKILL`), None when nothing was running.
    pub signal: Option<&'static str>,
    /// Processes still running at the end (0 unless something refused to die).
    pub remaining: usize,
}

/// Stops a dispatch's process group: SIGTERM, up to `grace` for every member to exit, then
/// SIGKILL and a short wait. Only signals the group after checking it is ours.
pub fn stop_group(pid: i32, pgid: i32, start_ticks: u64, grace: Duration) -> StopOutcome {
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

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until every `(pid, start_ticks)` has exited (or was reaped), at most until `deadline`.
/// Blocks in `poll` on pidfds; falls back to a short re-check where pidfds are unavailable.
pub fn wait_all_exited(procs: &[(i32, u64)], deadline: Instant) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds: Vec<(i32, u64, OwnedFd)> = Vec::new();
    let mut unwatchable: Vec<(i32, u64)> = Vec::new();
    for &(pid, ticks) in procs {
        match pidfd_open(pid) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let text = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 123456 1000000 250 18446744073709551615";
        let s = parse_stat(4242, text).unwrap();
        assert_eq!((s.state, s.ppid, s.pgrp, s.cpu_ticks, s.start_ticks, s.rss_pages), ('S', 1, 4242, 10, 123456, 250));
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let ticks = start_ticks(me).unwrap();
        assert!(is_alive(me, ticks));
        assert!(!is_alive(me, ticks + 1));
    }
}
