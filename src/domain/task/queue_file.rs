//! How `task-queue.json` is encoded for writing. The envelope is pretty-printed and each task is
//! one compact line inside it, so `grep TASK_ID task-queue.json` shows a whole task and a big
//! queue costs a fraction of pretty-printing every field. It is validated part by part: the
//! envelope against the queue's schema, each task against the schema's `$defs/task` — the same
//! check as the whole document's, since the schema puts no constraint across tasks. The
//! coordinator rewrites the queue on every cycle and keeps [`ValidatedTasks`]: a task whose
//! encoding is byte for byte one it validated before is not validated again, so a cycle costs
//! one serialisation of the queue, not a schema walk of every task.

use crate::base::error::{Error, Result};
use crate::domain::task::model::TaskQueue;
use crate::store::Document;
use crate::store::files::{self, CoordFile};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

impl Document for TaskQueue {
    const FILE: &'static CoordFile = files::TASK_QUEUE;

    /// The snapshot and its journal (`task::journal`).
    fn load_custom(store: &crate::store::Store) -> Option<Result<Self>> {
        Some(crate::domain::task::journal::load(store).map(|l| l.queue))
    }

    /// A whole write is a compaction: a new snapshot generation, the journal emptied.
    fn write_custom(&self, store: &crate::store::Store) -> Option<Result<()>> {
        Some(crate::domain::task::journal::write_snapshot(store, self))
    }

    /// One task per line, validated part by part ([`encode`]).
    fn encode_checked(&self, path: &Path) -> Option<Result<Vec<u8>>> {
        Some(encode(path, self, None))
    }
}

/// Encodings of tasks already validated (task id → hash of its encoding), as of the last write.
#[derive(Debug, Default)]
pub(crate) struct ValidatedTasks {
    seen: HashMap<String, u64>,
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn refuse(path: &Path, pointer: String, expected: &str) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        pointer,
        expected: format!("refusing to write: {expected}"),
        quarantined: None,
    }
}

/// The bytes of `queue` as `task-queue.json`, checked against its schema (a violation refuses
/// the write, naming the task's field). With `validated`, tasks encoded as at the last call are
/// not checked again.
pub(crate) fn encode(path: &Path, queue: &TaskQueue, validated: Option<&mut ValidatedTasks>) -> Result<Vec<u8>> {
    encode_with_lines(path, queue, validated, &mut std::iter::empty())
}

