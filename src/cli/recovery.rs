//! `cortex repair`, `cortex recover-stale`, `cortex reset`, `cortex config restore-defaults`.

use super::backup::{lenient_config, lenient_store};
use super::{Ctx, print_json};
use crate::base::error::{Error, Result};
use crate::base::text::{safe, safe_path};
use std::time::Duration;

pub(super) fn repair(ctx: &Ctx, dry_run: bool, quiet: bool) -> Result<u8> {
    let store = lenient_store(ctx, &lenient_config(ctx));
    let r = crate::ops::recovery::repair::repair(&store, dry_run, progress_shown(ctx, quiet))?;
    let unfixed = r.actions.iter().filter(|a| !a.fixed).count();
    if ctx.json {
        print_json(&r);
    } else if r.actions.is_empty() {
        println!("Nothing to repair: every coordination file is readable.");
    } else {
        for a in &r.actions {
            let tag = match (a.fixed, dry_run) {
                (false, _) => "[MANUAL]",
                (true, true) => "[WOULD FIX]",
                (true, false) => "[FIXED]",
            };
            println!("{tag} {}: {}", safe(&a.file), safe(&a.action));
        }
        if dry_run {
            println!("Dry run: nothing was changed; run `cortex repair` to apply.");
        } else {
            println!("Check the result with `cortex validate`.");
        }
    }
    Ok(if unfixed > 0 { 1 } else { 0 })
}

pub(super) fn recover_stale(ctx: &Ctx, older_than: &str, dry_run: bool) -> Result<u8> {
    let limit = crate::base::clock::parse_duration(older_than)
        .map_err(|e| Error::Config { path: None, detail: format!("--older-than: {e}") })?;
    let config = lenient_config(ctx);
    let store = lenient_store(ctx, &config);
    let grace = Duration::from_secs_f64(config.worker.grace_seconds.max(0.0));
    let r =
        crate::ops::recovery::stale::recover_stale(&store, &crate::base::clock::SystemClock, limit, grace, dry_run)?;
    if ctx.json {
        print_json(&r);
        return Ok(0);
    }
    for d in &r.lost {
        let group = match (d.stopped_process, dry_run) {
            (false, _) => "",
            (true, true) => " (its process group would be stopped)",
            (true, false) => " (its process group was stopped)",
        };
        println!(
            "{} {} (task {}): {}{group}",
            if dry_run { "would mark lost" } else { "marked lost" },
            safe(&d.dispatch_id),
            safe(&d.task_id),
            safe(&d.reason),
        );
    }
    println!(
        "{} active dispatch(es) checked, {} {}.{}",
        r.checked,
        r.lost.len(),
        if dry_run { "stale" } else { "moved to failed/ as lost" },
        if !dry_run && !r.lost.is_empty() { " The coordinator applies each task's retry policy." } else { "" }
    );
    Ok(0)
}

pub(super) fn reset(ctx: &Ctx, yes: bool) -> Result<u8> {
    if !yes {
        return Err(Error::refused(crate::ops::recovery::reset::EXPLANATION));
    }
    let config = lenient_config(ctx);
    let store = lenient_store(ctx, &config);
    let r = crate::ops::recovery::reset::reset(&store, &config)?;
    if ctx.json {
        print_json(&r);
        return Ok(0);
    }
    println!("Pre-reset backup: {}", safe_path(&r.pre_reset_backup));
    if !r.stopped_daemons.is_empty() {
        println!("Stopped daemons: {}", r.stopped_daemons.join(", "));
    }
    println!(
        "Cleared {} task(s) and {} active/zombie spec(s); stopped {} dispatch process(es); token budget reset to {}.",
        r.tasks_cleared, r.specs_cleared, r.processes_stopped, r.budget_total
    );
    for p in &r.task_processes_killed {
        println!("  stopped {}", crate::domain::task::processes::describe(p));
    }
    for w in &r.warnings {
        println!("Warning: {}", safe(w));
    }
    if r.restarted_daemons.is_empty() {
        println!("Reset complete; configuration and logs kept. Start the system with `cortex start`.");
    } else {
        println!("Reset complete; started again: {}.", r.restarted_daemons.join(", "));
    }
    Ok(0)
}

pub(super) fn restore_defaults(ctx: &Ctx, file: Option<&str>) -> Result<u8> {
    let store = lenient_store(ctx, &lenient_config(ctx));
    let done = crate::ops::recovery::defaults::restore_defaults(&store, file)?;
    if ctx.json {
        print_json(&serde_json::json!({"files": done}));
        return Ok(0);
    }
    for d in &done {
        match (&d.kept, d.changed) {
            (_, false) => println!("{} already has its default content", safe(&d.file)),
            (Some(k), true) => println!(
                "{} reset to its default (previous content kept at {})",
                safe(&d.file),
                safe_path(ctx.home.relative(k))
            ),
            (None, true) => println!("{} created with its default content", safe(&d.file)),
        }
    }
    Ok(0)
}

/// Progress on standard error: none with --quiet or --json.
pub(super) fn progress_shown(ctx: &Ctx, quiet: bool) -> crate::ops::progress::Show {
    if quiet || ctx.json { crate::ops::progress::Show::Quiet } else { crate::ops::progress::Show::Auto }
}
