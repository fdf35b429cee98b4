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

/// Busy ticks of all CPUs: every column of `/proc/stat`'s `cpu` line but idle and
/// iowait (guest time is already counted in user).
fn machine_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum();
    Some(busy)
}

/// Reads the counters now.
pub fn sample(server_pid: Option<u32>) -> Sample {
    Sample {
        at: Instant::now(),
        server_ticks: server_pid.and_then(tree_ticks),
        own_ticks: ticks("self").map(|(t, _)| t),
        machine_ticks: machine_ticks(),
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
    }
}
