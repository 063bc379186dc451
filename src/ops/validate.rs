//! `cortex validate` and `cortex config check`: check every coordination file (JSON parses,
//! JSONL lines parse, schemas hold) and the configuration's cross-references (router regexes
//! compile, router rules name known worker types). Pure checks: nothing is written.

use crate::base::schema;
use crate::store::files::{self, CoordFile, FileKind};
use crate::store::home::{Home, SpecBucket};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The verdict on one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Ok,
    /// Not JSON (or JSONL lines that are not).
    Corrupt,
    /// JSON that breaks its schema or a cross-reference.
    Invalid,
    /// An essential file is missing.
    Missing,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub file: String,
    pub verdict: Verdict,
    /// What is wrong, with JSON pointers or line numbers.
    pub problems: Vec<String>,
    /// For JSONL: lines read and lines that are bad.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad_lines: Option<usize>,
}

impl FileReport {
    pub fn is_ok(&self) -> bool {
        self.verdict == Verdict::Ok
    }
}

/// Reads and checks one JSON file; an unreadable file is reported as corrupt.
pub fn check_json_file(path: &Path, rel: &str, schema_name: Option<&str>) -> FileReport {
    // The queue's snapshot one task at a time when it is in its writers' layout (never a value
    // of the whole document, several times its size); else whole, naming any problem.
    if schema_name == Some(files::TASK_QUEUE.schema) && crate::domain::task::journal::snapshot_streams(path) {
        return FileReport {
            file: rel.to_string(),
            verdict: Verdict::Ok,
            problems: vec![],
            lines: None,
            bad_lines: None,
        };
    }
    match crate::store::open::read_bytes(path) {
        Ok(b) => check_json_bytes(rel, &b, schema_name),
        Err(e) => FileReport {
            file: rel.to_string(),
            verdict: Verdict::Corrupt,
            problems: vec![format!("unreadable: {}", crate::store::open::read_problem(&e))],
            lines: None,
            bad_lines: None,
        },
    }
}

/// Checks one JSON file's bytes against a schema.
pub fn check_json_bytes(rel: &str, bytes: &[u8], schema_name: Option<&str>) -> FileReport {
    let mut report =
        FileReport { file: rel.to_string(), verdict: Verdict::Ok, problems: vec![], lines: None, bad_lines: None };
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            report.verdict = Verdict::Corrupt;
            report.problems.push(if bytes.is_empty() { "the file is empty".into() } else { format!("not JSON: {e}") });
            return report;
        }
    };
    if let Some(s) = schema_name {
        for v in schema::check(s, &value, 5) {
            report.verdict = Verdict::Invalid;
            report.problems.push(format!("at {}: {}", if v.pointer.is_empty() { "/" } else { &v.pointer }, v.expected));
        }
    }
    report
}

/// Checks a JSONL file: every line must parse (and match `schema_name`).
pub fn check_jsonl(path: &Path, rel: &str, schema_name: Option<&str>) -> FileReport {
    check_jsonl_lines(rel, schema_name, |each| {
        crate::store::jsonl::for_each_line(path, each).map_err(|e| e.to_string())
    })
}

/// [`check_jsonl`] over bytes already in memory (the fuzzer's entry).
pub fn check_jsonl_bytes(rel: &str, bytes: &[u8], schema_name: Option<&str>) -> FileReport {
    check_jsonl_lines(rel, schema_name, |each| {
        crate::store::jsonl::for_each_line_in(bytes, each).map_err(|e| e.to_string())
    })
}

