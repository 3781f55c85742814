//! What a process costs, read from `/proc` (Linux): CPU time and resident memory.

/// User + system CPU seconds of `pid` so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    cpu_seconds_in(&format!("/proc/{pid}/stat"))
}

/// User + system CPU seconds of the calling thread so far.
pub fn thread_cpu_seconds() -> f64 {
    cpu_seconds_in("/proc/thread-self/stat")
}

fn cpu_seconds_in(stat_path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(stat_path) else {
        return f64::NAN;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; here 11 and 12 (state is 0).
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// Resident memory of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn clock_ticks() -> f64 {
    // Linux reports CPU time in USER_HZ, 100 on every mainstream architecture.
    100.0
}
