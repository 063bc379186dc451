//! Atomic replacement of a file (invariant 1): write a temporary file in the same directory,
//! fsync it, rename it over the target, fsync the directory. A reader sees the old file or the
//! new one, never a torn one, even when the writer is SIGKILLed between any two steps.

use crate::base::error::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Mode of state files Cortex creates (umask-independent).
pub const FILE_MODE: u32 = 0o600;
/// Mode of directories Cortex creates.
pub const DIR_MODE: u32 = 0o700;

/// `open` flag for files Cortex appends to or locks in place (logs, JSONL, PID and lock files):
/// a symbolic link planted at such a name is refused (ELOOP) instead of written through, so a
/// link to `/etc/passwd` or `~/.bashrc` never receives a line. Replaced files need no flag: a
/// rename replaces the link itself.
pub const NO_FOLLOW: i32 = nix::libc::O_NOFOLLOW;

/// The prefix of temporary files; `validate`, backups and the watchers ignore names with it.
pub const TEMP_PREFIX: &str = ".tmp.";

/// True for a file name that is one of our temporary files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true)
}

/// Replaces `path` atomically (temp file + rename) without fsync: for ephemeral state under
/// `run/` (daemon heartbeat marks), which must never be torn but need not survive a power cut,
/// and must not stall a daemon's loop behind a busy disk's writeback.
pub fn write_replace_volatile(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, false)
}

/// Writes a temporary file in the same directory and renames it over `path`; with `durable`, the
/// file is fsynced before the rename and the directory after it.
/// The directory is reached once, link-free, and the temporary file's creation, the rename and
/// the directory's fsync all go through that one descriptor.
fn replace(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let (dir, name) = super::open::Dir::of(path).inspect_err(super::outage::note)?;
    let tmp = temp_path(Path::new(""), path);
    let result = (|| {
        let mut f = dir.create_new(&tmp)?;
        f.write_all(bytes).map_err(|e| Error::io(dir.path().join(&tmp), "write", e))?;
        if durable {
            f.sync_all().map_err(|e| Error::io(dir.path().join(&tmp), "fsync", e))?;
        }
        drop(f);
        dir.rename(&tmp, &name)?;
        if durable { dir.sync() } else { Ok(()) }
    })();
    if let Err(e) = &result {
        dir.remove(&tmp);
        super::outage::note(e);
    }
    result
}

/// Most threads one [`ReplaceBatch::commit`] flushes files with.
const MAX_SYNC_THREADS: usize = 8;

/// Several atomic replacements committed together (group commit). Each file is written to a
/// temporary file beside its target; [`ReplaceBatch::commit`] fsyncs the temporaries (in
/// parallel, so the file system can merge the flushes), renames each over its target, and
/// fsyncs each directory involved once. Every file is still replaced atomically — a reader sees
/// the old file or the new one — and when `commit` returns all of them are durable; a crash in
/// between leaves some replaced and some not, exactly as the same writes made one by one would.
/// What it saves is one directory fsync per file and the serial wait of each file's flush.
#[derive(Debug, Default)]
pub struct ReplaceBatch {
    staged: Vec<(File, PathBuf, PathBuf)>,
    /// Flushed already, by [`ReplaceBatch::sync_together`].
    synced: bool,
}

impl ReplaceBatch {
    pub fn new() -> ReplaceBatch {
        ReplaceBatch::default()
    }

    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Writes `bytes` to a temporary file beside `path` (not yet fsynced or visible).
    pub fn stage(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = temp_path(&parent_dir(path)?, path);
        match write_temp(&tmp, bytes) {
            Ok(f) => {
                self.staged.push((f, tmp, path.to_path_buf()));
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                super::outage::note(&e);
                Err(e)
            }
        }
    }

    /// Makes every staged file durable and visible. On an error nothing staged is left behind
    /// as a temporary; files renamed before the error stay replaced.
    pub fn commit(self) -> Result<()> {
        self.publish().sync_dirs()
    }

