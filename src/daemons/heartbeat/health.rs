//! The health score of a running dispatch: 100, minus penalties for CPU, memory and token use,
//! minus a decay per missed heartbeat interval. ≥ 80 healthy, ≥ 50 degraded, else unhealthy.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

impl HealthStatus {
    pub(crate) fn of(score: u32) -> HealthStatus {
        match score {
            80.. => HealthStatus::Healthy,
            50..=79 => HealthStatus::Degraded,
            _ => HealthStatus::Unhealthy,
        }
    }
}

const MIB: f64 = 1.0;
const GIB_IN_MIB: f64 = 1024.0 * MIB;

/// What the score is computed from; unknown values cost nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct HealthInputs {
    pub cpu_percent: Option<f64>,
    pub memory_mb: Option<f64>,
    /// Tokens left as a fraction of the reservation (0.0–1.0).
    pub tokens_remaining_fraction: Option<f64>,
    pub missed_count: u32,
}

/// The score, 0–100. CPU > 80 % −30 (> 60 % −15); memory > 1 GiB −30 (> 512 MiB −15); tokens
/// remaining < 10 % −40 (< 25 % −20); `decay_rate` per missed heartbeat interval.
pub(crate) fn score(inputs: &HealthInputs, decay_rate: f64) -> u32 {
    let mut s = 100.0;
    match inputs.cpu_percent {
        Some(c) if c > 80.0 => s -= 30.0,
        Some(c) if c > 60.0 => s -= 15.0,
        _ => {}
    }
    match inputs.memory_mb {
        Some(m) if m > GIB_IN_MIB => s -= 30.0,
        Some(m) if m > 512.0 * MIB => s -= 15.0,
        _ => {}
    }
    match inputs.tokens_remaining_fraction {
        Some(f) if f < 0.10 => s -= 40.0,
        Some(f) if f < 0.25 => s -= 20.0,
        _ => {}
    }
    s -= decay_rate.max(0.0) * f64::from(inputs.missed_count);
    s.clamp(0.0, 100.0).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(cpu: f64, mem: f64, left: f64) -> (u32, HealthStatus) {
        let s = score(
            &HealthInputs {
                cpu_percent: Some(cpu),
                memory_mb: Some(mem),
                tokens_remaining_fraction: Some(left),
                missed_count: 0,
            },
            5.0,
        );
        (s, HealthStatus::of(s))
    }

    #[test]
    fn health_score_cases() {
        assert_eq!(case(10.0, 100.0, 0.9), (100, HealthStatus::Healthy));
        assert_eq!(case(61.0, 100.0, 0.9), (85, HealthStatus::Healthy));
        assert_eq!(case(81.0, 100.0, 0.9), (70, HealthStatus::Degraded));
        assert_eq!(case(10.0, 513.0, 0.9), (85, HealthStatus::Healthy));
        assert_eq!(case(10.0, 1025.0, 0.9), (70, HealthStatus::Degraded));
        assert_eq!(case(10.0, 100.0, 0.20), (80, HealthStatus::Healthy));
        assert_eq!(case(10.0, 100.0, 0.05), (60, HealthStatus::Degraded));
        assert_eq!(case(81.0, 1025.0, 0.9), (40, HealthStatus::Unhealthy));
        assert_eq!(case(81.0, 1025.0, 0.05), (0, HealthStatus::Unhealthy));
        // Boundaries are strict: exactly 80 % CPU is only the lower penalty.
        assert_eq!(case(80.0, 512.0, 0.25), (85, HealthStatus::Healthy));
        assert_eq!(HealthStatus::of(50), HealthStatus::Degraded);
        assert_eq!(HealthStatus::of(49), HealthStatus::Unhealthy);
    }

    #[test]
    fn missed_heartbeats_decay_the_score() {
        let i = HealthInputs { missed_count: 3, ..Default::default() };
        assert_eq!(score(&i, 5.0), 85);
        assert_eq!(score(&HealthInputs { missed_count: 100, ..Default::default() }, 5.0), 0);
        assert_eq!(score(&HealthInputs::default(), 5.0), 100);
    }
}
