//! The private containerd end to end: build the airgap images, start
//! containerd in a temporary data dir, import the images, run containers from
//! both with `ctr`, and run a CRI pod sandbox (host network) from the pause
//! image through `skiff-cri`.
//!
//! Needs root and the packages from `scripts/setup.sh`; it fails (never skips)
//! when they are missing, because setup installs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_agent::containerd::{Binaries, Containerd, ContainerdConfig};
use skiff_agent::images::{BUSYBOX_IMAGE, HostTools, PAUSE_IMAGE, write_airgap_images};

/// Owns the temp dir and every container of this run. On drop (also after a
/// failed assertion) it removes the containers through containerd, stops
/// containerd, then kills, unmounts and removes whatever is left.
struct Sandbox {
    containerd: Option<Containerd>,
    /// Prefix of every container id of this run, unique per run.
    run_id: String,
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("skiff-ctd-{}-", std::process::id()))
            .tempdir()
            .expect("tempdir");
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            containerd: None,
            run_id: format!("skiff-test-{}-{nonce}", std::process::id()),
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn containerd(&self) -> &Containerd {
        self.containerd.as_ref().expect("containerd started")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(containerd) = self.containerd.take() {
            remove_all_containers(&containerd);
            if let Err(e) = containerd.shutdown(Duration::from_secs(10)) {
                eprintln!("stopping containerd: {e}");
            }
        }
        kill_leftover_processes(self.path(), &self.run_id);
        unmount_under(self.path());
        remove_cgroups(&self.run_id);
    }
}

/// Runs a cleanup command, giving up on it after a few seconds.
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

/// Force-deletes every task and container of the (private) containerd, so
/// that runc, the shims and containerd release their state, mounts and
/// cgroups the normal way.
fn remove_all_containers(containerd: &Containerd) {
    let Ok(output) = containerd
        .ctr()
        .args(["containers", "ls", "--quiet"])
        .output()
    else {
        return;
    };
    for id in String::from_utf8_lossy(&output.stdout).lines() {
        let mut delete_task = containerd.ctr();
        delete_task.args(["task", "delete", "--force", id]);
        run_for_cleanup(delete_task);
        let mut delete_container = containerd.ctr();
        delete_container.args(["containers", "delete", id]);
        run_for_cleanup(delete_container);
    }
}

/// Last resort: SIGKILLs the shims of this run (their command line names our
/// socket under `dir`) and the container processes (their cgroup is named
/// after a container id of this run).
fn kill_leftover_processes(dir: &Path, run_id: &str) {
    let dir = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let shim = std::fs::read(entry.path().join("cmdline"))
            .is_ok_and(|cmdline| cmdline.windows(dir.len()).any(|w| w == dir));
        let container = std::fs::read_to_string(entry.path().join("cgroup"))
            .is_ok_and(|cgroup| cgroup.contains(run_id));
        if (shim || container)
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
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
        if let Err(e) = rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH) {
            eprintln!("unmounting {}: {e}", point.display());
        }
    }
}

/// Removes the cgroups of this run's containers left by killed processes
/// (`ctr` puts them at `<hierarchy>/k8s.io/<container id>`).
fn remove_cgroups(run_id: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for hierarchy in hierarchies.flatten() {
        let Ok(groups) = std::fs::read_dir(hierarchy.path().join("k8s.io")) else {
            continue;
        };
        for group in groups.flatten() {
            if group.file_name().to_string_lossy().starts_with(run_id) {
                let _ = std::fs::remove_dir(group.path());
            }
        }
    }
}

