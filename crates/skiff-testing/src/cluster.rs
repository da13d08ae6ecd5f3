//! A `skiff server` process on a free port with its own data directory.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::process::{self, LineWatcher, TiedCommand};
use crate::tools::tools;

/// The node name of clusters started with an agent.
pub const NODE_NAME: &str = "skiff-test-node";

/// How long a server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How many ports to try when another process grabs the free port first.
const PORT_ATTEMPTS: usize = 5;
/// Prefix of data directories, which carry the owning test process's pid so
/// that leftovers of dead test runs can be recognised and removed.
const DATA_DIR_PREFIX: &str = "skiff-test-";

/// The cluster shared by every test of this test binary, started on first use.
/// `skiff_bin` is `env!("CARGO_BIN_EXE_skiff")` of the calling test crate.
pub fn shared(skiff_bin: &str) -> &'static TestCluster {
    static SHARED: OnceLock<TestCluster> = OnceLock::new();
    SHARED.get_or_init(|| TestCluster::start(skiff_bin))
}

/// Like [`shared`], but the cluster runs the local node agent (a private
/// containerd and real pods). Its pods outlive the test binary, because the
/// static is never dropped; `scripts/test.sh` and the next start remove them
/// with `skiff killall`.
pub fn shared_with_agent(skiff_bin: &str) -> &'static TestCluster {
    static SHARED: OnceLock<TestCluster> = OnceLock::new();
    SHARED.get_or_init(|| TestCluster::start_with_agent(skiff_bin))
}

/// A running `skiff server` with a temporary data directory. The process is
/// killed and the directory removed on drop (and the process also dies with
/// the test binary, see [`TiedCommand`]).
pub struct TestCluster {
    bin: PathBuf,
    /// Always `Some` until dropped; taken to keep the directory.
    data_dir: Option<tempfile::TempDir>,
    port: u16,
    child: Option<Child>,
    namespaces: AtomicU32,
    /// Extra `skiff server` flags, given on every (re)start.
    extra_args: Vec<String>,
    /// The node agent's ports, when the cluster runs an agent.
    agent: Option<AgentPorts>,
}

/// Ports of the node agent and the node-level services of a cluster with an
/// agent, chosen free so that clusters cannot collide.
#[derive(Debug, Clone, Copy)]
pub struct AgentPorts {
    /// The kubelet API (HTTPS).
    pub kubelet: u16,
    /// The ingress controller's HTTP port.
    pub ingress_http: u16,
    /// The ingress controller's HTTPS port.
    pub ingress_https: u16,
}

impl TestCluster {
    /// Start `skiff server` from the binary at `skiff_bin` and wait until it
    /// answers `/readyz`. Panics, with the server's log, if it does not.
    pub fn start(skiff_bin: impl Into<PathBuf>) -> TestCluster {
        Self::start_with_args(skiff_bin, &[])
    }

    /// [`start`](Self::start) with extra `skiff server` flags, kept for restarts
    /// (e.g. `--compaction-interval 1s`).
    pub fn start_with_args(skiff_bin: impl Into<PathBuf>, extra_args: &[&str]) -> TestCluster {
        Self::start_inner(skiff_bin.into(), extra_args, false)
    }

    /// A cluster whose server also runs the local node agent, so pods really
    /// run. The node is named [`NODE_NAME`]; the agent gets its own bridge
    /// and kubelet port.
    pub fn start_with_agent(skiff_bin: impl Into<PathBuf>) -> TestCluster {
        Self::start_inner(skiff_bin.into(), &[], true)
    }

    fn start_inner(bin: PathBuf, extra_args: &[&str], agent: bool) -> TestCluster {
        remove_stale_data_dirs(&bin);
        let data_dir = tempfile::Builder::new()
            .prefix(&format!("{DATA_DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("cannot create a temporary data directory");
        let mut cluster = TestCluster {
            bin,
            data_dir: Some(data_dir),
            port: 0,
            child: None,
            namespaces: AtomicU32::new(0),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            agent: agent.then(|| AgentPorts {
                kubelet: free_port(),
                ingress_http: free_port(),
                ingress_https: free_port(),
            }),
        };
        cluster.launch();
        cluster
    }

    /// The data directory (`tls/`, `db/`, `kubeconfig`, `server.log`, ...).
    pub fn data_dir(&self) -> &Path {
        self.data_dir
            .as_ref()
            .map(tempfile::TempDir::path)
            .expect("the data dir lives as long as the cluster")
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("kubeconfig")
    }

    /// The port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The agent's ports, for a cluster started with an agent.
    pub fn agent_ports(&self) -> Option<AgentPorts> {
        self.agent
    }

    /// The server's URL, e.g. `https://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Everything the server logged so far (all its runs).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A command for `program` (kubectl, helm, python, ...) with `KUBECONFIG`
    /// pointing at this cluster.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env("KUBECONFIG", self.kubeconfig());
        command
    }

    /// Run kubectl with `args` (within [`crate::DEFAULT_TIMEOUT`]).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(args, None)
    }

