//! What the event streams carry, computed once for every open stream by one thread
//! (`api-feed`): it wakes when a file under `coordination/` or `run/` changes (inotify, through
//! [`crate::base::watch`]; at most every [`MIN_GAP`]) and at least every [`PERIODIC`] (a daemon
//! that dies changes no file), then
//!
//! - follows `dashboard-events.jsonl` by byte offset tied to its inode, finishing a rotated copy
//!   (`.1`, `.2`, …) before the new file, and broadcasts each new line as `event: event` with the
//!   id `<inode>-<offset after the line>`;
//! - broadcasts `event: status` (the `/overview` body) when it changed other than by the clock,
//!   `event: daemons` when a daemon's state, PID or restarts changed, `event: dispatches` with the
//!   dispatch records that appeared, moved or changed state, `event: schedules` when
//!   `schedules.json` changed.
//!
//! While no stream is open nothing is computed and nothing is watched: a due refresh only marks
//! the state stale and drops the watches, and the next stream to join watches again and brings
//! the state up to date first (the event log followed from its end, so a
//! `Last-Event-ID` catches up from the file). An idle dashboard costs the fleet nothing per change.
//!
//! A new stream joins through this thread too, so what it is sent first (catch-up from its
//! `Last-Event-ID`, then the current status) ends exactly where the broadcasts it gets next begin:
//! nothing lost, nothing twice. Task output streams (`/tasks/<id>/log/stream`) are followed here as
//! well, woken by changes under `agents/logs/workers/`.

use super::overview;
use super::stream::{Client, Hub, Message, Topic, encode};
use crate::base::watch::{self, Depth};
use crate::ops::status::StatusReader;
use crate::store::events::Event;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// The longest the feed goes without looking (daemon deaths change no file).
pub(crate) const PERIODIC: Duration = Duration::from_secs(5);
/// The shortest time between two refreshes: a burst of file changes (a busy event log) costs at
/// most ten refreshes a second, whatever the number of streams.
const MIN_GAP: Duration = Duration::from_millis(100);
/// A stream resuming further back than this many bytes of the event log starts afresh.
const MAX_CATCH_UP: u64 = 8 * 1024 * 1024;
/// Bytes of task output in one `log` message at most.
pub(crate) const LOG_CHUNK: u64 = 64 * 1024;
/// Rotated copies of the event log searched for a resuming stream's file.
const ROTATED_SEARCHED: u32 = 16;
/// Dispatch changes listed in one `dispatches` message at most (beyond: `{"reload": true}`).
const MAX_LISTED_CHANGES: usize = 200;
/// How long a task output stream waits for its dispatch's record to appear.
const RECORD_WAIT: Duration = Duration::from_secs(60);
/// Task output streams followed at once at most.
const MAX_LOG_FOLLOWERS: usize = 256;
/// [`LOG_CHUNK`]s sent to one task output stream per pass at most: a stream starting far back in
/// a large file (`?offset=0`) is sent it over many passes, not in one that blocks the feed.
const LOG_CHUNKS_PER_PASS: u32 = 4;
/// How soon the feed continues a task output stream that has more to send.
const LOG_CONTINUE: Duration = Duration::from_millis(10);

/// A stream to start.
pub(crate) struct Join {
    /// Set by the server once the response head is written.
    pub stream: Option<TcpStream>,
    /// The request's `Last-Event-ID`.
    pub last_id: Option<String>,
    /// Leave out text tasks wrote (an anonymous caller while tokens are configured).
    pub redact: bool,
    pub what: JoinKind,
}

pub(crate) enum JoinKind {
    /// `GET /events/stream`.
    Main,
    /// `GET /tasks/<id>/log/stream`: a dispatch's output file from `offset`.
    Log { dispatch_id: String, path: PathBuf, offset: Option<u64> },
}

