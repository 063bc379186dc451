//! What a notification says: the JSON body every JSON sink receives (webhook POST body, command
//! hook stdin) and the plain text of Signal and email. The body, documented in the README:
//!
//! ```json
//! {"idempotency_key": "ntf-…", "rule": "…", "sink": "…", "created_at": "RFC 3339",
//!  "severity": "error", "title": "one line", "text": "several lines",
//!  "event_count": 3, "suppressed": 0, "test": false,
//!  "events": [{"id", "timestamp", "type", "severity", "source", "message", "data"}, …]}
//! ```
//!
//! `events` are the event log's lines as they are (at most 20; `event_count` says how many
//! matched): messages arrive intact as JSON strings, whatever bytes they hold. `title` and `text`
//! are for people: control characters are escaped and long messages cut.

use super::rules::Notification;
use crate::base::clock::format_ts;
use serde_json::{Value, json};

/// The longest message shown in `text`, in characters.
const TEXT_MESSAGE_CHARS: usize = 1000;
/// The longest message shown in `title`, in characters.
const TITLE_MESSAGE_CHARS: usize = 160;

/// The JSON body of `n` for `sink`, with its idempotency key.
pub fn body(n: &Notification, sink: &str) -> Value {
    json!({
        "idempotency_key": n.key(sink),
        "rule": n.rule,
        "sink": sink,
        "created_at": format_ts(n.created_at),
        "severity": n.severity,
        "title": title(n),
        "text": text(n),
        "event_count": n.event_count,
        "suppressed": n.suppressed,
        "test": false,
        "events": n.events,
    })
}

fn cut(s: &str, max: usize) -> String {
    let safe = crate::base::text::safe(s);
    let mut out: String = safe.chars().take(max).collect();
    if safe.chars().count() > max {
        out.push('…');
    }
    out
}

/// One line: `[error] failure_notification: Worker type … (rule r)`.
pub fn title(n: &Notification) -> String {
    let first = n.events.first();
    let what = first.map_or("", |e| e.event_type.as_str());
    let msg = first.map_or(String::new(), |e| cut(&e.message, TITLE_MESSAGE_CHARS));
    if n.event_count > 1 {
        format!("[{}] {} events ({what}: {msg}…) (rule {})", n.severity.as_str(), n.event_count, n.rule)
    } else {
        format!("[{}] {what}: {msg} (rule {})", n.severity.as_str(), n.rule)
    }
}

/// The lines of the message: one per event kept, then what was left out.
pub fn text(n: &Notification) -> String {
    let mut lines: Vec<String> = n
        .events
        .iter()
        .map(|e| {
            format!(
                "{} [{}] {} from {}: {}",
                format_ts(e.timestamp),
                e.severity.as_str(),
                e.event_type,
                cut(&e.source, 64),
                cut(&e.message, TEXT_MESSAGE_CHARS)
            )
        })
        .collect();
    let more = n.event_count.saturating_sub(n.events.len() as u64);
    if more > 0 {
        lines.push(format!("… and {more} more event(s)"));
    }
    if n.suppressed > 0 {
        lines.push(format!("{} earlier match(es) held back by the throttle of rule {}", n.suppressed, n.rule));
    }
    lines.join("\n")
}

/// The body of a test message (`cortex notify test`).
pub fn test_body(sink: &str, key: &str, now: crate::base::clock::Timestamp) -> Value {
    json!({
        "idempotency_key": key,
        "rule": "test",
        "sink": sink,
        "created_at": format_ts(now),
        "severity": "info",
        "title": "[info] Cortex test notification",
        "text": format!("This is a test from `cortex notify test` at {}.", format_ts(now)),
        "event_count": 0,
        "suppressed": 0,
        "test": true,
        "events": [],
    })
}
