//! The fix registry `coordination/config/auto-fix-registry.json`: safe, declarative fixes for
//! the failure patterns the failure-pattern daemon finds (`patterns/failure-patterns.jsonl`).
//! A fix applies to patterns by category/type/worker type/confidence; a fix with
//! `safety_score` < 0.5 is not applied but recorded as `fix_requires_approval`; each
//! (fix, pattern) pair is acted on again only when the pattern grew and its cooldown passed.
//! `adjust_worker_type` changes one numeric field of a worker type within clamps after a backup
//! copy of `config/worker-types.json`; after its validation window, a fix whose pattern kept
//! growing is rolled back from that backup. Everything lands in the fix history.

use super::breaker;
use super::history::{self, HistoryRecord};
use crate::base::clock::{Timestamp, format_ts};
use crate::base::error::{Error, Result};
use crate::store::events::{EventKind, Severity};
use crate::store::files::{self, CoordFile};
use crate::store::home::Home;
use crate::store::{Document, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Below this safety score a fix needs an operator's approval.
pub const APPROVAL_THRESHOLD: f64 = 0.5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixRegistry {
    pub fixes: Vec<Fix>,
}

impl Document for FixRegistry {
    const FILE: &'static CoordFile = files::FIX_REGISTRY;
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    pub fix_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub applies_to: AppliesTo,
    pub safety_score: f64,
    #[serde(default)]
    pub cooldown_seconds: f64,
    /// 0: not validated (and never rolled back).
    #[serde(default)]
    pub validation_window_seconds: f64,
    pub action: FixAction,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppliesTo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub pattern_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdjustOp {
    Multiply,
    Add,
    Set,
}

/// The actions a fix may take. `worker_type` may be `{worker_type}` (the pattern's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FixAction {
    ResetCircuitBreaker {
        #[serde(default)]
        worker_type: Option<String>,
    },
    /// Re-queues (pending_retry now) the most recent failed tasks of the type.
    TriggerWorkerRestart {
        #[serde(default)]
        worker_type: Option<String>,
        #[serde(default)]
        max_tasks: Option<u32>,
    },
    AdjustWorkerType {
        #[serde(default)]
        worker_type: Option<String>,
        field: String,
        op: AdjustOp,
        value: f64,
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
    },
    EmitEvent {
        event_type: String,
        #[serde(default)]
        severity: Option<Severity>,
        #[serde(default)]
        message: Option<String>,
    },
}

impl FixAction {
    pub fn kind(&self) -> &'static str {
        match self {
            FixAction::ResetCircuitBreaker { .. } => "reset_circuit_breaker",
            FixAction::TriggerWorkerRestart { .. } => "trigger_worker_restart",
            FixAction::AdjustWorkerType { .. } => "adjust_worker_type",
            FixAction::EmitEvent { .. } => "emit_event",
        }
    }
}

/// The latest state of one failure pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub pattern_id: String,
    pub category: String,
    pub pattern_type: String,
    pub worker_type: Option<String>,
    pub occurrences: u64,
    pub confidence: f64,
    pub raw: Value,
}

impl Pattern {
    pub fn from_value(v: &Value) -> Option<Pattern> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let worker_type = s("worker_type").or_else(|| {
            v.get("signature").and_then(|sig| sig.get("worker_type")).and_then(Value::as_str).map(str::to_string)
        });
        Some(Pattern {
            pattern_id: s("pattern_id")?,
            category: s("category").unwrap_or_default(),
            pattern_type: s("type").unwrap_or_default(),
            worker_type,
            occurrences: v.pointer("/frequency/total_occurrences").and_then(Value::as_u64).unwrap_or(0),
            confidence: v.get("confidence").and_then(Value::as_f64).unwrap_or(0.0),
            raw: v.clone(),
        })
    }
}

/// Every pattern, the last line of each `pattern_id` winning (the file is upserted).
pub fn read_patterns(home: &Home) -> Result<Vec<Pattern>> {
    let r: crate::store::jsonl::JsonlRead<Value> = crate::store::jsonl::read(&home.failure_patterns_file())?;
    let mut by_id: BTreeMap<String, Pattern> = BTreeMap::new();
    for v in &r.records {
        if let Some(p) = Pattern::from_value(v) {
            by_id.insert(p.pattern_id.clone(), p);
        }
    }
    Ok(by_id.into_values().collect())
}

