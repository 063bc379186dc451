//! The daemons' file watcher: inotify with a mask of changes only — created, written, removed,
//! renamed, attributes — never opens or reads. notify 8.2.2's inotify backend always subscribes
//! to `IN_OPEN` (its `add_single_watch` mask is fixed), so every reader of a watched file (a
//! daemon reading a spec, the CLI, `jq`) woke every watching daemon, which then threw the event
//! away; here the kernel does not queue such events at all. Directories are watched recursively
//! (new subdirectories too, hidden ones like `.locks/` left out: lock holder notes are not
//! changes); a file is watched by its inode, as notify did. A queue overflow reports each root as
//! changed, so a daemon that keeps state per file rescans it.
//!
//! Each [`Watcher`] owns one inotify descriptor and one thread; the callback gets the changed
//! path (the file inside a watched directory, the directory itself for a rescan).

use crate::base::error::{Error, Result};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// What a directory watch asks the kernel for: no `IN_OPEN`, `IN_ACCESS`, `IN_CLOSE_NOWRITE`
/// (reads), and no `IN_CLOSE_WRITE` (a write already reported `IN_MODIFY`; an empty new file
/// `IN_CREATE`).
pub fn dir_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::EXCL_UNLINK
}

/// What a single-file watch asks for.
pub fn file_mask() -> WatchMask {
    WatchMask::MODIFY | WatchMask::ATTRIB | WatchMask::DELETE_SELF | WatchMask::MOVE_SELF
}

/// The inotify mask bits that mean a read: a watch of ours never carries them (tests read
/// `/proc/<pid>/fdinfo` to check).
pub const READ_BITS: u32 = 0x0000_0001 /* IN_ACCESS */ | 0x0000_0010 /* IN_CLOSE_NOWRITE */ | 0x0000_0020 /* IN_OPEN */;

/// How deep a directory is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The directory and every subdirectory (new ones included), hidden ones excepted.
    Recursive,
    /// The directory's own entries only.
    Flat,
}

/// A running watch; dropping it leaves the thread blocked on a descriptor nobody reads until the
/// process exits, as the callback's channel closing ends it at its next event.
pub struct Watcher {
    _thread: std::thread::JoinHandle<()>,
}

struct Watched {
    path: PathBuf,
    dir: bool,
    depth: Depth,
}

struct State {
    inotify: Inotify,
    by_wd: HashMap<WatchDescriptor, Watched>,
    roots: Vec<PathBuf>,
}

impl State {
    fn add_dir(&mut self, dir: &Path, depth: Depth, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let wd = self.inotify.watches().add(dir, dir_mask())?;
        self.by_wd.insert(wd, Watched { path: dir.to_path_buf(), dir: true, depth });
        if depth == Depth::Flat {
            return Ok(());
        }
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_dir() && !is_hidden(&e.file_name()) {
                // A subdirectory that vanished meanwhile is no error.
                let _ = self.add_dir(&path, depth, found);
            } else if ft.is_file() {
                found.push(path);
            }
        }
        Ok(())
    }
}

fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Watches `paths` (directories at `depth`, files by inode) and calls `on_change` with each
/// changed path from a thread of its own. Paths must exist.
pub fn watch(paths: &[PathBuf], depth: Depth, on_change: impl Fn(PathBuf) -> bool + Send + 'static) -> Result<Watcher> {
    let inotify =
        Inotify::init().map_err(|e| Error::io(paths.first().map_or(Path::new("."), |p| p), "inotify_init", e))?;
    let mut state = State { inotify, by_wd: HashMap::new(), roots: Vec::new() };
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p, "watch", e))?;
        if meta.is_dir() {
            state.add_dir(p, depth, &mut Vec::new()).map_err(|e| Error::io(p, "watch", e))?;
        } else {
            let wd = state.inotify.watches().add(p, file_mask()).map_err(|e| Error::io(p, "watch", e))?;
            state.by_wd.insert(wd, Watched { path: p.clone(), dir: false, depth: Depth::Flat });
        }
        state.roots.push(p.clone());
    }
    let thread = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || event_loop(state, on_change))
        .map_err(|e| Error::other(format!("cannot start the watch thread: {e}")))?;
    Ok(Watcher { _thread: thread })
}

fn event_loop(mut state: State, on_change: impl Fn(PathBuf) -> bool) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let mut changed: Vec<PathBuf> = Vec::new();
        let mut new_dirs: Vec<(PathBuf, Depth)> = Vec::new();
        let mut gone: Vec<WatchDescriptor> = Vec::new();
        match state.inotify.read_events_blocking(&mut buffer) {
            Ok(events) => {
                for ev in events {
                    if ev.mask.contains(EventMask::Q_OVERFLOW) {
                        changed.extend(state.roots.iter().cloned());
                        continue;
                    }
                    if ev.mask.contains(EventMask::IGNORED) {
                        gone.push(ev.wd.clone());
                        continue;
                    }
                    let Some(w) = state.by_wd.get(&ev.wd) else { continue };
                    let path = match ev.name {
                        Some(name) if w.dir => w.path.join(name),
                        _ => w.path.clone(),
                    };
                    let is_dir_entry = ev.mask.contains(EventMask::ISDIR);
                    if is_dir_entry
                        && w.depth == Depth::Recursive
                        && ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO)
                        && !ev.name.is_some_and(is_hidden)
                    {
                        new_dirs.push((path.clone(), w.depth));
                    }
                    changed.push(path);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("file watch stopped: {e}");
                return;
            }
        }
        for wd in gone {
            state.by_wd.remove(&wd);
        }
        for (dir, depth) in new_dirs {
            // Files created in it before its watch was in place are reported now.
            let mut found = Vec::new();
            if state.add_dir(&dir, depth, &mut found).is_ok() {
                changed.extend(found);
            }
        }
        changed.dedup();
        for p in changed {
            if !on_change(p) {
                return;
            }
        }
    }
}
