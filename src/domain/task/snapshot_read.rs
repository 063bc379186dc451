//! Reading the queue's snapshot (`task-queue.json`) one task at a time: the document is parsed
//! as it is read, each element of `tasks` checked against the queue schema's `$defs/task`,
//! decoded and handed to a [`Holder`] with where its text is in the file, so a reader never
//! holds a `serde_json::Value` of the whole document (several times the file's size), and a
//! reader that keeps little of each task (the integration daemon, the metrics, the coordinator's
//! parked tasks) keeps little in all. The writers' layout (one task per line) is read a line at
//! a time, so the file is never held whole; any other layout (a pretty-printed or compact
//! document from a tool or from before the journal) is read into memory and parsed as it is read.
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

/// Streams the snapshot at `path` to `holder`, one task at a time, each with where its text is
/// in the file (see the module documentation).
pub(crate) fn stream(path: &Path, holder: &mut dyn Holder) -> Result<Streamed> {
    let mut file = match crate::store::open::read(path) {
        Ok(f) => f,
        Err(_) => return Ok(Streamed::Whole),
    };
    holder.snapshot_opened(&file);
    if let Some(head) = stream_lines(path, &file, holder)? {
        return Ok(Streamed::Header(Box::new(head)));
    }
    holder.clear();
    holder.snapshot_opened(&file);
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).map_err(|e| Error::io(path, "seek", e))?;
    let len = file.metadata().map_err(|e| Error::io(path, "stat", e))?.len();
    let mut bytes = Vec::with_capacity(len as usize + 1);
    file.read_to_end(&mut bytes).map_err(|e| Error::io(path, "read", e))?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let doc = Document { holder, base: bytes.as_ptr() as usize };
    let header = match de::Deserializer::deserialize_map(&mut de, doc).and_then(|h| de.end().map(|()| h)) {
        Ok(h) => h,
        Err(_) => return Ok(Streamed::Whole),
    };
    drop(bytes);
    match header_of(header) {
        Some(head) => Ok(Streamed::Header(Box::new(head))),
        None => Ok(Streamed::Whole),
    }
}

/// The header's fields (all but `tasks`) as the queue's header, if they meet the schema.
fn header_of(fields: Map<String, Value>) -> Option<TaskQueue> {
    let mut header = Value::Object(fields);
    header["tasks"] = Value::Array(Vec::new());
    if !crate::base::schema::check(TASK_QUEUE.schema, &header, 1).is_empty() {
        return None;
    }
    serde_json::from_value::<TaskQueue>(header).ok()
}

/// A task's text given to the holder: taken as text ([`Holder::take_snapshot_text`]), or else
/// checked against the queue schema's `$defs/task`, decoded and given as a task. An error says
/// what is wrong with it (the caller then reads the file the general way, which names the file).
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

/// The writers' layout (`queue_file::encode`: the header's fields a line each, then `"tasks": [`,
/// each task on its own line, `]`, `}`) read a line at a time: memory is a line, not the file
/// (a 43 MB snapshot of 100,000 tasks was read into one buffer before: cortex-api's peak 90–96
/// MiB, 50 MiB this way). Each task's text goes to the holder's
/// [`Holder::take_snapshot_text`], or else is checked and decoded ([`take`]). None when
/// the file is not exactly in that layout or a task's text breaks its check: the caller clears
/// the holder and reads the file the general way, which decides and names the problem.
fn stream_lines(path: &Path, file: &std::fs::File, holder: &mut dyn Holder) -> Result<Option<TaskQueue>> {
    use std::io::BufRead;
    const TASKS: &[u8] = b"  \"tasks\": [\n";
    const NO_TASKS: &[u8] = b"  \"tasks\": []\n";
    let mut r = std::io::BufReader::with_capacity(256 * 1024, file);
    let mut line = Vec::new();
    let mut at = 0u64;
    let mut next = |line: &mut Vec<u8>| -> Result<u64> {
        line.clear();
        let n = r.read_until(b'\n', line).map_err(|e| Error::io(path, "read", e))? as u64;
        Ok(n)
    };
    let mut header = Vec::new();
    let tasks = loop {
        let n = next(&mut line)?;
        if n == 0 || header.len() > 1 << 20 {
            return Ok(None);
        }
        at += n;
        if line == TASKS || line == NO_TASKS {
            break line == TASKS;
        }
        header.extend_from_slice(&line);
    };
    // The header's lines closed as an object: `{` alone, or its last field's comma dropped.
    let closed = match header.strip_suffix(b",\n") {
        Some(fields) => [fields, b"}"].concat(),
        None if header == b"{\n" => b"{}".to_vec(),
        None => return Ok(None),
    };
    let Ok(fields) = serde_json::from_slice::<Map<String, Value>>(&closed) else { return Ok(None) };
    if fields.contains_key("tasks") {
        return Ok(None);
    }
    if tasks {
        loop {
            let n = next(&mut line)?;
            let offset = at + 4;
            at += n;
            let Some(body) = line.strip_prefix(b"    ").and_then(|b| b.strip_suffix(b"\n")) else { return Ok(None) };
            let (text, more) = match body.strip_suffix(b",") {
                Some(t) => (t, true),
                None => (body, false),
            };
            if !(text.starts_with(b"{") && text.ends_with(b"}")) {
                return Ok(None);
            }
            let Ok(text) = std::str::from_utf8(text) else { return Ok(None) };
            if take(holder, text, offset).is_err() {
                return Ok(None);
            }
            if !more {
                break;
            }
        }
        next(&mut line)?;
        if line != b"  ]\n" {
            return Ok(None);
        }
    }
    next(&mut line)?;
    if line != b"}\n" && line != b"}" {
        return Ok(None);
    }
    // Nothing but white space after the document.
    loop {
        if next(&mut line)? == 0 {
            break;
        }
        if !line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            return Ok(None);
        }
    }
    Ok(header_of(fields))
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
