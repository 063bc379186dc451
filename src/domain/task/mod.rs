//! Tasks: the record in `task-queue.json`, its states, and the dispatch record (one attempt) in
//! `worker-specs/<bucket>/<dispatch_id>.json`; how tasks enter (intake), are routed, budgeted,
//! ordered, retried and archived; and the operations the CLI and the API share (`ops`).

pub mod archive;
pub(crate) mod budget;
pub(crate) mod dispatch_record;
pub mod dispatches;
pub mod intake;
pub mod journal;
pub mod listing;
pub mod model;
pub mod ops;
pub mod processes;
pub(crate) mod queue;
pub(crate) mod queue_file;
pub(crate) mod retry;
pub mod router;
pub(crate) mod snapshot_read;
pub mod worker_types;

pub use model::*;
