//! The outbox, `coordination/notify/outbox/<key>.json`: one file per notification and sink,
//! written (atomically, durably) before the first attempt to send it, and rewritten after each
//! attempt. It is what makes delivery at-least-once across a crash or SIGKILL: on start every
//! `pending` file is sent again, with the same idempotency key. A finished file stays for
//! `cortex notify list` until the outbox holds more than [`KEEP_FINISHED`] of them.
//! Written by cortex-notify only (one writer; no lock).

use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::store::atomic;
use crate::store::home::Home;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;

/// Finished (delivered or failed) files kept for `cortex notify list`.
pub const KEEP_FINISHED: usize = 500;

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not acknowledged yet: sent (again) when due.
    Pending,
    /// The sink acknowledged it.
    Delivered,
    /// Its deadline passed; a `notification_failed` event says so.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

/// One notification to one sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The idempotency key (also the file's name).
    pub key: String,
    pub rule: String,
    pub sink: String,
    pub state: DeliveryState,
    #[serde(with = "crate::base::clock::ts")]
    pub created_at: Timestamp,
    /// Not sent before (quiet hours); the deadline counts from here.
    #[serde(with = "crate::base::clock::ts")]
    pub send_after: Timestamp,
    #[serde(with = "crate::base::clock::ts")]
    pub deadline_at: Timestamp,
    #[serde(with = "crate::base::clock::ts")]
    pub next_attempt_at: Timestamp,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub last_attempt_at: Option<Timestamp>,
    /// What the sink answered last (secrets masked, cut to 2 KB).
    #[serde(default)]
    pub last_answer: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub finished_at: Option<Timestamp>,
    /// The JSON body (see [`super::body`]), kept so that every attempt sends the same bytes.
    pub body: Value,
}

/// The file of delivery `key`.
pub fn path(home: &Home, key: &str) -> PathBuf {
    home.notify_outbox().join(format!("{key}.json"))
}

/// True when delivery `key` has a file (made before a crash: not made again).
pub fn exists(home: &Home, key: &str) -> bool {
    path(home, key).symlink_metadata().is_ok()
}

fn encode(d: &Delivery) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(d).map_err(|e| Error::encode(format!("delivery {}", d.key), e))
}

/// Writes new deliveries atomically and durably, together (one parallel flush, one directory
/// fsync): when it returns, each is in the outbox and will be sent, whatever happens next.
pub fn write_new(home: &Home, ds: &[Delivery]) -> Result<()> {
    if ds.is_empty() {
        return Ok(());
    }
    atomic::create_dir_all(&home.notify_outbox())?;
    let mut batch = atomic::ReplaceBatch::new();
    for d in ds {
        batch.stage(&path(home, &d.key), &encode(d)?)?;
    }
    batch.commit()
}

/// Rewrites a delivery after an attempt, atomically but without waiting for the disk: losing
/// this write (a power cut) only means the notification is sent again, with the same key, or
/// its failure reported again; at-least-once allows both, and the daemon's loop does not stall
/// behind a busy disk once per attempt.
pub fn update(home: &Home, d: &Delivery) -> Result<()> {
    atomic::write_replace_volatile(&path(home, &d.key), &encode(d)?)
}

/// Every delivery in the outbox, oldest first; a file that cannot be read is named in the
/// second list (it is left where it is, never overwritten).
pub fn list(home: &Home) -> (Vec<Delivery>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let Ok(entries) = std::fs::read_dir(home.notify_outbox()) else { return (out, bad) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || atomic::is_temp_name(&name) || name.starts_with('.') {
            continue;
        }
        let p = e.path();
        match crate::store::open::read_bytes(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Delivery>(&b).map_err(|e| e.to_string()))
        {
            Ok(d) => out.push(d),
            Err(err) => bad.push(format!("{}: {err}", home.relative(&p).display())),
        }
    }
    out.sort_by(|a, b| (a.created_at, &a.key).cmp(&(b.created_at, &b.key)));
    (out, bad)
}

/// Removes the oldest finished deliveries beyond [`KEEP_FINISHED`].
pub fn prune(home: &Home, all: &[Delivery]) {
    let finished: Vec<&Delivery> = all.iter().filter(|d| d.state != DeliveryState::Pending).collect();
    if finished.len() <= KEEP_FINISHED {
        return;
    }
    for d in &finished[..finished.len() - KEEP_FINISHED] {
        let _ = std::fs::remove_file(path(home, &d.key));
    }
}

/// The delay before attempt `attempts + 1`: `initial · 2^(attempts-1)`, at most `max`, times a
/// jitter in [0.5, 1) (`jitter` is that factor's source in [0, 1)), so receivers that come back
/// are not hit by every sender at once.
pub fn backoff(initial: f64, max: f64, attempts: u32, jitter: f64) -> std::time::Duration {
    let exp = initial * 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
    super::config::secs(exp.min(max) * (0.5 + jitter.clamp(0.0, 1.0) / 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let s = |a, j| backoff(1.0, 30.0, a, j).as_secs_f64();
        assert_eq!(s(1, 1.0), 1.0);
        assert_eq!(s(2, 1.0), 2.0);
        assert_eq!(s(4, 1.0), 8.0);
        assert_eq!(s(10, 1.0), 30.0);
        assert_eq!(s(3, 0.0), 2.0);
    }
}
