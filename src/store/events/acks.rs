//! Acknowledgements of events: `coordination/event-acks.jsonl`, one line per acknowledgement,
//! appended under the `event-acks` lock (so `cortex repair`'s rewrite never loses one).
//!
//! A line acknowledges one event (`event_id`) or every event up to a time (`up_to`, what
//! `cortex event ack --all` writes). `GET /health` counts only unacknowledged critical events
//! in its window; acknowledged ones are still listed, marked `acknowledged`. The file only
//! grows when an operator acknowledges something, and readers follow it by offset
//! ([`AckFollower`]), so a read costs what was appended since the last one. The operation
//! `cortex event ack` and `POST /events/<id>/ack` share is `ops::status::acknowledge`.

use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::store::events::Event;
use crate::store::files;
use crate::store::{Store, jsonl};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One line of `event-acks.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The acknowledged event; absent for an acknowledgement of everything up to `up_to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Every event at or before this time is acknowledged (`--all`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::base::clock::ts::option")]
    pub up_to: Option<Timestamp>,
    /// When the acknowledgement was made.
    #[serde(with = "crate::base::clock::ts")]
    pub at: Timestamp,
    /// Who made it: the local user or the API token's name, and from where.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Appends an acknowledgement (one `write`, under the file's lock).
pub(crate) fn append(store: &Store, ack: &Ack) -> Result<()> {
    if ack.event_id.is_none() == ack.up_to.is_none() {
        return Err(Error::other("an acknowledgement names either one event_id or an up_to time"));
    }
    let _guard = store.lock(files::EVENT_ACKS)?;
    jsonl::append(&store.path(files::EVENT_ACKS), ack)
}

/// What the acknowledgements read so far cover.
#[derive(Debug, Default, Clone)]
pub struct AckSet {
    ids: HashSet<String>,
    up_to: Option<Timestamp>,
}

impl AckSet {
    pub fn add(&mut self, ack: &Ack) {
        if let Some(id) = &ack.event_id {
            self.ids.insert(id.clone());
        }
        if let Some(t) = ack.up_to {
            self.up_to = Some(self.up_to.map_or(t, |u| u.max(t)));
        }
    }

    /// True when `event` is acknowledged by its id or by an `up_to` at or after its time.
    pub fn covers(&self, event: &Event) -> bool {
        self.ids.contains(&event.id) || self.up_to.is_some_and(|u| event.timestamp <= u)
    }
}

/// Follows `event-acks.jsonl` by byte offset: each refresh reads only the lines appended since
/// the previous one (the whole file again only when it was replaced or truncated, e.g. by
/// `cortex repair`). Bad lines are skipped.
#[derive(Debug, Default)]
pub(crate) struct AckFollower {
    file: Option<(u64, u64)>,
    offset: u64,
    set: AckSet,
}

impl AckFollower {
    pub(crate) fn refresh(&mut self, path: &Path) -> Result<&AckSet> {
        // A link planted at the file's name is refused (reported unreadable), never followed:
        // another file's lines must not acknowledge anything.
        let mut f = match crate::store::open::read(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *self = AckFollower::default();
                return Ok(&self.set);
            }
            Err(e) => return Err(crate::store::open::refuse_link(path, "open", e)),
        };
        let meta = f.metadata().map_err(|e| Error::io(path, "stat", e))?;
        let id = (meta.dev(), meta.ino());
        if self.file != Some(id) || meta.len() < self.offset {
            *self = AckFollower { file: Some(id), ..Default::default() };
        }
        if meta.len() > self.offset {
            f.seek(SeekFrom::Start(self.offset)).map_err(|e| Error::io(path, "seek", e))?;
            // Line by line, so a huge (hostile) file is never held in memory whole.
            let mut reader = BufReader::new(f.take(meta.len() - self.offset));
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).map_err(|e| Error::io(path, "read", e))?;
                // A line still being written (no newline yet) is read next time.
                if n == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                if let Ok(ack) = serde_json::from_slice::<Ack>(&line) {
                    self.set.add(&ack);
                }
                self.offset += n as u64;
            }
        }
        Ok(&self.set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::events::{EventKind, Severity};

    fn t(s: &str) -> Timestamp {
        crate::base::clock::parse_ts(s).unwrap()
    }

    fn ev(id: &str, ts: &str) -> Event {
        let mut e = Event::new(EventKind::parse("x"), Severity::Critical, "test", "m");
        e.id = id.into();
        e.timestamp = crate::base::clock::parse_ts(ts).unwrap();
        e
    }

    #[test]
    fn covers_by_id_and_up_to() {
        let mut s = AckSet::default();
        let a = ev("evt-a", "2026-01-01T00:00:00Z");
        let b = ev("evt-b", "2026-01-01T00:00:10Z");
        assert!(!s.covers(&a));
        s.add(&Ack {
            event_id: Some("evt-b".into()),
            up_to: None,
            at: t("2026-01-01T00:00:20Z"),
            by: "me".into(),
            note: None,
        });
        assert!(s.covers(&b) && !s.covers(&a));
        s.add(&Ack {
            event_id: None,
            up_to: Some(t("2026-01-01T00:00:05Z")),
            at: t("2026-01-01T00:00:20Z"),
            by: "me".into(),
            note: None,
        });
        assert!(s.covers(&a));
        // An older up_to never takes back a newer one.
        s.add(&Ack {
            event_id: None,
            up_to: Some(t("2025-01-01T00:00:00Z")),
            at: t("2026-01-01T00:00:20Z"),
            by: "".into(),
            note: None,
        });
        assert!(s.covers(&a));
    }

    #[test]
    fn follower_reads_only_appended_lines_and_skips_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("event-acks.jsonl");
        let mut f = AckFollower::default();
        assert!(!f.refresh(&path).unwrap().covers(&ev("evt-a", "2026-01-01T00:00:00Z")));
        std::fs::write(
            &path,
            "{\"event_id\":\"evt-a\",\"at\":\"2026-01-01T00:00:00Z\",\"by\":\"me\"}\nnot json\n{\"event_id\":\"evt-b\"",
        )
        .unwrap();
        let s = f.refresh(&path).unwrap().clone();
        assert!(s.covers(&ev("evt-a", "2026-01-01T00:00:00Z")));
        assert!(!s.covers(&ev("evt-b", "2026-01-01T00:00:00Z")), "a partial line waits");
        let mut o = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut o, b",\"at\":\"2026-01-01T00:00:00Z\",\"by\":\"me\"}\n").unwrap();
        assert!(f.refresh(&path).unwrap().covers(&ev("evt-b", "2026-01-01T00:00:00Z")));
        // Replaced by a shorter file: read again from the start.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "{\"event_id\":\"evt-c\",\"at\":\"2026-01-01T00:00:00Z\",\"by\":\"me\"}\n").unwrap();
        let s = f.refresh(&path).unwrap();
        assert!(s.covers(&ev("evt-c", "2026-01-01T00:00:00Z")) && !s.covers(&ev("evt-a", "2026-01-01T00:00:00Z")));
    }

    #[test]
    fn a_linked_acks_file_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere.jsonl");
        std::fs::write(&elsewhere, "{\"event_id\":\"evt-a\",\"at\":\"2026-01-01T00:00:00Z\",\"by\":\"me\"}\n").unwrap();
        let path = dir.path().join("event-acks.jsonl");
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let err = AckFollower::default().refresh(&path).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }
}
