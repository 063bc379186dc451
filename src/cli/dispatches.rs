//! `cortex dispatches [--status S] [--task ID] [--json]`: the dispatch records in
//! `worker-specs/`, as `GET /dispatches` shows them.

use super::{Ctx, print_json};
use crate::base::clock::format_ts;
use crate::base::error::{Error, Result};
use crate::base::text::safe;
use crate::ops::status::{StatusReader, parse_dispatch_status};
use clap::Args;
use serde_json::json;

#[derive(Debug, Args)]
pub struct DispatchesArgs {
    /// Only dispatches in this state (starting, running, completed, failed, cancelled, timeout, lost, zombie).
    #[arg(long)]
    status: Option<String>,
    /// Only the dispatches of this task.
    #[arg(long = "task", value_name = "TASK_ID")]
    task: Option<String>,
}

pub(super) fn run(ctx: &Ctx, args: DispatchesArgs) -> Result<u8> {
    let status = args
        .status
        .as_deref()
        .map(parse_dispatch_status)
        .transpose()
        .map_err(|detail| Error::Config { path: None, detail })?;
    let reader = StatusReader::new(ctx.store()?, crate::store::config::Config::load(&ctx.home)?);
    let views: Vec<_> = reader
        .dispatches()?
        .iter()
        .filter(|d| status.is_none_or(|s| d.record.status() == s))
        .filter(|d| args.task.as_ref().is_none_or(|t| &d.record.task_id == t))
        .map(|d| reader.dispatch_view(d, false))
        .collect();
    if ctx.json {
        print_json(&json!({"count": views.len(), "dispatches": views}));
        return Ok(0);
    }
    if views.is_empty() {
        println!("No dispatches{}.", args.status.map(|s| format!(" with status {s}")).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "{:<36} {:<28} {:<10} {:>3} {:>8} {:<28} {:>9}",
        "DISPATCH", "TASK", "STATUS", "ATT", "PID", "DISPATCHED", "SECONDS"
    );
    for v in &views {
        println!(
            "{:<36} {:<28} {:<10} {:>3} {:>8} {:<28} {:>9}",
            safe(&v.id),
            safe(&v.task_id),
            v.status,
            v.attempt,
            v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            format_ts(v.dispatched_at),
            v.duration_s.map(|d| format!("{d:.1}")).unwrap_or_else(|| "-".into())
        );
        if v.executor.is_some() && (v.job_id.is_some() || v.waiting.is_some()) {
            let job = v.job_id.map(|j| format!("job {j}")).unwrap_or_else(|| "no job id yet".into());
            let why = v.waiting.as_deref().map(|w| format!(": {}", safe(w))).unwrap_or_default();
            println!("  slurm {job}{why}");
        }
    }
    Ok(0)
}
