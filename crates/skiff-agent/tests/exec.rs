//! `kubectl exec` / `kubectl attach` end to end on one node: the agent's
//! streaming router, served in process, in front of a real private
//! containerd running busybox containers through CRI. A WebSocket client
//! speaks the channel protocol to the router as kubectl does.
//!
//! Needs root and the packages from `scripts/setup.sh`; it fails (never
//! skips) when they are missing, because setup installs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use skiff_agent::containerd::{Binaries, Containerd, ContainerdConfig};
use skiff_agent::images::{BUSYBOX_IMAGE, HostTools, write_airgap_images};
use skiff_agent::locate::{LocatedContainer, LocatedPod, PodLocator};
use skiff_cri::{CriClient, RuntimeService, v1};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// Every session of the test must end well within this.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);

/// Owns the temp dir and containerd. On drop (also after a failed
/// assertion) it force-removes every container through containerd, stops
/// containerd, then kills its shims and unmounts what is left.
struct Node {
    containerd: Option<Containerd>,
    dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(containerd) = self.containerd.take() {
            let ids = containerd
                .ctr()
                .args(["containers", "ls", "--quiet"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in ids.lines() {
                let mut task = containerd.ctr();
                task.args(["task", "delete", "--force", id]);
                run_for_cleanup(task);
                let mut container = containerd.ctr();
                container.args(["containers", "delete", id]);
                run_for_cleanup(container);
            }
            if let Err(e) = containerd.shutdown(Duration::from_secs(10)) {
                eprintln!("stopping containerd: {e}");
            }
        }
        kill_shims(self.dir.path());
        unmount_under(self.dir.path());
    }
}

fn run_for_cleanup(mut command: Command) {
    let Ok(mut child) = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn() else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILLs the shims of this run: their command line names our socket.
fn kill_shims(dir: &Path) {
    let dir = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .filter(|pid| *pid != std::process::id() as i32)
        else {
            continue;
        };
        let ours = std::fs::read(entry.path().join("cmdline"))
            .is_ok_and(|cmdline| cmdline.windows(dir.len()).any(|w| w == dir));
        if ours && let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH);
    }
}

/// One pod with fixed containers, as the pod manager would report it.
struct OnePod(LocatedPod);

#[async_trait]
impl PodLocator for OnePod {
    async fn pod(&self, namespace: &str, name: &str) -> Option<LocatedPod> {
        (namespace == "default" && name == "web").then(|| self.0.clone())
    }

    async fn container_running(&self, container_id: &str) -> bool {
        self.0
            .containers
            .iter()
            .any(|c| c.running && c.id.as_deref() == Some(container_id))
    }
}

/// What a client saw in one session.
#[derive(Debug, Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The channel-3 payload, parsed.
    status: Option<Value>,
    close_code: Option<u16>,
}

impl Outcome {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn status_field(&self, field: &str) -> Value {
        self.status
            .as_ref()
            .map_or(Value::Null, |s| s[field].clone())
    }
}

/// A WebSocket client for `path` (with query) speaking `protocol`.
async fn open(
    addr: std::net::SocketAddr,
    path: &str,
    protocol: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tungstenite::Error,
> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        protocol.parse().expect("header value"),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().expect("ascii")),
        Some(protocol)
    );
    Ok(socket)
}

