//! A private containerd, configured and supervised by the agent.
//!
//! As k3s does, the agent runs its own containerd rather than sharing the
//! system's: it gets its own root, state directory and socket under the data
//! directory, so two agents (or an agent and a system containerd) never see
//! each other's images or containers. The generated config carries what CRI
//! needs on this kind of host:
//!
//! - `restrict_oom_score_adj = true`: root here lacks `CAP_SYS_RESOURCE`, and a
//!   negative `oom_score_adj` fails every sandbox start;
//! - `sandbox_image` = the locally built pause image, because there may be no
//!   registry to pull one from;
//! - runc (`io.containerd.runc.v2`) as the default runtime, the overlayfs
//!   snapshotter, and CNI plugins from Debian's `/usr/lib/cni` with a conf dir
//!   owned by the agent.
//!
//! The process API is blocking (it spawns, polls and waits); async callers
//! should use `spawn_blocking`.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::images::PAUSE_IMAGE;

/// The containerd namespace CRI uses; images imported here are visible to pods.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Longest socket path `bind(2)` accepts (`sun_path` is 108 bytes with a NUL),
/// minus 6 for the `.ttrpc` socket containerd puts beside the gRPC one.
const MAX_SOCKET_PATH: usize = 107 - ".ttrpc".len();

/// How much of containerd's log to quote in startup errors.
const LOG_TAIL_BYTES: u64 = 2048;

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Default grace period between SIGTERM and SIGKILL when stopping containerd.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors from configuring, running or talking to containerd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerdError {
    /// A path that goes into the config is not UTF-8; TOML cannot carry it.
    #[error("path {} is not valid UTF-8", path.display())]
    NonUtf8Path {
        /// The offending path.
        path: PathBuf,
    },
    /// The socket path does not fit in a unix socket address.
    #[error(
        "socket path {} is {len} bytes, over the {MAX_SOCKET_PATH}-byte limit; use a shorter data dir",
        path.display()
    )]
    SocketPathTooLong {
        /// The socket path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// A binary (containerd or ctr) is not installed.
    #[error("`{}` not found; run scripts/setup.sh (it installs containerd and runc)", binary.display())]
    BinaryMissing {
        /// The binary that was tried.
        binary: PathBuf,
    },
    /// containerd exited before its socket came up.
    #[error("containerd exited during startup ({status}); log tail:\n{log_tail}")]
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// The end of its log file.
        log_tail: String,
    },
    /// containerd did not open its socket in time.
    #[error("containerd socket not ready after {timeout:?}; log tail:\n{log_tail}")]
    NotReady {
        /// How long we waited.
        timeout: Duration,
        /// The end of its log file.
        log_tail: String,
    },
    /// A `ctr` command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Ctr {
        /// The command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Sending a signal to containerd failed.
    #[error("signalling containerd: {0}")]
    Signal(#[source] io::Error),
    /// Any other I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ContainerdError {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io {
            context: context.into(),
            source,
        }
    }

    fn spawn(binary: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| match source.kind() {
            io::ErrorKind::NotFound => Self::BinaryMissing {
                binary: binary.to_owned(),
            },
            _ => Self::Io {
                context: format!("running {}", binary.display()),
                source,
            },
        }
    }
}

type Result<T, E = ContainerdError> = std::result::Result<T, E>;

/// Where the private containerd keeps everything, and what CRI uses.
///
/// [`ContainerdConfig::new`] puts every path under one directory; the fields
/// are public so a caller can move any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// The rendered `config.toml`.
    pub config_file: PathBuf,
    /// containerd's stdout and stderr.
    pub log_file: PathBuf,
    /// `root`: images, snapshots, metadata.
    pub root: PathBuf,
    /// `state`: runtime state (task bundles, fifos).
    pub state: PathBuf,
    /// The gRPC socket, both containerd's API and CRI.
    pub address: PathBuf,
    /// Image that holds each pod sandbox.
    pub sandbox_image: String,
    /// Where the CNI plugin binaries are.
    pub cni_bin_dir: PathBuf,
    /// Where the agent writes its CNI conflist; containerd watches it.
    pub cni_conf_dir: PathBuf,
}

impl ContainerdConfig {
    /// Everything under `dir` (e.g. `DATA/agent/containerd`), with the local
    /// pause image and Debian's CNI plugins.
    pub fn new(dir: &Path) -> Self {
        Self {
            config_file: dir.join("config.toml"),
            log_file: dir.join("containerd.log"),
            root: dir.join("root"),
            state: dir.join("state"),
            address: dir.join("containerd.sock"),
            sandbox_image: PAUSE_IMAGE.to_owned(),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            cni_conf_dir: dir.join("cni/net.d"),
        }
    }

