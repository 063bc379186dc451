//! The one reader of `/proc`: a process's `stat` line (state, parent, process group, CPU time,
//! start time, resident memory), its identity (PID plus start time, so a reused PID is never
//! mistaken for the process we recorded), its environment, command line, executable, working
//! directory and open descriptors, the host's uptime and lock table, and the clock-tick and page
//! sizes, each computed once; and a pidfd, the kernel's handle on a process. A leaf: it knows nothing of homes, dispatches or daemons, and every
//! reader returns None (or nothing) for a process that is gone or not ours to read.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// `R`, `S`, `D`, `Z` (exited, not reaped), `X`, ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// User CPU time, clock ticks.
    pub utime: u64,
    /// System CPU time, clock ticks.
    pub stime: u64,
    /// Start time, clock ticks since boot.
    pub start_ticks: u64,
    /// Resident memory, pages.
    pub rss_pages: u64,
}

impl Stat {
    /// True while the process runs (an exited but unreaped process does not count).
    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// User plus system CPU time, clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime + self.stime
    }

    /// Resident memory in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.rss_pages * page_size()
    }

    /// Seconds since the process started (0 when the host's uptime cannot be read).
    pub fn age_secs(&self) -> f64 {
        uptime_secs().map(|u| (u - self.start_ticks as f64 / clock_ticks()).max(0.0)).unwrap_or(0.0)
    }
}

/// Parses the content of `/proc/<pid>/stat`. The command name (field 2) is in parentheses and
/// may hold spaces and parentheses itself, so fields are counted from the last `)`.
pub fn parse_stat(pid: i32, text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|s| s.parse::<u64>().ok());
    Some(Stat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        utime: num(14)?,
        stime: num(15)?,
        start_ticks: num(22)?,
        rss_pages: num(24)?,
    })
}

fn path(pid: i32, what: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{what}"))
}

thread_local! {
    static STAT_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many `/proc/<pid>/stat` files this thread has read (tests: a pass reads what it
/// watches, not every process on the host).
pub fn stat_reads() -> u64 {
    STAT_READS.with(|c| c.get())
}

/// Reads `/proc/<pid>/stat`; None when the process does not exist (or `pid` is not a PID).
pub fn stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    STAT_READS.with(|c| c.set(c.get() + 1));
    parse_stat(pid, &std::fs::read_to_string(path(pid, "stat")).ok()?)
}

/// The start time of a process, clock ticks since boot (what dispatch records keep as
/// `proc_start_ticks`).
pub fn start_ticks(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.start_ticks)
}

/// True when `pid` is still the process that started at `start_ticks` and has not exited (a
/// zombie counts as exited; a reused PID has another start time).
pub fn is_alive(pid: i32, start_ticks: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_ticks == start_ticks && s.is_running())
}

/// The PIDs in `/proc` now, in no particular order.
pub fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).collect()
}

/// The children of a process: `/proc/<pid>/task/<tid>/children` of each of its threads (a
/// child belongs to the thread that forked it). Empty when the process is gone.
pub fn children(pid: i32) -> Vec<i32> {
    if pid <= 0 {
        return Vec::new();
    }
    let Ok(tasks) = std::fs::read_dir(path(pid, "task")) else { return Vec::new() };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(t.path().join("children")) else { continue };
        out.extend(text.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
    }
    out
}

/// A process and its descendants (children, their children, ...), each read once: the cost is
/// the size of that tree, not the host's process count. A descendant whose parent exited was
/// reparented (to init or a subreaper) and is no longer found from here.
pub fn tree(pid: i32) -> Vec<Stat> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Some(s) = stat(p) else { continue };
        if out.iter().any(|o: &Stat| o.pid == p) {
            continue;
        }
        todo.extend(children(p));
        out.push(s);
    }
    out
}

/// Every running process whose process group is `pgid` (a walk of every process on the host:
/// for the rare paths, like stopping a group whose leader is gone).
pub fn group_members(pgid: i32) -> Vec<Stat> {
    pids().into_iter().filter_map(stat).filter(|s| s.pgrp == pgid && s.is_running()).collect()
}

fn sysconf(var: nix::unistd::SysconfVar) -> Option<i64> {
    match nix::unistd::sysconf(var) {
        Ok(Some(n)) if n > 0 => Some(n),
        _ => None,
    }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 when unknown.
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| sysconf(nix::unistd::SysconfVar::CLK_TCK).map_or(100.0, |n| n as f64))
}

