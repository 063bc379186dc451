//! Daemon logs under `agents/logs/system/`: `cortex logs rotate` (rename, shift, gzip, SIGHUP),
//! `reopen`, `clean`, `archive` (into `archives/logs/<date>.tar.gz`) and `tail` (with `-f` across
//! rotations). Rotation is the one in [`crate::daemons::tracing_setup`], under the same lock the daemons take
//! when they rotate their own log, so the two never interleave.

use crate::base::daemon_name::Daemon;
use crate::base::error::{Error, Result};
use crate::store::home::Home;
use crate::store::pidfile::{self, PidStatus};
use crate::store::rotation::{compress_rotated, rotate_file};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The running daemon of this home that writes `log`, if any.
fn writer_of(home: &Home, log: &Path) -> Option<(Daemon, u32)> {
    Daemon::ALL.into_iter().find(|d| home.daemon_log(*d) == log).and_then(|d| match pidfile::status(home, d) {
        Ok(PidStatus::Running(pid)) if pid != 0 => Some((d, pid)),
        _ => None,
    })
}

/// True when process `pid` has `path` (or a rotated copy of it, with `prefix_only`) open.
fn holds(pid: u32, path: &Path) -> bool {
    open_paths(pid).any(|p| p == path)
}

fn holds_rotated(pid: u32, log: &Path) -> bool {
    let prefix = format!("{}.", log.display());
    open_paths(pid).any(|p| p.to_string_lossy().starts_with(&prefix))
}

/// The paths process `pid` has open.
fn open_paths(pid: u32) -> impl Iterator<Item = std::path::PathBuf> {
    crate::base::procfs::open_fds(i32::try_from(pid).unwrap_or(-1)).into_iter().map(|o| o.target)
}

/// The outcome of rotating one log.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rotated {
    pub file: String,
    pub size: u64,
    /// The daemon that was told to reopen, and whether it did within the deadline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reopened: Option<bool>,
    pub compressed: Vec<String>,
}

/// The `*.log` files in `agents/logs/system/`.
pub(crate) fn system_logs(home: &Home) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(home.system_logs())
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "log")).collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Rotates every system log larger than `max_size` bytes: `x.log` → `x.log.1`, older copies
/// shift, copies from `.2` on are gzipped, copies beyond `keep` are deleted, and the daemon that
/// writes it gets SIGHUP; waits (up to `reopen_timeout`) until it has reopened, so the next
/// rotation cannot compress a file still being written.
pub(crate) fn rotate(home: &Home, max_size: u64, keep: u32, reopen_timeout: Duration) -> Result<Vec<Rotated>> {
    let mut out = Vec::new();
    for log in system_logs(home) {
        let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        if size == 0 || size <= max_size {
            continue;
        }
        let writer = writer_of(home, &log);
        let compressed = {
            let _guard =
                crate::store::lock::lock_exclusive(home, crate::store::LockName::Logs, Duration::from_secs(10))?;
            rotate_file(&log, keep)?;
            compress_rotated(&log, keep, |p| writer.is_some_and(|(_, pid)| holds(pid, p)))?
        };
        let mut r = Rotated {
            file: home.relative(&log).display().to_string(),
            size,
            daemon: None,
            reopened: None,
            compressed: compressed.iter().map(|p| home.relative(p).display().to_string()).collect(),
        };
        if let Some((daemon, pid)) = writer {
            r.daemon = Some(daemon.to_string());
            if let Ok(p) = crate::ops::supervisor::process::prove_daemon(home, daemon, pid) {
                let _ = p.signal(nix::sys::signal::Signal::SIGHUP);
            }
            let deadline = Instant::now() + reopen_timeout;
            let mut ok = !holds_rotated(pid, &log);
            while !ok && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
                ok = !holds_rotated(pid, &log);
            }
            r.reopened = Some(ok);
        }
        out.push(r);
    }
    Ok(out)
}

/// What `cortex logs clean` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Cleaned {
    pub removed: Vec<String>,
    pub freed_bytes: u64,
    /// What `agents/logs/` still holds.
    pub remaining_bytes: u64,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

