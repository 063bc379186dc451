//! The domain: what Cortex orchestrates, over the store. Tasks and their dispatches, schedules,
//! and the scheduler's pause switch. Imports only [`crate::base`] and [`crate::store`].

pub mod schedule;
pub mod scheduler_state;
pub mod task;