    /// The first half of [`ReplaceBatch::commit`]: every staged file fsynced and renamed into
    /// place (visible, its content durable), the directory fsyncs left to
    /// [`Published::sync_dirs`], for a caller that acts on visibility first (the worker lets a
    /// recorded dispatch start, then makes the record's name durable).
    pub fn publish(mut self) -> Published {
        let staged = std::mem::take(&mut self.staged);
        let synced: Vec<Result<()>> = if self.synced {
            Vec::new()
        } else {
            sync_files(&staged.iter().map(|(f, tmp, _)| (f, tmp.as_path())).collect::<Vec<_>>())
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut failure = synced.into_iter().find_map(|r| r.err());
        for (f, tmp, target) in staged {
            drop(f);
            if failure.is_some() {
                let _ = fs::remove_file(&tmp);
                continue;
            }
            match fs::rename(&tmp, &target) {
                Ok(()) => {
                    let dir = parent_dir(&target).unwrap_or_else(|_| PathBuf::from("."));
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    failure = Some(Error::io(&target, "rename temporary file over", e));
                }
            }
        }
        Published { dirs, failure }
    }

    /// Flushes the staged files of several batches and the files in `also` (appended to, say)
    /// in one parallel wait. The batches are then published or committed one after the other
    /// without flushing again: a caller that must make one batch visible (and its directory
    /// durable) before the next is renamed pays for all the flushes once, not once per batch.
    /// On an error nothing is renamed; dropping the batches removes their temporaries.
    pub fn sync_together(batches: &mut [&mut ReplaceBatch], also: &[(&File, &Path)]) -> Result<()> {
        let mut files: Vec<(&File, &Path)> = also.to_vec();
        for b in batches.iter() {
            files.extend(b.staged.iter().map(|(f, tmp, _)| (f, tmp.as_path())));
        }
        if let Some(e) = sync_files(&files).into_iter().find_map(|r| r.err()) {
            super::outage::note(&e);
            return Err(e);
        }
        for b in batches.iter_mut() {
            b.synced = true;
        }
        Ok(())
    }
}

/// fsyncs files in parallel: at most [`MAX_SYNC_THREADS`] threads, each flushing a share.
fn sync_files(files: &[(&File, &Path)]) -> Vec<Result<()>> {
    let sync = |(f, path): &(&File, &Path)| f.sync_all().map_err(|e| Error::io(path, "fsync", e));
    if files.len() <= 1 {
        return files.iter().map(sync).collect();
    }
    let share = files.len().div_ceil(MAX_SYNC_THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            files.chunks(share).map(|chunk| scope.spawn(move || chunk.iter().map(sync).collect::<Vec<_>>())).collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| vec![Err(Error::other("an fsync thread panicked"))]))
            .collect()
    })
}

/// Files of a [`ReplaceBatch`] renamed into place whose directories are not fsynced yet.
#[derive(Debug)]
#[must_use = "the directories still need their fsync (sync_dirs)"]
pub struct Published {
    dirs: Vec<PathBuf>,
    failure: Option<Error>,
}

impl Published {
    /// The first error of the batch (then not every staged file was renamed).
    pub fn error(&self) -> Option<&Error> {
        self.failure.as_ref()
    }

    /// fsyncs each directory involved once (in parallel); returns the batch's first error, if any.
    pub fn sync_dirs(self) -> Result<()> {
        // fsync_dirs counts its own failures for the outage report.
        let synced = fsync_dirs(&self.dirs);
        match self.failure {
            Some(e) => {
                super::outage::note(&e);
                Err(e)
            }
            None => synced,
        }
    }

    /// The directories still to fsync, for a caller that fsyncs them with others
    /// ([`fsync_dirs`]) and has already looked at [`Published::error`] (which is counted for the
    /// outage report here).
    pub fn into_dirs(self) -> Vec<PathBuf> {
        if let Some(e) = &self.failure {
            super::outage::note(e);
        }
        self.dirs
    }
}