fn age(p: &Path) -> Duration {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// True when a running daemon of this home has `p` open.
fn in_use(home: &Home, p: &Path) -> bool {
    Daemon::ALL
        .iter()
        .any(|d| matches!(pidfile::status(home, *d), Ok(PidStatus::Running(pid)) if pid != 0 && holds(pid, p)))
}

/// Removes logs under `agents/logs/` (`*.log*`) not modified for `older_than`, and gzipped files
/// older than `gz_older_than`. A log a running daemon has open is never removed.
pub(crate) fn clean(home: &Home, older_than: Duration, gz_older_than: Duration) -> Result<Cleaned> {
    let root = home.join("agents/logs");
    // A link at `agents/` or `agents/logs/` would lead the removals elsewhere: refused. Links
    // further down are neither followed nor removed (`walk` takes real directories and files only).
    drop(crate::store::open::open_dir(&root)?);
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut c = Cleaned::default();
    for p in files {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let a = age(&p);
        let old_log = name.contains(".log") && a > older_than;
        let old_gz = name.ends_with(".gz") && a > gz_older_than;
        if !(old_log || old_gz) || in_use(home, &p) {
            continue;
        }
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(&p).map_err(|e| Error::io(&p, "remove", e))?;
        c.freed_bytes += size;
        c.removed.push(home.relative(&p).display().to_string());
    }
    let mut rest = Vec::new();
    walk(&root, &mut rest);
    c.remaining_bytes = rest.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    Ok(c)
}

/// What `cortex logs archive` wrote.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Archived {
    pub archive: Option<String>,
    pub files: Vec<String>,
    pub bytes: u64,
}

/// Moves rotated logs (`*.log.N`, `*.log.N.gz`) under `agents/logs/` into
/// `archives/logs/<YYYY-MM-DD>.tar.gz` (inside a `<YYYY-MM-DD>/` folder, as the runbook's archive
/// has it). The archive is complete on disk (temporary file, fsync, rename) before any log is
/// removed. Copies a daemon still writes are left for next time.
pub(crate) fn archive(home: &Home) -> Result<Archived> {
    drop(crate::store::open::open_dir(&home.join("agents/logs"))?);
    let mut files = Vec::new();
    walk(&home.join("agents/logs"), &mut files);
    let re = regex::Regex::new(r"\.log\.\d+(\.gz)?$").map_err(|e| Error::other(e.to_string()))?;
    let mut picked: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| re.is_match(&p.file_name().unwrap_or_default().to_string_lossy()) && !in_use(home, p))
        .collect();
    picked.sort();
    if picked.is_empty() {
        return Ok(Archived { archive: None, files: Vec::new(), bytes: 0 });
    }
    let date = chrono::Local::now().format("%Y-%m-%d").to_string();
    let dir = home.log_archives();
    crate::store::atomic::create_dir_all(&dir)?;
    let mut dest = dir.join(format!("{date}.tar.gz"));
    let mut n = 1;
    while dest.exists() {
        dest = dir.join(format!("{date}-{n}.tar.gz"));
        n += 1;
    }
    let (file, tmp_path) = crate::store::open::create_temp_beside(&dest)?;
    let written = write_log_archive(home, file, &tmp_path, &dest, &date, &picked);
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
    };
    for p in &picked {
        std::fs::remove_file(p).map_err(|e| Error::io(p, "remove archived log", e))?;
    }
    Ok(Archived {
        archive: Some(home.relative(&dest).display().to_string()),
        files: picked.iter().map(|p| home.relative(p).display().to_string()).collect(),
        bytes,
    })
}

/// Writes the archive of `picked` to `file` (the temporary `tmp`, created 0600 and never through
/// a link), fsyncs it and renames it to `dest`; returns the bytes archived.
fn write_log_archive(
    home: &Home,
    file: std::fs::File,
    tmp: &Path,
    dest: &Path,
    date: &str,
    picked: &[PathBuf],
) -> Result<u64> {
    let enc = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(enc);
    // A log that is a link is archived as the link, never as what it points to.
    tar.follow_symlinks(false);
    let logs_root = home.join("agents/logs");
    let mut bytes = 0;
    for p in picked {
        let rel = p.strip_prefix(&logs_root).unwrap_or(p);
        tar.append_path_with_name(p, Path::new(date).join(rel)).map_err(|e| Error::io(p, "archive", e))?;
        bytes += std::fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0);
    }
    let enc = tar.into_inner().map_err(|e| Error::io(dest, "write", e))?;
    let file = enc.finish().map_err(|e| Error::io(dest, "write", e))?;
    file.sync_all().map_err(|e| Error::io(dest, "fsync", e))?;
    std::fs::rename(tmp, dest).map_err(|e| Error::io(dest, "rename into place", e))?;
    crate::store::atomic::fsync_dir(dest.parent().unwrap_or(Path::new(".")))?;
    Ok(bytes)
}