    /// Where the pid of the running containerd is kept, beside its config.
    pub fn pid_file(&self) -> PathBuf {
        self.config_file.with_file_name("containerd.pid")
    }

    /// Renders containerd's `config.toml` (config version 2, containerd 1.6+).
    pub fn render(&self) -> Result<String> {
        let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
        let mut out = String::from("# Generated by skiff-agent; rewritten at every start.\n");
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "version = 2\n\
             root = {root}\n\
             state = {state}\n\
             \n\
             [grpc]\n  address = {address}\n\
             \n\
             [{cri}]\n  sandbox_image = {sandbox}\n  restrict_oom_score_adj = true\n\
             \n\
             [{cri}.containerd]\n  snapshotter = \"overlayfs\"\n  default_runtime_name = \"runc\"\n\
             \n\
             [{cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
             \n\
             [{cri}.cni]\n  bin_dir = {cni_bin}\n  conf_dir = {cni_conf}\n",
            root = toml_path(&self.root)?,
            state = toml_path(&self.state)?,
            address = toml_path(&self.address)?,
            sandbox = toml_string(&self.sandbox_image),
            cni_bin = toml_path(&self.cni_bin_dir)?,
            cni_conf = toml_path(&self.cni_conf_dir)?,
        );
        Ok(out)
    }

    fn check_socket_path(&self) -> Result<()> {
        let len = self.address.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(ContainerdError::SocketPathTooLong {
                path: self.address.clone(),
                len,
            });
        }
        Ok(())
    }
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_path(path: &Path) -> Result<String> {
    path.to_str()
        .map(toml_string)
        .ok_or_else(|| ContainerdError::NonUtf8Path {
            path: path.to_owned(),
        })
}

/// The programs the supervisor runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// The containerd daemon.
    pub containerd: PathBuf,
    /// containerd's CLI, used to import images.
    pub ctr: PathBuf,
}

impl Default for Binaries {
    fn default() -> Self {
        Self {
            containerd: PathBuf::from("containerd"),
            ctr: PathBuf::from("ctr"),
        }
    }
}

/// A running private containerd. Dropping it stops the daemon (SIGTERM, then
/// SIGKILL after [`DEFAULT_STOP_TIMEOUT`]); containers it started keep running
/// under their shims, as they do when upstream's containerd restarts.
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    config: ContainerdConfig,
    ctr: PathBuf,
}

