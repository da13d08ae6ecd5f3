//! Removing a pod's cgroups once its sandbox is gone.
//!
//! runc creates each container's cgroup under the pod's cgroup parent
//! (`/kubepods[/burstable|/besteffort]/pod<uid>`, from the sandbox config)
//! and removes the container's own cgroup when it is deleted, but not the
//! pod-level parents it created on the way. Upstream's kubelet removes them
//! with its pod cgroup manager; without this they pile up, one per pod and
//! hierarchy.

use std::io;
use std::path::{Path, PathBuf};

/// The QoS subdirectories a pod's cgroup can be in (Guaranteed pods sit
/// directly under the root).
const QOS_DIRS: [&str; 3] = ["", "burstable", "besteffort"];

/// The cgroup directories of pod `uid` under every hierarchy mounted at
/// `cgroup_root` (e.g. `/sys/fs/cgroup`), for the pods root `pods_parent`
/// (e.g. `/kubepods`).
fn candidates(cgroup_root: &Path, pods_parent: &str, uid: &str) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let parent = pods_parent.trim_start_matches('/');
    for hierarchy in std::fs::read_dir(cgroup_root)? {
        let hierarchy = hierarchy?.path();
        for qos in QOS_DIRS {
            let dir = hierarchy.join(parent).join(qos).join(format!("pod{uid}"));
            if dir.is_dir() {
                out.push(dir);
            }
        }
    }
    Ok(out)
}

/// Removes the cgroups of pod `uid`, children first. cgroup directories can
/// only be removed with `rmdir` (their files are virtual), and only once no
/// process is left in them: a busy cgroup is an error for the caller to
/// retry on its next sync.
pub fn remove_pod_cgroups(cgroup_root: &Path, pods_parent: &str, uid: &str) -> io::Result<()> {
    if uid.is_empty() || uid.contains('/') || uid.contains("..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid pod uid {uid:?}"),
        ));
    }
    for dir in candidates(cgroup_root, pods_parent, uid)? {
        remove_tree(&dir)?;
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_removes_the_pods_cgroups_in_every_hierarchy() {
        let root = tempfile::tempdir().expect("tempdir");
        let pod = |hierarchy: &str, qos: &str, uid: &str| {
            root.path()
                .join(hierarchy)
                .join("kubepods")
                .join(qos)
                .join(format!("pod{uid}"))
        };
        for dir in [
            pod("memory", "besteffort", "u1"),
            pod("cpu", "besteffort", "u1"),
            pod("memory", "besteffort", "u2"),
            pod("pids", "", "u3"),
        ] {
            std::fs::create_dir_all(dir.join("container-id")).expect("mkdir");
        }
        remove_pod_cgroups(root.path(), "/kubepods", "u1").expect("remove");
        assert!(!pod("memory", "besteffort", "u1").exists());
        assert!(!pod("cpu", "besteffort", "u1").exists());
        assert!(
            pod("memory", "besteffort", "u2").exists(),
            "other pods stay"
        );
        remove_pod_cgroups(root.path(), "/kubepods", "u3").expect("guaranteed pod");
        assert!(!pod("pids", "", "u3").exists());
        assert!(root.path().join("memory/kubepods/besteffort").exists());
        // Removing again is fine.
        remove_pod_cgroups(root.path(), "/kubepods", "u1").expect("idempotent");
        assert!(remove_pod_cgroups(root.path(), "/kubepods", "../x").is_err());
    }
}
