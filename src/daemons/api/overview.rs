//! The dashboard's overview data, as JSON values the endpoints serve and the event stream
//! pushes when they change: `GET /overview` (the status and scheduler views, failures in the last
//! hour), `GET /daemons` (each daemon as `cortex status` sees it) and `GET /overview/history`
//! (throughput and failures per minute, enqueue→start latency), all read from the files, so a
//! restart of any daemon loses no history.

use super::task_index::LiveTasks;
use crate::base::clock::{Timestamp, format_ts};
use crate::base::daemon_name::Daemon;
use crate::daemons::metrics::Snapshot as MetricsSnapshot;
use crate::domain::task::DispatchStatus;
use crate::ops::status::{SpecEntry, StatusReader};
use crate::ops::supervisor::{registry, status::daemon_status};
use crate::store::files;
use serde_json::{Value, json};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

/// Dispatch states that count as a failure (a cancel is the operator's, not one).
fn is_failure(s: DispatchStatus) -> bool {
    matches!(s, DispatchStatus::Failed | DispatchStatus::Timeout | DispatchStatus::Lost | DispatchStatus::Zombie)
}

/// The dispatch failures of the last hour, kept between refreshes: the end times of the failed
/// dispatches (sorted) of the reader's dispatch list, gathered again only when the reader gives
/// another list (it re-read a dispatch directory that changed); with the same list, a count is
/// a binary search over the times, whatever the number of records.
#[derive(Default)]
pub(crate) struct FailedWindow(Mutex<Option<FailureEnds>>);

/// The end times of the failures of one dispatch list, oldest first.
struct FailureEnds {
    of: Weak<Vec<Arc<SpecEntry>>>,
    /// Only those at or after `from` (older ones cannot count again: windows only move on).
    from: Timestamp,
    ends: Vec<Timestamp>,
    /// Times the list was walked (tests tell a count from the kept times from a walk).
    walks: u64,
}

impl FailedWindow {
    /// Failures of `list` that ended at or after `since`.
    pub(crate) fn count(&self, list: &Arc<Vec<Arc<SpecEntry>>>, since: Timestamp) -> usize {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let walks = kept.as_ref().map_or(0, |k| k.walks);
        let ends = match kept.as_mut() {
            Some(k) if k.of.ptr_eq(&Arc::downgrade(list)) && k.from <= since => k,
            _ => {
                let mut ends: Vec<Timestamp> = list
                    .iter()
                    .filter(|e| is_failure(e.record.status()))
                    .filter_map(|e| e.record.state.ended_at())
                    .filter(|t| *t >= since)
                    .collect();
                ends.sort_unstable();
                kept.insert(FailureEnds { of: Arc::downgrade(list), from: since, ends, walks: walks + 1 })
            }
        };
        let expired = ends.ends.partition_point(|t| *t < since);
        ends.ends.drain(..expired);
        ends.from = since;
        ends.ends.len()
    }

    #[cfg(test)]
    fn walks(&self) -> u64 {
        self.0.lock().unwrap().as_ref().map_or(0, |k| k.walks)
    }
}

/// `GET /overview`: `{"status", "scheduler", "failed_1h"}`. Costs what `/status` costs: the
/// reader's cached files; the failures of the hour are counted from `failed`'s kept times while
/// the dispatch records did not change.
pub(crate) fn overview(reader: &StatusReader, failed: &FailedWindow) -> Value {
    let now = chrono::Utc::now();
    let hour_ago = now - chrono::Duration::hours(1);
    let failed_1h = reader.dispatches().ok().map(|d| failed.count(&d, hour_ago));
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
pub(crate) fn history(reader: &StatusReader, live: &LiveTasks, minutes: u32) -> Value {
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
        "latency_s": latency(reader, live, since),
    })
}

