//! The rows of the dashboard's tasks table, kept compact: a row per live task is a fixed-size
//! [`Slot`] in one `Vec` (no heap allocation of its own), its id and the first
//! [`DESCRIPTION_KEPT`] characters of its description are spans of one text arena, its worker
//! type and schedule are interned names, its status and priority a byte each. The order (creation
//! time, then the order first seen) is a `BTreeMap` of keys to slot numbers; the index by id maps
//! a hash of the id to a slot number (the id itself is compared in the arena, so it is stored
//! once). About 100 bytes per row plus its text, where a row of `String`s, a `BTreeMap` entry
//! and a `HashMap` entry with its own copy of the id took about half a KiB, and, allocated one
//! by one among the decoded tasks of a whole read, kept the heap fragmented.
//!
//! Text no row uses any more (a removed row's, a replaced description) is counted, and the arena
//! is rewritten once that is more than half of it: a change costs its own size, amortised.

use crate::base::clock::{Timestamp, format_ts, parse_ts};
use crate::domain::task::journal::Holder;
use crate::domain::task::model::{Priority, Task, TaskStatus};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::ops::Bound;

/// Characters of a description a row keeps (the task page shows the whole text).
pub(crate) const DESCRIPTION_KEPT: usize = 200;

/// The arena is rewritten when its unused text is more than half of it and at least this much.
const GARBAGE_MIN: usize = 64 * 1024;

/// No name (a task without a schedule).
const NO_NAME: u32 = u32::MAX;

/// Where a row is in the order: its creation time, then the order it was first seen in (the
/// queue's order, then the intake's), as a stable sort by `created_at` leaves them.
type Key = (Timestamp, u64);

/// A piece of the text arena.
#[derive(Clone, Copy, Default)]
struct Span {
    at: usize,
    len: u32,
}

/// One row, fixed size; `used` is false for a slot on the free list.
#[derive(Clone, Copy)]
struct Slot {
    created_at: Timestamp,
    started_at: Option<Timestamp>,
    completed_at: Option<Timestamp>,
    seq: u64,
    id: Span,
    description: Span,
    worker_type: u32,
    schedule: u32,
    attempts: u32,
    max_attempts: u32,
    status: TaskStatus,
    priority: Priority,
    cut: bool,
    /// Read from the intake; the queue does not hold it yet.
    pending: bool,
    used: bool,
}

impl Slot {
    fn key(&self) -> Key {
        (self.created_at, self.seq)
    }
}

/// Interned names (worker types and schedule ids: a few distinct values among many rows).
#[derive(Default)]
struct Names {
    list: Vec<Box<str>>,
    index: HashMap<Box<str>, u32>,
}

impl Names {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let i = self.list.len() as u32;
        self.list.push(name.into());
        self.index.insert(name.into(), i);
        i
    }

    fn get(&self, i: u32) -> Option<&str> {
        self.list.get(i as usize).map(|s| &**s)
    }
}

/// The first [`DESCRIPTION_KEPT`] characters of `text`, and whether it was cut.
fn cut(text: &str) -> (&str, bool) {
    match text.char_indices().nth(DESCRIPTION_KEPT) {
        Some((i, _)) => (&text[..i], true),
        None => (text, false),
    }
}

/// What a row is made of, borrowed from a decoded task or from its text in the snapshot.
struct Fields<'a> {
    task_id: &'a str,
    description: &'a str,
    worker_type: &'a str,
    schedule_id: Option<&'a str>,
    created_at: Timestamp,
    started_at: Option<Timestamp>,
    completed_at: Option<Timestamp>,
    status: TaskStatus,
    priority: Priority,
    attempts: u32,
    max_attempts: u32,
}