/// [`encode`] with more tasks after the queue's, given as their compact JSON lines, written as
/// they are (the coordinator's parked tasks: lines read from a snapshot or journal that was
/// checked, or encoded from a task that was).
pub(crate) fn encode_with_lines<'a>(
    path: &Path,
    queue: &TaskQueue,
    validated: Option<&mut ValidatedTasks>,
    lines: &mut dyn Iterator<Item = Result<std::borrow::Cow<'a, [u8]>>>,
) -> Result<Vec<u8>> {
    let schema = files::TASK_QUEUE.schema;
    let envelope = TaskQueue {
        tasks: Vec::new(),
        updated_at: queue.updated_at,
        intake_offset: queue.intake_offset,
        journal_generation: queue.journal_generation,
        counts: queue.counts.clone(),
    };
    let envelope = serde_json::to_value(&envelope).map_err(|e| Error::encode(path.display().to_string(), e))?;
    if let Some(v) = crate::base::schema::check(schema, &envelope, 1).into_iter().next() {
        return Err(refuse(path, v.pointer, &v.expected));
    }
    let mut seen = HashMap::with_capacity(if validated.is_some() { queue.tasks.len() } else { 0 });
    let previous = validated.as_ref().map(|v| &v.seen);
    let mut out = Vec::with_capacity(64 + queue.tasks.len() * 640);
    // The header first (`journal_generation`, `counts`...), so a reader of the counts reads the
    // file's first bytes only.
    out.extend_from_slice(b"{");
    if let serde_json::Value::Object(fields) = &envelope {
        for (key, value) in fields.iter().filter(|(k, _)| *k != "tasks") {
            out.extend_from_slice(b"\n  ");
            let field = serde_json::to_vec(key).and_then(|k| Ok((k, serde_json::to_vec(value)?)));
            let (k, v) = field.map_err(|e| Error::encode(path.display().to_string(), e))?;
            out.extend_from_slice(&k);
            out.extend_from_slice(b": ");
            out.extend_from_slice(&v);
            out.extend_from_slice(b",");
        }
    }
    out.extend_from_slice(b"\n  \"tasks\": [");
    for (i, task) in queue.tasks.iter().enumerate() {
        let line = serde_json::to_vec(task)
            .map_err(|e| Error::encode(format!("task {} of {}", task.task_id, path.display()), e))?;
        let h = hash(&line);
        if previous.and_then(|p| p.get(&task.task_id)) != Some(&h) {
            let value: serde_json::Value = serde_json::from_slice(&line)
                .map_err(|e| Error::encode(format!("task {} of {}", task.task_id, path.display()), e))?;
            if let Some(v) = crate::base::schema::check_def(schema, "task", &value, 1).into_iter().next() {
                return Err(refuse(path, format!("/tasks/{i}{}", v.pointer), &v.expected));
            }
        }
        if validated.is_some() {
            seen.insert(task.task_id.clone(), h);
        }
        out.extend_from_slice(if i == 0 { b"\n    " } else { b",\n    " });
        out.extend_from_slice(&line);
    }
    let mut any = !queue.tasks.is_empty();
    for line in lines {
        out.extend_from_slice(if any { b",\n    " } else { b"\n    " });
        out.extend_from_slice(&line?);
        any = true;
    }
    out.extend_from_slice(if any { b"\n  ]" } else { b"]" });
    out.extend_from_slice(b"\n}\n");
    if let Some(v) = validated {
        v.seen = seen;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::task::model::{Priority, Task, TaskState};

    fn task(id: &str) -> Task {
        Task {
            description: "d\n\"quoted\"".into(),
            priority: Priority::High,
            worker_type: "analysis-worker".into(),
            command: vec!["sh".into(), "-c".into(), "echo $X".into()],
            budget: 10,
            ..Task::sample(id)
        }
    }

    fn queue(n: usize) -> TaskQueue {
        TaskQueue {
            tasks: (0..n).map(|i| task(&format!("task-{i}"))).collect(),
            updated_at: Some(crate::base::clock::parse_ts("2026-01-01T00:00:00.000000Z").unwrap()),
            intake_offset: 42,
            ..TaskQueue::default()
        }
    }

    #[test]
    fn encodes_one_task_per_line_and_reads_back_equal() {
        let p = Path::new("task-queue.json");
        for n in [0, 1, 3] {
            let q = queue(n);
            let bytes = encode(p, &q, None).unwrap();
            let back: TaskQueue = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(back, q);
            let text = String::from_utf8(bytes).unwrap();
            assert_eq!(text.lines().filter(|l| l.contains("\"task_id\"")).count(), n, "{text}");
            assert!(text.ends_with("\n}\n"));
            // The same document the generic writer validates.
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(crate::base::schema::check(files::TASK_QUEUE.schema, &v, 1).is_empty());
        }
    }

    #[test]
    fn an_invalid_task_is_refused_naming_its_field_even_after_a_valid_write() {
        let p = Path::new("task-queue.json");
        let mut validated = ValidatedTasks::default();
        let mut q = queue(3);
        encode(p, &q, Some(&mut validated)).unwrap();
        // Changed after it was validated: checked again and refused.
        q.tasks[1].task_id = String::new();
        let err = encode(p, &q, Some(&mut validated)).unwrap_err().to_string();
        assert!(err.contains("/tasks/1/task_id"), "{err}");
        q.tasks[1].task_id = "task-1".into();
        q.tasks[2].worker_type = String::new();
        let err = encode(p, &q, Some(&mut validated)).unwrap_err().to_string();
        assert!(err.contains("/tasks/2/worker_type"), "{err}");
    }

    #[test]
    fn only_changed_tasks_are_validated_again() {
        let p = Path::new("task-queue.json");
        let mut validated = ValidatedTasks::default();
        let mut q = queue(2);
        encode(p, &q, Some(&mut validated)).unwrap();
        let before = validated.seen.clone();
        q.tasks[0].state = TaskState::Cancelled {
            started_at: None,
            completed_at: crate::base::clock::parse_ts("2026-01-01T00:00:01.000000Z").unwrap(),
        };
        encode(p, &q, Some(&mut validated)).unwrap();
        assert_ne!(validated.seen["task-0"], before["task-0"]);
        assert_eq!(validated.seen["task-1"], before["task-1"]);
        q.tasks.remove(1);
        encode(p, &q, Some(&mut validated)).unwrap();
        assert!(!validated.seen.contains_key("task-1"), "a task gone from the queue is forgotten");
    }
}