/// Enqueue→start latency (seconds) of the first attempts started since `since`: p50, p90, p99.
/// Each task's creation time is its row's in the tasks table's rows (the live tasks, followed by
/// offset), looked up only for the dispatches of the window.
fn latency(reader: &StatusReader, live: &LiveTasks, since: Timestamp) -> Value {
    let none = || json!({"p50": null, "p90": null, "p99": null, "samples": 0});
    let Ok(dispatches) = reader.dispatches() else { return none() };
    let first: Vec<&SpecEntry> =
        dispatches.iter().filter(|d| d.record.attempt <= 1 && d.record.dispatched_at >= since).map(|d| &**d).collect();
    if first.is_empty() {
        return none();
    }
    let ids: Vec<&str> = first.iter().map(|d| d.record.task_id.as_str()).collect();
    let Ok(created) = live.created(reader.store(), &ids) else { return none() };
    let mut samples: Vec<f64> = first
        .iter()
        .zip(created)
        .filter_map(|(d, made)| Some((d.record.dispatched_at - made?).num_milliseconds().max(0) as f64 / 1000.0))
        .collect();
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| crate::daemons::metrics::snapshot::percentile(&samples, p);
    json!({"p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0), "samples": samples.len()})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::parse_ts;
    use crate::domain::task::DispatchRecord;
    use crate::store::home::SpecBucket;

    fn at(min: i64) -> Timestamp {
        parse_ts("2026-06-01T12:00:00Z").unwrap() + chrono::Duration::minutes(min)
    }

    /// A record ended `min` minutes from noon in `status` (with the state's own fields).
    fn ended(id: &str, status: &str, min: i64, fields: Value) -> Arc<SpecEntry> {
        let mut v = serde_json::to_value(DispatchRecord::sample(id, "task-1")).unwrap();
        v["status"] = status.into();
        v["ended_at"] = format_ts(at(min)).into();
        for (k, x) in fields.as_object().unwrap() {
            v[k] = x.clone();
        }
        Arc::new(SpecEntry { bucket: SpecBucket::Failed, record: serde_json::from_value(v).unwrap() })
    }

    /// The count the overview made before: every record walked.
    fn walked(list: &[Arc<SpecEntry>], since: Timestamp) -> usize {
        list.iter()
            .filter(|e| is_failure(e.record.status()) && e.record.state.ended_at().is_some_and(|t| t >= since))
            .count()
    }

    #[test]
    fn the_hours_failures_come_from_kept_times_until_the_records_change() {
        let list = Arc::new(vec![
            ended("d1", "failed", -90, json!({"error": "x"})),
            ended("d2", "failed", -30, json!({"error": "x"})),
            ended("d3", "timeout", -10, json!({})),
            ended("d4", "cancelled", -5, json!({})),
            ended("d5", "completed", -5, json!({"exit_code": 0, "duration_s": 1.0})),
            ended("d6", "lost", -1, json!({"reason": "gone"})),
        ]);
        let hour_before = |min: i64| at(min) - chrono::Duration::hours(1);
        let w = FailedWindow::default();
        for (now, expected) in [(0, 3), (25, 3), (31, 2), (50, 2), (51, 1), (59, 1), (60, 0)] {
            assert_eq!(w.count(&list, hour_before(now)), expected, "at +{now} min");
            assert_eq!(walked(&list, hour_before(now)), expected);
        }
        assert_eq!(w.walks(), 1, "the same records: counted from the kept times");
        // Another list (a record was written): walked again, the new failure counted.
        let mut more = (*list).clone();
        more.push(ended("d7", "zombie", 58, json!({"reason": "hung"})));
        more.push(ended("d8", "failed", 59, json!({"error": "x"})));
        let more = Arc::new(more);
        assert_eq!(w.count(&more, hour_before(60)), 2);
        assert_eq!(w.walks(), 2);
        assert_eq!(w.count(&more, hour_before(118)), 2);
        assert_eq!(w.count(&more, hour_before(119)), 1);
        assert_eq!(w.walks(), 2);
        // The clock set back: times dropped already may count again, so the records are walked.
        assert_eq!(w.count(&more, hour_before(0)), walked(&more, hour_before(0)));
        assert_eq!(w.walks(), 3);
    }
}
