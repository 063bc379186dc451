//! Restore: verify the archive completely, refuse while daemons run (or stop them), write a
//! pre-restore backup, extract into a staging directory inside the home (same filesystem),
//! validate what was extracted, then swap it in by rename under the store's locks, and record a
//! `backup_restored` event.
//!
//! The swap is journalled. Before the first rename, `PLAN.json` in the staging directory lists
//! every move with the inode of the staged item; `COMMITTED` is written after the last. A restore
//! killed at any point is finished or undone by [`recover_interrupted`] (run by every restore and
//! by `cortex repair`): without `COMMITTED`, each swap whose staged inode now sits at the live path
//! is swapped back. Directories are exchanged atomically (`renameat2(RENAME_EXCHANGE)`), so the
//! live `coordination/` is always one complete tree.

use super::create::{self, BackupOptions};
use super::manifest::ManifestFile;
use super::{ArchiveKind, verify};
use crate::base::error::{Error, Result};
use crate::ops::progress::{Show, Stage, Unit};
use crate::store::Store;
use crate::store::atomic::{self, TEMP_PREFIX};
use crate::store::config::Config;
use crate::store::events::{EventKind, Severity};
use crate::store::files;
use crate::store::home::{Home, SpecBucket};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What part of the state a restore replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scope {
    /// `coordination/`, `cortex.toml`, `config/`, `agents/prompts/`.
    All,
    /// Configuration only: `cortex.toml`, `config/`, `agents/prompts/` and the configuration
    /// files under `coordination/` (worker types, policies, router).
    Config,
    /// `coordination/` only.
    Coordination,
}

impl Scope {
    /// True when the archive member `path` belongs to this scope.
    pub(crate) fn includes(self, path: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Coordination => path.starts_with("coordination/"),
            Scope::Config => is_config_path(path),
        }
    }
}