impl<'a> Fields<'a> {
    fn of(t: &'a Task) -> Fields<'a> {
        Fields {
            task_id: &t.task_id,
            description: &t.description,
            worker_type: &t.worker_type,
            schedule_id: t.schedule_id.as_deref(),
            created_at: t.created_at,
            started_at: t.started_at(),
            completed_at: t.completed_at(),
            status: t.status(),
            priority: t.priority,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
        }
    }
}

/// The fields of a task's text a row needs, read without decoding the task (the rest of the
/// record is skipped). Strings are borrowed from the text unless they hold escapes.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    task_id: Cow<'a, str>,
    #[serde(borrow)]
    description: Cow<'a, str>,
    priority: Priority,
    #[serde(borrow)]
    worker_type: Cow<'a, str>,
    status: TaskStatus,
    created_at: &'a str,
    #[serde(default)]
    started_at: Option<&'a str>,
    #[serde(default)]
    completed_at: Option<&'a str>,
    #[serde(default)]
    next_retry_at: Option<&'a str>,
    #[serde(default)]
    dispatch_id: Option<IgnoredAny>,
    #[serde(default)]
    attempts: u32,
    max_attempts: u32,
    #[serde(default, borrow)]
    schedule_id: Option<Cow<'a, str>>,
}

impl Line<'_> {
    /// The row's fields as a decoded task would give them; None for a text the task's type
    /// would refuse in a way this reader sees (a time that is not one, a state without the
    /// fields it needs): the caller decodes it the whole way, which names the problem.
    fn fields(&self) -> Option<Fields<'_>> {
        let time = |t: Option<&str>| t.map(|t| parse_ts(t).ok_or(())).transpose().ok();
        let (started, completed) = (time(self.started_at)?, time(self.completed_at)?);
        time(self.next_retry_at)?;
        let (started_at, completed_at) = match self.status {
            TaskStatus::Queued => (None, None),
            TaskStatus::PendingRetry => {
                self.next_retry_at?;
                (None, None)
            }
            TaskStatus::InProgress => {
                self.dispatch_id.as_ref()?;
                (Some(started?), None)
            }
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled => (started, Some(completed?)),
        };
        Some(Fields {
            task_id: &self.task_id,
            description: &self.description,
            worker_type: &self.worker_type,
            schedule_id: self.schedule_id.as_deref(),
            created_at: parse_ts(self.created_at)?,
            started_at,
            completed_at,
            status: self.status,
            priority: self.priority,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
        })
    }
}

/// True when `hay` contains `needle_lower` (already lowercase) ignoring case, as
/// `hay.to_lowercase().contains(needle_lower)`, without allocating for ASCII text.
pub(crate) fn contains_lowercase(hay: &str, needle_lower: &str) -> bool {
    if !hay.is_ascii() {
        return hay.to_lowercase().contains(needle_lower);
    }
    // An ASCII text lowercases to ASCII: a needle with anything else is not in it.
    let (h, n) = (hay.as_bytes(), needle_lower.as_bytes());
    n.is_empty() || (n.is_ascii() && h.len() >= n.len() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n)))
}

/// The live tasks' rows (see the module's doc).
#[derive(Default)]
pub(crate) struct Rows {
    slots: Vec<Slot>,
    free: Vec<u32>,
    text: String,
    /// Bytes of `text` no slot uses.
    garbage: usize,
    order: BTreeMap<Key, u32>,
    /// Hash of an id → its slot; ids whose hash another id holds are in `collided`.
    ids: HashMap<u64, u32>,
    collided: HashMap<Box<str>, u32>,
    hasher: RandomState,
    /// Every id hashes the same (tests of the collision path).
    #[cfg(test)]
    same_hash: bool,
    names: Names,
    next: u64,
    /// Slots given to rows read from the intake (some may since be the queue's, or gone).
    pending: Vec<u32>,
}

/// A row as the tasks table and its filters read it.
#[derive(Clone, Copy)]
pub(crate) struct Row<'a> {
    rows: &'a Rows,
    slot: &'a Slot,
}

