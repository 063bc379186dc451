//! `cortex event emit` (both the flag form and the older positional form), `cortex event list`
//! and `cortex event ack ID|--all [--note TEXT]`.

use super::{Ctx, print_json};
use crate::base::error::{Error, Result};
use crate::store::events::Severity;
use clap::Subcommand;
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Append an event: `--type T --severity S --message M [--data JSON] [--source S]`, or the older `TYPE DATA_JSON [SOURCE]`.
    Emit {
        #[arg(long = "type", value_name = "TYPE")]
        event_type: Option<String>,
        #[arg(long, default_value = "info")]
        severity: Severity,
        #[arg(long)]
        message: Option<String>,
        /// A JSON object.
        #[arg(long)]
        data: Option<String>,
        #[arg(long)]
        source: Option<String>,
        /// Older positional form: TYPE DATA_JSON [SOURCE].
        #[arg(value_name = "TYPE DATA_JSON [SOURCE]", num_args = 0..=3)]
        positional: Vec<String>,
    },
    /// List recent events.
    List {
        /// Only events of this type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only events of this severity or worse.
        #[arg(long)]
        min_severity: Option<Severity>,
        /// Only events newer than this (e.g. 1h, 30m).
        #[arg(long)]
        since: Option<String>,
        /// At most this many (newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Acknowledge an event once handled, so `/health` no longer counts it (it stays listed, marked acknowledged).
    Ack {
        /// The event's id (`cortex event list --json`, `/health`'s `recent_events[].id`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Acknowledge every event up to now.
        #[arg(long)]
        all: bool,
        /// What was done about it (recorded with the acknowledgement).
        #[arg(long)]
        note: Option<String>,
    },
}

pub(super) fn run(ctx: &Ctx, cmd: EventCommand) -> Result<u8> {
    match cmd {
        EventCommand::Emit { event_type, severity, message, data, source, positional } => {
            let mut pos = positional.into_iter();
            let event_type = event_type.or_else(|| pos.next()).ok_or_else(|| Error::Config {
                path: None,
                detail: "event emit needs --type TYPE (or TYPE as the first argument)".into(),
            })?;
            let data = data.or_else(|| pos.next());
            let source = source.or_else(|| pos.next()).unwrap_or_else(|| "cli".into());
            let data: Value = match data {
                Some(d) => serde_json::from_str(&d)
                    .map_err(|e| Error::Config { path: None, detail: format!("--data is not JSON: {e}") })?,
                None => Value::Object(Default::default()),
            };
            if !data.is_object() {
                return Err(Error::Config {
                    path: None,
                    detail: "--data must be a JSON object, e.g. '{\"task_id\": \"t1\"}'".into(),
                });
            }
            if event_type.trim().is_empty() {
                return Err(Error::Config { path: None, detail: "the event type must not be empty".into() });
            }
            let message = message
                .or_else(|| data.get("message").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_else(|| event_type.clone());
            let event = crate::store::events::emit(
                &ctx.home,
                crate::store::events::EventKind::parse(&event_type),
                severity,
                &source,
                message,
                data,
            )?;
            if ctx.json {
                print_json(&event);
            } else {
                println!("{}", crate::base::text::safe(&event.id));
            }
            Ok(0)
        }
        EventCommand::Ack { id, all, note } => {
            use crate::ops::status::acknowledge::{AckTarget, acknowledge};
            let store = ctx.store()?;
            let reader = crate::ops::status::StatusReader::new(store, crate::store::config::Config::load(&ctx.home)?);
            let target = match id {
                Some(id) if !all => AckTarget::Event(id),
                _ => AckTarget::All,
            };
            let by = format!("{} (cli)", crate::domain::scheduler_state::local_user());
            let out = acknowledge(&reader, &target, &by, note.as_deref(), chrono::Utc::now())?;
            if ctx.json {
                print_json(&out);
            } else {
                println!("{}", crate::base::text::safe(&out.message));
                if out.changed && out.acknowledged.len() > 1 {
                    println!("{} error/critical event(s) acknowledged", out.acknowledged.len());
                }
            }
            Ok(0)
        }
        EventCommand::List { event_type, min_severity, since, limit } => {
            let since = since
                .map(|s| crate::base::clock::parse_duration(&s).map_err(|e| Error::Config { path: None, detail: e }))
                .transpose()?
                // A span reaching before the calendar's start means "everything".
                .map(|d| {
                    chrono::Duration::from_std(d)
                        .ok()
                        .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
                        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
                });
            // From the log's end back: what it shows, not the whole log (up to [events]
            // max_file_bytes) per call.
            let (events, bad_lines) = crate::store::events::read_last(&ctx.home, limit, |e| {
                event_type.as_ref().is_none_or(|t| e.event_type.as_str() == t)
                    && min_severity.is_none_or(|s| e.severity >= s)
                    && since.is_none_or(|s| e.timestamp >= s)
            })?;
            if ctx.json {
                print_json(&serde_json::json!({"events": events, "malformed_lines": bad_lines}));
            } else {
                for e in &events {
                    println!(
                        "{} {:8} {:24} {:12} {}",
                        crate::base::clock::format_ts(e.timestamp),
                        e.severity.as_str(),
                        crate::base::text::safe(e.event_type.as_str()),
                        crate::base::text::safe(&e.source),
                        crate::base::text::safe(&e.message)
                    );
                }
                if bad_lines > 0 {
                    eprintln!("({bad_lines} malformed line(s) skipped; `cortex repair` moves them aside)");
                }
            }
            Ok(0)
        }
    }
}
