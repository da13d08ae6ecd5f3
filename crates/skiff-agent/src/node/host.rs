//! What the node agent reads about its host, behind a trait so that status
//! computation is tested with fixed numbers ([`FakeHost`]) and hollow nodes
//! can report made-up machines.
//!
//! [`LinuxHost`] reads procfs, sysfs, `/etc` and `statvfs(2)`. It takes the
//! host root as a path, so its parsing is tested against a tempdir.

use std::path::{Path, PathBuf};

/// Facts about the machine that do not change while the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInfo {
    /// Online logical CPUs.
    pub cpus: u32,
    /// Physical memory (`MemTotal`), in bytes.
    pub memory_bytes: u64,
    /// Swap (`SwapTotal`), in bytes.
    pub swap_bytes: u64,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// The SMBIOS product UUID, empty when unreadable (as in containers).
    pub system_uuid: String,
    /// `/proc/sys/kernel/random/boot_id`; changes on reboot.
    pub boot_id: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of os-release, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub os_image: String,
    /// Go's name for the CPU architecture (`amd64`, `arm64`, ...), which is
    /// what `kubernetes.io/arch` and `nodeInfo.architecture` carry.
    pub architecture: String,
}

/// Current usage, read on every status update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Memory available to new work (`MemAvailable`), in bytes.
    pub memory_available_bytes: u64,
    /// Size of the filesystem holding the data dir, in bytes.
    pub fs_capacity_bytes: u64,
    /// Bytes an unprivileged writer may still use there.
    pub fs_available_bytes: u64,
    /// Inodes of that filesystem (0 when it has no fixed inode table).
    pub fs_inodes: u64,
    /// Free inodes there.
    pub fs_inodes_free: u64,
    /// The most PIDs the kernel hands out (`min(pid_max, threads-max)`).
    pub pid_max: u64,
    /// PIDs (threads) in use.
    pub pids_in_use: u64,
}

/// Why host facts could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// A file could not be read or `statvfs` failed.
    #[error("reading {}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file did not hold what it should.
    #[error("parsing {}: {what}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was missing or malformed.
        what: &'static str,
    },
}

/// The node agent's view of its host.
pub trait HostInfo: Send + Sync {
    /// The machine's fixed facts.
    fn machine(&self) -> Result<MachineInfo, HostError>;
    /// Current memory, disk and PID usage.
    fn usage(&self) -> Result<Usage, HostError>;
}

/// [`HostInfo`] of the Linux host the agent runs on.
#[derive(Debug, Clone)]
pub struct LinuxHost {
    root: PathBuf,
    data_dir: PathBuf,
}

impl LinuxHost {
    /// The host at `/`, with disk usage measured where `data_dir` lives.
    pub fn new(data_dir: PathBuf) -> Self {
        Self::with_root(PathBuf::from("/"), data_dir)
    }