/// Configuration files of a home, by archive path.
pub(crate) fn is_config_path(path: &str) -> bool {
    if path == "cortex.toml" || path.starts_with("config/") || path.starts_with("agents/prompts/") {
        return true;
    }
    match path.strip_prefix("coordination/") {
        Some(rel) => rel.starts_with("config/") || files::by_rel(rel).is_some_and(|f| f.is_config),
        None => false,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RestoreOptions {
    pub archive: PathBuf,
    pub scope: Scope,
    /// Stop running daemons first and start them again afterwards.
    pub stop_daemons: bool,
    /// Verify and report what would change; change nothing.
    pub dry_run: bool,
    /// Progress of the verify, extract and swap stages on standard error.
    pub progress: Show,
}

/// What a restore did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RestoreReport {
    pub archive: PathBuf,
    #[serde(with = "crate::base::clock::ts")]
    pub archive_created_at: crate::base::clock::Timestamp,
    pub archive_host: String,
    pub scope: Scope,
    pub dry_run: bool,
    /// Files that differ from the current state, are new, or go away.
    pub changed: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
    pub pre_restore_backup: Option<PathBuf>,
    pub stopped_daemons: Vec<String>,
    pub restarted_daemons: Vec<String>,
    pub warnings: Vec<String>,
    /// What [`recover_interrupted`] did first, if anything.
    pub recovered: Vec<String>,
}

/// Restores a home from an archive.
pub(crate) fn restore(store: &Store, config: &Config, opts: &RestoreOptions) -> Result<RestoreReport> {
    let home = store.home().clone();
    let lock = create::lock_backups(store)?;
    let recovered = if opts.dry_run { Vec::new() } else { recover_interrupted(&home)? };
    let verified = {
        // The manifest (the archive's first entry) gives the total before the full read.
        let total = verify::read_manifest(&opts.archive).map(|m| m.total_bytes()).unwrap_or(0);
        let stage = Stage::start(opts.progress, "restore: verify", total, Unit::Bytes);
        let v = verify::walk(&opts.archive, |mf, _| {
            stage.inc(mf.size);
            Ok(())
        })?;
        stage.finish();
        v
    };
    let manifest = &verified.manifest;
    let in_scope: Vec<&ManifestFile> = manifest.files.iter().filter(|f| opts.scope.includes(&f.path)).collect();
    if in_scope.is_empty() {
        return Err(Error::refused(format!(
            "{} holds no {} files; nothing was changed",
            opts.archive.display(),
            match opts.scope {
                Scope::Config => "configuration",
                Scope::Coordination => "coordination",
                Scope::All => "",
            }
        )));
    }
    let mut report = RestoreReport {
        archive: opts.archive.clone(),
        archive_created_at: manifest.created_at,
        archive_host: manifest.host.clone(),
        scope: opts.scope,
        dry_run: opts.dry_run,
        changed: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
        unchanged: 0,
        pre_restore_backup: None,
        stopped_daemons: Vec::new(),
        restarted_daemons: Vec::new(),
        warnings: Vec::new(),
        recovered,
    };
    let expanded: u64 = in_scope.iter().map(|f| f.size).sum();
    if expanded > config.backup.max_restore_bytes {
        return Err(Error::refused(format!(
            "{} would restore {expanded} bytes, more than [backup] max_restore_bytes = {} in cortex.toml; \
             nothing was changed (raise the limit if you trust the archive)",
            opts.archive.display(),
            config.backup.max_restore_bytes
        )));
    }
    diff(&home, opts.scope, &in_scope, &mut report)?;
    if opts.dry_run {
        return Ok(report);
    }

    if !opts.stop_daemons {
        crate::ops::supervisor::maintenance::refuse_while_running(&home, "restore")?;
    }
    let stopped =
        if opts.stop_daemons { crate::ops::supervisor::maintenance::stop_all(&home, config)? } else { Vec::new() };
    report.stopped_daemons = stopped.iter().map(|s| s.to_string()).collect();
    let result = restore_stopped(store, config, opts, &verified, &lock, &mut report);
    if !stopped.is_empty() {
        // Start again what was running, on the restored state or (after a failure) the old one.
        match crate::ops::supervisor::maintenance::start(&home, config, &stopped) {
            Ok(()) => report.restarted_daemons = report.stopped_daemons.clone(),
            Err(e) => report.warnings.push(format!("could not start the daemons again: {e}; run `cortex start`")),
        }
    }
    result.map(|()| report)
}

fn restore_stopped(
    store: &Store,
    config: &Config,
    opts: &RestoreOptions,
    verified: &verify::Verified,
    lock: &crate::store::LockGuard,
    report: &mut RestoreReport,
) -> Result<()> {
    let home = store.home();
    super::pause_point("restore-before-pre-backup");
    let pre = create::create_locked(store, config, &BackupOptions::new(ArchiveKind::PreRestore), lock)?;
    report.pre_restore_backup = Some(pre.path.clone());

    let stage = home.join(format!("{TEMP_PREFIX}restore.{}.{:x}", std::process::id(), fastrand::u32(..)));
    let tree = stage.join("tree");
    atomic::create_dir_all(&tree)?;
    let outcome = (|| {
        let scoped: u64 = verified.manifest.files.iter().filter(|f| opts.scope.includes(&f.path)).map(|f| f.size).sum();
        let extracting = Stage::start(opts.progress, "restore: extract", scoped, Unit::Bytes);
        extract(&opts.archive, &tree, opts.scope, &extracting)?;
        extracting.finish();
        super::pause_point("restore-after-extract");
        report.warnings.extend(prepare_tree(&tree, opts.scope)?);
        report.warnings.extend(validate_tree(&tree, opts.scope)?);
        let plan = plan(home, &tree, opts.scope, &verified.manifest)?;
        let guards = super::lock_all(store)?;
        let swaps =
            Stage::start(opts.progress, "restore: swap", (plan.carries.len() + plan.swaps.len()) as u64, Unit::Items);
        apply(&stage, &plan, &swaps)?;
        swaps.finish();
        drop(guards);
        Ok(())
    })();
    if let Err(e) = outcome {
        // Nothing was committed: undo whatever part of the swap happened, drop the staging tree.
        if let Err(undo) = recover_stage(&stage) {
            return Err(Error::other(format!("{e}; undoing the partial restore also failed: {undo}")));
        }
        return Err(e);
    }
    let _ = fs::remove_dir_all(&stage);
    let _ = atomic::fsync_dir(home.root());

    let m = &verified.manifest;
    let _ = store.emit(
        EventKind::BackupRestored,
        Severity::Warning,
        format!(
            "Restored {} from {} (taken {} on {}); the previous state is in {}",
            match opts.scope {
                Scope::All => "the home",
                Scope::Config => "the configuration",
                Scope::Coordination => "coordination/",
            },
            opts.archive.display(),
            crate::base::clock::format_ts(m.created_at),
            m.host,
            pre.path.display()
        ),
        serde_json::json!({
            "archive": opts.archive,
            "archive_created_at": crate::base::clock::format_ts(m.created_at),
            "scope": opts.scope,
            "files": m.files.iter().filter(|f| opts.scope.includes(&f.path)).count(),
            "pre_restore_backup": pre.path,
            "changed": report.changed.len() + report.added.len() + report.removed.len(),
        }),
    );
    Ok(())
}

/// Compares the archive's files with the current ones.
fn diff(home: &Home, scope: Scope, in_scope: &[&ManifestFile], report: &mut RestoreReport) -> Result<()> {
    let (current, _) = super::snapshot::sources(home);
    let current: BTreeMap<String, PathBuf> =
        current.into_iter().filter(|s| scope.includes(&s.rel)).map(|s| (s.rel, s.abs)).collect();
    let archived: BTreeSet<&str> = in_scope.iter().map(|f| f.path.as_str()).collect();
    for f in in_scope {
        match current.get(&f.path) {
            None => report.added.push(f.path.clone()),
            Some(p) => {
                if crate::store::sha256_file(p).ok().as_deref() == Some(f.sha256.as_str()) {
                    report.unchanged += 1;
                } else {
                    report.changed.push(f.path.clone());
                }
            }
        }
    }
    for rel in current.keys() {
        // Files inside a swapped directory that the archive lacks go away with it.
        let swapped_dir = match scope {
            Scope::Config => !rel.starts_with("coordination/"),
            _ => true,
        };
        if swapped_dir && !archived.contains(rel.as_str()) && archive_has_root(in_scope, rel) {
            report.removed.push(rel.clone());
        }
    }
    Ok(())
}

/// True when the archive holds the top-level item (`coordination`, `config`...) `rel` is in.
fn archive_has_root(in_scope: &[&ManifestFile], rel: &str) -> bool {
    let root = swap_root(rel);
    in_scope.iter().any(|f| swap_root(&f.path) == root)
}

/// The item a file is swapped with: its top-level directory (`agents/prompts` for prompts).
fn swap_root(rel: &str) -> &str {
    if rel.starts_with("agents/prompts/") {
        return "agents/prompts";
    }
    rel.split('/').next().unwrap_or(rel)
}

/// Writes the archive's files of `scope` under `tree`, verifying them again as they are written.
fn extract(archive: &Path, tree: &Path, scope: Scope, progress: &Stage) -> Result<()> {
    let mut dirs = BTreeSet::new();
    verify::walk(archive, |mf, content| {
        if !scope.includes(&mf.path) {
            return Ok(());
        }
        let dest = tree.join(&mf.path);
        if let Some(parent) = dest.parent() {
            atomic::create_dir_all(parent)?;
            dirs.insert(parent.to_path_buf());
        }
        // The archive's modes are not applied: a restored file is private (0600) like every
        // file Cortex writes (an archive with 0777 everywhere must not open up the home).
        let mut f = crate::store::open::create_new(&dest)?;
        std::io::copy(&mut progress.reader(content), &mut f).map_err(|e| Error::io(&dest, "write", e))?;
        f.flush().map_err(|e| Error::io(&dest, "write", e))?;
        f.sync_all().map_err(|e| Error::io(&dest, "fsync", e))
    })?;
    for d in dirs {
        atomic::fsync_dir(&d)?;
    }
    Ok(())
}

/// Creates the directories every home has inside the extracted tree (empty buckets are not in
/// archives), except those carried over from the live home, and essential files the archive
/// lacks (from their defaults, with a warning).
fn prepare_tree(tree: &Path, scope: Scope) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    if scope == Scope::Config {
        return Ok(warnings);
    }
    let staged = Home::at(tree);
    let carried = [staged.locks_dir(), staged.quarantine_dir(), staged.worker_specs(SpecBucket::Quarantine)];
    for dir in crate::store::home::home_dirs(&staged) {
        if dir.starts_with(staged.coordination()) && !carried.contains(&dir) {
            atomic::create_dir_all(&dir)?;
        }
    }
    for f in files::ALL.iter().filter(|f| f.essential) {
        let path = staged.coord(f.rel);
        let content = f.default.unwrap_or(if f.kind == files::FileKind::Json { "{}" } else { "" });
        if crate::store::init::create_if_missing(&path, content.as_bytes())? {
            warnings.push(format!("the archive has no coordination/{}; it was created from its default", f.rel));
        }
    }
    Ok(warnings)
}

