//! JSONL files (invariant 4): one compact JSON object per line, appended with a single `write`
//! on an `O_APPEND` descriptor, so concurrent appenders never interleave. Readers skip malformed
//! lines and count them; they never stop at the first bad one.

use crate::base::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// Appends one value as one line. The line is built in memory and written with one `write`.
pub fn append<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut line = serde_json::to_vec(value).map_err(|e| Error::encode(format!("a line for {}", path.display()), e))?;
    line.push(b'\n');
    append_raw(path, &line)
}

/// Appends pre-encoded bytes (one or more whole lines) with a single `write`.
///
/// A torn last line (no trailing newline: a crash or a full disk cut it) is closed first, in the
/// same `write`, so the new line is never glued onto it and lost. Whole-line appends never leave
/// a torn tail, so this costs one `pread` of a byte; two appenders that both see the same torn
/// tail add one blank line, which readers skip.
pub fn append_raw(path: &Path, bytes: &[u8]) -> Result<()> {
    append_once(path, bytes).map(drop).inspect_err(super::outage::note)
}

/// [`append_raw`], then fdatasync: the lines survive a machine crash once this returns.
pub fn append_raw_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    append_once(path, bytes)
        .and_then(|f| f.sync_data().map_err(|e| Error::io(path, "fsync", e)))
        .inspect_err(super::outage::note)
}

/// [`append_raw`], returning the file not yet flushed, for a caller that flushes it together with
/// other files (the coordinator's archive append, flushed with the queue that drops the tasks).
pub fn append_raw_unsynced(path: &Path, bytes: &[u8]) -> Result<std::fs::File> {
    append_once(path, bytes).inspect_err(super::outage::note)
}

fn append_once(path: &Path, bytes: &[u8]) -> Result<std::fs::File> {
    use std::os::unix::fs::FileExt;
    let mut f = super::open::append(path)?;
    let len = f.metadata().map_err(|e| Error::io(path, "stat", e))?.len();
    let mut last = [b'\n'];
    if len > 0 {
        f.read_at(&mut last, len - 1).map_err(|e| Error::io(path, "read the last byte of", e))?;
    }
    let closed;
    let bytes = if last[0] == b'\n' {
        bytes
    } else {
        closed = [b"\n".as_slice(), bytes].concat();
        closed.as_slice()
    };
    let n = f.write(bytes).map_err(|e| Error::io(path, "append to", e))?;
    if n != bytes.len() {
        // A short write: the file system ran out of space (or a size limit) mid-line. Writing the
        // rest either completes the line (space was freed meanwhile) or returns the real reason
        // (ENOSPC, EFBIG) for the caller. A cut line stays behind: readers skip it, the next
        // append starts on a new line, `cortex repair` moves it aside.
        return match f.write(&bytes[n..]) {
            Ok(m) if n + m == bytes.len() => Ok(f),
            Ok(m) => Err(Error::io(
                path,
                "append to",
                std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write ({} of {} bytes)", n + m, bytes.len()),
                ),
            )),
            Err(e) => Err(Error::io(path, "append a whole line to (the line was cut; readers skip it)", e)),
        };
    }
    Ok(f)
}

/// What a reader found in a JSONL file.
#[derive(Debug)]
pub struct JsonlRead<T> {
    pub records: Vec<T>,
    /// 1-based line numbers of lines that did not parse (or had the wrong shape).
    pub bad_lines: Vec<usize>,
}

impl<T> JsonlRead<T> {
    pub fn bad_count(&self) -> usize {
        self.bad_lines.len()
    }
}

/// Reads every line of a JSONL file. A missing file reads as empty. Blank lines are ignored;
/// a final line without a newline (an append in progress) is read if it parses.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<JsonlRead<T>> {
    let mut out = JsonlRead { records: Vec::new(), bad_lines: Vec::new() };
    for_each_line(path, |lineno, line| {
        match serde_json::from_slice::<T>(line) {
            Ok(v) => out.records.push(v),
            Err(_) => out.bad_lines.push(lineno),
        }
        true
    })?;
    Ok(out)
}

/// Calls `f(line_number, bytes)` for each non-blank line until it returns false.
pub fn for_each_line(path: &Path, f: impl FnMut(usize, &[u8]) -> bool) -> Result<()> {
    let file = match super::open::read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(super::open::refuse_link(path, "open", e)),
    };
    let reader = BufReader::with_capacity(1 << 16, file);
    for_each_line_in(reader, f).map_err(|e| Error::io(path, "read", e))
}

/// [`for_each_line`] over any reader (the fuzzer feeds it bytes): line numbers are 1-based and
/// count blank lines; blank (all-whitespace) lines are skipped; a final line without a newline
/// is passed on.
pub fn for_each_line_in(mut reader: impl BufRead, mut f: impl FnMut(usize, &[u8]) -> bool) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut lineno = 0;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        lineno += 1;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if !f(lineno, line) {
            break;
        }
    }
    Ok(())
}

/// [`read`] over bytes already in memory.
pub fn read_bytes<T: DeserializeOwned>(bytes: &[u8]) -> JsonlRead<T> {
    let mut out = JsonlRead { records: Vec::new(), bad_lines: Vec::new() };
    // Reading from a slice cannot fail.
    let _ = for_each_line_in(bytes, |lineno, line| {
        match serde_json::from_slice::<T>(line) {
            Ok(v) => out.records.push(v),
            Err(_) => out.bad_lines.push(lineno),
        }
        true
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_and_counts_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.jsonl");
        append(&p, &serde_json::json!({"a": 1})).unwrap();
        append_raw(&p, b"{not json\n\n").unwrap();
        append(&p, &serde_json::json!({"a": 2})).unwrap();
        let r: JsonlRead<serde_json::Value> = read(&p).unwrap();
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.bad_lines, vec![2]);
    }
}
