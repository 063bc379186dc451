//! Writing an archive: one backup of a home at a time (lock `backup`), a consistent snapshot,
//! `MANIFEST.json` first, the archive written under a temporary name in the destination,
//! fsynced, renamed into place, read back and verified, then retention.

use super::ArchiveKind;
use super::manifest::{self, Manifest, ManifestFile, ManifestLink};
use crate::base::error::{Error, Result};
use crate::ops::progress::{Show, Stage, Unit};
use crate::store::LockName;
use crate::store::atomic::{self, TEMP_PREFIX};
use crate::store::config::Config;
use crate::store::{LockGuard, Store};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;
use std::fs;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to write.
#[derive(Debug, Clone)]
pub(crate) struct BackupOptions {
    pub kind: ArchiveKind,
    /// Destination directory; default: the kind's directory.
    pub dest: Option<PathBuf>,
    /// Retention: archives of this kind kept in the destination; default `[backup] keep`.
    pub keep: Option<u32>,
    pub label: Option<String>,
    /// Show a progress bar (only ever drawn when stderr is a terminal).
    pub progress: bool,
}

impl BackupOptions {
    pub(crate) fn new(kind: ArchiveKind) -> Self {
        BackupOptions { kind, dest: None, keep: None, label: None, progress: false }
    }
}

/// What a backup wrote.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BackupReport {
    pub path: PathBuf,
    pub archive_bytes: u64,
    pub files: usize,
    /// Uncompressed bytes of the files.
    pub content_bytes: u64,
    /// How long the store's locks were held for the snapshot.
    pub locked_ms: u128,
    pub duration_ms: u128,
    pub skipped: Vec<String>,
    pub retention: super::retention::Pruned,
}

/// Takes the home's backup lock, waiting up to the store's deadline; refuses clearly if another
/// backup or restore keeps it.
pub(crate) fn lock_backups(store: &Store) -> Result<LockGuard> {
    match store.lock_named(LockName::Backup) {
        Ok(g) => Ok(g),
        Err(Error::LockTimeout { holder, waited_ms, .. }) => Err(Error::refused(format!(
            "another backup or restore of {} is running{} (waited {waited_ms} ms); try again when it has finished",
            store.home().root().display(),
            holder.map(|h| format!(" ({h})")).unwrap_or_default()
        ))),
        Err(e) => Err(e),
    }
}

/// Writes a backup of the store's home.
pub(crate) fn create(store: &Store, config: &Config, opts: &BackupOptions) -> Result<BackupReport> {
    let guard = lock_backups(store)?;
    create_locked(store, config, opts, &guard)
}

/// [`create`] for a caller that holds the backup lock already (a restore's pre-restore backup).
pub(crate) fn create_locked(
    store: &Store,
    config: &Config,
    opts: &BackupOptions,
    _lock: &LockGuard,
) -> Result<BackupReport> {
    let started = Instant::now();
    let home = store.home();
    let dest = opts.dest.clone().unwrap_or_else(|| opts.kind.default_dir(home, config));
    atomic::create_dir_all(&dest)?;
    clean_stale_temporaries(&dest);
    let label = opts.label.as_deref().map(check_label).transpose()?;
    let now = chrono::Utc::now();
    let (final_path, stem) = archive_name(&dest, opts.kind, now, label)?;

    let stage = StageDir::create(&dest)?;
    let snapshot = super::snapshot::take(store, stage.path())?;
    super::pause_point("backup-after-snapshot");

    let mut files = Vec::with_capacity(snapshot.files.len());
    for f in &snapshot.files {
        files.push(ManifestFile {
            path: f.rel.clone(),
            size: f.size,
            mode: f.mode,
            sha256: crate::store::sha256_file(&f.staged)?,
        });
    }
    let alias = manifest::alias_dir(&stem);
    let manifest = Manifest {
        format_version: manifest::FORMAT_VERSION,
        cortex_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: now,
        host: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        home: home.root().display().to_string(),
        kind: opts.kind.as_str().to_string(),
        label: label.map(str::to_string),
        files,
        links: vec![ManifestLink { path: format!("{alias}/coordination"), target: "../coordination".into() }],
    };
    let content_bytes = manifest.total_bytes();

    let tmp = dest.join(format!(
        "{TEMP_PREFIX}{}.{}",
        final_path.file_name().and_then(|n| n.to_str()).unwrap_or("archive"),
        std::process::id()
    ));
    let written = write_archive(&tmp, &manifest, &snapshot.files, opts.progress);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    super::pause_point("backup-before-rename");
    if let Err(e) = fs::rename(&tmp, &final_path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&final_path, "rename the finished archive to", e));
    }
    atomic::fsync_dir(&dest)?;
    drop(stage);

    // Read it back: an archive that does not verify is removed, never left looking valid.
    if let Err(e) = super::verify::verify(&final_path) {
        let _ = fs::remove_file(&final_path);
        return Err(Error::other(format!("the archive just written does not verify ({e}); it was removed")));
    }
    let archive_bytes = fs::metadata(&final_path).map(|m| m.len()).unwrap_or(0);
    let keep = opts.keep.unwrap_or(config.backup.keep);
    let retention = super::retention::prune(&dest, opts.kind, keep, &final_path)?;
    Ok(BackupReport {
        path: final_path,
        archive_bytes,
        files: manifest.files.len(),
        content_bytes,
        locked_ms: snapshot.locked_for.as_millis(),
        duration_ms: started.elapsed().as_millis(),
        skipped: snapshot.skipped,
        retention,
    })
}