enum Msg {
    /// Something under `coordination/` or `run/` changed.
    Changed,
    /// Task output changed.
    LogsChanged,
    Join(Join),
}

/// The handle to the feed thread.
#[derive(Clone)]
pub(crate) struct Feed {
    tx: Sender<Msg>,
    #[cfg(test)]
    stats: Arc<FeedStats>,
}

/// What the feed thread did (tests tell a skipped refresh from a made one).
#[derive(Default)]
struct FeedStats {
    refreshes: std::sync::atomic::AtomicU64,
    skipped: std::sync::atomic::AtomicU64,
}

impl Feed {
    /// Starts the thread and its watches.
    pub(crate) fn start(
        reader: Arc<StatusReader>,
        hub: Hub,
        failed: Arc<overview::FailedWindow>,
    ) -> crate::base::error::Result<Feed> {
        let (tx, rx) = mpsc::channel();
        let home = reader.home().clone();
        let log_path = home.events_file();
        let stats = Arc::new(FeedStats::default());
        let state = State {
            events: EventLog::at_end(&log_path),
            log_path,
            reader,
            hub,
            failed,
            overview: Value::Null,
            overview_key: Value::Null,
            daemons: Value::Null,
            daemons_key: Vec::new(),
            dispatches: HashMap::new(),
            generation: 0,
            last_index: None,
            schedules_key: None,
            followers: Vec::new(),
            logs_more: false,
            next_key: 0,
            stale: true,
            stats: stats.clone(),
            home,
            tx: tx.clone(),
            watches: Vec::new(),
        };
        std::thread::Builder::new()
            .name("api-feed".into())
            .spawn(move || state.run(rx))
            .map_err(|e| crate::base::error::Error::other(format!("cannot start the api feed thread: {e}")))?;
        Ok(Feed {
            tx,
            #[cfg(test)]
            stats,
        })
    }

    /// Hands a stream to the feed (which adds it to the hub).
    pub(crate) fn join(&self, join: Join) -> bool {
        self.tx.send(Msg::Join(join)).is_ok()
    }
}

/// Watches what the streams carry: `coordination/` and `run/` recursively, the task output logs.
fn watch_home(home: &crate::store::home::Home, tx: &Sender<Msg>) -> crate::base::error::Result<Vec<watch::Watcher>> {
    let mut watches = Vec::new();
    let coordination = vec![home.coordination(), home.run_dir()];
    let existing: Vec<PathBuf> = coordination.into_iter().filter(|p| p.is_dir()).collect();
    if !existing.is_empty() {
        let t = tx.clone();
        watches.push(watch::watch(&existing, Depth::Recursive, move |_| t.send(Msg::Changed).is_ok())?);
    }
    let logs = home.worker_logs();
    if std::fs::create_dir_all(&logs).is_ok() {
        let t = tx.clone();
        watches.push(watch::watch(&[logs], Depth::Flat, move |_| t.send(Msg::LogsChanged).is_ok())?);
    }
    Ok(watches)
}

/// The follow position in the event log: which file (device, inode) and how far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    dev: u64,
    ino: u64,
    offset: u64,
}

impl Position {
    fn id(&self) -> String {
        format!("{}-{}", self.ino, self.offset)
    }
}

/// Parses an event id (`<inode>-<offset>`).
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ino, off) = id.trim().split_once('-')?;
    Some((ino.parse().ok()?, off.parse().ok()?))
}

/// One event-log line read, with the id of the position after it.
struct Line {
    id: String,
    event: Event,
}

/// Follows the event log.
struct EventLog {
    pos: Option<Position>,
}

impl EventLog {
    fn at_end(path: &Path) -> EventLog {
        let pos = crate::store::open::read(path).and_then(|f| f.metadata()).ok().map(|m| Position {
            dev: m.dev(),
            ino: m.ino(),
            offset: m.len(),
        });
        EventLog { pos }
    }

