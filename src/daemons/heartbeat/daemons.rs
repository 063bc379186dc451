//! The daemons' own heartbeats: every daemon refreshes `run/<name>.state.json` from inside its
//! loop's wait, so a daemon whose PID file is held but whose mark is old is hung. The heartbeat
//! daemon reports it to pm with a `daemon_hung` event (once per episode) and `daemon_recovered`
//! when the mark moves again.

use crate::base::clock::{Timestamp, format_ts};
use crate::base::daemon_name::Daemon;
use crate::base::error::Result;
use crate::store::Store;
use crate::store::events::{EventKind, Severity};
use crate::store::pidfile::{self, PidStatus};
use serde_json::json;
use std::collections::HashSet;

/// Checks every other daemon's mark; returns when the next one could turn hung.
pub(crate) fn check_marks(
    store: &Store,
    hung_after_seconds: f64,
    now: Timestamp,
    reported: &mut HashSet<String>,
) -> Result<Option<Timestamp>> {
    let home = store.home();
    let mut next: Option<Timestamp> = None;
    let hung_after = chrono::Duration::microseconds((hung_after_seconds * 1e6) as i64);
    for daemon in Daemon::ALL.into_iter().filter(|d| *d != Daemon::Heartbeat) {
        let pid = match pidfile::status(home, daemon) {
            Ok(PidStatus::Running(pid)) => pid,
            _ => {
                reported.remove(daemon.as_str());
                continue;
            }
        };
        let Some(mark) = crate::store::daemon_mark::read_mark(home, daemon) else { continue };
        let beat = mark.heartbeat_at;
        let hung_at = beat + hung_after;
        if now > hung_at {
            if reported.insert(daemon.to_string()) {
                store.emit(
                    EventKind::DaemonHung,
                    Severity::Error,
                    format!(
                        "daemon {daemon} (PID {pid}) has not refreshed its heartbeat mark since {}: pm should restart it",
                        format_ts(beat)
                    ),
                    json!({"daemon": daemon, "pid": pid, "heartbeat_at": format_ts(beat),
                           "age_seconds": (now - beat).num_seconds(), "hung_after_seconds": hung_after_seconds}),
                )?;
            }
        } else {
            if reported.remove(daemon.as_str()) {
                store.emit(
                    EventKind::DaemonRecovered,
                    Severity::Info,
                    format!("daemon {daemon} (PID {pid}) refreshes its heartbeat mark again"),
                    json!({"daemon": daemon, "pid": pid, "heartbeat_at": format_ts(beat)}),
                )?;
            }
            let at = hung_at + chrono::Duration::milliseconds(1);
            next = Some(next.map_or(at, |n: Timestamp| n.min(at)));
        }
    }
    Ok(next)
}