impl Containerd {
    /// Writes the config, starts containerd, and waits up to `ready_timeout`
    /// for its socket to accept connections.
    pub fn start(
        config: ContainerdConfig,
        binaries: &Binaries,
        ready_timeout: Duration,
    ) -> Result<Self> {
        config.check_socket_path()?;
        let rendered = config.render()?;
        for dir in [&config.root, &config.state, &config.cni_conf_dir] {
            std::fs::create_dir_all(dir)
                .map_err(ContainerdError::io(format!("creating {}", dir.display())))?;
        }
        for file in [&config.config_file, &config.log_file, &config.address] {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(ContainerdError::io(format!(
                    "creating {}",
                    parent.display()
                )))?;
            }
        }
        std::fs::write(&config.config_file, rendered).map_err(ContainerdError::io(format!(
            "writing {}",
            config.config_file.display()
        )))?;
        // A containerd left running by a predecessor that was killed holds
        // the root's lock: stop it first (its containers keep running).
        stop_stale(&config.pid_file(), &config.config_file, ready_timeout)?;
        // A stale socket from a killed predecessor would look ready at once.
        match std::fs::remove_file(&config.address) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(ContainerdError::io(format!(
                    "removing stale socket {}",
                    config.address.display()
                ))(e));
            }
            _ => {}
        }

        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.log_file)
            .map_err(ContainerdError::io(format!(
                "opening {}",
                config.log_file.display()
            )))?;
        let log_start = log
            .metadata()
            .map_err(ContainerdError::io("reading log size"))?
            .len();
        let log_err = log
            .try_clone()
            .map_err(ContainerdError::io("duplicating log handle"))?;
        let child = Command::new(&binaries.containerd)
            .arg("--config")
            .arg(&config.config_file)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(ContainerdError::spawn(&binaries.containerd))?;
        std::fs::write(config.pid_file(), child.id().to_string()).map_err(ContainerdError::io(
            format!("writing {}", config.pid_file().display()),
        ))?;
        let mut containerd = Self {
            child: Some(child),
            config,
            ctr: binaries.ctr.clone(),
        };
        containerd.wait_ready(ready_timeout, log_start)?;
        Ok(containerd)
    }

    fn wait_ready(&mut self, timeout: Duration, log_start: u64) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if UnixStream::connect(&self.config.address).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child
                    .try_wait()
                    .map_err(ContainerdError::io("polling containerd"))?
            {
                self.child = None;
                return Err(ContainerdError::Exited {
                    status,
                    log_tail: log_tail(&self.config.log_file, log_start),
                });
            }
            if Instant::now() >= deadline {
                // Drop stops the half-started daemon.
                return Err(ContainerdError::NotReady {
                    timeout,
                    log_tail: log_tail(&self.config.log_file, log_start),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ContainerdConfig {
        &self.config
    }

    /// The gRPC (and CRI) socket.
    pub fn address(&self) -> &Path {
        &self.config.address
    }

    /// A `ctr` command bound to this containerd and the CRI namespace; append
    /// the subcommand and run it.
    pub fn ctr(&self) -> Command {
        let mut command = Command::new(&self.ctr);
        command
            .arg("--address")
            .arg(&self.config.address)
            .args(["--namespace", CRI_NAMESPACE]);
        command
    }

    /// Imports one OCI or Docker image tarball into the CRI namespace.
    pub fn import_image(&self, tarball: &Path) -> Result<()> {
        let mut command = self.ctr();
        command.args(["images", "import"]).arg(tarball);
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(ContainerdError::spawn(&self.ctr))?;
        if output.status.success() {
            return Ok(());
        }
        Err(ContainerdError::Ctr {
            command: format!("{command:?}"),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }

    /// Imports every `*.tar` in `dir`, in name order, as k3s does with its
    /// airgap directory. A missing directory imports nothing. Returns the
    /// imported files.
    pub fn import_dir(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ContainerdError::io(format!("listing {}", dir.display()))(e)),
        };
        let mut tarballs = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(ContainerdError::io(format!("listing {}", dir.display())))?
                .path();
            if path.extension().is_some_and(|ext| ext == "tar") && path.is_file() {
                tarballs.push(path);
            }
        }
        tarballs.sort();
        for tarball in &tarballs {
            self.import_image(tarball)?;
        }
        Ok(tarballs)
    }

    /// Stops containerd: SIGTERM, then SIGKILL once `grace` has passed.
    pub fn shutdown(mut self, grace: Duration) -> Result<ExitStatus> {
        self.stop(grace)
    }

    fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(ContainerdError::Io {
                context: "stopping containerd".to_owned(),
                source: io::Error::other("already stopped"),
            });
        };
        let pid = rustix::process::Pid::from_child(&child);
        if let Some(status) = child
            .try_wait()
            .map_err(ContainerdError::io("polling containerd"))?
        {
            return Ok(status);
        }
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .map_err(|e| ContainerdError::Signal(e.into()))?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child
                .try_wait()
                .map_err(ContainerdError::io("polling containerd"))?
            {
                return Ok(status);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        child
            .kill()
            .map_err(ContainerdError::io("killing containerd"))?;
        child
            .wait()
            .map_err(ContainerdError::io("reaping containerd"))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Nothing to report to in drop; `shutdown` returns the error.
            let _ = self.stop(DEFAULT_STOP_TIMEOUT);
        }
    }
}

