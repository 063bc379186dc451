//! Log files: a daemon's log file that is reopened on SIGHUP (logrotate, `cortex logs rotate`)
//! and rotates itself when it passes `[logs] max_size` ([`LogFile`]), and rotation itself.
//!
//! Rotation is the same whoever does it (the daemon past its size, `cortex logs rotate`, the
//! metrics daemon's event-log rotation): under the `logs` lock, `x.log.N` shifts to `x.log.N+1`,
//! `x.log` becomes `x.log.1` (renames only, so no line is lost or written twice), and rotated
//! copies from `.2` on are gzipped once no process writes them any more (logrotate's
//! `delaycompress`: `.1` may still be written until its daemon reopens on SIGHUP).

use crate::base::error::{Error, Result};
use std::fs::File;
use std::io::Write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A log file that can be reopened and rotates itself past a size.
#[derive(Clone)]
pub struct LogFile {
    inner: Arc<Mutex<LogFileInner>>,
}

struct LogFileInner {
    path: PathBuf,
    file: File,
    written: u64,
    max_size: u64,
    keep: u32,
    /// The lock serialising rotations of this log with `cortex logs rotate`.
    rotate_lock: Option<PathBuf>,
}

fn open_append(path: &Path) -> Result<File> {
    crate::store::open::append(path)
}

impl LogFile {
    pub fn open(path: &Path, max_size: u64, keep: u32) -> Result<LogFile> {
        let file = open_append(path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile {
            inner: Arc::new(Mutex::new(LogFileInner {
                path: path.to_path_buf(),
                file,
                written,
                max_size,
                keep,
                rotate_lock: None,
            })),
        })
    }

    /// Reopens the file by name (after someone else renamed it away). Standard output and error
    /// follow when they pointed at the old file (a daemon started by `cortex start`).
    pub fn reopen(&self) -> Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let file = open_append(&g.path)?;
        g.written = file.metadata().map(|m| m.len()).unwrap_or(0);
        redirect_stdio(&g.file, &file);
        g.file = file;
        Ok(())
    }

    /// Makes the self-rotation take this lock file, the home's [`crate::store::LockName::Logs`]
    /// (the one `cortex logs rotate` takes).
    pub fn set_rotate_lock(&self, lock: PathBuf) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).rotate_lock = Some(lock);
    }
}

impl LogFileInner {
    /// Rotates past the size limit. Skipped (tried again on the next line) while someone else
    /// holds the rotation lock.
    fn rotate_self(&mut self) {
        let _guard = match &self.rotate_lock {
            Some(lock) => match crate::store::lock::try_lock_exclusive_at(lock, crate::store::LockName::Logs) {
                Ok(Some(g)) => Some(g),
                _ => return,
            },
            None => None,
        };
        if rotate_file(&self.path, self.keep).is_ok()
            && let Ok(f) = open_append(&self.path)
        {
            redirect_stdio(&self.file, &f);
            self.file = f;
            self.written = 0;
            let _ = compress_rotated(&self.path, self.keep, |_| false);
        }
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let n = g.file.write(buf)?;
        g.written += n as u64;
        if g.max_size > 0 && g.written >= g.max_size && buf.ends_with(b"\n") {
            g.rotate_self();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).file.flush()
    }
}

/// The name of the `n`th rotated copy of `path` (`x.log.1`, `x.log.2.gz`, ...): returns the
/// plain and gzipped names.
pub fn rotated_names(path: &Path, n: u32) -> (PathBuf, PathBuf) {
    let plain = PathBuf::from(format!("{}.{n}", path.display()));
    let gz = PathBuf::from(format!("{}.{n}.gz", path.display()));
    (plain, gz)
}