    /// The lines appended since the last call (the rest of a rotated file first).
    fn read_new(&mut self, path: &Path) -> Vec<Line> {
        let mut out = Vec::new();
        let Ok(cur) = crate::store::open::read(path) else { return out };
        let Ok(meta) = cur.metadata() else { return out };
        let now = Position { dev: meta.dev(), ino: meta.ino(), offset: 0 };
        match self.pos {
            Some(p) if p.dev == now.dev && p.ino == now.ino => {
                let start = if meta.len() < p.offset { 0 } else { p.offset };
                let end = read_lines(&cur, now, start, u64::MAX, &mut out);
                self.pos = Some(Position { offset: end, ..now });
            }
            Some(p) => {
                // Rotated: the rest of the old file (wherever it went), then the new one.
                if let Some((_, old)) = find_rotated(path, p.dev, p.ino) {
                    read_lines(&old, p, p.offset, u64::MAX, &mut out);
                }
                let end = read_lines(&cur, now, 0, u64::MAX, &mut out);
                self.pos = Some(Position { offset: end, ..now });
            }
            None => {
                let end = read_lines(&cur, now, 0, u64::MAX, &mut out);
                self.pos = Some(Position { offset: end, ..now });
            }
        }
        out
    }

    /// What a stream resuming after `last_id` missed, up to the follow position; None when the
    /// position is unknown (its file gone) or too far back.
    fn catch_up(&self, path: &Path, last_id: &str) -> Option<Vec<Line>> {
        let (ino, offset) = parse_id(last_id)?;
        let pos = self.pos?;
        let mut out = Vec::new();
        if ino == pos.ino {
            if offset > pos.offset || pos.offset - offset > MAX_CATCH_UP {
                return None;
            }
            let f = open_same(path, pos.dev, pos.ino)?;
            read_lines(&f, pos, offset, pos.offset, &mut out);
            return Some(out);
        }
        // The stream's file was rotated since: it, then each newer copy, then the current file.
        let (n, old) = find_rotated(path, pos.dev, ino)?;
        let mut budget = old.metadata().ok()?.len().saturating_sub(offset);
        let mut files = vec![(old, Position { dev: pos.dev, ino, offset: 0 }, offset)];
        for k in (1..n).rev() {
            let f = crate::store::open::read(&crate::store::rotation::rotated_names(path, k).0).ok()?;
            let m = f.metadata().ok()?;
            budget += m.len();
            files.push((f, Position { dev: m.dev(), ino: m.ino(), offset: 0 }, 0));
        }
        budget += pos.offset;
        if budget > MAX_CATCH_UP {
            return None;
        }
        for (f, p, from) in &files {
            read_lines(f, *p, *from, u64::MAX, &mut out);
        }
        let cur = open_same(path, pos.dev, pos.ino)?;
        read_lines(&cur, pos, 0, pos.offset, &mut out);
        Some(out)
    }
}

/// The event log's file with this identity: the current one or a rotated (plain) copy.
fn open_same(path: &Path, dev: u64, ino: u64) -> Option<File> {
    let f = crate::store::open::read(path).ok()?;
    let m = f.metadata().ok()?;
    if m.dev() == dev && m.ino() == ino {
        return Some(f);
    }
    find_rotated(path, dev, ino).map(|(_, f)| f)
}

/// The rotated copy (`path.N`) with this identity, and N.
fn find_rotated(path: &Path, dev: u64, ino: u64) -> Option<(u32, File)> {
    for n in 1..=ROTATED_SEARCHED {
        let Ok(f) = crate::store::open::read(&crate::store::rotation::rotated_names(path, n).0) else { continue };
        let Ok(m) = f.metadata() else { continue };
        if m.dev() == dev && m.ino() == ino {
            return Some((n, f));
        }
    }
    None
}