/// The JSONL check proper; `lines_of` calls its argument for each non-blank line.
fn check_jsonl_lines(
    rel: &str,
    schema_name: Option<&str>,
    lines_of: impl FnOnce(&mut dyn FnMut(usize, &[u8]) -> bool) -> std::result::Result<(), String>,
) -> FileReport {
    let mut report = FileReport {
        file: rel.to_string(),
        verdict: Verdict::Ok,
        problems: vec![],
        lines: Some(0),
        bad_lines: Some(0),
    };
    let (mut lines, mut bad, mut invalid) = (0usize, Vec::new(), Vec::new());
    // The first schema break in full (line, pointer, expectation); the rest by line number.
    let mut first_break: Option<String> = None;
    let res = lines_of(&mut |n, line| {
        lines += 1;
        match serde_json::from_slice::<Value>(line) {
            Err(_) => bad.push(n),
            Ok(v) => {
                if let Some(s) = schema_name
                    && !schema::is_valid(s, &v)
                {
                    invalid.push(n);
                    if first_break.is_none()
                        && let Some(v) = schema::check(s, &v, 1).into_iter().next()
                    {
                        let at = if v.pointer.is_empty() { "/" } else { v.pointer.as_str() };
                        first_break = Some(format!("line {n} at {at}: {}", v.expected));
                    }
                }
            }
        }
        true
    });
    if let Err(e) = res {
        report.verdict = Verdict::Corrupt;
        report.problems.push(format!("unreadable: {e}"));
        return report;
    }
    report.lines = Some(lines);
    report.bad_lines = Some(bad.len() + invalid.len());
    if !bad.is_empty() {
        report.verdict = Verdict::Corrupt;
        report.problems.push(format!("{} malformed line(s): {}", bad.len(), list_lines(&bad)));
    }
    if !invalid.is_empty() {
        if report.verdict == Verdict::Ok {
            report.verdict = Verdict::Invalid;
        }
        report.problems.push(format!("{} line(s) break the schema: {}", invalid.len(), list_lines(&invalid)));
        report.problems.extend(first_break);
    }
    report
}

fn list_lines(lines: &[usize]) -> String {
    let shown: Vec<String> = lines.iter().take(10).map(|n| n.to_string()).collect();
    let more = if lines.len() > 10 { format!(" and {} more", lines.len() - 10) } else { String::new() };
    format!("line {}{more}", shown.join(", "))
}

fn check_registered(home: &Home, f: &CoordFile) -> Option<FileReport> {
    let path = home.coord(f.rel);
    let rel = format!("coordination/{}", f.rel);
    if !path.exists() {
        return f.essential.then(|| FileReport {
            file: rel,
            verdict: Verdict::Missing,
            problems: vec!["missing: run `cortex init` or `cortex repair`".into()],
            lines: None,
            bad_lines: None,
        });
    }
    Some(match f.kind {
        FileKind::Json => check_json_file(&path, &rel, Some(f.schema)),
        FileKind::Jsonl => check_jsonl(&path, &rel, Some(f.schema)),
    })
}

/// Checks every coordination file of the home, plus config cross-references.
pub fn validate_home(home: &Home) -> Vec<FileReport> {
    validate_home_skipping(home, &|_| false)
}

/// [`validate_home`] without the registered files `skip` names (a caller that checks them its
/// own way, or knows them unchanged since it last did): no report for them.
pub fn validate_home_skipping(home: &Home, skip: &dyn Fn(&CoordFile) -> bool) -> Vec<FileReport> {
    let skipped: Vec<PathBuf> = files::ALL.iter().filter(|f| skip(f)).map(|f| home.coord(f.rel)).collect();
    let mut reports: Vec<FileReport> =
        files::ALL.iter().filter(|f| !skip(f)).filter_map(|f| check_registered(home, f)).collect();
    for bucket in SpecBucket::ALL {
        if bucket == SpecBucket::Quarantine {
            continue;
        }
        for path in list_files(&home.worker_specs(bucket), "json") {
            let rel = home.relative(&path).display().to_string();
            reports.push(check_json_file(&path, &rel, Some(files::DISPATCH_SCHEMA)));
        }
    }
    // Any other JSON/JSONL under coordination/ must at least parse (the runbook's `jq empty` loop).
    let mut known: Vec<PathBuf> = reports.iter().map(|r| home.join(&r.file)).collect();
    known.extend(skipped);
    for path in walk(&home.coordination()) {
        if known.contains(&path) {
            continue;
        }
        if let Some(report) = check_archive_segment(home, &path, false) {
            reports.extend(report);
            continue;
        }
        let rel = home.relative(&path).display().to_string();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => reports.push(check_json_file(&path, &rel, None)),
            Some("jsonl") => reports.push(check_jsonl(&path, &rel, None)),
            _ => {}
        }
    }
    if let Some(r) = reports.iter_mut().find(|r| r.file == format!("coordination/{}", files::ROUTER_CONFIG.rel))
        && r.is_ok()
    {
        let problems = router_cross_check(home);
        if !problems.is_empty() {
            r.verdict = Verdict::Invalid;
            r.problems.extend(problems);
        }
    }
    reports
}