/// True when `fix` applies to `pattern`.
pub fn applies(fix: &Fix, pattern: &Pattern) -> bool {
    let a = &fix.applies_to;
    fix.enabled
        && a.category.as_ref().is_none_or(|c| *c == pattern.category)
        && a.pattern_type.as_ref().is_none_or(|t| *t == pattern.pattern_type)
        && a.worker_type.as_ref().is_none_or(|w| Some(w) == pattern.worker_type.as_ref())
        && a.min_confidence.is_none_or(|m| pattern.confidence >= m)
}

/// Replaces `{worker_type}`, `{pattern_id}`, `{category}`, `{type}`, `{occurrences}`.
pub fn fill(template: &str, p: &Pattern) -> String {
    template
        .replace("{worker_type}", p.worker_type.as_deref().unwrap_or("unknown"))
        .replace("{pattern_id}", &p.pattern_id)
        .replace("{category}", &p.category)
        .replace("{type}", &p.pattern_type)
        .replace("{occurrences}", &p.occurrences.to_string())
}

/// The worker type an action targets: its own (templated) or the pattern's.
fn target_type(given: &Option<String>, p: &Pattern) -> Result<String> {
    let t = match given {
        Some(t) => fill(t, p),
        None => p.worker_type.clone().unwrap_or_default(),
    };
    if t.is_empty() || t == "unknown" {
        return Err(Error::refused(format!("pattern {} names no worker type", p.pattern_id)));
    }
    Ok(t)
}

/// Should (fix, pattern) be acted on now? Only when it never was, or the pattern grew since the
/// last time and the cooldown has passed; never while an application awaits its validation, and
/// never again after one was rolled back (it did not help: an operator decides what next).
pub(crate) fn due(fix: &Fix, pattern: &Pattern, records: &[HistoryRecord], now: Timestamp) -> bool {
    let same =
        |r: &&HistoryRecord| r["fix_id"] == fix.fix_id.as_str() && r["pattern_id"] == pattern.pattern_id.as_str();
    if records.iter().filter(same).any(|r| r["record"] == "fix_rolled_back") {
        return false;
    }
    let closed: Vec<&str> = records
        .iter()
        .filter(same)
        .filter(|r| r["record"] == "fix_validated")
        .filter_map(|r| r["application_id"].as_str())
        .collect();
    let awaiting = records.iter().filter(same).any(|r| {
        r["record"] == "fix_applied"
            && r.validate_after.is_some()
            && r["application_id"].as_str().is_some_and(|a| !closed.contains(&a))
    });
    if awaiting {
        return false;
    }
    let last = records.iter().rev().find(|r| {
        r["fix_id"] == fix.fix_id.as_str()
            && r["pattern_id"] == pattern.pattern_id.as_str()
            && matches!(
                r["record"].as_str(),
                Some("fix_applied" | "fix_requires_approval" | "fix_skipped" | "fix_failed")
            )
    });
    let Some(last) = last else { return true };
    let grew = pattern.occurrences > last["occurrences"].as_u64().unwrap_or(0);
    let cooled = now >= last.timestamp + chrono::Duration::microseconds((fix.cooldown_seconds.max(0.0) * 1e6) as i64);
    grew && cooled
}

/// What a pass of the registry did.
#[derive(Debug, Clone, Default)]
pub struct RegistryReport {
    pub applied: Vec<String>,
    pub approval_required: Vec<String>,
    pub validated: Vec<String>,
    pub rolled_back: Vec<String>,
    /// When the next pending validation is due.
    pub next_validation: Option<Timestamp>,
}

