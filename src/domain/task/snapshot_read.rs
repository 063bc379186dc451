//! Reading the queue's snapshot (`task-queue.json`) one task at a time: the document is parsed
//! as it is read, each element of `tasks` checked against the queue schema's `$defs/task`,
//! decoded and handed to a [`Holder`] with where its text is in the file, so a reader never
//! holds a `serde_json::Value` of the whole document (several times the file's size), and a
//! reader that keeps little of each task (the integration daemon, the metrics, the coordinator's
//! parked tasks) keeps little in all. Any layout is read this way (the writers' one task per
//! line, a pretty-printed or compact document from a tool or from before the journal).
//!
//! A document with any problem (not JSON, a task breaking its schema or its type, a header field
//! breaking the schema) is not read here: [`stream`] says so and the caller reads it whole
//! ([`crate::store::Store::load_snapshot`]), which names the problem and quarantines a copy as
//! before.

use super::journal::Holder;
use super::model::{Task, TaskQueue};
use crate::base::error::{Error, Result};
use crate::store::files::TASK_QUEUE;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::io::Read;
use std::path::Path;

/// What [`stream`] read.
pub(crate) enum Streamed {
    /// The header (every field but `tasks`); every task was given to the holder.
    Header(Box<TaskQueue>),
    /// Missing, or a problem in the document: read the file whole instead (the holder may have
    /// been given some tasks: the caller clears it).
    Whole,
}

/// The document: its fields but `tasks` kept as values, `tasks` streamed to the holder.
struct Document<'h> {
    holder: &'h mut dyn Holder,
    /// The address of the document's first byte (offsets of the tasks' texts are from it).
    base: usize,
}

impl<'de> Visitor<'de> for Document<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the task queue's object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut header = Map::new();
        let mut tasks = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "tasks" {
                if tasks {
                    return Err(de::Error::custom("two \"tasks\" fields"));
                }
                tasks = true;
                map.next_value_seed(Tasks { holder: &mut *self.holder, base: self.base })?;
            } else {
                header.insert(key, map.next_value::<Value>()?);
            }
        }
        if !tasks {
            return Err(de::Error::custom("no \"tasks\" field"));
        }
        Ok(header)
    }
}

/// The `tasks` array, each element checked, decoded and handed over as it is parsed.
struct Tasks<'h> {
    holder: &'h mut dyn Holder,
    base: usize,
}

impl<'de> DeserializeSeed<'de> for Tasks<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Tasks<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of tasks")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let text = raw.get();
            let offset = (text.as_ptr() as usize).saturating_sub(self.base) as u64;
            take(self.holder, text, offset).map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

/// One task's text at `offset` to the holder: as text if it takes it so, else checked against
/// the schema, decoded and given with where it is.
fn take(holder: &mut dyn Holder, text: &str, offset: u64) -> std::result::Result<(), String> {
    if holder.take_snapshot_text(text, offset) {
        return Ok(());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if let Some(v) = crate::base::schema::check_def(TASK_QUEUE.schema, "task", &value, 1).into_iter().next() {
        return Err(format!("a task at {}: {}", v.pointer, v.expected));
    }
    let task: Task = serde_json::from_value(value).map_err(|e| e.to_string())?;
    holder.put_snapshot_line(task, offset, text.len() as u32);
    Ok(())
}

/// How much of the file the line reader holds at once, and how long its header may be.
const CHUNK: usize = 1024 * 1024;
const HEADER_MAX: usize = 64 * 1024;

/// The writers' layout (`queue_file::encode`: `{`, a header field per line, `  "tasks": [`, a
/// task per line indented four spaces and followed by a comma but the last, `  ]`, `}`) read a
/// line at a time through a [`CHUNK`]-sized buffer, so the file is never held whole: the header's
/// text with an empty `tasks` (for [`header_of`]), or None when the file is not in that layout or
/// a task's text is not a task (the caller reads the file whole, after clearing the holder).
fn stream_lines(file: &std::fs::File, holder: &mut dyn Holder) -> Option<Vec<u8>> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::with_capacity(CHUNK, file);
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut header = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line).ok()?;
        if n == 0 || header.len() > HEADER_MAX {
            return None;
        }
        offset += n as u64;
        if line == b"  \"tasks\": [\n" {
            break;
        }
        header.extend_from_slice(&line);
    }
    if !header.starts_with(b"{\n") {
        return None;
    }
    // Whether the last task's line ended with a comma: another task must follow.
    let mut more = false;
    let mut any = false;
    loop {
        line.clear();
        let start = offset;
        let n = r.read_until(b'\n', &mut line).ok()?;
        offset += n as u64;
        if line == b"  ]\n" {
            // `[` then `]` alone is an empty array; a comma before `]` is not JSON.
            if more {
                return None;
            }
            break;
        }
        if n == 0 || (any && !more) {
            return None;
        }
        let body = line.strip_prefix(b"    ")?.strip_suffix(b"\n")?;
        let (text, comma) = match body.strip_suffix(b",") {
            Some(t) => (t, true),
            None => (body, false),
        };
        take(holder, std::str::from_utf8(text).ok()?, start + 4).ok()?;
        (more, any) = (comma, true);
    }
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut r, &mut rest).ok()?;
    if rest != b"}\n" && rest != b"}" {
        return None;
    }
    header.extend_from_slice(b"  \"tasks\": []\n}\n");
    Some(header)
}

