//! Eviction of pods whose disk-backed `emptyDir` outgrows its `sizeLimit`,
//! as upstream's eviction manager does for local storage
//! (`emptyDirLimitEviction`).
//!
//! Every [`PERIOD`] the manager measures the disk `emptyDir`s that have a
//! `sizeLimit`, in the pods the node runs, the way `du` counts: blocks
//! allocated, hard links once, symlinks not followed, nothing on another
//! file system. A pod with a volume over its limit is reported once as an
//! [`Eviction`]; the pod manager then posts the `Evicted` warning event,
//! fails the pod (`phase: Failed`, `reason: Evicted`, upstream's message)
//! and kills its containers with a one-second grace period.
//!
//! Why only disk volumes: a `medium: Memory` `emptyDir` is a tmpfs mounted
//! with `size=` at most its `sizeLimit` (see `crate::volumes`), so the
//! kernel stops writes before it could exceed the limit.
//!
//! Like upstream, the manager never evicts critical pods (static and mirror
//! pods, and pods at system-critical priority), nor pods that are already
//! terminal or being deleted. The decision is [`evict_message`], a pure
//! function of the pod and the measured usage; the walk is [`disk_usage`].

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use skiff_api::quantity::Quantity;
use tokio::sync::mpsc;
use tokio::time::{self, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::static_pods::{MIRROR_ANNOTATION, SOURCE_ANNOTATION};

/// How often usage is measured (upstream's eviction monitoring interval).
pub const PERIOD: Duration = Duration::from_secs(10);

/// The status reason of an evicted pod, and the reason of its event.
pub const REASON: &str = "Evicted";

/// How long an evicted pod's containers get to stop (upstream's
/// `immediateEvictionGracePeriodSeconds`).
pub const GRACE_PERIOD_SECONDS: i64 = 1;

/// Priority from which a pod is critical (upstream's `SystemCriticalPriority`).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// A pod to evict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// The pod's uid.
    pub pod_uid: String,
    /// Upstream's message, for the pod status and the event:
    /// `Usage of EmptyDir volume "cache" exceeds the limit "1Gi". `
    pub message: String,
}

/// What the eviction manager needs from the node.
pub trait EvictionSource: Send + Sync {
    /// The pods bound to this node, as last seen.
    fn pods(&self) -> Vec<Arc<Pod>>;
    /// Where the `emptyDir` `volume` of the pod `pod_uid` lives.
    fn empty_dir(&self, pod_uid: &str, volume: &str) -> Option<PathBuf>;
}

/// A disk `emptyDir` with a positive `sizeLimit`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Limited {
    volume: String,
    bytes: i64,
    /// The limit as upstream prints it (the quantity's canonical form).
    printed: String,
}

/// The pod's disk `emptyDir`s that have a positive `sizeLimit`, in spec
/// order. Unparsable limits are skipped (the API server rejects them).
fn limited_empty_dirs(pod: &Pod) -> Vec<Limited> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    volumes
        .iter()
        .filter_map(|volume| {
            let source = volume.empty_dir.as_ref()?;
            if source.medium.as_deref().is_some_and(|m| !m.is_empty()) {
                return None;
            }
            let limit = Quantity::parse(&source.size_limit.as_ref()?.0).ok()?;
            let bytes = limit.value();
            (bytes > 0).then(|| Limited {
                volume: volume.name.clone(),
                bytes,
                printed: limit.to_string(),
            })
        })
        .collect()
}

/// Whether upstream's eviction manager may evict the pod at all: not
/// critical, not terminal, not being deleted.
fn evictable(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    let is_static = annotation(SOURCE_ANNOTATION).is_some_and(|source| source != "api");
    let is_mirror = annotation(MIRROR_ANNOTATION).is_some();
    let critical_priority = pod
        .spec
        .as_ref()
        .and_then(|s| s.priority)
        .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY);
    let terminal = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| matches!(phase, "Succeeded" | "Failed"));
    !(is_static
        || is_mirror
        || critical_priority
        || terminal
        || pod.metadata.deletion_timestamp.is_some())
}

