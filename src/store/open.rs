//! Every file Cortex opens for writing or appending, and the directories it writes into, opened in
//! one place so that no symbolic link is ever followed below the home:
//!
//! - A file is opened with `O_NOFOLLOW` (a link planted at its name is refused with ELOOP, never
//!   written through, and a dangling link never creates its target), created 0600.
//! - A directory under a home root is reached by walking from the root with
//!   `openat(O_NOFOLLOW | O_DIRECTORY)` one component at a time, creating missing ones 0700
//!   (`mkdirat`): a link planted at `backups/` or `agents/logs/system` is refused instead of
//!   leading the write elsewhere. The file is then opened relative to that directory descriptor,
//!   so nothing can swap a component between the check and the open.
//!
//! The home roots are those of every [`crate::Home`] built in this process ([`register_root`]);
//! the root itself may be reached through links (the operator named it), nothing below it may.
//! A directory outside every home (an absolute `[backup] dest`) is created as given.
//! Readers that must not follow a link either ([`read`]) refuse one the same way.
//! Lock and PID files are opened by `store::lock` and `pidfile`, with the same flag.

use crate::base::error::{Error, Result};
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// Roots of the homes this process uses; directories below them are walked link-free.
static ROOTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Records `root` as a home root (done by [`crate::Home::at`]).
pub(crate) fn register_root(root: &Path) {
    let mut roots = ROOTS.lock().unwrap_or_else(|e| e.into_inner());
    if !roots.iter().any(|r| r == root) {
        roots.push(root.to_path_buf());
    }
}

/// The innermost registered home root `path` is under, and the components below it.
fn beneath(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let roots = ROOTS.lock().unwrap_or_else(|e| e.into_inner());
    let root = roots.iter().filter(|r| path.starts_with(r)).max_by_key(|r| r.as_os_str().len())?;
    Some((root.clone(), path.strip_prefix(root).ok()?.to_path_buf()))
}

/// The error for an open that failed; a symbolic link (refused by `O_NOFOLLOW`) is named as such.
pub(crate) fn refuse_link(path: &Path, action: &'static str, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(nix::libc::ELOOP) {
        return Error::refused(format!(
            "{} is a symbolic link; Cortex does not write or read through links under its home \
             (replace it with a regular file)",
            path.display()
        ));
    }
    Error::io(path, action, e)
}

fn refuse_dir_link(dir: &Path) -> Error {
    Error::refused(format!(
        "{} is a symbolic link or not a directory; Cortex writes only into real directories under \
         its home (replace it with a directory; to keep backups on another disk, set [backup] dest \
         in cortex.toml to that absolute path)",
        dir.display()
    ))
}

/// Opens (creating 0700 what is missing) the directory `dir`: below a home root, component by
/// component without following links; elsewhere as given.
pub(crate) fn open_dir(dir: &Path) -> Result<OwnedFd> {
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let Some((root, rel)) = beneath(dir) else {
        create_plain(dir)?;
        return openat(nix::fcntl::AT_FDCWD, dir, dir_flags, Mode::empty())
            .map_err(|e| Error::io(dir, "open directory", e.into()));
    };
    create_plain(&root)?;
    let mut fd = openat(nix::fcntl::AT_FDCWD, &root, dir_flags, Mode::empty())
        .map_err(|e| Error::io(&root, "open directory", e.into()))?;
    let mut at = root;
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            return Err(Error::refused(format!("{} leaves the home", dir.display())));
        };
        at.push(name);
        let flags = dir_flags | OFlag::O_NOFOLLOW;
        let next = match openat(&fd, name, flags, Mode::empty()) {
            Err(nix::errno::Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(&fd, name, Mode::from_bits_truncate(super::atomic::DIR_MODE)) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(Error::io(&at, "create directory", e.into())),
                }
                openat(&fd, name, flags, Mode::empty())
            }
            other => other,
        };
        fd = match next {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => return Err(refuse_dir_link(&at)),
            Err(e) => return Err(Error::io(&at, "open directory", e.into())),
        };
    }
    Ok(fd)
}

/// `mkdir -p` with mode 0700 for a directory outside any home (or a home root itself).
fn create_plain(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(super::atomic::DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io(dir, "create directory", e))
}

/// A directory reached link-free ([`open_dir`]), for a caller that creates, renames and fsyncs
/// in it by name: nothing can swap a directory of the path in between.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens (creating what is missing) the directory of `path`; returns it and the file name.
    pub(crate) fn of(path: &Path) -> Result<(Dir, PathBuf)> {
        let (dir, name) = split(path)?;
        Ok((Dir { fd: open_dir(&dir)?, path: dir }, name))
    }

    /// Creates the new file `name` (0600, `O_NOFOLLOW`, it must not exist) for writing.
    pub(crate) fn create_new(&self, name: &Path) -> Result<File> {
        let flags = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        openat(&self.fd, name, flags, Mode::from_bits_truncate(super::atomic::FILE_MODE))
            .map(File::from)
            .map_err(|e| refuse_link(&self.path.join(name), "create", e.into()))
    }

    /// Renames `from` over `to`, both in this directory (a link at `to` is replaced, not followed).
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        nix::fcntl::renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| Error::io(self.path.join(to), "rename temporary file over", e.into()))
    }

    /// Removes the file `name` (best effort, for cleaning up a temporary).
    pub(crate) fn remove(&self, name: &Path) {
        let _ = nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    }

    /// fsyncs the directory, making creations and renames in it durable.
    pub(crate) fn sync(&self) -> Result<()> {
        nix::unistd::fsync(&self.fd).map_err(|e| Error::io(&self.path, "fsync directory", e.into()))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates the directory `dir` and its parents (0700), refusing links below the home root.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    open_dir(dir).map(drop)
}

