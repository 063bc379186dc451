//! `cortex locks [--json]`: every lock of the home, free or held, who holds it (the kernel's
//! lock table, not the note in the file) and since when: the runbook drill's lock probe.

use super::{Ctx, print_json};
use crate::error::Result;

pub fn run(ctx: &Ctx) -> Result<u8> {
    let locks = crate::store::inventory::inventory(&ctx.home);
    if ctx.json {
        print_json(&serde_json::json!({"locks": locks}));
        return Ok(0);
    }
    for l in &locks {
        let who = if l.holders.is_empty() {
            "free".to_string()
        } else {
            let mode = |e: bool| if e { "exclusive" } else { "shared" };
            let list: Vec<String> = l
                .holders
                .iter()
                .map(|h| format!("PID {} ({}, {})", h.pid, super::text::safe(&h.command), mode(h.exclusive)))
                .collect();
            let deleted = if l.state == "held_deleted" { " on its deleted file" } else { "" };
            format!("held by {}{deleted}", list.join(", "))
        };
        let since = match (&l.since, l.since_source, l.holders.is_empty()) {
            (Some(t), Some(src), false) => format!(" since {t} ({})", src.replace('_', " ")),
            (Some(t), Some(src), true) => format!(", last taken {t} ({})", src.replace('_', " ")),
            _ => String::new(),
        };
        println!("{:<44} {who}{since}", l.path);
    }
    Ok(0)
}
