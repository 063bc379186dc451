//! `coordination/auto-fix/fix-history.jsonl`: one line per restart decision and per fix
//! (applied, needing approval, skipped, failed, validated, rolled back). It is also auto-fix's
//! memory: rate limits, cooldowns and pending validations are read back from it.

use crate::base::clock::{Timestamp, format_ts, parse_ts};
use crate::base::error::Result;
use crate::store::home::Home;
use crate::store::jsonl;
use serde_json::{Map, Value};

/// Appends one record `{timestamp, record, ...fields}`.
pub(crate) fn append(home: &Home, record: &str, fields: Value, now: Timestamp) -> Result<Value> {
    let mut m = Map::new();
    m.insert("timestamp".into(), Value::String(format_ts(now)));
    m.insert("record".into(), Value::String(record.into()));
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    let v = Value::Object(m);
    jsonl::append(&home.fix_history(), &v)?;
    Ok(v)
}

/// Every readable record, oldest first (malformed lines are skipped).
pub(crate) fn read(home: &Home) -> Result<Vec<Value>> {
    let r: jsonl::JsonlRead<Value> = jsonl::read(&home.fix_history())?;
    if r.bad_count() > 0 {
        tracing::warn!("{} malformed line(s) in {}", r.bad_count(), home.fix_history().display());
    }
    Ok(r.records)
}

/// The time of a record.
pub(crate) fn time_of(rec: &Value) -> Option<Timestamp> {
    rec.get("timestamp").and_then(Value::as_str).and_then(parse_ts)
}

/// Restarts decided in the minute before `now`: (time, worker type).
pub(crate) fn recent_restarts(records: &[Value], now: Timestamp) -> Vec<(Timestamp, String)> {
    let since = now - chrono::Duration::seconds(60);
    records
        .iter()
        .filter(|r| r["record"] == "restart_decision" && r["decision"] == "restart")
        .filter_map(|r| Some((time_of(r)?, r["worker_type"].as_str().unwrap_or("").to_string())))
        .filter(|(t, _)| *t > since && *t <= now)
        .collect()
}
