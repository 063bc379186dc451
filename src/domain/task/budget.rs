//! The token budget (`coordination/token-budget.json`): a dispatch reserves its task's budget
//! under `reservations[dispatch_id]`; when it ends the reservation is settled to the tokens the
//! worker reported, or released in full when none were reported. `available` is always
//! `total - used - reserved`, never below 0. A file with only `total/used/available` (the
//! runbook's reset) reads as having no reservations.

use super::model::TokenBudget;
use crate::base::clock::Timestamp;

/// Reserves `amount` for a dispatch. Returns false (and changes nothing) when it does not fit.
pub(crate) fn reserve(budget: &mut TokenBudget, dispatch_id: &str, amount: u64, now: Timestamp) -> bool {
    budget.recompute();
    if amount > budget.available {
        return false;
    }
    budget.reservations.insert(dispatch_id.to_string(), amount);
    budget.recompute();
    budget.last_updated = Some(now);
    true
}

/// Ends a dispatch's reservation: `tokens_used` is added to `used` (when reported), and the
/// reservation is dropped. Returns true when the budget changed.
pub(crate) fn settle(budget: &mut TokenBudget, dispatch_id: &str, tokens_used: Option<u64>, now: Timestamp) -> bool {
    let had = budget.reservations.remove(dispatch_id).is_some();
    if let Some(t) = tokens_used {
        budget.used = budget.used.saturating_add(t);
    }
    let changed = had || tokens_used.is_some_and(|t| t > 0);
    if changed {
        budget.last_updated = Some(now);
    }
    budget.recompute();
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap()
    }

    fn reset() -> TokenBudget {
        // The runbook's reset: no reservations field at all.
        serde_json::from_str(r#"{"total": 500000, "used": 0, "available": 500000}"#).unwrap()
    }

    #[test]
    fn reserve_settle_release() {
        let mut b = reset();
        assert!(reserve(&mut b, "d1", 300_000, t0()));
        assert_eq!(b.available, 200_000);
        assert!(!reserve(&mut b, "d2", 250_000, t0()));
        assert!(reserve(&mut b, "d2", 200_000, t0()));
        assert_eq!(b.available, 0);
        // Settled to what the worker reported.
        assert!(settle(&mut b, "d1", Some(1_000), t0()));
        assert_eq!((b.used, b.available), (1_000, 299_000));
        // Released in full when nothing was reported.
        assert!(settle(&mut b, "d2", None, t0()));
        assert_eq!((b.used, b.available), (1_000, 499_000));
        assert!(b.reservations.is_empty());
        // Settling twice changes nothing.
        assert!(!settle(&mut b, "d2", None, t0()));
    }

    #[test]
    fn available_never_negative() {
        let mut b = reset();
        assert!(reserve(&mut b, "d1", 10, t0()));
        settle(&mut b, "d1", Some(900_000), t0());
        assert_eq!(b.available, 0);
        assert!(crate::base::schema::check("token-budget", &serde_json::to_value(&b).unwrap(), 3).is_empty());
    }
}
