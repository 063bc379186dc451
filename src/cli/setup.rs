//! `cortex init`, `cortex validate`, `cortex config check` (and the seed form
//! `cortex --config FILE --dry-run`).

use super::{Ctx, print_json};
use crate::base::error::Result;
use crate::base::text::{safe, safe_path};
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate cortex.toml and every JSON config file.
    Check {
        /// The cortex.toml to check (default: the home's).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Reset configuration files (worker types, router, policies) to their defaults; the old content is kept beside.
    RestoreDefaults {
        /// Only this file (e.g. worker-types, router-config.json).
        #[arg(long, value_name = "NAME")]
        file: Option<String>,
    },
}

pub(super) fn init(ctx: &Ctx) -> Result<u8> {
    let created = crate::store::init::init_home(&ctx.home)?;
    if ctx.json {
        let rel: Vec<_> = created.iter().map(|p| ctx.home.relative(p).display().to_string()).collect();
        print_json(&serde_json::json!({"home": ctx.home.root(), "created": rel}));
    } else if created.is_empty() {
        println!("Cortex home {} is complete; nothing to create.", safe_path(ctx.home.root()));
    } else {
        println!("Initialised Cortex home {}:", safe_path(ctx.home.root()));
        for p in &created {
            println!("  created {}", safe_path(ctx.home.relative(p)));
        }
    }
    Ok(0)
}

pub(super) fn validate(ctx: &Ctx) -> Result<u8> {
    let reports = crate::ops::validate::validate_home(&ctx.home);
    let bad = reports.iter().filter(|r| !r.is_ok()).count();
    if ctx.json {
        print_json(&serde_json::json!({"ok": bad == 0, "bad": bad, "files": reports}));
    } else {
        for r in &reports {
            let tag = match r.verdict {
                crate::ops::validate::Verdict::Ok => "[OK]",
                crate::ops::validate::Verdict::Corrupt => "[CORRUPT]",
                crate::ops::validate::Verdict::Invalid => "[INVALID]",
                crate::ops::validate::Verdict::Missing => "[MISSING]",
            };
            println!("{tag} {}", safe(&r.file));
            for p in &r.problems {
                println!("      {}", safe(p));
            }
        }
        if bad == 0 {
            println!("All {} coordination files are valid.", reports.len());
        } else {
            println!(
                "{bad} of {} files need attention: `cortex repair` fixes what it can; see the emergency recovery runbook.",
                reports.len()
            );
        }
    }
    Ok(if bad == 0 { 0 } else { 1 })
}

pub(super) fn config(ctx: &Ctx, cmd: ConfigCommand) -> Result<u8> {
    match cmd {
        ConfigCommand::Check { config } => config_check(ctx, config.as_deref()),
        ConfigCommand::RestoreDefaults { file } => super::recovery::restore_defaults(ctx, file.as_deref()),
    }
}

pub(super) fn config_check(ctx: &Ctx, config: Option<&Path>) -> Result<u8> {
    let path = config.map(Path::to_path_buf).unwrap_or_else(|| ctx.home.config_file());
    let check = crate::ops::validate::check_config(&ctx.home, &path);
    if ctx.json {
        print_json(&check);
        return Ok(if check.ok { 0 } else { 1 });
    }
    for w in &check.warnings {
        eprintln!("warning: {}", safe(w));
    }
    if check.ok {
        println!("Configuration validation successful");
    } else {
        for e in &check.errors {
            eprintln!("error: {}", safe(e));
        }
        eprintln!("Configuration validation failed: {} error(s)", check.errors.len());
    }
    Ok(if check.ok { 0 } else { 1 })
}