/// The eviction message for `pod` given the bytes its volumes use (by
/// volume name; unmeasured volumes are absent), or `None` to keep it: the
/// first disk `emptyDir`, in spec order, whose usage is above its
/// `sizeLimit` decides.
pub fn evict_message(pod: &Pod, usage: &HashMap<String, u64>) -> Option<String> {
    if !evictable(pod) {
        return None;
    }
    limited_empty_dirs(pod).into_iter().find_map(|limited| {
        let used = *usage.get(&limited.volume)?;
        (u64::try_from(limited.bytes).is_ok_and(|limit| used > limit)).then(|| {
            format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                limited.volume, limited.printed
            )
        })
    })
}

/// The bytes allocated under `root` as `du -x` counts them: blocks of every
/// file and directory on `root`'s file system, hard links once, symlinks
/// not followed. Entries removed during the walk are skipped.
pub fn disk_usage(root: &Path) -> io::Result<u64> {
    let meta = fs::symlink_metadata(root)?;
    let mut walk = Walk {
        device: meta.dev(),
        seen: HashSet::new(),
        bytes: 0,
    };
    walk.visit(root, &meta)?;
    Ok(walk.bytes)
}

struct Walk {
    device: u64,
    /// Inodes with several links, already counted.
    seen: HashSet<u64>,
    bytes: u64,
}

