//! Following the event log from a persisted byte offset tied to the file's inode, so each event
//! is read once across the reader's restarts; when the log was rotated (renamed to `.1`), the rest
//! of the old file is read first, then the new file from its start. The failure-pattern and the
//! notify daemons keep an [`EventCursor`] in their state files.

use crate::base::error::{Error, Result};
use crate::store::events::Event;
use crate::store::home::Home;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Where reading the event log got to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventCursor {
    /// Byte offset of the first unread byte.
    pub offset: u64,
    /// Device and inode of the file the offset belongs to (a rotation replaces the file).
    #[serde(default)]
    pub dev: u64,
    #[serde(default)]
    pub ino: u64,
}

impl EventCursor {
    /// A cursor at the current end of the log (nothing before now is read): where a reader that
    /// has no cursor yet and wants only what happens from now on starts.
    pub fn at_end(home: &Home) -> EventCursor {
        match std::fs::metadata(home.events_file()) {
            Ok(m) => EventCursor { offset: m.len(), dev: m.dev(), ino: m.ino() },
            Err(_) => EventCursor::default(),
        }
    }
}

/// Opens `path` for reading; `None` when it does not exist.
fn open(path: &Path) -> Result<Option<std::fs::File>> {
    match std::fs::File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, "open", e)),
    }
}

/// Reads complete lines of the open file `f` (named `path`) from `offset`; returns the events
/// and the new offset (a final line without its newline is left for the next read).
fn read_from(f: &mut std::fs::File, path: &Path, offset: u64, out: &mut Vec<Event>) -> Result<u64> {
    f.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(path, "seek", e))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|e| Error::io(path, "read", e))?;
    let complete = match buf.iter().rposition(|b| *b == b'\n') {
        Some(p) => p + 1,
        None => 0,
    };
    for line in buf[..complete].split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Ok(ev) = serde_json::from_slice::<Event>(line) {
            out.push(ev);
        }
    }
    Ok(offset + complete as u64)
}

/// The events appended since `cursor`, advancing it. Each file is opened once and its identity
/// taken from the open handle, so the offset always belongs to the bytes it counted, however
/// the log rotates meanwhile.
pub fn read_new_events(home: &Home, cursor: &mut EventCursor) -> Result<Vec<Event>> {
    let path = home.events_file();
    let mut out = Vec::new();
    let Some(mut file) = open(&path)? else { return Ok(out) };
    let meta = file.metadata().map_err(|e| Error::io(&path, "stat", e))?;
    let same_file = cursor.ino == meta.ino() && cursor.dev == meta.dev();
    if cursor.ino != 0 && !same_file {
        // Rotated: finish the old file if it is still among the rotated copies.
        for n in 1..=64u32 {
            let (old, _) = crate::store::rotation::rotated_names(&path, n);
            let Some(mut f) = open(&old)? else { break };
            let m = f.metadata().map_err(|e| Error::io(&old, "stat", e))?;
            if m.ino() == cursor.ino && m.dev() == cursor.dev {
                read_from(&mut f, &old, cursor.offset, &mut out)?;
                break;
            }
        }
        *cursor = EventCursor { offset: 0, dev: meta.dev(), ino: meta.ino() };
    } else if cursor.ino == 0 {
        *cursor = EventCursor { offset: 0, dev: meta.dev(), ino: meta.ino() };
    } else if meta.len() < cursor.offset {
        // Truncated in place: start again from the top.
        cursor.offset = 0;
    }
    cursor.offset = read_from(&mut file, &path, cursor.offset, &mut out)?;
    Ok(out)
}

/// Device and inode of a file, if it exists.
pub fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::events::{EventKind, Severity};

    fn emit(home: &Home, n: u32) {
        crate::store::events::emit(
            home,
            EventKind::DispatchLost,
            Severity::Error,
            "t",
            format!("{n}"),
            serde_json::json!({"n": n}),
        )
        .unwrap();
    }

    fn ns(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.data["n"].as_u64().unwrap()).collect()
    }

    #[test]
    fn cursor_reads_each_event_once_across_rotation_and_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let mut cursor = EventCursor::default();
        assert!(read_new_events(&home, &mut cursor).unwrap().is_empty());
        emit(&home, 1);
        emit(&home, 2);
        assert_eq!(ns(&read_new_events(&home, &mut cursor).unwrap()), vec![1, 2]);
        // A line still being written is left for later.
        crate::store::jsonl::append_raw(&home.events_file(), b"{\"id\":\"x\"").unwrap();
        assert!(read_new_events(&home, &mut cursor).unwrap().is_empty());
        let len = std::fs::metadata(home.events_file()).unwrap().len();
        assert!(cursor.offset < len);
        // Finish it as a bad line, add one more, then rotate and append to the new file.
        crate::store::jsonl::append_raw(&home.events_file(), b"\n").unwrap();
        emit(&home, 3);
        crate::store::rotation::rotate_file(&home.events_file(), 3).unwrap();
        emit(&home, 4);
        assert_eq!(ns(&read_new_events(&home, &mut cursor).unwrap()), vec![3, 4]);
        assert!(read_new_events(&home, &mut cursor).unwrap().is_empty(), "each event once");
    }
}
