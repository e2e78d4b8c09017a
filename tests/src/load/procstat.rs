//! What `/proc` says about a process: resident memory, CPU time per thread
//! group, and the open-file limit. Linux only; elsewhere every reading is
//! `None` and the report says "n/a".
//!
//! CPU is split by thread name: the embedded relay's runtime threads are
//! named `relay-*`, its group-commit thread `sotto-flusher` and sled's
//! threads `sled-*`; the load generator's threads are `load-*`. That is how
//! the report tells where the time goes without `perf`.

use std::collections::BTreeMap;

use serde::Serialize;

/// Resident set size of `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The soft limit on open files (`/proc/self/limits`).
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// UDP datagrams the kernel dropped because a socket's receive buffer was
/// full (`RcvbufErrors` in `/proc/net/snmp`), machine-wide. On loopback
/// each one is a QUIC packet lost, which costs a retransmission timeout.
pub(crate) fn udp_receive_drops() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?;
    let values = udp.next()?;
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(column)?.parse().ok()
}

/// Clock ticks per second, for the tick counts in `/proc/*/stat`.
fn ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// `(comm, utime + stime ticks)` from one `/proc/.../stat` line. The command
/// name is in parentheses and may itself contain spaces or parentheses, so
/// the fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut fields = stat.get(close + 1..)?.split_whitespace();
    // After the comm: state(3) ppid pgrp session tty_nr tpgid flags minflt
    // cminflt majflt cmajflt utime(14) stime(15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

fn group_of(comm: &str) -> &'static str {
    // sled's own I/O threads belong to the relay's storage.
    if comm.starts_with("relay-") || comm.starts_with("sled-") || comm == "sotto-flusher" {
        "relay"
    } else if comm.starts_with("load-") {
        "load generator"
    } else {
        "other"
    }
}

/// CPU ticks so far, per thread group of this process, plus the total of an
/// external relay process if one is watched.
#[derive(Debug, Clone, Default)]
pub(crate) struct CpuSnapshot {
    groups: BTreeMap<&'static str, u64>,
    /// By thread name with trailing digits dropped (`sled-io-3` → `sled-io-`).
    threads: BTreeMap<String, u64>,
    external_relay: Option<u64>,
    /// Busy ticks of the whole machine, to show how much CPU other users
    /// of a shared machine took during a run.
    machine: Option<u64>,
}

/// Busy ticks of all CPUs (the `cpu` line of `/proc/stat`: everything but
/// idle and iowait; guest time is already included in user).
fn machine_busy() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = fields[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

impl CpuSnapshot {
    /// Reads this process's threads and, if given, the relay process.
    pub(crate) fn take(relay_pid: Option<u32>) -> Self {
        let mut groups = BTreeMap::new();
        let mut threads = BTreeMap::<String, u64>::new();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                    continue;
                };
                if let Some((comm, ticks)) = parse_stat(&stat) {
                    *groups.entry(group_of(&comm)).or_default() += ticks;
                    let name = comm.trim_end_matches(|c: char| c.is_ascii_digit());
                    *threads.entry(name.to_owned()).or_default() += ticks;
                }
            }
        }
        let external_relay = relay_pid.and_then(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            parse_stat(&stat).map(|(_, ticks)| ticks)
        });
        Self {
            groups,
            threads,
            external_relay,
            machine: machine_busy(),
        }
    }

    /// CPU use between `self` and `later`, in cores (1.0 = one core busy),
    /// over `secs` of wall time.
    pub(crate) fn cores_until(&self, later: &Self, secs: f64) -> CpuUse {
        let tick = ticks_per_sec();
        let cores = |before: u64, after: u64| {
            if secs > 0.0 {
                after.saturating_sub(before) as f64 / tick / secs
            } else {
                0.0
            }
        };
        let mut by_group = BTreeMap::new();
        for (group, after) in &later.groups {
            let before = self.groups.get(group).copied().unwrap_or(0);
            by_group.insert((*group).to_owned(), round2(cores(before, *after)));
        }
        let mut by_thread = BTreeMap::new();
        for (name, after) in &later.threads {
            let before = self.threads.get(name).copied().unwrap_or(0);
            by_thread.insert(name.clone(), round2(cores(before, *after)));
        }
        let external_relay = match (self.external_relay, later.external_relay) {
            (Some(before), Some(after)) => Some(round2(cores(before, after))),
            _ => None,
        };
        let ours = |snapshot: &Self| {
            snapshot.groups.values().sum::<u64>() + snapshot.external_relay.unwrap_or(0)
        };
        let other_processes = match (self.machine, later.machine) {
            (Some(before), Some(after)) => {
                let busy = after.saturating_sub(before);
                let mine = ours(later).saturating_sub(ours(self));
                Some(round2(cores(0, busy.saturating_sub(mine))))
            }
            _ => None,
        };
        CpuUse {
            by_thread_group: by_group,
            by_thread_name: by_thread,
            external_relay_process: external_relay,
            other_processes,
        }
    }
}

/// CPU use over a measurement window, in cores.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CpuUse {
    /// This process's threads grouped by name (relay / load generator / other).
    pub(crate) by_thread_group: BTreeMap<String, f64>,
    /// The same time by thread name (numbered threads summed).
    pub(crate) by_thread_name: BTreeMap<String, f64>,
    /// The `--relay-pid` process, when one is watched.
    pub(crate) external_relay_process: Option<f64>,
    /// Everything else on the machine (other users' compilers, ...).
    pub(crate) other_processes: Option<f64>,
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (group, cores) in &self.by_thread_group {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{group} {cores:.2}")?;
        }
        if let Some(relay) = self.external_relay_process {
            write!(f, ", relay process {relay:.2}")?;
        }
        write!(f, " cores")?;
        if let Some(others) = self.other_processes {
            write!(f, " (other processes on the machine: {others:.2} cores)")?;
        }
        Ok(())
    }
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "42 (relay-wo)rker) S 1 2 3 4 5 6 7 8 9 10 11 22 1 0 0";
        assert_eq!(parse_stat(line), Some(("relay-wo)rker".into(), 33)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_memory_and_a_file_limit() {
        if cfg!(target_os = "linux") {
            assert!(rss_kib(std::process::id()).is_some());
            assert!(open_files_limit().is_some());
        }
    }
}