/// Checks one file under `coordination/` exactly as [`validate_home`] does (the integration
/// daemon calls it for a file that changed). None for what `validate_home` does not check: files
/// outside `coordination/`, locks, temporaries, quarantine, schemas, defaults, other extensions,
/// and a missing file that is not essential.
pub fn check_file(home: &Home, path: &Path) -> Option<FileReport> {
    let rel_coord = path.strip_prefix(home.coordination()).ok()?;
    let names: Vec<&str> = rel_coord.components().filter_map(|c| c.as_os_str().to_str()).collect();
    let first = *names.first()?;
    if names.iter().any(|n| n.starts_with('.') || *n == "quarantine") || matches!(first, "schemas" | "defaults") {
        return None;
    }
    if let Some(f) = files::by_rel(rel_coord.to_str()?) {
        let mut report = check_registered(home, f)?;
        if f.rel == files::ROUTER_CONFIG.rel && report.is_ok() {
            let problems = router_cross_check(home);
            if !problems.is_empty() {
                report.verdict = Verdict::Invalid;
                report.problems.extend(problems);
            }
        }
        return Some(report);
    }
    if let Some(report) = check_archive_segment(home, path, true) {
        return report;
    }
    if !path.is_file() {
        return None;
    }
    let rel = home.relative(path).display().to_string();
    let ext = path.extension().and_then(|e| e.to_str());
    let schema = (first == "worker-specs" && names.len() == 3 && ext == Some("json")).then_some(files::DISPATCH_SCHEMA);
    match ext {
        Some("json") => Some(check_json_file(path, &rel, schema)),
        Some("jsonl") => Some(check_jsonl(path, &rel, None)),
        _ => None,
    }
}

/// Router rules: each pattern must compile, each worker type must exist.
pub fn router_cross_check(home: &Home) -> Vec<String> {
    let mut problems = Vec::new();
    let router: Value =
        match std::fs::read(home.coord_file(files::ROUTER_CONFIG)).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
            Some(v) => v,
            None => return problems,
        };
    let types: Option<Value> =
        std::fs::read(home.coord_file(files::WORKER_TYPES)).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let known_types: Option<Vec<String>> = types
        .as_ref()
        .and_then(|t| t.get("worker_types"))
        .and_then(|w| w.as_object())
        .map(|m| m.keys().cloned().collect());
    for (i, rule) in router.get("rules").and_then(|r| r.as_array()).into_iter().flatten().enumerate() {
        if let Some(p) = rule.get("pattern").and_then(|p| p.as_str())
            && let Err(e) = crate::domain::task::router::compile_pattern(p)
        {
            problems.push(format!(
                "at /rules/{i}/pattern: {p:?} is not a valid regex: {}",
                e.to_string().lines().last().unwrap_or("")
            ));
        }
        if let (Some(wt), Some(known)) = (rule.get("worker_type").and_then(|w| w.as_str()), &known_types)
            && !known.iter().any(|k| k == wt)
        {
            problems.push(format!(
                "at /rules/{i}/worker_type: {wt:?} is not defined in coordination/config/worker-types.json"
            ));
        }
    }
    problems
}

fn list_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext) && !is_ignored(p))
        .collect();
    out.sort();
    out
}

fn is_ignored(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// Every file under `dir`, skipping locks, temporaries, quarantine, schemas and defaults.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if is_ignored(&p) {
                continue;
            }
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if d == dir && matches!(name, "schemas" | "defaults" | "quarantine") {
                    continue;
                }
                if name == "quarantine" {
                    continue;
                }
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The result of `cortex config check`.
#[derive(Debug, Serialize)]
pub struct ConfigCheck {
    pub ok: bool,
    pub errors: Vec<String>,
    /// What is valid but will not work as the operator probably expects (a worker type with no
    /// command template, a placeholder spliced into a shell script); does not fail the check.
    pub warnings: Vec<String>,
}