impl Drop for ReplaceBatch {
    /// A batch dropped without a commit leaves no temporaries.
    fn drop(&mut self) {
        for (_, tmp, _) in self.staged.drain(..) {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Renames each `(from, to)` pair (moves specs between buckets as a group). Returns one result
/// per pair and the directories involved, which the caller makes durable with [`fsync_dirs`]
/// (once for all of them, with the directories of other changes of the same step).
pub fn rename_many(moves: &[(PathBuf, PathBuf)]) -> (Vec<Result<()>>, Vec<PathBuf>) {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut out: Vec<Result<()>> = Vec::with_capacity(moves.len());
    for (from, to) in moves {
        let r = fs::rename(from, to).map_err(|e| Error::io(from, "move", e));
        if r.is_ok() {
            for d in [parent_dir(to), parent_dir(from)].into_iter().flatten() {
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
        out.push(r);
    }
    (out, dirs)
}

/// fsyncs each directory (each once, in parallel like a batch's files: they are flushed
/// together, not one after the other); the first error.
pub fn fsync_dirs(dirs: &[PathBuf]) -> Result<()> {
    let mut unique: Vec<&Path> = Vec::with_capacity(dirs.len());
    for d in dirs {
        if !unique.contains(&d.as_path()) {
            unique.push(d);
        }
    }
    // A directory that cannot be opened does not keep the others from their fsync.
    let mut result = Ok(());
    let mut opened = Vec::with_capacity(unique.len());
    for d in unique {
        match File::open(d) {
            Ok(f) => opened.push((f, d)),
            Err(e) => result = result.and(Err(Error::io(d, "open directory", e))),
        }
    }
    let files: Vec<(&File, &Path)> = opened.iter().map(|(f, d)| (f, *d)).collect();
    for synced in sync_files(&files) {
        result = result.and(synced);
    }
    if let Err(e) = &result {
        super::outage::note(e);
    }
    result
}

/// A temporary file younger than this is never swept (its writer may be between create and rename).
pub const TEMP_SWEEP_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(60);
/// A temporary file older than this is swept even if a process with its writer's PID runs (a
/// write takes milliseconds; that PID was reused).
pub const TEMP_SWEEP_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The PID of the process that created a temporary file, from its name
/// (`.tmp.<name>.<pid>.<16 hex digits>`).
pub fn temp_owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    let mut parts = rest.rsplitn(3, '.');
    let random = parts.next()?;
    let pid = parts.next()?;
    parts.next()?;
    (random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
    pid.parse().ok().filter(|p: &i32| *p > 0)
}

/// Temporary files under `roots` (recursively) left by writers that died before their rename
/// (a SIGKILL, a crash): older than [`TEMP_SWEEP_MIN_AGE`] and their writer's PID gone, or older
/// than [`TEMP_SWEEP_MAX_AGE`]. Readers ignore them; this finds them for `cortex repair`.
pub fn stale_temporaries(roots: &[PathBuf]) -> Vec<PathBuf> {
    let now = std::time::SystemTime::now();
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = roots.to_vec();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = temp_owner(&name).filter(|_| kind.is_file()) else { continue };
            let age = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| now.duration_since(t).ok());
            let Some(age) = age else { continue };
            let writer_gone =
                matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH));
            if (age >= TEMP_SWEEP_MIN_AGE && writer_gone) || age >= TEMP_SWEEP_MAX_AGE {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// Creates the temporary file `tmp` (it must not exist) with `bytes`; not fsynced.
fn write_temp(tmp: &Path, bytes: &[u8]) -> Result<File> {
    let mut f = super::open::create_new(tmp)?;
    f.write_all(bytes).map_err(|e| Error::io(tmp, "write", e))?;
    Ok(f)
}

fn temp_path(dir: &Path, path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    dir.join(format!("{TEMP_PREFIX}{name}.{}.{:016x}", std::process::id(), fastrand::u64(..)))
}

/// fsyncs a directory so a rename or create in it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io(dir, "open directory", e))?;
    d.sync_all().map_err(|e| Error::io(dir, "fsync directory", e))
}

/// Creates a directory and its parents with mode 0700; below a home root no component may be a
/// symbolic link ([`super::open::create_dir_all`]).
pub fn create_dir_all(dir: &Path) -> Result<()> {
    super::open::create_dir_all(dir)
}

/// Renames `from` to `to` and fsyncs both directories (moves a spec between buckets, say).
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io(from, "move", e))?;
    fsync_dir(&parent_dir(to)?)?;
    let from_dir = parent_dir(from)?;
    if from_dir != parent_dir(to)? {
        fsync_dir(&from_dir)?;
    }
    Ok(())
}

fn parent_dir(path: &Path) -> Result<PathBuf> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p.to_path_buf()),
        _ => Ok(PathBuf::from(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"{\"n\":1}").unwrap();
        write_atomic(&p, b"{\"n\":2}").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{\"n\":2}");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1);
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, FILE_MODE);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_batch_replaces_every_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        create_dir_all(&sub).unwrap();
        write_atomic(&dir.path().join("a.json"), b"old").unwrap();
        let mut b = ReplaceBatch::new();
        for (p, v) in [(dir.path().join("a.json"), "1"), (dir.path().join("b.json"), "2"), (sub.join("c.json"), "3")] {
            b.stage(&p, v.as_bytes()).unwrap();
        }
        // Nothing is visible before the commit.
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"old");
        assert!(!dir.path().join("b.json").exists());
        b.commit().unwrap();
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"1");
        assert_eq!(fs::read(dir.path().join("b.json")).unwrap(), b"2");
        assert_eq!(fs::read(sub.join("c.json")).unwrap(), b"3");
        assert_eq!(names(dir.path()), ["a.json", "b.json", "sub"]);
        assert_eq!(names(&sub), ["c.json"]);
        assert_eq!(fs::metadata(sub.join("c.json")).unwrap().permissions().mode() & 0o777, FILE_MODE);
    }

    #[test]
    fn a_batch_dropped_without_commit_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&dir.path().join("a.json"), b"old").unwrap();
        let mut b = ReplaceBatch::new();
        b.stage(&dir.path().join("a.json"), b"new").unwrap();
        b.stage(&dir.path().join("b.json"), b"new").unwrap();
        drop(b);
        assert_eq!(names(dir.path()), ["a.json"]);
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"old");
    }

    #[test]
    fn a_batch_whose_target_cannot_be_replaced_fails_and_keeps_the_others_consistent() {
        let dir = tempfile::tempdir().unwrap();
        // A directory at the target's name: the rename fails (EISDIR).
        create_dir_all(&dir.path().join("b.json")).unwrap();
        let mut b = ReplaceBatch::new();
        b.stage(&dir.path().join("a.json"), b"1").unwrap();
        b.stage(&dir.path().join("b.json"), b"2").unwrap();
        let err = b.commit().unwrap_err().to_string();
        assert!(err.contains("b.json"), "{err}");
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"1");
        assert_eq!(names(dir.path()), ["a.json", "b.json"]);
    }

    #[test]
    fn temporaries_of_dead_writers_are_found_and_live_or_fresh_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("worker-specs/active");
        create_dir_all(&sub).unwrap();
        // A PID that is surely gone: a child that ran and was reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id() as i32;
        child.wait().unwrap();
        let me = std::process::id() as i32;
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        let ancient = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        let make = |dir: &Path, name: String, mtime: Option<std::time::SystemTime>| {
            let p = dir.join(name);
            let f = File::create(&p).unwrap();
            if let Some(t) = mtime {
                f.set_modified(t).unwrap();
            }
            p
        };
        let dead_old = make(&sub, format!(".tmp.d1.json.{dead}.0123456789abcdef"), Some(old));
        let _dead_fresh = make(&sub, format!(".tmp.d2.json.{dead}.0123456789abcdef"), None);
        let _live_old = make(dir.path(), format!(".tmp.task-queue.json.{me}.0123456789abcdef"), Some(old));
        let live_ancient = make(dir.path(), format!(".tmp.budget.json.{me}.fedcba9876543210"), Some(ancient));
        let _not_ours = make(dir.path(), ".tmp.notes".into(), Some(ancient));
        let _plain = make(dir.path(), "task-queue.json".into(), Some(ancient));
        assert_eq!(stale_temporaries(&[dir.path().to_path_buf()]), {
            let mut v = vec![dead_old, live_ancient];
            v.sort();
            v
        });
        assert_eq!(temp_owner(".tmp.a.b.json.42.0123456789abcdef"), Some(42));
        assert_eq!(temp_owner(".tmp.42.0123456789abcdef"), None);
        assert_eq!(temp_owner("x.json.42.0123456789abcdef"), None);
    }

    #[test]
    fn rename_many_moves_each_pair() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("to");
        create_dir_all(&to).unwrap();
        write_atomic(&dir.path().join("x"), b"x").unwrap();
        let moves = vec![(dir.path().join("x"), to.join("x")), (dir.path().join("missing"), to.join("missing"))];
        let (r, dirs) = rename_many(&moves);
        assert!(r[0].is_ok());
        assert!(r[1].is_err());
        assert_eq!(names(&to), ["x"]);
        // The directories of the move that happened, to fsync (each once).
        let mut dirs = dirs;
        dirs.sort();
        assert_eq!(dirs, [dir.path().to_path_buf(), to.clone()]);
        fsync_dirs(&[dirs.clone(), dirs].concat()).unwrap();
        assert!(fsync_dirs(&[dir.path().join("missing")]).is_err());
    }
}
