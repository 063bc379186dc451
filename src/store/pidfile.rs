//! PID files (invariant 6): `run/<daemon>.pid` under the home, flock-held by the daemon for its
//! whole life. The lock, not the number in the file, says whether the daemon runs, and the
//! kernel's lock table (`/proc/locks`) says which process holds it: a PID file whose lock can be
//! taken is stale whatever PID it holds (PIDs are reused), and a planted number is never
//! believed.
//!
//! Deleting a PID file while its daemon runs does not lose the daemon: the daemon still holds
//! the lock on the unlinked inode, [`status`] finds it there ([`crate::store::holders`]), a
//! second copy refuses to start, and the daemon writes the file again within a second
//! ([`PidFile::refresh`], called from `DaemonContext::wait`).

use crate::base::daemon_name::PidOwner;
use crate::base::error::{Error, Result};
use crate::store::holders;
use crate::store::home::Home;
use crate::store::lock::open_checked;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often a PID file's holder (every daemon, `cortex run`) checks that its path still names
/// the file it locked, and writes it again when an operator removed or replaced it
/// ([`PidFile::refresh`]).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A PID file held by the running daemon. Dropping it releases the lock (the file stays; its
/// content then is stale by definition).
#[derive(Debug)]
pub struct PidFile {
    file: File,
    dev: u64,
    ino: u64,
    path: PathBuf,
}

/// What a PID file says about its daemon, seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidStatus {
    /// No PID file.
    Absent,
    /// Locked: the daemon runs with this PID (the lock holder the kernel names).
    Running(u32),
    /// The file exists but nobody holds its lock: the daemon died (or was stopped uncleanly).
    Stale(Option<u32>),
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

fn write_pid(file: &mut File, path: &Path) -> Result<()> {
    file.set_len(0).map_err(|e| Error::io(path, "truncate", e))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, "seek", e))?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(|e| Error::io(path, "write", e))?;
    file.sync_all().map_err(|e| Error::io(path, "fsync", e))
}

/// True when `path` names the inode `(dev, ino)` (not following a link).
fn names(path: &Path, dev: u64, ino: u64) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == dev && m.ino() == ino && m.nlink() > 0)
}

/// Waits until `deadline` for the lock on `file` in a helper thread (the same descriptor).
fn wait_lock(file: File, deadline: Instant) -> std::io::Result<Option<File>> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new().name("pidfile-wait".into()).spawn(move || {
        let _ = tx.send(file.lock().map(|()| file));
    })?;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    }
}

/// The PID of whoever holds the PID file's lock, for a refusal.
fn holder_pid(path: &Path, meta: &Metadata, file: &mut File) -> String {
    let kernel = holders::holders_of(meta.dev(), meta.ino());
    match kernel.iter().find(|h| h.exclusive) {
        Some(h) => format!("PID {} ({})", h.pid, h.command),
        None => match read_pid(file) {
            Some(p) => format!("PID {p} per {}", path.display()),
            None => "PID unknown".into(),
        },
    }
}

