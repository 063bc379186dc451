//! `coordination/config/worker-restart-policy.json`: how many times a worker type's zombies are
//! restarted, the backoff between attempts, the circuit breaker and the restart rate limits.
//! Every key has a default, so a partial file works.

use crate::store::Document;
use crate::store::config::BackoffStrategy;
use crate::store::files::{self, CoordFile};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    /// Retries (attempts after the first) per worker type; `default` for the others.
    pub max_retries_by_type: BTreeMap<String, u32>,
    pub backoff: BackoffPolicy,
    pub circuit_breaker: BreakerPolicy,
    pub rate_limits: RateLimits,
    pub token_budget: BudgetCheck,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackoffPolicy {
    pub base_delay_seconds: f64,
    pub max_delay_seconds: f64,
    pub strategy: BackoffStrategy,
    /// Equal jitter: a delay between half and all of the computed one.
    pub jitter: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerPolicy {
    pub enabled: bool,
    pub failure_threshold: u32,
    pub failure_window_seconds: f64,
    pub reset_timeout_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimits {
    pub global_max_per_minute: u32,
    pub per_type_max_per_minute: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BudgetCheck {
    pub check_before_restart: bool,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_retries_by_type: BTreeMap::from([("default".to_string(), 3)]),
            backoff: BackoffPolicy::default(),
            circuit_breaker: BreakerPolicy::default(),
            rate_limits: RateLimits::default(),
            token_budget: BudgetCheck::default(),
        }
    }
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base_delay_seconds: 30.0,
            max_delay_seconds: 300.0,
            strategy: BackoffStrategy::Exponential,
            jitter: false,
        }
    }
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            enabled: true,
            failure_threshold: 5,
            failure_window_seconds: 900.0,
            reset_timeout_seconds: 1800.0,
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits { global_max_per_minute: 10, per_type_max_per_minute: 3 }
    }
}

impl Default for BudgetCheck {
    fn default() -> Self {
        BudgetCheck { check_before_restart: true }
    }
}

impl Document for RestartPolicy {
    const FILE: &'static CoordFile = files::RESTART_POLICY;
}

impl RestartPolicy {
    /// Retries allowed for a worker type.
    pub fn max_retries(&self, worker_type: &str) -> u32 {
        self.max_retries_by_type
            .get(worker_type)
            .or_else(|| self.max_retries_by_type.get("default"))
            .copied()
            .unwrap_or(3)
    }

    /// The delay before attempt `attempt + 1`, after attempt number `attempt` (1-based) failed:
    /// base·2^(attempt−1) capped at the maximum (30, 60, 120, 240, 300 with the defaults).
    /// `jitter_draw` in [0, 1) is used only when jitter is on.
    pub fn delay_seconds(&self, attempt: u32, jitter_draw: f64) -> f64 {
        let b = &self.backoff;
        let raw = match b.strategy {
            BackoffStrategy::None => 0.0,
            BackoffStrategy::Fixed => b.base_delay_seconds,
            BackoffStrategy::Exponential => b.base_delay_seconds * 2f64.powi(attempt.saturating_sub(1).min(62) as i32),
        };
        let capped = raw.min(b.max_delay_seconds).max(0.0);
        if b.jitter { capped * (0.5 + 0.5 * jitter_draw.clamp(0.0, 1.0)) } else { capped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_equals_struct_default() {
        let v: RestartPolicy = serde_json::from_str(files::RESTART_POLICY.default.unwrap()).unwrap();
        assert_eq!(v, RestartPolicy::default());
    }

    #[test]
    fn restart_delays_30_60_120_then_capped_at_300() {
        let p = RestartPolicy::default();
        let d: Vec<f64> = (1..=6).map(|a| p.delay_seconds(a, 0.0)).collect();
        assert_eq!(d, vec![30.0, 60.0, 120.0, 240.0, 300.0, 300.0]);
        assert_eq!(p.delay_seconds(1000, 0.0), 300.0);
        let mut fixed = p.clone();
        fixed.backoff.strategy = BackoffStrategy::Fixed;
        assert_eq!(fixed.delay_seconds(4, 0.0), 30.0);
        let mut none = p.clone();
        none.backoff.strategy = BackoffStrategy::None;
        assert_eq!(none.delay_seconds(4, 0.0), 0.0);
        let mut jit = p.clone();
        jit.backoff.jitter = true;
        assert_eq!(jit.delay_seconds(2, 0.0), 30.0);
        assert!(jit.delay_seconds(2, 0.999) <= 60.0);
    }

    #[test]
    fn retries_per_type_fall_back_to_default() {
        let mut p = RestartPolicy::default();
        p.max_retries_by_type.insert("scan-worker".into(), 1);
        assert_eq!(p.max_retries("scan-worker"), 1);
        assert_eq!(p.max_retries("fix-worker"), 3);
    }
}