/// Validates the extracted tree like `cortex validate` and `cortex config check` would. Bad
/// JSONL lines are warnings (`cortex repair` handles them); anything else refuses the restore.
fn validate_tree(tree: &Path, scope: Scope) -> Result<Vec<String>> {
    let staged = Home::at(tree);
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if scope != Scope::Config {
        for r in crate::ops::validate::validate_home(&staged) {
            if r.is_ok() {
                continue;
            }
            let line = format!("{}: {}", r.file, r.problems.join("; "));
            if r.lines.is_some() {
                warnings.push(format!("{line} (run `cortex repair` after the restore)"));
            } else {
                errors.push(line);
            }
        }
    }
    if scope != Scope::Coordination {
        let toml = staged.config_file();
        if toml.exists() || scope == Scope::Config {
            let check = crate::ops::validate::check_config(&staged, &toml);
            errors.extend(check.errors.into_iter().map(|e| e.replace(&format!("{}/", tree.display()), "")));
        }
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(Error::refused(format!(
            "the archive's state does not validate, so it was not restored (nothing was changed): {}",
            errors.join("; ")
        )))
    }
}

/// The journal of a swap.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    /// Live items moved into the staged tree before the swap (locks, quarantine).
    carries: Vec<Carry>,
    swaps: Vec<Swap>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Carry {
    from: PathBuf,
    to: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Swap {
    target: PathBuf,
    staged: PathBuf,
    staged_ino: u64,
    /// False when the live home has no such item (a rename, not an exchange).
    had_target: bool,
}

const PLAN_FILE: &str = "PLAN.json";
const COMMITTED_FILE: &str = "COMMITTED";

fn plan(home: &Home, tree: &Path, scope: Scope, manifest: &super::manifest::Manifest) -> Result<Plan> {
    let mut carries = Vec::new();
    let mut items: Vec<String> = Vec::new();
    if scope != Scope::Config {
        let staged = Home::at(tree);
        for (from, to) in [
            (home.locks_dir(), staged.locks_dir()),
            (home.quarantine_dir(), staged.quarantine_dir()),
            (home.worker_specs(SpecBucket::Quarantine), staged.worker_specs(SpecBucket::Quarantine)),
        ] {
            if from.exists() && !to.exists() {
                carries.push(Carry { from, to });
            }
        }
        items.push("coordination".into());
    }
    if scope != Scope::Coordination {
        let mut roots = BTreeSet::new();
        for f in manifest.files.iter().filter(|f| is_config_path(&f.path)) {
            if f.path.starts_with("coordination/") {
                if scope == Scope::Config {
                    roots.insert(f.path.clone());
                }
            } else {
                roots.insert(swap_root(&f.path).to_string());
            }
        }
        items.extend(roots);
    }
    let mut swaps = Vec::new();
    for item in items {
        let staged = tree.join(&item);
        let target = home.join(&item);
        let meta = fs::symlink_metadata(&staged).map_err(|e| Error::io(&staged, "inspect", e))?;
        if let Some(parent) = target.parent() {
            atomic::create_dir_all(parent)?;
        }
        swaps.push(Swap { had_target: target.symlink_metadata().is_ok(), target, staged, staged_ino: meta.ino() });
    }
    Ok(Plan { carries, swaps })
}

fn exchange(a: &Path, b: &Path) -> Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE)
        .map_err(|e| Error::io(b, "exchange", std::io::Error::from(e)))
}

