//! `cortex start`, `stop`, `restart`, `status`, `health-check` (`cortex run` is
//! `supervisor::foreground`).

use super::{Ctx, print_json};
use crate::base::daemon_name::Daemon;
use crate::base::error::Result;
use crate::base::text::{safe, safe_or};
use crate::ops::supervisor::control::{self, StopOptions};
use crate::ops::supervisor::registry;
use crate::ops::supervisor::status::{self, DaemonState, Health};
use crate::store::config::Config;
use clap::Args;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Daemons to start (default: every enabled one), in start order.
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Daemons to stop (default: all), in reverse start order.
    pub names: Vec<String>,
    /// Seconds between SIGTERM and SIGKILL (default `[supervisor] stop_timeout_seconds`, 5).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// SIGKILL the daemons at once and stop every task process of this home (TERM, grace, KILL).
    #[arg(long)]
    pub force: bool,
    /// Worker: also kill running task processes (otherwise the worker re-adopts them on start).
    #[arg(long)]
    pub kill_tasks: bool,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Daemons to restart (default: every enabled one).
    pub names: Vec<String>,
    /// Restart one at a time (always so; with no names: every enabled daemon).
    #[arg(long)]
    pub rolling: bool,
    /// Seconds each restarted daemon must stay up before the next (default `[supervisor] stabilization_seconds`).
    #[arg(long, value_name = "SECS")]
    pub stabilization: Option<f64>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status again every --interval until interrupted (Ctrl-C), for terminals where
    /// `cortex top` does not fit.
    #[arg(long)]
    pub watch: bool,
    /// How often --watch prints (e.g. 1s, 500ms, 1m).
    #[arg(long, default_value = "1s", value_name = "DURATION", requires = "watch")]
    pub interval: String,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Restart daemons that are dead or hung (not those stopped with `cortex stop`, nor FAILED ones).
    #[arg(long)]
    pub fix: bool,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

pub(super) fn start(ctx: &Ctx, args: StartArgs) -> Result<u8> {
    let config = Config::load(&ctx.home)?;
    let daemons = registry::select(&config, &args.names, false)?;
    let mut results = Vec::new();
    for d in daemons {
        let r = control::start_one(&ctx.home, &config, d);
        if !ctx.json {
            match r.outcome.as_str() {
                "started" => {
                    let stale =
                        r.stale_pid.map(|p| format!("; took over the stale PID file of PID {p}")).unwrap_or_default();
                    println!(
                        "{d}: started (PID {}, ready in {:.2}s{stale})",
                        r.pid.unwrap_or(0),
                        r.took_ms as f64 / 1000.0
                    );
                }
                "already_running" => println!("{d}: already running (PID {}), nothing to do", r.pid.unwrap_or(0)),
                _ => {
                    println!("{d}: FAILED to start: {}", safe_or(r.error.as_deref(), "unknown error"));
                    if !r.log_tail.is_empty() {
                        println!(
                            "  last lines of {}:",
                            safe(&ctx.home.relative(&ctx.home.daemon_log(d)).to_string_lossy())
                        );
                        for l in &r.log_tail {
                            println!("    {}", safe(l));
                        }
                    }
                }
            }
        }
        results.push(r);
    }
    let ok = results.iter().all(|r| r.ok());
    if ctx.json {
        print_json(&serde_json::json!({"ok": ok, "daemons": results}));
    }
    Ok(if ok { 0 } else { 1 })
}