/// Reads the complete lines of `f` between `from` and `to` (or its end), each with the id of
/// the position after it; returns the offset after the last complete line. Lines that are not
/// events are skipped (counted by the readers that report them).
fn read_lines(mut f: &File, file: Position, from: u64, to: u64, out: &mut Vec<Line>) -> u64 {
    let Ok(len) = f.metadata().map(|m| m.len()) else { return from };
    let end = len.min(to);
    if end <= from || f.seek(SeekFrom::Start(from)).is_err() {
        return from;
    }
    let mut buf = Vec::with_capacity((end - from).min(MAX_CATCH_UP) as usize);
    if f.take(end - from).read_to_end(&mut buf).is_err() {
        return from;
    }
    let Some(last) = buf.iter().rposition(|b| *b == b'\n') else { return from };
    let mut at = from;
    for line in buf[..=last].split_inclusive(|b| *b == b'\n') {
        at += line.len() as u64;
        if let Ok(event) = serde_json::from_slice::<Event>(line) {
            out.push(Line { id: Position { offset: at, ..file }.id(), event });
        }
    }
    at
}

/// One task output stream followed.
struct Follower {
    key: u64,
    /// When it started: a dispatch without a record yet is waited for [`RECORD_WAIT`] at most.
    since: Instant,
    dispatch_id: String,
    path: PathBuf,
    offset: u64,
}

/// A dispatch record as last broadcast.
struct Seen {
    entry: Arc<crate::ops::status::SpecEntry>,
    status: &'static str,
    stage: &'static str,
    generation: u64,
}

struct State {
    log_path: PathBuf,
    events: EventLog,
    reader: Arc<StatusReader>,
    hub: Hub,
    /// The failures of the last hour, shared with `GET /overview`.
    failed: Arc<overview::FailedWindow>,
    overview: Value,
    overview_key: Value,
    daemons: Value,
    daemons_key: Vec<(Value, Value, Value, Value)>,
    /// Each dispatch's record and (status, stage) as last broadcast.
    dispatches: HashMap<String, Seen>,
    /// Counts refreshes of `dispatches`: an entry not marked with the current one was removed.
    generation: u64,
    /// The dispatch index they were taken from.
    last_index: Option<Arc<Vec<Arc<crate::ops::status::SpecEntry>>>>,
    schedules_key: Option<(u64, u64, u64, i128)>,
    followers: Vec<Follower>,
    /// A follower has more to send than one pass sends: the feed continues after [`LOG_CONTINUE`].
    logs_more: bool,
    next_key: u64,
    /// No stream was open at the last due refresh, so none was made: the first stream to join
    /// brings the state up to date first ([`State::wake_up`]).
    stale: bool,
    stats: Arc<FeedStats>,
    home: crate::store::home::Home,
    /// For the watches' callbacks.
    tx: Sender<Msg>,
    /// The file watches, held only while a stream is open: with none, inotify's events would
    /// only wake this thread for nothing (a thread switch per file a task's dispatch writes).
    watches: Vec<watch::Watcher>,
}

