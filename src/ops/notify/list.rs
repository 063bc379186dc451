//! `cortex notify list` (recent deliveries and their state) and the notification summary that
//! `cortex status`, `GET /status` and `GET /health` show, read from the outbox and
//! `coordination/notify/state.json`.

use crate::base::clock::Timestamp;
use crate::domain::notify::outbox::{self, DeliveryState};
use crate::domain::notify::state::{FailedDelivery, NotifyState};
use crate::store::home::Home;
use serde::Serialize;
use std::collections::BTreeMap;

/// One line of `cortex notify list`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryLine {
    pub key: String,
    pub rule: String,
    pub sink: String,
    pub state: &'static str,
    pub attempts: u32,
    #[serde(with = "crate::base::clock::ts")]
    pub created_at: Timestamp,
    #[serde(with = "crate::base::clock::ts::option")]
    pub finished_at: Option<Timestamp>,
    #[serde(with = "crate::base::clock::ts")]
    pub next_attempt_at: Timestamp,
    pub title: String,
    pub last_answer: Option<String>,
    pub last_error: Option<String>,
}

/// The last `limit` deliveries, oldest first, and the outbox files that could not be read.
pub fn recent(home: &Home, limit: usize) -> (Vec<DeliveryLine>, Vec<String>) {
    let (all, bad) = outbox::list(home);
    let skip = all.len().saturating_sub(limit);
    let lines = all
        .into_iter()
        .skip(skip)
        .map(|d| DeliveryLine {
            title: d.body.get("title").and_then(|t| t.as_str()).unwrap_or("").to_string(),
            key: d.key,
            rule: d.rule,
            sink: d.sink,
            state: d.state.as_str(),
            attempts: d.attempts,
            created_at: d.created_at,
            finished_at: d.finished_at,
            next_attempt_at: d.next_attempt_at,
            last_answer: d.last_answer,
            last_error: d.last_error,
        })
        .collect();
    (lines, bad)
}

/// What the status views say about notifications.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NotifySummary {
    /// Notifications not acknowledged yet.
    pub pending: usize,
    /// sink → result (`delivered`, `retried`, `failed`) → count.
    pub totals: BTreeMap<String, BTreeMap<String, u64>>,
    /// The last notifications that could not be delivered.
    pub recent_failures: Vec<FailedDelivery>,
}

/// The summary, None when cortex-notify never ran with notifications configured.
pub fn summary(home: &Home) -> Option<NotifySummary> {
    if !home.notify_state().exists() {
        return None;
    }
    let st = NotifyState::load(home).ok()?;
    Some(NotifySummary { pending: st.pending, totals: st.counters, recent_failures: st.recent_failures })
}

/// Counts deliveries in the outbox by state (for `cortex notify list`'s last line).
pub fn counts(home: &Home) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for d in outbox::list(home).0 {
        *out.entry(d.state.as_str()).or_default() += 1;
    }
    for s in [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failed] {
        out.entry(s.as_str()).or_default();
    }
    out
}
