//! The daemons: the skeleton every `cortex-*` binary runs on ([`daemon`], with its tracing set-up
//! [`tracing_setup`]) and each daemon's loop. A daemon may use the operator's tools
//! ([`crate::ops`]: pm runs the supervisor's engine, api serves the status views) and, sideways,
//! another daemon's library part (auto-fix's breakers in the coordinator).

pub mod api;
pub mod auto_fix;
pub mod coordinator;
pub mod daemon;
pub mod failure_pattern;
pub mod heartbeat;
pub mod integration;
pub mod metrics;
pub mod notify;
pub mod pm;
pub mod slurm;
pub(crate) mod tracing_setup;
pub mod worker;
