//! What `/proc` says about a process: resident memory, CPU time, age. Linux only; on anything
//! else (or for a vanished process) the values are None.

use std::time::Instant;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 when unknown.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant; it has no preconditions.
    let t = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Memory page size in bytes, 4096 when unknown.
pub fn page_size() -> u64 {
    // SAFETY: as above.
    let p = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    pub rss_bytes: u64,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Seconds since the process started.
    pub age_s: f64,
    pub taken: Instant,
}

/// The fields of `/proc/<pid>/stat` after the command name (which may contain spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

fn system_uptime_s() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()
}

/// Reads a process's memory and CPU time; None when it is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let f = stat_fields(pid)?;
    // After the name: state(0) ppid(1) ... utime(11) stime(12) ... starttime(19).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start: u64 = f.get(19)?.parse().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let hz = clock_ticks();
    let age_s = system_uptime_s().map(|u| (u - start as f64 / hz).max(0.0)).unwrap_or(0.0);
    Some(ProcSample { rss_bytes: rss_pages * page_size(), cpu_ticks: utime + stime, age_s, taken: Instant::now() })
}

/// CPU use in percent of one core: between two samples when `prev` is given, else averaged
/// over the process's life.
pub fn cpu_percent(now: &ProcSample, prev: Option<&ProcSample>) -> Option<f64> {
    let hz = clock_ticks();
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
