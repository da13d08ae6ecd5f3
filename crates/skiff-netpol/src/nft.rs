//! The seam to the host: something that runs an `nft -f` script.
//!
//! [`NftCommand`] runs the real binary (optionally inside a named network
//! namespace, through `ip netns exec`, which is how the tests keep their
//! rules off the host); [`RecordingNft`] keeps the scripts in memory.

use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Why an `nft` run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftError {
    /// The command could not be started (missing binary, no permission) or
    /// its input could not be written. Not retryable: the host is wrong.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// `nft` refused the script (or the kernel did). Retryable: the next
    /// script may differ, and a busy kernel may accept the same one later.
    #[error("{command} exited with {status}: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

impl NftError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, NftError::Failed { .. })
    }
}

/// Applies nftables scripts.
pub trait Nft: Send + Sync + 'static {
    /// Runs `script` as one `nft -f` transaction: all of it or none of it.
    fn apply(&self, script: &str) -> impl Future<Output = Result<(), NftError>> + Send;
}

/// The real `nft` binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftCommand {
    nft: PathBuf,
    netns: Option<String>,
}

impl NftCommand {
    /// Runs `nft` (a path, or a name looked up in `PATH`), inside network
    /// namespace `netns` (a name `ip netns` knows) when given.
    pub fn new(nft: impl Into<PathBuf>, netns: Option<String>) -> NftCommand {
        NftCommand {
            nft: nft.into(),
            netns,
        }
    }

    /// Checks `script` with `nft -c -f -` without changing anything.
    pub async fn check(&self, script: &str) -> Result<(), NftError> {
        self.run(&["-c", "-f", "-"], Some(script)).await.map(drop)
    }

    /// Runs `nft <args>`, feeding `stdin` if given, and returns its stdout.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let mut command = match &self.netns {
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]).arg(&self.nft);
                c
            }
            None => Command::new(&self.nft),
        };
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let line = self.command_line(args);
        let spawn_error = |source| NftError::Spawn {
            command: line.clone(),
            source,
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        let pipe = child.stdin.take();
        // Feed stdin while collecting the output, so neither side can stall
        // on a full pipe. Dropping the pipe closes it: nft reads to the end.
        let feed = async move {
            match (stdin, pipe) {
                (Some(text), Some(mut pipe)) => pipe.write_all(text.as_bytes()).await,
                _ => Ok(()),
            }
        };
        let (fed, output) = tokio::join!(feed, child.wait_with_output());
        let output = output.map_err(spawn_error)?;
        // A refusal explains more than the broken pipe it may have caused.
        if !output.status.success() {
            return Err(NftError::Failed {
                command: line,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        fed.map_err(spawn_error)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn command_line(&self, args: &[&str]) -> String {
        let nft = format!("{} {}", self.nft.display(), args.join(" "));
        match &self.netns {
            Some(netns) => format!("ip netns exec {netns} {nft}"),
            None => nft,
        }
    }
}

impl Nft for NftCommand {
    async fn apply(&self, script: &str) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(script)).await.map(drop)
    }
}

#[derive(Debug, Default)]
struct Recorded {
    applied: Vec<String>,
    failures_left: usize,
}

/// A fake that records every script it is given. Clones share the record.
#[derive(Debug, Clone, Default)]
pub struct RecordingNft {
    inner: Arc<Mutex<Recorded>>,
}

impl RecordingNft {
    /// A fake that accepts everything.
    pub fn new() -> RecordingNft {
        RecordingNft::default()
    }

    /// Makes the next `count` applies fail (retryably), unrecorded.
    pub fn fail_next(&self, count: usize) {
        self.lock().failures_left = count;
    }

    /// The scripts applied so far, oldest first.
    pub fn applied(&self) -> Vec<String> {
        self.lock().applied.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Nft for RecordingNft {
    async fn apply(&self, script: &str) -> Result<(), NftError> {
        let mut recorded = self.lock();
        if recorded.failures_left > 0 {
            recorded.failures_left -= 1;
            return Err(NftError::Failed {
                command: "fake nft -f -".into(),
                status: ExitStatus::from_raw(1 << 8),
                stderr: "injected failure".into(),
            });
        }
        recorded.applied.push(script.to_string());
        Ok(())
    }
}