impl<'a> Row<'a> {
    pub(crate) fn task_id(&self) -> &'a str {
        self.rows.span(self.slot.id)
    }

    /// The first [`DESCRIPTION_KEPT`] characters.
    pub(crate) fn description(&self) -> &'a str {
        self.rows.span(self.slot.description)
    }

    pub(crate) fn worker_type(&self) -> &'a str {
        self.rows.names.get(self.slot.worker_type).unwrap_or("")
    }

    pub(crate) fn status(&self) -> TaskStatus {
        self.slot.status
    }

    pub(crate) fn created_at(&self) -> Timestamp {
        self.slot.created_at
    }

    /// The row as the tasks table reads it (`description_truncated` when the text was cut).
    pub(crate) fn to_json(self) -> Value {
        let s = self.slot;
        let mut v = json!({
            "task_id": self.task_id(),
            "status": s.status.as_str(),
            "priority": s.priority.as_str(),
            "worker_type": self.worker_type(),
            "description": self.description(),
            "attempts": s.attempts,
            "max_attempts": s.max_attempts,
            "created_at": format_ts(s.created_at),
            "started_at": s.started_at.map(format_ts),
            "completed_at": s.completed_at.map(format_ts),
            "schedule_id": self.rows.names.get(s.schedule),
        });
        if s.cut {
            v["description_truncated"] = Value::Bool(true);
        }
        v
    }
}

impl Rows {
    fn span(&self, s: Span) -> &str {
        &self.text[s.at..s.at + s.len as usize]
    }

    fn push_text(&mut self, s: &str) -> Span {
        let span = Span { at: self.text.len(), len: s.len() as u32 };
        self.text.push_str(s);
        span
    }

    fn hash(&self, id: &str) -> u64 {
        #[cfg(test)]
        if self.same_hash {
            return 0;
        }
        self.hasher.hash_one(id)
    }

    /// How many rows there are.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// The slot of `id`.
    fn find(&self, id: &str) -> Option<u32> {
        match self.ids.get(&self.hash(id)) {
            Some(&i) if self.span(self.slots[i as usize].id) == id => Some(i),
            _ => self.collided.get(id).copied(),
        }
    }

    /// Records that `id` (not held) is in slot `i`.
    fn index(&mut self, id: &str, i: u32) {
        match self.ids.entry(self.hash(id)) {
            Entry::Vacant(e) => {
                e.insert(i);
            }
            Entry::Occupied(_) => {
                self.collided.insert(id.into(), i);
            }
        }
    }

    /// Forgets that `id`, held in slot `i`, is there.
    fn unindex(&mut self, id: &str, i: u32) {
        let h = self.hash(id);
        if self.ids.get(&h) == Some(&i) {
            self.ids.remove(&h);
        } else {
            self.collided.remove(id);
        }
    }

