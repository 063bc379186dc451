//! `cortex repair`: the runbook's data-corruption steps, without throwing anything away.
//!
//! - JSONL files: lines that are not JSON (or break their schema) move to `<file>.rejected`
//!   beside it; the good lines stay in order. For the task intake, the queue's `intake_offset`
//!   is moved to the same line in the rewritten file.
//! - `task-queue.json` that does not parse (or breaks its schema): a `.corrupt` copy is kept, every
//!   task object with a `task_id` that is a valid task is salvaged (even from a truncated file),
//!   the rest go to `task-queue.json.rejected`, and the file is rebuilt.
//! - `token-budget.json` and `scheduler-state.json` that are bad: `.corrupt` copy, then rebuilt
//!   (budget reservations from the active dispatches; the scheduler paused, so nothing is
//!   dispatched on a guessed state until an operator resumes it).
//! - Missing essential files: created from their defaults.
//! - Worker specs that do not parse: moved to `worker-specs/quarantine/`.
//! - Configuration files that are bad are reported with the command that restores them.
//! - Temporary files (`.tmp.*`) left by writers killed before their rename are removed.
//!
//! Every change happens under the file's lock and is recorded as a `file_repaired` event.

use crate::base::error::{Error, Result};
use crate::domain::task::dispatch_record;
use crate::domain::task::model::{DispatchRecord, Task};
use crate::ops::progress::{Show, Stage, Unit};
use crate::ops::validate::{Verdict, check_json_bytes};
use crate::store::events::{EventKind, Severity};
use crate::store::files::{self, CoordFile, FileKind};
use crate::store::home::SpecBucket;
use crate::store::{Store, atomic, jsonl};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One thing repair did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RepairAction {
    pub file: String,
    pub action: String,
    /// False for problems repair only reports.
    pub fixed: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RepairReport {
    pub dry_run: bool,
    pub actions: Vec<RepairAction>,
}

impl RepairReport {
    fn push(&mut self, file: String, action: String, fixed: bool) {
        self.actions.push(RepairAction { file, action, fixed });
    }
}

/// Repairs the store's home, showing its progress (files checked) as `progress` says.
pub(crate) fn repair(store: &Store, dry_run: bool, progress: Show) -> Result<RepairReport> {
    let home = store.home().clone();
    let mut report = RepairReport { dry_run, actions: Vec::new() };
    if !dry_run {
        for r in crate::ops::backup::restore::recover_interrupted(&home)? {
            report.push(".".into(), r, true);
        }
    }
    let others = other_jsonl_files(store);
    let checking = Stage::start(progress, "repair: check", (files::ALL.len() + others.len() + 1) as u64, Unit::Items);
    for f in files::ALL {
        checking.inc(1);
        let path = store.path(f);
        let rel = format!("coordination/{}", f.rel);
        if is_link(&path) {
            report.push(rel, LINK_REFUSED.into(), false);
            continue;
        }
        if f.rel == files::TASK_QUEUE_JOURNAL.rel {
            // Not rewritten: its commits name their byte offsets. Readers skip (and quarantine)
            // a bad line and ignore an uncommitted tail, which the next writer truncates; the
            // next compaction drops both.
            continue;
        }
        match f.kind {
            FileKind::Jsonl => repair_jsonl(store, &path, Some(f.schema), Some(f.lock), dry_run, &mut report)?,
            FileKind::Json if path.exists() => repair_json(store, f, &path, dry_run, &mut report)?,
            FileKind::Json => {}
        }
        if f.essential && !path.exists() {
            if !dry_run {
                let content = f.default.unwrap_or(if f.kind == FileKind::Json { "{}" } else { "" });
                crate::store::init::create_if_missing(&path, content.as_bytes())?;
            }
            report.push(rel, "missing: created from its default".into(), true);
        }
    }
    for path in others {
        checking.inc(1);
        if is_link(&path) {
            report.push(rel(store, &path), LINK_REFUSED.into(), false);
            continue;
        }
        repair_jsonl(store, &path, None, None, dry_run, &mut report)?;
    }
    repair_specs(store, dry_run, &mut report)?;
    checking.inc(1);
    checking.finish();
    sweep_temporaries(store, dry_run, &mut report);
    if !dry_run {
        for a in report.actions.iter().filter(|a| a.fixed) {
            let _ = store.emit(
                EventKind::FileRepaired,
                Severity::Warning,
                format!("{}: {}", a.file, a.action),
                json!({"file": a.file, "action": a.action}),
            );
        }
    }
    Ok(report)
}

/// Removes temporary files (`.tmp.*`) that writers killed before their rename left behind in
/// `coordination/` and `run/`: readers ignore them, but they pile up (one per SIGKILL at the
/// wrong moment). Only those whose writer is gone (or that are hours old) go.
fn sweep_temporaries(store: &Store, dry_run: bool, report: &mut RepairReport) {
    let home = store.home();
    for path in atomic::stale_temporaries(&[home.coordination(), home.run_dir()]) {
        let removed = dry_run || std::fs::remove_file(&path).is_ok();
        if removed {
            report.push(rel(store, &path), "temporary file of a writer that died: removed".into(), true);
        }
    }
}

/// What repair says of a coordination file that is a symbolic link: it is neither read (its
/// target's lines would be copied into `.rejected` / `.corrupt` files in the home) nor rewritten.
const LINK_REFUSED: &str = "a symbolic link: not read or repaired (Cortex does not read or write through links \
under its home); replace it with a regular file";

fn is_link(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink())
}

