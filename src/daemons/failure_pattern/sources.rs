//! Where failures come from: finished specs in `worker-specs/failed/` and `worker-specs/zombie/`,
//! and new lines of the event log, read by the library's follower
//! ([`crate::store::events::follow`]: a persisted offset tied to the file's inode, across rotation).

pub(crate) use crate::store::events::follow::{file_id, read_new_events};