pub(super) fn stop(ctx: &Ctx, args: StopArgs) -> Result<u8> {
    let config = Config::load(&ctx.home)?;
    let mut daemons = if args.names.is_empty() {
        crate::base::daemon_name::Daemon::ALL.to_vec()
    } else {
        registry::select(&config, &args.names, true)?
    };
    daemons.reverse();
    let opts = StopOptions {
        timeout: args.timeout.map(secs).unwrap_or_else(|| control::stop_timeout(&config)),
        force: args.force,
        kill_tasks: args.kill_tasks,
        record_intent: true,
    };
    // Record every intent first, so pm does not restart one daemon while another is stopping.
    for d in &daemons {
        registry::set_stop_intent(&ctx.home, *d, "cortex stop")?;
    }
    let mut results = Vec::new();
    for d in daemons {
        let r = control::stop_one(&ctx.home, &config, d, opts);
        if !ctx.json {
            let pid = r.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
            let took = r.took_ms as f64 / 1000.0;
            match r.outcome.as_str() {
                "stopped" => println!("{d}: stopped (PID {pid}, {took:.2}s)"),
                "killed_after_timeout" => println!(
                    "{d}: killed (PID {pid} ignored SIGTERM for {:.1}s, sent SIGKILL)",
                    opts.timeout.as_secs_f64()
                ),
                "killed" => println!("{d}: killed (PID {pid}, --force)"),
                "not_running" => {
                    if !args.names.is_empty() {
                        println!("{d}: not running")
                    }
                }
                "cleaned_stale" => println!("{d}: was not running; removed its stale PID file (PID {pid})"),
                _ => println!("{d}: FAILED to stop: {}", safe_or(r.error.as_deref(), "unknown error")),
            }
            if let Some(n) = r.tasks_killed {
                println!("{d}: killed {n} running task process(es)");
                for p in &r.task_processes_killed {
                    println!("  {}", crate::domain::task::processes::describe(p));
                }
            }
        }
        results.push(r);
    }
    let ok = results.iter().all(|r| r.ok());
    if ctx.json {
        print_json(&serde_json::json!({"ok": ok, "daemons": results}));
    } else if args.names.is_empty() && results.iter().all(|r| r.outcome == "not_running") {
        println!("No daemon was running in {}", safe(&ctx.home.root().to_string_lossy()));
    }
    Ok(if ok { 0 } else { 1 })
}