/// Bytes per memory page (`sysconf(_SC_PAGESIZE)`), 4096 when unknown.
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| sysconf(nix::unistd::SysconfVar::PAGE_SIZE).map_or(4096, |n| n as u64))
}

/// Seconds since boot, from `/proc/uptime`.
pub fn uptime_secs() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()
}

/// The non-empty NUL-separated parts of `/proc/<pid>/environ`.
fn nul_split(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.split(|&b| b == 0).filter(|s| !s.is_empty()).map(<[u8]>::to_vec).collect()
}

/// The environment a process started with, as `NAME=value` byte strings; None when it cannot be
/// read (gone, or another user's).
pub fn environ(pid: i32) -> Option<Vec<Vec<u8>>> {
    Some(nul_split(&std::fs::read(path(pid, "environ")).ok()?))
}

/// The value of `name` in a process's environment (from [`environ`]).
pub fn env_var<'a>(environ: &'a [Vec<u8>], name: &str) -> Option<&'a [u8]> {
    environ.iter().find_map(|e| e.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
}

/// A process's command line, one byte string per argument (empty arguments kept, so indices
/// are argv's); None when it cannot be read. Empty for a kernel thread or a zombie.
pub fn cmdline(pid: i32) -> Option<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path(pid, "cmdline")).ok()?;
    let args = bytes.strip_suffix(b"\0").unwrap_or(&bytes);
    if args.is_empty() {
        return Some(Vec::new());
    }
    Some(args.split(|&b| b == 0).map(<[u8]>::to_vec).collect())
}

/// The executable a process runs (the kernel appends ` (deleted)` when the file was replaced).
pub fn exe(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(path(pid, "exe")).ok()
}

/// A process's working directory.
pub fn cwd(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(path(pid, "cwd")).ok()
}

/// A process's command name (`comm`, at most 15 bytes).
pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(path(pid, "comm")).ok().map(|s| s.trim_end().to_string())
}

/// One open descriptor of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFd {
    pub fd: i32,
    /// What the kernel calls it (`<path>`, `<path> (deleted)`, `pipe:[N]`, ...).
    pub target: PathBuf,
    /// `/proc/<pid>/fd/<fd>`, through which the open file itself can be reached.
    pub link: PathBuf,
}

/// The open descriptors of a process (none when it is gone or not ours to read).
pub fn open_fds(pid: i32) -> Vec<OpenFd> {
    let Ok(dir) = std::fs::read_dir(path(pid, "fd")) else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let link = e.path();
            Some(OpenFd { fd, target: std::fs::read_link(&link).ok()?, link })
        })
        .collect()
}

/// The path through which descriptor `fd` of process `pid` can be opened.
pub fn fd_link(pid: i32, fd: i32) -> PathBuf {
    path(pid, &format!("fd/{fd}"))
}

