//! The lock inventory behind `cortex locks`: every lock of the home (the registry's locks, every
//! file in `coordination/.locks/`, each daemon's PID file), free or held, by whom (the kernel's
//! lock table, also on deleted files) and since when (the holder note's time, or the file's
//! mtime: the entry says which).

use super::holders::{self, Holder};
use super::lock::read_note;
use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

/// One lock of the home, as `cortex locks` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LockInfo {
    /// Relative to the home.
    pub path: String,
    /// `lock` (coordination/.locks) or `pid` (run/<daemon>.pid).
    pub kind: &'static str,
    /// Whether the file exists (a held lock may be on a deleted file).
    pub exists: bool,
    /// `free`, `held`, or `held_deleted` (only a deleted predecessor of the file is held).
    pub state: &'static str,
    /// The holders the kernel's lock table names.
    pub holders: Vec<Holder>,
    /// Since when it is held, or when it was last taken when free (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Where `since` comes from: `holder_note` (the note's time, its PID a current holder) or
    /// `file_mtime` (when the file was last written: the note or the PID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_source: Option<&'static str>,
    /// The holder note in the file (the last acquirer that wrote it: a hint only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `pid N at TIME (exe)` → (N, TIME).
fn parse_note(note: &str) -> Option<(u32, &str)> {
    let rest = note.strip_prefix("pid ")?;
    let (pid, rest) = rest.split_once(' ')?;
    let at = rest.strip_prefix("at ")?.split_whitespace().next()?;
    Some((pid.parse().ok()?, at))
}

/// Every lock of the home, free or held: the registry's locks, every file in
/// `coordination/.locks/`, and each daemon's PID file, with their holders from the kernel's
/// lock table (also on deleted predecessors) and since when.
pub(crate) fn inventory(home: &crate::store::home::Home) -> Vec<LockInfo> {
    let mut paths: Vec<(PathBuf, &'static str)> = Vec::new();
    let mut names: Vec<String> = crate::store::files::ALL.iter().map(|f| f.lock.as_str().to_string()).collect();
    if let Ok(dir) = std::fs::read_dir(home.locks_dir()) {
        for e in dir.flatten() {
            if let Some(n) = e.file_name().to_str().and_then(|n| n.strip_suffix(".lock")) {
                names.push(n.to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    // Every file of the directory, ours or not: an operator sees all of it.
    paths.extend(names.iter().map(|n| (home.locks_dir().join(format!("{n}.lock")), "lock")));
    paths.extend(crate::base::daemon_name::Daemon::ALL.map(|d| (home.pid_file(d), "pid")));
    let mut out = Vec::new();
    for (path, kind) in paths {
        let meta = std::fs::symlink_metadata(&path).ok();
        let mut holders = match &meta {
            Some(m) => holders::holders_of(m.dev(), m.ino()),
            None => Vec::new(),
        };
        let state = if !holders.is_empty() {
            "held"
        } else {
            holders = holders::all_holders(&path);
            if holders.is_empty() { "free" } else { "held_deleted" }
        };
        if meta.is_none() && holders.is_empty() && kind == "pid" {
            continue;
        }
        let note = match (&meta, kind) {
            (Some(m), "lock") if m.file_type().is_file() => OpenOptions::new()
                .read(true)
                .custom_flags(super::atomic::NO_FOLLOW | nix::libc::O_NONBLOCK)
                .open(&path)
                .ok()
                .and_then(|f| read_note(&f)),
            _ => None,
        };
        let from_note = note
            .as_deref()
            .and_then(parse_note)
            .filter(|(pid, _)| state == "free" || holders.iter().any(|h| h.pid == *pid))
            .map(|(_, at)| at.to_string());
        let (since, since_source) = match (from_note, &meta) {
            (Some(at), _) => (Some(at), Some("holder_note")),
            (None, Some(m)) if state == "held" || state == "free" => {
                let t =
                    m.modified().ok().map(|t| crate::base::clock::format_ts(chrono::DateTime::<chrono::Utc>::from(t)));
                (t, Some("file_mtime"))
            }
            _ => (None, None),
        };
        out.push(LockInfo {
            path: home.relative(&path).display().to_string(),
            kind,
            exists: meta.is_some(),
            state,
            holders,
            since,
            since_source,
            note,
        });
    }
    out
}
