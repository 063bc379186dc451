//! The event log `coordination/dashboard-events.jsonl`: one function every component uses to
//! record what happened (`type`, `severity`, `source`, `message`, `data`), and readers for it.

use crate::base::clock::{Timestamp, format_ts};
use crate::base::error::Result;
use crate::store::home::Home;
use crate::store::jsonl;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) mod acks;
pub mod follow;
pub(crate) mod kind;

pub use kind::EventKind;

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(Severity::Debug),
            "info" => Ok(Severity::Info),
            "warning" | "warn" => Ok(Severity::Warning),
            "error" => Ok(Severity::Error),
            "critical" => Ok(Severity::Critical),
            _ => Err(format!("unknown severity {s:?}: use debug, info, warning, error or critical")),
        }
    }
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(with = "crate::base::clock::ts")]
    pub timestamp: Timestamp,
    #[serde(rename = "type")]
    pub event_type: EventKind,
    pub severity: Severity,
    pub source: String,
    pub message: String,
    #[serde(default)]
    pub data: Map<String, Value>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new unique event id: time, pid and a per-process counter.
fn new_id(now: Timestamp) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("evt-{}-{}-{n}", now.timestamp_micros(), std::process::id())
}

impl Event {
    pub fn new(event_type: EventKind, severity: Severity, source: &str, message: impl Into<String>) -> Self {
        let now = crate::base::clock::now();
        Event {
            id: new_id(now),
            timestamp: now,
            event_type,
            severity,
            source: source.to_string(),
            message: message.into(),
            data: Map::new(),
        }
    }

    /// Attaches a data object (a non-object value is stored under `value`).
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = match data {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        self
    }
}

/// Appends an event to the home's event log (one `write`). If writes of this process failed
/// for lack of space since the last report, the first event that fits is followed by one
/// `storage_write_failed` error event (see [`record_outage`]).
pub fn append(home: &Home, event: &Event) -> Result<()> {
    jsonl::append(&home.events_file(), event)?;
    record_outage(home, &event.source);
    Ok(())
}

/// Appends several events with one `write` (each its own line, in order): for a batch of
/// changes made together, e.g. the pauses and resumes of one group commit.
pub fn append_many(home: &Home, events: &[Event]) -> Result<()> {
    let Some(source) = events.first().map(|e| e.source.clone()) else { return Ok(()) };
    let mut lines = Vec::with_capacity(events.len() * 400);
    for e in events {
        serde_json::to_writer(&mut lines, e)
            .map_err(|err| crate::base::error::Error::encode(format!("event {}", e.event_type), err))?;
        lines.push(b'\n');
    }
    jsonl::append_raw(&home.events_file(), &lines)?;
    record_outage(home, &source);
    Ok(())
}

/// Records, as `source`, the writes of this process that failed for lack of space since the
/// last report ([`crate::store::outage`]), now that a write can succeed. Best effort: when the
/// event does not fit either, the failures stay counted for the next try.
pub fn record_outage(home: &Home, source: &str) {
    let Some(o) = crate::store::outage::take() else { return };
    let event = Event::new(
        EventKind::StorageWriteFailed,
        Severity::Error,
        source,
        format!(
            "{} write(s) failed between {} and {}: {} (last: {}); what they would have recorded is missing",
            o.failed_writes,
            format_ts(o.first_failed_at),
            format_ts(o.last_failed_at),
            o.error,
            o.last_path
        ),
    )
    .with_data(serde_json::json!({
        "failed_writes": o.failed_writes,
        "first_failed_at": format_ts(o.first_failed_at),
        "last_failed_at": format_ts(o.last_failed_at),
        "error": o.error,
        "last_path": o.last_path,
    }));
    if jsonl::append(&home.events_file(), &event).is_err() {
        crate::store::outage::put_back(o);
    }
}

/// Records an event; the short form for callers without a [`crate::store::Store`].
pub fn emit(
    home: &Home,
    event_type: EventKind,
    severity: Severity,
    source: &str,
    message: impl Into<String>,
    data: Value,
) -> Result<Event> {
    let event = Event::new(event_type, severity, source, message).with_data(data);
    append(home, &event)?;
    Ok(event)
}

/// Reads every event; malformed lines are skipped and counted in `bad_lines`.
pub fn read_all(home: &Home) -> Result<jsonl::JsonlRead<Event>> {
    jsonl::read(&home.events_file())
}

