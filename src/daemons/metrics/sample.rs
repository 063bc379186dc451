//! One reading of a daemon's resident memory, CPU time and age (from [`crate::base::procfs`]), and its
//! CPU use between two readings. None for a vanished process.

use crate::base::procfs;
use std::time::Instant;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcSample {
    pub rss_bytes: u64,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Seconds since the process started.
    pub age_s: f64,
    pub taken: Instant,
}

/// Reads a process's memory and CPU time; None when it is gone.
pub(crate) fn sample(pid: u32) -> Option<ProcSample> {
    let s = procfs::stat(i32::try_from(pid).ok()?)?;
    Some(ProcSample { rss_bytes: s.rss_bytes(), cpu_ticks: s.cpu_ticks(), age_s: s.age_secs(), taken: Instant::now() })
}

/// CPU use in percent of one core: between two samples when `prev` is given, else averaged
/// over the process's life.
pub(crate) fn cpu_percent(now: &ProcSample, prev: Option<&ProcSample>) -> Option<f64> {
    let hz = procfs::clock_ticks();
    match prev {
        Some(p) if now.cpu_ticks >= p.cpu_ticks && now.taken > p.taken => {
            let secs = now.taken.duration_since(p.taken).as_secs_f64();
            (secs > 0.0).then(|| (now.cpu_ticks - p.cpu_ticks) as f64 / hz / secs * 100.0)
        }
        _ => (now.age_s > 0.0).then(|| now.cpu_ticks as f64 / hz / now.age_s * 100.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        // Live a little first, so the process age and CPU time are measurable (10 ms ticks).
        let t0 = Instant::now();
        while t0.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(t0.elapsed());
        }
        let s = sample(std::process::id()).expect("/proc of self");
        assert!(s.rss_bytes > 0);
        assert!(cpu_percent(&s, None).is_some_and(|c| c >= 0.0));
    }
}
