//! `cortex notify test [--sink NAME]` (send a test message now, print what each sink answered)
//! and `cortex notify list [--limit N]` (recent deliveries and their state).

use super::{Ctx, print_json};
use crate::base::clock::format_ts;
use crate::base::error::Result;
use crate::base::text::safe;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message to every sink (or the one named) and print what it answered.
    Test {
        /// Only this sink.
        #[arg(long)]
        sink: Option<String>,
    },
    /// Recent deliveries (oldest first) and their state: pending, delivered, failed.
    List {
        /// At most this many (newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

pub(super) fn run(ctx: &Ctx, cmd: NotifyCommand) -> Result<u8> {
    match cmd {
        NotifyCommand::Test { sink } => test(ctx, sink.as_deref()),
        NotifyCommand::List { limit } => list(ctx, limit),
    }
}

fn test(ctx: &Ctx, sink: Option<&str>) -> Result<u8> {
    let store = ctx.store()?;
    let results = crate::ops::notify::test(&store, sink)?;
    let ok = results.iter().all(|(_, o)| o.acknowledged);
    if ctx.json {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|(s, o)| serde_json::json!({"sink": s, "acknowledged": o.acknowledged, "answer": o.answer}))
            .collect();
        print_json(&v);
    } else {
        for (s, o) in &results {
            println!("{}: {} ({})", safe(s), if o.acknowledged { "OK" } else { "FAILED" }, safe(&o.answer));
        }
    }
    Ok(if ok { 0 } else { 1 })
}

fn list(ctx: &Ctx, limit: usize) -> Result<u8> {
    let (lines, bad) = crate::ops::notify::list::recent(&ctx.home, limit);
    let summary = crate::ops::notify::list::summary(&ctx.home);
    if ctx.json {
        print_json(&serde_json::json!({"deliveries": lines, "unreadable": bad, "summary": summary}));
        return Ok(if bad.is_empty() { 0 } else { 1 });
    }
    if lines.is_empty() {
        println!("No notifications yet.");
    }
    for l in &lines {
        let when = match l.state {
            "pending" => format!("next attempt {}", format_ts(l.next_attempt_at)),
            _ => format!("at {}", crate::base::clock::format_ts_or(l.finished_at, "-")),
        };
        println!(
            "{} {} {} → {} [{}] {} attempt(s), {}: {}",
            format_ts(l.created_at),
            safe(&l.key),
            safe(&l.rule),
            safe(&l.sink),
            l.state.to_uppercase(),
            l.attempts,
            when,
            safe(&l.title)
        );
        if l.state != "delivered"
            && let Some(e) = l.last_error.as_deref().or(l.last_answer.as_deref())
        {
            println!("    last answer: {}", safe(e));
        }
    }
    if let Some(s) = summary {
        println!("Pending: {}", s.pending);
    }
    for b in &bad {
        eprintln!("unreadable: {}", safe(b));
    }
    Ok(if bad.is_empty() { 0 } else { 1 })
}
