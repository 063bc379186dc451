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
//! path (the file inside a watched directory, the directory itself for a rescan). A paced watch
//! ([`watch_paced`], for daemons that let changes settle anyway) reads the kernel's queue at
//! most once per pace: a burst of events costs one wake-up, not one per event. Dropping a
//! [`Watcher`] ends its thread and closes its descriptor (inotify instances are limited per user,
//! 128 by default: a daemon that watches each new file of a rotated log replaces its watcher).

use crate::base::error::{Error, Result};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// A running watch. Dropping it wakes its thread (the write end of a pipe the thread polls beside
/// the inotify descriptor closes), waits for it to end, and so closes the inotify descriptor.
pub struct Watcher {
    stop: Option<std::os::fd::OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
    reads: Arc<AtomicU64>,
}

impl Watcher {
    /// How many times the thread has read the kernel's queue (each a wake-up).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Watched {
    path: PathBuf,
    dir: bool,
    depth: Depth,
}

struct State {
    inotify: Inotify,
    by_wd: HashMap<WatchDescriptor, Watched>,
    /// Each watched path, with its depth when it is a directory.
    roots: Vec<(PathBuf, Option<Depth>)>,
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
    watch_paced(paths, depth, Duration::ZERO, on_change)
}

/// [`watch`], reading the changes at most once per `pace`: after the changes of one read are
/// passed on, the thread waits out `pace` while the kernel queues further events (the same file's
/// repeated events merged), then takes them in one read of up to 64 KiB (about a thousand
/// events; a larger backlog takes a pace more per read). A change is passed on at most `pace`
/// late while fewer than that queue up in one pace. The kernel's queue holds 16,384 events by
/// default: past that, the overflow reports every root as changed (the daemon rescans).
pub fn watch_paced(
    paths: &[PathBuf],
    depth: Depth,
    pace: Duration,
    on_change: impl Fn(PathBuf) -> bool + Send + 'static,
) -> Result<Watcher> {
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
        state.roots.push((p.clone(), meta.is_dir().then_some(depth)));
    }
    let (stopped, stop) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io(Path::new("pipe"), "pipe2", e.into()))?;
    let reads = Arc::new(AtomicU64::new(0));
    let counted = reads.clone();
    let thread = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || event_loop(state, &stopped, pace, &counted, on_change))
        .map_err(|e| Error::other(format!("cannot start the watch thread: {e}")))?;
    Ok(Watcher { stop: Some(stop), thread: Some(thread), reads })
}

/// Waits until `inotify` is readable or, without one, until `until` (a paced watch's gap between
/// reads); false once the watcher was dropped (the pipe's write end closed) or polling failed.
fn wait(inotify: Option<&Inotify>, stopped: &std::os::fd::OwnedFd, until: Option<Instant>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    loop {
        let timeout = match until {
            None => PollTimeout::NONE,
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return true;
                }
                PollTimeout::from(u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX))
            }
        };
        let mut fds = vec![PollFd::new(stopped.as_fd(), PollFlags::POLLIN)];
        fds.extend(inotify.map(|i| PollFd::new(i.as_fd(), PollFlags::POLLIN)));
        match poll(&mut fds, timeout) {
            Ok(_) => {
                if fds[0].any().unwrap_or(true) {
                    return false;
                }
                if fds.get(1).is_some_and(|f| f.any().unwrap_or(false)) {
                    return true;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::error!("file watch stopped: poll: {e}");
                return false;
            }
        }
    }
}

