//! `cortex metrics [--live] [--json]`: the latest snapshot of the metrics daemon.

use super::{Ctx, print_json};
use crate::base::clock::{SystemClock, format_ts, human_duration};
use crate::base::error::{Error, Result};
use crate::daemons::metrics::Snapshot;
use clap::Args;

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Compute a snapshot now instead of reading the latest recorded one.
    #[arg(long)]
    pub live: bool,
}

pub(super) fn run(ctx: &Ctx, args: MetricsArgs) -> Result<u8> {
    let snap = if args.live {
        crate::daemons::metrics::snapshot(&ctx.store()?, &SystemClock)?
    } else {
        crate::daemons::metrics::latest(&ctx.home).ok_or_else(|| {
            Error::refused(format!(
                "no metrics snapshot in {} yet: start the metrics daemon (`cortex start metrics`) or use `cortex metrics --live`",
                ctx.home.coord_file(crate::store::files::METRICS_SNAPSHOTS).display()
            ))
        })?
    };
    if ctx.json {
        print_json(&snap);
    } else {
        print_text(&snap, args.live);
    }
    Ok(0)
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map(|x| format!("{x}{unit}")).unwrap_or_else(|| "-".into())
}

fn print_text(s: &Snapshot, live: bool) {
    let age = format!(" ({} ago)", human_duration((chrono::Utc::now() - s.timestamp).num_seconds()));
    println!("Metrics snapshot {}{}{age}", format_ts(s.timestamp), if live { " (live)" } else { "" });
    let w = &s.workers;
    println!(
        "Workers:    active {}, completed {}, failed {}, zombies killed {}, success rate {}",
        w.active,
        w.completed,
        w.failed,
        w.zombies_killed,
        opt(w.success_rate, "%")
    );
    let p = &w.duration_percentiles;
    println!(
        "Durations:  avg {} min; p50 {}, p90 {}, p95 {}, p99 {} min",
        opt(w.avg_duration_minutes, ""),
        opt(p.p50, ""),
        opt(p.p90, ""),
        opt(p.p95, ""),
        opt(p.p99, "")
    );
    let t = &s.tokens;
    println!("Tokens:     used {} of {} ({}%), available {}", t.used, t.total, t.usage_percentage, t.available);
    let k = &s.tasks;
    println!(
        "Tasks:      queued {}, in_progress {}, pending_retry {}, completed {}, failed {}, total {}",
        k.queued, k.in_progress, k.pending_retry, k.completed, k.failed, k.total
    );
    println!("Scheduler:  {}", crate::base::text::safe(&s.scheduler.state));
    if s.daemons.is_empty() {
        println!("Daemons:    none running");
    } else {
        println!("Daemons:");
        for (name, d) in &s.daemons {
            println!(
                "  {:<16} pid {:<8} rss {:>8}  cpu {:>7}  up {}",
                crate::base::text::safe(name),
                d.pid,
                opt(d.rss_mb, " MB"),
                opt(d.cpu_percent, "%"),
                d.uptime_s.map(human_duration).unwrap_or_else(|| "-".into())
            );
        }
    }
}