/// The header of a document whose tasks were given to the holder already: its fields checked
/// against the schema and decoded (the document's `tasks` are taken as empty).
fn header_of(mut header: Map<String, Value>) -> Streamed {
    header.insert("tasks".into(), Value::Array(Vec::new()));
    let header = Value::Object(header);
    if !crate::base::schema::check(TASK_QUEUE.schema, &header, 1).is_empty() {
        return Streamed::Whole;
    }
    match serde_json::from_value::<TaskQueue>(header) {
        Ok(head) => Streamed::Header(Box::new(head)),
        Err(_) => Streamed::Whole,
    }
}

/// Parses `bytes` as the document, its tasks given to `holder`; the header's fields.
fn parse(bytes: &[u8], holder: &mut dyn Holder) -> Option<Map<String, Value>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let doc = Document { holder, base: bytes.as_ptr() as usize };
    de::Deserializer::deserialize_map(&mut de, doc).and_then(|h| de.end().map(|()| h)).ok()
}

/// Streams the snapshot at `path` to `holder`, one task at a time, each with where its text is
/// in the file (see the module documentation): the writers' layout a line at a time, any other
/// layout read whole and parsed as it is read.
pub(crate) fn stream(path: &Path, holder: &mut dyn Holder) -> Result<Streamed> {
    let mut file = match crate::store::open::read(path) {
        Ok(f) => f,
        Err(_) => return Ok(Streamed::Whole),
    };
    holder.snapshot_opened(&file);
    if let Some(header) = stream_lines(&file, holder) {
        // The header alone: a `tasks` field in it (a second one) fails here as in a whole read.
        return Ok(parse(&header, holder).map_or(Streamed::Whole, header_of));
    }
    holder.clear();
    holder.snapshot_opened(&file);
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).map_err(|e| Error::io(path, "read", e))?;
    let len = file.metadata().map_err(|e| Error::io(path, "stat", e))?.len();
    let mut bytes = Vec::with_capacity(len as usize + 1);
    file.read_to_end(&mut bytes).map_err(|e| Error::io(path, "read", e))?;
    let header = parse(&bytes, holder);
    drop(bytes);
    Ok(header.map_or(Streamed::Whole, header_of))
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
                // Each task's text is where the holder was told it is.
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

    /// Whether the line reader alone reads `bytes` (without falling back to the whole read).
    fn by_lines(bytes: &[u8]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("task-queue.json");
        std::fs::write(&p, bytes).unwrap();
        let mut held = Lines { tasks: Vec::new(), file: None };
        stream_lines(&std::fs::File::open(&p).unwrap(), &mut held).is_some()
    }

    #[test]
    fn the_writers_layout_is_read_a_line_at_a_time_and_anything_else_whole() {
        let p = Path::new("task-queue.json");
        let q = TaskQueue {
            tasks: (0..4).map(|i| Task::sample(&format!("task-{i}"))).collect(),
            intake_offset: 9,
            journal_generation: 3,
            ..TaskQueue::default()
        };
        let bytes = super::super::queue_file::encode(p, &q, None).unwrap();
        assert!(by_lines(&bytes));
        let (head, tasks) = streamed(&bytes).unwrap();
        assert_eq!((tasks, head.intake_offset, head.journal_generation), (q.tasks.clone(), 9, 3));
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(!by_lines(&serde_json::to_vec_pretty(&v).unwrap()));
        assert!(!by_lines(&serde_json::to_vec(&v).unwrap()));
        let empty = super::super::queue_file::encode(p, &TaskQueue::default(), None).unwrap();
        assert!(!by_lines(&empty), "an empty queue is read whole (it is small)");
        assert_eq!(streamed(&empty).unwrap().1, Vec::<Task>::new());

        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let with_lines = |f: &dyn Fn(&mut Vec<String>)| {
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            f(&mut l);
            format!("{}\n", l.join("\n"))
        };
        let first_task = lines.iter().position(|l| l.starts_with("    {")).unwrap();
        // Two tasks on one line: still JSON, so read whole — once, the holder cleared between.
        let joined = with_lines(&|l| {
            let next = l.remove(first_task + 2);
            l[first_task + 1] = format!("{} {}", l[first_task + 1], next.trim_start());
        });
        assert!(!by_lines(joined.as_bytes()));
        assert_eq!(streamed(joined.as_bytes()).unwrap().1, q.tasks, "no task twice");
        // Not JSON: a comma after the last task, a missing comma, a torn line, a second tasks.
        let last = first_task + 3;
        let trailing = with_lines(&|l| l[last].push(','));
        let missing = with_lines(&|l| l[first_task] = l[first_task].trim_end_matches(',').to_string());
        let torn = with_lines(&|l| l[first_task + 1].truncate(20));
        let second = with_lines(&|l| l.insert(1, "  \"tasks\": [],".to_string()));
        for bad in [trailing, missing, torn] {
            assert!(!by_lines(bad.as_bytes()), "{bad}");
            assert!(streamed(bad.as_bytes()).is_none(), "{bad}");
        }
        // (The header's fields are parsed after the tasks: a second `tasks` is refused there.)
        assert!(streamed(second.as_bytes()).is_none());
        // A task breaking its schema on its line: read whole, which refuses it.
        let broken =
            with_lines(&|l| l[first_task + 1] = l[first_task + 1].replace("\"task_id\":\"task-1\"", "\"task_id\":1"));
        assert!(!by_lines(broken.as_bytes()));
        assert!(streamed(broken.as_bytes()).is_none());
    }

    #[test]
    fn any_layout_streams_back_equal_and_a_bad_document_is_read_whole() {
        let p = Path::new("task-queue.json");
        for n in [0, 1, 3] {
            let q = TaskQueue {
                tasks: (0..n).map(|i| Task::sample(&format!("task-{i}"))).collect(),
                intake_offset: 42,
                journal_generation: 7,
                ..TaskQueue::default()
            };
            let bytes = super::super::queue_file::encode(p, &q, None).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let pretty = serde_json::to_vec_pretty(&v).unwrap();
            let compact = serde_json::to_vec(&v).unwrap();
            for layout in [&bytes, &pretty, &compact] {
                let (head, tasks) = streamed(layout).expect("streams");
                assert_eq!(tasks, q.tasks);
                assert_eq!((head.intake_offset, head.journal_generation), (42, 7));
            }
            assert!(streamed(&bytes[..bytes.len() - 3]).is_none(), "torn");
            assert!(streamed(&[bytes.as_slice(), b"x"].concat()).is_none(), "trailing bytes");
        }
        let q = TaskQueue { tasks: vec![Task::sample("task-a")], ..TaskQueue::default() };
        let bytes = super::super::queue_file::encode(p, &q, None).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(streamed(text.replace("\"task_id\":\"task-a\"", "\"task_id\":5").as_bytes()).is_none());
        assert!(streamed(text.replace("\"intake_offset\": 0", "\"intake_offset\": -1").as_bytes()).is_none());
        assert!(streamed(b"{\"updated_at\": null}").is_none(), "no tasks");
        assert!(streamed(b"[]").is_none());
        assert!(streamed(b"{\"tasks\": []}").is_some());
    }
}