impl State {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut last = Instant::now();
        let mut last_logs = last;
        let mut next_periodic = last + PERIODIC;
        let mut dirty = false;
        let mut logs = false;
        loop {
            let more = self.logs_more;
            let mut deadline = next_periodic;
            if dirty {
                deadline = deadline.min(last + MIN_GAP);
            }
            if logs {
                deadline = deadline.min(last_logs + MIN_GAP);
            }
            if more {
                deadline = deadline.min(last_logs + LOG_CONTINUE);
            }
            let first = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Everything already waiting is handled in one pass: a burst of writes costs one.
            for m in first.into_iter().chain(rx.try_iter().collect::<Vec<_>>()) {
                match m {
                    Msg::Changed => dirty = true,
                    Msg::LogsChanged => logs = true,
                    // A new stream starts from the state already broadcast; what changed since
                    // reaches it with the next refresh, like every other stream.
                    Msg::Join(j) => self.join(j),
                }
            }
            let now = Instant::now();
            if (dirty && now >= last + MIN_GAP) || now >= next_periodic {
                if self.hub.open_streams() == 0 {
                    // Nobody reads the streams: every change would be computed for nobody (the
                    // status views, the dispatch index, the process scan of each refresh).
                    self.stale = true;
                    self.watches.clear();
                    self.stats.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    self.refresh(false);
                    self.follow_logs();
                }
                dirty = false;
                logs = false;
                last = now;
                last_logs = now;
                next_periodic = now + PERIODIC;
            } else if (logs && now >= last_logs + MIN_GAP) || (self.logs_more && now >= last_logs + LOG_CONTINUE) {
                // Task output is throttled like the rest: a busy log costs ten passes a second.
                self.follow_logs();
                logs = false;
                last_logs = now;
            }
        }
    }

    /// The current follow position's id (empty before the log exists).
    fn position_id(&self) -> String {
        self.events.pos.map(|p| p.id()).unwrap_or_default()
    }

    fn status_message(&self, id: &str) -> Message {
        let redacted = json!({
            "status": super::routes::redact_file_errors(self.overview["status"].clone()),
            "scheduler": super::routes::redact_file_errors(self.overview["scheduler"].clone()),
            "failed_1h": self.overview["failed_1h"],
        });
        Message {
            full: encode(id, "status", &self.overview.to_string()),
            redacted: Some(encode(id, "status", &redacted.to_string())),
        }
    }

    fn event_message(line: &Line) -> Message {
        let e = &line.event;
        let redacted = json!({"id": e.id, "timestamp": crate::base::clock::format_ts(e.timestamp),
            "type": e.event_type.as_str(), "severity": e.severity.as_str(), "source": e.source});
        Message {
            full: encode(&line.id, "event", &serde_json::to_string(e).unwrap_or_default()),
            redacted: Some(encode(&line.id, "event", &redacted.to_string())),
        }
    }

    /// Reads what changed and broadcasts it. `quiet`: only remember (the first pass).
    fn refresh(&mut self, quiet: bool) {
        self.stats.refreshes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for line in self.events.read_new(&self.log_path) {
            if !quiet {
                self.hub.broadcast(Self::event_message(&line));
            }
        }
        let id = self.position_id();
        let ov = overview::overview(&self.reader, &self.failed);
        let key = overview::overview_key(&ov);
        if key != self.overview_key {
            self.overview = ov;
            self.overview_key = key;
            if !quiet {
                self.hub.broadcast(self.status_message(&id));
            }
        } else {
            self.overview = ov;
        }
        let daemons = overview::daemons(&self.reader);
        let dkey = overview::daemons_key(&daemons);
        let daemons_changed = dkey != self.daemons_key;
        self.daemons = daemons;
        if daemons_changed {
            self.daemons_key = dkey;
            if !quiet {
                self.hub.broadcast(Message { full: encode(&id, "daemons", &self.daemons.to_string()), redacted: None });
            }
        }
        // The reader hands back the same index while no record changed: nothing to compare then.
        if let Ok(all) = self.reader.dispatches()
            && !self.last_index.as_ref().is_some_and(|l| Arc::ptr_eq(l, &all))
        {
            self.last_index = Some(all.clone());
            self.generation += 1;
            let generation = self.generation;
            // The reader hands back the same `Arc` for a record whose file did not change, so an
            // unchanged record costs one lookup, no copy.
            let mut changed: Vec<Value> = Vec::new();
            let before = self.dispatches.len();
            let mut known = 0;
            for d in all.iter() {
                let key = (d.record.status().as_str(), d.bucket.dir_name());
                if let Some(seen) = self.dispatches.get_mut(&d.record.dispatch_id) {
                    known += 1;
                    seen.generation = generation;
                    if Arc::ptr_eq(&seen.entry, d) {
                        continue;
                    }
                    seen.entry = d.clone();
                    if (seen.status, seen.stage) == key {
                        continue;
                    }
                    (seen.status, seen.stage) = key;
                } else {
                    let seen = Seen { entry: d.clone(), status: key.0, stage: key.1, generation };
                    self.dispatches.insert(d.record.dispatch_id.clone(), seen);
                }
                if changed.len() <= MAX_LISTED_CHANGES {
                    changed.push(
                        json!({"dispatch_id": d.record.dispatch_id, "task_id": d.record.task_id, "status": key.0, "stage": key.1}),
                    );
                }
            }
            // Records that went: only looked for when some did.
            if known < before {
                self.dispatches.retain(|id, seen| {
                    if seen.generation == generation {
                        return true;
                    }
                    if changed.len() <= MAX_LISTED_CHANGES {
                        changed.push(json!({"dispatch_id": id, "task_id": null, "status": "removed", "stage": null}));
                    }
                    false
                });
            }
            if !quiet && !changed.is_empty() {
                let body = if changed.len() > MAX_LISTED_CHANGES {
                    json!({"changed": [], "reload": true})
                } else {
                    json!({"changed": changed, "reload": false})
                };
                self.hub.broadcast(Message { full: encode(&id, "dispatches", &body.to_string()), redacted: None });
            }
        }
        let sched = std::fs::metadata(self.reader.store().path(crate::store::files::SCHEDULES))
            .ok()
            .map(|m| (m.dev(), m.ino(), m.len(), m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128));
        if sched != self.schedules_key {
            self.schedules_key = sched;
            if !quiet {
                self.hub.broadcast(Message { full: encode(&id, "schedules", "{}"), redacted: None });
            }
        }
    }

    /// Brings the state up to date without broadcasting (no stream was open since the last
    /// refresh): the event log is followed from its end, so a stream resuming from a
    /// `Last-Event-ID` catches up from the file up to there, then gets the broadcasts after it.
    fn wake_up(&mut self) {
        if self.watches.is_empty() {
            match watch_home(&self.home, &self.tx) {
                Ok(w) => self.watches = w,
                // The periodic refresh still runs: changes reach the streams within PERIODIC.
                Err(e) => tracing::warn!("the API's event streams cannot watch the home: {e}"),
            }
        }
        self.events = EventLog::at_end(&self.log_path);
        self.refresh(true);
        self.stale = false;
    }

    /// A new stream: what it missed (or everything current), then it joins the broadcasts.
    fn join(&mut self, j: Join) {
        let Some(stream) = j.stream else {
            self.hub.release();
            return;
        };
        if self.stale {
            self.wake_up();
        }
        match j.what {
            JoinKind::Main => self.join_main(stream, j.last_id, j.redact),
            JoinKind::Log { dispatch_id, path, offset } => self.join_log(stream, dispatch_id, path, offset),
        }
    }

    fn join_main(&mut self, stream: TcpStream, last_id: Option<String>, redact: bool) {
        let id = self.position_id();
        let missed = last_id.as_deref().and_then(|l| self.events.catch_up(&self.log_path, l));
        let mut first = b"retry: 2000\n\n".to_vec();
        let hello =
            json!({"server_time": crate::base::clock::format_ts(chrono::Utc::now()), "resumed": missed.is_some()});
        first.extend(encode("", "hello", &hello.to_string()));
        for line in missed.iter().flatten() {
            let m = Self::event_message(line);
            first.extend(if redact { m.redacted.unwrap_or(m.full) } else { m.full });
        }
        let m = self.status_message(&id);
        first.extend(if redact { m.redacted.unwrap_or(m.full) } else { m.full });
        first.extend(encode(&id, "daemons", &self.daemons.to_string()));
        self.hub.add(Client { stream, first, redact, topic: Topic::Main });
    }

    fn join_log(&mut self, stream: TcpStream, dispatch_id: String, path: PathBuf, offset: Option<u64>) {
        let hub = self.hub.clone();
        self.followers.retain(|f| hub.log_is_live(f.key));
        if self.followers.len() >= MAX_LOG_FOLLOWERS {
            let body = json!({"error": "too many task output streams are followed; retry shortly"});
            let first = encode("", "error", &body.to_string());
            self.hub.add(Client { stream, first, redact: false, topic: Topic::Log(u64::MAX) });
            // Ends it once the message is written.
            self.hub.to_log(u64::MAX, Vec::new(), true);
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let start = offset.unwrap_or(size.saturating_sub(LOG_CHUNK)).min(size);
        self.hub.add(Client { stream, first: b"retry: 2000\n\n".to_vec(), redact: false, topic: Topic::Log(key) });
        self.followers.push(Follower { key, since: Instant::now(), dispatch_id, path, offset: start });
        self.follow_logs();
    }

    /// Sends each followed output what was appended (at most [`LOG_CHUNKS_PER_PASS`] chunks);
    /// ends the streams of dispatches that ended once everything is sent, and stops following
    /// streams whose client left. Sets `logs_more` when a stream has more to send.
    fn follow_logs(&mut self) {
        self.logs_more = false;
        let hub = self.hub.clone();
        // A closed stream's follower goes: it must not hold a place nor cost reads.
        self.followers.retain(|f| hub.log_is_live(f.key));
        if self.followers.is_empty() {
            return;
        }
        let mut more = false;
        // Only the followed dispatches are looked up, in the map the last refresh keeps.
        let dispatches = &self.dispatches;
        self.followers.retain_mut(|f| {
            let mut sent = 0;
            let mut at_end = false;
            while sent < LOG_CHUNKS_PER_PASS {
                let (data, next) = read_chunk(&f.path, f.offset);
                if next == f.offset {
                    at_end = true;
                    break;
                }
                let body = json!({"offset": f.offset, "next_offset": next, "data": data});
                hub.to_log(f.key, encode(&next.to_string(), "log", &body.to_string()), false);
                f.offset = next;
                sent += 1;
            }
            if !at_end {
                more = true;
                return true;
            }
            let status = dispatches.get(&f.dispatch_id).map(|d| d.status);
            // No record yet: the worker is about to write it.
            let running = match status {
                Some(s) => matches!(s, "starting" | "running"),
                None => f.since.elapsed() < RECORD_WAIT,
            };
            let status = status.unwrap_or("unknown");
            if !running {
                hub.to_log(f.key, encode("", "end", &json!({"status": status}).to_string()), true);
            }
            running
        });
        self.logs_more = more;
    }
}

