//! Acknowledging events: the operation `cortex event ack` and `POST /events/<id>/ack` share.
//! It reads through the status reader (only events `/health` can count are known) and writes
//! through `store::events::acks` (the `event-acks.jsonl` line) and the event log (the audit).

use super::StatusReader;
use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::store::events::EventKind;
use crate::store::events::acks::{Ack, append};
use serde::Serialize;

/// What `cortex event ack` / `POST /events/<id>/ack` acknowledges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AckTarget {
    /// One event, by id.
    Event(String),
    /// Every event up to now (`--all`, `POST /events/all/ack`).
    All,
}

/// The answer to an acknowledgement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AckOutcome {
    pub status: &'static str,
    /// False when there was nothing left to acknowledge (nothing was written).
    pub changed: bool,
    pub message: String,
    /// The error and critical events this acknowledgement newly covers.
    pub acknowledged: Vec<String>,
    /// The line written to `event-acks.jsonl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<Ack>,
    /// The id of the `event_acknowledged` event that records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_event_id: Option<String>,
}

/// Acknowledges an event (or all of them up to `now`) on behalf of `by`: appends the ack line,
/// then records an `event_acknowledged` event (severity info: it never counts itself). Only
/// events `/health` can count are known here (the reader's window); an unknown id is
/// [`Error::Refused`]. Acknowledging what is already acknowledged writes nothing.
pub(crate) fn acknowledge(
    reader: &StatusReader,
    target: &AckTarget,
    by: &str,
    note: Option<&str>,
    now: Timestamp,
) -> Result<AckOutcome> {
    let acks = reader.acks()?;
    let at = now;
    let note = note.map(str::trim).filter(|n| !n.is_empty()).map(str::to_string);
    let store = reader.store();
    let unchanged = |message: String| AckOutcome {
        status: "success",
        changed: false,
        message,
        acknowledged: Vec::new(),
        ack: None,
        audit_event_id: None,
    };
    let (ack, covered, what) = match target {
        AckTarget::Event(id) => {
            let Some(event) = reader.find_recent_event(now, id)? else {
                let window = reader.config().api.critical_window_seconds.max(3600) as i64;
                return Err(Error::Refused(format!(
                    "no event {id:?} in the last {}: only events /health counts can be acknowledged (see `cortex event list --min-severity error`)",
                    crate::base::clock::human_duration(window)
                )));
            };
            if acks.covers(&event) {
                return Ok(unchanged(format!("Event {id} is already acknowledged")));
            }
            let ack = Ack { event_id: Some(id.clone()), up_to: None, at, by: by.to_string(), note };
            let covered =
                if event.severity >= crate::store::events::Severity::Error { vec![id.clone()] } else { Vec::new() };
            (ack, covered, format!("Event {id} ({}, {})", event.event_type, event.severity.as_str()))
        }
        AckTarget::All => {
            let window = chrono::Duration::seconds(reader.config().api.critical_window_seconds.max(3600) as i64);
            let covered: Vec<String> = reader
                .recent_events(now, window)?
                .into_iter()
                .filter(|e| e.severity >= crate::store::events::Severity::Error && !acks.covers(e))
                .map(|e| e.id)
                .collect();
            if covered.is_empty() {
                return Ok(unchanged("Nothing to acknowledge: no unacknowledged error or critical event".into()));
            }
            let ack = Ack { event_id: None, up_to: Some(at), at, by: by.to_string(), note };
            (ack, covered, format!("Every event up to {}", crate::base::clock::format_ts(at)))
        }
    };
    append(store, &ack)?;
    let message = format!("{what} acknowledged by {by}");
    let audit = store.emit(
        EventKind::EventAcknowledged,
        crate::store::events::Severity::Info,
        match &ack.note {
            Some(n) => format!("{message}: {n}"),
            None => message.clone(),
        },
        serde_json::json!({
            "event_id": ack.event_id,
            "up_to": ack.up_to.map(crate::base::clock::format_ts),
            "by": ack.by,
            "note": ack.note,
            "acknowledged": covered,
        }),
    )?;
    Ok(AckOutcome {
        status: "success",
        changed: true,
        message,
        acknowledged: covered,
        ack: Some(ack),
        audit_event_id: Some(audit.id),
    })
}
