//! `cortex backup` and `cortex restore`.

use super::{Ctx, print_json};
use crate::base::error::{Error, Result};
use crate::base::text::{safe, safe_or, safe_path};
use crate::ops::backup::create::{self, BackupOptions};
use crate::ops::backup::restore::{self, RestoreOptions, Scope};
use crate::ops::backup::{ArchiveKind, retention, verify};
use crate::store::config::Config;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Directory to write the archive to (default: `[backup] dest`, i.e. <home>/backups).
    #[arg(long, value_name = "DIR")]
    pub dest: Option<PathBuf>,
    /// Keep the newest N archives in the destination (default: `[backup] keep`; 0 keeps all).
    #[arg(long, value_name = "N")]
    pub keep: Option<u32>,
    /// A label added to the file name (letters, digits, '-', '_').
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnlyArg {
    /// cortex.toml, config/, agents/prompts/ and coordination/config/*, coordination/moe/router-config.json.
    Config,
    /// coordination/ only.
    Coordination,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").args(["latest", "file", "list"]).required(true)))]
pub struct RestoreArgs {
    /// Restore the newest backup in the backup directory.
    #[arg(long)]
    pub latest: bool,
    /// Restore this archive.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// List the backups (newest first) and exit.
    #[arg(long)]
    pub list: bool,
    /// Verify the archive and show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only verify the archive (gzip, tar, manifest, checksums, paths).
    #[arg(long)]
    pub verify_only: bool,
    /// Restore only part of the state.
    #[arg(long, value_enum, value_name = "PART")]
    pub only: Option<OnlyArg>,
    /// Do not ask for confirmation on a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Stop running daemons first and start them again afterwards.
    #[arg(long)]
    pub stop: bool,
    /// Where to look for backups (default: `[backup] dest`).
    #[arg(long, value_name = "DIR")]
    pub dest: Option<PathBuf>,
    /// No progress on standard error (a bar on a terminal, a line per stage otherwise).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub(super) fn backup(ctx: &Ctx, args: BackupArgs) -> Result<u8> {
    let config = lenient_config(ctx);
    let store = lenient_store(ctx, &config);
    let opts = BackupOptions {
        kind: ArchiveKind::Backup,
        dest: args.dest.map(|d| absolute(&d)),
        keep: args.keep,
        label: args.label,
        progress: !ctx.json,
    };
    let r = create::create(&store, &config, &opts)?;
    if ctx.json {
        print_json(&r);
        return Ok(0);
    }
    println!("Backup created: {}", safe_path(&r.path));
    println!(
        "  {} files, {} bytes ({} bytes compressed); store locks held {} ms; took {} ms",
        r.files, r.content_bytes, r.archive_bytes, r.locked_ms, r.duration_ms
    );
    for s in &r.skipped {
        println!("  skipped {}", safe(s));
    }
    for d in &r.retention.deleted {
        println!("  retention: deleted {}", safe_path(d));
    }
    if let Some(k) = &r.retention.kept_newest_good {
        println!("  retention: kept {} beyond the limit: it is the newest archive that verifies", safe_path(k));
    }
    Ok(0)
}

/// The home's settings; a broken `cortex.toml` must not stop a backup, restore or repair (a
/// configuration disaster is what they are for), so it falls back to the defaults with a warning.
pub(super) fn lenient_config(ctx: &Ctx) -> Config {
    Config::load(&ctx.home).unwrap_or_else(|e| {
        eprintln!("cortex: warning: {}; using default settings for this command", safe(&e.to_string()));
        Config::default()
    })
}

/// A store for the recovery commands, built from [`lenient_config`].
pub(super) fn lenient_store(ctx: &Ctx, config: &Config) -> crate::store::Store {
    crate::store::Store::new(ctx.home.clone()).with_lock_timeout(config.lock_timeout()).with_source("cli")
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

/// `--file PATH`: as given (relative to the current directory), else relative to the home (the
/// runbook's `--file backups/backup.tar.gz`).
fn resolve_file(ctx: &Ctx, file: &Path) -> Result<PathBuf> {
    let direct = absolute(file);
    if direct.is_file() {
        return Ok(direct);
    }
    let in_home = ctx.home.join(file);
    if in_home.is_file() {
        return Ok(in_home);
    }
    Err(Error::refused(format!(
        "no archive at {} (nor {}); `cortex restore --list` shows the backups",
        direct.display(),
        in_home.display()
    )))
}

pub(super) fn restore(ctx: &Ctx, args: RestoreArgs) -> Result<u8> {
    let config = lenient_config(ctx);
    let dir = args.dest.as_deref().map(absolute).unwrap_or_else(|| crate::ops::backup::backup_dir(&ctx.home, &config));
    if args.list {
        return list(ctx, &dir);
    }
    let archive = match &args.file {
        Some(f) => resolve_file(ctx, f)?,
        None => restore::latest(&dir)?,
    };
    if args.verify_only {
        let v = verify::verify(&archive)?;
        if ctx.json {
            print_json(
                &serde_json::json!({"ok": true, "archive": v.path, "archive_bytes": v.archive_bytes, "manifest": v.manifest}),
            );
        } else {
            println!(
                "OK {}: {} files ({} bytes) verified against MANIFEST.json; taken {} on {} by Cortex {}",
                safe_path(&v.path),
                v.manifest.files.len(),
                v.manifest.total_bytes(),
                crate::base::clock::format_ts(v.manifest.created_at),
                safe(&v.manifest.host),
                safe(&v.manifest.cortex_version)
            );
        }
        return Ok(0);
    }
    let scope = match args.only {
        None => Scope::All,
        Some(OnlyArg::Config) => Scope::Config,
        Some(OnlyArg::Coordination) => Scope::Coordination,
    };
    // The preview before the question shows no progress; the restore itself does (unless quiet).
    let mut opts = RestoreOptions {
        archive: archive.clone(),
        scope,
        stop_daemons: args.stop,
        dry_run: true,
        progress: crate::ops::progress::Show::Quiet,
    };
    let store = lenient_store(ctx, &config);
    if !args.dry_run && !args.yes && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let preview = restore::restore(&store, &config, &opts)?;
        print_diff(&preview);
        eprint!(
            "Restore {} over {}? The current state is saved to backups/pre-restore/ first. [y/N] ",
            safe_path(&archive),
            safe_path(ctx.home.root())
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).map_err(|e| Error::io("stdin", "read", e))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Nothing was changed.");
            return Ok(1);
        }
    }
    opts.dry_run = args.dry_run;
    opts.progress = super::recovery::progress_shown(ctx, args.quiet);
    let r = restore::restore(&store, &config, &opts)?;
    if ctx.json {
        print_json(&r);
        return Ok(0);
    }
    for note in &r.recovered {
        println!("Note: {}.", safe(note));
    }
    if r.dry_run {
        println!(
            "Dry run: {} verified (taken {} on {}); nothing was changed.",
            safe_path(&r.archive),
            crate::base::clock::format_ts(r.archive_created_at),
            safe(&r.archive_host)
        );
        print_diff(&r);
        return Ok(0);
    }
    if !r.stopped_daemons.is_empty() {
        println!("Stopped daemons: {}", r.stopped_daemons.join(", "));
    }
    println!("Restoring from: {}", safe_path(&r.archive));
    print_diff(&r);
    if let Some(p) = &r.pre_restore_backup {
        println!("Previous state saved in {}", safe_path(p));
    }
    for w in &r.warnings {
        println!("Warning: {}", safe(w));
    }
    if !r.restarted_daemons.is_empty() {
        println!("Started daemons again: {}", r.restarted_daemons.join(", "));
    }
    println!(
        "Restore complete ({}); check with `cortex validate`.",
        match r.scope {
            Scope::All => "everything",
            Scope::Config => "configuration only",
            Scope::Coordination => "coordination/ only",
        }
    );
    Ok(0)
}

