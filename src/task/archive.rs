//! The task archive `coordination/task-archive.jsonl`: finished tasks moved out of the live queue,
//! one task per line, append-only. The coordinator appends (and fdatasyncs) a finished task before
//! it writes the queue without it, so a crash in between leaves the task in both places; readers
//! prefer the queue, and within the archive the last line of a task id wins (a retried task comes
//! back to the queue and is archived again when it finishes).

use super::model::{Task, TaskStatus};
use crate::error::{Error, Result};
use crate::files::TASK_ARCHIVE;
use crate::store::{Store, jsonl};
use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

/// Appends finished tasks with one `write`, then fdatasync.
pub fn append(store: &Store, tasks: &[&Task]) -> Result<()> {
    match append_unsynced(store, tasks)? {
        Some(f) => f.sync_data().map_err(|e| Error::io(store.path(TASK_ARCHIVE), "fsync", e)),
        None => Ok(()),
    }
}

/// Appends finished tasks with one `write` and returns the file, not yet flushed, for a caller
/// that flushes it together with other files (the coordinator: with the queue that drops them,
/// which it renames only once both are durable). None when there was nothing to append.
pub fn append_unsynced(store: &Store, tasks: &[&Task]) -> Result<Option<std::fs::File>> {
    if tasks.is_empty() {
        return Ok(None);
    }
    let path = store.path(TASK_ARCHIVE);
    let mut buf = Vec::with_capacity(tasks.len() * 600);
    for t in tasks {
        serde_json::to_writer(&mut buf, t).map_err(|e| Error::other(format!("cannot encode task: {e}")))?;
        buf.push(b'\n');
    }
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(crate::store::atomic::FILE_MODE)
        .open(&path)
        .map_err(|e| Error::io(&path, "open for append", e))?;
    f.write_all(&buf).map_err(|e| Error::io(&path, "append to", e))?;
    Ok(Some(f))
}

/// The last archived record of a task.
pub fn find(store: &Store, task_id: &str) -> Result<Option<Task>> {
    let path = store.path(TASK_ARCHIVE);
    let needle = format!("\"task_id\":{}", serde_json::Value::String(task_id.to_string()));
    let mut found = None;
    jsonl::for_each_line(&path, |_, line| {
        // Cheap pre-filter before parsing.
        if memchr_contains(line, needle.as_bytes())
            && let Ok(t) = serde_json::from_slice::<Task>(line)
            && t.task_id == task_id
        {
            found = Some(t);
        }
        true
    })?;
    Ok(found)
}

/// The last archived status of each of `ids` that is in the archive.
pub fn statuses(store: &Store, ids: &HashSet<String>) -> Result<HashMap<String, TaskStatus>> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    jsonl::for_each_line(&store.path(TASK_ARCHIVE), |_, line| {
        if let Ok(t) = serde_json::from_slice::<Task>(line)
            && ids.contains(&t.task_id)
        {
            out.insert(t.task_id, t.state.status());
        }
        true
    })?;
    Ok(out)
}

/// Every archived task (last record of each id), oldest first; also the count of bad lines.
pub fn all(store: &Store) -> Result<(Vec<Task>, usize)> {
    let read: jsonl::JsonlRead<Task> = jsonl::read(&store.path(TASK_ARCHIVE))?;
    let mut pos: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Option<Task>> = Vec::with_capacity(read.records.len());
    for t in read.records {
        if let Some(&i) = pos.get(&t.task_id) {
            out[i] = None;
        }
        pos.insert(t.task_id.clone(), out.len());
        out.push(Some(t));
    }
    Ok((out.into_iter().flatten().collect(), read.bad_lines.len()))
}

fn memchr_contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}
