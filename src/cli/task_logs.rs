//! `cortex task logs ID [--attempt N] [--stderr] [-f]`: prints what `ops::task_logs` reads, each
//! line escaped (task output is untrusted text), a separator before each attempt when following.

use crate::base::error::Result;
use crate::base::text::safe;
use crate::ops::task_logs::{LogItem, LogRequest, task_logs};
use crate::store::Store;
use std::io::Write;

pub(super) fn run(store: &Store, task_id: &str, attempt: Option<usize>, stderr: bool, follow: bool) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    let req = LogRequest { attempt, stderr, follow };
    task_logs(store, task_id, req, |item| {
        let written = match item {
            LogItem::Line(l) => writeln!(out, "{}", safe(&l)),
            // Only worth a line when following: a plain read prints one attempt's file as it is.
            LogItem::Attempt { number, dispatch_id } if follow => {
                writeln!(out, "--- attempt {number} (dispatch {}) ---", safe(&dispatch_id))
            }
            LogItem::Attempt { .. } => Ok(()),
        };
        // Lines show up as they come when following (stdout is block-buffered into a pipe).
        written.and_then(|()| if follow { out.flush() } else { Ok(()) }).is_ok()
    })?;
    Ok(0)
}