/// A pidfd for `pid` (`pidfd_open`): readable once the process exits, and a PID that cannot be
/// reused while it is open. ESRCH when there is no such process.
pub fn pidfd(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The host's lock table, `/proc/locks` (None when it cannot be read).
pub fn locks() -> Option<String> {
    std::fs::read_to_string("/proc/locks").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_after_the_last_paren_of_a_tricky_name() {
        let text = "4242 (a) b (c) S 1 4243 4244 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 123456 1000000 250 18446744073709551615";
        let s = parse_stat(4242, text).unwrap();
        assert_eq!((s.state, s.ppid, s.pgrp), ('S', 1, 4243));
        assert_eq!((s.utime, s.stime, s.cpu_ticks(), s.start_ticks, s.rss_pages), (7, 3, 10, 123456, 250));
        assert!(s.is_running());
    }

    #[test]
    fn a_name_of_spaces_and_parens_alone_still_parses() {
        let text = "7 ( ) ) (() R 0 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 99 0 3 0";
        let s = parse_stat(7, text).unwrap();
        assert_eq!((s.state, s.pgrp, s.start_ticks, s.rss_pages), ('R', 7, 99, 3));
    }

    #[test]
    fn a_live_process_named_with_parens_and_spaces_is_read() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("a) b (c");
        // A link, not a copy: no file open for writing that a concurrent fork could inherit. The
        // kernel names the process after the path executed; argv[0] stays `sleep`.
        std::os::unix::fs::symlink("/bin/sleep", &exe).unwrap();
        let mut child = std::process::Command::new(&exe).arg0("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let s = stat(pid);
        let name = comm(pid);
        let _ = child.kill();
        let _ = child.wait();
        let s = s.expect("the child's stat line");
        assert_eq!(name.as_deref(), Some("a) b (c"));
        assert_eq!((s.pid, s.ppid, s.pgrp), (pid, std::process::id() as i32, nix::unistd::getpgrp().as_raw()));
        assert!(s.start_ticks > 0);
    }

    #[test]
    fn a_zombie_is_not_running() {
        let text = "99 (gone) Z 1 99 99 0 -1 4227084 0 0 0 0 0 0 0 0 20 0 1 0 5000 0 0 18446744073709551615";
        let s = parse_stat(99, text).unwrap();
        assert_eq!(s.state, 'Z');
        assert!(!s.is_running());
        let dead = parse_stat(99, &text.replace(" Z ", " X ")).unwrap();
        assert!(!dead.is_running());
    }

    #[test]
    fn an_exited_unreaped_child_is_a_zombie_and_not_alive() {
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let ticks = start_ticks(pid).expect("the child's start time");
        // Wait for the exit but leave the child unreaped (WNOWAIT): a zombie.
        waitid(Id::Pid(nix::unistd::Pid::from_raw(pid)), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).unwrap();
        let s = stat(pid).expect("a zombie still has a stat line");
        assert_eq!((s.state, s.start_ticks), ('Z', ticks));
        assert!(!s.is_running() && !is_alive(pid, ticks));
        assert!(group_members(s.pgrp).iter().all(|m| m.pid != pid));
        assert!(pidfd(pid).is_ok(), "a zombie still has a pidfd");
        child.wait().unwrap();
        assert!(stat(pid).is_none_or(|s| s.start_ticks != ticks), "reaped: gone (or another process)");
        if stat(pid).is_none() {
            assert_eq!(pidfd(pid).unwrap_err().raw_os_error(), Some(nix::libc::ESRCH));
        }
    }

    #[test]
    fn truncated_or_garbled_lines_are_refused() {
        assert!(parse_stat(1, "").is_none());
        assert!(parse_stat(1, "1 (no close paren S 1 1 1").is_none());
        assert!(parse_stat(1, "1 (short) S 1 1 1 0 -1").is_none());
        assert!(parse_stat(1, "1 (x) S one 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 99 0 3 0").is_none());
    }

    #[test]
    fn this_process_is_alive_running_and_known() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("/proc of self");
        assert!(s.is_running());
        assert_eq!(s.pid, me);
        assert_eq!(s.pgrp, nix::unistd::getpgrp().as_raw());
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert!(s.rss_bytes() > 0);
        assert!(is_alive(me, s.start_ticks));
        assert!(!is_alive(me, s.start_ticks + 1), "another start time is another process");
        assert!(stat(0).is_none() && stat(-1).is_none());
        assert!(pids().contains(&me));
        assert!(group_members(s.pgrp).iter().any(|m| m.pid == me));
    }

    #[test]
    fn this_process_environment_command_line_and_descriptors() {
        let me = std::process::id() as i32;
        let env = environ(me).expect("environ of self");
        let path = std::env::var_os("PATH").map(|p| p.into_encoded_bytes());
        assert_eq!(env_var(&env, "PATH").map(<[u8]>::to_vec), path);
        assert!(env_var(&env, "PAT").is_none(), "a prefix of a name is not the name");
        let argv = cmdline(me).expect("cmdline of self");
        assert_eq!(argv.first().map(|a| String::from_utf8_lossy(a).into_owned()), std::env::args().next());
        assert_eq!(exe(me), std::env::current_exe().ok());
        assert_eq!(cwd(me), std::env::current_dir().ok());
        assert!(comm(me).is_some_and(|c| !c.is_empty()));
        let file = tempfile::NamedTempFile::new().unwrap();
        let real = std::fs::canonicalize(file.path()).unwrap();
        assert!(open_fds(me).iter().any(|o| o.target == real && std::fs::metadata(&o.link).is_ok()));
        assert!(clock_ticks() > 0.0 && page_size() > 0 && uptime_secs().is_some_and(|u| u > 0.0));
    }
}
