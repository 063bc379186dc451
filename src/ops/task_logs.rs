//! `cortex task logs`: a task's output by task id. Each attempt of a task is one dispatch, and
//! each dispatch writes `agents/logs/workers/<dispatch>.out` and `.err`; this finds the attempt's
//! file from the task's record and prints it, or follows it while the task runs: woken by the
//! library's inotify watcher ([`crate::base::watch`]) on the workers' log directory and on
//! `coordination/` (the queue's snapshot and journal, where the task's state changes), never by
//! a timer. Following goes on across retries (a new attempt's log continues after a separator
//! line) and ends when the task reaches a final state.

use crate::base::error::{Error, Result};
use crate::base::watch::{self, Depth};
use crate::domain::task::dispatches::is_valid_id;
use crate::domain::task::model::Task;
use crate::domain::task::ops::find_task;
use crate::store::Store;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Which output of which attempt, and whether to follow it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogRequest {
    /// 1-based; None: the latest attempt (and, when following, each later one).
    pub attempt: Option<usize>,
    /// Standard error instead of standard output.
    pub stderr: bool,
    /// Keep printing while the task runs.
    pub follow: bool,
}

/// What [`task_logs`] hands its caller, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogItem {
    /// One line of output, without its newline (a last line without one is handed over too).
    Line(String),
    /// A new attempt's log begins (while following across retries, or first of all).
    Attempt { number: usize, dispatch_id: String },
}

/// The attempt's log file, or why there is none.
fn attempt_log(store: &Store, task: &Task, number: usize, stderr: bool) -> Result<PathBuf> {
    let id = &task.dispatches[number - 1];
    // A queue edited by hand could name any path; only a real dispatch id names a log of ours.
    if !is_valid_id(id) {
        return Err(Error::refused(format!(
            "{}: task {}, field dispatches[{}] is not a dispatch id; run `cortex validate`",
            store.home().task_queue().display(),
            task.task_id,
            number - 1
        )));
    }
    let home = store.home();
    Ok(if stderr { home.dispatch_stderr(id) } else { home.dispatch_stdout(id) })
}

fn load(store: &Store, task_id: &str) -> Result<Task> {
    find_task(store, task_id)?
        .ok_or_else(|| Error::refused(format!("no task {task_id} (see `cortex task list --all`)")))
}

/// Bytes read from a log at once.
const READ_BLOCK: usize = 64 * 1024;
/// A line longer than this (output without newlines) is printed in pieces of this size.
const MAX_LINE: usize = 1024 * 1024;

/// An open log read from where the last read stopped, split into lines.
struct Reader {
    path: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
}

impl Reader {
    fn new(path: PathBuf) -> Reader {
        Reader { path, file: None, partial: Vec::new() }
    }

    /// Hands over the complete lines written since the last call (and the unfinished last line
    /// with `finish`); false when `out` wants to stop.
    fn drain(&mut self, finish: bool, out: &mut impl FnMut(LogItem) -> bool) -> Result<bool> {
        if self.file.is_none() {
            match crate::store::open::read(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::store::open::refuse_link(&self.path, "open", e)),
            }
        }
        if self.file.is_none() {
            return Ok(true);
        }
        // Block by block: memory stays bounded whatever the size of the log.
        let mut block = vec![0u8; READ_BLOCK];
        while let Some(f) = self.file.as_mut() {
            let n = match f.read(&mut block) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&self.path, "read", e)),
            };
            self.partial.extend_from_slice(&block[..n]);
            if !self.emit_lines(out) {
                return Ok(false);
            }
        }
        if finish && !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            return Ok(out(LogItem::Line(line)));
        }
        Ok(true)
    }

    /// Hands over the complete lines in `partial`, and a line longer than [`MAX_LINE`] in pieces;
    /// false when `out` wants to stop.
    fn emit_lines(&mut self, out: &mut impl FnMut(LogItem) -> bool) -> bool {
        let mut start = 0;
        let mut go_on = true;
        while let Some(i) = memchr::memchr(b'\n', &self.partial[start..]) {
            let line = String::from_utf8_lossy(&self.partial[start..start + i]).into_owned();
            start += i + 1;
            if !out(LogItem::Line(line)) {
                go_on = false;
                break;
            }
        }
        self.partial.drain(..start);
        while go_on && self.partial.len() >= MAX_LINE {
            // Cut on a character boundary (at most 3 bytes back).
            let mut cut = MAX_LINE;
            while cut > MAX_LINE - 4 && std::str::from_utf8(&self.partial[..cut]).is_err() {
                cut -= 1;
            }
            if std::str::from_utf8(&self.partial[..cut]).is_err() {
                cut = MAX_LINE;
            }
            let piece: Vec<u8> = self.partial.drain(..cut).collect();
            go_on = out(LogItem::Line(String::from_utf8_lossy(&piece).into_owned()));
        }
        go_on
    }
}

