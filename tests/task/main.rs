//! The task path: queue, runs, crashes, the exit journal, unrecorded dispatches, schedules, the
//! scheduler switch, and the Slurm library and `cortex-slurm` against a real dev cluster.
//!
//! One module per former test binary; run one area with `cargo test --test task`, one module
//! with `cargo test --test task <module>::`.

#[path = "../support/mod.rs"]
mod support;

mod archive_seal;
mod backlog;
mod crash;
mod e2e_schedules;
mod exit_journal;
mod journal;
mod queue;
mod run;
mod schedule_cli;
mod scheduler_persistence;
mod slurm_cluster;
mod slurm_daemon;
mod slurm_faults;
mod task_logs;
mod unrecorded;
