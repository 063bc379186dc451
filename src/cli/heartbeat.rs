//! `cortex heartbeat [--tokens N] [--message M]`: run by a task's process to prove it is alive.
//! Finds its heartbeat file from `CORTEX_HEARTBEAT_FILE` (else `CORTEX_DISPATCH_ID` in the home),
//! increments `sequence` and writes the file atomically; `--tokens` also updates the usage file.

use super::{Ctx, print_json};
use crate::base::error::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct HeartbeatArgs {
    /// Tokens used so far by the task.
    #[arg(long)]
    pub tokens: Option<u64>,
    /// A short progress note, kept in the dispatch's heartbeat record.
    #[arg(long)]
    pub message: Option<String>,
    /// The dispatch (default: env CORTEX_DISPATCH_ID).
    #[arg(long, env = "CORTEX_DISPATCH_ID", value_name = "ID")]
    pub dispatch: Option<String>,
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

pub(super) fn run(ctx: &Ctx, args: HeartbeatArgs) -> Result<u8> {
    let valid_id = args.dispatch.as_deref().filter(|id| crate::domain::task::dispatches::is_valid_id(id));
    if let Some(id) = args.dispatch.as_deref()
        && valid_id.is_none()
    {
        return Err(Error::Config { path: None, detail: format!("invalid dispatch id {id:?}") });
    }
    let path = env_path("CORTEX_HEARTBEAT_FILE").or_else(|| valid_id.map(|id| ctx.home.heartbeat_file(id))).ok_or_else(
        || Error::Config {
            path: None,
            detail: "no heartbeat file: run this from a task (CORTEX_HEARTBEAT_FILE or CORTEX_DISPATCH_ID is set there) or pass --dispatch ID".into(),
        },
    )?;
    let beat = crate::daemons::heartbeat::beat::record(&path, args.tokens, args.message, chrono::Utc::now())?;
    if let Some(tokens) = args.tokens
        && let Some(usage) = env_path("CORTEX_USAGE_FILE").or_else(|| valid_id.map(|id| ctx.home.usage_file(id)))
    {
        let body = serde_json::json!({ "tokens_used": tokens });
        crate::store::atomic::write_atomic(&usage, body.to_string().as_bytes())?;
    }
    if ctx.json {
        print_json(&beat);
    } else {
        println!(
            "heartbeat {} recorded at {} ({})",
            beat.sequence,
            crate::base::text::safe(&beat.timestamp),
            crate::base::text::safe_path(&path)
        );
    }
    Ok(0)
}