    /// A row in page order.
    fn row(&self, i: u32) -> Row<'_> {
        Row { rows: self, slot: &self.slots[i as usize] }
    }

    /// The row of `id`.
    pub(crate) fn get(&self, id: &str) -> Option<Row<'_>> {
        self.find(id).map(|i| self.row(i))
    }

    /// Every row, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.order.values().map(|&i| self.row(i))
    }

    /// The rows after the row of `id` in the order; None when no row has that id.
    pub(crate) fn iter_after(&self, id: &str) -> Option<impl Iterator<Item = Row<'_>>> {
        let key = self.slots[self.find(id)? as usize].key();
        Some(self.order.range((Bound::Excluded(key), Bound::Unbounded)).map(|(_, &i)| self.row(i)))
    }

    /// Adds the task's row, or replaces the row of its id (in place when its creation time is
    /// the same). `pending`: read from the intake.
    fn insert(&mut self, t: Fields<'_>, pending: bool) {
        let (description, was_cut) = cut(t.description);
        let worker_type = self.names.intern(t.worker_type);
        let schedule = t.schedule_id.map_or(NO_NAME, |s| self.names.intern(s));
        let found = self.find(t.task_id);
        let (i, id, seq) = match found {
            Some(i) => {
                let old = self.slots[i as usize];
                let same_text = self.span(old.description) == description;
                let text = if same_text {
                    old.description
                } else {
                    self.garbage += old.description.len as usize;
                    self.push_text(description)
                };
                let seq = if old.created_at == t.created_at {
                    old.seq
                } else {
                    self.order.remove(&old.key());
                    self.next += 1;
                    self.order.insert((t.created_at, self.next), i);
                    self.next
                };
                self.slots[i as usize].description = text;
                (i, old.id, seq)
            }
            None => {
                let id = self.push_text(t.task_id);
                let description = self.push_text(description);
                let i = match self.free.pop() {
                    Some(i) => i,
                    None => {
                        self.slots.push(Slot::unused());
                        (self.slots.len() - 1) as u32
                    }
                };
                self.slots[i as usize].description = description;
                self.next += 1;
                self.order.insert((t.created_at, self.next), i);
                self.index(t.task_id, i);
                (i, id, self.next)
            }
        };
        let description = self.slots[i as usize].description;
        self.slots[i as usize] = Slot {
            created_at: t.created_at,
            started_at: t.started_at,
            completed_at: t.completed_at,
            seq,
            id,
            description,
            worker_type,
            schedule,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            status: t.status,
            priority: t.priority,
            cut: was_cut,
            pending,
            used: true,
        };
        if pending {
            self.pending.push(i);
        }
        self.compact_text();
    }

    /// Removes the row in slot `i`.
    fn remove_slot(&mut self, i: u32) {
        let s = self.slots[i as usize];
        let id = self.span(s.id).to_string();
        self.unindex(&id, i);
        self.order.remove(&s.key());
        self.garbage += s.id.len as usize + s.description.len as usize;
        self.slots[i as usize] = Slot::unused();
        self.free.push(i);
        self.compact_text();
    }

    /// A task of the unfolded intake: kept unless the queue holds its id.
    pub(crate) fn put_pending(&mut self, task: &Task) {
        if self.find(&task.task_id).is_none() {
            self.insert(Fields::of(task), true);
        }
    }

    /// Forgets the intake's rows the queue does not hold (the intake is read again).
    pub(crate) fn drop_pending(&mut self) {
        for i in std::mem::take(&mut self.pending) {
            let s = &self.slots[i as usize];
            if s.used && s.pending {
                self.remove_slot(i);
            }
        }
    }

    /// Rewrites the arena without the text no row uses, once that is more than half of it.
    fn compact_text(&mut self) {
        if self.garbage < GARBAGE_MIN || self.garbage * 2 < self.text.len() {
            return;
        }
        let mut text = String::with_capacity(self.text.len() - self.garbage);
        for s in self.slots.iter_mut().filter(|s| s.used) {
            for span in [&mut s.id, &mut s.description] {
                let at = text.len();
                text.push_str(&self.text[span.at..span.at + span.len as usize]);
                span.at = at;
            }
        }
        self.text = text;
        self.garbage = 0;
    }

    /// Gives back what the slots, the text and the index reserved beyond what they hold (after
    /// a whole load, whose growth by doubling left up to half of each unused).
    pub(crate) fn shrink(&mut self) {
        self.slots.shrink_to_fit();
        self.text.shrink_to_fit();
        self.free.shrink_to_fit();
        self.ids.shrink_to_fit();
    }

    /// Bytes held (the slots, the text and the order's and index's entries, without the maps'
    /// own overhead): for tests and the log.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.text.capacity()
            + self.order.len() * (std::mem::size_of::<Key>() + 4)
            + self.ids.capacity() * 13
    }
}

impl Slot {
    fn unused() -> Slot {
        Slot {
            created_at: Timestamp::default(),
            started_at: None,
            completed_at: None,
            seq: 0,
            id: Span::default(),
            description: Span::default(),
            worker_type: NO_NAME,
            schedule: NO_NAME,
            attempts: 0,
            max_attempts: 0,
            status: TaskStatus::Queued,
            priority: Priority::Medium,
            cut: false,
            pending: false,
            used: false,
        }
    }
}