/// Up to [`LOG_CHUNK`] bytes of `path` from `offset` as text, and the offset after them (only
/// whole UTF-8 characters unless the chunk is full).
pub(crate) fn read_chunk(path: &Path, offset: u64) -> (String, u64) {
    let Ok(mut f) = crate::store::open::read(path) else { return (String::new(), offset) };
    let Ok(len) = f.metadata().map(|m| m.len()) else { return (String::new(), offset) };
    if len <= offset || f.seek(SeekFrom::Start(offset)).is_err() {
        return (String::new(), offset);
    }
    let mut buf = Vec::new();
    if f.take(LOG_CHUNK.min(len - offset)).read_to_end(&mut buf).is_err() {
        return (String::new(), offset);
    }
    // Keep a character cut at the end for the next read.
    let cut = match std::str::from_utf8(&buf) {
        Ok(_) => buf.len(),
        Err(e) if e.error_len().is_none() && buf.len() as u64 == LOG_CHUNK => buf.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => buf.len(),
    };
    buf.truncate(cut);
    let next = offset + buf.len() as u64;
    (String::from_utf8_lossy(&buf).into_owned(), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(path: &Path, text: &str) {
        use std::io::Write;
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    fn line(n: u32) -> String {
        format!(
            "{}\n",
            json!({"id": format!("evt-{n}"), "timestamp": "2026-12-06T05:00:00Z", "type": "x", "severity": "info",
                "source": "t", "message": format!("m{n}"), "data": {}})
        )
    }

    fn ids(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.event.id.clone()).collect()
    }

    #[test]
    fn the_follower_resumes_by_id_across_a_rotation_without_loss_or_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dashboard-events.jsonl");
        append(&path, &line(1));
        let mut log = EventLog::at_end(&path);
        append(&path, &format!("{}{}", line(2), line(3)));
        let got = log.read_new(&path);
        assert_eq!(ids(&got), ["evt-2", "evt-3"]);
        let after_2 = got[0].id.clone();
        // A client that saw evt-2 resumes with evt-3 only.
        assert_eq!(ids(&log.catch_up(&path, &after_2).unwrap()), ["evt-3"]);
        // Rotation with a line the follower has not read yet in the old file.
        append(&path, &line(4));
        crate::store::rotation::rotate_file(&path, 3).unwrap();
        append(&path, &line(5));
        assert_eq!(ids(&log.read_new(&path)), ["evt-4", "evt-5"]);
        assert_eq!(ids(&log.catch_up(&path, &after_2).unwrap()), ["evt-3", "evt-4", "evt-5"]);
        assert!(log.catch_up(&path, "999999-0").is_none(), "an unknown file: start afresh");
        assert!(log.catch_up(&path, "garbage").is_none());
        // A half-written line waits for its newline.
        append(&path, "{\"id\":\"evt-6\"");
        assert!(log.read_new(&path).is_empty());
    }

    /// With no stream open, a change makes no refresh (the status views, the dispatch index, a
    /// process scan — for nobody); the first stream to join gets a fresh state.
    #[test]
    fn no_refresh_is_made_while_no_stream_is_open() {
        use std::sync::atomic::Ordering::Relaxed;
        let (_dir, store) = crate::store::fresh_store();
        let reader = Arc::new(StatusReader::new(store.clone(), crate::store::config::Config::default()));
        let hub = Hub::start().unwrap();
        let feed = Feed::start(reader, hub.clone(), Arc::new(overview::FailedWindow::default())).unwrap();
        let wait = |what: &str, f: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !f() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        store
            .emit(
                crate::store::events::EventKind::DaemonFailed,
                crate::store::events::Severity::Critical,
                "x",
                Value::Null,
            )
            .unwrap();
        wait("a due refresh", &|| feed.stats.skipped.load(Relaxed) >= 1);
        assert_eq!(feed.stats.refreshes.load(Relaxed), 0, "nothing computed for nobody");
        // A stream joins: one refresh first, then it gets the state.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(hub.reserve());
        assert!(feed.join(Join { stream: Some(server), last_id: None, redact: false, what: JoinKind::Main }));
        wait("the wake-up refresh", &|| feed.stats.refreshes.load(Relaxed) == 1);
        let mut first = [0u8; 4096];
        client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let n = (&client).read(&mut first).unwrap();
        let text = String::from_utf8_lossy(&first[..n]);
        assert!(text.contains("event: hello"), "{text}");
        // With the stream open, a change is refreshed and broadcast.
        store
            .emit(
                crate::store::events::EventKind::DaemonFailed,
                crate::store::events::Severity::Critical,
                "y",
                Value::Null,
            )
            .unwrap();
        wait("a refresh for the open stream", &|| feed.stats.refreshes.load(Relaxed) >= 2);
        hub.stop();
    }

    #[test]
    fn a_chunk_never_splits_a_character() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.out");
        std::fs::write(&p, &"aé".as_bytes()[..2]).unwrap();
        assert_eq!(read_chunk(&p, 0), ("a".to_string(), 1));
        std::fs::write(&p, "aé").unwrap();
        assert_eq!(read_chunk(&p, 1), ("é".to_string(), 3));
    }
}
