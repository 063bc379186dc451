//! Size caps of the two ever-growing JSONL files: `metrics-snapshots.jsonl` and the event log
//! `dashboard-events.jsonl`. Rotation is a rename (`x` → `x.1`, older copies shifted, the oldest
//! beyond `keep` dropped) under the file's lock. Appenders open the file for each append, so a
//! line written during a rotation lands in the old file (now `x.1`) or the new one: none is lost.

use crate::base::error::{Error, Result};
use crate::store::Store;
use crate::store::config::Config;
use crate::store::events::EventKind;
use crate::store::files::{self, CoordFile};

/// Rotates `file` when it has reached `max_bytes` (0 = never). Returns true when it rotated.
pub(crate) fn rotate_if_larger(store: &Store, file: &CoordFile, max_bytes: u64, keep: u32) -> Result<bool> {
    let path = store.path(file);
    let too_big = |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| max_bytes > 0 && m.len() >= max_bytes);
    if !too_big(&path) {
        return Ok(false);
    }
    let _guard = store.lock(file)?;
    // Someone else may have rotated it while we waited for the lock.
    if !too_big(&path) {
        return Ok(false);
    }
    crate::store::rotation::rotate_file(&path, keep)?;
    if let Some(dir) = path.parent() {
        crate::store::atomic::fsync_dir(dir)?;
    }
    Ok(true)
}

/// Rotates the event log past `[events] max_file_bytes`, keeping `[events] keep` old files, and
/// records an `event_log_rotated` event in the new file.
pub(crate) fn rotate_event_log(store: &Store, config: &Config) -> Result<bool> {
    let rotated = rotate_if_larger(store, files::EVENTS, config.events.max_file_bytes, config.events.keep)?;
    if rotated {
        let old = crate::store::rotation::rotated_names(&store.path(files::EVENTS), 1).0;
        store
            .emit(
                EventKind::EventLogRotated,
                crate::store::events::Severity::Info,
                format!(
                    "event log passed {} bytes; the old lines are in {}",
                    config.events.max_file_bytes,
                    store.home().relative(&old).display()
                ),
                serde_json::json!({"rotated_to": store.home().relative(&old), "keep": config.events.keep}),
            )
            .map_err(|e| Error::other(format!("rotated the event log but cannot record it: {e}")))?;
    }
    Ok(rotated)
}

/// Rotates `metrics-snapshots.jsonl` past `[metrics] max_file_bytes`, keeping `[metrics] keep`.
pub(crate) fn rotate_snapshots(store: &Store, config: &Config) -> Result<bool> {
    rotate_if_larger(store, files::METRICS_SNAPSHOTS, config.metrics.max_file_bytes, config.metrics.keep)
}
