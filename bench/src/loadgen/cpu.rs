//! CPU accounting from `/proc`: how many cores the server under test and the load
//! generator itself kept busy during a run. On a two-core machine that share is half
//! the story of a result, so every point records it.
//!
//! A server's time is its own (all threads) plus that of its live child processes
//! (PostgreSQL's backends, nginx's workers). Linux only; elsewhere nothing is recorded.

use std::time::Instant;

/// CPU time read at one instant, in clock ticks.
pub struct Sample {
    at: Instant,
    server_ticks: Option<u64>,
    own_ticks: Option<u64>,
    /// The whole machine's busy time (user, system, interrupts, steal): what the
    /// server and the generator used, plus the kernel's network work on their behalf
    /// and anything else running.
    machine_ticks: Option<u64>,
    /// Time the hypervisor ran something else while this machine's CPUs had work.
    steal_ticks: Option<u64>,
}

/// Cores kept busy over a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cores {
    /// By the server (its process and children).
    pub server: Option<f64>,
    /// By the load generator.
    pub generator: Option<f64>,
    /// By the whole machine.
    pub machine: Option<f64>,
    /// Taken from this machine by the host (steal time, part of `machine`): on a
    /// shared virtual machine, work the run wanted done that waited for the host.
    pub stolen: Option<f64>,
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)` is 100 on every Linux we run on).
const TICKS_PER_SECOND: f64 = 100.0;

/// `utime + stime` of `pid`, and its parent's pid.
fn ticks(pid: &str) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields after the closing parenthesis do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime, ppid))
}

fn tree_ticks(root: u32) -> Option<u64> {
    let own = ticks(&root.to_string())?.0;
    let children: u64 = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|pid| ticks(&pid))
        .filter(|&(_, ppid)| ppid == root)
        .map(|(t, _)| t)
        .sum();
    Some(own + children)
}

/// The `cpu` line of `/proc/stat` (all CPUs), its columns in clock ticks: user, nice,
/// system, idle, iowait, irq, softirq, steal, guest, guest_nice.
fn all_cpus_ticks() -> Option<Vec<u64>> {
    cpu_line_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn cpu_line_ticks(stat: &str) -> Option<Vec<u64>> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line.split_whitespace().map_while(|f| f.parse().ok()).collect();
    (fields.len() >= 8).then_some(fields)
}

/// Busy ticks of a `cpu` line: every column but idle and iowait (guest time is already
/// counted in user).
fn busy_ticks(fields: &[u64]) -> u64 {
    [0, 1, 2, 5, 6, 7].iter().map(|&i| fields[i]).sum()
}

/// Steal ticks of a `cpu` line.
fn steal_ticks(fields: &[u64]) -> u64 {
    fields[7]
}

/// The host's steal time of every CPU so far, in nanoseconds (0 where `/proc/stat`
/// cannot be read): what a benchmark that is not the only guest on its host lost.
pub fn host_steal_nanos() -> u64 {
    let ticks = all_cpus_ticks().map_or(0, |fields| steal_ticks(&fields));
    ticks * (1_000_000_000 / TICKS_PER_SECOND as u64)
}

/// Reads the counters now.
pub fn sample(server_pid: Option<u32>) -> Sample {
    let all_cpus = all_cpus_ticks();
    Sample {
        at: Instant::now(),
        server_ticks: server_pid.and_then(tree_ticks),
        own_ticks: ticks("self").map(|(t, _)| t),
        machine_ticks: all_cpus.as_deref().map(busy_ticks),
        steal_ticks: all_cpus.as_deref().map(steal_ticks),
    }
}

/// Average cores busy between two samples.
pub fn cores(before: &Sample, after: &Sample) -> Cores {
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let rate = |a: Option<u64>, b: Option<u64>| match (a, b) {
        // A child that exited between the samples took its time with it: unknown.
        (Some(a), Some(b)) if b >= a => {
            Some(((b - a) as f64 / TICKS_PER_SECOND / seconds * 100.0).round() / 100.0)
        }
        _ => None,
    };
    Cores {
        server: rate(before.server_ticks, after.server_ticks),
        generator: rate(before.own_ticks, after.own_ticks),
        machine: rate(before.machine_ticks, after.machine_ticks),
        stolen: rate(before.steal_ticks, after.steal_ticks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_gives_busy_and_stolen_ticks() {
        let stat = "cpu  2117085 0 218916 618407 25718 0 24167 23618 0 0\n\
                    cpu0 1058542 0 109458 309203 12859 0 12083 11809 0 0\n";
        let fields = cpu_line_ticks(stat).unwrap();
        assert_eq!(busy_ticks(&fields), 2_117_085 + 218_916 + 24_167 + 23_618);
        assert_eq!(steal_ticks(&fields), 23_618);
        // A per-CPU line first, or a kernel without the steal column, gives nothing.
        assert_eq!(cpu_line_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(cpu_line_ticks("cpu  1 2 3 4 5 6 7\n"), None);
    }
}