/// Acts on every due (fix, pattern), then validates fixes whose window has passed.
pub fn run(store: &Store, now: Timestamp) -> Result<RegistryReport> {
    let mut report = RegistryReport::default();
    let registry: FixRegistry = store.load()?;
    let patterns = read_patterns(store.home())?;
    // Validations first, so a fix rolled back now is not applied again in the same pass.
    validate_due(store, &patterns, &history::read(store.home())?, now, &mut report)?;
    let mut records = history::read(store.home())?;
    for pattern in &patterns {
        for fix in registry.fixes.iter().filter(|f| applies(f, pattern)) {
            if !due(fix, pattern, &records, now) {
                continue;
            }
            let base = json!({
                "fix_id": fix.fix_id, "pattern_id": pattern.pattern_id, "worker_type": pattern.worker_type,
                "category": pattern.category, "occurrences": pattern.occurrences, "action": fix.action.kind(),
                "safety_score": fix.safety_score,
            });
            if fix.safety_score < APPROVAL_THRESHOLD {
                let rec = history::append(store.home(), "fix_requires_approval", base.clone(), now)?;
                records.push(rec);
                store.emit(
                    EventKind::FixRequiresApproval,
                    Severity::Warning,
                    format!(
                        "fix {} for pattern {} needs an operator's approval (safety score {} < {APPROVAL_THRESHOLD}); it was not applied",
                        fix.fix_id, pattern.pattern_id, fix.safety_score
                    ),
                    json!({"fix": fix, "pattern": pattern.raw}),
                )?;
                report.approval_required.push(fix.fix_id.clone());
                continue;
            }
            let application_id = crate::domain::task::new_id("fix");
            match apply(store, fix, pattern, &application_id, now) {
                Ok(Some(details)) => {
                    let mut rec = base.clone();
                    rec["application_id"] = json!(application_id);
                    merge(&mut rec, &details);
                    if fix.validation_window_seconds > 0.0 && details.get("backup").is_some() {
                        let at = now + chrono::Duration::microseconds((fix.validation_window_seconds * 1e6) as i64);
                        rec["validate_after"] = json!(format_ts(at));
                    }
                    records.push(history::append(store.home(), "fix_applied", rec.clone(), now)?);
                    store.emit(
                        EventKind::FixApplied,
                        Severity::Info,
                        format!("fix {} applied for pattern {}", fix.fix_id, pattern.pattern_id),
                        rec,
                    )?;
                    report.applied.push(fix.fix_id.clone());
                }
                Ok(None) => {
                    let mut rec = base.clone();
                    rec["reason"] = json!("nothing to change (already at its limit)");
                    records.push(history::append(store.home(), "fix_skipped", rec, now)?);
                }
                Err(e) => {
                    let mut rec = base.clone();
                    rec["reason"] = json!(e.to_string());
                    records.push(history::append(store.home(), "fix_failed", rec.clone(), now)?);
                    store.emit(
                        EventKind::FixFailed,
                        Severity::Warning,
                        format!("fix {} for pattern {} failed: {e}", fix.fix_id, pattern.pattern_id),
                        rec,
                    )?;
                }
            }
        }
    }
    // Applications made in this pass are validated later: note when.
    for rec in records.iter().filter(|r| r["record"] == "fix_applied") {
        if let Some(after) = rec.validate_after
            && after > now
            && !report.validated.iter().chain(&report.rolled_back).any(|a| rec["application_id"] == a.as_str())
        {
            report.next_validation = Some(report.next_validation.map_or(after, |n| n.min(after)));
        }
    }
    Ok(report)
}

fn merge(into: &mut Value, from: &Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
}

/// Applies one fix. `Ok(None)` when there was nothing to change.
pub fn apply(store: &Store, fix: &Fix, p: &Pattern, application_id: &str, now: Timestamp) -> Result<Option<Value>> {
    match &fix.action {
        FixAction::EmitEvent { event_type, severity, message } => {
            let msg = message
                .as_deref()
                .map(|m| fill(m, p))
                .unwrap_or_else(|| format!("fix {} for failure pattern {} ({})", fix.fix_id, p.pattern_id, p.category));
            store.emit(
                EventKind::parse(event_type),
                severity.unwrap_or(Severity::Warning),
                msg,
                json!({"fix_id": fix.fix_id, "pattern_id": p.pattern_id, "worker_type": p.worker_type, "pattern": p.raw}),
            )?;
            Ok(Some(json!({"event_type": event_type})))
        }
        FixAction::ResetCircuitBreaker { worker_type } => {
            let t = target_type(worker_type, p)?;
            let before = breaker::reset(store, &t, &format!("auto-fix {}", fix.fix_id), now)?;
            Ok(before.map(|_| json!({"target_worker_type": t})))
        }
        FixAction::TriggerWorkerRestart { worker_type, max_tasks } => {
            let t = target_type(worker_type, p)?;
            let requeued = requeue_failed(store, &t, max_tasks.unwrap_or(1) as usize, now)?;
            Ok((!requeued.is_empty()).then(|| json!({"target_worker_type": t, "tasks": requeued})))
        }
        FixAction::AdjustWorkerType { worker_type, field, op, value, min, max } => {
            let t = target_type(worker_type, p)?;
            adjust_worker_type(store, &t, field, *op, *value, *min, *max, application_id)
        }
    }
}