fn event_loop(
    mut state: State,
    stopped: &std::os::fd::OwnedFd,
    pace: Duration,
    reads: &AtomicU64,
    on_change: impl Fn(PathBuf) -> bool,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if !wait(Some(&state.inotify), stopped, None) {
            return;
        }
        reads.fetch_add(1, Ordering::Relaxed);
        let mut changed: Vec<PathBuf> = Vec::new();
        let mut new_dirs: Vec<(PathBuf, Depth)> = Vec::new();
        let mut gone: Vec<WatchDescriptor> = Vec::new();
        match state.inotify.read_events(&mut buffer) {
            Ok(events) => {
                for ev in events {
                    if ev.mask.contains(EventMask::Q_OVERFLOW) {
                        // Events were lost: every root counts as changed, and a directory created
                        // meanwhile gets its watch now (its files are reported below).
                        for (root, dir_depth) in &state.roots {
                            changed.push(root.clone());
                            if let Some(depth) = dir_depth {
                                new_dirs.push((root.clone(), *depth));
                            }
                        }
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
            Err(e) if matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock) => continue,
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
        if !pace.is_zero() && !wait(None, stopped, Some(Instant::now() + pace)) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn wait_for(rx: &mpsc::Receiver<PathBuf>, want: &Path, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(p) if p == want => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Writes `n` files into `dir` about 20 ms apart; returns how long it took.
    fn trickle(dir: &Path, n: usize) -> Duration {
        let start = Instant::now();
        for i in 0..n {
            std::fs::write(dir.join(format!("f{i}")), b"x").unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    /// Waits (at most 10 s) until every one of `n` files of `trickle` was passed on.
    fn all_passed_on(rx: &mpsc::Receiver<PathBuf>, dir: &Path, n: usize) {
        let mut seen = std::collections::HashSet::new();
        let end = Instant::now() + Duration::from_secs(10);
        while seen.len() < n {
            let left = end.checked_duration_since(Instant::now()).expect("every change is passed on");
            let p = rx.recv_timeout(left).expect("every change is passed on");
            if p.parent() == Some(dir) {
                seen.insert(p);
            }
        }
    }

    #[test]
    fn a_paced_watch_reads_a_stream_of_changes_once_per_pace_and_loses_none() {
        let dir = tempfile::tempdir().unwrap();
        let pace = Duration::from_millis(250);
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let w = watch_paced(&[dir.path().to_path_buf()], Depth::Flat, pace, move |p| tx.send(p).is_ok()).unwrap();
        let n = 50;
        let took = trickle(dir.path(), n);
        all_passed_on(&rx, dir.path(), n);
        // One read per pace while the stream lasts, and the last one after it (the write loop is
        // slower under load: the bound grows with it, the reads do not).
        let bound = (took.as_secs_f64() / pace.as_secs_f64()).ceil() as u64 + 2;
        assert!(w.reads() <= bound, "{} reads for {n} changes over {took:?}, paced at {pace:?}", w.reads());

        // The same stream unpaced wakes the thread for nearly every change: the check above fails
        // without the pace.
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let w = watch(&[dir.path().to_path_buf()], Depth::Flat, move |p| tx.send(p).is_ok()).unwrap();
        let took = trickle(dir.path(), n);
        all_passed_on(&rx, dir.path(), n);
        let bound = (took.as_secs_f64() / pace.as_secs_f64()).ceil() as u64 + 2;
        assert!(w.reads() > bound, "unpaced: {} reads for {n} changes over {took:?}", w.reads());
    }

    #[test]
    fn a_paced_watcher_ends_at_once_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let w = watch_paced(&[dir.path().to_path_buf()], Depth::Flat, Duration::from_secs(3600), move |p| {
            tx.send(p).is_ok()
        })
        .unwrap();
        std::fs::write(dir.path().join("a"), b"1").unwrap();
        assert!(wait_for(&rx, &dir.path().join("a"), Duration::from_secs(10)), "the first change is passed on at once");
        // The thread now waits out its hour: dropping the watcher ends that wait.
        let (done_tx, done_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            drop(w);
            let _ = done_tx.send(());
        });
        assert!(done_rx.recv_timeout(Duration::from_secs(30)).is_ok(), "the drop waited for the pace");
    }

    #[test]
    fn dropping_a_watcher_ends_its_thread_and_closes_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let w = watch(&[dir.path().to_path_buf()], Depth::Flat, move |p| tx.send(p).is_ok()).unwrap();
        std::fs::write(dir.path().join("a"), b"1").unwrap();
        assert!(wait_for(&rx, &dir.path().join("a"), Duration::from_secs(10)), "the watch works");
        drop(w);
        // The callback (and the sender it owns) is gone with the thread: nothing is left blocked
        // on an inotify descriptor nobody will read.
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the watch thread still runs after its Watcher was dropped")
                }
            }
        }
    }

    #[test]
    fn a_directory_created_while_events_were_lost_is_watched_after_the_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        // Watched from the start, and filled only once the thread is held at the gate with the
        // batch holding `first` alone: otherwise the overflow depended on what the thread had read
        // in its first batch (`many`'s creation with `first`, so that its watch was added; or,
        // slow under load, thousands of `many`'s events with it, so the queue never filled).
        let many = root.join("many");
        std::fs::create_dir(&many).unwrap();
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(Some(gate_rx));
        let (held_tx, held_rx) = mpsc::channel::<()>();
        let _w = watch(std::slice::from_ref(&root), Depth::Recursive, move |p| {
            // The first event blocks the thread until the test has overflowed the kernel's queue.
            if let Some(g) = gate.lock().unwrap().take() {
                let _ = held_tx.send(());
                let _ = g.recv();
            }
            tx.send(p).is_ok()
        })
        .unwrap();
        std::fs::write(root.join("first"), b"").unwrap();
        held_rx.recv_timeout(Duration::from_secs(30)).expect("the watch thread reads the first event");
        let max: usize =
            std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events").unwrap().trim().parse().unwrap();
        // Each new file is a distinct event (identical consecutive events are merged).
        for i in 0..max + 100 {
            std::fs::write(many.join(i.to_string()), b"").unwrap();
        }
        // Created while the queue is full: its IN_CREATE is lost.
        let late = root.join("late");
        std::fs::create_dir(&late).unwrap();
        gate_tx.send(()).unwrap();
        assert!(wait_for(&rx, &root, Duration::from_secs(30)), "the overflow reports the root");
        std::fs::write(late.join("after"), b"x").unwrap();
        assert!(
            wait_for(&rx, &late.join("after"), Duration::from_secs(30)),
            "a change in a directory created during the overflow is seen"
        );
    }
}
