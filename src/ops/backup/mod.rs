//! Backups of a home and their restore.
//!
//! - [`manifest`]: `MANIFEST.json`, the first entry of every archive (format version, Cortex
//!   version, time, host, and each file's path, size, mode and SHA-256).
//! - [`snapshot`]: which files a backup holds, and copying them into a staging directory while
//!   the store's locks are held, so the snapshot is consistent across files.
//! - [`create`]: writing `cortex-backup-YYYYmmdd-HHMMSS.tar.gz` (temporary name, fsync, rename),
//!   one backup at a time per home, then retention.
//! - [`verify`]: checking an archive completely (gzip, tar, manifest, checksums, sizes, hostile
//!   paths and entry types) before anything is touched.
//! - [`restore`]: pre-restore backup, extraction beside the live files, validation, and the
//!   swap by rename with a journal so an interrupted restore is rolled back.
//! - [`retention`]: listing archives and pruning old ones, never the newest good one.

pub(crate) mod create;
pub mod manifest;
pub(crate) mod restore;
pub(crate) mod retention;
pub mod snapshot;
pub mod verify;

use crate::base::error::{Error, Result};
use crate::store::LockName;
use crate::store::home::Home;
use std::path::PathBuf;

/// What an archive was made for; it decides the file name and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `cortex backup` (by hand or from cron): `cortex-backup-<ts>.tar.gz`.
    Backup,
    /// Written by `cortex restore` before it replaces anything: `pre-restore/pre-restore-<ts>.tar.gz`.
    PreRestore,
    /// Written by `cortex reset`: `pre-reset/pre-reset-<ts>.tar.gz`.
    PreReset,
}

impl ArchiveKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveKind::Backup => "backup",
            ArchiveKind::PreRestore => "pre-restore",
            ArchiveKind::PreReset => "pre-reset",
        }
    }

    /// The file-name prefix of archives of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            ArchiveKind::Backup => "cortex-backup",
            ArchiveKind::PreRestore => "pre-restore",
            ArchiveKind::PreReset => "pre-reset",
        }
    }

    /// The default directory of archives of this kind.
    pub fn default_dir(self, home: &Home, config: &crate::store::config::Config) -> PathBuf {
        match self {
            ArchiveKind::Backup => backup_dir(home, config),
            ArchiveKind::PreRestore => home.pre_restore_backups(),
            ArchiveKind::PreReset => home.pre_reset_backups(),
        }
    }
}

/// The configured backup directory (`[backup] dest`, relative to the home or absolute).
pub fn backup_dir(home: &Home, config: &crate::store::config::Config) -> PathBuf {
    let dest = config.backup.dest.trim();
    if dest.is_empty() { home.backups_dir() } else { home.join(dest) }
}

/// Locks a snapshot (and a restore's swap) takes, in lock order ([`LockName::snapshot`]):
/// scheduler → schedules → task-queue → task-intake → token-budget → worker-specs, then the
/// lock of every other registered file.
pub fn snapshot_lock_order() -> Vec<LockName> {
    LockName::snapshot().collect()
}

/// Takes every lock of [`snapshot_lock_order`] with the store's deadline. A timeout names the
/// lock and its holder; nothing is held on error.
pub fn lock_all(store: &crate::store::Store) -> Result<Vec<crate::store::LockGuard>> {
    let mut guards = Vec::new();
    for name in snapshot_lock_order() {
        match store.lock_named(name) {
            Ok(g) => guards.push(g),
            Err(e @ Error::LockTimeout { .. }) => {
                return Err(Error::other(format!(
                    "cannot take a consistent snapshot: {e}; retry when the system is less busy"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(guards)
}

/// Pauses the current process at a named point when `CORTEX_PAUSE_AT` names it (debug builds
/// only): the tests use it to SIGKILL a backup or restore at an exact step.
pub(crate) fn pause_point(name: &str) {
    crate::store::pause_point(name)
}