/// `<path><suffix>`, or with a timestamp when that name is taken (nothing is overwritten).
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let first = PathBuf::from(format!("{}{suffix}", path.display()));
    if !first.exists() {
        return first;
    }
    PathBuf::from(format!("{}{suffix}.{}", path.display(), crate::base::clock::now().format("%Y%m%d-%H%M%S%.6f")))
}

fn rel(store: &Store, path: &Path) -> String {
    store.home().relative(path).display().to_string()
}

// ---------------------------------------------------------------------------------------------
// JSONL

/// Other JSONL files under `coordination/` (not registered, not quarantined), except the task
/// archive's sealed segments: they are never rewritten (their index points at byte offsets);
/// readers skip a bad line in one, and its index counts it (`bad_lines`).
fn other_jsonl_files(store: &Store) -> Vec<PathBuf> {
    let (sources, _) = crate::ops::backup::snapshot::sources(store.home());
    sources
        .into_iter()
        .filter(|s| s.rel.starts_with("coordination/") && s.rel.ends_with(".jsonl"))
        .filter(|s| files::by_rel(&s.rel["coordination/".len()..]).is_none())
        .filter(|s| crate::domain::task::archive::segment::segment_of_path(store, &s.abs).is_none())
        .map(|s| s.abs)
        .collect()
}

fn line_ok(line: &[u8], schema: Option<&str>) -> bool {
    match serde_json::from_slice::<Value>(line) {
        Ok(v) => schema.is_none_or(|s| crate::base::schema::is_valid(s, &v)),
        Err(_) => false,
    }
}

/// Splits `bytes` into (start offset, line without newline, had newline).
fn split_lines(bytes: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let end = bytes[start..].iter().position(|&b| b == b'\n').map(|i| start + i + 1).unwrap_or(bytes.len());
        out.push((start, &bytes[start..end]));
        start = end;
    }
    out
}

