//! `cortex schedule add | list | show | pause | resume | remove | run-now`: recurring tasks on
//! cron or interval schedules (`crate::domain::schedule`).

use super::task::TaskFlags;
use super::{Ctx, print_json};
use crate::base::clock::{SystemClock, format_ts, format_ts_or};
use crate::base::error::Result;
use crate::base::text::{safe, safe_or, shell_words};
use crate::domain::schedule::{self, MisfirePolicy, NewSchedule, ScheduleView, TaskTemplate};
use crate::domain::scheduler_state::{Actor, local_user};
use crate::store::pidfile::{self, PidStatus};
use clap::{Args, Subcommand};
use std::borrow::Cow;

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule: `--name N (--cron EXPR | --every DUR) [options] -- COMMAND...`.
    #[command(
        mut_arg("priority", |a| a.help(None::<&str>)),
        mut_arg("worker_type", |a| a.help("Worker type (default: routed like `cortex task add`)")),
        mut_arg("budget", |a| a.help("Token budget per run (default: the worker type's)")),
        mut_arg("max_attempts", |a| a.help("Attempts per run (default: [retry] max_attempts)")),
        mut_arg("command", |a| a.help("The command each run executes (after `--`)"))
    )]
    Add(AddArgs),
    /// List schedules with their next run (in the schedule's zone and in UTC).
    List {
        /// Include archived (removed) schedules.
        #[arg(long)]
        all: bool,
    },
    /// Show one schedule (by id or name).
    Show { id: String },
    /// Pause one schedule: it fires nothing until resumed.
    Pause {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused schedule from its next slot after now.
    Resume { id: String },
    /// Remove a schedule (it is archived: kept in schedules.json, never fires again).
    Remove { id: String },
    /// Enqueue one run now through the coordinator (also for a paused schedule).
    #[command(name = "run-now")]
    RunNow { id: String },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A unique name (commands accept it in place of the id).
    #[arg(long)]
    name: String,
    /// 5-field cron expression (`*/5 * * * *`, `0 3 * * 1-5`) or @hourly, @daily, @weekly, @monthly, @yearly.
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// Fixed interval: 30s, 15m, 2h, 1d (counted from when the schedule is added).
    #[arg(long, value_name = "DURATION")]
    every: Option<String>,
    /// IANA time zone of the cron expression (default: [scheduler] timezone in cortex.toml).
    #[arg(long = "tz", visible_alias = "timezone", value_name = "TZ")]
    tz: Option<String>,
    /// What to do with runs missed while nothing could fire them: skip, run_once or run_all.
    #[arg(long, default_value = "run_once", value_name = "POLICY")]
    misfire: MisfirePolicy,
    /// Skip a run while this many earlier runs are still queued or running.
    #[arg(long, default_value_t = 1, value_name = "N")]
    max_instances: u32,
    /// Task description (default: "schedule NAME").
    #[arg(long)]
    description: Option<String>,
    #[command(flatten)]
    task: TaskFlags,
}

fn actor() -> Actor {
    Actor { who: local_user(), from: "cli".into() }
}

pub(super) fn run(ctx: &Ctx, cmd: ScheduleCommand) -> Result<u8> {
    let store = ctx.store()?;
    let clock = SystemClock;
    match cmd {
        ScheduleCommand::Add(a) => {
            let description = a.description.unwrap_or_else(|| format!("schedule {}", a.name.trim()));
            let new = NewSchedule {
                name: a.name,
                cron: a.cron,
                every: a.every,
                timezone: a.tz,
                misfire_policy: a.misfire,
                max_instances: a.max_instances,
                task: TaskTemplate {
                    description,
                    priority: a.task.priority,
                    worker_type: a.task.worker_type,
                    command: a.task.command,
                    budget: a.task.budget,
                    max_attempts: a.task.max_attempts,
                },
            };
            let added = schedule::add(&store, &clock, new, &actor())?;
            let view = schedule::show(&store, &added.schedule_id)?;
            if ctx.json {
                print_json(&view);
            } else {
                println!(
                    "Schedule {} ({}) added: {} [{}]; next run {} ({})",
                    safe(&view.schedule.schedule_id),
                    safe(&view.schedule.name),
                    safe(&view.schedule.expression_label()),
                    safe(&view.effective_timezone),
                    safe_or(view.next_run_local.as_deref(), "-"),
                    format_ts_or(view.schedule.next_run_at, "-")
                );
                if view.schedule.misfire_policy == MisfirePolicy::RunAll && view.schedule.max_instances == 1 {
                    println!(
                        "note: with --max-instances 1 a run_all catch-up enqueues one missed run at a time; \
                         raise --max-instances to catch up several at once"
                    );
                }
                note_scheduler(&store);
            }
            Ok(0)
        }
        ScheduleCommand::List { all } => {
            let views = schedule::list(&store, all)?;
            if ctx.json {
                print_json(&serde_json::json!({
                    "schedules": views,
                    "scheduler_paused": schedule::scheduler_paused(&store)?,
                }));
            } else {
                print_table(&views);
                note_scheduler(&store);
            }
            Ok(0)
        }
        ScheduleCommand::Show { id } => {
            let v = schedule::show(&store, &id)?;
            if ctx.json {
                print_json(&v);
            } else {
                print_details(&v);
                note_scheduler(&store);
            }
            Ok(0)
        }
        ScheduleCommand::Pause { id, reason } => {
            let c = schedule::pause(&store, &clock, &id, &actor(), reason.as_deref())?;
            print_change(ctx, &c);
            Ok(0)
        }
        ScheduleCommand::Resume { id } => {
            let c = schedule::resume(&store, &clock, &id, &actor())?;
            print_change(ctx, &c);
            Ok(0)
        }
        ScheduleCommand::Remove { id } => {
            let c = schedule::remove(&store, &clock, &id, &actor())?;
            print_change(ctx, &c);
            Ok(0)
        }
        ScheduleCommand::RunNow { id } => {
            let (s, req) = schedule::request_run(&store, &clock, &id, &actor())?;
            let coordinator = matches!(
                pidfile::status(&ctx.home, crate::base::daemon_name::Daemon::Coordinator)?,
                PidStatus::Running(_)
            );
            if ctx.json {
                print_json(&serde_json::json!({
                    "schedule_id": s.schedule_id, "name": s.name, "task_id": req.task_id,
                    "requested_at": format_ts(req.requested_at), "coordinator_running": coordinator,
                }));
            } else {
                println!(
                    "Run of schedule {} ({}) requested as task {}; the coordinator enqueues it on its next pass",
                    safe(&s.schedule_id),
                    safe(&s.name),
                    safe(&req.task_id)
                );
                if !coordinator {
                    println!("note: cortex-coordinator is not running; the run is enqueued when it starts");
                }
                note_scheduler(&store);
            }
            Ok(0)
        }
    }
}

