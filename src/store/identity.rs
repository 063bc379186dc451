//! A file's identity as far as `stat` can tell — device, inode, size, mtime and ctime — for the
//! readers that skip re-reading a file that did not change (the status cache, the coordinator's
//! schedule gate and its queue cache). A rename gives a new inode, a write changes the size or
//! the times, and ctime also changes when a tool sets the mtime back (`touch -d`, `cp -p`,
//! `rsync -t`).
//!
//! The racily-clean guard (as git calls it): file times come from a coarse clock, so a second
//! write within the same tick as the first can leave every field unchanged. An identity read
//! while its file's last change is that young ([`FileIdentity::is_racy_at`]) must not be
//! trusted as "unchanged" later: the reader re-reads the file next time instead.

use crate::base::error::{Error, Result};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The identity of a file's content (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    /// Nanoseconds since the epoch (i128: a far-future mtime set by a tool cannot overflow).
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

/// Changes younger than this, on a filesystem with sub-second timestamps, make an identity
/// racy: far above the kernel's coarse clock tick (a few milliseconds).
pub(crate) const RACY_WINDOW: Duration = Duration::from_millis(100);

/// The same on a filesystem that stores whole seconds (ext3, FAT's two seconds): seen as both
/// times having no nanoseconds.
pub(crate) const RACY_WINDOW_WHOLE_SECONDS: Duration = Duration::from_secs(2);

impl FileIdentity {
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileIdentity {
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The identity of the file at `path` (following symlinks), None when there is none.
    pub(crate) fn stat(path: &Path) -> Result<Option<FileIdentity>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(FileIdentity::of(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, "stat", e)),
        }
    }

    /// True when the file changed so recently, as of `now`, that another change within the
    /// same timestamp tick would leave this identity unchanged: such an identity must not be
    /// trusted for skipping a read. A change dated after `now` (a clock set back, a tool
    /// setting a future mtime) is racy too.
    pub(crate) fn is_racy_at(&self, now: SystemTime) -> bool {
        let Ok(now) = now.duration_since(SystemTime::UNIX_EPOCH) else { return true };
        let whole_seconds = self.mtime_ns % 1_000_000_000 == 0 && self.ctime_ns % 1_000_000_000 == 0;
        let window = if whole_seconds { RACY_WINDOW_WHOLE_SECONDS } else { RACY_WINDOW };
        now.as_nanos() as i128 - self.mtime_ns.max(self.ctime_ns) < window.as_nanos() as i128
    }

    /// [`FileIdentity::is_racy_at`] now.
    pub(crate) fn is_racy(&self) -> bool {
        self.is_racy_at(SystemTime::now())
    }

    /// This identity if it can be trusted as of `now`, None when it is racy.
    pub(crate) fn trusted_at(self, now: SystemTime) -> Option<FileIdentity> {
        (!self.is_racy_at(now)).then_some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ns: i128) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }

    fn id(mtime_ns: i128, ctime_ns: i128) -> FileIdentity {
        FileIdentity { dev: 1, ino: 2, len: 3, mtime_ns, ctime_ns }
    }

    const T: i128 = 1_800_000_000_123_456_789;

    #[test]
    fn a_change_within_the_window_is_racy() {
        let f = id(T, T);
        assert!(f.is_racy_at(at(T)), "read in the same instant");
        assert!(f.is_racy_at(at(T + RACY_WINDOW.as_nanos() as i128 - 1)));
        assert!(!f.is_racy_at(at(T + RACY_WINDOW.as_nanos() as i128)));
        assert!(!f.is_racy_at(at(T + 1_000_000_000)));
    }

    #[test]
    fn the_later_of_mtime_and_ctime_counts() {
        // An mtime set back by a tool: the ctime of that change is what is young.
        let f = id(T - 3_600_000_000_000, T);
        assert!(f.is_racy_at(at(T + 50_000_000)));
        assert!(!f.is_racy_at(at(T + 150_000_000)));
    }

    #[test]
    fn a_change_dated_in_the_future_is_never_trusted() {
        let f = id(T + 10_000_000_000, T);
        assert!(f.is_racy_at(at(T + 1_000_000_000)));
        assert!(id(T, T).is_racy_at(SystemTime::UNIX_EPOCH - Duration::from_secs(1)));
    }

    #[test]
    fn whole_second_timestamps_get_a_wider_window() {
        let s = 1_800_000_000 * 1_000_000_000i128;
        let f = id(s, s);
        assert!(f.is_racy_at(at(s + 1_500_000_000)), "a 1 s filesystem: 1.5 s later is still the same tick");
        assert!(!f.is_racy_at(at(s + 2_000_000_000)));
    }

    #[test]
    fn identity_follows_a_replace_and_an_in_place_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        assert_eq!(FileIdentity::stat(&p).unwrap(), None);
        std::fs::write(&p, "a").unwrap();
        let first = FileIdentity::stat(&p).unwrap().unwrap();
        assert_eq!(FileIdentity::stat(&p).unwrap(), Some(first));
        std::fs::write(&p, "ab").unwrap();
        let grown = FileIdentity::stat(&p).unwrap().unwrap();
        assert_ne!(grown, first);
        let tmp = dir.path().join("t.json");
        std::fs::write(&tmp, "ab").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        let replaced = FileIdentity::stat(&p).unwrap().unwrap();
        assert_ne!(replaced.ino, grown.ino);
    }
}
