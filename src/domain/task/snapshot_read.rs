//! Reading the queue's snapshot (`task-queue.json`) one task at a time, in the layout
//! [`super::queue_file::encode`] writes: the header fields one per line, then one task per line.
//! Each task is checked against the queue schema's `$defs/task` and decoded on its own, so a
//! reader holds one line at a time, never a `serde_json::Value` of the whole document (several
//! times the file's size), and a reader that keeps little of each task (the integration daemon,
//! the metrics) keeps little in all.
//!
//! A file in any other layout (written by hand, pretty-printed by a tool, from before the
//! journal) or with any line that is not as expected is not read here: [`stream`] says so and
//! the caller reads it whole ([`crate::store::Store::load_snapshot`]), which accepts any valid
//! document and names the problem of a bad one (with its quarantined copy) as before.

use super::journal::Holder;
use super::model::{Task, TaskQueue};
use crate::base::error::{Error, Result};
use crate::store::files::TASK_QUEUE;
use std::io::BufRead;
use std::path::Path;

/// What [`stream`] read.
pub(crate) enum Streamed {
    /// The header (every field but `tasks`); every task was given to the callback.
    Header(Box<TaskQueue>),
    /// Missing, or not in the streaming layout, or a line that is not as expected: read the
    /// file whole instead (the callback may have been given some tasks: the caller drops them).
    Whole,
}

fn strip<'a>(line: &'a [u8], prefix: &[u8], suffix: &[u8]) -> Option<&'a [u8]> {
    line.strip_prefix(prefix)?.strip_suffix(suffix)
}

/// Streams the snapshot at `path` to `holder`, one task at a time, each with where its line is
/// in the file (see the module documentation).
pub(crate) fn stream(path: &Path, holder: &mut dyn Holder) -> Result<Streamed> {
    let file = match crate::store::open::read(path) {
        Ok(f) => f,
        Err(_) => return Ok(Streamed::Whole),
    };
    holder.snapshot_opened(&file);
    let mut r = std::io::BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::with_capacity(4096);
    // Where the line last read starts in the file.
    let mut at = 0u64;
    let mut read = 0u64;
    let mut next = |line: &mut Vec<u8>, at: &mut u64| -> Result<bool> {
        line.clear();
        let n = r.read_until(b'\n', line).map_err(|e| Error::io(path, "read", e))?;
        *at = read;
        read += n as u64;
        Ok(n > 0)
    };
    if !next(&mut line, &mut at)? || line != b"{\n" {
        return Ok(Streamed::Whole);
    }
    let mut header = b"{".to_vec();
    let empty = loop {
        if !next(&mut line, &mut at)? {
            return Ok(Streamed::Whole);
        }
        match line.as_slice() {
            b"  \"tasks\": [\n" => break false,
            b"  \"tasks\": []\n" => break true,
            l => match strip(l, b"  \"", b",\n") {
                Some(field) => {
                    header.push(b'"');
                    header.extend_from_slice(field);
                    header.push(b',');
                }
                None => return Ok(Streamed::Whole),
            },
        }
    };
    header.extend_from_slice(b"\"tasks\": []}");
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&header) else { return Ok(Streamed::Whole) };
    if !crate::base::schema::check(TASK_QUEUE.schema, &value, 1).is_empty() {
        return Ok(Streamed::Whole);
    }
    let Ok(head) = serde_json::from_value::<TaskQueue>(value) else { return Ok(Streamed::Whole) };
    if !empty {
        loop {
            if !next(&mut line, &mut at)? {
                return Ok(Streamed::Whole);
            }
            let Some(body) = line.strip_prefix(b"    ").and_then(|l| l.strip_suffix(b"\n")) else {
                return Ok(Streamed::Whole);
            };
            let (body, more) = match body.strip_suffix(b",") {
                Some(b) => (b, true),
                None => (body, false),
            };
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return Ok(Streamed::Whole) };
            if !crate::base::schema::check_def(TASK_QUEUE.schema, "task", &value, 1).is_empty() {
                return Ok(Streamed::Whole);
            }
            let Ok(task) = serde_json::from_value::<Task>(value) else { return Ok(Streamed::Whole) };
            holder.put_snapshot_line(task, at + 4, body.len() as u32);
            if !more {
                break;
            }
        }
        if !next(&mut line, &mut at)? || line != b"  ]\n" {
            return Ok(Streamed::Whole);
        }
    }
    if !next(&mut line, &mut at)? || line != b"}\n" || next(&mut line, &mut at)? {
        return Ok(Streamed::Whole);
    }
    Ok(Streamed::Header(Box::new(head)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::task::model::Task;

    struct Lines {
        tasks: Vec<(Task, u64, u32)>,
        file: Option<std::fs::File>,
    }

    impl Holder for Lines {
        fn clear(&mut self) {
            self.tasks.clear();
        }
        fn snapshot_opened(&mut self, file: &std::fs::File) {
            self.file = file.try_clone().ok();
        }
        fn put_snapshot_line(&mut self, task: Task, offset: u64, len: u32) {
            self.tasks.push((task, offset, len));
        }
        fn put(&mut self, task: Task) {
            self.tasks.push((task, 0, 0));
        }
        fn remove(&mut self, _: &str) {}
    }

    fn streamed(bytes: &[u8]) -> Option<(TaskQueue, Vec<Task>)> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("task-queue.json");
        std::fs::write(&p, bytes).unwrap();
        let mut held = Lines { tasks: Vec::new(), file: None };
        match stream(&p, &mut held).unwrap() {
            Streamed::Header(h) => {
                // Each task's line is where the holder was told it is.
                let file = held.file.expect("opened");
                for (t, offset, len) in &held.tasks {
                    let mut buf = vec![0u8; *len as usize];
                    std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, *offset).unwrap();
                    assert_eq!(serde_json::from_slice::<Task>(&buf).unwrap(), *t);
                }
                Some((*h, held.tasks.into_iter().map(|(t, _, _)| t).collect()))
            }
            Streamed::Whole => None,
        }
    }

    #[test]
    fn what_encode_writes_streams_back_equal_and_anything_else_is_read_whole() {
        let p = Path::new("task-queue.json");
        for n in [0, 1, 3] {
            let q = TaskQueue {
                tasks: (0..n).map(|i| Task::sample(&format!("task-{i}"))).collect(),
                intake_offset: 42,
                journal_generation: 7,
                ..TaskQueue::default()
            };
            let bytes = super::super::queue_file::encode(p, &q, None).unwrap();
            let (head, tasks) = streamed(&bytes).expect("streams");
            assert_eq!(tasks, q.tasks);
            assert_eq!(head.intake_offset, 42);
            assert_eq!(head.journal_generation, 7);
            // Pretty-printed by a tool, compact, torn, or a task breaking its schema: read whole.
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert!(streamed(&serde_json::to_vec_pretty(&v).unwrap()).is_none());
            assert!(streamed(&serde_json::to_vec(&v).unwrap()).is_none());
            assert!(streamed(&bytes[..bytes.len() - 3]).is_none());
        }
        let q = TaskQueue { tasks: vec![Task::sample("task-a")], ..TaskQueue::default() };
        let bytes = super::super::queue_file::encode(p, &q, None).unwrap();
        let bad = String::from_utf8(bytes).unwrap().replace("\"task_id\":\"task-a\"", "\"task_id\":5");
        assert!(streamed(bad.as_bytes()).is_none());
        assert!(streamed(b"{\"tasks\": []}").is_none());
    }
}
