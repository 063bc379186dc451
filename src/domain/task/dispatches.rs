//! Queries over the dispatch records (`worker-specs/<bucket>/<dispatch_id>.json`, written only
//! through [`super::dispatch_record`]): finding and listing them across buckets, waiting for one
//! to end, and asking the worker to cancel one (a `<dispatch_id>.cancel` request file beside
//! the active spec, which the worker daemon acts on).

pub use super::dispatch_record::{cancel_request_path, read_spec, spec_path};
use super::model::{DispatchRecord, DispatchStatus};
use crate::base::error::{Error, Result};
use crate::store::Store;
use crate::store::home::SpecBucket;
use std::time::{Duration, Instant};

/// True for a plausible dispatch id (no path separators or dots: ids become file names).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 200 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Buckets searched by [`find`], most likely first.
const SEARCH_ORDER: [SpecBucket; 4] =
    [SpecBucket::Active, SpecBucket::Completed, SpecBucket::Failed, SpecBucket::Zombie];

/// Finds a dispatch by id in any bucket.
pub fn find(store: &Store, dispatch_id: &str) -> Result<Option<(SpecBucket, DispatchRecord)>> {
    if !is_valid_id(dispatch_id) {
        return Ok(None);
    }
    for bucket in SEARCH_ORDER {
        if let Some(rec) = read_spec(store, &spec_path(store.home(), bucket, dispatch_id))? {
            return Ok(Some((bucket, rec)));
        }
    }
    Ok(None)
}

/// Every readable spec in a bucket, oldest dispatch first. Unreadable specs are skipped (they
/// are quarantined and reported by the read).
pub fn list_bucket(store: &Store, bucket: SpecBucket) -> Result<Vec<DispatchRecord>> {
    let dir = store.home().worker_specs(bucket);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, "list", e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match read_spec(store, &path) {
            Ok(Some(rec)) => out.push(rec),
            Ok(None) => {}
            Err(e) => tracing::warn!("skipping dispatch spec: {e}"),
        }
    }
    out.sort_by(|a, b| a.dispatched_at.cmp(&b.dispatched_at).then_with(|| a.dispatch_id.cmp(&b.dispatch_id)));
    Ok(out)
}

/// Every dispatch, optionally only those with `status`.
pub fn list(store: &Store, status: Option<DispatchStatus>) -> Result<Vec<DispatchRecord>> {
    let buckets: Vec<SpecBucket> = match status {
        Some(s) if s.is_active() => vec![SpecBucket::Active],
        Some(DispatchStatus::Completed) => vec![SpecBucket::Completed],
        Some(DispatchStatus::Zombie) => vec![SpecBucket::Zombie],
        Some(_) => vec![SpecBucket::Failed],
        None => SEARCH_ORDER.to_vec(),
    };
    let mut out = Vec::new();
    for b in buckets {
        out.extend(list_bucket(store, b)?.into_iter().filter(|d| status.is_none_or(|s| d.status() == s)));
    }
    out.sort_by(|a, b| a.dispatched_at.cmp(&b.dispatched_at).then_with(|| a.dispatch_id.cmp(&b.dispatch_id)));
    Ok(out)
}

/// Asks the worker to cancel an active dispatch. Refuses (`Error::Refused`) if it is not active.
pub fn request_cancel(store: &Store, dispatch_id: &str, requested_by: &str) -> Result<DispatchRecord> {
    let rec = match find(store, dispatch_id)? {
        None => return Err(Error::refused(format!("no dispatch {dispatch_id:?}"))),
        Some((SpecBucket::Active, rec)) if rec.status().is_active() => rec,
        Some((_, rec)) => {
            return Err(Error::refused(format!("dispatch not running: {dispatch_id} is {}", rec.status().as_str())));
        }
    };
    let body = serde_json::json!({"requested_at": crate::base::clock::now_string(), "requested_by": requested_by});
    crate::store::init::create_if_missing(
        &cancel_request_path(store.home(), dispatch_id),
        body.to_string().as_bytes(),
    )?;
    Ok(rec)
}

/// Waits until a dispatch has left `active/` (ended); returns its final record, or None at the
/// deadline. Wakes on file events in the bucket directories, not on a timer.
///
/// A final state in the active spec is not the end yet: the worker records the state first and
/// moves the spec to its bucket after, so an answer given between the two would let the caller
/// see an "ended" dispatch still in `active/`.
pub fn wait_ended(store: &Store, dispatch_id: &str, timeout: Duration) -> Result<Option<DispatchRecord>> {
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })?;
    for b in [SpecBucket::Active, SpecBucket::Completed, SpecBucket::Failed, SpecBucket::Zombie] {
        let dir = store.home().worker_specs(b);
        crate::store::atomic::create_dir_all(&dir)?;
        watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|e| Error::watch(dir, e))?;
    }
    let deadline = Instant::now() + timeout;
    let mut group = None;
    loop {
        match find(store, dispatch_id)? {
            Some((bucket, rec)) if bucket != SpecBucket::Active => {
                // The spec moves when the group's leader has exited; its stragglers (daemonised
                // grandchildren) get TERM → grace → KILL right after. Ended means all of it gone.
                return Ok(wait_group_gone(group, deadline).then_some(rec));
            }
            Some((_, rec)) => {
                if let super::model::DispatchState::Running { pgid, .. } = rec.state {
                    group = Some(pgid);
                }
            }
            None => return Ok(None),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // A watcher event or, as a backstop against a missed event, a short re-check.
        let _ = rx.recv_timeout(left.min(Duration::from_millis(500)));
        while rx.try_recv().is_ok() {}
    }
}

/// Waits until no process of the group `pgid` is left, at most until `deadline` (a short re-check:
/// the kernel gives no event for a process group emptying). True when gone (or no group known).
fn wait_group_gone(pgid: Option<i32>, deadline: Instant) -> bool {
    let Some(pgid) = pgid.filter(|g| *g > 1) else { return true };
    let alive = || nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok();
    while alive() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}
