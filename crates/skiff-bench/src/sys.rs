//! What the benchmarks need from the host: the machine description printed with
//! every run (figures are meaningless without it), a process's memory from
//! `/proc`, and free loopback ports.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Child;

use anyhow::Context;

/// A process's memory as `/proc/PID/status` reports it, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`).
    pub peak_kib: u64,
}

impl Memory {
    /// Read the memory of process `pid`.
    pub fn of(pid: u32) -> anyhow::Result<Memory> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        Memory::parse(&status).with_context(|| format!("no VmRSS/VmHWM in {path}"))
    }

    /// Parse the text of a `/proc/PID/status` file.
    fn parse(status: &str) -> Option<Memory> {
        Some(Memory {
            rss_kib: meminfo_field(status, "VmRSS")?,
            peak_kib: meminfo_field(status, "VmHWM")?,
        })
    }
}

/// A child process that is killed and reaped when dropped, so that no early
/// return or panic of the benchmark leaves a server running.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Memory available to new allocations (`MemAvailable`), in KiB.
pub fn available_kib() -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    meminfo_field(&meminfo, "MemAvailable").context("no MemAvailable in /proc/meminfo")
}

/// A `Name:   123 kB` field of `/proc/meminfo`.
fn meminfo_field(meminfo: &str, name: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A port that was free on 127.0.0.1 a moment ago. Another process may take it
/// before the caller binds it; callers retry a start that fails.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A few markdown lines that describe this machine and the disk under `dir`.
pub fn describe_machine(dir: &Path) -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim())
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = read("/proc/meminfo");
    let ram_gib =
        meminfo_field(&meminfo, "MemTotal").map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0));
    let kernel = read("/proc/sys/kernel/osrelease");
    let mount = std::fs::canonicalize(dir)
        .ok()
        .and_then(|dir| mount_of(&read("/proc/self/mounts"), &dir))
        .unwrap_or_else(|| "unknown".into());
    let mut text = String::new();
    let _ = writeln!(
        text,
        "- date: {}",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(text, "- CPU: {cpu}, {cores} cores available");
    let _ = writeln!(text, "- RAM: {ram_gib:.1} GiB");
    let _ = writeln!(text, "- kernel: {}", kernel.trim());
    // Other work on the machine skews every figure; say how busy it was.
    let load = read("/proc/loadavg");
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let _ = writeln!(text, "- load average at start: {}", load.join(" "));
    let _ = writeln!(text, "- data directory: {} on {mount}", dir.display());
    text
}

/// The mount holding `path` (the longest mount point that prefixes it), as
/// "device (fstype)", from the text of `/proc/self/mounts`.
fn mount_of(mounts: &str, path: &Path) -> Option<String> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.next()?;
            let point = fields.next()?;
            let fstype = fields.next()?;
            path.starts_with(point)
                .then(|| (point.len(), format!("{device} ({fstype})")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, description)| description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let status = "Name:\tskiff\nVmPeak:\t  99999 kB\nVmHWM:\t   30000 kB\nVmRSS:\t   21504 kB\nThreads:\t4\n";
        assert_eq!(
            Memory::parse(status),
            Some(Memory {
                rss_kib: 21504,
                peak_kib: 30000
            })
        );
        assert_eq!(Memory::parse("Name:\tzombie\n"), None);
        assert!((mib(21504) - 21.0).abs() < 1e-9);
        let meminfo = "MemTotal:       24641748 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_field(meminfo, "MemAvailable"), Some(20_000_000));
        assert_eq!(meminfo_field(meminfo, "MemFree"), None);
    }

    #[test]
    fn finds_the_longest_mount_point() {
        let mounts =
            "overlay / overlay rw 0 0\n/dev/vdb /work ext4 rw 0 0\ntmpfs /work/tmp tmpfs rw 0 0\n";
        let of = |p: &str| mount_of(mounts, Path::new(p));
        assert_eq!(of("/work/main").as_deref(), Some("/dev/vdb (ext4)"));
        assert_eq!(of("/work/tmp/x").as_deref(), Some("tmpfs (tmpfs)"));
        assert_eq!(of("/root").as_deref(), Some("overlay (overlay)"));
        // A path component must match whole: /workshop is not under /work.
        assert_eq!(of("/workshop").as_deref(), Some("overlay (overlay)"));
    }
}
