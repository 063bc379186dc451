//! The per-dispatch heartbeat file (`CORTEX_HEARTBEAT_FILE`) and usage file
//! (`CORTEX_USAGE_FILE`), written by the task's process. A heartbeat is either a JSON
//! `{sequence, timestamp, tokens_used?, message?}` written atomically (`cortex heartbeat` does
//! this) or a plain touch of the file: its modification time counts too.

use crate::base::clock::{Timestamp, format_ts, parse_ts};
use crate::base::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The content of a heartbeat file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatFile {
    pub sequence: u64,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_used: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the heartbeat daemon sees of a dispatch's heartbeat file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The latest of the file's `timestamp` and its modification time; None when there is no file.
    pub last: Option<Timestamp>,
    /// The file's `sequence`, when it holds JSON.
    pub sequence: Option<u64>,
    pub tokens_used: Option<u64>,
    pub message: Option<String>,
}

/// Reads a heartbeat file. A missing file is `Observed::default()`; an empty or non-JSON file
/// (a touch) still counts through its modification time.
pub fn observe(path: &Path) -> Observed {
    let Ok(meta) = std::fs::metadata(path) else { return Observed::default() };
    let mtime = meta.modified().ok().map(Timestamp::from);
    let parsed: Option<HeartbeatFile> = std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let stamp = parsed.as_ref().and_then(|p| parse_ts(&p.timestamp));
    Observed {
        last: match (stamp, mtime) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        },
        sequence: parsed.as_ref().map(|p| p.sequence),
        tokens_used: parsed.as_ref().and_then(|p| p.tokens_used),
        message: parsed.and_then(|p| p.message),
    }
}

/// Records one heartbeat: reads the previous sequence (0 when none), writes `sequence + 1`
/// with `now` atomically. `tokens_used` and `message` carry over when not given.
pub fn record(path: &Path, tokens_used: Option<u64>, message: Option<String>, now: Timestamp) -> Result<HeartbeatFile> {
    let prev: Option<HeartbeatFile> = std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let beat = HeartbeatFile {
        sequence: prev.as_ref().map_or(0, |p| p.sequence) + 1,
        timestamp: format_ts(now),
        tokens_used: tokens_used.or(prev.as_ref().and_then(|p| p.tokens_used)),
        message: message.or(prev.and_then(|p| p.message)),
    };
    if let Some(dir) = path.parent() {
        crate::store::atomic::create_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec(&beat).map_err(|e| Error::encode("heartbeat", e))?;
    crate::store::atomic::write_atomic(path, &bytes)?;
    Ok(beat)
}

/// Tokens the task reported in its usage file `{tokens_used}` (None when absent or unreadable).
pub fn usage_tokens(path: &Path) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v.get("tokens_used")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_increments_and_fields_carry_over() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d/heartbeat.json");
        let t0 = parse_ts("2030-01-01T00:00:00Z").unwrap();
        let a = record(&p, Some(10), Some("start".into()), t0).unwrap();
        let b = record(&p, None, None, t0 + chrono::Duration::seconds(30)).unwrap();
        assert_eq!((a.sequence, b.sequence), (1, 2));
        assert_eq!(b.tokens_used, Some(10));
        assert_eq!(b.message.as_deref(), Some("start"));
        let o = observe(&p);
        assert_eq!(o.sequence, Some(2));
        // The JSON timestamp is in the future relative to the file's mtime: the later one wins.
        assert_eq!(o.last, Some(t0 + chrono::Duration::seconds(30)));
    }

    #[test]
    fn a_touch_counts_through_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("heartbeat.json");
        assert_eq!(observe(&p), Observed::default());
        std::fs::write(&p, b"").unwrap();
        let o = observe(&p);
        assert!(o.last.is_some());
        assert_eq!(o.sequence, None);
    }
}