/// How [`open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    /// Read and append, created if missing (JSONL files, logs).
    Append,
    /// Write, created; it must not exist (temporaries, copies, archives).
    CreateNew,
    /// Write, created if missing, emptied if present.
    Truncate,
    /// Write an existing file (to truncate it in place).
    Existing,
}

/// Opens `path` for writing as `how` says: its directory reached link-free (and created), the
/// file itself with `O_NOFOLLOW`, created 0600.
pub(crate) fn open(path: &Path, how: How) -> Result<File> {
    let (dir, name) = split(path)?;
    let dir_fd = open_dir(&dir)?;
    let flags = OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | match how {
            How::Append => OFlag::O_RDWR | OFlag::O_APPEND | OFlag::O_CREAT,
            How::CreateNew => OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
            How::Truncate => OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC,
            How::Existing => OFlag::O_WRONLY,
        };
    let action = match how {
        How::Append => "open for append",
        How::CreateNew | How::Truncate => "create",
        How::Existing => "open",
    };
    openat(&dir_fd, name.as_path(), flags, Mode::from_bits_truncate(super::atomic::FILE_MODE))
        .map(File::from)
        .map_err(|e| refuse_link(path, action, e.into()))
}

/// [`open`] with [`How::Append`].
pub(crate) fn append(path: &Path) -> Result<File> {
    open(path, How::Append)
}

/// [`open`] with [`How::CreateNew`].
pub(crate) fn create_new(path: &Path) -> Result<File> {
    open(path, How::CreateNew)
}

/// Creates a new temporary file beside `path` (in the same directory, named with
/// [`super::atomic::TEMP_PREFIX`] so readers ignore it), for a caller that writes it, fsyncs it and
/// renames it over `path`.
pub(crate) fn create_temp_beside(path: &Path) -> Result<(File, PathBuf)> {
    let (dir, name) = split(path)?;
    let tmp = dir.join(format!(
        "{}{}.{}.{:016x}",
        super::atomic::TEMP_PREFIX,
        name.display(),
        std::process::id(),
        fastrand::u64(..)
    ));
    create_new(&tmp).map(|f| (f, tmp))
}

/// Creates the directory `dir`, which must not exist yet (0700; its parent reached link-free).
pub(crate) fn create_dir_new(dir: &Path) -> Result<()> {
    let (parent, name) = split(dir)?;
    let fd = open_dir(&parent)?;
    nix::sys::stat::mkdirat(&fd, name.as_path(), Mode::from_bits_truncate(super::atomic::DIR_MODE))
        .map_err(|e| Error::io(dir, "create directory", e.into()))
}

/// Opens `path` for reading without following a link at its name (a planted link is refused:
/// its target's bytes are never taken for ours). `NotFound` is passed on as such. Only a regular
/// file is read: a FIFO planted at the name would block the open (and the daemon or API thread
/// behind it) until someone writes to it, so the open does not wait (`O_NONBLOCK`, no effect on a
/// regular file) and anything else is refused.
pub(crate) fn read(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other(format!("{} is not a regular file", path.display())));
    }
    Ok(file)
}

/// Reads the whole file at `path` without following a link at its name ([`read`]).
pub(crate) fn read_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut read(path)?, &mut bytes)?;
    Ok(bytes)
}

/// Says what a failed read means, for reports: a symbolic link is named as such.
pub(crate) fn read_problem(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(nix::libc::ELOOP) {
        "a symbolic link (Cortex does not read through links under its home; replace it with a regular file)".into()
    } else {
        e.to_string()
    }
}

fn split(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let name = path.file_name().ok_or_else(|| Error::other(format!("{} names no file", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, PathBuf::from(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn links_below_a_home_are_refused_for_files_and_directories() {
        let home = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        register_root(home.path());
        // A directory link: nothing is created or written through it.
        std::os::unix::fs::symlink(outside.path(), home.path().join("backups")).unwrap();
        let err = create_new(&home.path().join("backups/a.tar.gz")).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(create_dir_all(&home.path().join("backups/deeper")).is_err());
        assert!(super::super::atomic::write_atomic(&home.path().join("backups/x.json"), b"{}").is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // A dangling file link does not create its target.
        std::fs::create_dir(home.path().join("logs")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("made"), home.path().join("logs/x.log")).unwrap();
        assert!(append(&home.path().join("logs/x.log")).unwrap_err().to_string().contains("symbolic link"));
        assert!(!outside.path().join("made").exists());
        assert!(read(&home.path().join("logs/x.log")).is_err());
        // Real directories are created 0700 and files 0600.
        let mut f = append(&home.path().join("a/b/c.jsonl")).unwrap();
        f.write_all(b"{}\n").unwrap();
        assert_eq!(std::fs::metadata(home.path().join("a/b")).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(home.path().join("a/b/c.jsonl")).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_fifo_planted_at_a_read_name_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("task-queue.json");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read(&fifo).map(drop).map_err(|e| e.to_string()));
        });
        // Before: the open blocked until a writer came (forever); the thread is left blocked then.
        let got = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the open of a FIFO blocked");
        assert!(got.unwrap_err().contains("not a regular file"));
    }
}