impl PidFile {
    /// Takes the PID file of `daemon` in `home`. Waits up to `wait` for a lock that is only
    /// briefly held (a status check), then refuses with a message naming the running PID. Also
    /// refuses when a deleted PID file of the same name is still held (its daemon runs).
    pub fn acquire(home: &Home, daemon: impl Into<PidOwner>, wait: Duration) -> Result<PidFile> {
        let daemon: PidOwner = daemon.into();
        let path = home.pid_file(daemon);
        let deadline = Instant::now() + wait;
        let running = |who: String| {
            Error::refused(format!(
                "{daemon} is already running in {} ({who}, {} is locked); stop it first with `cortex stop {daemon}`",
                home.root().display(),
                path.display()
            ))
        };
        loop {
            let (mut file, meta) = open_checked(&path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    // A checker may hold it for a moment; a real second daemon holds it for good.
                    let probe = file.try_clone().map_err(|e| Error::io(&path, "duplicate", e))?;
                    match wait_lock(file, deadline).map_err(|e| Error::io(&path, "lock", e))? {
                        Some(f) => file = f,
                        None => {
                            let mut probe = probe;
                            return Err(running(holder_pid(&path, &meta, &mut probe)));
                        }
                    }
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, "lock", e)),
            }
            if !names(&path, meta.dev(), meta.ino()) {
                // Removed or replaced between open and lock: take what the path names now.
                if Instant::now() >= deadline {
                    return Err(running("PID unknown: the file keeps being replaced".into()));
                }
                continue;
            }
            let me = std::process::id();
            if let Some(old) = holders::deleted_holders(&path).into_iter().find(|h| h.exclusive && h.pid != me) {
                return Err(Error::refused(format!(
                    "{daemon} already runs as PID {} in {}; its PID file {} was deleted, it will write it again within a second",
                    old.pid,
                    home.root().display(),
                    path.display()
                )));
            }
            write_pid(&mut file, &path)?;
            return Ok(PidFile { file, dev: meta.dev(), ino: meta.ino(), path });
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the PID file again when its path no longer names the locked inode (removed or
    /// replaced). `Ok(true)` when it did; `Ok(false)` when nothing was to do or the new file is
    /// locked by someone else for the moment (a starter checking it: try again later).
    pub fn refresh(&mut self) -> Result<bool> {
        if names(&self.path, self.dev, self.ino) {
            return Ok(false);
        }
        let (mut file, meta) = open_checked(&self.path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&self.path, "lock", e)),
        }
        if !names(&self.path, meta.dev(), meta.ino()) {
            return Ok(false);
        }
        write_pid(&mut file, &self.path)?;
        // The new file is locked before the old one is released: never a moment unheld.
        self.file = file;
        self.dev = meta.dev();
        self.ino = meta.ino();
        Ok(true)
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Opens an existing PID file for reading, never through a link; None when it is missing.
/// (Taking a PID file, [`PidFile::acquire`], also requires that we own it.)
fn open_existing(path: &Path) -> Result<Option<(File, Metadata)>> {
    let file = match OpenOptions::new().read(true).custom_flags(crate::store::atomic::NO_FOLLOW).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, "open PID file", e)),
    };
    let meta = file.metadata().map_err(|e| Error::io(path, "stat PID file", e))?;
    // A look only (root may inspect a user's home): any owner, but a regular file.
    if !meta.is_file() {
        return Err(Error::unusable(path, "is not a regular file; a PID file must be one: remove it"));
    }
    Ok(Some((file, meta)))
}

/// A cheap look for views that clients poll (the API's `/status`, `/health`, `/scheduler/status`,
/// the metrics snapshot): the PID file's own lock only, no kernel lock table and no search for a
/// deleted predecessor (that search reads every lock holder's descriptors). A daemon whose PID
/// file was just deleted reads `Absent` here until it writes the file again, within a second;
/// [`status`] finds it meanwhile and is what `cortex status`, `stop`, `restart` and
/// `health-check` use. The PID is the number in the file (0 while a starting daemon has not
/// written it yet).
pub fn status_quick(home: &Home, daemon: impl Into<PidOwner>) -> Result<PidStatus> {
    let daemon: PidOwner = daemon.into();
    let path = home.pid_file(daemon);
    let Some((mut file, _)) = open_existing(&path)? else {
        return Ok(PidStatus::Absent);
    };
    let pid = read_pid(&mut file);
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Ok(PidStatus::Stale(pid))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(PidStatus::Running(pid.unwrap_or(0))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, "lock", e)),
    }
}

/// The holder of a deleted PID file of this name that its daemon still holds.
fn deleted_holder(path: &Path) -> Option<u32> {
    holders::deleted_holders(path).into_iter().find(|h| h.exclusive).map(|h| h.pid)
}

/// Looks at a daemon's PID file without disturbing it (a shared try-lock held for an instant).
/// A running daemon is found by the lock it holds: on the file, or on a deleted predecessor of
/// it; its PID is the one the kernel's lock table names, not the number in the file.
pub fn status(home: &Home, daemon: impl Into<PidOwner>) -> Result<PidStatus> {
    let daemon: PidOwner = daemon.into();
    let path = home.pid_file(daemon);
    // A daemon writing its removed PID file again locks the new file, then releases the old
    // one: a look that saw no file (or a free one) and then no deleted holder may have fallen
    // between the two. When the path changed meanwhile, look again.
    let identity = || std::fs::symlink_metadata(&path).ok().map(|m| (m.dev(), m.ino()));
    let mut tries = 0;
    loop {
        let before = identity();
        let seen = look(&path)?;
        tries += 1;
        if matches!(seen, PidStatus::Running(_)) || identity() == before || tries >= 5 {
            return Ok(seen);
        }
    }
}