/// Shifts `path.N` to `path.N+1` (plain or `.gz`), drops copies beyond `keep`, and renames
/// `path` to `path.1`. The writer must reopen `path` afterwards. Nothing is copied, so no line is
/// lost or written twice.
pub fn rotate_file(path: &Path, keep: u32) -> Result<()> {
    let keep = keep.max(1);
    for n in (1..=keep).rev() {
        let (plain, gz) = rotated_names(path, n);
        for (from, is_gz) in [(plain, false), (gz, true)] {
            if !from.exists() {
                continue;
            }
            if n == keep {
                std::fs::remove_file(&from).map_err(|e| Error::io(&from, "remove old log", e))?;
            } else {
                let (p2, g2) = rotated_names(path, n + 1);
                let to = if is_gz { g2 } else { p2 };
                std::fs::rename(&from, &to).map_err(|e| Error::io(&from, "rotate log", e))?;
            }
        }
    }
    if path.exists() {
        let (first, _) = rotated_names(path, 1);
        std::fs::rename(path, &first).map_err(|e| Error::io(path, "rotate log", e))?;
    }
    Ok(())
}

/// Points standard output and error at `new` where they pointed at `old` (same inode).
fn redirect_stdio(old: &File, new: &File) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = old.metadata() else { return };
    let same = |st: nix::Result<nix::sys::stat::FileStat>| {
        st.is_ok_and(|st| st.st_dev == meta.dev() && st.st_ino == meta.ino())
    };
    if same(nix::sys::stat::fstat(std::io::stdout())) {
        let _ = nix::unistd::dup2_stdout(new);
    }
    if same(nix::sys::stat::fstat(std::io::stderr())) {
        let _ = nix::unistd::dup2_stderr(new);
    }
}

/// Gzips rotated copies `path.2` .. `path.keep` that are still plain (`.1` stays plain: its
/// writer may not have reopened yet). `in_use(path)` says a copy is still open for writing; it is
/// left for the next rotation. The `.gz` is written to a temporary file, synced and renamed before
/// the plain copy is removed, so a crash leaves one complete copy. Returns the copies compressed.
pub fn compress_rotated(path: &Path, keep: u32, in_use: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut done = Vec::new();
    for n in 2..=keep.max(2) {
        let (plain, gz) = rotated_names(path, n);
        if !plain.exists() || gz.exists() || in_use(&plain) {
            continue;
        }
        gzip_file(&plain, &gz)?;
        std::fs::remove_file(&plain).map_err(|e| Error::io(&plain, "remove compressed log", e))?;
        done.push(gz);
    }
    Ok(done)
}

/// Compresses `from` into `to` (atomically: temporary file, fsync, rename).
pub fn gzip_file(from: &Path, to: &Path) -> Result<()> {
    let mut input = crate::store::open::read(from).map_err(|e| crate::store::open::refuse_link(from, "open", e))?;
    let dir = to.parent().unwrap_or(Path::new("."));
    let (file, tmp) = crate::store::open::create_temp_beside(to)?;
    let written = (|| {
        let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        std::io::copy(&mut input, &mut enc).map_err(|e| Error::io(from, "compress", e))?;
        let file = enc.finish().map_err(|e| Error::io(to, "write", e))?;
        file.sync_all().map_err(|e| Error::io(to, "fsync", e))?;
        std::fs::rename(&tmp, to).map_err(|e| Error::io(to, "rename into place", e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    crate::store::atomic::fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_shifts_and_drops() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.log");
        for i in 0..4 {
            std::fs::write(&p, format!("gen {i}\n")).unwrap();
            rotate_file(&p, 2).unwrap();
        }
        assert!(!p.exists());
        assert_eq!(std::fs::read_to_string(dir.path().join("d.log.1")).unwrap(), "gen 3\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("d.log.2")).unwrap(), "gen 2\n");
        assert!(!dir.path().join("d.log.3").exists());
    }

    #[test]
    fn compression_keeps_content_and_skips_first_and_busy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.log");
        for i in 0..3 {
            std::fs::write(&p, format!("gen {i}\n")).unwrap();
            rotate_file(&p, 5).unwrap();
        }
        let busy = dir.path().join("d.log.3");
        let done = compress_rotated(&p, 5, |q| q == busy).unwrap();
        assert_eq!(done, vec![dir.path().join("d.log.2.gz")]);
        assert!(dir.path().join("d.log.1").exists() && busy.exists());
        let mut text = String::new();
        let gz = File::open(dir.path().join("d.log.2.gz")).unwrap();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut text).unwrap();
        assert_eq!(text, "gen 1\n");
        // Shifting carries .gz copies along.
        rotate_file(&p, 5).unwrap();
        assert!(dir.path().join("d.log.3.gz").exists());
    }
}