fn move_item(from: &Path, to: &Path) -> Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE)
        .map_err(|e| Error::io(from, "move", std::io::Error::from(e)))
}

fn fsync_parents(a: &Path, b: &Path) -> Result<()> {
    for p in [a, b] {
        if let Some(d) = p.parent() {
            atomic::fsync_dir(d)?;
        }
    }
    Ok(())
}

/// Writes the journal, performs the moves, marks the restore committed.
fn apply(stage: &Path, plan: &Plan, progress: &Stage) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(plan)?;
    atomic::write_atomic(&stage.join(PLAN_FILE), &bytes)?;
    for c in &plan.carries {
        move_item(&c.from, &c.to)?;
        fsync_parents(&c.from, &c.to)?;
        progress.inc(1);
    }
    for (i, s) in plan.swaps.iter().enumerate() {
        super::pause_point(&format!("restore-swap-{i}"));
        if s.had_target {
            exchange(&s.staged, &s.target)?;
        } else {
            move_item(&s.staged, &s.target)?;
        }
        fsync_parents(&s.staged, &s.target)?;
        progress.inc(1);
    }
    super::pause_point("restore-before-commit");
    atomic::write_atomic(&stage.join(COMMITTED_FILE), b"committed\n")?;
    super::pause_point("restore-after-commit");
    Ok(())
}