/// The names the daemon management runbook gives three daemons' logs (from an earlier
/// implementation), and the daemon each means.
pub(crate) const LOG_ALIASES: [(&str, Daemon); 3] = [
    ("heartbeat-monitor", Daemon::Heartbeat),
    ("metrics-snapshot", Daemon::Metrics),
    ("integration-validator", Daemon::Integration),
];

/// The daemon a log name means: `worker`, `worker-daemon.log`, and the runbook's names
/// (`heartbeat-monitor-daemon.log`, `metrics-snapshot`, ...; see [`LOG_ALIASES`]).
pub(crate) fn log_daemon(name: &str) -> Option<Daemon> {
    let base = name.strip_suffix(".log").unwrap_or(name);
    let base = base.strip_suffix("-daemon").unwrap_or(base);
    let daemon = LOG_ALIASES.iter().find(|(alias, _)| *alias == base).map(|(_, d)| *d);
    daemon.or_else(|| Daemon::parse(base))
}

/// The log file `cortex logs tail NAME` reads: a daemon's log (by its name, its log's file name
/// or the runbook's alias), or a file in `agents/logs/system/`.
pub(crate) fn log_path(home: &Home, name: &str) -> Result<PathBuf> {
    if let Some(daemon) = log_daemon(name) {
        return Ok(home.daemon_log(daemon));
    }
    let p = home.system_logs().join(name);
    if p.is_file() && !name.contains('/') {
        return Ok(p);
    }
    Err(Error::Config {
        path: None,
        detail: format!(
            "unknown log {name:?}: name a daemon ({}), its log file (e.g. worker-daemon.log), one of the \
             runbook's names ({}) or a file in agents/logs/system/",
            Daemon::known(),
            LOG_ALIASES.iter().map(|(a, _)| format!("{a}-daemon.log")).collect::<Vec<_>>().join(", ")
        ),
    })
}

/// Lines an operator looks for with `--errors`.
pub(crate) fn is_error_line(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    ["error", "exception", "failed", "fatal", "panicked"].iter().any(|w| l.contains(w))
}

/// The last `n` lines of a log (only error lines with `errors`), and the size read (where
/// [`follow`] goes on).
pub(crate) fn tail(path: &Path, n: usize, errors: bool) -> Result<(Vec<String>, u64)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(path, "read", e)),
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !errors || is_error_line(l)).collect();
    Ok((lines[lines.len().saturating_sub(n)..].iter().map(|s| s.to_string()).collect(), bytes.len() as u64))
}

/// Follows a log like `tail -F` from byte `from`: prints new lines as they are written and
/// carries on in the new file after a rotation. Wakes on file-system events; returns only when
/// `out` returns false.
pub(crate) fn follow(path: &Path, from: u64, errors: bool, mut out: impl FnMut(&str) -> bool) -> Result<()> {
    use notify::Watcher;
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::store::atomic::create_dir_all(dir)?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |_r: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })?;
    watcher.watch(dir, notify::RecursiveMode::NonRecursive).map_err(|e| Error::watch(dir, e))?;
    let mut file: Option<std::fs::File> = None;
    let mut ino = 0;
    let mut partial = String::new();
    // Prints the complete lines read so far; false when `out` wants to stop.
    let mut drain = |f: &mut std::fs::File, partial: &mut String| -> bool {
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(i) = partial.find('\n') {
            let line: String = partial.drain(..=i).collect();
            let line = line.trim_end_matches('\n');
            if (!errors || is_error_line(line)) && !out(line) {
                return false;
            }
        }
        true
    };
    loop {
        if let Some(f) = file.as_mut()
            && !drain(f, &mut partial)
        {
            return Ok(());
        }
        if let Ok(meta) = std::fs::metadata(path)
            && (file.is_none() || meta.ino() != ino)
            && let Ok(mut f) = std::fs::File::open(path)
        {
            if file.is_none() {
                // First open: go on where the caller's tail stopped (the start if it shrank).
                let _ = f.seek(SeekFrom::Start(if meta.len() >= from { from } else { 0 }));
            } else if let Some(old) = file.as_mut()
                && !drain(old, &mut partial)
            {
                return Ok(());
            }
            // After a rotation the new file is read from its start.
            ino = meta.ino();
            partial.clear();
            let keep_going = drain(&mut f, &mut partial);
            file = Some(f);
            if !keep_going {
                return Ok(());
            }
        }
        if rx.recv_timeout(Duration::from_secs(1)).is_err() {
            continue;
        }
        while rx.try_recv().is_ok() {}
    }
}
