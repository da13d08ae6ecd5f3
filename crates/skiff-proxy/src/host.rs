//! The proxy's only contact with the host: loading nft scripts and setting
//! sysctls, behind [`Host`] so that tests record instead.
//!
//! [`SystemHost`] runs `nft -f -` (script on stdin) and writes
//! `/proc/sys`, optionally inside a named network namespace through
//! `ip netns exec`, which is how the tests and the benchmark keep the host's
//! own tables untouched.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Loading rules and setting kernel parameters.
///
/// Both calls block (they run a process or write a file); async callers run
/// them on the blocking pool.
pub trait Host: Send + Sync {
    /// Applies `script` with `nft -f`, as one transaction.
    fn nft(&self, script: &str) -> Result<(), HostError>;
    /// Sets the sysctl `key` (dotted, `net.ipv4.ip_forward`) to `value`.
    fn set_sysctl(&self, key: &str, value: &str) -> Result<(), HostError>;
}

/// A host command or file write that failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The program could not be started or fed.
    #[error("running {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("{program} exited with {status}: {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (nft names the offending line).
        stderr: String,
    },
    /// A `/proc/sys` file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The real host: `nft` and `/proc/sys`, in this network namespace or a named
/// one.
#[derive(Debug, Clone, Default)]
pub struct SystemHost {
    netns: Option<String>,
}

impl SystemHost {
    /// Acts in the named network namespace, or in the caller's with `None`.
    pub fn new(netns: Option<String>) -> Self {
        Self { netns }
    }

    /// Checks `script` with `nft -c -f` without applying it (the kernel
    /// validates the transaction, then aborts it).
    pub fn check(&self, script: &str) -> Result<(), HostError> {
        self.run(&["nft", "-c", "-f", "-"], Some(script))
    }

    /// A command line, prefixed with `ip netns exec NS` when in a namespace.
    fn command(&self, argv: &[&str]) -> Command {
        let mut command = match &self.netns {
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]).args(argv);
                c
            }
            None => {
                let mut c = Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        command
    }

    fn run(&self, argv: &[&str], stdin: Option<&str>) -> Result<(), HostError> {
        let program = argv.join(" ");
        let spawn = |source| HostError::Spawn {
            program: program.clone(),
            source,
        };
        let mut command = self.command(argv);
        command.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = command.spawn().map_err(spawn)?;
        let pipe = child.stdin.take();
        // Feed stdin from another thread while stderr is drained here: a
        // script with many errors fills the stderr pipe before nft has read
        // all of its input. A write that fails because nft exited early is
        // reported through the exit status instead.
        let output = std::thread::scope(|scope| {
            if let (Some(input), Some(mut pipe)) = (stdin, pipe) {
                scope.spawn(move || {
                    let _ = pipe.write_all(input.as_bytes());
                });
            }
            child.wait_with_output()
        })
        .map_err(spawn)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(HostError::Failed {
                program,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}

impl Host for SystemHost {
    fn nft(&self, script: &str) -> Result<(), HostError> {
        self.run(&["nft", "-f", "-"], Some(script))
    }

    fn set_sysctl(&self, key: &str, value: &str) -> Result<(), HostError> {
        if self.netns.is_some() {
            // /proc/sys/net shows the namespace of the process that opens it.
            return self.run(&["sysctl", "-q", "-w", &format!("{key}={value}")], None);
        }
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|source| HostError::Write { path, source })
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A [`Host`] that records what it is asked and fails on request.

    use std::sync::Mutex;

    use super::{Host, HostError};

    /// Records scripts and sysctls; `fail_next` makes the next nft calls fail.
    #[derive(Debug, Default)]
    pub struct RecordingHost {
        pub scripts: Mutex<Vec<String>>,
        pub sysctls: Mutex<Vec<(String, String)>>,
        pub fail_next: Mutex<usize>,
    }

    impl RecordingHost {
        pub fn scripts(&self) -> Vec<String> {
            self.scripts.lock().unwrap().clone()
        }
    }

    impl Host for RecordingHost {
        fn nft(&self, script: &str) -> Result<(), HostError> {
            let mut fail = self.fail_next.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(HostError::Spawn {
                    program: "nft".into(),
                    source: std::io::Error::other("injected failure"),
                });
            }
            self.scripts.lock().unwrap().push(script.to_owned());
            Ok(())
        }

        fn set_sysctl(&self, key: &str, value: &str) -> Result<(), HostError> {
            self.sysctls
                .lock()
                .unwrap()
                .push((key.to_owned(), value.to_owned()));
            Ok(())
        }
    }
}