/// Finishes or undoes restores that were interrupted (a `.tmp.restore.*` directory in the home
/// whose process is gone). Returns what it did.
pub(crate) fn recover_interrupted(home: &Home) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let Ok(entries) = fs::read_dir(home.root()) else { return Ok(done) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{TEMP_PREFIX}restore.")) else { continue };
        let pid = rest.split('.').next().and_then(|p| p.parse::<i32>().ok()).unwrap_or(0);
        if pid == std::process::id() as i32
            || (pid > 0
                && !matches!(
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                    Err(nix::errno::Errno::ESRCH)
                ))
        {
            continue;
        }
        let stage = e.path();
        let what = recover_stage(&stage)?;
        let _ = crate::store::events::emit(
            home,
            EventKind::RestoreRecovered,
            Severity::Warning,
            "cli",
            format!("An interrupted restore (PID {pid}) was {what}"),
            serde_json::json!({"stage": home.relative(&stage), "outcome": what}),
        );
        done.push(format!("an interrupted restore (PID {pid}) was {what}"));
    }
    Ok(done)
}

/// Undoes (or, if committed, completes) the swap journalled in `stage`, then removes it.
fn recover_stage(stage: &Path) -> Result<&'static str> {
    let outcome = if stage.join(COMMITTED_FILE).exists() {
        "already committed; its leftovers were removed"
    } else if let Ok(bytes) = fs::read(stage.join(PLAN_FILE)) {
        let plan: Plan = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
            path: stage.join(PLAN_FILE),
            pointer: String::new(),
            expected: e.to_string(),
            quarantined: None,
        })?;
        for s in plan.swaps.iter().rev() {
            let swapped = fs::symlink_metadata(&s.target).map(|m| m.ino() == s.staged_ino).unwrap_or(false);
            if swapped {
                if s.had_target {
                    exchange(&s.staged, &s.target)?;
                } else {
                    move_item(&s.target, &s.staged)?;
                }
                fsync_parents(&s.staged, &s.target)?;
            }
        }
        for c in plan.carries.iter().rev() {
            if c.to.exists() && !c.from.exists() {
                move_item(&c.to, &c.from)?;
                fsync_parents(&c.from, &c.to)?;
            }
        }
        "rolled back; the state before it is in place"
    } else {
        "stopped before it changed anything; its staging files were removed"
    };
    fs::remove_dir_all(stage).map_err(|e| Error::io(stage, "remove", e))?;
    Ok(outcome)
}

/// The archive `--latest` means: the newest `cortex-backup-*.tar.gz` in `dir`. When it does not
/// verify, the refusal names the newest one that does.
pub(crate) fn latest(dir: &Path) -> Result<PathBuf> {
    let all = super::retention::list(dir, ArchiveKind::Backup)?;
    let Some(newest) = all.first() else {
        return Err(Error::refused(format!(
            "no backups in {} (create one with `cortex backup`, or name one with --file)",
            dir.display()
        )));
    };
    if let Err(e) = verify::verify(&newest.path) {
        let good = all.iter().skip(1).find(|a| verify::verify(&a.path).is_ok());
        return Err(Error::refused(match good {
            Some(g) => {
                format!("{e}. The newest good backup is {}: `cortex restore --file {}`", g.name, g.path.display())
            }
            None => format!("{e}. No backup in {} verifies", dir.display()),
        }));
    }
    Ok(newest.path.clone())
}