fn print_diff(r: &restore::RestoreReport) {
    for (tag, files) in [("changed", &r.changed), ("added", &r.added), ("removed", &r.removed)] {
        for f in files {
            println!("  {tag:8} {}", safe(f));
        }
    }
    println!(
        "  {} changed, {} added, {} removed, {} unchanged",
        r.changed.len(),
        r.added.len(),
        r.removed.len(),
        r.unchanged
    );
}

fn list(ctx: &Ctx, dir: &Path) -> Result<u8> {
    let mut rows = Vec::new();
    for (kind, d) in [
        (ArchiveKind::Backup, dir.to_path_buf()),
        (ArchiveKind::PreRestore, ctx.home.pre_restore_backups()),
        (ArchiveKind::PreReset, ctx.home.pre_reset_backups()),
    ] {
        for a in retention::list(&d, kind)? {
            let manifest = verify::read_manifest(&a.path);
            rows.push(serde_json::json!({
                "path": a.path,
                "name": a.name,
                "kind": kind.as_str(),
                "bytes": a.bytes,
                "modified": a.modified,
                "created_at": manifest.as_ref().ok().map(|m| crate::base::clock::format_ts(m.created_at)),
                "files": manifest.as_ref().ok().map(|m| m.files.len()),
                "label": manifest.as_ref().ok().and_then(|m| m.label.clone()),
                "problem": manifest.as_ref().err().map(|e| e.to_string()),
            }));
        }
    }
    if ctx.json {
        print_json(&serde_json::json!({"backups": rows}));
        return Ok(0);
    }
    if rows.is_empty() {
        println!("No backups in {} (create one with `cortex backup`).", safe_path(dir));
        return Ok(0);
    }
    println!("{:<48} {:>12} {:>6}  {:<27} KIND", "ARCHIVE", "BYTES", "FILES", "CREATED");
    for r in &rows {
        let kind = r["kind"].as_str().unwrap_or("");
        let name = if kind == "backup" {
            r["name"].as_str().unwrap_or("").to_string()
        } else {
            format!("{kind}/{}", r["name"].as_str().unwrap_or(""))
        };
        println!(
            "{:<48} {:>12} {:>6}  {:<27} {}{}",
            safe(&name),
            r["bytes"].as_u64().unwrap_or(0),
            r["files"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
            safe_or(r["created_at"].as_str(), "?"),
            kind,
            r["problem"].as_str().map(|p| format!("  UNREADABLE: {}", safe(p))).unwrap_or_default()
        );
    }
    println!("Restore one with `cortex restore --file PATH` (or --latest); `--verify-only` checks it completely.");
    Ok(0)
}
