//! Tasks: the record in `task-queue.json`, its states, and the dispatch record (one attempt) in
//! `worker-specs/<bucket>/<dispatch_id>.json`.

pub mod dispatches;
pub mod model;

pub use model::*;