pub(super) fn restart(ctx: &Ctx, args: RestartArgs) -> Result<u8> {
    let config = Config::load(&ctx.home)?;
    // Restarts are always one at a time; `--rolling` names the runbook's form for all daemons.
    let daemons = registry::select(&config, &args.names, false)?;
    let stab = args.stabilization.map(secs).unwrap_or_else(|| secs(config.supervisor.stabilization_seconds));
    let json = ctx.json;
    let steps = control::restart(&ctx.home, &config, &daemons, stab, |s| {
        if json {
            return;
        }
        let old = s.old_pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        if s.ok {
            println!(
                "{}: restarted (PID {old} -> {}), stable for {:.1}s",
                s.daemon,
                s.new_pid.unwrap_or(0),
                stab.as_secs_f64()
            );
        } else {
            println!("{}: restart FAILED: {}", s.daemon, safe_or(s.error.as_deref(), "unknown error"));
            for l in &s.log_tail {
                println!("    {}", safe(l));
            }
        }
    });
    let ok = steps.len() == daemons.len() && steps.iter().all(|s| s.ok);
    let skipped: Vec<Daemon> = daemons.iter().skip(steps.len()).copied().collect();
    if json {
        print_json(&serde_json::json!({"ok": ok, "steps": steps, "not_restarted": skipped}));
    } else if ok {
        println!("Rolling restart complete ({} daemons)", steps.len());
    } else if !skipped.is_empty() {
        println!(
            "Stopped at the first failure; not restarted (still running): {}",
            skipped.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(if ok { 0 } else { 1 })
}

/// `cortex status`: never fails on a bad coordination file. What runs is counted from the
/// dispatch records; a file that cannot be read is named (`errors`, a `Problem:` line) and makes
/// the exit status 1, like a daemon that is down.
pub(super) fn status(ctx: &Ctx, args: StatusArgs) -> Result<u8> {
    if !args.watch {
        return status_once(ctx);
    }
    use std::io::{IsTerminal, Write};
    let interval = crate::base::clock::parse_duration(&args.interval)
        .map_err(|e| crate::base::error::Error::Config { path: None, detail: format!("--interval: {e}") })?
        .max(Duration::from_millis(100));
    let terminal = std::io::stdout().is_terminal();
    loop {
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        if terminal {
            // Home the cursor and clear the screen, as watch(1) does.
            print!("\x1b[H\x1b[2J");
        }
        println!("Every {}: cortex status    {now}\n", safe(&args.interval));
        status_once(ctx)?;
        if !terminal {
            println!();
        }
        std::io::stdout()
            .flush()
            .map_err(|e| crate::base::error::Error::other(format!("cannot write the status: {e}")))?;
        std::thread::sleep(interval);
    }
}

fn status_once(ctx: &Ctx) -> Result<u8> {
    let config = Config::load(&ctx.home)?;
    let ov = status::overview(&ctx.home, &config);
    let store = crate::store::Store::new(ctx.home.clone()).with_lock_timeout(config.lock_timeout()).with_source("cli");
    let snap = crate::ops::status::StatusReader::new(store, config).snapshot();
    let running = snap.running_count();
    let healthy = ov.all_running && snap.errors.is_empty();
    if ctx.json {
        let mut v = serde_json::to_value(&ov).unwrap_or_default();
        v["running_count"] = serde_json::json!(running);
        v["errors"] = serde_json::json!(snap.errors);
        v["healthy"] = serde_json::json!(healthy);
        print_json(&v);
    } else {
        for d in &ov.daemons {
            println!("{}", safe(&d.line()));
        }
        println!();
        match (&ov.scheduler, &ov.scheduler_reason) {
            (Some(s), Some(r)) if s == "paused" => println!("Scheduler: paused ({})", safe(r)),
            (Some(s), _) => println!("Scheduler: {}", safe(s)),
            (None, _) => println!("Scheduler: unknown"),
        }
        if let Some(t) = &ov.tasks {
            println!("Tasks: {} queued, {} in progress, {} pending retry", t.queued, t.in_progress, t.pending_retry);
        }
        match running {
            Some(n) => println!("Dispatches: {n} running"),
            None => println!("Dispatches: unknown"),
        }
        println!("Supervisor: {}", safe_or(ov.supervisor.as_deref(), "none (pm is not running)"));
        println!("API: {}", safe(&ov.api));
        if let Some(n) = &ov.notifications {
            let total = |r: &str| n.totals.values().filter_map(|m| m.get(r)).sum::<u64>();
            println!(
                "Notifications: {} pending, {} delivered, {} failed",
                n.pending,
                total("delivered"),
                total("failed")
            );
        }
        for p in &ov.problems {
            println!("Problem: {}", safe(p));
        }
        for e in snap.errors.iter().filter(|e| !ov.problems.contains(&e.error)) {
            println!("Problem: cannot read {}: {}", safe(&e.file), safe(&e.error));
        }
    }
    Ok(if healthy { 0 } else { 1 })
}

pub(super) fn health_check(ctx: &Ctx, args: HealthArgs) -> Result<u8> {
    let config = Config::load(&ctx.home)?;
    let mut ov = status::overview(&ctx.home, &config);
    let mut fixed = Vec::new();
    if args.fix {
        for d in ov.daemons.iter().filter(|d| d.enabled && !d.healthy()) {
            let fixable = match d.state {
                DaemonState::Stale | DaemonState::Hung => true,
                DaemonState::Stopped => !d.stopped_by_operator,
                _ => false,
            };
            if !fixable {
                continue;
            }
            let ts = chrono::Local::now().format("%a %b %e %H:%M:%S %Z %Y");
            if !ctx.json {
                println!(
                    "{ts}: Restarting {} daemon: {}",
                    if d.state == DaemonState::Hung { "hung" } else { "dead" },
                    d.name
                );
            }
            if d.state == DaemonState::Hung {
                let opts = StopOptions {
                    timeout: control::stop_timeout(&config),
                    force: false,
                    kill_tasks: false,
                    record_intent: false,
                };
                control::stop_one(&ctx.home, &config, d.name, opts);
            }
            let r = control::start_one(&ctx.home, &config, d.name);
            if !ctx.json && !r.ok() {
                println!("  {}: {}", d.name, safe_or(r.error.as_deref(), "failed"));
            }
            fixed.push(r);
        }
        if !fixed.is_empty() {
            ov = status::overview(&ctx.home, &config);
        }
    }
    let health = status::health(&ov);
    if ctx.json {
        print_json(
            &serde_json::json!({"status": health, "exit_code": health.exit_code(), "fixed": fixed, "daemons": ov.daemons}),
        );
    } else {
        let word = match health {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Down => "down",
        };
        println!("Cortex is {word}");
        for d in ov.daemons.iter().filter(|d| d.enabled && !d.healthy()) {
            println!("  {}", safe(&d.line()));
        }
    }
    Ok(health.exit_code())
}
