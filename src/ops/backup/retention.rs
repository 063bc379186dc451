//! Archives in a directory: listing them newest first, and pruning all but the newest N of a
//! kind. The newest archive that verifies is always kept, even beyond N, so retention never
//! deletes the only good backup.

use super::ArchiveKind;
use crate::base::error::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One archive file.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ArchiveInfo {
    pub path: PathBuf,
    pub name: String,
    pub bytes: u64,
    pub modified: String,
    #[serde(skip)]
    pub mtime: SystemTime,
}

/// What retention did.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Pruned {
    pub deleted: Vec<PathBuf>,
    pub kept: usize,
    /// Set when an archive beyond the limit was kept because it is the newest good one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_newest_good: Option<PathBuf>,
}

/// Archives of `kind` in `dir` (`<prefix>-*.tar.gz`), newest first.
pub(crate) fn list(dir: &Path, kind: ArchiveKind) -> Result<Vec<ArchiveInfo>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, "list", e)),
    };
    let prefix = format!("{}-", kind.prefix());
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&prefix) || !name.ends_with(".tar.gz") {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        out.push(ArchiveInfo {
            path: e.path(),
            name,
            bytes: meta.len(),
            modified: crate::base::clock::format_ts(mtime.into()),
            mtime,
        });
    }
    out.sort_by(|a, b| b.mtime.cmp(&a.mtime).then_with(|| b.name.cmp(&a.name)));
    Ok(out)
}

/// True when `path` is an archive `cortex backup` wrote of `kind` (its manifest says so).
fn is_own_archive(path: &Path, kind: ArchiveKind) -> bool {
    super::verify::read_manifest(path).is_ok_and(|m| m.kind == kind.as_str())
}

/// Deletes archives of `kind` in `dir` beyond the newest `keep` (0 keeps everything).
/// `known_good` is an archive already verified (the one just written). Only archives that are
/// Cortex's own are deleted: a regular file (not a link) whose first entry is a valid
/// `MANIFEST.json` of that kind; any other file with a similar name is left alone. `dir` must be
/// reached without a symbolic link below the home (a linked `backups/` is refused).
pub(crate) fn prune(dir: &Path, kind: ArchiveKind, keep: u32, known_good: &Path) -> Result<Pruned> {
    drop(crate::store::open::open_dir(dir)?);
    let all: Vec<ArchiveInfo> =
        list(dir, kind)?.into_iter().filter(|a| a.path == known_good || is_own_archive(&a.path, kind)).collect();
    if keep == 0 || all.len() <= keep as usize {
        return Ok(Pruned { kept: all.len(), ..Default::default() });
    }
    let good = all.iter().map(|a| a.path.as_path()).find(|p| *p == known_good || super::verify::verify(p).is_ok());
    let mut pruned = Pruned::default();
    for (i, a) in all.iter().enumerate() {
        if i < keep as usize {
            pruned.kept += 1;
            continue;
        }
        if Some(a.path.as_path()) == good {
            pruned.kept += 1;
            pruned.kept_newest_good = Some(a.path.clone());
            continue;
        }
        std::fs::remove_file(&a.path).map_err(|e| Error::io(&a.path, "delete old archive", e))?;
        pruned.deleted.push(a.path.clone());
    }
    if !pruned.deleted.is_empty() {
        crate::store::atomic::fsync_dir(dir)?;
    }
    Ok(pruned)
}
