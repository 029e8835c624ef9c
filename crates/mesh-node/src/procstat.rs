//! Process CPU and memory, measured from `/proc/self` (Linux). On other systems,
//! or if `/proc` is unreadable, the figures are `None`: unknown, not zero.

use std::time::Instant;

/// Resident set size in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) of this process in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second; Linux's USER_HZ is 100 on every mainstream platform.
const TICKS_PER_SEC: f64 = 100.0;

/// Samples process CPU use between calls.
pub struct CpuSampler {
    last: Option<(Instant, u64)>,
}

impl Default for CpuSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuSampler {
    /// A sampler whose first period starts now.
    pub fn new() -> Self {
        Self {
            last: cpu_ticks().map(|t| (Instant::now(), t)),
        }
    }

    /// Percent of one core used since the previous sample; `None` on the first call
    /// or when `/proc` is unavailable.
    pub fn sample(&mut self) -> Option<f32> {
        let now = Instant::now();
        let ticks = cpu_ticks()?;
        let prev = self.last.replace((now, ticks));
        let (t0, k0) = prev?;
        let secs = now.duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        Some((((ticks - k0) as f64 / TICKS_PER_SEC) / secs * 100.0) as f32)
    }
}