/// Re-queues the most recent failed tasks of a type (pending_retry now), unless its breaker is
/// open or restart rate limits are reached; each counts as a restart.
fn requeue_failed(store: &Store, worker_type: &str, max: usize, now: Timestamp) -> Result<Vec<String>> {
    use crate::domain::task::{TaskQueue, TaskState};
    let policy: super::policy::RestartPolicy = store.load()?;
    let breakers: breaker::Breakers = store.load()?;
    if policy.circuit_breaker.enabled && breaker::is_open(&breakers, worker_type, now) {
        return Err(Error::refused(format!("the circuit breaker of {worker_type} is open")));
    }
    let recent = history::recent_restarts(&history::read(store.home())?, now);
    let of_type = recent.iter().filter(|(_, t)| t == worker_type).count();
    let room = (policy.rate_limits.per_type_max_per_minute as usize)
        .saturating_sub(of_type)
        .min((policy.rate_limits.global_max_per_minute as usize).saturating_sub(recent.len()))
        .min(max);
    let ids = store.update::<TaskQueue, _>(|q| {
        let mut failed: Vec<&mut crate::domain::task::Task> = q
            .tasks
            .iter_mut()
            .filter(|t| t.worker_type == worker_type && matches!(t.state, TaskState::Failed { .. }))
            .collect();
        failed.sort_by_key(|t| std::cmp::Reverse(t.completed_at()));
        let mut ids = Vec::new();
        for t in failed.into_iter().take(room) {
            t.state = TaskState::PendingRetry { next_retry_at: now, waiting_reason: None };
            ids.push(t.task_id.clone());
        }
        if !ids.is_empty() {
            q.updated_at = Some(now);
        }
        Ok(ids)
    })?;
    for id in &ids {
        history::append(
            store.home(),
            "restart_decision",
            json!({"task_id": id, "worker_type": worker_type, "decision": "restart", "delay_seconds": 0, "reason": "trigger_worker_restart fix"}),
            now,
        )?;
    }
    Ok(ids)
}

const INTEGER_FIELDS: [&str; 2] = ["default_budget", "max_attempts"];

/// Changes `worker_types.<type>.<field>` within the clamps, after a backup copy of the file.
#[allow(clippy::too_many_arguments)]
fn adjust_worker_type(
    store: &Store,
    worker_type: &str,
    field: &str,
    op: AdjustOp,
    value: f64,
    min: Option<f64>,
    max: Option<f64>,
    application_id: &str,
) -> Result<Option<Value>> {
    let file = files::WORKER_TYPES;
    let path = store.path(file);
    let _guard = store.lock(file)?;
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "read", e))?;
    let mut doc = store.parse_checked(&path, &bytes, Some(file.schema))?;
    let slot = doc
        .pointer_mut(&format!("/worker_types/{worker_type}"))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Error::refused(format!("no worker type {worker_type:?} in {}", path.display())))?;
    let old = match slot.get(field) {
        Some(v) => v.as_f64().ok_or_else(|| Error::refused(format!("{worker_type}.{field} is not a number")))?,
        None if field == "max_attempts" => 3.0,
        None => return Err(Error::refused(format!("{worker_type} has no field {field}"))),
    };
    let mut new = match op {
        AdjustOp::Multiply => old * value,
        AdjustOp::Add => old + value,
        AdjustOp::Set => value,
    };
    if let Some(lo) = min {
        new = new.max(lo);
    }
    if let Some(hi) = max {
        new = new.min(hi);
    }
    let integer = INTEGER_FIELDS.contains(&field);
    if integer {
        new = new.round();
    }
    if (new - old).abs() < 1e-9 {
        return Ok(None);
    }
    let backup = store.home().fix_backups().join(format!("worker-types.{application_id}.json"));
    crate::store::atomic::create_dir_all(&store.home().fix_backups())?;
    crate::store::atomic::write_atomic(&backup, &bytes)?;
    let new_json = if integer { json!(new as i64) } else { json!(new) };
    slot.insert(field.to_string(), new_json.clone());
    crate::store::write_value_checked(&path, &doc, Some(file.schema))?;
    Ok(Some(json!({
        "target_worker_type": worker_type, "field": field, "old_value": old, "new_value": new_json,
        "backup": store.home().relative(&backup).display().to_string(),
    })))
}

