//! Schedule expressions: cron (5 fields or an alias), `every` intervals and time zones, as
//! `cortex schedule add` and the coordinator parse them, then slot arithmetic over a bounded
//! window. Input lines: expression, zone, window in hours. A slot after `t` is after `t`; the
//! due count covers the slots returned.
#![no_main]

use chrono::{DateTime, Duration, Utc};
use cortex::domain::schedule::expr::{Expr, parse_cron, parse_every, parse_tz};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let expr = lines.next().unwrap_or("");
    let tz = parse_tz(lines.next().unwrap_or("UTC")).unwrap_or(chrono_tz::UTC);
    let hours: i64 = lines.next().and_then(|h| h.trim().parse().ok()).unwrap_or(24).clamp(0, 24 * 40);
    let _ = parse_every(expr);
    let _ = parse_cron(expr);
    let anchor = DateTime::<Utc>::from_timestamp(1_780_000_000, 0).unwrap();
    let built = if let Some(every) = expr.strip_prefix("every ") {
        Expr::new(None, Some(every), tz, anchor)
    } else {
        Expr::new(Some(expr), None, tz, anchor)
    };
    let Ok(e) = built else { return };
    let _ = e.describe();
    let t = anchor + Duration::seconds(37);
    if let Some(next) = e.next_after(t) {
        assert!(next > t, "{expr:?}: next_after({t}) = {next}");
    }
    let due = e.due_between(anchor, anchor + Duration::hours(hours), 5);
    assert!(due.recent.len() as u64 <= due.total.max(due.recent.len() as u64));
    assert!(due.recent.len() <= 5);
    assert!(due.recent.windows(2).all(|w| w[0] < w[1]), "{expr:?}: slots not ascending");
});