/// Stops the containerd named in `pid_file` if it still runs with
/// `config_file` (a pid alone may have been reused by another process):
/// SIGTERM, then SIGKILL once `grace` has passed.
fn stop_stale(pid_file: &Path, config_file: &Path, grace: Duration) -> Result<()> {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Ok(());
    };
    let ours = |pid: rustix::process::Pid| {
        std::fs::read(format!("/proc/{}/cmdline", pid.as_raw_nonzero()))
            .map(|cmdline| {
                let wanted = config_file.as_os_str().as_encoded_bytes();
                cmdline.split(|b| *b == 0).any(|arg| arg == wanted)
            })
            .unwrap_or(false)
    };
    if !ours(pid) {
        return Ok(());
    }
    let signal = |sig| {
        rustix::process::kill_process(pid, sig).map_err(|e| ContainerdError::Signal(e.into()))
    };
    signal(rustix::process::Signal::TERM)?;
    let deadline = Instant::now() + grace;
    while ours(pid) {
        if Instant::now() >= deadline {
            signal(rustix::process::Signal::KILL)?;
            std::thread::sleep(POLL_INTERVAL * 5);
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok(())
}

/// The last few KiB that containerd logged since `from`, for error messages.
fn log_tail(path: &Path, from: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(
            from.max(len.saturating_sub(LOG_TAIL_BYTES)),
        ))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ContainerdConfig {
        ContainerdConfig::new(Path::new("/data/agent/containerd"))
    }

    #[test]
    fn paths_default_under_one_dir() {
        let c = config();
        assert_eq!(c.root, Path::new("/data/agent/containerd/root"));
        assert_eq!(c.state, Path::new("/data/agent/containerd/state"));
        assert_eq!(
            c.address,
            Path::new("/data/agent/containerd/containerd.sock")
        );
        assert_eq!(
            c.config_file,
            Path::new("/data/agent/containerd/config.toml")
        );
        assert_eq!(c.cni_bin_dir, Path::new("/usr/lib/cni"));
        assert_eq!(c.sandbox_image, PAUSE_IMAGE);
    }

    #[test]
    fn render_carries_the_settings_cri_needs_here() {
        let text = config().render().expect("render");
        let cri = r#"[plugins."io.containerd.grpc.v1.cri"]"#;
        for line in [
            "version = 2",
            r#"root = "/data/agent/containerd/root""#,
            r#"state = "/data/agent/containerd/state""#,
            "[grpc]",
            r#"  address = "/data/agent/containerd/containerd.sock""#,
            cri,
            r#"  sandbox_image = "docker.io/skiff/pause:3.10""#,
            "  restrict_oom_score_adj = true",
            r#"[plugins."io.containerd.grpc.v1.cri".containerd]"#,
            r#"  snapshotter = "overlayfs""#,
            r#"  default_runtime_name = "runc""#,
            r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]"#,
            r#"  runtime_type = "io.containerd.runc.v2""#,
            r#"[plugins."io.containerd.grpc.v1.cri".cni]"#,
            r#"  bin_dir = "/usr/lib/cni""#,
            r#"  conf_dir = "/data/agent/containerd/cni/net.d""#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in:\n{text}"
            );
        }
        // Settings sit under the right table: nothing precedes `version`
        // but the comment, and each CRI key follows its own header.
        let after = |header: &str, key: &str| {
            let h = text.find(header).expect("header");
            let k = text.find(key).expect("key");
            let next = text[h + header.len()..]
                .find("\n[")
                .map_or(text.len(), |i| h + header.len() + i);
            assert!(h < k && k < next, "{key} not under {header}");
        };
        after(cri, "restrict_oom_score_adj");
        after(cri, "sandbox_image");
        after("[grpc]", "address =");
    }

    #[test]
    fn render_escapes_strings() {
        let mut c = config();
        c.sandbox_image = "a\"b\\c\u{1}".to_owned();
        let text = c.render().expect("render");
        assert!(
            text.contains(r#"sandbox_image = "a\"b\\c\u0001""#),
            "{text}"
        );
    }

    #[test]
    fn render_rejects_non_utf8_paths() {
        use std::os::unix::ffi::OsStrExt;
        let mut c = config();
        c.root = PathBuf::from(std::ffi::OsStr::from_bytes(b"/data/\xff"));
        assert!(matches!(
            c.render(),
            Err(ContainerdError::NonUtf8Path { .. })
        ));
    }

    #[test]
    fn start_rejects_long_socket_paths_before_spawning() {
        let long = format!("/{}", "d".repeat(120));
        let err = Containerd::start(
            ContainerdConfig::new(Path::new(&long)),
            &Binaries::default(),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            matches!(err, ContainerdError::SocketPathTooLong { .. }),
            "{err}"
        );
    }

    #[test]
    fn start_reports_a_missing_binary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let binaries = Binaries {
            containerd: PathBuf::from("/nonexistent/containerd"),
            ctr: PathBuf::from("ctr"),
        };
        let err = Containerd::start(
            ContainerdConfig::new(dir.path()),
            &binaries,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            matches!(err, ContainerdError::BinaryMissing { .. }),
            "{err}"
        );
    }

    #[test]
    fn start_reports_an_early_exit_with_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let binaries = Binaries {
            // `false --config FILE` exits 1 at once, like a bad config would.
            containerd: PathBuf::from("false"),
            ctr: PathBuf::from("ctr"),
        };
        std::fs::write(dir.path().join("containerd.log"), "old run\n").expect("seed log");
        let err = Containerd::start(
            ContainerdConfig::new(dir.path()),
            &binaries,
            Duration::from_secs(5),
        )
        .unwrap_err();
        let ContainerdError::Exited { status, log_tail } = err else {
            panic!("expected Exited, got {err}");
        };
        assert_eq!(status.code(), Some(1));
        assert!(!log_tail.contains("old run"), "only this run's log");
        let written = std::fs::read_to_string(dir.path().join("config.toml")).expect("config");
        assert!(written.contains("restrict_oom_score_adj = true"));
    }

    #[test]
    fn import_dir_of_a_missing_dir_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let containerd = Containerd {
            child: None,
            config: ContainerdConfig::new(dir.path()),
            ctr: PathBuf::from("ctr"),
        };
        let imported = containerd
            .import_dir(&dir.path().join("absent"))
            .expect("import");
        assert!(imported.is_empty());
    }
}