fn repair_jsonl(
    store: &Store,
    path: &Path,
    schema: Option<&str>,
    lock: Option<crate::store::LockName>,
    dry_run: bool,
    report: &mut RepairReport,
) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let is_intake = lock == Some(crate::store::LockName::TaskIntake);
    let is_archive = lock == Some(crate::store::LockName::TaskArchive);
    // The queue's lock first (lock order task-queue → task-intake / task-archive): the queue's
    // `intake_offset` counts in the intake being rewritten, and the coordinator appends to the
    // archive and seals it under the queue's lock (a line appended to the inode this rewrite
    // replaces would be lost while the queue drops its task).
    let _queue_guard = if (is_intake || is_archive) && !dry_run { Some(store.lock(files::TASK_QUEUE)?) } else { None };
    // The intake's appenders hold its lock shared; exclusive keeps them out while it is rewritten.
    let _guard = match lock {
        Some(l) if !dry_run => Some(store.lock_named(l)?),
        _ => None,
    };
    let mut old = crate::store::open::read(path).map_err(|e| crate::store::open::refuse_link(path, "open", e))?;
    let mut bytes = Vec::new();
    old.read_to_end(&mut bytes).map_err(|e| Error::io(path, "read", e))?;
    let lines = split_lines(&bytes);
    let bad: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, (_, l))| {
            let body = l.strip_suffix(b"\n").unwrap_or(l);
            !body.iter().all(|b| b.is_ascii_whitespace()) && !line_ok(body, schema)
        })
        .map(|(i, _)| i)
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let rejected = PathBuf::from(format!("{}.rejected", path.display()));
    let numbers: Vec<String> = bad.iter().take(10).map(|i| (i + 1).to_string()).collect();
    let msg = format!(
        "{} malformed line(s) (line {}{}) moved to {}; {} good line(s) kept in order",
        bad.len(),
        numbers.join(", "),
        if bad.len() > 10 { ", ..." } else { "" },
        rel(store, &rejected),
        lines.len() - bad.len()
    );
    if dry_run {
        report.push(rel(store, path), msg, true);
        return Ok(());
    }
    let mut good = Vec::with_capacity(bytes.len());
    let mut rejected_bytes = Vec::new();
    let mut new_offset_of = Vec::with_capacity(lines.len() + 1);
    for (i, (_, line)) in lines.iter().enumerate() {
        new_offset_of.push(good.len());
        let target = if bad.binary_search(&i).is_ok() { &mut rejected_bytes } else { &mut good };
        target.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            target.push(b'\n');
        }
    }
    // The rejected lines are kept first, then the file is rewritten.
    jsonl::append_raw(&rejected, &rejected_bytes)?;
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(atomic::FILE_MODE);
    atomic::write_atomic(path, &good)?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    // Lines appended (by writers that take no lock) between the read and the rename went to the
    // old file: carry them over.
    let mut tail = Vec::new();
    if old.seek(SeekFrom::Start(bytes.len() as u64)).is_ok() {
        let _ = old.read_to_end(&mut tail);
    }
    for (_, line) in split_lines(&tail) {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let mut owned = body.to_vec();
        owned.push(b'\n');
        if line_ok(body, schema) {
            jsonl::append_raw(path, &owned)?;
        } else if !body.iter().all(|b| b.is_ascii_whitespace()) {
            jsonl::append_raw(&rejected, &owned)?;
        }
    }
    if is_intake {
        adjust_intake_offset(store, &lines, &new_offset_of, good.len(), report)?;
    }
    report.push(rel(store, path), msg, true);
    Ok(())
}