fn look(path: &Path) -> Result<PidStatus> {
    let Some((mut file, meta)) = open_existing(path)? else {
        return Ok(deleted_holder(path).map_or(PidStatus::Absent, PidStatus::Running));
    };
    let pid = read_pid(&mut file);
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            if let Some(p) = deleted_holder(path) {
                return Ok(PidStatus::Running(p));
            }
            // The daemon may have taken this very file meanwhile (it locks it before it lets
            // the deleted one go): a second look at its lock settles it.
            match file.try_lock_shared() {
                Ok(()) => {
                    let _ = file.unlock();
                    Ok(PidStatus::Stale(pid))
                }
                Err(std::fs::TryLockError::WouldBlock) => Ok(running(&meta, read_pid(&mut file))),
                Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, "lock", e)),
            }
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(running(&meta, pid)),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, "lock", e)),
    }
}

/// A locked PID file: the daemon runs as the exclusive holder the kernel names (the number in
/// the file only when the table does not say; 0 when neither does: a starting daemon).
fn running(meta: &Metadata, in_file: Option<u32>) -> PidStatus {
    let kernel = holders::holders_of(meta.dev(), meta.ino());
    PidStatus::Running(kernel.iter().find(|h| h.exclusive).map(|h| h.pid).or(in_file).unwrap_or(0))
}

/// Every process holding the PID file of `daemon` exclusively (on the file or on a deleted
/// predecessor): the kernel's word on who runs as that daemon.
pub fn lock_holders(home: &Home, daemon: impl Into<PidOwner>) -> Vec<holders::Holder> {
    holders::all_holders(&home.pid_file(daemon)).into_iter().filter(|h| h.exclusive).collect()
}

/// Opens the PID-file inode that `pid` holds locked (the file, or a deleted predecessor of it
/// through the holder's descriptor), for a watcher that blocks until the daemon releases it.
pub fn open_held(home: &Home, daemon: impl Into<PidOwner>, pid: u32) -> Option<File> {
    let daemon: PidOwner = daemon.into();
    let path = home.pid_file(daemon);
    if let Ok(Some((file, meta))) = open_existing(&path)
        && holders::holders_of(meta.dev(), meta.ino()).iter().any(|h| h.pid == pid && h.exclusive)
    {
        return Some(file);
    }
    holders::deleted_holders(&path).iter().find(|h| h.pid == pid && h.exclusive).and_then(holders::open_deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockName;
    use crate::store::lock::{lock_exclusive, try_lock_exclusive_at};

    #[test]
    fn a_linked_lock_or_pid_directory_is_refused() {
        // `coordination/.locks` and `run/` are directories Cortex writes into: a link planted
        // there must not lead the lock file (and its holder note, or a PID) elsewhere.
        let home = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let home = crate::store::home::Home::at(home.path());
        std::fs::create_dir_all(home.coord("")).unwrap();
        std::os::unix::fs::symlink(outside.path(), home.locks_dir()).unwrap();
        std::fs::write(outside.path().join("scheduler.lock"), "victim's own bytes").unwrap();
        let err = lock_exclusive(&home, LockName::Scheduler, Duration::from_millis(50)).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(try_lock_exclusive_at(&home.lock_file(LockName::TaskQueue), LockName::TaskQueue).is_err());
        std::os::unix::fs::symlink(outside.path(), home.run_dir()).unwrap();
        assert!(PidFile::acquire(&home, crate::base::daemon_name::Daemon::Metrics, Duration::from_millis(50)).is_err());
        assert_eq!(std::fs::read_to_string(outside.path().join("scheduler.lock")).unwrap(), "victim's own bytes");
        let made: Vec<_> = std::fs::read_dir(outside.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(made, vec![std::ffi::OsString::from("scheduler.lock")], "nothing created through the links");
    }
}
