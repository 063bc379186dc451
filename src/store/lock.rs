//! Advisory locks (invariant 2): `flock` through std's `File::lock`/`try_lock` on dedicated lock
//! files under `coordination/.locks/`, never on a data file (a rename replaces the data file's
//! inode and would silently split such a lock in two).
//!
//! Blocking acquisition has a deadline. The uncontended path is one `try_lock`. When contended, a
//! helper thread blocks in `flock` on the same descriptor (moved into it, never a reopen of the
//! path) and hands the locked file over a channel, so the waiter wakes the moment the lock is
//! free (no polling) and gives up at its deadline; a lock the helper gets after the waiter gave
//! up is released at once by dropping the file.
//!
//! A lock file is opened once, `O_NOFOLLOW`, and must be a regular file owned by us. After the
//! `flock` succeeds the path must still name the locked inode (`fstat` of the descriptor against
//! `lstat` of the path): a file removed or replaced meanwhile is dropped and the path opened
//! again. A file found empty (just created: nobody has locked it to the end yet) may have a
//! deleted predecessor whose holder still runs: the acquirer waits for that holder too
//! ([`super::holders`]), so deleting a lock file, or the whole directory, never gives two
//! holders. A timeout names the real holders from the kernel's lock table; the holder note in
//! the file is only the last writer's hint.

