//! The operator's tools, over the domain: starting and stopping daemons (the supervisor),
//! backups, recovery, logs, status views and validation. The CLI and the daemons (pm, api,
//! integration) both use them; they import nothing from [`crate::daemons`] or [`crate::cli`].

pub mod backup;
pub(crate) mod logs;
pub mod notify;
pub mod progress;
pub(crate) mod recovery;
pub(crate) mod slurm_command;
pub mod status;
pub mod supervisor;
pub mod task_logs;
pub mod validate;
