//! JSONL appends across processes: several appender processes write large lines (2–8 KB) to one
//! file at once through `store::jsonl::append`; afterwards every line parses, no line is lost,
//! none is interleaved with another, and each writer's lines are in its own order.
//! Also: an append after a torn last line (no trailing newline) still lands on a line of its own.

use crate::support::reexec::{self, child, param, param_name};
use crate::support::*;
use cortex::store::jsonl;
use serde_json::{Value, json};
use std::io::Read;
use std::process::Stdio;

/// The padding of line `seq` of writer `w`: a length in 2048..=8192 and the writer's own letter.
fn pad(w: u64, seq: u64) -> String {
    let len = 2048 + ((w * 7919 + seq * 104_729) % 6145) as usize;
    std::iter::repeat_n((b'a' + w as u8) as char, len).collect()
}

/// Child: waits for the start gate (stdin closed), then appends LINES lines as writer WRITER.
#[test]
fn child_appender() {
    if reexec::role().as_deref() != Some("appender") {
        return;
    }
    let path = std::path::PathBuf::from(param::<String>("FILE"));
    let (w, lines): (u64, u64) = (param("WRITER"), param("LINES"));
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    for seq in 0..lines {
        jsonl::append(&path, &json!({"writer": w, "seq": seq, "pad": pad(w, seq)})).expect("append");
    }
}

#[test]
fn concurrent_appenders_lose_nothing_and_never_interleave() {
    let long = std::env::var_os("CORTEX_TEST_LONG").is_some();
    let (writers, lines): (u64, u64) = if long { (8, 2000) } else { (4, 150) };
    let h = TestHome::new();
    let file = h.join("coordination/stress-appends.jsonl");
    let started = std::time::Instant::now();
    let mut children: Vec<_> = (0..writers)
        .map(|w| {
            child(module_path!(), "child_appender", "appender")
                .env(param_name("FILE"), &file)
                .env(param_name("WRITER"), w.to_string())
                .env(param_name("LINES"), lines.to_string())
                .stdin(Stdio::piped())
                .spawn()
                .expect("spawn appender")
        })
        .collect();
    for c in &mut children {
        drop(c.stdin.take());
    }
    for (i, c) in children.into_iter().enumerate() {
        reexec::finish(&format!("appender {i}"), c);
    }
    let elapsed = started.elapsed();

    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'), "the file ends with a whole line");
    let mut next_seq = vec![0u64; writers as usize];
    for (i, line) in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let v: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!("line {} does not parse ({e}): {}", i + 1, String::from_utf8_lossy(&line[..80]))
        });
        let (w, seq) = (v["writer"].as_u64().unwrap(), v["seq"].as_u64().unwrap());
        assert_eq!(seq, next_seq[w as usize], "line {}: writer {w} out of order or lost a line", i + 1);
        assert_eq!(v["pad"].as_str().unwrap(), pad(w, seq), "line {}: writer {w} line {seq} was mixed", i + 1);
        next_seq[w as usize] += 1;
    }
    assert_eq!(next_seq, vec![lines; writers as usize], "lines per writer");
    let read: jsonl::JsonlRead<Value> = jsonl::read(&file).unwrap();
    assert_eq!((read.records.len() as u64, read.bad_count()), (writers * lines, 0));
    eprintln!("{writers} appenders x {lines} lines ({} KB) in {elapsed:?}: 0 lost, 0 interleaved", bytes.len() / 1024);
    // validate checks every JSONL file under coordination/ line by line.
    let out = h.cortex(&["validate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Regression: a JSONL file whose last line is torn (a crash or a full disk cut it, so it has no
/// newline) used to swallow the next append: the new line was glued onto the torn one and lost.
#[test]
fn append_after_a_torn_last_line_starts_a_new_line() {
    let h = TestHome::new();
    let events = h.join("coordination/dashboard-events.jsonl");
    h.cortex_ok(&["event", "emit", "--type", "first", "--message", "one"]);
    let whole = std::fs::read(&events).unwrap();
    let torn = &whole[..whole.len() / 2];
    std::fs::write(&events, torn).unwrap();
    let id = h.cortex_ok(&["event", "emit", "--type", "after_tear", "--message", "two"]).trim().to_string();
    let after = std::fs::read(&events).unwrap();
    assert!(after.starts_with(torn), "the torn line is kept as it was, for repair");
    let found = h.events_of("after_tear");
    assert_eq!(found.len(), 1, "the new event must be readable: {}", String::from_utf8_lossy(&after));
    assert_eq!(found[0]["id"], id.as_str());
    let read: jsonl::JsonlRead<Value> = jsonl::read(&events).unwrap();
    assert_eq!(read.bad_lines, vec![1], "only the torn line is bad");
}
