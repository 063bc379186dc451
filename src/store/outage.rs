//! Writes that failed for lack of space (ENOSPC, EFBIG, EDQUOT) in this process. The event that
//! would report such a failure usually cannot be written either, so the failures are counted
//! here and, at the first moment a write succeeds again, the process records one `error` event
//! `storage_write_failed` saying how many writes failed, when, why and on which file
//! ([`crate::store::events::record_outage`]; daemons call it after each heartbeat mark they write).

use crate::base::clock::Timestamp;
use crate::base::error::Error;
use std::sync::Mutex;

/// The failures since the last report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outage {
    pub first_failed_at: Timestamp,
    pub last_failed_at: Timestamp,
    pub failed_writes: u64,
    /// The last error, as the OS said it.
    pub error: String,
    /// The last file a write to failed.
    pub last_path: String,
}

static PENDING: Mutex<Option<Outage>> = Mutex::new(None);

fn pending() -> std::sync::MutexGuard<'static, Option<Outage>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a failed write if it failed for lack of space; other errors are not counted.
pub(crate) fn note(err: &Error) {
    let Error::Io { path, source, .. } = err else { return };
    if !err.is_no_space() {
        return;
    }
    let now = crate::base::clock::now();
    let mut p = pending();
    let o = p.get_or_insert_with(|| Outage {
        first_failed_at: now,
        last_failed_at: now,
        failed_writes: 0,
        error: String::new(),
        last_path: String::new(),
    });
    o.last_failed_at = now;
    o.failed_writes += 1;
    o.error = source.to_string();
    o.last_path = path.display().to_string();
}

/// The failures counted so far, leaving none.
pub(crate) fn take() -> Option<Outage> {
    pending().take()
}

/// Puts failures back (their report could not be written); merges with any counted meanwhile.
pub(crate) fn put_back(o: Outage) {
    let mut p = pending();
    *p = Some(match p.take() {
        None => o,
        Some(newer) => {
            Outage { first_failed_at: o.first_failed_at, failed_writes: o.failed_writes + newer.failed_writes, ..newer }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_space_failures_and_merges() {
        let full = Error::io("/h/x", "write", std::io::Error::from_raw_os_error(nix::libc::ENOSPC));
        let denied = Error::io("/h/y", "write", std::io::Error::from_raw_os_error(nix::libc::EACCES));
        let _ = take();
        note(&denied);
        assert_eq!(take(), None);
        note(&full);
        note(&full);
        let o = take().unwrap();
        assert_eq!(o.failed_writes, 2);
        assert_eq!(o.last_path, "/h/x");
        assert!(o.error.contains("No space left"), "{}", o.error);
        note(&full);
        put_back(o);
        assert_eq!(take().unwrap().failed_writes, 3);
    }
}
