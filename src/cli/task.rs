//! `cortex task add|list|show|cancel|retry|report-usage` (`logs`: [`super::task_logs`]): argument parsing and printing around
//! `task::ops`, the code path the HTTP API shares.

use super::{Ctx, print_json};
use crate::base::clock::{format_ts, parse_duration};
use crate::base::error::{Error, Result};
use crate::base::text::{safe, shell_words};
use crate::domain::task::model::{Priority, Task, TaskStatus};
use crate::domain::task::ops::{self, NewTask, TaskFilter};
use crate::domain::task::worker_types::ExecutorKind;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Queue a task; prints its task_id (the whole record with --json).
    Add {
        #[arg(long)]
        description: String,
        #[command(flatten)]
        task: TaskFlags,
        /// Stop the task after this long (e.g. 90s, 15m; default: the worker type's default_duration).
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// Run only after this task completed.
        #[arg(long, value_name = "TASK_ID")]
        after: Option<String>,
        /// Do not start before this long from now (e.g. 10m).
        #[arg(long, value_name = "DURATION")]
        delay: Option<String>,
        /// The repository the task concerns (recorded on the task).
        #[arg(long)]
        repo: Option<String>,
        /// Where it runs: `local` (this host) or `slurm` (a Slurm job); default: its worker type's.
        #[arg(long, value_name = "local|slurm", value_parser = parse_executor)]
        executor: Option<ExecutorKind>,
        /// An sbatch option for this task, over its worker type's: partition=, account=, qos=,
        /// cpus=, memory=, gres=, extra= (one more sbatch argument). Repeatable.
        #[arg(long = "slurm-opt", value_name = "KEY=VALUE")]
        slurm_opt: Vec<String>,
    },
    /// List tasks (the live queue, oldest first; --all adds finished tasks from the archive, all in
    /// task id order, paged with --limit and --after-id).
    List {
        #[arg(long)]
        status: Option<TaskStatus>,
        #[arg(long = "type", value_name = "WORKER_TYPE")]
        worker_type: Option<String>,
        #[arg(long)]
        all: bool,
        /// Only tasks listed after this task id (the last id of the previous page).
        #[arg(long, value_name = "TASK_ID")]
        after_id: Option<String>,
        /// At most this many tasks.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show one task (queue, intake or archive) and its dispatches.
    Show { task_id: String },
    /// A task's output (its latest attempt's, or --attempt N's); -f follows it live, across
    /// retries, until the task is final.
    Logs {
        task_id: String,
        /// Which attempt (1 is the first; default: the latest).
        #[arg(long, value_name = "N")]
        attempt: Option<usize>,
        /// Standard error instead of standard output.
        #[arg(long)]
        stderr: bool,
        /// Keep printing while the task runs, each new attempt after a separator line.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Cancel a task; a running one is stopped (TERM, grace, KILL) and this waits for it.
    Cancel {
        task_id: String,
        /// How long to wait for a running task to stop.
        #[arg(long, default_value = "30s", value_name = "DURATION")]
        wait: String,
    },
    /// Retry a failed or cancelled task (a task id or a dispatch id).
    Retry { id: String },
    /// Record the tokens a running dispatch used (default: $CORTEX_DISPATCH_ID).
    ReportUsage {
        /// The dispatch (or task) id; default $CORTEX_DISPATCH_ID, then $CORTEX_TASK_ID.
        #[arg(long, value_name = "ID")]
        dispatch: Option<String>,
        tokens: u64,
    },
    /// Seal the archive's active file now into `task-archive/` with its index (the coordinator
    /// does it on its own past `[archive] segment_bytes`), applying `[archive] keep_segments`.
    SealArchive,
}

/// The flags `cortex task add` and `cortex schedule add` share: how the task (or each scheduled
/// run's task) is routed, prioritised, budgeted and retried, and its command. Declared once; the
/// help texts are the task's (`schedule add` words its own with `mut_arg`).
#[derive(Debug, Args)]
pub struct TaskFlags {
    /// low, medium, high or critical.
    #[arg(long, default_value = "medium")]
    pub priority: Priority,
    /// The worker type (skips routing).
    #[arg(long = "type", value_name = "WORKER_TYPE")]
    pub worker_type: Option<String>,
    /// Tokens reserved per attempt (default: the worker type's default_budget).
    #[arg(long)]
    pub budget: Option<u64>,
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// The command to run instead of the worker type's template: `-- COMMAND ARGS...`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn duration_secs(flag: &str, s: &Option<String>) -> Result<Option<f64>> {
    s.as_deref()
        .map(|s| {
            parse_duration(s)
                .map(|d| d.as_secs_f64())
                .map_err(|e| Error::Config { path: None, detail: format!("{flag}: {e}") })
        })
        .transpose()
}

/// Prints a listing as it is read, one task at a time (see [`write_listing`]).
fn print_listing(listing: ops::Listing, json: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_listing(&mut out, listing, json)
}

/// Writes a listing as it is read: the lines of [`task_line`], or with `json` exactly what
/// `print_json` prints of `{"count": N, "tasks": [...]}`, one task at a time.
fn write_listing(out: &mut impl std::io::Write, listing: ops::Listing, json: bool) -> Result<()> {
    let written = |e: std::io::Error| Error::system("write the listing to standard output", e);
    if json {
        let n = listing.len();
        if n == 0 {
            writeln!(out, "{{\n  \"count\": 0,\n  \"tasks\": []\n}}").map_err(written)?;
            return out.flush().map_err(written);
        }
        write!(out, "{{\n  \"count\": {n},\n  \"tasks\": [").map_err(written)?;
        for (i, task) in listing.tasks().enumerate() {
            // As a value, so the fields come in the order `print_json` gives them (sorted).
            let text = serde_json::to_string_pretty(&serde_json::to_value(task?)?)?;
            let mut chunk = String::with_capacity(text.len() + 64);
            chunk.push_str(if i == 0 { "\n" } else { ",\n" });
            for (k, line) in text.lines().enumerate() {
                if k > 0 {
                    chunk.push('\n');
                }
                chunk.push_str("    ");
                chunk.push_str(line);
            }
            out.write_all(crate::base::text::json_safe(chunk).as_bytes()).map_err(written)?;
        }
        writeln!(out, "\n  ]\n}}").map_err(written)?;
    } else if listing.is_empty() {
        writeln!(out, "No tasks.").map_err(written)?;
    } else {
        for task in listing.tasks() {
            writeln!(out, "{}", task_line(&task?)).map_err(written)?;
        }
    }
    out.flush().map_err(written)
}

fn task_line(t: &Task) -> String {
    let extra = match (t.waiting_reason(), t.next_retry_at(), &t.result) {
        (Some(w), _, _) => format!("waiting: {w}"),
        (None, Some(at), _) => format!("retry at {}", format_ts(at)),
        (None, None, Some(r)) if t.status().is_terminal() => ops::result_summary(r),
        _ => String::new(),
    };
    format!(
        "{:<38} {:<13} {:<8} {:<22} {:>2}/{:<2} {}{}",
        safe(&t.task_id),
        t.status().as_str(),
        t.priority.as_str(),
        safe(&t.worker_type),
        t.attempts,
        t.max_attempts,
        safe(&t.description.chars().take(60).collect::<String>()),
        if extra.is_empty() { String::new() } else { format!("  [{}]", safe(&extra)) }
    )
}

fn parse_executor(s: &str) -> std::result::Result<ExecutorKind, String> {
    match s {
        "local" => Ok(ExecutorKind::Local),
        "slurm" => Ok(ExecutorKind::Slurm),
        other => Err(format!("unknown executor {other:?}: use local or slurm")),
    }
}

pub(super) fn run(ctx: &Ctx, cmd: TaskCommand) -> Result<u8> {
    let store = ctx.store()?;
    let actor = crate::domain::scheduler_state::local_user();
    match cmd {
        TaskCommand::Add { description, task, timeout, after, delay, repo, executor, slurm_opt } => {
            let TaskFlags { priority, worker_type, budget, max_attempts, command } = task;
            let new = NewTask {
                executor,
                slurm_opts: slurm_opt,
                description,
                priority: Some(priority),
                worker_type,
                budget,
                max_attempts,
                timeout_seconds: duration_secs("--timeout", &timeout)?,
                after,
                delay_seconds: duration_secs("--delay", &delay)?,
                command,
                created_by: Some(actor),
                repo,
                schedule_id: None,
                task_id: None,
            };
            let task = ops::add_task(&store, new)?;
            if ctx.json {
                print_json(&task);
            } else {
                println!("{}", safe(&task.task_id));
            }
            Ok(0)
        }
        TaskCommand::List { status, worker_type, all, after_id, limit } => {
            let filter = TaskFilter { status, worker_type, include_archive: all, after_id, limit };
            let listing = ops::list(&store, &filter)?;
            print_listing(listing, ctx.json)?;
            Ok(0)
        }
        TaskCommand::Logs { task_id, attempt, stderr, follow } => {
            super::task_logs::run(&store, &task_id, attempt, stderr, follow)
        }
        TaskCommand::Show { task_id } => {
            let task = ops::find_task(&store, &task_id)?
                .ok_or_else(|| Error::refused(format!("no task {task_id} (queue, intake or archive)")))?;
            let records = ops::task_dispatches(&store, &task)?;
            if ctx.json {
                let mut v = serde_json::to_value(&task)?;
                v["dispatch_records"] = serde_json::to_value(records.iter().map(|(_, r)| r).collect::<Vec<_>>())?;
                print_json(&v);
            } else {
                let v = serde_json::to_value(&task)?;
                if let Some(m) = v.as_object() {
                    for (k, val) in m {
                        if k == "dispatches" || val.is_null() {
                            continue;
                        }
                        let shown = match val {
                            serde_json::Value::String(s) => s.clone(),
                            _ if k == "command" => shell_words(&task.command),
                            other => other.to_string(),
                        };
                        println!("{k:<16} {}", safe(&shown));
                    }
                }
                for (bucket, r) in &records {
                    println!(
                        "dispatch         {} attempt {} {} ({}){}",
                        safe(&r.dispatch_id),
                        r.attempt,
                        r.status().as_str(),
                        bucket.dir_name(),
                        r.state.ended_at().map(|e| format!(" ended {}", format_ts(e))).unwrap_or_default()
                    );
                    if let crate::domain::task::model::DispatchState::Slurm { job_id, job_state, reason, .. } = &r.state
                    {
                        let job = job_id.map(|j| format!("job {j}")).unwrap_or_else(|| "no job id yet".into());
                        let state = job_state.as_deref().map(|s| format!(" {}", safe(s))).unwrap_or_default();
                        let why = reason.as_deref().map(|w| format!(": {}", safe(w))).unwrap_or_default();
                        println!("  slurm          {job}{state}{why}");
                    }
                }
            }
            Ok(0)
        }
        TaskCommand::Cancel { task_id, wait } => {
            let wait =
                parse_duration(&wait).map_err(|e| Error::Config { path: None, detail: format!("--wait: {e}") })?;
            let task = ops::cancel_task(&store, &task_id, &actor, wait)?;
            let done = task.status().is_terminal();
            if ctx.json {
                print_json(&task);
            } else if task.status() == TaskStatus::Cancelled {
                println!("Task {} cancelled", safe(&task_id));
            } else if done {
                println!("Task {} ended {} before the cancel took effect", safe(&task_id), task.status().as_str());
            } else {
                eprintln!(
                    "Cancel of task {} requested; it is still {} after {}s (is cortex-worker running?)",
                    safe(&task_id),
                    task.status().as_str(),
                    wait.as_secs_f64()
                );
            }
            Ok(if done { 0 } else { 1 })
        }
        TaskCommand::Retry { id } => {
            let task = if crate::domain::task::dispatches::find(&store, &id)?.is_some() {
                ops::retry_dispatch(&store, &id, &actor)?
            } else {
                ops::retry_task(&store, &id, &actor)?
            };
            if ctx.json {
                print_json(&task);
            } else {
                println!(
                    "Task {} queued for another attempt ({}/{} used)",
                    safe(&task.task_id),
                    task.attempts,
                    task.max_attempts
                );
            }
            Ok(0)
        }
        TaskCommand::ReportUsage { dispatch, tokens } => {
            let target = dispatch
                .or_else(|| std::env::var("CORTEX_DISPATCH_ID").ok().filter(|s| !s.is_empty()))
                .or_else(|| std::env::var("CORTEX_TASK_ID").ok().filter(|s| !s.is_empty()))
                .ok_or_else(|| Error::Config {
                    path: None,
                    detail: "report-usage needs --dispatch ID (or CORTEX_DISPATCH_ID in the environment)".into(),
                })?;
            let rec = ops::report_usage(&store, &target, tokens)?;
            if ctx.json {
                print_json(
                    &serde_json::json!({"dispatch_id": rec.dispatch_id, "task_id": rec.task_id, "tokens_used": tokens}),
                );
            } else {
                println!("Recorded {tokens} tokens for dispatch {}", safe(&rec.dispatch_id));
            }
            Ok(0)
        }
        TaskCommand::SealArchive => {
            let config = crate::store::config::Config::load(store.home())?;
            let sealed = ops::seal_archive(&store, config.archive.keep_segments)?;
            match sealed {
                Some(s) if ctx.json => print_json(&serde_json::json!({
                    "segment": s.segment, "tasks": s.tasks, "bytes": s.bytes, "removed": s.removed,
                })),
                Some(s) => println!(
                    "Sealed the archive into segment {} ({} tasks, {} bytes); {} old segment(s) removed",
                    s.segment,
                    s.tasks,
                    s.bytes,
                    s.removed.len()
                ),
                None if ctx.json => print_json(&serde_json::json!({"segment": null})),
                None => println!("Nothing to seal: the archive's active file is empty."),
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(tasks: &[Task], json: bool) -> String {
        let mut out = Vec::new();
        write_listing(&mut out, ops::Listing::of(tasks.to_vec()), json).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_listing_is_written_as_the_whole_one_was_printed() {
        let mut a = Task::sample("task-a");
        a.description = "tab\there, \u{202e}bidi, é, \u{85}next line, quote \" end".into();
        a.command = vec!["sh".into(), "-c".into(), "echo 'x'".into()];
        a.timeout_seconds = Some(1.5);
        let mut b = Task::sample("task-b");
        b.dispatches = vec!["d-1".into(), "d-2".into()];
        b.state = crate::domain::task::model::TaskState::Failed {
            started_at: None,
            completed_at: crate::base::clock::parse_ts("2026-01-02T00:00:00Z").unwrap(),
        };
        for tasks in [vec![], vec![a.clone()], vec![a, b]] {
            // What `print_json` printed of the whole listing, and the lines printed one by one.
            let whole =
                serde_json::to_string_pretty(&serde_json::json!({"count": tasks.len(), "tasks": tasks})).unwrap();
            assert_eq!(listed(&tasks, true), format!("{}\n", crate::base::text::json_safe(whole)));
            let text: String = tasks.iter().map(|t| format!("{}\n", task_line(t))).collect();
            let text = if tasks.is_empty() { "No tasks.\n".to_string() } else { text };
            assert_eq!(listed(&tasks, false), text);
        }
    }
}
