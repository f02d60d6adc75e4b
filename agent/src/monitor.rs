//! The node `monitor` report: every `--monitor-interval` (30 s, as Gravitee's node monitor) the agent
//! reads its own process figures from `/proc/self` and spools one `monitor` document with the other
//! reports. Where `/proc` is missing (not Linux) the figures are 0 rather than an error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::grpc::registry::DataplaneRegistry;
use crate::reports::es::{self, NodeMonitor};
use crate::reports::spool::SpoolHandle;

/// Clock ticks per second of `/proc/<pid>/stat` times. The kernel ABI fixes USER_HZ at 100 on every
/// Linux architecture hgw builds for, so no `sysconf` call (and no `unsafe`) is needed.
const USER_HZ: u64 = 100;

/// What `/proc/self` says about this process at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessSample {
    /// User + system CPU time since start, milliseconds.
    pub cpu_ms: u64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
}

impl ProcessSample {
    pub fn read() -> ProcessSample {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let (resident_bytes, virtual_bytes) = memory_from_status(&status);
        ProcessSample {
            cpu_ms: cpu_ms_from_stat(&stat),
            resident_bytes,
            virtual_bytes,
            open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64),
        }
    }
}

/// utime + stime (fields 14 and 15 of `/proc/<pid>/stat`) in milliseconds. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its closing parenthesis.
pub fn cpu_ms_from_stat(stat: &str) -> u64 {
    let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    // After the name: field 3 (state) is the first; utime is field 14, stime field 15.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) * 1000 / USER_HZ
}

/// `VmRSS` and `VmSize` of `/proc/<pid>/status`, in bytes.
pub fn memory_from_status(status: &str) -> (u64, u64) {
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (kib("VmRSS:"), kib("VmSize:"))
}

/// CPU percent (of one core) used between two samples `wall` apart.
pub fn cpu_percent(before: &ProcessSample, after: &ProcessSample, wall: Duration) -> f64 {
    let wall_ms = wall.as_secs_f64() * 1000.0;
    if wall_ms <= 0.0 {
        return 0.0;
    }
    after.cpu_ms.saturating_sub(before.cpu_ms) as f64 * 100.0 / wall_ms
}

/// The periodic task.
pub struct Monitor {
    pub spool: SpoolHandle,
    pub registry: Arc<DataplaneRegistry>,
    pub node_id: String,
    pub interval: Duration,
}

impl Monitor {
    /// Reports every `interval` until `cancel`; the first document comes one interval after start, so
    /// its CPU figure covers a whole interval.
    pub async fn run(self, cancel: CancellationToken) {
        let hostname = crate::heartbeat::hostname();
        let mut previous = (ProcessSample::read(), Instant::now());
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = cancel.cancelled() => return,
            }
            let now = (ProcessSample::read(), Instant::now());
            let monitor = NodeMonitor {
                timestamp_ms: crate::sync::now_ms(),
                hostname: hostname.clone(),
                cpu_percent: cpu_percent(&previous.0, &now.0, now.1 - previous.1),
                cpu_total_ms: now.0.cpu_ms,
                resident_bytes: now.0.resident_bytes,
                virtual_bytes: now.0.virtual_bytes,
                open_file_descriptors: now.0.open_fds,
                connected_dataplanes: self.registry.connected() as u64,
            };
            previous = now;
            let lines = [es::monitor_document(&monitor, &self.node_id).to_string()];
            // The spool waits when it is full; a monitor document is not worth holding shutdown for.
            tokio::select! {
                appended = self.spool.append(&lines) => if appended.is_err() { return },
                () = cancel.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_utime_plus_stime_even_with_odd_command_names() {
        // Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let stat = "4242 (hgw (agent) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0";
        assert_eq!(cpu_ms_from_stat(stat), 3000);
        assert_eq!(cpu_ms_from_stat("garbage"), 0);
    }

    #[test]
    fn memory_comes_from_vmrss_and_vmsize() {
        let status = "Name:\thgw-agent\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\nThreads:\t8\n";
        assert_eq!(memory_from_status(status), (10_485_760, 209_715_200));
        assert_eq!(memory_from_status(""), (0, 0));
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let before = ProcessSample { cpu_ms: 1000, ..ProcessSample::default() };
        let after = ProcessSample { cpu_ms: 1500, ..ProcessSample::default() };
        assert!((cpu_percent(&before, &after, Duration::from_secs(1)) - 50.0).abs() < 1e-9);
        assert_eq!(cpu_percent(&before, &after, Duration::ZERO), 0.0);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = ProcessSample::read();
        if cfg!(target_os = "linux") {
            assert!(sample.resident_bytes > 0 && sample.open_fds > 0);
        }
    }
}