/// A label goes into the file name: letters, digits, `-` and `_` only.
fn check_label(label: &str) -> Result<&str> {
    if label.is_empty()
        || label.len() > 64
        || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::Config {
            path: None,
            detail: format!("--label {label:?}: use 1 to 64 letters, digits, '-' or '_'"),
        });
    }
    Ok(label)
}

/// `<prefix>-YYYYmmdd-HHMMSS[-label].tar.gz`, with `-2`, `-3`... if that name is taken.
fn archive_name(
    dest: &Path,
    kind: ArchiveKind,
    now: crate::base::clock::Timestamp,
    label: Option<&str>,
) -> Result<(PathBuf, String)> {
    let base = format!(
        "{}-{}{}",
        kind.prefix(),
        now.format("%Y%m%d-%H%M%S"),
        label.map(|l| format!("-{l}")).unwrap_or_default()
    );
    for n in 1..1000 {
        let stem = if n == 1 { base.clone() } else { format!("{base}-{n}") };
        let path = dest.join(format!("{stem}.tar.gz"));
        if path.symlink_metadata().is_err() {
            return Ok((path, stem));
        }
    }
    Err(Error::other(format!("too many archives named {base}* in {}", dest.display())))
}

/// A staging directory in the destination, removed when dropped.
struct StageDir(PathBuf);

impl StageDir {
    fn create(dest: &Path) -> Result<StageDir> {
        let p = dest.join(format!("{TEMP_PREFIX}stage.{}.{:x}", std::process::id(), fastrand::u32(..)));
        crate::store::open::create_dir_new(&p)?;
        Ok(StageDir(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for StageDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Removes temporaries a killed backup left in `dest` (their PID is in the name and is gone).
fn clean_stale_temporaries(dest: &Path) {
    let Ok(entries) = fs::read_dir(dest) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(TEMP_PREFIX) else { continue };
        let pid = if let Some(r) = rest.strip_prefix("stage.") {
            r.split('.').next().and_then(|p| p.parse::<i32>().ok())
        } else {
            rest.rsplit('.').next().and_then(|p| p.parse::<i32>().ok())
        };
        if let Some(pid) = pid
            && !pid_alive(pid)
        {
            let p = e.path();
            let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        }
    }
}

fn pid_alive(pid: i32) -> bool {
    pid > 0 && !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

fn write_archive(tmp: &Path, manifest: &Manifest, files: &[super::snapshot::StagedFile], progress: bool) -> Result<()> {
    let file = crate::store::open::create_new(tmp)?;
    let gz = GzEncoder::new(BufWriter::with_capacity(1 << 16, file), Compression::default());
    let mut tar = tar::Builder::new(gz);
    let io = |e: std::io::Error| Error::io(tmp, "write", e);

    let manifest_bytes = serde_json::to_vec_pretty(manifest)?;
    let mtime = chrono::Utc::now().timestamp().max(0) as u64;
    let mut h = regular_header(manifest_bytes.len() as u64, 0o600, mtime);
    tar.append_data(&mut h, manifest::MANIFEST_NAME, manifest_bytes.as_slice()).map_err(io)?;
    for link in &manifest.links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_mtime(mtime);
        tar.append_link(&mut h, &link.path, &link.target).map_err(io)?;
    }

    let show = if progress { Show::TerminalOnly } else { Show::Quiet };
    let stage = Stage::start(show, "backup", manifest.total_bytes(), Unit::Bytes);
    for f in files {
        let src = fs::File::open(&f.staged).map_err(|e| Error::io(&f.staged, "open", e))?;
        let mut h = regular_header(f.size, f.mode, f.mtime);
        tar.append_data(&mut h, &f.rel, stage.reader(src.take(f.size))).map_err(io)?;
    }
    stage.finish();
    let gz = tar.into_inner().map_err(io)?;
    let buf = gz.finish().map_err(io)?;
    let file = buf.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(tmp, "fsync", e))?;
    Ok(())
}

fn regular_header(size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h
}