/// Runs one session: sends `input` (binary frames) once the session is up,
/// then reads until the server closes.
async fn session(
    addr: std::net::SocketAddr,
    path: &str,
    protocol: &str,
    input: Vec<Vec<u8>>,
) -> Outcome {
    let socket = open(addr, path, protocol).await.expect("upgrade");
    let (mut tx, mut rx) = socket.split();
    let sender = tokio::spawn(async move {
        for frame in input {
            tx.send(Message::Binary(frame.into())).await.expect("send");
        }
        tx
    });
    let mut outcome = Outcome::default();
    let read = async {
        while let Some(message) = rx.next().await {
            match message.expect("frame") {
                Message::Binary(data) => {
                    let (channel, payload) = data.split_first().expect("channel byte");
                    match channel {
                        1 => outcome.stdout.extend_from_slice(payload),
                        2 => outcome.stderr.extend_from_slice(payload),
                        3 => {
                            outcome.status =
                                Some(serde_json::from_slice(payload).expect("status json"));
                        }
                        other => panic!("unexpected channel {other}"),
                    }
                }
                Message::Close(frame) => {
                    outcome.close_code = frame.map(|f| u16::from(f.code));
                    break;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(SESSION_TIMEOUT, read)
        .await
        .expect("session ended in time");
    let _ = sender.await;
    outcome
}

fn stdin(data: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(data);
    frame
}

const CLOSE_STDIN: [u8; 2] = [255, 0];

#[test]
fn exec_and_attach_through_the_router_against_containerd() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root: it runs containerd and containers"
    );
    let dir = tempfile::Builder::new()
        .prefix(&format!("skiff-exec-{}-", std::process::id()))
        .tempdir()
        .expect("tempdir");
    let mut node = Node {
        containerd: None,
        dir,
    };
    let images = node.dir.path().join("images");
    write_airgap_images(&images, &HostTools::default()).expect("build airgap images");
    let config = ContainerdConfig::new(&node.dir.path().join("containerd"));
    node.containerd = Some(
        Containerd::start(config, &Binaries::default(), Duration::from_secs(30))
            .expect("start containerd"),
    );
    let containerd = node.containerd.as_ref().expect("started");
    containerd.import_dir(&images).expect("import images");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(scenarios(
        containerd.address(),
        &node.dir.path().join("pod-logs"),
    ));
}

async fn scenarios(socket: &Path, log_dir: &Path) {
    let cri = CriClient::connect(socket).await.expect("CRI connect");
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let sandbox_config = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: "web".into(),
            uid: format!("exec-test-{}-{nonce}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: v1::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox_id = cri
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .pod_sandbox_id;

    let start = |name: &'static str, command: &[&str], stdin: bool| {
        let cri = cri.clone();
        let sandbox_id = sandbox_id.clone();
        let sandbox_config = sandbox_config.clone();
        let command: Vec<String> = command.iter().map(|s| (*s).to_owned()).collect();
        async move {
            let id = cri
                .create_container(v1::CreateContainerRequest {
                    pod_sandbox_id: sandbox_id,
                    config: Some(v1::ContainerConfig {
                        metadata: Some(v1::ContainerMetadata {
                            name: name.into(),
                            attempt: 0,
                        }),
                        image: Some(v1::ImageSpec {
                            image: BUSYBOX_IMAGE.into(),
                            ..Default::default()
                        }),
                        command,
                        stdin,
                        stdin_once: stdin,
                        log_path: format!("{name}/0.log"),
                        ..Default::default()
                    }),
                    sandbox_config: Some(sandbox_config),
                })
                .await
                .expect("CreateContainer")
                .container_id;
            cri.start_container(v1::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer");
            LocatedContainer {
                name: name.into(),
                id: Some(id),
                running: true,
                log_path: None,
                previous_log_path: None,
            }
        }
    };
    let app = start("app", &["sleep", "3600"], false).await;
    let app_id = app.id.clone().expect("created");
    let echo = start("echo", &["cat"], true).await;
    let pod = LocatedPod {
        uid: "uid-web".into(),
        sandbox_id: sandbox_id.clone(),
        netns_path: None,
        pod_ip: None,
        containers: vec![
            app,
            echo,
            LocatedContainer {
                name: "never-started".into(),
                id: None,
                running: false,
                log_path: None,
                previous_log_path: None,
            },
        ],
    };
    let router = skiff_agent::streaming::router(Arc::new(OnePod(pod)), Arc::new(cri.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });

    const V5: &str = "v5.channel.k8s.io";

    // Output on both channels and a non-zero exit code.
    let out = session(
        addr,
        "/exec/default/web/app?command=sh&command=-c&command=echo%20out%3B%20echo%20err%20%3E%262%3B%20exit%203&stdout=1&stderr=1",
        V5,
        Vec::new(),
    )
    .await;
    assert_eq!(out.stdout(), "out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status_field("status"), "Failure", "{:?}", out.status);
    assert_eq!(out.status_field("reason"), "NonZeroExitCode");
    assert_eq!(
        out.status_field("details")["causes"][0],
        serde_json::json!({"reason": "ExitCode", "message": "3"})
    );
    assert_eq!(out.close_code, Some(1000));

    // stdin piped to cat, ended by v5's close of channel 0.
    let out = session(
        addr,
        "/exec/default/web/uid-web/app?command=cat&stdin=true&stdout=true&stderr=true",
        V5,
        vec![stdin(b"hi\n"), stdin(b"there\n"), CLOSE_STDIN.to_vec()],
    )
    .await;
    assert_eq!(out.stdout(), "hi\nthere\n");
    assert_eq!(
        out.status,
        Some(serde_json::json!({"metadata": {}, "status": "Success"}))
    );
    assert_eq!(out.close_code, Some(1000));

    // A large input flows through cat while its output flows back.
    let big: Vec<u8> = (0..512 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let mut frames: Vec<Vec<u8>> = big.chunks(60_000).map(stdin).collect();
    frames.push(CLOSE_STDIN.to_vec());
    let out = session(
        addr,
        "/exec/default/web/app?command=cat&stdin=1&stdout=1",
        V5,
        frames,
    )
    .await;
    assert_eq!(out.stdout.len(), big.len());
    assert!(out.stdout == big, "cat returned different bytes");
    assert_eq!(out.status_field("status"), "Success");

    // A client that goes away mid-session ends the command's input: the
    // abandoned `cat` exits. (The pod shares one pid namespace, so the
    // `echo` container's cat is counted too.)
    let count_cats = || {
        let cri = cri.clone();
        let app_id = app_id.clone();
        async move {
            let ps = cri
                .exec_sync(
                    v1::ExecSyncRequest {
                        container_id: app_id,
                        cmd: vec!["ps".into(), "-o".into(), "comm".into()],
                        timeout: 5,
                    },
                    Duration::from_secs(10),
                )
                .await
                .expect("ps");
            String::from_utf8_lossy(&ps.stdout)
                .lines()
                .filter(|l| l.trim() == "cat")
                .count()
        }
    };
    let cats = count_cats().await;
    let socket = open(
        addr,
        "/exec/default/web/app?command=cat&stdin=1&stdout=1",
        V5,
    )
    .await
    .expect("upgrade");
    let (mut tx, mut rx) = socket.split();
    tx.send(Message::Binary(stdin(b"bye\n").into()))
        .await
        .expect("send");
    while let Some(Ok(message)) = rx.next().await {
        if matches!(&message, Message::Binary(data) if data.ends_with(b"bye\n")) {
            break;
        }
    }
    assert_eq!(count_cats().await, cats + 1);
    drop((tx, rx));
    let deadline = Instant::now() + SESSION_TIMEOUT;
    while count_cats().await > cats {
        assert!(Instant::now() < deadline, "the abandoned cat still runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // v4 has no stdin close, but output and status work the same.
    let out = session(
        addr,
        "/exec/default/web/app?command=echo&command=v4&stdout=1",
        "v4.channel.k8s.io",
        Vec::new(),
    )
    .await;
    assert_eq!(out.stdout(), "v4\n");
    assert_eq!(out.status_field("status"), "Success");

    tty_session_with_resize(addr).await;

    // Attach to cat's stdin (the container has stdinOnce): the echo comes
    // back, and closing stdin ends cat and with it the session.
    let out = session(
        addr,
        "/attach/default/web/echo?stdin=1&stdout=1&stderr=1",
        V5,
        vec![stdin(b"attached\n"), CLOSE_STDIN.to_vec()],
    )
    .await;
    assert_eq!(out.stdout(), "attached\n");
    assert_eq!(out.status_field("status"), "Success");

    // Refusals happen before the upgrade, as HTTP errors with a Status.
    for (path, code, message) in [
        (
            "/exec/default/web/nope?command=ls&stdout=1",
            404,
            "container not found (\"nope\")",
        ),
        (
            "/exec/default/web/never-started?command=ls&stdout=1",
            404,
            "container not found (\"never-started\")",
        ),
        (
            "/exec/default/ghost/app?command=ls&stdout=1",
            404,
            "pod does not exist",
        ),
        (
            "/exec/default/web/other-uid/app?command=ls&stdout=1",
            404,
            "pod does not exist",
        ),
        (
            "/exec/default/web/app?command=ls",
            400,
            "you must specify at least 1 of stdin, stdout, stderr",
        ),
    ] {
        match open(addr, path, V5).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), code, "{path}");
                let body = response.body().as_deref().expect("body");
                let status: Value = serde_json::from_slice(body).expect("status json");
                assert_eq!(status["message"], message, "{path}");
            }
            other => panic!(
                "{path}: expected an HTTP error, got {:?}",
                other.map(|_| ())
            ),
        }
    }

    cri.stop_pod_sandbox(v1::StopPodSandboxRequest {
        pod_sandbox_id: sandbox_id.clone(),
    })
    .await
    .expect("StopPodSandbox");
    cri.remove_pod_sandbox(v1::RemovePodSandboxRequest {
        pod_sandbox_id: sandbox_id,
    })
    .await
    .expect("RemovePodSandbox");
}

/// `kubectl exec -it web -- sh`: a resize before the prompt, then a
/// command that prints the terminal size, then `exit`.
async fn tty_session_with_resize(addr: std::net::SocketAddr) {
    let socket = open(
        addr,
        "/exec/default/web/app?command=sh&stdin=1&stdout=1&stderr=1&tty=1",
        "v5.channel.k8s.io",
    )
    .await
    .expect("upgrade");
    let (mut tx, mut rx) = socket.split();
    let mut resize = vec![4];
    resize.extend_from_slice(br#"{"Width":100,"Height":40}"#);
    tx.send(Message::Binary(resize.into()))
        .await
        .expect("resize");

    let mut screen = Vec::new();
    let mut status = None;
    let mut sent_command = false;
    let run = async {
        while let Some(message) = rx.next().await {
            match message.expect("frame") {
                Message::Binary(data) => match data.split_first() {
                    Some((1, payload)) => {
                        screen.extend_from_slice(payload);
                        // Type once the shell has shown its prompt (busybox
                        // then asks for the cursor position and redraws).
                        if !sent_command && screen.windows(4).any(|w| w == b"/ # ") {
                            sent_command = true;
                            tx.send(Message::Binary(stdin(b"stty size; exit 7\n").into()))
                                .await
                                .expect("command");
                        }
                    }
                    Some((3, payload)) => {
                        status = Some(serde_json::from_slice::<Value>(payload).expect("json"));
                    }
                    Some((2, _)) => panic!("a tty has no stderr channel"),
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    let ended = tokio::time::timeout(SESSION_TIMEOUT, run).await;
    let screen = String::from_utf8_lossy(&screen);
    assert!(ended.is_ok(), "tty session did not end; screen: {screen:?}");
    assert!(screen.contains("40 100"), "stty size output: {screen:?}");
    // A terminal turns "\n" into "\r\n".
    assert!(screen.contains("\r\n"), "{screen:?}");
    let status = status.expect("status");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "7");
}
