//! `coordination/notify/state.json`, written by cortex-notify only: how far it read the event
//! log, each rule's throttle and open digest, and what it delivered (counters by sink and result
//! for `/metrics`, the pending count and the recent failures for `cortex status` and `/health`).
//! The outbox is written before this file, so a crash in between makes the same notifications
//! again, which their keys recognise (see [`super::outbox`]).

use super::rules::Rules;
use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::store::atomic;
use crate::store::events::follow::EventCursor;
use crate::store::home::Home;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Failures kept in [`NotifyState::recent_failures`].
const RECENT_FAILURES: usize = 20;

/// Results counted per sink: `delivered`, `retried` (an attempt failed, another follows) and
/// `failed` (the deadline passed).
pub const RESULTS: [&str; 3] = ["delivered", "retried", "failed"];

/// A notification that could not be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedDelivery {
    pub key: String,
    pub sink: String,
    pub rule: String,
    #[serde(with = "crate::base::clock::ts")]
    pub failed_at: Timestamp,
    pub error: String,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifyState {
    /// None until notifications are configured (then: the end of the log at that time).
    #[serde(default)]
    pub cursor: Option<EventCursor>,
    #[serde(default, flatten)]
    pub rules: Rules,
    /// sink → result → count, since the home's first notification.
    #[serde(default)]
    pub counters: BTreeMap<String, BTreeMap<String, u64>>,
    /// Deliveries in the outbox not acknowledged yet.
    #[serde(default)]
    pub pending: usize,
    /// The last failures, newest last.
    #[serde(default)]
    pub recent_failures: Vec<FailedDelivery>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub updated_at: Option<Timestamp>,
}

impl NotifyState {
    /// Reads the file; a missing file is the empty state, a bad one is reported.
    pub fn load(home: &Home) -> Result<NotifyState> {
        let path = home.notify_state();
        match crate::store::open::read_bytes(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Corrupt {
                path: path.clone(),
                detail: e.to_string(),
                quarantined: None,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NotifyState::default()),
            Err(e) => Err(crate::store::open::refuse_link(&path, "read", e)),
        }
    }

    /// Reads the file as cortex-notify starts: a bad file (not JSON, a field of the wrong type)
    /// is copied to `coordination/quarantine/` with a `file_quarantined` event naming the field,
    /// and the state starts empty (the cursor then starts at the end of the event log: what was
    /// logged meanwhile is not notified, and nothing is notified twice). Only an unreadable
    /// file (permissions) is an error.
    pub fn load_or_quarantine(store: &crate::store::Store) -> Result<NotifyState> {
        let path = store.home().notify_state();
        let bytes = match crate::store::open::read_bytes(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NotifyState::default()),
            Err(e) => return Err(crate::store::open::refuse_link(&path, "read", e)),
        };
        let value = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) => v,
            Err(e) => {
                store.quarantine(&path, &bytes, "is not JSON", &e.to_string(), "");
                tracing::warn!("{} is not JSON ({e}); starting from the end of the event log", path.display());
                return Ok(NotifyState::default());
            }
        };
        match crate::store::decode_value::<NotifyState>(&value) {
            Ok(state) => Ok(state),
            Err((pointer, expected)) => {
                store.quarantine(&path, &bytes, "has a bad field", &expected, &pointer);
                tracing::warn!(
                    "{} has a bad field at {pointer}: {expected}; starting from the end of the event log",
                    path.display()
                );
                Ok(NotifyState::default())
            }
        }
    }

    /// Replaces the file atomically; `durable` when the cursor or a rule changed (after the
    /// outbox files of what was read are durable), else without waiting for the disk (counters
    /// and the pending count, which the outbox can always rebuild).
    pub fn save(&mut self, home: &Home, now: Timestamp, durable: bool) -> Result<()> {
        self.updated_at = Some(now);
        atomic::create_dir_all(&home.notify_dir())?;
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::encode("notify state", e))?;
        if durable {
            atomic::write_atomic(&home.notify_state(), &bytes)
        } else {
            atomic::write_replace_volatile(&home.notify_state(), &bytes)
        }
    }

    /// Counts one result for `sink`.
    pub fn count(&mut self, sink: &str, result: &str) {
        *self.counters.entry(sink.to_string()).or_default().entry(result.to_string()).or_default() += 1;
    }

    /// Records a delivery that failed for good.
    pub fn failed(&mut self, f: FailedDelivery) {
        self.recent_failures.push(f);
        let extra = self.recent_failures.len().saturating_sub(RECENT_FAILURES);
        self.recent_failures.drain(..extra);
    }
}