/// The last `limit` events that `keep` accepts, oldest first, read from the end of the log back
/// (64 KiB at a time) until that many are found: `cortex event list` costs what it shows, not
/// the log's size. Also the count of malformed lines in the part read.
pub fn read_last(home: &Home, limit: usize, mut keep: impl FnMut(&Event) -> bool) -> Result<(Vec<Event>, usize)> {
    use std::os::unix::fs::FileExt;
    let path = home.events_file();
    let file = match super::open::read(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(super::open::refuse_link(&path, "open", e)),
    };
    let len = file.metadata().map_err(|e| crate::base::error::Error::io(&path, "stat", e))?.len();
    const BLOCK: u64 = 64 * 1024;
    let mut out: Vec<Event> = Vec::new();
    let mut bad = 0;
    // `carry`: the start of a line whose beginning lies in an earlier block.
    let mut carry: Vec<u8> = Vec::new();
    let mut end = len;
    while end > 0 && out.len() < limit {
        let start = end.saturating_sub(BLOCK);
        let mut block = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut block, start).map_err(|e| crate::base::error::Error::io(&path, "read", e))?;
        block.extend_from_slice(&carry);
        // Every line that starts in this block is whole now, except the first one when the
        // block does not start at the file's start.
        let first_whole =
            if start == 0 { 0 } else { block.iter().position(|&b| b == b'\n').map_or(block.len(), |i| i + 1) };
        carry = block[..first_whole].to_vec();
        let mut lines: Vec<&[u8]> = block[first_whole..].split(|&b| b == b'\n').collect();
        lines.reverse();
        for line in lines {
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            match serde_json::from_slice::<Event>(line) {
                Ok(e) if keep(&e) => {
                    out.push(e);
                    if out.len() >= limit {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => bad += 1,
            }
        }
        end = start;
    }
    out.reverse();
    Ok((out, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_with_a_malformed_time_is_a_bad_line_skipped_and_counted_and_old_forms_load() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        std::fs::create_dir_all(home.events_file().parent().unwrap()).unwrap();
        let line = |ts: &str| {
            format!(r#"{{"id":"e-{ts}","timestamp":"{ts}","type":"x","severity":"info","source":"s","message":"m"}}"#)
                + "\n"
        };
        let text = [
            line("2026-01-01T00:00:00.000000Z"),
            line("2026-01-01T00:00:01Z"),
            line("2026-01-01T01:00:02+01:00"),
            line("at noon"),
            line("2026-01-01T00:00:03.5Z"),
        ]
        .concat();
        std::fs::write(home.events_file(), text).unwrap();
        let read = read_all(&home).unwrap();
        assert_eq!(read.bad_lines, vec![4], "the line whose time is not one");
        let times: Vec<String> = read.records.iter().map(|e| crate::base::clock::format_ts(e.timestamp)).collect();
        assert_eq!(
            times,
            [
                "2026-01-01T00:00:00.000000Z",
                "2026-01-01T00:00:01.000000Z",
                "2026-01-01T00:00:02.000000Z",
                "2026-01-01T00:00:03.500000Z"
            ]
        );
        // A new event is written as every event was: microseconds, UTC, `Z`.
        let e = Event::new(EventKind::parse("x"), Severity::Info, "s", "m");
        let v = serde_json::to_value(&e).unwrap();
        let written = v["timestamp"].as_str().unwrap();
        assert_eq!(written.len(), "2026-01-01T00:00:00.000000Z".len(), "{written}");
        assert!(written.ends_with('Z'), "{written}");
        assert_eq!(crate::base::clock::parse_ts(written), Some(e.timestamp));
    }

    #[test]
    fn read_last_matches_a_whole_read_across_blocks_and_bad_lines() {
        let (_dir, store) = crate::store::fresh_store();
        let home = store.home();
        let mut bytes = Vec::new();
        for i in 0..3000 {
            let sev = if i % 7 == 0 { Severity::Error } else { Severity::Info };
            // Messages of varied length, so lines straddle the 64 KiB blocks.
            let e = Event::new(EventKind::TaskCompleted, sev, "test", format!("event {i} {}", "x".repeat(i % 97)));
            bytes.extend_from_slice(&serde_json::to_vec(&e).unwrap());
            bytes.push(b'\n');
            if i % 500 == 250 {
                bytes.extend_from_slice(b"{not json\n\n");
            }
        }
        std::fs::write(home.events_file(), &bytes).unwrap();
        let all = read_all(home).unwrap();
        for (limit, errors_only) in [(10, false), (100, true), (5000, false), (5000, true)] {
            let keep = |e: &Event| !errors_only || e.severity == Severity::Error;
            let want: Vec<String> = all.records.iter().filter(|e| keep(e)).map(|e| e.message.clone()).collect();
            let want = want[want.len().saturating_sub(limit)..].to_vec();
            let (got, bad) = read_last(home, limit, keep).unwrap();
            assert_eq!(got.iter().map(|e| e.message.clone()).collect::<Vec<_>>(), want, "{limit} {errors_only}");
            if limit == 5000 {
                assert_eq!(bad, all.bad_lines.len());
            }
        }
        // The log spans several 64 KiB blocks, so lines straddled their edges.
        assert!(bytes.len() > 4 * 64 * 1024);
    }
}
