//! Atomic replacement of a file (invariant 1): write a temporary file in the same directory,
//! fsync it, rename it over the target, fsync the directory. A reader sees the old file or the
//! new one, never a torn one, even when the writer is SIGKILLed between any two steps.

use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of state files Cortex creates (umask-independent).
pub const FILE_MODE: u32 = 0o600;
/// Mode of directories Cortex creates.
pub const DIR_MODE: u32 = 0o700;

/// `open` flag for files Cortex appends to or locks in place (logs, JSONL, PID and lock files):
/// a symbolic link planted at such a name is refused (ELOOP) instead of written through, so a
/// link to `/etc/passwd` or `~/.bashrc` never receives a line. Replaced files need no flag: a
/// rename replaces the link itself.
pub const NO_FOLLOW: i32 = nix::libc::O_NOFOLLOW;

/// The prefix of temporary files; `validate`, backups and the watchers ignore names with it.
pub const TEMP_PREFIX: &str = ".tmp.";

/// True for a file name that is one of our temporary files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true)
}

/// Replaces `path` atomically (temp file + rename) without fsync: for ephemeral state under
/// `run/` (daemon heartbeat marks), which must never be torn but need not survive a power cut,
/// and must not stall a daemon's loop behind a busy disk's writeback.
pub fn write_replace_volatile(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, false)
}

/// Writes a temporary file in the same directory and renames it over `path`; with `durable`, the
/// file is fsynced before the rename and the directory after it.
fn replace(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = parent_dir(path)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!("{TEMP_PREFIX}{name}.{}.{:016x}", std::process::id(), fastrand::u64(..)));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, "create temporary file", e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, "write", e))?;
        if durable {
            f.sync_all().map_err(|e| Error::io(&tmp, "fsync", e))?;
        }
        drop(f);
        fs::rename(&tmp, path).map_err(|e| Error::io(path, "rename temporary file over", e))?;
        if durable { fsync_dir(&dir) } else { Ok(()) }
    })();
    if let Err(e) = &result {
        let _ = fs::remove_file(&tmp);
        super::outage::note(e);
    }
    result
}

/// fsyncs a directory so a rename or create in it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io(dir, "open directory", e))?;
    d.sync_all().map_err(|e| Error::io(dir, "fsync directory", e))
}

/// Creates a directory and its parents with mode 0700.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(|e| Error::io(dir, "create directory", e))
}

/// Renames `from` to `to` and fsyncs both directories (moves a spec between buckets, say).
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io(from, "move", e))?;
    fsync_dir(&parent_dir(to)?)?;
    let from_dir = parent_dir(from)?;
    if from_dir != parent_dir(to)? {
        fsync_dir(&from_dir)?;
    }
    Ok(())
}

/// Sets a file's mode to 0600 (for files created by other means, e.g. copies).
pub fn restrict_mode(path: &Path) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE)).map_err(|e| Error::io(path, "chmod", e))
}

fn parent_dir(path: &Path) -> Result<PathBuf> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p.to_path_buf()),
        _ => Ok(PathBuf::from(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"{\"n\":1}").unwrap();
        write_atomic(&p, b"{\"n\":2}").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{\"n\":2}");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1);
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, FILE_MODE);
    }
}