fn note_scheduler(store: &crate::store::Store) {
    if schedule::scheduler_paused(store).unwrap_or(false) {
        println!(
            "note: the scheduler is paused: no schedule fires until `cortex resume`; missed runs then follow each schedule's misfire policy"
        );
    }
}

fn print_change(ctx: &Ctx, c: &schedule::Change) {
    if ctx.json {
        print_json(c);
    } else {
        println!("{}: {} ({})", safe(&c.message), safe(&c.schedule.schedule_id), safe(&c.schedule.name));
        if let Some(next) = &c.schedule.next_run_at {
            println!("next run {}", format_ts(*next));
        }
    }
}

fn print_table(views: &[ScheduleView]) {
    if views.is_empty() {
        println!("No schedules. Add one with `cortex schedule add --name N --cron EXPR -- COMMAND`.");
        return;
    }
    let rows: Vec<[String; 8]> = views
        .iter()
        .map(|v| {
            [
                safe(&v.schedule.schedule_id).into_owned(),
                safe(&v.schedule.name).into_owned(),
                v.schedule.state.name().to_string(),
                safe(&v.schedule.expression_label()).into_owned(),
                safe(&v.effective_timezone).into_owned(),
                safe_or(v.next_run_local.as_deref(), "-").into_owned(),
                format_ts_or(v.schedule.next_run_at, "-"),
                format_ts_or(v.schedule.last_run_at, "-"),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "STATE", "EXPRESSION", "ZONE", "NEXT RUN (ZONE)", "NEXT RUN (UTC)", "LAST RUN (UTC)"];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn print_details(v: &ScheduleView) {
    let s = &v.schedule;
    let opt = |o: &Option<String>| o.as_deref().map_or_else(|| "-".to_string(), |v| safe(v).into_owned());
    println!("id:             {}", safe(&s.schedule_id));
    println!("name:           {}", safe(&s.name));
    println!("state:          {}", s.state.name());
    match &s.state {
        schedule::ScheduleState::Paused { paused_at, paused_by, reason } => {
            println!("paused_at:      {}", format_ts(*paused_at));
            println!("paused_by:      {}", opt(paused_by));
            println!("reason:         {}", opt(reason));
        }
        schedule::ScheduleState::Archived { archived_at, .. } => {
            println!("archived_at:    {}", format_ts(*archived_at))
        }
        schedule::ScheduleState::Active => {}
    }
    println!("expression:     {} ({})", safe(&s.expression_label()), safe(&v.describe));
    println!(
        "timezone:       {}{}",
        safe(&v.effective_timezone),
        if s.timezone.is_none() { " (from cortex.toml)" } else { "" }
    );
    println!("misfire_policy: {}", s.misfire_policy.as_str());
    println!("max_instances:  {}", s.max_instances);
    println!("next_run:       {} ({})", opt(&v.next_run_local), format_ts_or(s.next_run_at, "-"));
    println!(
        "last_run:       {} ({}) task {}",
        opt(&v.last_run_local),
        format_ts_or(s.last_run_at, "-"),
        opt(&s.last_task_id)
    );
    println!("runs:           {}", s.run_count);
    println!("task:           {} [{}]", safe(&s.task.description), s.task.priority.as_str());
    println!("  worker_type:  {}", s.task.worker_type.as_deref().map_or(Cow::Borrowed("(routed)"), safe));
    println!(
        "  command:      {}",
        if s.task.command.is_empty() { "(worker type template)".into() } else { shell_words(&s.task.command) }
    );
    println!(
        "  budget:       {}",
        s.task.budget.map(|b| b.to_string()).unwrap_or_else(|| "(worker type default)".into())
    );
    println!(
        "  max_attempts: {}",
        s.task.max_attempts.map(|b| b.to_string()).unwrap_or_else(|| "([retry] default)".into())
    );
    for r in &s.pending_runs {
        println!(
            "pending run:    task {} requested {} by {}",
            safe(&r.task_id),
            format_ts(r.requested_at),
            opt(&r.requested_by)
        );
    }
    println!("created:        {} by {}", format_ts(s.created_at), opt(&s.created_by));
}
