//! The JSONL reader (`store::jsonl`) and `validate`'s JSONL check over arbitrary bytes; the first
//! byte picks which JSONL file's schema applies. Checks that the reader never stops at a bad
//! line: every non-blank line is either a record or counted bad, and the validator counts the
//! same lines.
#![no_main]

use cortex::store::files::{self, FileKind};
use cortex::store::jsonl;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, content)) = data.split_first() else { return };
    let jsonl_files: Vec<_> = files::ALL.iter().filter(|f| f.kind == FileKind::Jsonl).collect();
    let file = jsonl_files[selector as usize % jsonl_files.len()];

    let mut non_blank = 0usize;
    let mut last_line = 0usize;
    jsonl::for_each_line_in(content, |n, line| {
        assert!(n > last_line, "line numbers go up");
        assert!(!line.contains(&b'\n'));
        last_line = n;
        non_blank += 1;
        true
    })
    .expect("reading a slice cannot fail");

    let values: jsonl::JsonlRead<Value> = jsonl::read_bytes(content);
    assert_eq!(values.records.len() + values.bad_count(), non_blank);
    let events: jsonl::JsonlRead<cortex::store::events::Event> = jsonl::read_bytes(content);
    assert_eq!(events.records.len() + events.bad_count(), non_blank);

    let report = cortex::ops::validate::check_jsonl_bytes(file.rel, content, Some(file.schema));
    assert_eq!(report.lines, Some(non_blank));
    assert!(report.bad_lines.unwrap_or(0) >= values.bad_count());
    assert_eq!(report.is_ok(), report.bad_lines == Some(0));
});
