//! The pattern store `coordination/patterns/failure-patterns.jsonl`: one current record per
//! pattern id. An upsert rewrites the (small) file atomically under the lock `failure-patterns`;
//! a file with malformed lines is quarantined before it is rewritten, so nothing is lost.

use super::detect::PatternRecord;
use crate::base::error::Result;
use crate::store::files;
use crate::store::{LockGuard, Store, atomic};
use std::collections::BTreeMap;

/// The records, by pattern id, and their order in the file.
#[derive(Debug, Default)]
pub(crate) struct PatternFile {
    pub records: BTreeMap<String, PatternRecord>,
    pub order: Vec<String>,
    pub bad_lines: usize,
    raw: Vec<u8>,
}

/// Reads every pattern record (a later line for the same id wins). A missing file is empty.
pub(crate) fn load(store: &Store) -> Result<PatternFile> {
    let path = store.path(files::FAILURE_PATTERNS);
    let raw = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(crate::Error::io(&path, "read", e)),
    };
    let mut out = PatternFile::default();
    for line in raw.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<PatternRecord>(line) {
            Ok(r) => {
                if !out.records.contains_key(&r.pattern_id) {
                    out.order.push(r.pattern_id.clone());
                }
                out.records.insert(r.pattern_id.clone(), r);
            }
            Err(_) => out.bad_lines += 1,
        }
    }
    out.raw = raw;
    Ok(out)
}

/// Takes the lock of the pattern store.
pub(crate) fn lock(store: &Store) -> Result<LockGuard> {
    store.lock(files::FAILURE_PATTERNS)
}

/// Replaces records (new ids go to the end) and rewrites the file atomically. The caller holds
/// the lock from [`lock`] and loaded `file` under it.
pub(crate) fn upsert(
    store: &Store,
    _guard: &LockGuard,
    file: &mut PatternFile,
    changed: &[PatternRecord],
) -> Result<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let path = store.path(files::FAILURE_PATTERNS);
    if file.bad_lines > 0 {
        store.quarantine(
            &path,
            &file.raw,
            "has malformed lines",
            &format!("{} line(s) that are not pattern records", file.bad_lines),
            "",
        );
    }
    for r in changed {
        if !file.records.contains_key(&r.pattern_id) {
            file.order.push(r.pattern_id.clone());
        }
        file.records.insert(r.pattern_id.clone(), r.clone());
    }
    let mut bytes = Vec::new();
    for id in &file.order {
        if let Some(r) = file.records.get(id) {
            let line = serde_json::to_vec(r).map_err(|e| crate::Error::encode("pattern", e))?;
            bytes.extend_from_slice(&line);
            bytes.push(b'\n');
        }
    }
    if let Some(dir) = path.parent() {
        atomic::create_dir_all(dir)?;
    }
    atomic::write_atomic(&path, &bytes)?;
    file.raw = bytes;
    file.bad_lines = 0;
    Ok(())
}
