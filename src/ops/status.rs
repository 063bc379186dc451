//! What Cortex is doing, computed in one place for the CLI and the API: the scheduler's state
//! (`GET /scheduler/status`, `cortex scheduler status`), the system summary (`GET /status`),
//! health (`GET /health`), dispatch views (`GET /dispatches…`, `cortex dispatches`) and the
//! Prometheus metrics (`GET /metrics`).
//!
//! These views degrade, never fail: a coordination file that cannot be read (corrupt, breaking
//! its schema, unreadable) is named in the view's `errors` list ([`FileError`]), what depends
//! on it is reported as unknown (`null`, state `"unknown"`), and `GET /health` is unhealthy.
//! What runs is counted from the dispatch records, never from the task queue, so a corrupt
//! queue cannot make a busy system look drained.
//!
//! A [`StatusReader`] caches what it parsed by file identity (device, inode, size, mtime, ctime): a
//! long-lived reader (the api daemon) re-reads the task queue or a worker-specs directory only
//! after it changed, and follows the event log by offset. A one-shot reader (the CLI) simply
//! reads everything once.
//!
//! - [`cache`]: the [`StatusReader`], which reads and caches by file identity what the views
//!   are made of ([`Snapshot`]).
//! - [`views`]: the views themselves.
//! - [`prometheus`]: the Prometheus exposition of `GET /metrics`.
//! - [`acknowledge`]: acknowledging events (`cortex event ack`, `POST /events/<id>/ack`).

pub(crate) mod acknowledge;
pub(crate) mod cache;
pub(crate) mod prometheus;
pub(crate) mod views;

pub use cache::{FileError, QueueSummary, Snapshot, SpecEntry, StatusReader};
pub use views::{
    BudgetView, DispatchView, Health, HealthEvent, RECENT_EVENTS_SHOWN, SchedulerStatus, SystemStatus,
    coordinator_uptime, daemon_state, parse_dispatch_status, recent_since, wait_no_active,
};
