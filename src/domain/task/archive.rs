//! The task archive `coordination/task-archive.jsonl`: finished tasks moved out of the live queue,
//! one task per line, append-only. The coordinator appends finished tasks and flushes them with the
//! queue that drops them, which it renames only once both are durable, so a crash in between leaves the task in both places (the next
//! coordinator drops it from the queue without appending it again: [`last_ends`]); readers
//! prefer the queue, and within the archive the last line of a task id wins (a retried task comes
//! back to the queue and is archived again when it finishes).

use super::model::{Task, TaskStatus};
use crate::base::error::{Error, Result};
use crate::store::files::TASK_ARCHIVE;
use crate::store::{Store, jsonl};
use std::collections::{HashMap, HashSet};

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
        serde_json::to_writer(&mut buf, t).map_err(|e| Error::encode("task", e))?;
        buf.push(b'\n');
    }
    // Through the JSONL appender: a line a full disk cut short is closed first, so the first
    // task of this append is never glued onto it (and lost to every reader).
    jsonl::append_raw_unsynced(&path, &buf).map(Some)
}

/// The archive's size now (0 when it does not exist): where a following append starts.
pub fn len(store: &Store) -> u64 {
    std::fs::metadata(store.path(TASK_ARCHIVE)).map(|m| m.len()).unwrap_or(0)
}

/// The tasks whose lines stand whole in the archive after byte `from` (a multi-task append that
/// a full disk cut: the lines before the cut are there, and must not be appended again).
pub fn whole_lines_since(store: &Store, from: u64) -> Vec<Task> {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    let read = std::fs::File::open(store.path(TASK_ARCHIVE))
        .and_then(|mut f| f.seek(SeekFrom::Start(from)).and_then(|_| f.read_to_end(&mut bytes)));
    if read.is_err() {
        return Vec::new();
    }
    bytes
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| line.ends_with(b"\n"))
        .filter_map(|line| serde_json::from_slice::<Task>(line).ok())
        .collect()
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
    Ok(last_ends(store, ids)?.into_iter().map(|(id, end)| (id, end.status)).collect())
}

/// What tells one archived end of a task from another: a retried task is archived again with
/// more dispatches, or (failed by its prerequisite, cancelled before it ran) with a new
/// completion time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedEnd {
    pub status: TaskStatus,
    pub dispatches: usize,
    pub completed_at: Option<String>,
}

impl ArchivedEnd {
    pub fn of(t: &Task) -> ArchivedEnd {
        ArchivedEnd {
            status: t.state.status(),
            dispatches: t.dispatches.len(),
            completed_at: t.completed_at().map(str::to_string),
        }
    }
}

/// The last archived end of each of `ids` that is in the archive.
pub fn last_ends(store: &Store, ids: &HashSet<String>) -> Result<HashMap<String, ArchivedEnd>> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    jsonl::for_each_line(&store.path(TASK_ARCHIVE), |_, line| {
        if let Ok(t) = serde_json::from_slice::<Task>(line)
            && ids.contains(&t.task_id)
        {
            out.insert(t.task_id.clone(), ArchivedEnd::of(&t));
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::fresh_store;

    #[test]
    fn a_task_archived_after_a_line_a_full_disk_cut_is_found_not_glued_onto_it() {
        let (_dir, store) = fresh_store();
        let first = Task::sample("task-first");
        append_unsynced(&store, &[&first]).unwrap();
        // An append cut short by a full disk: part of a line, no newline.
        let path = store.path(TASK_ARCHIVE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(br#"{"task_id":"task-cut","descr"#);
        std::fs::write(&path, &bytes).unwrap();
        // The coordinator's append once space is back.
        let next = Task::sample("task-next");
        let f = append_unsynced(&store, &[&next]).unwrap().expect("a file to flush");
        f.sync_data().unwrap();
        assert_eq!(find(&store, "task-next").unwrap().map(|t| t.task_id), Some("task-next".to_string()));
        assert_eq!(find(&store, "task-first").unwrap().map(|t| t.task_id), Some("task-first".to_string()));
        let statuses = statuses(&store, &HashSet::from(["task-next".to_string()])).unwrap();
        assert!(statuses.contains_key("task-next"), "{statuses:?}");
    }

    #[test]
    fn the_whole_lines_of_an_append_a_full_disk_cut_are_found() {
        let (_dir, store) = fresh_store();
        append_unsynced(&store, &[&Task::sample("task-before")]).unwrap();
        let from = len(&store);
        // Two whole lines of a three-task append, then the cut.
        let mut bytes = std::fs::read(store.path(TASK_ARCHIVE)).unwrap();
        for id in ["task-a", "task-b"] {
            bytes.extend_from_slice(&serde_json::to_vec(&Task::sample(id)).unwrap());
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(br#"{"task_id":"task-c","desc"#);
        std::fs::write(store.path(TASK_ARCHIVE), &bytes).unwrap();
        let ids: Vec<String> = whole_lines_since(&store, from).into_iter().map(|t| t.task_id).collect();
        assert_eq!(ids, ["task-a", "task-b"]);
        assert!(whole_lines_since(&store, len(&store)).is_empty());
    }
}