/// Prints (through `out`) a task's output as asked. Without `follow`: the attempt's log as it is
/// now. With it: what follows too, until the task is final (or, for a given `attempt`, until a
/// later attempt began), or `out` returns false.
pub fn task_logs(store: &Store, task_id: &str, req: LogRequest, mut out: impl FnMut(LogItem) -> bool) -> Result<()> {
    let task = load(store, task_id)?;
    if req.attempt == Some(0) {
        return Err(Error::refused("--attempt counts from 1"));
    }
    if !req.follow {
        let n = task.dispatches.len();
        let number = req.attempt.unwrap_or(n);
        if n == 0 {
            return Err(Error::refused(format!("task {task_id} has not run yet ({})", task.status().as_str())));
        }
        if number > n {
            return Err(Error::refused(format!("task {task_id} has {n} attempt(s); there is no attempt {number}")));
        }
        let path = attempt_log(store, &task, number, req.stderr)?;
        let mut reader = Reader::new(path);
        reader.drain(true, &mut out)?;
        return Ok(());
    }
    follow(store, task_id, task, req, out)
}

fn follow(
    store: &Store,
    task_id: &str,
    mut task: Task,
    req: LogRequest,
    mut out: impl FnMut(LogItem) -> bool,
) -> Result<()> {
    let home = store.home();
    let logs = home.worker_logs();
    crate::store::atomic::create_dir_all(&logs)?;
    let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
    let _watcher = watch::watch(&[logs.clone(), home.coordination()], Depth::Flat, move |p| tx.send(p).is_ok())?;
    // The attempt being printed and its reader.
    let mut current: Option<(usize, Reader)> = None;
    loop {
        // The task's state is read before its log: a final state read first means the log
        // drained after it is complete (the process ended before its end was recorded).
        let n = task.dispatches.len();
        let last_wanted = req.attempt.unwrap_or(n);
        let final_state = task.status().is_terminal();
        loop {
            let next = match &current {
                None if req.attempt.is_some_and(|a| a <= n) || (req.attempt.is_none() && n > 0) => last_wanted,
                None => break,
                Some((number, _)) if *number < last_wanted => number + 1,
                Some(_) => break,
            };
            if let Some((_, reader)) = current.as_mut()
                && !reader.drain(true, &mut out)?
            {
                return Ok(());
            }
            let dispatch_id = task.dispatches[next - 1].clone();
            let path = attempt_log(store, &task, next, req.stderr)?;
            if !out(LogItem::Attempt { number: next, dispatch_id }) {
                return Ok(());
            }
            current = Some((next, Reader::new(path)));
        }
        let moved_on = req.attempt.is_some_and(|a| n > a);
        let done = final_state || moved_on;
        if let Some((_, reader)) = current.as_mut()
            && !reader.drain(done, &mut out)?
        {
            return Ok(());
        }
        if done {
            return Ok(());
        }
        // Wait for a change: a log written or created, or the queue (the task's state).
        let mut state_changed = false;
        let first = rx.recv().map_err(|_| Error::other("the file watch of `cortex task logs -f` stopped"))?;
        for p in std::iter::once(first).chain(rx.try_iter()) {
            state_changed |= is_task_state_file(&p, &logs);
        }
        if state_changed {
            task = load(store, task_id)?;
        }
    }
}

/// A change under `coordination/` that can be the task's state: the queue's snapshot or
/// journal, the intake, the archive (not heartbeats, events or locks).
fn is_task_state_file(p: &Path, logs: &Path) -> bool {
    if p.starts_with(logs) {
        return false;
    }
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("task-"))
}
