//! The dashboard's overview data, as JSON values the endpoints serve and the event stream
//! pushes when they change: `GET /overview` (the status and scheduler views, failures in the last
//! hour), `GET /daemons` (each daemon as `cortex status` sees it) and `GET /overview/history`
//! (throughput and failures per minute, enqueue→start latency), all read from the files, so a
//! restart of any daemon loses no history.

use crate::base::clock::{Timestamp, format_ts};
use crate::base::daemon_name::Daemon;
use crate::daemons::metrics::Snapshot as MetricsSnapshot;
use crate::domain::task::DispatchStatus;
use crate::ops::status::StatusReader;
use crate::ops::supervisor::{registry, status::daemon_status};
use crate::store::files;
use serde_json::{Value, json};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Dispatch states that count as a failure (a cancel is the operator's, not one).
fn is_failure(s: DispatchStatus) -> bool {
    matches!(s, DispatchStatus::Failed | DispatchStatus::Timeout | DispatchStatus::Lost | DispatchStatus::Zombie)
}

/// `GET /overview`: `{"status", "scheduler", "failed_1h"}`. Costs what `/status` costs: the
/// reader's cached files.
pub(crate) fn overview(reader: &StatusReader) -> Value {
    let now = chrono::Utc::now();
    let hour_ago = now - chrono::Duration::hours(1);
    let failed_1h = reader.dispatches().ok().map(|d| {
        d.iter()
            .filter(|e| is_failure(e.record.status()) && e.record.state.ended_at().is_some_and(|t| t >= hour_ago))
            .count()
    });
    let status = reader.system_status().map(|s| serde_json::to_value(s).unwrap_or(Value::Null));
    let scheduler = reader.scheduler_status().map(|s| serde_json::to_value(s).unwrap_or(Value::Null));
    json!({
        "status": status.unwrap_or(Value::Null),
        "scheduler": scheduler.unwrap_or(Value::Null),
        "failed_1h": failed_1h,
    })
}

/// What of an overview changes by itself with time (uptimes, ages, windows): left out when
/// deciding whether it changed.
pub(crate) fn overview_key(v: &Value) -> Value {
    let mut v = v.clone();
    for (section, fields) in [
        ("status", &["uptime_s", "recent_since", "recent_dispatch_count"][..]),
        ("scheduler", &["uptime", "last_tick", "paused_duration"][..]),
    ] {
        if let Some(m) = v.get_mut(section).and_then(Value::as_object_mut) {
            for f in fields {
                m.remove(*f);
            }
        }
    }
    v
}

/// `GET /daemons`: `{"daemons": [...]}`, each as `cortex status --json` shows it.
pub(crate) fn daemons(reader: &StatusReader) -> Value {
    let home = reader.home();
    let config = reader.config();
    let sup = registry::read_state(home);
    let list: Vec<Value> = Daemon::ALL
        .iter()
        .map(|d| serde_json::to_value(daemon_status(home, &config, &sup, *d)).unwrap_or(Value::Null))
        .collect();
    json!({ "daemons": list })
}

/// What of `/daemons` is a change worth a push: name, state, PID, restarts (not uptime or CPU).
pub(crate) fn daemons_key(v: &Value) -> Vec<(Value, Value, Value, Value)> {
    v["daemons"]
        .as_array()
        .map(|a| {
            a.iter().map(|d| (d["name"].clone(), d["state"].clone(), d["pid"].clone(), d["restarts"].clone())).collect()
        })
        .unwrap_or_default()
}

/// The snapshots of `path` at or after `since`, oldest first, reading the file from its end back
/// only as far as `since` (a 64 KiB block at a time).
fn snapshots_since(path: &Path, since: Timestamp, out: &mut Vec<MetricsSnapshot>) -> bool {
    let Ok(mut f) = crate::store::open::read(path) else { return false };
    let Ok(len) = f.metadata().map(|m| m.len()) else { return false };
    const BLOCK: u64 = 64 * 1024;
    let mut end = len;
    let mut carry: Vec<u8> = Vec::new();
    let mut found: Vec<MetricsSnapshot> = Vec::new();
    let mut reached = false;
    while end > 0 && !reached {
        let start = end.saturating_sub(BLOCK);
        let mut block = vec![0u8; (end - start) as usize];
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_exact(&mut block).is_err() {
            break;
        }
        block.extend_from_slice(&carry);
        let mut lines: Vec<&[u8]> = block.split(|b| *b == b'\n').collect();
        // The first piece may be the end of a line that starts in the block before.
        carry = if start > 0 { lines.remove(0).to_vec() } else { Vec::new() };
        for line in lines.iter().rev() {
            if let Ok(s) = serde_json::from_slice::<MetricsSnapshot>(line) {
                if s.timestamp < since {
                    reached = true;
                    break;
                }
                found.push(s);
            }
        }
        end = start;
    }
    found.reverse();
    found.append(out);
    *out = found;
    reached
}

/// `GET /overview/history?minutes=N` (1–1440, default 60): per minute, tasks completed and
/// failed and dispatch attempts failed (differences of the cumulative counts of consecutive
/// metrics snapshots, the current file and its newest rotated copy), and enqueue→start latency
/// percentiles of the first attempts started in the window (task creation to dispatch start,
/// from the dispatch records and the queue).
pub(crate) fn history(reader: &StatusReader, minutes: u32) -> Value {
    let now = chrono::Utc::now();
    let minutes = minutes.clamp(1, 1440) as i64;
    let since = now - chrono::Duration::minutes(minutes);
    let path = reader.home().coord_file(files::METRICS_SNAPSHOTS);
    let mut snaps = Vec::new();
    if !snapshots_since(&path, since, &mut snaps) {
        snapshots_since(&crate::store::rotation::rotated_names(&path, 1).0, since, &mut snaps);
    }
    let start_minute = since.timestamp() / 60;
    let mut points: Vec<[u64; 3]> = vec![[0; 3]; minutes as usize + 1];
    for pair in snaps.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let i = (b.timestamp.timestamp() / 60 - start_minute).clamp(0, minutes) as usize;
        points[i][0] += b.tasks.completed.saturating_sub(a.tasks.completed);
        points[i][1] += b.tasks.failed.saturating_sub(a.tasks.failed);
        points[i][2] += b.workers.failed.saturating_sub(a.workers.failed);
    }
    let points: Vec<Value> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let t = chrono::DateTime::from_timestamp((start_minute + i as i64) * 60, 0).unwrap_or(now);
            json!({"t": format_ts(t), "completed": p[0], "failed": p[1], "attempts_failed": p[2]})
        })
        .collect();
    json!({
        "minutes": minutes,
        "snapshots": snaps.len(),
        "points": points,
        "latency_s": latency(reader, since),
    })
}

/// Enqueue→start latency (seconds) of the first attempts started since `since`: p50, p90, p99.
fn latency(reader: &StatusReader, since: Timestamp) -> Value {
    let (Ok(dispatches), Ok(created)) = (reader.dispatches(), reader.queue_created()) else {
        return json!({"p50": null, "p90": null, "p99": null, "samples": 0});
    };
    let mut samples: Vec<f64> = dispatches
        .iter()
        .filter(|d| d.record.attempt <= 1 && d.record.dispatched_at >= since)
        .filter_map(|d| {
            let made = created.created.get(&d.record.task_id)?;
            Some((d.record.dispatched_at - *made).num_milliseconds().max(0) as f64 / 1000.0)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| crate::daemons::metrics::snapshot::percentile(&samples, p);
    json!({"p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0), "samples": samples.len()})
}
