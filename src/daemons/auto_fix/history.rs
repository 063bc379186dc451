//! `coordination/auto-fix/fix-history.jsonl`: one line per restart decision and per fix
//! (applied, needing approval, skipped, failed, validated, rolled back). It is also auto-fix's
//! memory: rate limits, cooldowns and pending validations are read back from it.

use crate::base::clock::{Timestamp, format_ts};
use crate::base::error::{Error, Result};
use crate::store::home::Home;
use crate::store::jsonl;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One line of the history. Its times go through the one serde format (`clock::ts`); every other
/// field (`record`, `fix_id`, ...) stays JSON, read by indexing (`rec["fix_id"]`, `Null` when
/// absent). A line whose `timestamp` or `validate_after` is not a time is a bad line, skipped
/// and counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HistoryRecord {
    #[serde(with = "crate::base::clock::ts")]
    pub timestamp: Timestamp,
    /// When an applied fix is validated (`fix_applied` with a backup).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::base::clock::ts::option")]
    pub validate_after: Option<Timestamp>,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl std::ops::Index<&str> for HistoryRecord {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.fields.get(key).unwrap_or(&NULL)
    }
}

/// Appends one record `{timestamp, record, ...fields}` (a `validate_after` among `fields` is
/// written as given: `format_ts` of the time).
pub(crate) fn append(home: &Home, record: &str, fields: Value, now: Timestamp) -> Result<HistoryRecord> {
    let mut m = Map::new();
    m.insert("timestamp".into(), Value::String(format_ts(now)));
    m.insert("record".into(), Value::String(record.into()));
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    let v = Value::Object(m);
    let rec: HistoryRecord =
        serde_json::from_value(v.clone()).map_err(|e| Error::encode(home.fix_history().display().to_string(), e))?;
    jsonl::append(&home.fix_history(), &v)?;
    Ok(rec)
}

/// Every readable record, oldest first (malformed lines are skipped).
pub(crate) fn read(home: &Home) -> Result<Vec<HistoryRecord>> {
    let r: jsonl::JsonlRead<HistoryRecord> = jsonl::read(&home.fix_history())?;
    if r.bad_count() > 0 {
        tracing::warn!("{} malformed line(s) in {}", r.bad_count(), home.fix_history().display());
    }
    Ok(r.records)
}

/// Restarts decided in the minute before `now`: (time, worker type).
pub(crate) fn recent_restarts(records: &[HistoryRecord], now: Timestamp) -> Vec<(Timestamp, String)> {
    let since = now - chrono::Duration::seconds(60);
    records
        .iter()
        .filter(|r| r["record"] == "restart_decision" && r["decision"] == "restart")
        .map(|r| (r.timestamp, r["worker_type"].as_str().unwrap_or("").to_string()))
        .filter(|(t, _)| *t > since && *t <= now)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::parse_ts;
    use serde_json::json;

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        std::fs::create_dir_all(home.fix_history().parent().unwrap()).unwrap();
        (dir, home)
    }

    #[test]
    fn history_lines_are_written_as_before_and_read_in_every_time_form() {
        let (_dir, home) = home();
        let now = parse_ts("2026-01-01T00:00:01.5Z").unwrap();
        let fields = json!({"fix_id": "f", "application_id": "a", "validate_after": "2026-01-01T00:05:01.500000Z"});
        let rec = append(&home, "fix_applied", fields, now).unwrap();
        let text = std::fs::read_to_string(home.fix_history()).unwrap();
        assert_eq!(
            text,
            "{\"application_id\":\"a\",\"fix_id\":\"f\",\"record\":\"fix_applied\",\
             \"timestamp\":\"2026-01-01T00:00:01.500000Z\",\"validate_after\":\"2026-01-01T00:05:01.500000Z\"}\n"
        );
        assert_eq!((rec.timestamp, rec["fix_id"].as_str(), rec["absent"].is_null()), (now, Some("f"), true));
        jsonl::append_raw(
            &home.fix_history(),
            b"{\"record\":\"restart_decision\",\"decision\":\"restart\",\"worker_type\":\"w\",\"timestamp\":\"2026-01-01T01:00:30+01:00\"}\n",
        )
        .unwrap();
        let all = read(&home).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], rec);
        assert_eq!(all[0].validate_after, parse_ts("2026-01-01T00:05:01.5Z"));
        let later = parse_ts("2026-01-01T00:00:40Z").unwrap();
        assert_eq!(recent_restarts(&all, later), vec![(parse_ts("2026-01-01T00:00:30Z").unwrap(), "w".to_string())]);
    }

    /// Before, a malformed `timestamp` read as "no time" (the fix's cooldown was taken as over,
    /// a restart left out of the rate limit) and a malformed `validate_after` as "never
    /// validate"; now such a line is a bad line, skipped and counted like any other.
    #[test]
    fn a_history_line_with_a_malformed_time_is_skipped_and_counted() {
        let (_dir, home) = home();
        let lines = [
            "{\"record\":\"fix_applied\",\"fix_id\":\"f\",\"timestamp\":\"2026-01-01T00:00:00Z\"}",
            "{\"record\":\"fix_applied\",\"fix_id\":\"g\",\"timestamp\":\"at noon\"}",
            "{\"record\":\"fix_applied\",\"fix_id\":\"h\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"validate_after\":\"later\"}",
        ];
        std::fs::write(home.fix_history(), lines.join("\n") + "\n").unwrap();
        let all = read(&home).unwrap();
        assert_eq!(all.iter().map(|r| r["fix_id"].as_str().unwrap()).collect::<Vec<_>>(), vec!["f"]);
        let raw: jsonl::JsonlRead<HistoryRecord> = jsonl::read(&home.fix_history()).unwrap();
        assert_eq!(raw.bad_count(), 2);
    }
}