impl Holder for Rows {
    fn clear(&mut self) {
        *self = Rows::default();
    }
    fn take_snapshot_text(&mut self, text: &str, _offset: u64) -> bool {
        let Ok(line) = serde_json::from_str::<Line>(text) else { return false };
        let Some(fields) = line.fields() else { return false };
        self.insert(fields, false);
        true
    }
    fn put(&mut self, task: Task) {
        self.insert(Fields::of(&task), false);
    }
    fn remove(&mut self, task_id: &str) {
        if let Some(i) = self.find(task_id) {
            self.remove_slot(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, created: &str, description: &str) -> Task {
        let mut t = Task::sample(id);
        t.created_at = parse_ts(created).unwrap();
        t.description = description.into();
        t
    }

    fn ids<'a>(rows: impl Iterator<Item = Row<'a>>) -> Vec<String> {
        rows.map(|r| r.task_id().to_string()).collect()
    }

    #[test]
    fn rows_are_in_creation_order_then_first_seen_and_page_after_an_id() {
        let mut rows = Rows::default();
        rows.put(task("c", "2026-01-01T00:00:02Z", "third"));
        rows.put(task("a", "2026-01-01T00:00:01Z", "first"));
        rows.put(task("b2", "2026-01-01T00:00:02Z", "same time, seen after c"));
        rows.put(task("z", "2026-01-01T00:00:00Z", "oldest"));
        assert_eq!(ids(rows.iter()), ["z", "a", "c", "b2"]);
        assert_eq!(ids(rows.iter_after("a").unwrap()), ["c", "b2"]);
        assert_eq!(ids(rows.iter_after("b2").unwrap()), Vec::<String>::new());
        assert!(rows.iter_after("nope").is_none());
        assert_eq!(rows.len(), 4);
    }

    #[test]
    fn a_replaced_row_keeps_its_place_unless_its_creation_time_changed() {
        let mut rows = Rows::default();
        rows.put(task("a", "2026-01-01T00:00:01Z", "one"));
        rows.put(task("b", "2026-01-01T00:00:02Z", "two"));
        rows.put(task("c", "2026-01-01T00:00:03Z", "three"));
        let mut b = task("b", "2026-01-01T00:00:02Z", "two, edited");
        b.attempts = 2;
        b.schedule_id = Some("nightly".into());
        b.worker_type = "build-worker".into();
        rows.put(b);
        assert_eq!(ids(rows.iter()), ["a", "b", "c"]);
        let r = rows.get("b").unwrap();
        assert_eq!(r.description(), "two, edited");
        assert_eq!(r.worker_type(), "build-worker");
        assert_eq!(r.to_json()["attempts"], 2);
        assert_eq!(r.to_json()["schedule_id"], "nightly");
        assert_eq!(rows.get("a").unwrap().to_json()["schedule_id"], Value::Null);
        // A new creation time moves it (after the rows of that time already there).
        rows.put(task("a", "2026-01-01T00:00:03Z", "one, moved"));
        assert_eq!(ids(rows.iter()), ["b", "c", "a"]);
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn removing_frees_the_row_and_its_slot_is_used_again() {
        let mut rows = Rows::default();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            rows.put(task(id, &format!("2026-01-01T00:00:0{i}Z"), id));
        }
        rows.remove("b");
        rows.remove("nope");
        assert_eq!(ids(rows.iter()), ["a", "c"]);
        assert!(rows.get("b").is_none());
        rows.put(task("d", "2026-01-01T00:00:09Z", "new"));
        assert_eq!(rows.slots.len(), 3, "the freed slot is used again");
        assert_eq!(ids(rows.iter()), ["a", "c", "d"]);
        assert_eq!(rows.get("d").unwrap().description(), "new");
        assert_eq!(rows.get("c").unwrap().description(), "c");
    }

    #[test]
    fn intake_rows_are_dropped_unless_the_queue_took_them() {
        let mut rows = Rows::default();
        rows.put(task("q", "2026-01-01T00:00:00Z", "queued"));
        // The intake names a task the queue holds already: the queue's row stays.
        rows.put_pending(&task("q", "2026-01-01T00:00:00Z", "from the intake"));
        rows.put_pending(&task("i1", "2026-01-01T00:00:01Z", "pending"));
        rows.put_pending(&task("i2", "2026-01-01T00:00:02Z", "pending"));
        assert_eq!(ids(rows.iter()), ["q", "i1", "i2"]);
        assert_eq!(rows.get("q").unwrap().description(), "queued");
        // The queue folded i1 (a journal line), then the intake is read again.
        rows.put(task("i1", "2026-01-01T00:00:01Z", "folded"));
        rows.drop_pending();
        assert_eq!(ids(rows.iter()), ["q", "i1"]);
        assert_eq!(rows.get("i1").unwrap().description(), "folded");
        rows.drop_pending();
        assert_eq!(ids(rows.iter()), ["q", "i1"]);
    }

    #[test]
    fn a_long_description_is_kept_cut_at_a_character() {
        let mut rows = Rows::default();
        let long = "é".repeat(DESCRIPTION_KEPT + 50);
        rows.put(task("a", "2026-01-01T00:00:00Z", &long));
        let exact = "x".repeat(DESCRIPTION_KEPT);
        rows.put(task("b", "2026-01-01T00:00:01Z", &exact));
        let a = rows.get("a").unwrap().to_json();
        assert_eq!(a["description"].as_str().unwrap(), "é".repeat(DESCRIPTION_KEPT));
        assert_eq!(a["description_truncated"], true);
        let b = rows.get("b").unwrap().to_json();
        assert_eq!(b["description"].as_str().unwrap(), exact);
        assert!(b.get("description_truncated").is_none());
    }

    #[test]
    fn the_json_of_a_row_is_the_tasks_fields() {
        let mut rows = Rows::default();
        let mut t = task("a", "2026-01-01T00:00:00.123456Z", "d");
        t.state = crate::domain::task::model::TaskState::Completed {
            started_at: parse_ts("2026-01-01T00:01:00Z"),
            completed_at: parse_ts("2026-01-01T00:02:00Z").unwrap(),
        };
        t.priority = Priority::High;
        rows.put(t.clone());
        let expected = json!({
            "task_id": "a", "status": "completed", "priority": "high", "worker_type": t.worker_type,
            "description": "d", "attempts": t.attempts, "max_attempts": t.max_attempts,
            "created_at": "2026-01-01T00:00:00.123456Z", "started_at": "2026-01-01T00:01:00.000000Z",
            "completed_at": "2026-01-01T00:02:00.000000Z", "schedule_id": null,
        });
        assert_eq!(rows.get("a").unwrap().to_json(), expected);
    }

    #[test]
    fn the_text_is_rewritten_once_half_of_it_is_unused_and_rows_read_the_same() {
        let mut rows = Rows::default();
        let body = "d".repeat(150);
        for i in 0..2000 {
            rows.put(task(&format!("t-{i:05}"), "2026-01-01T00:00:00Z", &format!("{i} {body}")));
        }
        let full = rows.text.len();
        for i in (0..2000).filter(|i| i % 4 != 0) {
            rows.remove(&format!("t-{i:05}"));
        }
        assert!(rows.text.len() < full / 2, "rewritten: {} of {full}", rows.text.len());
        assert_eq!(rows.len(), 500);
        for (n, r) in rows.iter().enumerate() {
            assert_eq!(r.task_id(), format!("t-{:05}", n * 4));
            assert_eq!(r.description(), format!("{} {body}", n * 4));
        }
        // Replacing descriptions leaves garbage too.
        for round in 0..5 {
            for i in (0..2000).step_by(4) {
                rows.put(task(&format!("t-{i:05}"), "2026-01-01T00:00:00Z", &format!("{round} {body}")));
            }
        }
        assert!(rows.text.len() <= 2 * 500 * 160 + GARBAGE_MIN * 2, "{}", rows.text.len());
        assert!(rows.iter().all(|r| r.description().starts_with("4 ")));
    }

    #[test]
    fn ids_whose_hashes_collide_are_told_apart() {
        let mut rows = Rows { same_hash: true, ..Rows::default() };
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            rows.put(task(id, &format!("2026-01-01T00:00:0{i}Z"), id));
        }
        assert_eq!((rows.ids.len(), rows.collided.len()), (1, 2));
        for id in ["a", "b", "c"] {
            assert_eq!(rows.get(id).unwrap().description(), id);
        }
        assert!(rows.get("d").is_none());
        rows.remove("a");
        assert!(rows.get("a").is_none());
        assert_eq!(rows.get("b").unwrap().description(), "b");
        rows.put(task("b", "2026-01-01T00:00:01Z", "b again"));
        rows.put(task("d", "2026-01-01T00:00:04Z", "d"));
        assert_eq!(ids(rows.iter()), ["b", "c", "d"]);
        assert_eq!(rows.get("b").unwrap().description(), "b again");
        assert_eq!(rows.get("d").unwrap().description(), "d");
        for id in ["b", "c", "d"] {
            rows.remove(id);
        }
        assert_eq!(rows.len(), 0);
        assert!(rows.collided.is_empty() && rows.ids.is_empty());
    }