use super::holders::{self, Holder};
pub use super::lock_name::LockName;
use super::lock_name::order;
use crate::base::error::{Error, Result};
use crate::store::home::Home;
use std::fs::{File, Metadata};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Shared (`LOCK_SH`) or exclusive (`LOCK_EX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// A held lock. Dropping it releases the lock.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
    /// The named lock's place in the lock order (None for a PID file).
    held: Option<(LockName, order::Held)>,
}

impl LockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which lock this is (None for a PID file).
    pub fn name(&self) -> Option<LockName> {
        self.held.as_ref().map(|(n, _)| *n)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Released before `held` leaves this thread's stack (fields drop after this body).
        let _ = self.file.unlock();
    }
}

/// Opens (creating it and its directory if need be) a lock or PID file, never through a link,
/// and checks it is a regular file owned by us. Returns the file and its `fstat`.
///
/// Its directory (`coordination/.locks/`, `run/`) is reached from the home root without
/// following a link ([`super::open::open_dir`]) and the file is opened relative to it: a link
/// planted at the directory would otherwise lead the lock file, its holder note or a PID into
/// any directory.
pub(crate) fn open_checked(path: &Path) -> Result<(File, Metadata)> {
    use nix::fcntl::OFlag;
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) if !d.as_os_str().is_empty() => (d, n),
        (_, Some(n)) => (Path::new("."), n),
        _ => return Err(Error::other(format!("{} names no lock file", path.display()))),
    };
    let dir_fd = super::open::open_dir(dir)?;
    let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let mode = nix::sys::stat::Mode::from_bits_truncate(super::atomic::FILE_MODE);
    let file = nix::fcntl::openat(&dir_fd, name, flags, mode).map(File::from).map_err(|e| match e {
        nix::errno::Errno::ELOOP => {
            Error::unusable(path, "is a symbolic link; lock and PID files are never followed through a link: remove it")
        }
        e => Error::io(path, "open lock file", e.into()),
    })?;
    let meta = file.metadata().map_err(|e| Error::io(path, "stat lock file", e))?;
    check_owned_regular(path, &meta)?;
    Ok((file, meta))
}

/// Refuses a lock or PID file that is not a regular file owned by our effective user.
fn check_owned_regular(path: &Path, meta: &Metadata) -> Result<()> {
    if !meta.file_type().is_file() {
        return Err(Error::unusable(
            path,
            format!("is not a regular file (mode {:o}); a lock or PID file must be one: remove it", meta.mode()),
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::unusable(
            path,
            format!("is owned by uid {}, not by us (uid {me}); remove it or fix its owner", meta.uid()),
        ));
    }
    Ok(())
}

/// What the path names after the lock was taken.
enum Still {
    /// The locked inode, with the file's size then.
    Same { size: u64 },
    /// Removed or replaced meanwhile: open again.
    Replaced,
}

fn still_named(path: &Path, opened: &Metadata) -> Result<Still> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.dev() == opened.dev() && m.ino() == opened.ino() && m.nlink() > 0 => {
            Ok(Still::Same { size: m.len() })
        }
        Ok(_) => Ok(Still::Replaced),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Still::Replaced),
        Err(e) => Err(Error::io(path, "stat lock file", e)),
    }
}

fn try_flock(file: &File, mode: Mode) -> std::result::Result<(), std::fs::TryLockError> {
    match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    }
}

/// Blocks in `flock` on `file` in a helper thread until `deadline`. `Ok(None)` on timeout (the
/// helper then drops the file, releasing a lock it gets later).
fn wait_flock(file: File, mode: Mode, deadline: Instant, path: &Path) -> Result<Option<File>> {
    let (tx, rx) = mpsc::sync_channel::<std::io::Result<File>>(1);
    std::thread::Builder::new()
        .name("lock-wait".into())
        .spawn(move || {
            let res = match mode {
                Mode::Shared => file.lock_shared(),
                Mode::Exclusive => file.lock(),
            };
            // If the waiter has gone, the send fails and the file (and lock) is dropped here.
            let _ = tx.send(res.map(|()| file));
        })
        .map_err(|e| Error::io(path, "spawn lock waiter for", e))?;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(file)) => Ok(Some(file)),
        Ok(Err(e)) => Err(Error::io(path, "lock", e)),
        Err(_) => Ok(None),
    }
}

/// Bytes of the holder note: written over the first bytes of the lock file, padded with spaces.
const HOLDER_NOTE_LEN: usize = 64;

fn is_pid_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "pid")
}

/// Records who holds the lock, for the timeout message of the next waiter. Best effort.
///
/// One `pwrite` over the file's first bytes, padded to a fixed length, never a truncate: a
/// truncate frees the file's block and the next write allocates it again, which on ext4 mounted
/// with `discard` cost every lock taken 0.1 ms (1 ms at p99) of discards. The note also marks
/// the file as no longer fresh (see [`wait_deleted_predecessors`]).
fn note_holder(file: &File, path: &Path) {
    if is_pid_file(path) {
        return;
    }
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut note = format!("pid {} at {at} ({exe})", std::process::id()).into_bytes();
    note.truncate(HOLDER_NOTE_LEN - 1);
    note.resize(HOLDER_NOTE_LEN - 1, b' ');
    note.push(b'\n');
    let _ = file.write_all_at(&note, 0);
}

/// The holder note of a lock file, read through our own descriptor.
pub fn read_note(file: &File) -> Option<String> {
    let mut buf = [0u8; HOLDER_NOTE_LEN];
    let n = file.read_at(&mut buf, 0).ok()?;
    let s = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The holder part of a timeout: the real holders from the kernel's lock table, then the note.
fn holder_text(holders: &[Holder], note: Option<String>, deleted: bool) -> Option<String> {
    let mut text = if holders.is_empty() {
        String::from("an unknown process (not in the kernel's lock table)")
    } else {
        holders::describe(holders)
    };
    if deleted {
        text.push_str(" (on a deleted predecessor of the lock file)");
    }
    if let Some(n) = note {
        text.push_str(&format!("; last note: {n}"));
    }
    Some(text)
}

fn timeout_error(path: &Path, file: Option<&File>, start: Instant) -> Error {
    use std::os::unix::fs::MetadataExt as _;
    let holders = match file.and_then(|f| f.metadata().ok()) {
        Some(m) => holders::holders_of(m.dev(), m.ino()),
        None => holders::all_holders(path),
    };
    Error::LockTimeout {
        lock: path.to_path_buf(),
        holder: holder_text(&holders, file.and_then(read_note), false),
        waited_ms: start.elapsed().as_millis(),
    }
}

/// Waits (until `deadline`) for every process that holds, in a mode conflicting with `mode`, a
/// deleted predecessor of the lock file `path`. Called by an acquirer that found the file empty,
/// that is just created (the note or the PID written by whoever locks it marks it as used).
/// Rare, so a rescan after each release is fine; the wait itself blocks in `flock` on the old
/// inode, reached through the holder's `/proc/<pid>/fd/<n>`.
fn wait_deleted_predecessors(path: &Path, mode: Mode, deadline: Instant, start: Instant) -> Result<()> {
    let mut backoff = Duration::from_millis(5);
    loop {
        let holds: Vec<_> =
            holders::deleted_holders(path).into_iter().filter(|h| mode == Mode::Exclusive || h.exclusive).collect();
        let Some(hold) = holds.first() else { return Ok(()) };
        let timed_out = |file: Option<&File>| {
            let who = holds
                .iter()
                .map(|h| Holder { pid: h.pid, exclusive: h.exclusive, command: holders::command(h.pid) })
                .collect::<Vec<_>>();
            Error::LockTimeout {
                lock: path.to_path_buf(),
                holder: holder_text(&who, file.and_then(read_note), true),
                waited_ms: start.elapsed().as_millis(),
            }
        };
        match holders::open_deleted(hold) {
            Some(old) => {
                let note = read_note(&old);
                let conflicting = if mode == Mode::Exclusive { Mode::Exclusive } else { Mode::Shared };
                match try_flock(&old, conflicting) {
                    Ok(()) => drop(old),
                    Err(std::fs::TryLockError::WouldBlock) => match wait_flock(old, conflicting, deadline, path)? {
                        Some(f) => drop(f),
                        None => {
                            let mut e = timed_out(None);
                            if let (Error::LockTimeout { holder: Some(h), .. }, Some(n)) = (&mut e, note) {
                                h.push_str(&format!("; last note: {n}"));
                            }
                            return Err(e);
                        }
                    },
                    Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, "lock", e)),
                }
            }
            None => {
                // The holder is going away (or its descriptor moved): look again shortly.
                if Instant::now() >= deadline {
                    return Err(timed_out(None));
                }
                std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// Takes the lock at `path` in `mode`, waiting at most `timeout`; writes the holder note unless
/// `quiet` (a PID file's content is its PID). A named lock is checked against the lock order
/// first (debug builds) and recorded as held.
fn acquire(path: &Path, mode: Mode, timeout: Duration, quiet: bool, name: Option<LockName>) -> Result<LockGuard> {
    let held = name.map(|n| (n, order::acquiring(n)));
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        let (file, opened) = open_checked(path)?;
        let file = match try_flock(&file, mode) {
            Ok(()) => file,
            Err(std::fs::TryLockError::WouldBlock) => {
                let probe = file.try_clone().ok();
                match wait_flock(file, mode, deadline, path)? {
                    Some(f) => f,
                    None => return Err(timeout_error(path, probe.as_ref(), start)),
                }
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, "lock", e)),
        };
        match still_named(path, &opened)? {
            Still::Replaced => {
                if Instant::now() >= deadline {
                    return Err(timeout_error(path, None, start));
                }
                continue;
            }
            Still::Same { size } => {
                if size == 0 {
                    wait_deleted_predecessors(path, mode, deadline, start)?;
                }
                if !quiet && (mode == Mode::Exclusive || size == 0) {
                    note_holder(&file, path);
                }
                return Ok(LockGuard { file, path: path.to_path_buf(), held });
            }
        }
    }
}

/// Takes the lock `name` of `home` in `mode`, waiting at most `timeout`. Panics in debug builds
/// when this thread holds a lock that comes after `name` in [`LockName`]'s order.
pub fn lock(home: &Home, name: LockName, mode: Mode, timeout: Duration) -> Result<LockGuard> {
    lock_at(&home.lock_file(name), name, mode, timeout)
}

/// Takes the exclusive lock `name` of `home`, waiting at most `timeout`.
pub fn lock_exclusive(home: &Home, name: LockName, timeout: Duration) -> Result<LockGuard> {
    lock(home, name, Mode::Exclusive, timeout)
}

/// Takes the lock `name` of `home` shared, waiting at most `timeout`.
pub fn lock_shared(home: &Home, name: LockName, timeout: Duration) -> Result<LockGuard> {
    lock(home, name, Mode::Shared, timeout)
}

/// [`lock`] for a process handed the lock file's path rather than the home (a task's exec shim);
/// `path` is `name`'s lock file.
pub fn lock_at(path: &Path, name: LockName, mode: Mode, timeout: Duration) -> Result<LockGuard> {
    debug_assert!(path.ends_with(name.file_name()), "{} is not the lock file of {name}", path.display());
    acquire(path, mode, timeout, false, Some(name))
}

/// Tries the exclusive lock `name` of `home` once; `Ok(None)` when someone else holds it.
pub fn try_lock_exclusive(home: &Home, name: LockName) -> Result<Option<LockGuard>> {
    try_at(&home.lock_file(name), Some(name))
}

/// [`try_lock_exclusive`] of the lock file at `path`, which is `name`'s.
pub fn try_lock_exclusive_at(path: &Path, name: LockName) -> Result<Option<LockGuard>> {
    debug_assert!(path.ends_with(name.file_name()), "{} is not the lock file of {name}", path.display());
    try_at(path, Some(name))
}

/// Takes the lock of a PID file (`run/<daemon>.pid`), leaving its content (the PID) alone. PID
/// files are outside [`LockName`]'s order: a daemon holds its own for its whole life.
pub fn lock_pid_file(path: &Path, timeout: Duration) -> Result<LockGuard> {
    acquire(path, Mode::Exclusive, timeout, true, None)
}

/// Tries the lock of a PID file once; `Ok(None)` when someone holds it.
pub fn try_lock_pid_file(path: &Path) -> Result<Option<LockGuard>> {
    try_at(path, None)
}

/// Tries the exclusive lock once; `Ok(None)` when someone else holds it (or a deleted
/// predecessor of the file).
fn try_at(path: &Path, name: Option<LockName>) -> Result<Option<LockGuard>> {
    let held = name.map(|n| (n, order::acquiring(n)));
    // A file replaced between open and lock is opened again; a few rounds bound a busy loop.
    for _ in 0..8 {
        let (file, opened) = open_checked(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, "lock", e)),
        }
        match still_named(path, &opened)? {
            Still::Replaced => continue,
            Still::Same { size } => {
                if size == 0 && !holders::deleted_holders(path).is_empty() {
                    return Ok(None);
                }
                note_holder(&file, path);
                return Ok(Some(LockGuard { file, path: path.to_path_buf(), held }));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock at any path, outside the lock order (these tests take one lock twice in a thread).
    fn lock_exclusive(path: &Path, timeout: Duration) -> Result<LockGuard> {
        acquire(path, Mode::Exclusive, timeout, false, None)
    }

    fn try_lock_exclusive(path: &Path) -> Result<Option<LockGuard>> {
        try_at(path, None)
    }

    #[test]
    fn second_lock_times_out_then_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let g = lock_exclusive(&p, Duration::from_secs(1)).unwrap();
        let err = lock_exclusive(&p, Duration::from_millis(50)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.lock") && msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        assert!(try_lock_exclusive(&p).unwrap().is_none());
        let t = std::thread::spawn({
            let p = p.clone();
            move || lock_exclusive(&p, Duration::from_secs(5)).map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(g);
        t.join().unwrap().unwrap();
        assert!(try_lock_exclusive(&p).unwrap().is_some());
    }

    #[test]
    fn a_deleted_lock_file_still_held_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".locks").join("x.lock");
        let g = lock_exclusive(&p, Duration::from_secs(1)).unwrap();
        std::fs::remove_dir_all(dir.path().join(".locks")).unwrap();
        let err = lock_exclusive(&p, Duration::from_millis(100)).unwrap_err().to_string();
        assert!(err.contains("deleted predecessor"), "{err}");
        assert!(try_lock_exclusive(&p).unwrap().is_none());
        let t = std::thread::spawn({
            let p = p.clone();
            move || lock_exclusive(&p, Duration::from_secs(5)).map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished());
        drop(g);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn refuses_links_and_files_that_are_not_regular() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("l.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = lock_exclusive(&link, Duration::from_millis(50)).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        let sub = dir.path().join("d.lock");
        std::fs::create_dir(&sub).unwrap();
        assert!(lock_exclusive(&sub, Duration::from_millis(50)).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }
}
