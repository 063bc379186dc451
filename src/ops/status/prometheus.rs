//! `GET /metrics`: the Prometheus exposition of Cortex's state, built with `prometheus-client`
//! from the same reads as `GET /status` (nothing is kept between scrapes: every value is derived
//! from the coordination files, so any api daemon restart reports the same numbers).
//!
//! A file that cannot be read never fails the scrape: the series derived from it are left out
//! (absent, not a made-up 0) and `cortex_status_file_unreadable{file="…"} 1` names it.

use super::StatusReader;
use crate::base::daemon_name::Daemon;
use crate::base::error::{Error, Result};
use crate::domain::task::{DispatchStatus, TaskStatus};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(String, String)>;

/// Upper bounds of the enqueue→start latency histogram, seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0];

/// The creation time of each task id asked (None for a task not in the queue).
pub(crate) type CreatedLookup<'a> = &'a dyn Fn(&[&str]) -> Result<Vec<Option<crate::base::clock::Timestamp>>>;

/// Renders every metric in the Prometheus text format.
pub(crate) fn render(reader: &StatusReader) -> Result<String> {
    render_with(reader, &|ids| {
        let q = reader.queue_created()?;
        Ok(ids.iter().map(|id| q.created.get(*id).copied()).collect())
    })
}

/// [`render`], the tasks' creation times (for the latency histogram) looked up by `created`
/// (the API's rows of the live tasks, followed by offset) instead of read from the whole queue.
pub(crate) fn render_with(reader: &StatusReader, created: CreatedLookup) -> Result<String> {
    let cfg = reader.config();
    let now = chrono::Utc::now();
    let snap = reader.snapshot();
    let mut reg = Registry::default();
    let unreadable = Family::<Labels, Gauge>::default();
    for e in &snap.errors {
        unreadable.get_or_create(&vec![("file".into(), e.file.clone())]).set(1);
    }
    reg.register(
        "cortex_status_file_unreadable",
        "1 for each coordination file the status views cannot read (corrupt, breaking its schema, unreadable)",
        unreadable,
    );
    let empty = Vec::new();
    let dispatches = snap.dispatches.as_deref().unwrap_or(&empty);

    let failures = dispatches
        .iter()
        .filter(|d| {
            matches!(d.record.status(), DispatchStatus::Failed | DispatchStatus::Timeout | DispatchStatus::Lost)
        })
        .count() as u64;
    let counter = |name: &str, help: &str, v: u64, reg: &mut Registry| {
        let c: Counter = Counter::default();
        c.inc_by(v);
        reg.register(name, help, c);
    };
    counter(
        "cortex_dispatch_failures",
        "Dispatches that ended failed, timed out or lost (records on disk)",
        failures,
        &mut reg,
    );
    counter(
        "cortex_dispatches_failed",
        "Dispatches that ended failed, timed out or lost (same value as cortex_dispatch_failures_total)",
        failures,
        &mut reg,
    );
    counter("cortex_dispatches", "Dispatch records on disk, in every state", dispatches.len() as u64, &mut reg);

    let gauge = |name: &str, help: &str, v: i64, reg: &mut Registry| {
        let g: Gauge = Gauge::default();
        g.set(v);
        reg.register(name, help, g);
    };
    if let Some(running) = snap.running_count() {
        gauge("cortex_dispatches_running", "Dispatches starting or running now", running as i64, &mut reg);
    }
    if let Some(sched) = &snap.scheduler {
        gauge("cortex_scheduler_paused", "1 while the scheduler is paused, else 0", sched.is_paused() as i64, &mut reg);
    }
    if let Some(budget) = &snap.budget {
        gauge(
            "cortex_token_budget_available",
            "Tokens available (total - used - reserved)",
            budget.available as i64,
            &mut reg,
        );
    }
    gauge(
        "cortex_max_concurrent_dispatches",
        "Configured limit of dispatches running at once",
        cfg.scheduler.max_concurrent_dispatches as i64,
        &mut reg,
    );
    let uptime = super::coordinator_uptime(reader.home(), &cfg, now).unwrap_or(0);
    gauge("cortex_uptime_seconds", "Seconds since the coordinator started (0 while it is down)", uptime, &mut reg);

    if let Some(queue) = &snap.queue {
        let tasks = Family::<Labels, Gauge>::default();
        for s in TaskStatus::ALL {
            tasks.get_or_create(&vec![("status".into(), s.as_str().into())]).set(queue.count(s) as i64);
        }
        reg.register("cortex_tasks", "Tasks in task-queue.json by status", tasks);
    }

    let up = Family::<Labels, Gauge>::default();
    for d in Daemon::ALL {
        let v = (super::daemon_state(reader.home(), d, &cfg) == "running") as i64;
        up.get_or_create(&vec![("daemon".into(), d.as_str().into())]).set(v);
    }
    reg.register("cortex_daemon_up", "1 when the daemon holds its PID file lock, else 0", up);

    let latency = Histogram::new(LATENCY_BUCKETS);
    let first: Vec<_> = dispatches.iter().filter(|d| d.record.attempt == 1).collect();
    let ids: Vec<&str> = first.iter().map(|d| d.record.task_id.as_str()).collect();
    let times = if ids.is_empty() { Vec::new() } else { created(&ids).unwrap_or_default() };
    for (d, created) in first.iter().zip(times) {
        if let Some(created) = created {
            latency.observe(((d.record.dispatched_at - created).num_milliseconds().max(0) as f64) / 1000.0);
        }
    }
    reg.register(
        "cortex_dispatch_latency_seconds",
        "Time from a task's creation to its first dispatch (tasks still in the queue)",
        latency,
    );
    if let Some(budget) = &snap.budget {
        let reserved: Gauge<f64, AtomicU64> = Gauge::default();
        reserved.set(budget.reserved() as f64);
        reg.register("cortex_token_budget_reserved", "Tokens reserved by running dispatches", reserved);
    }

    // cortex-notify's deliveries: every result of every configured sink, 0 included, once
    // notifications were configured (its state file exists).
    if let Some(n) = crate::ops::notify::list::summary(reader.home()) {
        let notes = Family::<Labels, Counter>::default();
        for (sink, results) in &n.totals {
            for r in crate::domain::notify::state::RESULTS {
                let v = results.get(r).copied().unwrap_or(0);
                notes.get_or_create(&vec![("sink".into(), sink.clone()), ("result".into(), r.into())]).inc_by(v);
            }
        }
        reg.register(
            "cortex_notifications",
            "Notification attempts by sink and result: delivered, retried (an attempt failed), failed (deadline passed)",
            notes,
        );
        gauge(
            "cortex_notifications_pending",
            "Notifications not acknowledged by their sink yet",
            n.pending as i64,
            &mut reg,
        );
    }

    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| Error::other(format!("cannot encode metrics: {e}")))?;
    Ok(to_prometheus_text(&out))
}

/// Turns prometheus-client's OpenMetrics text into the Prometheus text format (0.0.4) that
/// `promtool check metrics` and every scraper read: a counter's HELP and TYPE lines name the
/// `_total` series, and there is no `# EOF` line.
///
/// In HELP and TYPE lines a tab (which the format allows between tokens) follows the metric
/// name, so the runbook's `grep -o 'cortex_dispatch_failures_total [0-9]*'` matches only the
/// sample line and prints one number.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) { "_total" } else { "" };
                out.push_str(&format!("{prefix}{name}{suffix}\t{tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_get_total_in_help_and_type() {
        let om =
            "# HELP x_failures Failures.\n# TYPE x_failures counter\nx_failures_total 3\n# TYPE g gauge\ng 1\n# EOF\n";
        let text = super::to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP x_failures_total\tFailures.\n# TYPE x_failures_total\tcounter\nx_failures_total 3\n# TYPE g\tgauge\ng 1\n"
        );
    }
}