    #[test]
    fn search_ignores_case_as_to_lowercase_does() {
        for (hay, q, expected) in [
            ("Benchmark Task 12", "task 1", true),
            ("Benchmark Task 12", "task 3", false),
            ("", "", true),
            ("abc", "", true),
            ("ab", "abc", false),
            ("ÉCOLE du Soir", "école", true),
            ("plain ascii", "é", false),
            ("KELVIN", "kelvin", true),
        ] {
            assert_eq!(contains_lowercase(hay, q), expected, "{hay:?} {q:?}");
            assert_eq!(hay.to_lowercase().contains(q), expected, "{hay:?} {q:?}");
        }
    }

    #[test]
    fn a_row_read_from_the_snapshots_text_is_the_row_of_the_decoded_task() {
        use crate::domain::task::model::TaskState;
        let t = |s: &str| parse_ts(s).unwrap();
        let mut tasks = Vec::new();
        let base = task("t-queued", "2026-01-01T00:00:00.5Z", "plain");
        tasks.push(base.clone());
        let mut x = base.clone();
        x.task_id = "t-escaped".into();
        x.description = format!("quote \" tab \t newline \n é {}", "ü".repeat(DESCRIPTION_KEPT));
        x.schedule_id = Some("nightly \"x\"".into());
        x.worker_type = "w\\1".into();
        tasks.push(x);
        let states = [
            TaskState::InProgress { started_at: t("2026-01-02T00:00:00Z"), dispatch_id: "d-1".into() },
            TaskState::PendingRetry { next_retry_at: t("2026-01-03T00:00:00Z"), waiting_reason: None },
            TaskState::Completed {
                started_at: Some(t("2026-01-02T00:00:00Z")),
                completed_at: t("2026-01-02T01:00:00Z"),
            },
            TaskState::Failed { started_at: None, completed_at: t("2026-01-02T01:00:00Z") },
            TaskState::Cancelled {
                started_at: Some(t("2026-01-02T00:00:00Z")),
                completed_at: t("2026-01-04T00:00:00Z"),
            },
        ];
        for (i, state) in states.into_iter().enumerate() {
            let mut x = base.clone();
            x.task_id = format!("t-{i}");
            x.state = state;
            x.attempts = i as u32;
            x.priority = Priority::Critical;
            tasks.push(x);
        }
        let (mut decoded, mut read) = (Rows::default(), Rows::default());
        for task in &tasks {
            let text = serde_json::to_string(task).unwrap();
            assert!(read.take_snapshot_text(&text, 0), "{text}");
            decoded.put(task.clone());
        }
        let json = |rows: &Rows| rows.iter().map(|r| r.to_json()).collect::<Vec<_>>();
        assert_eq!(json(&read), json(&decoded));
        assert_eq!(read.len(), tasks.len());
        assert_eq!(read.get("t-escaped").unwrap().to_json()["schedule_id"], "nightly \"x\"");
    }

    #[test]
    fn a_text_the_row_reader_cannot_read_is_left_to_the_whole_decoding() {
        let good = serde_json::to_value(task("a", "2026-01-01T00:00:00Z", "d")).unwrap();
        let with = |k: &str, v: Value| {
            let mut x = good.clone();
            x[k] = v;
            x.to_string()
        };
        let without = |k: &str| {
            let mut x = good.clone();
            x.as_object_mut().unwrap().remove(k);
            x.to_string()
        };
        let mut rows = Rows::default();
        for text in [
            with("created_at", "yesterday".into()),
            with("status", "sleeping".into()),
            with("status", "in_progress".into()),
            with("status", "pending_retry".into()),
            with("status", "completed".into()),
            with("attempts", (-1).into()),
            with("task_id", 5.into()),
            without("max_attempts"),
            without("status"),
            "[]".to_string(),
        ] {
            assert!(!rows.take_snapshot_text(&text, 0), "{text}");
        }
        assert_eq!(rows.len(), 0);
        assert!(rows.take_snapshot_text(&good.to_string(), 0));
    }

    #[test]
    fn a_row_is_small() {
        assert!(std::mem::size_of::<Slot>() <= 112, "{}", std::mem::size_of::<Slot>());
    }
}