    /// Run kubectl with `args` and `stdin` as its input (for `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.kubectl_with(args, Some(stdin.as_bytes()))
    }

    /// Run kubectl, assert it succeeded and return its stdout. On failure,
    /// panics with kubectl's stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        expect_success(args, self.kubectl(args))
    }

    /// `kubectl <args> -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = args.to_vec();
        full.extend(["-o", "json"]);
        let out = self.kubectl_ok(&full);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl {full:?} printed bad JSON ({e}):\n{out}"))
    }

    /// [`kubectl_ok`](Self::kubectl_ok) with `stdin` as kubectl's input.
    pub fn kubectl_stdin_ok(&self, args: &[&str], stdin: &str) -> String {
        expect_success(args, self.kubectl_stdin(args, stdin))
    }

    /// Run kubectl, assert it failed and return its stderr.
    pub fn kubectl_err(&self, args: &[&str]) -> String {
        expect_failure(args, self.kubectl(args))
    }

    /// [`kubectl_err`](Self::kubectl_err) with `stdin` as kubectl's input.
    pub fn kubectl_stdin_err(&self, args: &[&str], stdin: &str) -> String {
        expect_failure(args, self.kubectl_stdin(args, stdin))
    }

    /// Start a long-running kubectl (e.g. `get -w`) whose output lines can be
    /// awaited; it is killed when the returned watcher is dropped.
    pub fn kubectl_watch(&self, args: &[&str]) -> LineWatcher {
        let mut command = self.command(&tools().kubectl);
        command.args(args);
        LineWatcher::spawn(command)
    }

    fn kubectl_with(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut command = self.command(&tools().kubectl);
        command.args(args);
        process::output_with_timeout(command, stdin, crate::DEFAULT_TIMEOUT)
    }

    /// Create a namespace with a name unique in this cluster, starting with
    /// `prefix`; it is deleted (without waiting) when the guard is dropped.
    /// Like upstream's e2e framework, it returns once the controllers have
    /// populated it (the `default` ServiceAccount and `kube-root-ca.crt`),
    /// so tests see the namespace as users do.
    pub fn namespace(&self, prefix: &str) -> TestNamespace<'_> {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{n}");
        self.kubectl_ok(&["create", "namespace", &name]);
        crate::eventually(
            "the namespace's default ServiceAccount and kube-root-ca.crt",
            NAMESPACE_READY_TIMEOUT,
            || {
                self.kubectl(&[
                    "get",
                    "serviceaccount/default",
                    "configmap/kube-root-ca.crt",
                    "-n",
                    &name,
                ])
                .status
                .success()
            },
        );
        TestNamespace {
            cluster: self,
            name,
        }
    }

    /// Stop the server gracefully (SIGTERM) if it is running, then start it
    /// again on the same data directory and wait until it is ready.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::signal(&child, Signal::TERM);
            if !process::wait_timeout(&mut child, STOP_TIMEOUT) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "skiff server did not exit within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
        }
        self.launch();
    }

    /// Kill the server with SIGKILL, as a crash would. [`restart`](Self::restart)
    /// brings it back.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir().join("server.log")
    }

    /// Start the server, on the previous port if it had one, and wait for it to
    /// be ready. A server that exits early (another process took the port) is
    /// retried on a new port.
    fn launch(&mut self) {
        for attempt in 0..PORT_ATTEMPTS {
            if self.port == 0 || attempt > 0 {
                self.port = free_port();
            }
            let mut child = self.spawn();
            if let Ok(()) = self.wait_ready(&mut child) {
                self.child = Some(child);
                return;
            }
        }
        panic!(
            "skiff server exited early {PORT_ATTEMPTS} times; log:\n{}",
            self.log()
        );
    }

    fn spawn(&self) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("cannot open the server log");
        let err_log = log.try_clone().expect("cannot duplicate the log handle");
        let mut command = TiedCommand::new(&self.bin);
        command
            .arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--bind-address")
            .arg(self.bind_address())
            .arg("--https-port")
            .arg(self.port.to_string())
            .args(&self.extra_args)
            .args(self.agent_args())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()))
    }

    /// Loopback, unless the cluster runs an agent: then every address, so
    /// that the node's IP is a host address pods can reach (the API server
    /// behind the `kubernetes` Service, the cluster DNS, the kubelet).
    fn bind_address(&self) -> &'static str {
        match self.agent {
            None => "127.0.0.1",
            Some(_) => "0.0.0.0",
        }
    }

    /// Flags that turn the node agent off, or give it names and ports of its
    /// own so it cannot collide with another cluster on this machine.
    fn agent_args(&self) -> Vec<String> {
        match self.agent {
            None => vec!["--disable-agent".into()],
            Some(ports) => vec![
                "--node-name".into(),
                NODE_NAME.into(),
                "--kubelet-port".into(),
                ports.kubelet.to_string(),
                "--ingress-http-port".into(),
                ports.ingress_http.to_string(),
                "--ingress-https-port".into(),
                ports.ingress_https.to_string(),
                "--bridge".into(),
                format!("skt{}", std::process::id() % 100_000),
            ],
        }
    }

    /// Poll `/readyz` until it answers 200. `Err(Exited)` if the process exited
    /// first; panics (killing it) on timeout.
    fn wait_ready(&self, child: &mut Child) -> Result<(), Exited> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return Err(Exited);
            }
            let last = match self.readyz() {
                Ok(200) => return Ok(()),
                Ok(status) => format!("HTTP {status}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "skiff server not ready within {READY_TIMEOUT:?} (last: {last}); log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET /readyz over TLS, trusting only the cluster CA and presenting the
    /// admin certificate. Returns the HTTP status.
    fn readyz(&self) -> Result<u16, String> {
        let tls_dir = self.data_dir().join("tls");
        let config = client_config(&tls_dir)?;
        let server_name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        let mut conn = rustls::ClientConnection::new(config, server_name)
            .map_err(|e| format!("TLS client: {e}"))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut stream = rustls::Stream::new(&mut conn, &mut sock);
        let request = format!(
            "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("request: {e}"))?;
        let mut head = [0u8; 12];
        stream
            .read_exact(&mut head)
            .map_err(|e| format!("response: {e}"))?;
        parse_status(&head).ok_or_else(|| {
            format!(
                "not an HTTP/1.1 response: {:?}",
                String::from_utf8_lossy(&head)
            )
        })
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.kill9();
        if self.agent.is_some() && !killall(&self.bin, self.data_dir()) {
            // Keep the directory (and its pods' state) for the next start's
            // cleanup to retry, rather than orphaning running containers.
            if let Some(dir) = self.data_dir.take() {
                let _ = dir.keep();
            }
        }
    }
}

/// Stops every pod, the containerd and the mounts of the agent whose data
/// dir is `data_dir` (`skiff killall`).
fn killall(bin: &Path, data_dir: &Path) -> bool {
    let mut command = Command::new(bin);
    command.arg("killall").arg("--data-dir").arg(data_dir);
    // Not `output_with_timeout`: this runs in `Drop`, where a panic aborts.
    match command.stdin(Stdio::null()).output() {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            eprintln!(
                "skiff killall {} failed: {}",
                data_dir.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            false
        }
        Err(e) => {
            eprintln!("skiff killall {}: {e}", data_dir.display());
            false
        }
    }
}

/// The server process exited before it became ready.
struct Exited;

/// A namespace owned by one test. Deleted, without waiting, on drop.
pub struct TestNamespace<'a> {
    cluster: &'a TestCluster,
    name: String,
}

/// How long a new namespace may take to be populated; a restarted server's
/// controllers wait up to a lease duration (15 s) for leadership first.
const NAMESPACE_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

impl TestNamespace<'_> {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace<'_> {
    fn drop(&mut self) {
        // Best effort: a failed deletion must not turn a passing test into a
        // panic during unwinding of a failing one.
        let _ = self
            .cluster
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

fn expect_success(args: &[&str], output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kubectl {} failed ({}):\nstderr:\n{}\nstdout:\n{stdout}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
    stdout
}

fn expect_failure(args: &[&str], output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "kubectl {} succeeded but should have failed; stdout:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
    );
    stderr
}

/// The status code of an `HTTP/1.x NNN` status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.")?;
    let code = rest.get(2..5)?;
    code.parse().ok()
}

fn client_config(tls_dir: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let read =
        |name: &str| fs::read(tls_dir.join(name)).map_err(|e| format!("reading {name}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(&read("ca.crt")?).map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    let cert = CertificateDer::from_pem_slice(&read("admin.crt")?).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(&read("admin.key")?).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A port that was free a moment ago: bind port 0 and release it. Another
/// process may take it before the server binds; `launch` retries then.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port")
}

/// Remove data directories left by test processes that no longer exist (the
/// shared cluster lives in a static, whose destructor never runs), stopping
/// the pods of their agents first.
fn remove_stale_data_dirs(bin: &Path) {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DATA_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            // Pods of a dead agent are stopped first; a directory whose
            // pods could not be stopped stays, so that nothing is orphaned.
            if entry.path().join("agent").exists() && !killall(bin, &entry.path()) {
                continue;
            }
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 "), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 "), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-Open"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2x0 "), None);
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn stale_dirs_of_dead_processes_are_removed() {
        // pid 0 never names a live test process (no /proc/0).
        let stale = std::env::temp_dir().join(format!("{DATA_DIR_PREFIX}0-unit"));
        let live =
            std::env::temp_dir().join(format!("{DATA_DIR_PREFIX}{}-unit", std::process::id()));
        fs::create_dir_all(&stale).unwrap();
        fs::create_dir_all(&live).unwrap();
        remove_stale_data_dirs(Path::new("/nonexistent/skiff"));
        assert!(!stale.exists());
        assert!(live.exists());
        fs::remove_dir_all(&live).unwrap();
    }
}
