//! The `skiff server` under test: the real release binary, in a fresh data
//! directory, bound to loopback on a free port, killed when dropped.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

use crate::http::{Connector, JSON};
use crate::sys::{self, Killed};

/// How many fresh ports to try when the server exits during start.
const START_ATTEMPTS: u32 = 3;
/// How long the server may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `skiff server`.
pub struct SkiffServer {
    process: Killed,
    data_dir: TempDir,
    /// Time from spawning the process to the first successful `/readyz`.
    pub startup: Duration,
    connector: Connector,
}

impl SkiffServer {
    /// Start `binary` with a new data directory under `base` and wait until it
    /// is ready.
    pub async fn start(binary: &Path, base: &Path) -> anyhow::Result<SkiffServer> {
        SkiffServer::start_with_args(binary, base, &[]).await
    }

    /// [`start`](Self::start) with more `skiff server` flags.
    pub async fn start_with_args(
        binary: &Path,
        base: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<SkiffServer> {
        if !binary.is_file() {
            bail!(
                "no skiff binary at {} (build it with `cargo build --release -p skiff`, or pass --skiff)",
                binary.display()
            );
        }
        let mut attempt = 1;
        loop {
            match SkiffServer::launch(binary, base, extra_args).await {
                Ok(server) => return Ok(server),
                // Another process may take the free port before the server
                // binds it: then the server exits, and a new port is tried.
                Err(Launch::Exited(e)) if attempt < START_ATTEMPTS => {
                    eprintln!("skiff server exited during start, retrying: {e:#}");
                    attempt += 1;
                }
                Err(Launch::Exited(e) | Launch::Failed(e)) => return Err(e),
            }
        }
    }

    async fn launch(
        binary: &Path,
        base: &Path,
        extra_args: &[&str],
    ) -> Result<SkiffServer, Launch> {
        let data_dir = tempfile::Builder::new()
            .prefix("skiff-bench-")
            .tempdir_in(base)
            .with_context(|| format!("creating a data directory in {}", base.display()))?;
        let port = sys::free_port()?;
        let log =
            File::create(data_dir.path().join("server.log")).context("creating the server log")?;
        let started = Instant::now();
        let child = Command::new(binary)
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--bind-address", "127.0.0.1", "--https-port"])
            .arg(port.to_string())
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("opening the server log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut process = Killed(child);
        let connector = wait_ready(&mut process.0, data_dir.path(), started).await?;
        Ok(SkiffServer {
            process,
            data_dir,
            startup: started.elapsed(),
            connector,
        })
    }

    /// The process id, for reading its memory.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// A connector for the admin user.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(self.data_dir.path())
    }
}

/// Why a launch failed: the process exited (worth another port), or anything
/// else.
enum Launch {
    Exited(anyhow::Error),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Launch {
    fn from(e: anyhow::Error) -> Launch {
        Launch::Failed(e)
    }
}

/// Wait for the kubeconfig, then for `/readyz` to answer 200 through it.
async fn wait_ready(
    child: &mut Child,
    data_dir: &Path,
    started: Instant,
) -> Result<Connector, Launch> {
    let kubeconfig = data_dir.join("kubeconfig");
    let mut last_error = None;
    while started.elapsed() < READY_TIMEOUT {
        if let Some(status) = child.try_wait().context("waiting for skiff server")? {
            return Err(Launch::Exited(anyhow!(
                "skiff server exited with {status}:\n{}",
                log_tail(data_dir)
            )));
        }
        if kubeconfig.is_file() {
            match probe(&kubeconfig).await {
                Ok(connector) => return Ok(connector),
                Err(e) => last_error = Some(e),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(Launch::Failed(anyhow!(
        "skiff server not ready after {READY_TIMEOUT:?} (last error: {}):\n{}",
        last_error.map_or_else(|| "no kubeconfig written".into(), |e| format!("{e:#}")),
        log_tail(data_dir)
    )))
}

/// The last lines of the server's log.
fn log_tail(data_dir: &Path) -> String {
    let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A connector built from the kubeconfig, once `/readyz` answers through it.
async fn probe(kubeconfig: &Path) -> anyhow::Result<Connector> {
    let connector = Connector::from_kubeconfig(kubeconfig)?;
    let conn = connector.connect().await?;
    conn.get("/readyz", JSON).await?;
    Ok(connector)
}