/// Validates applied fixes whose window has passed: a pattern that kept growing means no
/// improvement, and the change is rolled back from its backup.
fn validate_due(
    store: &Store,
    patterns: &[Pattern],
    records: &[HistoryRecord],
    now: Timestamp,
    report: &mut RegistryReport,
) -> Result<()> {
    let closed: Vec<&str> = records
        .iter()
        .filter(|r| matches!(r["record"].as_str(), Some("fix_validated" | "fix_rolled_back")))
        .filter_map(|r| r["application_id"].as_str())
        .collect();
    for rec in records.iter().filter(|r| r["record"] == "fix_applied") {
        let (Some(app), Some(after)) = (rec["application_id"].as_str(), rec.validate_after) else {
            continue;
        };
        if closed.contains(&app) {
            continue;
        }
        if now < after {
            continue;
        }
        let at_apply = rec["occurrences"].as_u64().unwrap_or(0);
        let now_count =
            patterns.iter().find(|p| rec["pattern_id"] == p.pattern_id.as_str()).map_or(at_apply, |p| p.occurrences);
        let mut out = json!({
            "application_id": app, "fix_id": rec["fix_id"], "pattern_id": rec["pattern_id"],
            "worker_type": rec["worker_type"], "occurrences_at_apply": at_apply, "occurrences_now": now_count,
        });
        if now_count <= at_apply {
            history::append(store.home(), "fix_validated", out.clone(), now)?;
            store.emit(
                EventKind::FixValidated,
                Severity::Info,
                format!("fix {} helped: pattern {} did not grow", rec["fix_id"], rec["pattern_id"]),
                out,
            )?;
            report.validated.push(app.to_string());
            continue;
        }
        let restored = rollback(store, rec)?;
        out["restored"] = json!(restored.is_ok());
        if let Err(why) = &restored {
            out["reason"] = json!(why);
        }
        history::append(store.home(), "fix_rolled_back", out.clone(), now)?;
        store.emit(
            EventKind::FixRolledBack,
            Severity::Warning,
            format!(
                "fix {} showed no improvement (pattern {} grew from {at_apply} to {now_count}): {}",
                rec["fix_id"],
                rec["pattern_id"],
                match &restored {
                    Ok(()) => "rolled back from its backup".to_string(),
                    Err(why) => format!("not rolled back: {why}"),
                }
            ),
            out,
        )?;
        report.rolled_back.push(app.to_string());
    }
    Ok(())
}

/// Restores the field an `adjust_worker_type` fix changed to its value in the backup, if the
/// field still holds what the fix set (an operator's later edit is never overwritten).
fn rollback(store: &Store, rec: &HistoryRecord) -> Result<std::result::Result<(), String>> {
    let (Some(backup), Some(t), Some(field)) =
        (rec["backup"].as_str(), rec["target_worker_type"].as_str(), rec["field"].as_str())
    else {
        return Ok(Err("the fix left no backup".into()));
    };
    let backup_path = store.home().join(backup);
    let Ok(bytes) = std::fs::read(&backup_path) else {
        return Ok(Err(format!("backup {backup} is missing")));
    };
    let Ok(saved) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(Err(format!("backup {backup} is not JSON")));
    };
    let pointer = format!("/worker_types/{t}/{field}");
    let file = files::WORKER_TYPES;
    let path = store.path(file);
    let _guard = store.lock(file)?;
    let cur_bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "read", e))?;
    let mut doc = store.parse_checked(&path, &cur_bytes, Some(file.schema))?;
    let current = doc.pointer(&pointer).cloned();
    if current.as_ref().and_then(Value::as_f64) != rec["new_value"].as_f64() {
        return Ok(Err(format!("{t}.{field} was changed since the fix ({current:?}); left as it is")));
    }
    let Some(slot) = doc.pointer_mut(&format!("/worker_types/{t}")).and_then(Value::as_object_mut) else {
        return Ok(Err(format!("worker type {t} no longer exists")));
    };
    match saved.pointer(&pointer) {
        Some(old) => {
            slot.insert(field.to_string(), old.clone());
        }
        None => {
            slot.remove(field);
        }
    }
    crate::store::write_value_checked(&path, &doc, Some(file.schema))?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_registry_parses_and_matches_the_schema() {
        let v: Value = serde_json::from_str(files::FIX_REGISTRY.default.unwrap()).unwrap();
        assert!(crate::base::schema::check("auto-fix-registry", &v, 3).is_empty());
        let r: FixRegistry = serde_json::from_value(v).unwrap();
        assert!(r.fixes.iter().any(|f| f.safety_score < APPROVAL_THRESHOLD));
        assert!(r.fixes.iter().any(|f| matches!(f.action, FixAction::AdjustWorkerType { .. })));
    }

    #[test]
    fn matching_and_templates() {
        let p = Pattern::from_value(&json!({
            "pattern_id": "p1", "category": "timeout", "type": "timeout",
            "signature": {"worker_type": "scan-worker"}, "frequency": {"total_occurrences": 6}, "confidence": 0.67
        }))
        .unwrap();
        let mut fix: Fix = serde_json::from_value(json!({
            "fix_id": "f", "applies_to": {"category": "timeout", "min_confidence": 0.67}, "safety_score": 0.9,
            "action": {"kind": "emit_event", "event_type": "x"}
        }))
        .unwrap();
        assert!(applies(&fix, &p));
        fix.applies_to.min_confidence = Some(0.9);
        assert!(!applies(&fix, &p));
        assert_eq!(fill("{worker_type}/{occurrences}", &p), "scan-worker/6");
    }
}