/// Validates `cortex.toml` (at `config_path`), the API tokens file it names (by the loader the
/// API uses at start, so a token the API refuses fails here too) and every JSON config file of
/// the home.
pub fn check_config(home: &Home, config_path: &Path) -> ConfigCheck {
    let mut errors = Vec::new();
    let mut slurm_enabled = None;
    let mut slurm_checks = Vec::new();
    match crate::store::config::Config::load_file(config_path) {
        Ok(config) => {
            if let Err(e) = crate::store::api_tokens::load_tokens(home, &config) {
                errors.push(format!("[api] tokens_file: {e}"));
            }
            slurm_enabled = Some(config.slurm.enabled);
            if config.slurm.enabled || has_slurm_types(home) {
                slurm_checks = slurm_warnings(&config.slurm);
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    for f in files::ALL.iter().filter(|f| f.is_config) {
        if let Some(r) = check_registered(home, f)
            && !r.is_ok()
        {
            for p in &r.problems {
                errors.push(format!("{}: {p}", r.file));
            }
        }
    }
    for p in router_cross_check(home) {
        let msg = format!("coordination/{}: {p}", files::ROUTER_CONFIG.rel);
        if !errors.contains(&msg) {
            errors.push(msg);
        }
    }
    errors.extend(notification_problems(home));
    let mut warnings = worker_type_warnings(home, slurm_enabled);
    warnings.extend(slurm_checks);
    ConfigCheck { ok: errors.is_empty(), errors, warnings }
}

/// `notifications.json` beyond its schema (which [`check_registered`] checks): rules name
/// existing sinks, the secrets file is 0600 and holds every secret a sink names, the time zone
/// is known. Nothing when the file is missing (notifications are optional) or breaks its schema
/// (reported already).
fn notification_problems(home: &Home) -> Vec<String> {
    use crate::domain::notify::config::NotifyConfig;
    let path = home.coord_file(files::NOTIFICATIONS);
    let rel = format!("coordination/{}", files::NOTIFICATIONS.rel);
    let Ok(bytes) = crate::store::open::read_bytes(&path) else { return Vec::new() };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return Vec::new() };
    if !crate::base::schema::check(files::NOTIFICATIONS.schema, &value, 1).is_empty() {
        return Vec::new();
    }
    let config: NotifyConfig = match crate::store::decode_value(&value) {
        Ok(c) => c,
        Err((pointer, expected)) => return vec![format!("{rel}: {pointer}: {expected}")],
    };
    let mut out = Vec::new();
    let secrets = match &config.secrets_file {
        None => Some(crate::domain::notify::secrets::Secrets::default()),
        Some(p) => match crate::domain::notify::secrets::Secrets::load(&home.configured_path(p)) {
            Ok(s) => Some(s),
            Err(e) => {
                out.push(format!("{rel}: secrets_file: {e}"));
                None
            }
        },
    };
    out.extend(config.problems(secrets.as_ref()).into_iter().map(|p| format!("{rel}: {p}")));
    out
}

fn has_slurm_types(home: &Home) -> bool {
    std::fs::read(home.coord_file(files::WORKER_TYPES))
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::domain::task::worker_types::WorkerTypes>(&b).ok())
        .is_some_and(|t| {
            t.worker_types.values().any(|wt| wt.executor == crate::domain::task::worker_types::ExecutorKind::Slurm)
        })
}

/// Where a command named in `[slurm]` would be run from: the absolute path, or the first
/// executable of that name in `PATH`.
fn resolve_program(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.starts_with('/') {
        return executable(Path::new(program)).then(|| Path::new(program).to_path_buf());
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|d| d.join(program)).find(|p| executable(p)))
        .unwrap_or_default()
}

/// `[slurm]` checked against this host, when Slurm is enabled or a worker type uses it: each
/// command resolvable (PATH or absolute, executable), and the controller answering `scontrol
/// ping` (a 10 s deadline). Warnings: the cluster may be down for a while, which loses nothing.
fn slurm_warnings(cfg: &crate::store::config::SlurmConfig) -> Vec<String> {
    let mut out = Vec::new();
    for (key, program) in
        [("sbatch", &cfg.sbatch), ("squeue", &cfg.squeue), ("scontrol", &cfg.scontrol), ("scancel", &cfg.scancel)]
    {
        if resolve_program(program).is_none() {
            out.push(format!(
                "[slurm] {key}: {program:?} is not an executable file{} (install the Slurm client or set the path)",
                if program.starts_with('/') { "" } else { " in PATH" }
            ));
        }
    }
    if !out.is_empty() {
        return out;
    }
    let argv = crate::domain::slurm::command::scontrol_ping(cfg);
    match crate::ops::slurm_command::run(&argv, None, std::time::Duration::from_secs(10)) {
        Ok(ran) if crate::domain::slurm::parse::ping_up(&ran.stdout) => {}
        Ok(ran) => out.push(format!(
            "[slurm]: the Slurm controller does not answer `{} ping` ({}); Slurm dispatches wait until it does",
            cfg.scontrol,
            crate::base::text::safe(
                crate::domain::slurm::preview(format!("{}{}", ran.stdout, ran.stderr).trim()).as_str()
            )
        )),
        Err(e) => out.push(format!("[slurm]: `{} ping`: {e}; Slurm dispatches wait until it answers", cfg.scontrol)),
    }
    out
}

