//! The domain: what Cortex orchestrates, over the store. Tasks and their dispatches, schedules,
//! the scheduler's pause switch, and the Slurm executor's domain logic (`slurm`). Imports only
//! [`crate::base`] and [`crate::store`].

pub mod notify;
pub mod schedule;
pub mod scheduler_state;
pub mod slurm;
pub mod task;
