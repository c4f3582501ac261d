//! CPU time, memory and load of processes and of the machine, from /proc.

use super::*;

pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
    let ticks: u64 = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    ticks as f64 / 100.0
}

pub(crate) fn memory_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Busy and total CPU ticks of the whole machine, all cores (`/proc/stat`).
pub(crate) fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    // idle and iowait
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The stack's servers whose CPU time a run reports beside ours: the MongoDB server and
/// the broker, found by their command names.
pub(crate) fn server_pids() -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        if ["mongod", "secantusd-rs", "tansu"].contains(&comm) {
            found.push((comm.to_owned(), pid));
        }
    }
    found.sort();
    found
}

/// CPU used by the machine and by the stack's servers between two readings.
pub(crate) struct CpuWindow {
    pub(crate) machine: (u64, u64),
    pub(crate) servers: Vec<(String, u32, f64)>,
}

impl CpuWindow {
    pub(crate) fn start() -> Self {
        CpuWindow {
            machine: machine_ticks(),
            servers: server_pids()
                .into_iter()
                .map(|(name, pid)| (name, pid, cpu_secs(pid)))
                .collect(),
        }
    }

    /// "machine 93% busy; secantusd-rs 1.2 s, tansu 0.4 s".
    pub(crate) fn report(&self) -> String {
        let (busy, total) = machine_ticks();
        let busy_share = (busy - self.machine.0) as f64 / (total - self.machine.1).max(1) as f64;
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|(name, pid, before)| format!("{name} {:.1} s", cpu_secs(*pid) - before))
            .collect();
        format!(
            "machine {:.0}% busy; {}",
            busy_share * 100.0,
            servers.join(", ")
        )
    }
}

/// The pid of the stack's Kafka Connect JVM, the one listening on the REST port of `url`
/// (read only: its CPU time). Other Connect JVMs may run on the machine (Compose tests).
pub(crate) fn connect_pid(url: &str) -> Option<u32> {
    let port = url.rsplit(':').next()?.trim_end_matches('/');
    let out = Command::new("ss")
        .args(["-ltnpH", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pid = text.split("pid=").nth(1)?.split(',').next()?;
    pid.parse().ok()
}