    /// A host whose `/proc`, `/sys` and `/etc` are under `root` (tests).
    pub fn with_root(root: PathBuf, data_dir: PathBuf) -> Self {
        Self { root, data_dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn read(&self, relative: &str) -> Result<String, HostError> {
        let path = self.path(relative);
        std::fs::read_to_string(&path).map_err(|source| HostError::Read { path, source })
    }

    /// The first line of a file, trimmed; empty when the file is unreadable.
    fn read_optional(&self, relative: &str) -> String {
        self.read(relative)
            .map(|s| s.lines().next().unwrap_or_default().trim().to_string())
            .unwrap_or_default()
    }

    fn read_number(&self, relative: &str) -> Result<u64, HostError> {
        self.read(relative)?
            .trim()
            .parse()
            .map_err(|_| HostError::Parse {
                path: self.path(relative),
                what: "not a number",
            })
    }

    fn meminfo(&self, field: &str) -> Result<u64, HostError> {
        let text = self.read("proc/meminfo")?;
        meminfo_bytes(&text, field).ok_or_else(|| HostError::Parse {
            path: self.path("proc/meminfo"),
            what: "missing meminfo field",
        })
    }

    fn cpus(&self) -> Result<u32, HostError> {
        let relative = "sys/devices/system/cpu/online";
        count_cpu_list(self.read(relative)?.trim()).ok_or_else(|| HostError::Parse {
            path: self.path(relative),
            what: "bad CPU list",
        })
    }

    fn os_image(&self) -> String {
        ["etc/os-release", "usr/lib/os-release"]
            .iter()
            .find_map(|f| self.read(f).ok().and_then(|text| pretty_name(&text)))
            .unwrap_or_else(|| "Linux".to_string())
    }

    fn pids(&self) -> Result<(u64, u64), HostError> {
        let pid_max = self.read_number("proc/sys/kernel/pid_max")?;
        let threads_max = self.read_number("proc/sys/kernel/threads-max")?;
        let loadavg = self.read("proc/loadavg")?;
        let in_use = loadavg_entities(&loadavg).ok_or_else(|| HostError::Parse {
            path: self.path("proc/loadavg"),
            what: "no running/total field",
        })?;
        Ok((pid_max.min(threads_max), in_use))
    }
}

impl HostInfo for LinuxHost {
    fn machine(&self) -> Result<MachineInfo, HostError> {
        let machine_id = match self.read_optional("etc/machine-id") {
            id if id.is_empty() => self.read_optional("var/lib/dbus/machine-id"),
            id => id,
        };
        Ok(MachineInfo {
            cpus: self.cpus()?,
            memory_bytes: self.meminfo("MemTotal")?,
            swap_bytes: self.meminfo("SwapTotal").unwrap_or(0),
            machine_id,
            system_uuid: self.read_optional("sys/class/dmi/id/product_uuid"),
            boot_id: self.read_optional("proc/sys/kernel/random/boot_id"),
            kernel_version: self.read_optional("proc/sys/kernel/osrelease"),
            os_image: self.os_image(),
            architecture: go_arch(std::env::consts::ARCH).to_string(),
        })
    }

    fn usage(&self) -> Result<Usage, HostError> {
        let fs = statvfs(&self.data_dir)?;
        let (pid_max, pids_in_use) = self.pids()?;
        Ok(Usage {
            memory_available_bytes: self.meminfo("MemAvailable")?,
            fs_capacity_bytes: fs.capacity,
            fs_available_bytes: fs.available,
            fs_inodes: fs.inodes,
            fs_inodes_free: fs.inodes_free,
            pid_max,
            pids_in_use,
        })
    }
}

struct FsStats {
    capacity: u64,
    available: u64,
    inodes: u64,
    inodes_free: u64,
}

fn statvfs(path: &Path) -> Result<FsStats, HostError> {
    let stats = rustix::fs::statvfs(path).map_err(|errno| HostError::Read {
        path: path.to_path_buf(),
        source: errno.into(),
    })?;
    Ok(FsStats {
        capacity: stats.f_blocks.saturating_mul(stats.f_frsize),
        available: stats.f_bavail.saturating_mul(stats.f_frsize),
        inodes: stats.f_files,
        inodes_free: stats.f_ffree,
    })
}

/// A `/proc/meminfo` field in bytes (the file counts in KiB).
fn meminfo_bytes(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name != field {
            return None;
        }
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") => value.checked_mul(1024),
            None => Some(value),
            Some(_) => None,
        }
    })
}

/// The number of CPUs in a kernel CPU list such as `0-3,6,8-9`.
fn count_cpu_list(list: &str) -> Option<u32> {
    let mut count = 0u32;
    for part in list.split(',') {
        let part = part.trim();
        let span = match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (u32, u32) = (lo.parse().ok()?, hi.parse().ok()?);
                hi.checked_sub(lo)?.checked_add(1)?
            }
            None => {
                part.parse::<u32>().ok()?;
                1
            }
        };
        count = count.checked_add(span)?;
    }
    (count > 0).then_some(count)
}

