//! CPU time from the kernel: a process's own (`getrusage`) and any process's from
//! `/proc/<pid>/stat` — an edge's load ([`CpuClock`], src/cluster/assign.rs) and the broker's
//! cost per observation in `crosscam bench cluster`.

use std::collections::HashMap;

/// What `/proc/<pid>/stat` says of a process: its parent and the CPU seconds (user + system)
/// it has used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcCpu {
    pub ppid: u32,
    pub seconds: f64,
}

/// A process's parent and CPU time, from `/proc` (none when it is gone or unreadable).
pub fn proc_cpu(pid: u32) -> Option<ProcCpu> {
    parse_stat(
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
        clock_ticks_per_second(),
    )
}

/// A `/proc/<pid>/stat` line read with `hz` clock ticks per second.
fn parse_stat(stat: &str, hz: f64) -> Option<ProcCpu> {
    // the command name is in parentheses and may hold spaces: fields follow the last ')'
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after the name: state(0) ppid(1) … utime(11) stime(12)
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ProcCpu {
        ppid,
        seconds: ticks as f64 / hz,
    })
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// CPU time this process has used (user and system, all threads), in nanoseconds.
fn own_cpu_ns() -> u64 {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    ns(u.ru_utime) + ns(u.ru_stime)
}

/// CPU time this process and its children (the camera workers, which decode) have used, user
/// and system, as one counter that only grows: each live child's increase since the last read
/// is added, so a worker that exits or restarts does not take its time back out of the sum.
#[derive(Default)]
pub struct CpuClock {
    children: HashMap<u32, u64>,
    children_ns: u64,
}

impl CpuClock {
    /// Nanoseconds of CPU used so far.
    pub fn read(&mut self) -> u64 {
        let me = std::process::id();
        let mut seen = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                if let Some(p) = proc_cpu(pid)
                    && p.ppid == me
                {
                    let ns = (p.seconds * 1e9) as u64;
                    // a pid seen for the first time counts from its start
                    let before = self.children.get(&pid).copied().unwrap_or(0);
                    self.children_ns += ns.saturating_sub(before);
                    seen.insert(pid, ns.max(before));
                }
            }
        }
        self.children = seen;
        own_cpu_ns() + self.children_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_cpu_clock_counts_this_process_and_its_children() {
        let line =
            "4242 (crosscam camera) S 17 4242 17 0 -1 4194560 2000 0 0 0 250 31 0 0 20 0 9 0";
        assert_eq!(
            parse_stat(line, 100.0),
            Some(ProcCpu {
                ppid: 17,
                seconds: 2.81
            })
        );
        assert_eq!(parse_stat("garbage", 100.0), None);
        let mut clock = CpuClock::default();
        let before = clock.read();
        // a child that burns CPU: its time is in the clock
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let mut during = before;
        while child.try_wait().unwrap().is_none() {
            during = clock.read();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(during > before);
        // its time is counted as a child's (a few ticks may fall after the last read)
        assert!(
            clock.children_ns >= 50_000_000,
            "the child's CPU time was not counted: {} ns",
            clock.children_ns
        );
        // and the clock never goes back when the child is gone
        assert!(clock.read() >= during);
    }
}