fn run(mut command: Command) -> String {
    let output = command.output().expect("spawn ctr");
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn private_containerd_imports_airgap_images_and_runs_containers_and_sandboxes() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root: it runs containerd and containers"
    );
    let mut sandbox = Sandbox::new();
    let started = Instant::now();

    let images_dir = sandbox.path().join("agent/images");
    let written = write_airgap_images(&images_dir, &HostTools::default())
        .expect("build airgap images (scripts/setup.sh installs gcc and busybox-static)");
    assert_eq!(written.len(), 2);
    let built = started.elapsed();

    let config = ContainerdConfig::new(&sandbox.path().join("agent/containerd"));
    sandbox.containerd = Some(
        Containerd::start(config, &Binaries::default(), Duration::from_secs(30))
            .expect("start containerd (scripts/setup.sh installs containerd and runc)"),
    );
    let ready = started.elapsed();
    let containerd = sandbox.containerd();

    // CRI loaded, with our settings: containerd 1.6 logs its parsed CRI config.
    let mut plugins = containerd.ctr();
    plugins.args(["plugins", "ls"]);
    let plugins = run(plugins);
    assert!(
        plugins.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1) == Some(&"cri") && cols.last() == Some(&"ok")
        }),
        "CRI plugin not ok:\n{plugins}"
    );
    let log = std::fs::read_to_string(&containerd.config().log_file).expect("containerd log");
    let conf_dir = containerd.config().cni_conf_dir.display().to_string();
    for setting in [
        "RestrictOOMScoreAdj:true",
        "SandboxImage:docker.io/skiff/pause:3.10",
        "NetworkPluginBinDir:/usr/lib/cni",
        &format!("NetworkPluginConfDir:{conf_dir}"),
        "Snapshotter:overlayfs",
        "Type:io.containerd.runc.v2",
    ] {
        assert!(log.contains(setting), "CRI config lacks {setting}:\n{log}");
    }

    let imported = containerd.import_dir(&images_dir).expect("import images");
    assert_eq!(imported.len(), 2, "{imported:?}");

    let mut ls = containerd.ctr();
    ls.args(["images", "ls", "--quiet"]);
    let listed = run(ls);
    for image in [PAUSE_IMAGE, BUSYBOX_IMAGE] {
        assert!(
            listed.lines().any(|l| l == image),
            "{image} not in `ctr images ls`:\n{listed}"
        );
    }
    // Importing again is harmless (the agent does it at every start).
    containerd.import_dir(&images_dir).expect("re-import");
    let imported_at = started.elapsed();

    let id = format!("{}-busybox", sandbox.run_id);
    let mut ctr_run = containerd.ctr();
    ctr_run
        .args(["run", "--rm", BUSYBOX_IMAGE, &id])
        .args(["sh", "-c", "echo hello from $(id -un); test -x /bin/httpd && echo httpd ok; test -x /bin/nc && echo nc ok; touch /tmp/t && echo tmp ok"]);
    let output = run(ctr_run);
    assert_eq!(
        output.lines().collect::<Vec<_>>(),
        ["hello from root", "httpd ok", "nc ok", "tmp ok"],
        "container output"
    );
    // The pause image runs, and stops cleanly on SIGTERM as a sandbox must.
    let pause_id = format!("{}-pause", sandbox.run_id);
    let mut start = containerd.ctr();
    start.args(["run", "--detach", PAUSE_IMAGE, &pause_id]);
    run(start);
    let mut kill = containerd.ctr();
    kill.args(["task", "kill", "--signal", "SIGTERM", &pause_id]);
    run(kill);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut tasks = containerd.ctr();
        tasks.args(["task", "ls"]);
        let tasks = run(tasks);
        let status = tasks
            .lines()
            .find(|l| l.split_whitespace().next() == Some(pause_id.as_str()))
            .and_then(|l| l.split_whitespace().nth(2))
            .map(str::to_owned);
        if status.as_deref() == Some("STOPPED") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pause did not stop on SIGTERM:\n{tasks}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut delete = containerd.ctr();
    delete.args(["task", "delete", &pause_id]);
    run(delete);
    let mut remove = containerd.ctr();
    remove.args(["containers", "delete", &pause_id]);
    run(remove);

    // CRI runs a pod sandbox from the local pause image: this is what needs
    // `sandbox_image` and `restrict_oom_score_adj`. Host network, so no CNI.
    let ctr_done = started.elapsed();
    let sandbox_at = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run_host_network_sandbox(
        containerd.address(),
        &sandbox.run_id,
        &sandbox.path().join("pod-logs"),
    ));
    let sandbox_took = sandbox_at.elapsed();

    eprintln!(
        "timings: images {built:?}, containerd ready {:?}, imported {:?}, \
         ctr containers {:?}, CRI sandbox {sandbox_took:?}",
        ready - built,
        imported_at - ready,
        ctr_done - imported_at,
    );
}

async fn run_host_network_sandbox(socket: &Path, run_id: &str, log_dir: &Path) {
    use skiff_cri::v1;
    use skiff_cri::{CriClient, RuntimeService};

    let cri = CriClient::connect(socket).await.expect("CRI connect");
    let config = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: format!("{run_id}-pod"),
            uid: format!("{run_id}-uid"),
            namespace: "default".to_owned(),
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
    let id = cri
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox with the local pause image")
        .pod_sandbox_id;
    let status = cri
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .status
        .expect("status");
    assert_eq!(status.state, v1::PodSandboxState::SandboxReady as i32);
    cri.stop_pod_sandbox(v1::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("StopPodSandbox");
    cri.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .expect("RemovePodSandbox");
}
