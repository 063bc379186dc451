//! Daemon logs: `tracing` into `agents/logs/system/<name>-daemon.log`, through
//! `tracing-appender`'s non-blocking writer (a slow disk never stalls a daemon's loop) on top of
//! a file that is reopened on SIGHUP (logrotate, `cortex logs rotate`) and rotated by the daemon
//! itself when it passes `[logs] max_size`.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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
}

fn open_append(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        crate::store::atomic::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(crate::store::atomic::NO_FOLLOW)
        .open(path)
        .map_err(|e| crate::store::jsonl::refuse_link(path, "open log", e))
}

impl LogFile {
    pub fn open(path: &Path, max_size: u64, keep: u32) -> Result<LogFile> {
        let file = open_append(path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile {
            inner: Arc::new(Mutex::new(LogFileInner { path: path.to_path_buf(), file, written, max_size, keep })),
        })
    }

    /// Reopens the file by name (after someone else renamed it away).
    pub fn reopen(&self) -> Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let file = open_append(&g.path)?;
        g.written = file.metadata().map(|m| m.len()).unwrap_or(0);
        g.file = file;
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let n = g.file.write(buf)?;
        g.written += n as u64;
        if g.max_size > 0 && g.written >= g.max_size && buf.ends_with(b"\n") {
            let (path, keep) = (g.path.clone(), g.keep);
            if rotate_file(&path, keep).is_ok()
                && let Ok(f) = open_append(&path)
            {
                g.file = f;
                g.written = 0;
            }
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

/// Keeps the non-blocking writer's worker alive; dropping it flushes pending lines.
pub struct LogGuard {
    _guard: tracing_appender::non_blocking::WorkerGuard,
    pub file: LogFile,
}

/// Sets up `tracing` for a daemon: lines go to its log file through a non-blocking writer that
/// never drops lines (it applies backpressure instead).
pub fn init_daemon(path: &Path, level: &str, max_size: u64, keep: u32) -> Result<LogGuard> {
    let file = LogFile::open(path, max_size, keep)?;
    let (writer, guard) =
        tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(file.clone());
    let filter = std::env::var("CORTEX_LOG").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| level.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .try_init();
    Ok(LogGuard { _guard: guard, file })
}

/// Sets up `tracing` for the CLI: warnings and errors to stderr.
pub fn init_cli() {
    let filter = std::env::var("CORTEX_LOG").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
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
}