/// [`crate::domain::task::worker_types::template_warnings`] for every worker type of the home (none
/// when the file does not parse: that is an error reported already).
fn worker_type_warnings(home: &Home, slurm_enabled: Option<bool>) -> Vec<String> {
    let path = home.coord_file(files::WORKER_TYPES);
    let Some(types) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::domain::task::worker_types::WorkerTypes>(&b).ok())
    else {
        return Vec::new();
    };
    types
        .worker_types
        .iter()
        .flat_map(|(name, wt)| {
            let mut w = crate::domain::task::worker_types::template_warnings(name, wt);
            if wt.executor == crate::domain::task::worker_types::ExecutorKind::Slurm && slurm_enabled == Some(false) {
                w.push(format!(
                    "worker type {name:?} runs on Slurm but [slurm] enabled is false in cortex.toml: its tasks \
                     wait (slurm_disabled) until it is true and cortex-slurm runs"
                ));
            }
            w
        })
        .map(|w| format!("coordination/{}: {w}", files::WORKER_TYPES.rel))
        .collect()
}

/// A sealed segment of the task archive (`task-archive/seg-NNNNNN.jsonl`, or its `.idx`): None
/// when `path` is not one; Some(None) when there is nothing to report on (an index whose segment
/// is not there yet). A segment is never written again once sealed, so it is checked whole
/// against its index only when it changes (`full`: the integration daemon sees it appear once);
/// `cortex validate` and full passes check that each index describes its segment (header and
/// size), which costs one small read per segment, not the history.
fn check_archive_segment(home: &Home, path: &Path, full: bool) -> Option<Option<FileReport>> {
    let store = crate::store::Store::new(home.clone());
    let seg = crate::domain::task::archive::segment::segment_of_path(&store, path)?;
    if !full && path != seg.path {
        // The index: checked with its segment.
        return Some(None);
    }
    if !seg.path.is_file() {
        return Some(None);
    }
    let problems = if full {
        crate::domain::task::archive::segment::check(&seg)
    } else {
        crate::domain::task::archive::segment::index_problem(&seg).into_iter().collect()
    };
    let problems: Vec<String> = problems
        .into_iter()
        .map(|p| format!("{p} (readers read this segment whole instead of through its index)"))
        .collect();
    Some(Some(FileReport {
        file: home.relative(&seg.path).display().to_string(),
        verdict: if problems.is_empty() { Verdict::Ok } else { Verdict::Invalid },
        problems,
        lines: Some(0),
        bad_lines: Some(0),
    }))
}

#[cfg(test)]
mod archive_segment_tests {
    use crate::domain::task::archive::segment;
    use crate::domain::task::model::{Task, TaskState};
    use crate::store::fresh_store;

    #[test]
    fn validate_checks_a_sealed_segment_against_its_index() {
        let (_dir, store) = fresh_store();
        for chunk in 0..2 {
            let tasks: Vec<Task> = (0..100)
                .map(|i| {
                    let state = TaskState::Completed {
                        started_at: None,
                        completed_at: crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap(),
                    };
                    Task { state, ..Task::sample(&format!("task-{chunk}{i:04}")) }
                })
                .collect();
            crate::domain::task::archive::append_unsynced(&store, &tasks.iter().collect::<Vec<_>>()).unwrap();
            segment::seal(&store, 0).unwrap().expect("sealed");
        }
        let segs = segment::list(&store);
        let report_of = |reports: Vec<super::FileReport>, seg: &segment::Segment| {
            let rel = store.home().relative(&seg.path).display().to_string();
            reports.into_iter().find(|r| r.file == rel).expect("a report of the segment")
        };
        assert!(report_of(super::validate_home(store.home()), &segs[0]).is_ok());
        let full = super::check_file(store.home(), &segs[1].path).expect("checked");
        assert!(full.is_ok(), "{full:?}");
        // An index that does not describe its segment: named, by the full pass and on change.
        let bytes = std::fs::read(&segs[1].index_path).unwrap();
        let text = String::from_utf8(bytes).unwrap().replacen("\"segment\":2", "\"segment\":9", 1);
        std::fs::write(&segs[1].index_path, text).unwrap();
        let r = report_of(super::validate_home(store.home()), &segs[1]);
        assert!(!r.is_ok() && r.problems[0].contains("/segment"), "{r:?}");
        let r = super::check_file(store.home(), &segs[1].index_path).expect("checked");
        assert!(!r.is_ok(), "{r:?}");
        // The retried-ids file is plain JSONL.
        segment::note_retried(&store, "task-00001").unwrap();
        let retried = store.home().coord(crate::store::files::TASK_ARCHIVE_RETRIED);
        assert!(super::check_file(store.home(), &retried).expect("checked").is_ok());
    }
}
