//! Who holds a lock, from the kernel's lock table (`/proc/locks`), not from anything written in a
//! file: the holder note of a lock file and the number in a PID file are only hints (the last
//! writer, or a planted number), the kernel names the process that holds the `flock`.
//!
//! Also finds the holders of a *deleted* lock or PID file by its name: when an operator removes
//! a file whose lock is held, the holder keeps the lock on the unlinked inode and its
//! `/proc/<pid>/fd/N` reads `<path> (deleted)`. A new acquirer of the same name looks for such
//! holders and waits for them (a lock) or refuses to start (a PID file), so deleting a lock or
//! PID file never gives two holders (invariant 6).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One `flock` in the kernel's lock table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub pid: u32,
    /// WRITE (exclusive) rather than READ (shared).
    pub exclusive: bool,
    /// The locked inode: device (as `stat`'s `st_dev`) and inode number.
    pub dev: u64,
    pub ino: u64,
}

/// A process holding a lock, with its command (for messages and `cortex locks`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    pub pid: u32,
    pub exclusive: bool,
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)
    }
}

/// A holder of a deleted predecessor of a lock or PID file: the lock is on an unlinked inode that
/// the process reaches through its descriptor `fd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedHold {
    pub pid: u32,
    pub fd: u32,
    pub exclusive: bool,
    pub dev: u64,
    pub ino: u64,
}

/// Parses one line of `/proc/locks`; None for anything but a granted FLOCK (waiters are `->`).
fn parse_line(line: &str) -> Option<Held> {
    let mut f = line.split_whitespace();
    let _id = f.next()?;
    let kind = f.next()?;
    if kind != "FLOCK" {
        return None;
    }
    let _advisory = f.next()?;
    let exclusive = match f.next()? {
        "WRITE" => true,
        "READ" => false,
        _ => return None,
    };
    let pid: i64 = f.next()?.parse().ok()?;
    let mut id = f.next()?.split(':');
    let major = u64::from_str_radix(id.next()?, 16).ok()?;
    let minor = u64::from_str_radix(id.next()?, 16).ok()?;
    let ino: u64 = id.next()?.parse().ok()?;
    let pid = u32::try_from(pid).ok().filter(|p| *p > 0)?;
    Some(Held { pid, exclusive, dev: nix::sys::stat::makedev(major, minor), ino })
}

/// The granted `flock`s of the whole host (an empty table when `/proc/locks` cannot be read).
pub fn table() -> Vec<Held> {
    crate::base::procfs::locks().map(|t| t.lines().filter_map(parse_line).collect()).unwrap_or_default()
}

/// A PID of the lock table as `/proc` numbers it (-1, no process, for one out of range).
fn proc_pid(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(-1)
}

/// The command of a process: its `comm`, or `?` when it is gone.
pub fn command(pid: u32) -> String {
    crate::base::procfs::comm(proc_pid(pid)).unwrap_or_else(|| "?".into())
}

/// The holders of the inode `(dev, ino)`, exclusive ones first.
pub fn holders_of(dev: u64, ino: u64) -> Vec<Holder> {
    read_until_found(|table| holders_in(table, dev, ino))
}

/// Reads of the lock table tried before a lookup answers "nobody holds it".
const TABLE_READS: usize = 4;

/// Runs `lookup` over the lock table, reading it again while the answer is empty, up to
/// [`TABLE_READS`] times. `/proc/locks` comes a page per `read` call, each taken apart under the
/// kernel's lock, so while other processes take and release locks between two calls a held lock
/// can be skipped (measured: ~0.7 % of reads under churn; `cortex stop --force` then refused a
/// live daemon, "the kernel's lock table names nobody"). Entries are skipped, never invented, so
/// a holder found once is real; only "nobody" needs the second look.
fn read_until_found<T>(lookup: impl Fn(&[Held]) -> Vec<T>) -> Vec<T> {
    let mut found = Vec::new();
    for _ in 0..TABLE_READS {
        found = lookup(&table());
        if !found.is_empty() {
            break;
        }
    }
    found
}

fn holders_in(table: &[Held], dev: u64, ino: u64) -> Vec<Holder> {
    let mut out: Vec<Holder> = Vec::new();
    for h in table.iter().filter(|h| h.dev == dev && h.ino == ino) {
        if !out.iter().any(|o| o.pid == h.pid && o.exclusive == h.exclusive) {
            out.push(Holder { pid: h.pid, exclusive: h.exclusive, command: command(h.pid) });
        }
    }
    out.sort_by_key(|h| !h.exclusive);
    out
}

