//! What a backup holds and how it is captured consistently.
//!
//! The files are `cortex.toml`, `config/` and `agents/prompts/` when present, and everything
//! under `coordination/` except lock files, temporaries (`.tmp.*`) and the quarantine
//! directories (evidence, not state; a restore carries the live ones over). They are copied into
//! a staging directory while every lock of [`super::snapshot_lock_order`] is held, so no writer
//! that follows the locking protocol changes any of them mid-copy; compression happens after the
//! locks are released. JSONL files are cut after their last complete line.

use crate::base::error::{Error, Result};
use crate::store::Store;
use crate::store::atomic::{self, is_temp_name};
use crate::store::home::{Home, SpecBucket};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One file to back up.
#[derive(Debug, Clone)]
pub struct Source {
    /// Path inside the archive (= relative to the home).
    pub rel: String,
    pub abs: PathBuf,
}

/// A file copied into the staging directory.
#[derive(Debug, Clone)]
pub struct StagedFile {
    pub rel: String,
    pub staged: PathBuf,
    pub size: u64,
    pub mode: u32,
    pub mtime: u64,
}

/// A consistent copy of the home's state in a staging directory.
#[derive(Debug)]
pub struct Snapshot {
    pub files: Vec<StagedFile>,
    /// Files that were skipped (symlinks, sockets...), with the reason.
    pub skipped: Vec<String>,
    /// How long the locks were held.
    pub locked_for: Duration,
}

/// Every file a backup of `home` holds, sorted by path.
pub fn sources(home: &Home) -> (Vec<Source>, Vec<String>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let toml = home.config_file();
    if toml.is_file() {
        out.push(Source { rel: "cortex.toml".into(), abs: toml });
    }
    let excluded = [
        home.locks_dir(),
        home.quarantine_dir(),
        home.worker_specs(SpecBucket::Quarantine),
        home.coord("schemas"),
        home.coord("defaults"),
    ];
    for root in [home.home_config_dir(), home.prompts_dir(), home.coordination()] {
        walk(home, &root, &excluded, &mut out, &mut skipped);
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    (out, skipped)
}

fn walk(home: &Home, dir: &Path, excluded: &[PathBuf], out: &mut Vec<Source>, skipped: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if is_temp_name(&name) || excluded.contains(&path) {
            continue;
        }
        let rel = home.relative(&path).to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            walk(home, &path, excluded, out, skipped);
        } else if ft.is_file() {
            if super::manifest::check_member_path(&rel).is_ok() {
                out.push(Source { rel, abs: path });
            } else {
                skipped.push(format!("{rel} (a name a backup cannot hold)"));
            }
        } else {
            skipped.push(format!("{rel} (not a regular file)"));
        }
    }
}

/// Copies every source into `stage_dir` while holding the snapshot locks.
pub fn take(store: &Store, stage_dir: &Path) -> Result<Snapshot> {
    let guards = super::lock_all(store)?;
    let started = Instant::now();
    let (sources, skipped) = sources(store.home());
    let mut files = Vec::with_capacity(sources.len());
    for s in &sources {
        let meta = match fs::metadata(&s.abs) {
            Ok(m) => m,
            // Removed between listing and copying (a writer outside the protocol): skip it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&s.abs, "read", e)),
        };
        let staged = stage_dir.join(&s.rel);
        if let Some(parent) = staged.parent() {
            atomic::create_dir_all(parent)?;
        }
        let jsonl = s.rel.ends_with(".jsonl");
        let Some(size) = copy_file(&s.abs, &staged, jsonl)? else { continue };
        let mtime =
            meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs());
        files.push(StagedFile {
            rel: s.rel.clone(),
            staged,
            size,
            mode: meta.permissions().mode() & 0o777,
            mtime: mtime.unwrap_or(0),
        });
    }
    let locked_for = started.elapsed();
    drop(guards);
    Ok(Snapshot { files, skipped, locked_for })
}

/// Copies `from` to a new file `to`; for JSONL, only up to the last newline (an append in
/// progress is not half-copied). Returns the bytes written, or None when `from` has gone.
fn copy_file(from: &Path, to: &Path, jsonl: bool) -> Result<Option<u64>> {
    let mut src = match fs::File::open(from) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(from, "open", e)),
    };
    let mut dst = crate::store::open::create_new(to)?;
    if !jsonl {
        return std::io::copy(&mut src, &mut dst).map(Some).map_err(|e| Error::io(from, "copy", e));
    }
    let mut bytes = Vec::new();
    src.read_to_end(&mut bytes).map_err(|e| Error::io(from, "read", e))?;
    let mut keep = bytes.iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0);
    // A last line without a newline is kept only if it is whole JSON (an operator's file).
    if keep < bytes.len() && serde_json::from_slice::<serde_json::Value>(&bytes[keep..]).is_ok() {
        keep = bytes.len();
    }
    dst.write_all(&bytes[..keep]).map_err(|e| Error::io(to, "write", e))?;
    Ok(Some(keep as u64))
}
