//! `cortex locks [--json]`: every lock of the home, free or held, who holds it (the kernel's
//! lock table, not the note in the file) and since when: the runbook drill's lock probe.

use super::{Ctx, print_json};
use crate::base::error::Result;
use crate::base::text::safe;
use crate::store::inventory::LockInfo;

pub(super) fn run(ctx: &Ctx) -> Result<u8> {
    let locks = crate::store::inventory::inventory(&ctx.home);
    if ctx.json {
        print_json(&serde_json::json!({"locks": locks}));
        return Ok(0);
    }
    for l in &locks {
        println!("{}", line(l));
    }
    Ok(0)
}

/// One lock as a line. The file name (any name in `coordination/.locks/`) and the time taken
/// from the holder note (file content) go through [`safe`] like every other value from a file.
fn line(l: &LockInfo) -> String {
    let who = if l.holders.is_empty() {
        "free".to_string()
    } else {
        let mode = |e: bool| if e { "exclusive" } else { "shared" };
        let list: Vec<String> =
            l.holders.iter().map(|h| format!("PID {} ({}, {})", h.pid, safe(&h.command), mode(h.exclusive))).collect();
        let deleted = if l.state == "held_deleted" { " on its deleted file" } else { "" };
        format!("held by {}{deleted}", list.join(", "))
    };
    let since = match (&l.since, l.since_source, l.holders.is_empty()) {
        (Some(t), Some(src), false) => format!(" since {} ({})", safe(t), src.replace('_', " ")),
        (Some(t), Some(src), true) => format!(", last taken {} ({})", safe(t), src.replace('_', " ")),
        _ => String::new(),
    };
    format!("{:<44} {who}{since}", safe(&l.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_lock_name_and_note_reach_the_terminal_escaped() {
        let l = LockInfo {
            path: "coordination/.locks/\u{1b}]0;owned\u{7}.lock".into(),
            kind: "lock",
            exists: true,
            state: "free",
            holders: Vec::new(),
            since: Some("\u{1b}[2J\u{202e}2026".into()),
            since_source: Some("holder_note"),
            note: None,
        };
        let shown = line(&l);
        assert!(!shown.chars().any(|c| c.is_control() || c == '\u{202e}'), "{shown:?}");
        assert!(shown.contains("\\u{1b}]0;owned") && shown.contains("last taken \\u{1b}[2J"), "{shown}");
    }
}