/// `path` made absolute and free of links the way the kernel prints an open file's name: the
/// longest existing ancestor canonicalised, the rest appended (a removed directory included).
fn kernel_name(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(c) = std::fs::canonicalize(&cur) {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() };
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The processes that hold a lock on a deleted file that was called `path` (a removed lock or
/// PID file whose holder still runs). Only processes in the kernel's lock table are looked at,
/// and a descriptor counts only when its inode is the one that process has locked. The table is
/// read again while the answer is empty ([`read_until_found`]): a skipped entry here let a second
/// copy of a daemon start beside the one whose PID file had been deleted (seen once in the suite's
/// `a_running_daemon_whose_pid_file_is_deleted_is_found_and_never_started_twice`).
pub fn deleted_holders(path: &Path) -> Vec<DeletedHold> {
    read_until_found(|table| deleted_holders_in(table, path))
}

fn deleted_holders_in(table: &[Held], path: &Path) -> Vec<DeletedHold> {
    use std::os::unix::ffi::OsStrExt;
    let mut wanted = kernel_name(path).into_os_string();
    wanted.push(" (deleted)");
    let wanted = wanted.as_bytes();
    let mut pids: Vec<u32> = table.iter().map(|h| h.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    let mut out = Vec::new();
    for pid in pids {
        for open in crate::base::procfs::open_fds(proc_pid(pid)) {
            if open.target.as_os_str().as_bytes() != wanted {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&open.link) else { continue };
            let Ok(fd) = u32::try_from(open.fd) else { continue };
            for h in table.iter().filter(|h| h.pid == pid && h.dev == meta.dev() && h.ino == meta.ino()) {
                out.push(DeletedHold { pid, fd, exclusive: h.exclusive, dev: h.dev, ino: h.ino });
            }
        }
    }
    out
}

/// Every holder of the lock or PID file `path`: of the file it names now and of its deleted
/// predecessors, exclusive ones first.
pub fn all_holders(path: &Path) -> Vec<Holder> {
    let identity = std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
    read_until_found(|table| {
        let mut out = match identity {
            Some((dev, ino)) => holders_in(table, dev, ino),
            None => Vec::new(),
        };
        for d in deleted_holders_in(table, path) {
            if !out.iter().any(|o| o.pid == d.pid && o.exclusive == d.exclusive) {
                out.push(Holder { pid: d.pid, exclusive: d.exclusive, command: command(d.pid) });
            }
        }
        out.sort_by_key(|h| !h.exclusive);
        out
    })
}

/// Opens the deleted inode a holder has locked, through its `/proc/<pid>/fd/<fd>` (to wait on its
/// lock). None when the process or descriptor is gone or now names another inode.
pub fn open_deleted(hold: &DeletedHold) -> Option<File> {
    let file = File::open(crate::base::procfs::fd_link(proc_pid(hold.pid), i32::try_from(hold.fd).ok()?)).ok()?;
    let meta = file.metadata().ok()?;
    (meta.is_file() && meta.dev() == hold.dev && meta.ino() == hold.ino && meta.nlink() == 0).then_some(file)
}

/// Names holders for a message: `pid 12 (cortex-worker), pid 40 (flock)`.
pub fn describe(holders: &[Holder]) -> String {
    holders.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flock_lines_and_skips_waiters_and_posix() {
        let h = parse_line("1: FLOCK  ADVISORY  WRITE 21461 fe:00:5373967 0 EOF").unwrap();
        assert_eq!(h, Held { pid: 21461, exclusive: true, dev: nix::sys::stat::makedev(0xfe, 0), ino: 5373967 });
        assert!(!parse_line("2: FLOCK  ADVISORY  READ 7 08:11:12 0 EOF").unwrap().exclusive);
        assert!(parse_line("3: -> FLOCK  ADVISORY  WRITE 7 08:11:12 0 EOF").is_none());
        assert!(parse_line("4: POSIX  ADVISORY  WRITE 7 08:11:12 0 EOF").is_none());
        assert!(parse_line("5: OFDLCK ADVISORY  WRITE -1 08:11:12 0 EOF").is_none());
    }

    #[test]
    fn finds_our_own_lock_and_its_deleted_predecessor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let f = File::create(&p).unwrap();
        f.lock().unwrap();
        let me = std::process::id();
        assert!(all_holders(&p).iter().any(|h| h.pid == me && h.exclusive), "{:?}", table());
        std::fs::remove_file(&p).unwrap();
        let gone = deleted_holders(&p);
        assert!(gone.iter().any(|d| d.pid == me), "{gone:?}");
        assert!(all_holders(&p).iter().any(|h| h.pid == me));
        let reopened = open_deleted(gone.iter().find(|d| d.pid == me).unwrap()).unwrap();
        assert!(reopened.try_lock().is_err());
        drop(f);
        assert!(deleted_holders(&p).iter().all(|d| d.pid != me));
    }
}
