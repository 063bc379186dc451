//! PID files (invariant 6): `run/<daemon>.pid` under the home, flock-held by the daemon for its
//! whole life. The lock, not the number in the file, says whether the daemon runs: a PID file
//! whose lock can be taken is stale whatever PID it holds (PIDs are reused).

use crate::error::{Error, Result};
use crate::home::Home;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A PID file held by the running daemon. Dropping it releases the lock (the file stays; its
/// content then is stale by definition).
#[derive(Debug)]
pub struct PidFile {
    file: File,
    path: PathBuf,
}

/// What a PID file says about its daemon, seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidStatus {
    /// No PID file.
    Absent,
    /// Locked: the daemon runs with this PID.
    Running(u32),
    /// The file exists but nobody holds its lock: the daemon died (or was stopped uncleanly).
    Stale(Option<u32>),
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        crate::store::atomic::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::store::atomic::FILE_MODE)
        .custom_flags(crate::store::atomic::NO_FOLLOW)
        .open(path)
        .map_err(|e| Error::io(path, "open PID file", e))
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

impl PidFile {
    /// Takes the PID file of `daemon` in `home`. Waits up to `wait` for a lock that is only
    /// briefly held (a status check), then refuses with a message naming the running PID.
    pub fn acquire(home: &Home, daemon: &str, wait: Duration) -> Result<PidFile> {
        let path = home.pid_file(daemon);
        let mut file = open(&path)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, "lock", e)),
            }
            // A checker may hold it for a moment; a real second daemon holds it for good. When
            // the lock frees up, another starting copy may take it first: then wait again.
            let left = deadline.saturating_duration_since(Instant::now());
            match crate::store::lock::lock_exclusive_quiet(&path, left) {
                Ok(guard) => drop(guard),
                Err(Error::LockTimeout { .. }) => {
                    let pid = read_pid(&mut file).map(|p| p.to_string()).unwrap_or_else(|| "unknown".into());
                    return Err(Error::refused(format!(
                        "{daemon} is already running in {} (PID {pid}, {} is locked); stop it first with `cortex stop {daemon}`",
                        home.root().display(),
                        path.display()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        file.set_len(0).map_err(|e| Error::io(&path, "truncate", e))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(&path, "seek", e))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(|e| Error::io(&path, "write", e))?;
        file.sync_all().map_err(|e| Error::io(&path, "fsync", e))?;
        Ok(PidFile { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Looks at a daemon's PID file without disturbing it (a shared try-lock held for an instant).
pub fn status(home: &Home, daemon: &str) -> Result<PidStatus> {
    let path = home.pid_file(daemon);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PidStatus::Absent),
        Err(e) => return Err(Error::io(&path, "open PID file", e)),
    };
    let pid = read_pid(&mut file);
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Ok(PidStatus::Stale(pid))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(match pid {
            Some(p) => PidStatus::Running(p),
            // Locked but not yet written: the daemon is starting; report it by its lock.
            None => PidStatus::Running(0),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, "lock", e)),
    }
}