/// `PRETTY_NAME` from os-release text, unquoted.
fn pretty_name(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("PRETTY_NAME=")?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// The total of the `running/total` field of `/proc/loadavg`: the number of
/// kernel scheduling entities, i.e. PIDs in use.
fn loadavg_entities(text: &str) -> Option<u64> {
    let field = text.split_whitespace().nth(3)?;
    field.split_once('/')?.1.parse().ok()
}

/// Go's `GOARCH` for a Rust target architecture.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// A host with fixed numbers, for tests and hollow nodes. Usage can be
/// changed while an agent runs, to drive pressure conditions.
#[derive(Debug)]
pub struct FakeHost {
    machine: MachineInfo,
    usage: std::sync::Mutex<Usage>,
}

impl FakeHost {
    /// A 4-CPU, 8 GiB machine with a 100 GiB disk, mostly free.
    pub fn new() -> Self {
        Self::with(
            MachineInfo {
                cpus: 4,
                memory_bytes: 8 << 30,
                swap_bytes: 0,
                machine_id: "0123456789abcdef0123456789abcdef".into(),
                system_uuid: "00000000-0000-0000-0000-000000000001".into(),
                boot_id: "11111111-2222-3333-4444-555555555555".into(),
                kernel_version: "6.1.0-skiff".into(),
                os_image: "Skiff Test Linux".into(),
                architecture: "amd64".into(),
            },
            Usage {
                memory_available_bytes: 6 << 30,
                fs_capacity_bytes: 100 << 30,
                fs_available_bytes: 80 << 30,
                fs_inodes: 6_553_600,
                fs_inodes_free: 6_000_000,
                pid_max: 4_194_304,
                pids_in_use: 300,
            },
        )
    }

    /// A host reporting exactly these numbers.
    pub fn with(machine: MachineInfo, usage: Usage) -> Self {
        Self {
            machine,
            usage: std::sync::Mutex::new(usage),
        }
    }

    /// Changes what [`HostInfo::usage`] reports from now on.
    pub fn set_usage(&self, usage: Usage) {
        *self
            .usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = usage;
    }
}

impl Default for FakeHost {
    fn default() -> Self {
        Self::new()
    }
}

impl HostInfo for FakeHost {
    fn machine(&self) -> Result<MachineInfo, HostError> {
        Ok(self.machine.clone())
    }

    fn usage(&self) -> Result<Usage, HostError> {
        Ok(*self
            .usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, relative: &str, content: &str) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().expect("relative path has a parent"))
            .expect("create dirs");
        std::fs::write(path, content).expect("write file");
    }

    fn fake_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(
            root,
            "proc/meminfo",
            "MemTotal:       16393524 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\nSwapTotal:       2097148 kB\n",
        );
        write(root, "sys/devices/system/cpu/online", "0-3,6,8-9\n");
        write(root, "etc/machine-id", "abc123\n");
        write(root, "proc/sys/kernel/random/boot_id", "boot-1\n");
        write(root, "proc/sys/kernel/osrelease", "6.1.0-13-amd64\n");
        write(
            root,
            "etc/os-release",
            "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n",
        );
        write(root, "proc/sys/kernel/pid_max", "4194304\n");
        write(root, "proc/sys/kernel/threads-max", "127000\n");
        write(root, "proc/loadavg", "0.52 0.58 0.59 3/812 12345\n");
        dir
    }

    #[test]
    fn linux_host_reads_machine_facts() {
        let root = fake_root();
        let host = LinuxHost::with_root(root.path().into(), root.path().into());
        let machine = host.machine().expect("machine info");
        assert_eq!(machine.cpus, 7);
        assert_eq!(machine.memory_bytes, 16_393_524 * 1024);
        assert_eq!(machine.swap_bytes, 2_097_148 * 1024);
        assert_eq!(machine.machine_id, "abc123");
        assert_eq!(machine.system_uuid, "");
        assert_eq!(machine.boot_id, "boot-1");
        assert_eq!(machine.kernel_version, "6.1.0-13-amd64");
        assert_eq!(machine.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(machine.architecture, go_arch(std::env::consts::ARCH));
    }

    #[test]
    fn linux_host_reads_usage() {
        let root = fake_root();
        let host = LinuxHost::with_root(root.path().into(), root.path().into());
        let usage = host.usage().expect("usage");
        assert_eq!(usage.memory_available_bytes, 8_000_000 * 1024);
        assert_eq!(usage.pid_max, 127_000);
        assert_eq!(usage.pids_in_use, 812);
        assert!(usage.fs_capacity_bytes > 0);
        assert!(usage.fs_available_bytes <= usage.fs_capacity_bytes);
    }

    #[test]
    fn linux_host_reports_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = LinuxHost::with_root(dir.path().into(), dir.path().into());
        assert!(matches!(host.machine(), Err(HostError::Read { .. })));
        assert!(host.usage().is_err());
    }

    #[test]
    fn the_real_host_is_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = LinuxHost::new(dir.path().into());
        let machine = host.machine().expect("machine info of this host");
        assert!(machine.cpus >= 1);
        assert!(machine.memory_bytes > 0);
        host.usage().expect("usage of this host");
    }

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal: 100 kB\nHugePages_Total: 0\nBad: x kB\nOdd: 1 MB\n";
        assert_eq!(meminfo_bytes(text, "MemTotal"), Some(102_400));
        assert_eq!(meminfo_bytes(text, "HugePages_Total"), Some(0));
        assert_eq!(meminfo_bytes(text, "Bad"), None);
        assert_eq!(meminfo_bytes(text, "Odd"), None);
        assert_eq!(meminfo_bytes(text, "Missing"), None);
    }

    #[test]
    fn counts_cpu_lists() {
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-7"), Some(8));
        assert_eq!(count_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("a-b"), None);
    }

    #[test]
    fn parses_pretty_name() {
        assert_eq!(
            pretty_name("PRETTY_NAME='Alpine Linux v3.19'\n").as_deref(),
            Some("Alpine Linux v3.19")
        );
        assert_eq!(pretty_name("PRETTY_NAME=Plain\n").as_deref(), Some("Plain"));
        assert_eq!(pretty_name("NAME=x\n"), None);
        assert_eq!(pretty_name("PRETTY_NAME=\"\"\n"), None);
    }

    #[test]
    fn parses_loadavg() {
        assert_eq!(loadavg_entities("0.1 0.2 0.3 2/345 999"), Some(345));
        assert_eq!(loadavg_entities("0.1 0.2"), None);
    }

    #[test]
    fn maps_architectures_to_go_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("riscv64"), "riscv64");
    }

    #[test]
    fn fake_host_usage_can_change() {
        let host = FakeHost::new();
        let mut usage = host.usage().expect("fake usage");
        usage.memory_available_bytes = 1;
        host.set_usage(usage);
        assert_eq!(host.usage().expect("fake usage").memory_available_bytes, 1);
    }
}