/// Moves the queue's `intake_offset` to the same line of the rewritten intake.
fn adjust_intake_offset(
    store: &Store,
    lines: &[(usize, &[u8])],
    new_offset_of: &[usize],
    new_len: usize,
    report: &mut RepairReport,
) -> Result<()> {
    let path = store.path(files::TASK_QUEUE);
    // The queue as its readers see it (the journal's last commit carries the offset too); the
    // caller holds the `task-queue` lock.
    let Ok(mut queue) = store.load::<crate::domain::task::model::TaskQueue>() else { return Ok(()) };
    let old = queue.intake_offset;
    let new =
        lines.iter().position(|(start, _)| *start as u64 >= old).map(|i| new_offset_of[i]).unwrap_or(new_len) as u64;
    if new != old {
        queue.intake_offset = new;
        crate::domain::task::journal::write_snapshot(store, &queue)?;
        report.push(
            rel(store, &path),
            format!("intake_offset moved from {old} to {new} to match the repaired intake"),
            true,
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JSON

fn repair_json(store: &Store, f: &CoordFile, path: &Path, dry_run: bool, report: &mut RepairReport) -> Result<()> {
    let bytes = crate::store::open::read_bytes(path).map_err(|e| crate::store::open::refuse_link(path, "read", e))?;
    let check = check_json_bytes(&rel(store, path), &bytes, Some(f.schema));
    let decodes = match f.rel {
        "task-queue.json" => serde_json::from_slice::<crate::domain::task::model::TaskQueue>(&bytes).is_ok(),
        "token-budget.json" => serde_json::from_slice::<crate::domain::task::model::TokenBudget>(&bytes).is_ok(),
        "scheduler-state.json" => {
            serde_json::from_slice::<crate::domain::scheduler_state::SchedulerState>(&bytes).is_ok()
        }
        _ => true,
    };
    if check.verdict == Verdict::Ok && decodes {
        if f.rel == files::ROUTER_CONFIG.rel {
            for p in crate::ops::validate::router_cross_check(store.home()) {
                report.push(
                    rel(store, path),
                    format!("{p} (fix it by hand or `cortex config restore-defaults`)"),
                    false,
                );
            }
        }
        return Ok(());
    }
    let problem =
        if check.problems.is_empty() { "does not match its type".to_string() } else { check.problems.join("; ") };
    if f.is_config {
        let defaults = match f.default {
            Some(_) => {
                format!(" or `cortex config restore-defaults --file {}`", f.rel.rsplit('/').next().unwrap_or(f.rel))
            }
            // No shipped default (notifications.json): the operator's own file.
            None => " or fix it by hand (`cortex config check` names the field)".to_string(),
        };
        report.push(
            rel(store, path),
            format!("{problem}: restore it with `cortex restore --latest --only config`{defaults}"),
            false,
        );
        return Ok(());
    }
    match f.rel {
        "task-queue.json" => repair_queue(store, path, &problem, dry_run, report),
        "token-budget.json" => repair_budget(store, path, &problem, dry_run, report),
        "scheduler-state.json" => repair_scheduler(store, path, &problem, dry_run, report),
        _ => {
            report.push(
                rel(store, path),
                format!("{problem}: not repaired automatically; restore it from a backup"),
                false,
            );
            Ok(())
        }
    }
}

/// Every JSON object in `bytes` that has a string `task_id`, scanning even a truncated file.
pub(crate) fn salvage_task_objects(bytes: &[u8]) -> Vec<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        let tasks = match &v {
            Value::Object(m) => m.get("tasks").and_then(Value::as_array).cloned().unwrap_or_default(),
            Value::Array(a) => a.clone(),
            _ => Vec::new(),
        };
        return tasks.into_iter().filter(|t| t.get("task_id").is_some_and(Value::is_string)).collect();
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'{' {
            i += 1;
            continue;
        }
        let mut stream = serde_json::Deserializer::from_slice(&bytes[i..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(v)) if v.get("task_id").is_some_and(Value::is_string) => {
                i += stream.byte_offset();
                out.push(v);
            }
            _ => i += 1,
        }
    }
    out
}

fn salvage_number(bytes: &[u8], key: &str) -> Option<u64> {
    let text = String::from_utf8_lossy(bytes);
    let re = regex::Regex::new(&format!(r#""{}"\s*:\s*(\d+)"#, regex::escape(key))).ok()?;
    re.captures(&text).and_then(|c| c[1].parse().ok())
}

fn repair_queue(store: &Store, path: &Path, problem: &str, dry_run: bool, report: &mut RepairReport) -> Result<()> {
    let _guard = if dry_run { None } else { Some(store.lock(files::TASK_QUEUE)?) };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    let mut kept: Vec<Value> = Vec::new();
    let mut rejected: Vec<Value> = Vec::new();
    for obj in salvage_task_objects(&bytes) {
        let id = obj["task_id"].as_str().unwrap_or_default().to_string();
        let valid = serde_json::from_value::<Task>(obj.clone()).is_ok()
            && crate::base::schema::is_valid("task-queue", &json!({"tasks": [obj.clone()]}));
        if valid && !kept.iter().any(|k| k["task_id"] == id.as_str()) {
            kept.push(obj);
        } else {
            rejected.push(obj);
        }
    }
    let mut queue = json!({"tasks": kept, "updated_at": crate::base::clock::now_string()});
    if let Some(off) = salvage_number(&bytes, "intake_offset") {
        queue["intake_offset"] = json!(off);
    }
    // The journal's changes since this snapshot still apply to what is salvaged.
    if let Some(generation) = salvage_number(&bytes, "journal_generation") {
        queue["journal_generation"] = json!(generation);
    }
    let corrupt = beside(path, ".corrupt");
    let rejected_path = PathBuf::from(format!("{}.rejected", path.display()));
    let msg = format!(
        "{problem}: copy kept at {}; {} task(s) salvaged{}",
        rel(store, &corrupt),
        kept.len(),
        if rejected.is_empty() {
            String::new()
        } else {
            format!(", {} invalid task object(s) moved to {}", rejected.len(), rel(store, &rejected_path))
        }
    );
    if !dry_run {
        atomic::write_atomic(&corrupt, &bytes)?;
        for r in &rejected {
            jsonl::append(&rejected_path, r)?;
        }
        crate::store::write_value_checked(path, &queue, Some(files::TASK_QUEUE.schema))?;
    }
    report.push(rel(store, path), msg, true);
    Ok(())
}

fn repair_budget(store: &Store, path: &Path, problem: &str, dry_run: bool, report: &mut RepairReport) -> Result<()> {
    let _guard = if dry_run { None } else { Some(store.lock(files::TOKEN_BUDGET)?) };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    let default: crate::domain::task::model::TokenBudget =
        serde_json::from_value(crate::store::default_value(files::TOKEN_BUDGET)?)
            .map_err(|e| Error::encode(format!("the built-in default of {}", files::TOKEN_BUDGET.rel), e))?;
    let mut budget = default.clone();
    budget.total = salvage_number(&bytes, "total").unwrap_or(default.total);
    budget.used = salvage_number(&bytes, "used").unwrap_or(0);
    for d in crate::domain::task::dispatches::list_bucket(store, SpecBucket::Active).unwrap_or_default() {
        budget.reservations.insert(d.dispatch_id.clone(), d.budget_reserved);
    }
    budget.recompute();
    budget.last_updated = Some(crate::base::clock::now());
    let corrupt = beside(path, ".corrupt");
    let msg = format!(
        "{problem}: copy kept at {}; rebuilt with total {}, used {}, {} reservation(s) of active dispatches",
        rel(store, &corrupt),
        budget.total,
        budget.used,
        budget.reservations.len()
    );
    if !dry_run {
        atomic::write_atomic(&corrupt, &bytes)?;
        let value = serde_json::to_value(&budget)?;
        crate::store::write_value_checked(path, &value, Some(files::TOKEN_BUDGET.schema))?;
    }
    report.push(rel(store, path), msg, true);
    Ok(())
}

fn repair_scheduler(store: &Store, path: &Path, problem: &str, dry_run: bool, report: &mut RepairReport) -> Result<()> {
    let _guard = if dry_run { None } else { Some(store.lock(files::SCHEDULER_STATE)?) };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    let now = crate::base::clock::now_string();
    let state = json!({
        "state": "paused", "paused": true, "paused_at": now, "resumed_at": null,
        "paused_by": "cortex repair", "paused_from": "repair",
        "reason": "scheduler-state.json was corrupt and was rebuilt; resume when the system is checked",
        "updated_at": now,
    });
    let corrupt = beside(path, ".corrupt");
    let msg = format!(
        "{problem}: copy kept at {}; rebuilt PAUSED (resume with `cortex scheduler resume` once checked)",
        rel(store, &corrupt)
    );
    if !dry_run {
        atomic::write_atomic(&corrupt, &bytes)?;
        crate::store::write_value_checked(path, &state, Some(files::SCHEDULER_STATE.schema))?;
    }
    report.push(rel(store, path), msg, true);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Worker specs

fn repair_specs(store: &Store, dry_run: bool, report: &mut RepairReport) -> Result<()> {
    let home = store.home();
    let _guard = if dry_run { None } else { Some(store.lock_named(crate::store::LockName::WorkerSpecs)?) };
    for bucket in SpecBucket::ALL.into_iter().filter(|b| *b != SpecBucket::Quarantine) {
        let Ok(entries) = std::fs::read_dir(home.worker_specs(bucket)) else { continue };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".json") && !name.starts_with('.')
            })
            .collect();
        paths.sort();
        for path in paths {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let check = check_json_bytes(&rel(store, &path), &bytes, Some(files::DISPATCH_SCHEMA));
            if check.verdict == Verdict::Ok && serde_json::from_slice::<DispatchRecord>(&bytes).is_ok() {
                continue;
            }
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let dest = beside(&dispatch_record::quarantine_path(home, bucket, &name), "");
            let problem =
                if check.problems.is_empty() { "does not match a dispatch".into() } else { check.problems.join("; ") };
            if !dry_run {
                dispatch_record::move_to_quarantine(home, &path, &dest)?;
            }
            report.push(rel(store, &path), format!("{problem}: moved to {}", rel(store, &dest)), true);
        }
    }
    Ok(())
}

#[cfg(test)]
mod archive_tests {
    use crate::domain::task::archive::{self, segment};
    use crate::domain::task::model::{Task, TaskState};

    #[test]
    fn repair_leaves_a_sealed_segment_and_its_index_alone() {
        let (_dir, store) = crate::store::fresh_store();
        let tasks: Vec<Task> = (0..20)
            .map(|i| {
                let state = TaskState::Completed {
                    started_at: None,
                    completed_at: crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap(),
                };
                Task { state, ..Task::sample(&format!("task-{i:04}")) }
            })
            .collect();
        archive::append_unsynced(&store, &tasks.iter().collect::<Vec<_>>()).unwrap();
        // A line a full disk cut, then the next append: sealed with the rest.
        let active = store.path(crate::store::files::TASK_ARCHIVE);
        let mut bytes = std::fs::read(&active).unwrap();
        bytes.extend_from_slice(b"{\"task_id\":\"task-cut\"\n");
        std::fs::write(&active, &bytes).unwrap();
        segment::seal(&store, 0).unwrap().expect("sealed");
        let seg = segment::list(&store).remove(0);
        let before = std::fs::read(&seg.path).unwrap();
        super::repair(&store, false, crate::ops::progress::Show::Quiet).unwrap();
        assert!(std::fs::read(&seg.path).unwrap() == before, "a sealed segment is never rewritten");
        assert!(segment::check(&seg).is_empty(), "its index still describes it");
        assert!(archive::find(&store, "task-0019").unwrap().is_some());
    }
}