impl Walk {
    fn visit(&mut self, path: &Path, meta: &fs::Metadata) -> io::Result<()> {
        if meta.dev() != self.device {
            return Ok(());
        }
        if meta.nlink() > 1 && !meta.is_dir() && !self.seen.insert(meta.ino()) {
            return Ok(());
        }
        self.bytes = self.bytes.saturating_add(meta.blocks().saturating_mul(512));
        if !meta.is_dir() {
            return Ok(());
        }
        let entries = match fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let child = entry?.path();
            match fs::symlink_metadata(&child) {
                Ok(child_meta) => self.visit(&child, &child_meta)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A pod to check, with its limited volumes (name, path) and, once
/// measured, what they use.
struct Candidate {
    pod: Arc<Pod>,
    volumes: Vec<(String, PathBuf)>,
    usage: HashMap<String, u64>,
}

impl Candidate {
    /// Measures the volumes; blocking file system IO. Volumes that cannot
    /// be measured (not set up yet, already removed) are left out, and
    /// logged unless they are simply missing.
    fn measure(&mut self) {
        for (name, path) in &self.volumes {
            match disk_usage(path) {
                Ok(bytes) => {
                    self.usage.insert(name.clone(), bytes);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    pod = ?self.pod.metadata.name,
                    volume = %name,
                    error = %e,
                    "cannot measure emptyDir usage"
                ),
            }
        }
    }
}

/// Checks the node's pods every `period` until `shutdown`, sending each pod
/// to evict once on `evictions`. Returns when the receiver is gone.
pub async fn run(
    source: Arc<dyn EvictionSource>,
    period: Duration,
    evictions: mpsc::Sender<Eviction>,
    shutdown: CancellationToken,
) {
    let mut ticker = time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Uids already sent, forgotten once their pod is gone.
    let mut sent: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let pods = source.pods();
        sent.retain(|uid| pods.iter().any(|p| p.metadata.uid.as_deref() == Some(uid)));
        let mut candidates: Vec<Candidate> = pods
            .into_iter()
            .filter(|pod| evictable(pod))
            .filter_map(|pod| {
                let uid = pod.metadata.uid.clone()?;
                if sent.contains(&uid) {
                    return None;
                }
                let volumes: Vec<(String, PathBuf)> = limited_empty_dirs(&pod)
                    .into_iter()
                    .filter_map(|l| {
                        let path = source.empty_dir(&uid, &l.volume)?;
                        Some((l.volume, path))
                    })
                    .collect();
                (!volumes.is_empty()).then(|| Candidate {
                    pod,
                    volumes,
                    usage: HashMap::new(),
                })
            })
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let measured = tokio::task::spawn_blocking(move || {
            candidates.iter_mut().for_each(Candidate::measure);
            candidates
        })
        .await;
        let candidates = match measured {
            Ok(candidates) => candidates,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return,
        };
        for candidate in candidates {
            let pod = &candidate.pod;
            let (Some(message), Some(uid)) =
                (evict_message(pod, &candidate.usage), &pod.metadata.uid)
            else {
                continue;
            };
            tracing::info!(pod = ?pod.metadata.name, %message, "evicting pod");
            sent.insert(uid.clone());
            let eviction = Eviction {
                pod_uid: uid.clone(),
                message,
            };
            if evictions.send(eviction).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    fn pod(uid: &str, extra: serde_json::Value) -> Pod {
        let mut value = json!({
            "metadata": {"name": format!("pod-{uid}"), "namespace": "ns", "uid": uid},
            "spec": {
                "containers": [{"name": "app", "image": "busybox"}],
                "volumes": [
                    {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "1Ki"}},
                    {"name": "open", "emptyDir": {}},
                    {"name": "zero", "emptyDir": {"sizeLimit": "0"}},
                    {"name": "cache", "emptyDir": {"sizeLimit": "1536Mi"}},
                    {"name": "logs", "emptyDir": {"sizeLimit": "1Ki"}},
                ],
            },
        });
        merge(&mut value, extra);
        serde_json::from_value(value).expect("pod")
    }

    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (slot, value) => *slot = value,
        }
    }

    fn usage(entries: &[(&str, u64)]) -> HashMap<String, u64> {
        entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    const GI: u64 = 1 << 30;

    #[test]
    fn a_disk_empty_dir_over_its_limit_evicts_with_upstreams_message() {
        let p = pod("a", json!({}));
        let over = 1536 * (1 << 20) + 1;
        assert_eq!(
            evict_message(&p, &usage(&[("cache", over)])).as_deref(),
            Some("Usage of EmptyDir volume \"cache\" exceeds the limit \"1536Mi\". ")
        );
        // At the limit is still fine; so is an unmeasured volume.
        assert_eq!(evict_message(&p, &usage(&[("cache", over - 1)])), None);
        assert_eq!(evict_message(&p, &usage(&[])), None);
        // The first offending volume in spec order decides.
        assert_eq!(
            evict_message(&p, &usage(&[("logs", 2048), ("cache", 2 * GI)])).as_deref(),
            Some("Usage of EmptyDir volume \"cache\" exceeds the limit \"1536Mi\". ")
        );
        assert_eq!(
            evict_message(&p, &usage(&[("logs", 2048)])).as_deref(),
            Some("Usage of EmptyDir volume \"logs\" exceeds the limit \"1Ki\". ")
        );
    }

    #[test]
    fn memory_unlimited_and_zero_limits_never_evict() {
        let p = pod("a", json!({}));
        let huge = usage(&[("ram", GI), ("open", 100 * GI), ("zero", GI)]);
        assert_eq!(evict_message(&p, &huge), None);
        let names: Vec<String> = limited_empty_dirs(&p)
            .into_iter()
            .map(|l| l.volume)
            .collect();
        assert_eq!(names, ["cache", "logs"]);
    }

    #[test]
    fn critical_terminal_and_deleted_pods_are_not_evicted() {
        let over = usage(&[("logs", GI)]);
        let kept = [
            json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "abc"}}}),
            json!({"metadata": {"annotations": {"kubernetes.io/config.source": "file"}}}),
            json!({"spec": {"priority": 2_000_001_000}}),
            json!({"status": {"phase": "Failed"}}),
            json!({"status": {"phase": "Succeeded"}}),
            json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
        ];
        for extra in kept {
            let p = pod("a", extra.clone());
            assert_eq!(evict_message(&p, &over), None, "{extra}");
        }
        let api = pod(
            "a",
            json!({"metadata": {"annotations": {"kubernetes.io/config.source": "api"}},
                   "spec": {"priority": 1000}, "status": {"phase": "Running"}}),
        );
        assert!(evict_message(&api, &over).is_some());
    }

    #[test]
    fn usage_counts_allocated_blocks_once_and_stays_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("vol");
        fs::create_dir_all(root.join("sub")).expect("mkdir");
        let empty = disk_usage(&root).expect("empty");

        fs::write(root.join("sub/data"), vec![7u8; 256 * 1024]).expect("write");
        let written = disk_usage(&root).expect("written");
        assert!(written - empty >= 256 * 1024, "{written} - {empty}");
        assert!(written - empty < 512 * 1024, "{written} - {empty}");

        // A hard link is the same blocks; a symlink to a big file outside
        // and a sparse file add (next to) nothing.
        fs::hard_link(root.join("sub/data"), root.join("again")).expect("link");
        fs::write(dir.path().join("outside"), vec![1u8; 1 << 20]).expect("write");
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("out")).expect("symlink");
        let sparse = fs::File::create(root.join("sparse")).expect("create");
        sparse.set_len(1 << 30).expect("truncate");
        let after = disk_usage(&root).expect("after");
        assert!(after - written < 64 * 1024, "{after} - {written}");

        assert_eq!(
            disk_usage(&dir.path().join("missing"))
                .expect_err("missing")
                .kind(),
            io::ErrorKind::NotFound
        );
    }

    /// Pods and their volume directories under a tempdir.
    struct Source {
        root: PathBuf,
        pods: Mutex<Vec<Arc<Pod>>>,
    }

    impl EvictionSource for Source {
        fn pods(&self) -> Vec<Arc<Pod>> {
            self.pods.lock().expect("pods").clone()
        }

        fn empty_dir(&self, pod_uid: &str, volume: &str) -> Option<PathBuf> {
            Some(self.root.join(pod_uid).join(volume))
        }
    }

    #[tokio::test]
    async fn the_loop_reports_each_pod_over_its_limit_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        // `big` writes 64 KiB to its 1 KiB `logs`; `small` only a little to
        // its 1.5 GiB `cache` (its `logs` is not set up: not measured).
        for (uid, volume, bytes) in [("big", "logs", 64 * 1024), ("small", "cache", 4096)] {
            let volume = dir.path().join(uid).join(volume);
            fs::create_dir_all(&volume).expect("mkdir");
            fs::write(volume.join("f"), vec![1u8; bytes]).expect("write");
        }
        let source = Arc::new(Source {
            root: dir.path().to_path_buf(),
            pods: Mutex::new(vec![
                Arc::new(pod("big", json!({}))),
                Arc::new(pod("small", json!({}))),
                // Not set up yet: nothing on disk to measure.
                Arc::new(pod("new", json!({}))),
            ]),
        });
        let (sender, mut evictions) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            source.clone(),
            Duration::from_millis(10),
            sender,
            shutdown.clone(),
        ));

        let first = time::timeout(Duration::from_secs(5), evictions.recv())
            .await
            .expect("in time")
            .expect("eviction");
        assert_eq!(
            first,
            Eviction {
                pod_uid: "big".into(),
                message: "Usage of EmptyDir volume \"logs\" exceeds the limit \"1Ki\". ".into(),
            }
        );
        // Many periods later, still only the one.
        assert!(
            time::timeout(Duration::from_millis(200), evictions.recv())
                .await
                .is_err()
        );

        // A pod gone and back (a new pod with the same uid) is measured again.
        source.pods.lock().expect("pods").clear();
        time::sleep(Duration::from_millis(50)).await;
        source
            .pods
            .lock()
            .expect("pods")
            .push(Arc::new(pod("big", json!({}))));
        let again = time::timeout(Duration::from_secs(5), evictions.recv())
            .await
            .expect("in time")
            .expect("eviction");
        assert_eq!(again.pod_uid, "big");

        shutdown.cancel();
        task.await.expect("stopped");
    }
}
