//! Pod volumes: what the kubelet's volume manager does for a node without
//! attachable storage.
//!
//! Every volume of a pod gets a directory under
//! `DATA/pods/<uid>/volumes/<plugin>/<name>` (upstream's layout and plugin
//! names, e.g. `kubernetes.io~configmap`), which containers bind-mount:
//!
//! - `emptyDir` is a plain directory (mode 0777), or a tmpfs for
//!   `medium: Memory`, sized like upstream: the smallest of `sizeLimit`, the
//!   pod's memory limit and the node's allocatable memory.
//! - `hostPath` is the node path itself, checked against its `type`.
//! - `persistentVolumeClaim` is the node directory of the claim's bound
//!   `hostPath` or `local` PersistentVolume (see `claim.rs`), which lives
//!   outside the pod directory and so outlives the pod.
//! - `configMap`, `secret`, `downwardAPI` and `projected` are files written
//!   with upstream's atomic-writer layout (see `atomic.rs`), rewritten on each
//!   [`VolumeManager::prepare`] so that they follow their sources. Secret and
//!   projected volumes live on a tmpfs, so secrets never touch the disk.
//! - A projected `serviceAccountToken` source is a token of the pod's
//!   ServiceAccount from the TokenRequest API, bound to the pod, cached and
//!   refreshed before it expires (see `token.rs`); the [`TokenManager`]
//!   given with [`VolumeManager::with_tokens`] gets them. With a pod
//!   `fsGroup`, or one `runAsUser` shared by all its containers, the token
//!   file is 0600 (0640 after the group walk) and owned by that user, as
//!   upstream writes it.
//!
//! With a pod `fsGroup`, the volumes the agent writes (all but `hostPath`)
//! belong to that group, with group read-write (read-only for the projected
//! kinds) and setgid directories, as upstream's `SetVolumeOwnership` leaves
//! them (see `ownership.rs`). Upstream passes no `fsGroupChangePolicy` for
//! these volume kinds, and neither does this manager: the policy governs
//! persistent volumes, of which only `local` ones get an owner (a
//! `hostPath` one, like a `hostPath` pod volume, keeps its ownership). A
//! volume is walked when it is set up or its files are rewritten; a resync
//! skips volumes whose root already shows the group. The containers get the
//! `fsGroup` as a supplemental group through their CRI security context
//! (`config`).
//!
//! A claim volume is resolved and set up once per pod, as upstream's
//! volume manager mounts it once: later syncs reuse it, so a claim that is
//! deleted or lost while the pod runs does not stop the pod's containers.
//! A claim that cannot be used yet (missing, unbound, or bound to a volume
//! this node cannot serve) keeps the pod's containers from being created;
//! the pod's other volumes are still set up, and the claim is tried again
//! on the next sync.
//!
//! [`VolumeManager::prepare`] is idempotent and cheap when nothing changed,
//! which is what lets the pod worker call it on every sync. Calls for one pod
//! must not overlap (the pod worker serialises them); different pods may run
//! concurrently.
//!
//! Not served (yet): CSI and other network or attachable volumes, raw block
//! claims, generic ephemeral volumes, image volumes, `emptyDir` medium
//! `HugePages`, the `clusterTrustBundle` and `podCertificate` sources of
//! projected volumes, and the alpha
//! `defaultUser`/`user` ownership fields.
//! The `sizeLimit` of a disk-backed `emptyDir` is enforced by eviction
//! (`crate::eviction`, measuring [`VolumeManager::empty_dir_path`]); a
//! memory-backed one is a tmpfs of at most that size.

mod atomic;
mod claim;
mod hostpath;
pub(crate) mod mount;
mod ownership;
mod payload;
mod subpath;
mod token;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use skiff_cri::v1::{KeyValue, Mount, MountPropagation};

pub use atomic::AtomicWriteError;
pub use claim::{ClaimError, ClaimsNotReady};
pub use mount::{FakeMounter, LinuxMounter, MountCall, Mounter};
pub use token::{TokenError, TokenManager};

use crate::downward::NodeAllocatable;
use crate::objects::{ObjectError, ObjectSource};
use atomic::{FileProjection, Payload};
use token::TokenKey;

const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
const CONFIG_MAP: &str = "kubernetes.io~configmap";
const SECRET: &str = "kubernetes.io~secret";
const DOWNWARD_API: &str = "kubernetes.io~downward-api";
const PROJECTED: &str = "kubernetes.io~projected";

/// Mode of an `emptyDir` (and of the directories of file volumes): anyone
/// in the pod, whatever its user, may write.
const EMPTY_DIR_MODE: u32 = 0o777;

/// How many mounts stacked on one path cleanup will take off before giving up.
const MAX_STACKED_MOUNTS: usize = 16;

/// Why a pod's volumes could not be set up, mounted into a container, or
/// removed.
///
/// [`VolumeManager::prepare`] errors are reported as upstream's `FailedMount`
/// events, whose messages [`VolumeError::event_messages`] gives (mostly the
/// error's display, `MountVolume.SetUp failed for volume "x" : ...`).
/// [`PodVolumes::mounts_for`] errors display as upstream's
/// `CreateContainerConfigError` messages. All are retryable: the next sync
/// tries again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// A pod uid that is not a plain single path component.
    #[error("invalid pod uid {0:?}: must be a single path component")]
    InvalidPodUid(String),
    /// A volume name that is not a plain single path component.
    #[error("invalid volume name {0:?}: must be a single path component")]
    InvalidVolumeName(String),
    /// A pod `fsGroup` that is not a group id.
    #[error("invalid fsGroup {0}: must be a group id")]
    InvalidFsGroup(i64),
    /// Setting up one volume failed.
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {source}")]
    SetUp {
        /// The volume's name in the pod spec.
        volume: String,
        /// What went wrong.
        #[source]
        source: SetUpError,
    },
    /// Claim volumes that cannot be used yet; the pod's other volumes were
    /// set up. Displays as upstream's summary (`Unable to attach or mount
    /// volumes: ...`).
    #[error(transparent)]
    Claims(ClaimsNotReady),
    /// The volume's type is not served by this node.
    #[error(
        "MountVolume.SetUp failed for volume \"{volume}\" : {kind} volumes are not supported by this node"
    )]
    Unsupported {
        /// The volume's name in the pod spec.
        volume: String,
        /// The volume source, as its API field name (`persistentVolumeClaim`).
        kind: String,
    },
    /// A volume mount names a volume the pod does not have.
    #[error("cannot find volume \"{volume}\" to mount into container \"{container}\"")]
    MissingVolume {
        /// The mount's volume name.
        volume: String,
        /// The container.
        container: String,
    },
    /// A `subPath`/`subPathExpr` that is invalid as written or expanded.
    #[error("{0}")]
    InvalidSubPath(String),
    /// A sub path could not be created or resolved inside its volume (the
    /// details are logged, not shown, as upstream does).
    #[error("failed to {action} subPath for volumeMount \"{volume}\" of container \"{container}\"")]
    SubPath {
        /// `create` or `prepare`.
        action: &'static str,
        /// The mount's volume name.
        volume: String,
        /// The container.
        container: String,
    },
    /// An unknown `mountPropagation`.
    #[error("invalid MountPropagation mode: \"{0}\"")]
    InvalidPropagation(String),
    /// `recursiveReadOnly: Enabled`, which the runtime cannot honour.
    #[error(
        "failed to resolve recursive read-only mode: volumeMount \"{0}\" requests recursive read-only, which the container runtime does not support"
    )]
    RecursiveReadOnly(String),
    /// A pod directory still has something mounted in it after unmounting.
    #[error("pod directory {} still has a mount at {}; not removing it", pod_dir.display(), mount.display())]
    StillMounted {
        /// The pod's directory.
        pod_dir: PathBuf,
        /// The mount point left.
        mount: PathBuf,
    },
    /// A file system operation on the pods directory failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation (`unmount`, `remove`, ...).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl VolumeError {
    /// The messages of the `FailedMount` warnings to post for this error:
    /// for claims that cannot be used, one clear message per claim
    /// (`PersistentVolumeClaim is not bound: "data"`) and then upstream's
    /// summary; for anything else, the error itself.
    pub fn event_messages(&self) -> Vec<String> {
        match self {
            VolumeError::Claims(claims) => claims
                .messages()
                .chain(std::iter::once(claims.to_string()))
                .collect(),
            other => vec![other.to_string()],
        }
    }
}

/// Why one volume could not be set up; displayed as the tail of upstream's
/// FailedMount message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetUpError {
    /// A non-optional ConfigMap does not exist.
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    /// A non-optional Secret does not exist.
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    /// A ConfigMap or Secret could not be read.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// A listed key is missing from a non-optional ConfigMap.
    #[error("configmap references non-existent config key: {0}")]
    MissingConfigMapKey(String),
    /// A listed key is missing from a non-optional Secret.
    #[error("references non-existent secret key: {0}")]
    MissingSecretKey(String),
    /// A file mode outside 0..=0777.
    #[error("invalid file mode {0:#o}: must be between 0 and 0777")]
    InvalidMode(i32),
    /// An `emptyDir` mode outside 0..=01777.
    #[error("invalid emptyDir mode {0:#o}: must be between 0 and 01777")]
    InvalidDirMode(i32),
    /// A `sizeLimit` that is not a quantity.
    #[error("invalid sizeLimit {0:?}")]
    InvalidSizeLimit(String),
    /// A downward API item could not be resolved.
    #[error("{0}")]
    Downward(String),
    /// A hostPath check failed (upstream's message).
    #[error("{0}")]
    HostPath(String),
    /// A `local` persistent volume's path is not a usable directory.
    #[error("{0}")]
    Local(String),
    /// No service account token could be had.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A projected source kind this node cannot serve.
    #[error("projected {0} sources are not supported by this node")]
    UnsupportedProjection(&'static str),
    /// The files could not be written.
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
    /// Mounting or preparing the volume directory failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation (`mkdir`, `mount tmpfs`, ...).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Several sources of one projected or downward API volume failed.
    #[error("[{}]", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Several(Vec<SetUpError>),
}

impl SetUpError {
    /// Upstream's aggregate: none is success, one is itself, more are a list.
    fn aggregate(mut errors: Vec<SetUpError>) -> Option<SetUpError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(SetUpError::Several(errors)),
        }
    }
}

/// Sets up and tears down the volumes of the pods on this node.
pub struct VolumeManager {
    /// `DATA/pods`: one directory per pod uid.
    pods_root: PathBuf,
    mounter: Arc<dyn Mounter>,
    /// The claim volumes set up, by pod uid and volume name: each is
    /// resolved and set up once per pod (see the module docs). Held only
    /// briefly, never across an await.
    claims: Mutex<HashMap<String, HashMap<String, PreparedVolume>>>,
    /// Gets the tokens of `serviceAccountToken` projections; `None` when
    /// the agent has no API server to ask.
    tokens: Option<Arc<TokenManager>>,
}

/// The volumes of a pod, ready to be mounted into its containers.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    volumes: HashMap<String, PreparedVolume>,
}

#[derive(Debug, Clone)]
struct PreparedVolume {
    /// What containers bind-mount.
    host_path: PathBuf,
    /// Whether every mount of it is read-only whatever the mount says
    /// (files the agent projects).
    read_only: bool,
}

/// What one volume needs on disk, worked out before any disk IO.
enum Plan {
    EmptyDir {
        mode: u32,
        /// `Some(size)` for a tmpfs (`None`: the kernel's default size).
        tmpfs: Option<Option<u64>>,
    },
    HostPath {
        path: String,
        path_type: String,
    },
    Files {
        plugin: &'static str,
        tmpfs: bool,
        payload: Payload,
    },
    Claim {
        resolved: claim::Resolved,
        owner: claim::Ownership,
    },
}

impl VolumeManager {
    /// A manager keeping pod directories under `pods_root` (`DATA/pods`).
    pub fn new(pods_root: PathBuf, mounter: Arc<dyn Mounter>) -> Self {
        Self {
            pods_root,
            mounter,
            claims: Mutex::default(),
            tokens: None,
        }
    }

    /// The same manager, getting the tokens of `serviceAccountToken`
    /// projections from `tokens`. Without it, such volumes fail to set up.
    pub fn with_tokens(mut self, tokens: TokenManager) -> Self {
        self.tokens = Some(Arc::new(tokens));
        self
    }

    /// Sets up every volume of `pod`: creates directories, mounts tmpfs,
    /// checks host paths, follows claims to their volumes and (re)writes
    /// projected files from `objects`. Idempotent; called on each sync so
    /// that ConfigMap, Secret and downward API files follow their sources.
    /// Stops at the first volume that fails to be set up; claims that cannot
    /// be used yet do not stop the others, and are reported together
    /// ([`VolumeError::Claims`]) once the others are set up.
    pub async fn prepare(
        &self,
        pod: &Pod,
        objects: &dyn ObjectSource,
        node: &NodeAllocatable,
    ) -> Result<PodVolumes, VolumeError> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let pod_dir = self.pod_dir(uid)?;
        let fs_group = fs_group(pod)?;
        let spec = pod.spec.as_ref();
        let volumes = spec.and_then(|s| s.volumes.as_deref()).unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let on_root_mismatch = spec
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.fs_group_change_policy.as_deref())
            == Some("OnRootMismatch");
        let ready = self.claims_of(uid);
        let mut prepared = HashMap::with_capacity(volumes.len());
        let mut plans = Vec::with_capacity(volumes.len());
        let mut unready = Vec::new();
        for volume in volumes {
            if !is_plain_component(&volume.name) {
                return Err(VolumeError::InvalidVolumeName(volume.name.clone()));
            }
            let Some(source) = &volume.persistent_volume_claim else {
                let plan = plan(pod, volume, objects, node, self.tokens.as_deref()).await?;
                plans.push((volume.name.clone(), plan));
                continue;
            };
            if let Some(volume_ready) = ready.get(&volume.name) {
                prepared.insert(volume.name.clone(), volume_ready.clone());
                continue;
            }
            let usage = claim_usage(pod, &volume.name);
            if !usage.mounted && !usage.as_device {
                // Upstream leaves volumes no container uses alone.
                continue;
            }
            match claim::resolve(objects, namespace, &volume.name, source, usage).await {
                Ok(resolved) => {
                    let owner = claim::Ownership {
                        fs_group,
                        on_root_mismatch,
                        in_use_elsewhere: self.in_use_elsewhere(uid, resolved.path()),
                    };
                    plans.push((volume.name.clone(), Plan::Claim { resolved, owner }));
                }
                Err(e) => unready.push((volume.name.clone(), source.claim_name.clone(), e)),
            }
        }
        let mounter = Arc::clone(&self.mounter);
        let (volumes, claims) = run_blocking(move || {
            let mut claims = HashMap::new();
            for (name, plan) in plans {
                // Upstream names a claim volume by its PersistentVolume.
                let shown = match &plan {
                    Plan::Claim { resolved, .. } => resolved.volume.clone(),
                    _ => name.clone(),
                };
                let is_claim = matches!(plan, Plan::Claim { .. });
                let volume =
                    apply(&pod_dir, mounter.as_ref(), &name, plan, fs_group).map_err(|source| {
                        VolumeError::SetUp {
                            volume: shown,
                            source,
                        }
                    })?;
                if is_claim {
                    claims.insert(name.clone(), volume.clone());
                }
                prepared.insert(name, volume);
            }
            Ok((PodVolumes { volumes: prepared }, claims))
        })
        .await?;
        if !claims.is_empty() {
            lock(&self.claims)
                .entry(uid.to_string())
                .or_default()
                .extend(claims);
        }
        if unready.is_empty() {
            Ok(volumes)
        } else {
            Err(VolumeError::Claims(ClaimsNotReady {
                namespace: namespace.to_string(),
                failed: unready,
            }))
        }
    }

    /// The claim volumes of pod `uid` already set up.
    fn claims_of(&self, uid: &str) -> HashMap<String, PreparedVolume> {
        lock(&self.claims).get(uid).cloned().unwrap_or_default()
    }

    /// Whether a pod other than `uid` has a claim volume at `path` set up
    /// (upstream counts the volume's other mounts on the node).
    fn in_use_elsewhere(&self, uid: &str, path: &str) -> bool {
        lock(&self.claims)
            .iter()
            .filter(|(other, _)| other.as_str() != uid)
            .flat_map(|(_, volumes)| volumes.values())
            .any(|v| v.host_path == Path::new(path))
    }

    /// Removes everything of a pod: unmounts whatever is mounted under its
    /// directory, then deletes `DATA/pods/<uid>` without following symlinks
    /// out of it. Refuses to delete while a mount remains. A missing
    /// directory is success.
    pub async fn cleanup(&self, pod_uid: &str) -> Result<(), VolumeError> {
        let pod_dir = self.pod_dir(pod_uid)?;
        lock(&self.claims).remove(pod_uid);
        if let Some(tokens) = &self.tokens {
            tokens.forget_pod(pod_uid);
        }
        let mounter = Arc::clone(&self.mounter);
        run_blocking(move || remove_pod_dir(&pod_dir, mounter.as_ref())).await
    }

    /// The uids of the pod directories on disk, so that the pod manager can
    /// clean up pods that disappeared while the agent was down.
    pub fn pod_dirs(&self) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(&self.pods_root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut uids = Vec::new();
        for entry in entries {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string()
                && is_plain_component(&name)
            {
                uids.push(name);
            }
        }
        uids.sort();
        Ok(uids)
    }

    /// Where the `emptyDir` `volume` of the pod `pod_uid` lives on the
    /// node (whether or not it exists); `None` for names that are not
    /// plain path components.
    pub fn empty_dir_path(&self, pod_uid: &str, volume: &str) -> Option<PathBuf> {
        let pod_dir = self.pod_dir(pod_uid).ok()?;
        is_plain_component(volume).then(|| pod_dir.join("volumes").join(EMPTY_DIR).join(volume))
    }

    fn pod_dir(&self, uid: &str) -> Result<PathBuf, VolumeError> {
        if !is_plain_component(uid) {
            return Err(VolumeError::InvalidPodUid(uid.to_string()));
        }
        Ok(self.pods_root.join(uid))
    }
}

impl PodVolumes {
    /// The CRI mounts of `container`'s `volumeMounts`, in order. `env` is the
    /// container's resolved environment, for `subPathExpr`. Sub paths are
    /// created if missing (with the volume root's mode) and must stay inside
    /// their volume; the runtime gets them with symlinks resolved.
    ///
    /// Does a few small file system calls (only for mounts with a sub path).
    pub fn mounts_for(
        &self,
        container: &Container,
        env: &[KeyValue],
    ) -> Result<Vec<Mount>, VolumeError> {
        let env: HashMap<&str, String> = env
            .iter()
            .map(|kv| {
                (
                    kv.key.as_str(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect();
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let volume =
                self.volumes
                    .get(&mount.name)
                    .ok_or_else(|| VolumeError::MissingVolume {
                        volume: mount.name.clone(),
                        container: container.name.clone(),
                    })?;
            let sub_path = match mount.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
                Some(expr) => subpath::expand(expr, &env).map_err(VolumeError::InvalidSubPath)?,
                None => mount.sub_path.clone().unwrap_or_default(),
            };
            let host_path = if sub_path.is_empty() {
                volume.host_path.clone()
            } else {
                subpath::validate(&sub_path).map_err(VolumeError::InvalidSubPath)?;
                subpath::resolve(&volume.host_path, &sub_path).map_err(|e| {
                    let action = match &e {
                        subpath::ResolveError::Create(_) => "create",
                        subpath::ResolveError::Resolve(_) => "prepare",
                    };
                    tracing::warn!(
                        container = %container.name,
                        volume = %mount.name,
                        sub_path = %sub_path,
                        error = %e,
                        "cannot {action} subPath"
                    );
                    VolumeError::SubPath {
                        action,
                        volume: mount.name.clone(),
                        container: container.name.clone(),
                    }
                })?
            };
            if mount.recursive_read_only.as_deref() == Some("Enabled") {
                return Err(VolumeError::RecursiveReadOnly(mount.name.clone()));
            }
            let container_path = if mount.mount_path.starts_with('/') {
                mount.mount_path.clone()
            } else {
                format!("/{}", mount.mount_path)
            };
            mounts.push(Mount {
                container_path,
                host_path: host_path.to_string_lossy().into_owned(),
                readonly: mount.read_only.unwrap_or(false) || volume.read_only,
                propagation: propagation(mount.mount_propagation.as_deref())? as i32,
                ..Mount::default()
            });
        }
        Ok(mounts)
    }
}

fn propagation(mode: Option<&str>) -> Result<MountPropagation, VolumeError> {
    match mode {
        None | Some("None") => Ok(MountPropagation::PropagationPrivate),
        Some("HostToContainer") => Ok(MountPropagation::PropagationHostToContainer),
        Some("Bidirectional") => Ok(MountPropagation::PropagationBidirectional),
        Some(other) => Err(VolumeError::InvalidPropagation(other.to_string())),
    }
}

/// How the pod's containers (of every kind) use volume `name`.
fn claim_usage(pod: &Pod, name: &str) -> claim::Usage {
    let mut usage = claim::Usage::default();
    let Some(spec) = pod.spec.as_ref() else {
        return usage;
    };
    let ephemeral = spec.ephemeral_containers.iter().flatten();
    let lists = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| (c.volume_mounts.as_deref(), c.volume_devices.as_deref()))
        .chain(ephemeral.map(|c| (c.volume_mounts.as_deref(), c.volume_devices.as_deref())));
    for (mounts, devices) in lists {
        usage.mounted |= mounts.unwrap_or_default().iter().any(|m| m.name == name);
        usage.as_device |= devices.unwrap_or_default().iter().any(|d| d.name == name);
    }
    usage
}

/// Locks a mutex, recovering from poisoning: the claim map stays consistent
/// whatever panicked while it was held.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `name` is a plain file name: pod uids and volume names become
/// path components under the pods root, and must not climb out of it.
fn is_plain_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Runs file system work off the async threads.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, VolumeError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(VolumeError::Io {
            op: "volume task",
            path: PathBuf::new(),
            source: io::Error::other(e),
        }),
    }
}

/// Works out what `volume` needs, reading the objects it projects.
async fn plan(
    pod: &Pod,
    volume: &Volume,
    objects: &dyn ObjectSource,
    node: &NodeAllocatable,
    tokens: Option<&TokenManager>,
) -> Result<Plan, VolumeError> {
    let set_up = |source| VolumeError::SetUp {
        volume: volume.name.clone(),
        source,
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");

    if let Some(source) = &volume.empty_dir {
        let mode = match source.mode {
            None => EMPTY_DIR_MODE,
            Some(mode) => u32::try_from(mode)
                .ok()
                .filter(|m| *m <= 0o1777)
                .ok_or(set_up(SetUpError::InvalidDirMode(mode)))?,
        };
        let tmpfs = match source.medium.as_deref().unwrap_or_default() {
            "" => None,
            "Memory" => Some(memory_size(pod, source.size_limit.as_ref(), node).map_err(set_up)?),
            other => {
                return Err(VolumeError::Unsupported {
                    volume: volume.name.clone(),
                    kind: format!("emptyDir medium {other}"),
                });
            }
        };
        return Ok(Plan::EmptyDir { mode, tmpfs });
    }
    if let Some(source) = &volume.host_path {
        return Ok(Plan::HostPath {
            path: source.path.clone(),
            path_type: source.type_.clone().unwrap_or_default(),
        });
    }
    if let Some(source) = &volume.config_map {
        let optional = source.optional.unwrap_or(false);
        let object = fetch_config_map(objects, namespace, &source.name, optional)
            .await
            .map_err(set_up)?;
        let payload = payload::config_map(
            object.as_deref(),
            source.items.as_deref(),
            source.default_mode,
            optional,
        )
        .map_err(set_up)?;
        return Ok(Plan::Files {
            plugin: CONFIG_MAP,
            tmpfs: false,
            payload,
        });
    }
    if let Some(source) = &volume.secret {
        let optional = source.optional.unwrap_or(false);
        let name = source.secret_name.as_deref().unwrap_or_default();
        let object = fetch_secret(objects, namespace, name, optional)
            .await
            .map_err(set_up)?;
        let payload = payload::secret(
            object.as_deref(),
            source.items.as_deref(),
            source.default_mode,
            optional,
        )
        .map_err(set_up)?;
        return Ok(Plan::Files {
            plugin: SECRET,
            tmpfs: true,
            payload,
        });
    }
    if let Some(source) = &volume.downward_api {
        let items = source.items.as_deref().unwrap_or_default();
        let payload = payload::downward(pod, items, source.default_mode, node).map_err(set_up)?;
        return Ok(Plan::Files {
            plugin: DOWNWARD_API,
            tmpfs: false,
            payload,
        });
    }
    if let Some(source) = &volume.projected {
        let sources = source.sources.as_deref().unwrap_or_default();
        let payload = projected(pod, sources, source.default_mode, objects, node, tokens)
            .await
            .map_err(set_up)?;
        return Ok(Plan::Files {
            plugin: PROJECTED,
            tmpfs: true,
            payload,
        });
    }
    Err(VolumeError::Unsupported {
        volume: volume.name.clone(),
        kind: volume_kind(volume),
    })
}

/// The API field name of a volume's source (`persistentVolumeClaim`, `csi`).
fn volume_kind(volume: &Volume) -> String {
    serde_json::to_value(volume)
        .ok()
        .and_then(|v| v.as_object()?.keys().find(|k| *k != "name").cloned())
        .unwrap_or_else(|| "sourceless".to_string())
}

async fn fetch_config_map(
    objects: &dyn ObjectSource,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<Option<Arc<k8s_openapi::api::core::v1::ConfigMap>>, SetUpError> {
    match objects.config_map(namespace, name).await? {
        None if !optional => Err(SetUpError::ConfigMapNotFound(name.to_string())),
        found => Ok(found),
    }
}

async fn fetch_secret(
    objects: &dyn ObjectSource,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<Option<Arc<k8s_openapi::api::core::v1::Secret>>, SetUpError> {
    match objects.secret(namespace, name).await? {
        None if !optional => Err(SetUpError::SecretNotFound(name.to_string())),
        found => Ok(found),
    }
}

/// The files of a projected volume: its sources in order, a later source's
/// file replacing an earlier one at the same path (upstream merges into one
/// map the same way). Errors of all sources are reported together.
async fn projected(
    pod: &Pod,
    sources: &[k8s_openapi::api::core::v1::VolumeProjection],
    default_mode: Option<i32>,
    objects: &dyn ObjectSource,
    node: &NodeAllocatable,
    tokens: Option<&TokenManager>,
) -> Result<Payload, SetUpError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut files = Payload::new();
    let mut errors = Vec::new();
    for source in sources {
        let result = if let Some(src) = &source.config_map {
            let optional = src.optional.unwrap_or(false);
            match fetch_config_map(objects, namespace, &src.name, optional).await {
                Ok(cm) => {
                    payload::config_map(cm.as_deref(), src.items.as_deref(), default_mode, optional)
                }
                Err(e) => Err(e),
            }
        } else if let Some(src) = &source.secret {
            let optional = src.optional.unwrap_or(false);
            match fetch_secret(objects, namespace, &src.name, optional).await {
                Ok(secret) => payload::secret(
                    secret.as_deref(),
                    src.items.as_deref(),
                    default_mode,
                    optional,
                ),
                Err(e) => Err(e),
            }
        } else if let Some(src) = &source.downward_api {
            payload::downward(
                pod,
                src.items.as_deref().unwrap_or_default(),
                default_mode,
                node,
            )
        } else if let Some(src) = &source.service_account_token {
            service_account_token(pod, src, default_mode, tokens).await
        } else if source.cluster_trust_bundle.is_some() {
            Err(SetUpError::UnsupportedProjection("clusterTrustBundle"))
        } else if source.pod_certificate.is_some() {
            Err(SetUpError::UnsupportedProjection("podCertificate"))
        } else {
            continue;
        };
        match result {
            Ok(payload) => files.extend(payload),
            Err(e) => errors.push(e),
        }
    }
    SetUpError::aggregate(errors).map_or(Ok(files), Err)
}

/// The token file of a `serviceAccountToken` projection. Its mode is the
/// volume's, but 0600 when the pod has an `fsGroup` or one user for all
/// its containers (the owner then), so that only the pod reads it.
async fn service_account_token(
    pod: &Pod,
    source: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
    default_mode: Option<i32>,
    tokens: Option<&TokenManager>,
) -> Result<Payload, SetUpError> {
    let tokens = tokens.ok_or(TokenError::Standalone)?;
    let owner = fs_user(pod);
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .is_some();
    let mode = if owner.is_some() || fs_group {
        0o600
    } else {
        payload::file_mode(None, default_mode)?
    };
    let token = tokens.token(&TokenKey::for_projection(pod, source)).await?;
    let file = FileProjection {
        data: token.into_bytes(),
        mode,
        owner,
    };
    Ok(Payload::from([(source.path.clone(), file)]))
}

/// The user every container of the pod runs as, if they all name the same
/// one (their own `runAsUser`, else the pod's): upstream's `FsUser`, which
/// owns the token files.
fn fs_user(pod: &Pod) -> Option<u32> {
    let spec = pod.spec.as_ref()?;
    let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    let ephemeral = spec.ephemeral_containers.iter().flatten();
    let users = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| c.security_context.as_ref())
        .chain(ephemeral.map(|c| c.security_context.as_ref()))
        .map(|sc| sc.and_then(|sc| sc.run_as_user).or(pod_user));
    let mut common = None;
    for user in users {
        let user = user?;
        if common.is_some_and(|c| c != user) {
            return None;
        }
        common = Some(user);
    }
    common.and_then(|u| u32::try_from(u).ok())
}

/// The size of a memory-backed `emptyDir`, as upstream sizes it: the node's
/// allocatable memory, lowered to the pod's memory limit and then to
/// `sizeLimit` when those are set and smaller.
fn memory_size(
    pod: &Pod,
    size_limit: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    node: &NodeAllocatable,
) -> Result<Option<u64>, SetUpError> {
    // Zero: the node did not say.
    let mut size = Some(node.memory_bytes).filter(|m| *m > 0);
    let mut lower = |candidate: u64| {
        if candidate > 0 && size.is_none_or(|s| candidate <= s) {
            size = Some(candidate);
        }
    };
    if let Some(limit) = pod_memory_limit(pod) {
        lower(limit);
    }
    if let Some(limit) = size_limit {
        let bytes = skiff_api::quantity::Quantity::parse(&limit.0)
            .map_err(|_| SetUpError::InvalidSizeLimit(limit.0.clone()))?
            .value();
        lower(u64::try_from(bytes).unwrap_or(0));
    }
    Ok(size)
}

/// The pod's memory limit as its cgroup gets it: the pod-level limit if set,
/// else, when every container declares one, the larger of the sum over
/// regular and sidecar containers and the largest other init container.
fn pod_memory_limit(pod: &Pod) -> Option<u64> {
    let spec = pod.spec.as_ref()?;
    let limit_of =
        |resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>| -> Option<u64> {
            let quantity = resources?.limits.as_ref()?.get("memory")?;
            let bytes = skiff_api::quantity::Quantity::parse(&quantity.0)
                .ok()?
                .value();
            u64::try_from(bytes).ok()
        };
    if let Some(limit) = limit_of(spec.resources.as_ref()) {
        return Some(limit);
    }
    let mut long_running = 0u64;
    for container in &spec.containers {
        long_running = long_running.saturating_add(limit_of(container.resources.as_ref())?);
    }
    let mut init_peak = 0u64;
    for init in spec.init_containers.iter().flatten() {
        let limit = limit_of(init.resources.as_ref())?;
        if init.restart_policy.as_deref() == Some("Always") {
            long_running = long_running.saturating_add(limit);
        } else {
            init_peak = init_peak.max(limit);
        }
    }
    Some(long_running.max(init_peak))
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SetUpError {
    move |source| SetUpError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The pod's `fsGroup` as a group id.
fn fs_group(pod: &Pod) -> Result<Option<u32>, VolumeError> {
    let group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group);
    group
        .map(|g| u32::try_from(g).map_err(|_| VolumeError::InvalidFsGroup(g)))
        .transpose()
}

/// Puts one planned volume on disk, owned by `fs_group` if there is one.
fn apply(
    pod_dir: &Path,
    mounter: &dyn Mounter,
    name: &str,
    plan: Plan,
    fs_group: Option<u32>,
) -> Result<PreparedVolume, SetUpError> {
    match plan {
        Plan::EmptyDir { mode, tmpfs } => {
            let dir = pod_dir.join("volumes").join(EMPTY_DIR).join(name);
            // The root keeps the bits the group walk gives it, or every
            // resync would take them away again.
            let mode = match fs_group {
                Some(_) => mode | ownership::dir_bits(false),
                None => mode,
            };
            setup_dir(&dir, mode)?;
            if let Some(size) = tmpfs {
                ensure_tmpfs(mounter, &dir, size)?;
                // A fresh tmpfs root is 1777; the volume's mode applies to it.
                fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
                    .map_err(io_err("chmod", &dir))?;
            }
            if let Some(gid) = fs_group {
                own(&dir, gid, false, false)?;
            }
            Ok(PreparedVolume {
                host_path: dir,
                read_only: false,
            })
        }
        Plan::HostPath { path, path_type } => {
            hostpath::check(&path, &path_type).map_err(SetUpError::HostPath)?;
            Ok(PreparedVolume {
                host_path: PathBuf::from(path),
                read_only: false,
            })
        }
        Plan::Claim { resolved, owner } => claim::set_up(&resolved, owner),
        Plan::Files {
            plugin,
            tmpfs,
            mut payload,
        } => {
            let dir = pod_dir.join("volumes").join(plugin).join(name);
            let mode = match fs_group {
                Some(_) => EMPTY_DIR_MODE | ownership::dir_bits(true),
                None => EMPTY_DIR_MODE,
            };
            setup_dir(&dir, mode)?;
            if tmpfs {
                ensure_tmpfs(mounter, &dir, None)?;
            }
            if fs_group.is_some() {
                // Written with the group bits already, so that the next
                // sync finds the files as it would write them.
                for file in payload.values_mut() {
                    file.mode |= ownership::file_bits(true);
                }
            }
            let changed = atomic::write(&dir, &payload)?;
            if let Some(gid) = fs_group {
                own(&dir, gid, true, changed)?;
            }
            Ok(PreparedVolume {
                host_path: dir,
                read_only: true,
            })
        }
    }
}

/// Gives `dir` to the group `gid`: a whole walk when its files were just
/// (re)written, else only if its root shows that no walk finished yet.
fn own(dir: &Path, gid: u32, read_only: bool, rewritten: bool) -> Result<(), SetUpError> {
    if !rewritten && ownership::root_matches(dir, gid, read_only).map_err(io_err("stat", dir))? {
        return Ok(());
    }
    ownership::apply(dir, gid, read_only).map_err(io_err("set ownership of", dir))
}

/// Creates `dir` (and its parents) and gives it exactly `mode`, whatever the
/// umask.
fn setup_dir(dir: &Path, mode: u32) -> Result<(), SetUpError> {
    fs::create_dir_all(dir).map_err(io_err("mkdir", dir))?;
    let meta = fs::symlink_metadata(dir).map_err(io_err("stat", dir))?;
    if !meta.is_dir() {
        return Err(io_err("mkdir", dir)(io::Error::from(
            io::ErrorKind::NotADirectory,
        )));
    }
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", dir))?;
    }
    Ok(())
}

fn ensure_tmpfs(mounter: &dyn Mounter, dir: &Path, size: Option<u64>) -> Result<(), SetUpError> {
    if mounter.is_mount_point(dir).map_err(io_err("stat", dir))? {
        return Ok(());
    }
    mounter
        .mount_tmpfs(dir, size)
        .map_err(io_err("mount tmpfs on", dir))
}

/// Unmounts everything under `pod_dir`, then removes it.
fn remove_pod_dir(pod_dir: &Path, mounter: &dyn Mounter) -> Result<(), VolumeError> {
    let io_err = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| VolumeError::Io { op, path, source }
    };
    let meta = match fs::symlink_metadata(pod_dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat", pod_dir)(e)),
    };
    if !meta.is_dir() {
        // A symlink (or file) in place of the pod directory: remove the entry
        // itself, never what it points at.
        return fs::remove_file(pod_dir).map_err(io_err("remove", pod_dir));
    }

    // Deepest first, so that stacked and nested mounts come off in order.
    let mut mounts = mounter
        .mounts_under(pod_dir)
        .map_err(io_err("list mounts under", pod_dir))?;
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for mount in &mounts {
        for _ in 0..MAX_STACKED_MOUNTS {
            if !mounter
                .is_mount_point(mount)
                .map_err(io_err("stat", mount))?
            {
                break;
            }
            mounter.unmount(mount).map_err(io_err("unmount", mount))?;
        }
    }
    let left = mounter
        .mounts_under(pod_dir)
        .map_err(io_err("list mounts under", pod_dir))?;
    if let Some(mount) = left.into_iter().next() {
        return Err(VolumeError::StillMounted {
            pod_dir: pod_dir.to_path_buf(),
            mount,
        });
    }
    // `remove_dir_all` unlinks symlinks rather than following them.
    match fs::remove_dir_all(pod_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", pod_dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::StaticObjects;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use serde_json::json;

    const UID: &str = "0f6b1d3e-uid";

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        mounter: Arc<FakeMounter>,
        manager: VolumeManager,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("pods");
        let mounter = Arc::new(FakeMounter::new());
        let manager = VolumeManager::new(root.clone(), mounter.clone());
        Fixture {
            _dir: dir,
            root,
            mounter,
            manager,
        }
    }

    fn node() -> NodeAllocatable {
        NodeAllocatable {
            memory_bytes: 8 << 30,
            ..Default::default()
        }
    }

    fn pod(volumes: serde_json::Value, mounts: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": UID, "labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "main",
                    "image": "busybox",
                    "volumeMounts": mounts,
                    "resources": {"limits": {"memory": "256Mi"}},
                }],
                "volumes": volumes,
            },
        }))
        .expect("pod")
    }

    fn config_map(data: serde_json::Value) -> ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": "cfg", "namespace": "ns"}, "data": data}),
        )
        .expect("configmap")
    }

    fn secret(data: serde_json::Value) -> Secret {
        serde_json::from_value(
            json!({"metadata": {"name": "creds", "namespace": "ns"}, "data": data}),
        )
        .expect("secret")
    }

    fn container(pod: &Pod) -> &Container {
        &pod.spec.as_ref().expect("spec").containers[0]
    }

    fn volume_dir(f: &Fixture, plugin: &str, name: &str) -> PathBuf {
        f.root.join(UID).join("volumes").join(plugin).join(name)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    /// The pod worker runs on a multi-threaded runtime.
    #[test]
    fn futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let f = fixture();
        let pod = pod(json!([]), json!([]));
        let objects = StaticObjects::default();
        let node = node();
        assert_send(&f.manager.prepare(&pod, &objects, &node));
        assert_send(&f.manager.cleanup(UID));
    }

    #[tokio::test]
    async fn empty_dir_is_a_world_writable_directory() {
        let f = fixture();
        let pod = pod(
            json!([{"name": "scratch", "emptyDir": {}}]),
            json!([{"name": "scratch", "mountPath": "/scratch"}, {"name": "scratch", "mountPath": "ro", "readOnly": true}]),
        );
        let volumes = f
            .manager
            .prepare(&pod, &StaticObjects::default(), &node())
            .await
            .expect("prepare");
        let dir = volume_dir(&f, EMPTY_DIR, "scratch");
        assert_eq!(mode(&dir), 0o777);

        let mounts = volumes.mounts_for(container(&pod), &[]).expect("mounts");
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].container_path, "/scratch");
        assert_eq!(mounts[0].host_path, dir.to_string_lossy());
        assert!(!mounts[0].readonly);
        assert_eq!(mounts[1].container_path, "/ro");
        assert!(mounts[1].readonly);
        assert!(f.mounter.calls().is_empty());
    }

    #[tokio::test]
    async fn memory_empty_dir_is_a_tmpfs_sized_like_upstream() {
        let f = fixture();
        let pod = pod(
            json!([
                {"name": "small", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                {"name": "big", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
                {"name": "unset", "emptyDir": {"medium": "Memory"}},
            ]),
            json!([]),
        );
        let objects = StaticObjects::default();
        f.manager
            .prepare(&pod, &objects, &node())
            .await
            .expect("prepare");
        let calls = f.mounter.calls();
        let expected = [
            MountCall::MountTmpfs(volume_dir(&f, EMPTY_DIR, "small"), Some(64 << 20)),
            // The pod's 256Mi memory limit is below the 1Gi sizeLimit.
            MountCall::MountTmpfs(volume_dir(&f, EMPTY_DIR, "big"), Some(256 << 20)),
            MountCall::MountTmpfs(volume_dir(&f, EMPTY_DIR, "unset"), Some(256 << 20)),
        ];
        assert_eq!(calls, expected);

        // Idempotent: already mounted, nothing new.
        f.manager
            .prepare(&pod, &objects, &node())
            .await
            .expect("again");
        assert_eq!(f.mounter.calls().len(), 3);
    }

    #[test]
    fn pod_memory_limit_needs_every_container_limited() {
        let mut unlimited = pod(json!([]), json!([]));
        if let Some(spec) = unlimited.spec.as_mut() {
            spec.containers.push(Container {
                name: "sidecar".into(),
                ..Container::default()
            });
        }
        assert_eq!(pod_memory_limit(&unlimited), None);
        let size = memory_size(&unlimited, None, &node()).expect("size");
        assert_eq!(size, Some(8 << 30), "falls back to node allocatable");
    }

    #[tokio::test]
    async fn config_map_volume_follows_updates_and_drops_removed_keys() {
        let f = fixture();
        let pod = pod(
            json!([{"name": "config", "configMap": {"name": "cfg"}}]),
            json!([{"name": "config", "mountPath": "/etc/app"}]),
        );
        let dir = volume_dir(&f, CONFIG_MAP, "config");

        let v1 = StaticObjects::default()
            .with_config_map(config_map(json!({"a.conf": "one", "b.conf": "two"})));
        let volumes = f
            .manager
            .prepare(&pod, &v1, &node())
            .await
            .expect("prepare v1");
        assert_eq!(fs::read_to_string(dir.join("a.conf")).expect("a"), "one");
        assert_eq!(fs::read_to_string(dir.join("b.conf")).expect("b"), "two");
        assert_eq!(mode(&dir.join("a.conf")), 0o644);
        let mounts = volumes.mounts_for(container(&pod), &[]).expect("mounts");
        assert!(mounts[0].readonly, "projected files are always read-only");

        let v2 = StaticObjects::default().with_config_map(config_map(json!({"a.conf": "uno"})));
        f.manager
            .prepare(&pod, &v2, &node())
            .await
            .expect("prepare v2");
        assert_eq!(fs::read_to_string(dir.join("a.conf")).expect("a"), "uno");
        assert!(
            fs::symlink_metadata(dir.join("b.conf")).is_err(),
            "removed key is gone"
        );
        assert_eq!(
            fs::read_link(dir.join("a.conf")).expect("link"),
            Path::new("..data/a.conf")
        );
    }

    fn with_fs_group(mut pod: Pod, group: i64) -> Pod {
        if let Some(spec) = pod.spec.as_mut() {
            spec.security_context = Some(k8s_openapi::api::core::v1::PodSecurityContext {
                fs_group: Some(group),
                ..Default::default()
            });
        }
        pod
    }

    fn owner(path: &Path) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path).expect("stat");
        (meta.gid(), meta.mode() & 0o7777)
    }

    #[tokio::test]
    async fn fs_group_owns_written_volumes_but_not_host_paths() {
        let f = fixture();
        let gid = ownership::test_gid();
        let host = tempfile::tempdir().expect("host dir");
        let host_gid = owner(host.path()).0;
        let objects = StaticObjects::default()
            .with_config_map(config_map(json!({"app.conf": "x"})))
            .with_secret(secret(json!({"token": "c2VjcmV0"})));
        let pod = with_fs_group(
            pod(
                json!([
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "ram", "emptyDir": {"medium": "Memory"}},
                    {"name": "config", "configMap": {"name": "cfg"}},
                    {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                    {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                    {"name": "host", "hostPath": {"path": host.path()}},
                ]),
                json!([]),
            ),
            i64::from(gid),
        );
        f.manager
            .prepare(&pod, &objects, &node())
            .await
            .expect("prepare");

        // Writable: group rw and setgid on top of the emptyDir's 0777.
        assert_eq!(owner(&volume_dir(&f, EMPTY_DIR, "scratch")), (gid, 0o2777));
        assert_eq!(owner(&volume_dir(&f, EMPTY_DIR, "ram")), (gid, 0o2777));
        // Projected: group read on files, 0440 for a 0400 secret.
        let config = volume_dir(&f, CONFIG_MAP, "config");
        assert_eq!(owner(&config), (gid, 0o2777));
        assert_eq!(owner(&config.join("app.conf")), (gid, 0o644));
        assert_eq!(owner(&config.join("..data")), (gid, 0o2755));
        let creds = volume_dir(&f, SECRET, "creds");
        assert_eq!(owner(&creds.join("token")), (gid, 0o440));
        let info = volume_dir(&f, DOWNWARD_API, "info");
        assert_eq!(owner(&info.join("name")).0, gid);
        assert_eq!(owner(host.path()).0, host_gid, "hostPath is left alone");

        // A resync neither rewrites the files nor walks the volumes again.
        let version = fs::read_link(creds.join("..data")).expect("version");
        let scratch = volume_dir(&f, EMPTY_DIR, "scratch");
        let written = scratch.join("private");
        fs::write(&written, b"x").expect("write");
        fs::set_permissions(&written, fs::Permissions::from_mode(0o600)).expect("chmod");
        f.manager
            .prepare(&pod, &objects, &node())
            .await
            .expect("resync");
        assert_eq!(
            fs::read_link(creds.join("..data")).expect("version"),
            version
        );
        assert_eq!(
            owner(&written),
            (gid, 0o600),
            "setgid gave the group; no walk"
        );
        assert_eq!(owner(&scratch), (gid, 0o2777));

        // New contents are walked again.
        let updated = StaticObjects::default()
            .with_config_map(config_map(json!({"app.conf": "y", "more.conf": "z"})))
            .with_secret(secret(json!({"token": "c2VjcmV0"})));
        f.manager
            .prepare(&pod, &updated, &node())
            .await
            .expect("update");
        assert_eq!(owner(&config.join("more.conf")), (gid, 0o644));
        assert_eq!(
            fs::read_to_string(config.join("app.conf")).expect("read"),
            "y"
        );
    }

    #[tokio::test]
    async fn without_fs_group_volumes_keep_their_modes() {
        let f = fixture();
        let objects = StaticObjects::default().with_secret(secret(json!({"token": "c2VjcmV0"})));
        let pod = pod(
            json!([
                {"name": "scratch", "emptyDir": {}},
                {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
            ]),
            json!([]),
        );
        f.manager
            .prepare(&pod, &objects, &node())
            .await
            .expect("prepare");
        assert_eq!(owner(&volume_dir(&f, EMPTY_DIR, "scratch")).1, 0o777);
        assert_eq!(
            owner(&volume_dir(&f, SECRET, "creds").join("token")).1,
            0o400
        );

        let bad = with_fs_group(pod, -1);
        let err = f
            .manager
            .prepare(&bad, &objects, &node())
            .await
            .expect_err("negative group");
        assert_eq!(err.to_string(), "invalid fsGroup -1: must be a group id");
    }

    #[test]
    fn empty_dir_paths_follow_the_layout_and_refuse_escapes() {
        let f = fixture();
        assert_eq!(
            f.manager.empty_dir_path(UID, "cache"),
            Some(volume_dir(&f, EMPTY_DIR, "cache"))
        );
        assert_eq!(f.manager.empty_dir_path(UID, ".."), None);
        assert_eq!(f.manager.empty_dir_path("../x", "cache"), None);
    }

    #[tokio::test]
    async fn missing_config_map_fails_with_upstream_message_unless_optional() {
        let f = fixture();
        let objects = StaticObjects::default();
        let required = pod(
            json!([{"name": "config", "configMap": {"name": "x"}}]),
            json!([]),
        );
        let err = f
            .manager
            .prepare(&required, &objects, &node())
            .await
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"config\" : configmap \"x\" not found"
        );

        let optional = pod(
            json!([{"name": "config", "configMap": {"name": "x", "optional": true}}]),
            json!([]),
        );
        f.manager
            .prepare(&optional, &objects, &node())
            .await
            .expect("optional");
        assert!(volume_dir(&f, CONFIG_MAP, "config").is_dir());

        let missing_secret = pod(
            json!([{"name": "s", "secret": {"secretName": "nope"}}]),
            json!([]),
        );
        let err = f
            .manager
            .prepare(&missing_secret, &objects, &node())
            .await
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"s\" : secret \"nope\" not found"
        );
    }

    #[tokio::test]
    async fn secret_items_map_keys_to_paths_with_modes_on_a_tmpfs() {
        let f = fixture();
        // "AP8K" is base64 of the bytes 0x00 0xff 0x0a.
        let objects = StaticObjects::default()
            .with_secret(secret(json!({"bin": "AP8K", "user": "YWRtaW4="})));
        let pod = pod(
            json!([{"name": "creds", "secret": {
                "secretName": "creds",
                "defaultMode": 0o400,
                "items": [{"key": "bin", "path": "keys/bin.dat", "mode": 0o600}, {"key": "user", "path": "user"}],
            }}]),
            json!([]),
        );
        f.manager
            .prepare(&pod, &objects, &node())
            .await
            .expect("prepare");
        let dir = volume_dir(&f, SECRET, "creds");
        assert_eq!(
            fs::read(dir.join("keys/bin.dat")).expect("bin"),
            [0u8, 0xff, 0x0a]
        );
        assert_eq!(fs::read_to_string(dir.join("user")).expect("user"), "admin");
        assert_eq!(mode(&dir.join("keys/bin.dat")), 0o600);
        assert_eq!(mode(&dir.join("user")), 0o400);
        assert_eq!(f.mounter.mounted(), [dir]);

        let bad_key = pod_with_secret_items(json!([{"key": "missing", "path": "m"}]), false);
        let err = f
            .manager
            .prepare(&bad_key, &objects, &node())
            .await
            .expect_err("missing key");
        assert!(
            err.to_string()
                .ends_with(": references non-existent secret key: missing"),
            "{err}"
        );
        let optional = pod_with_secret_items(
            json!([{"key": "missing", "path": "m"}, {"key": "user", "path": "u"}]),
            true,
        );
        f.manager
            .prepare(&optional, &objects, &node())
            .await
            .expect("optional skips missing keys");
    }

    fn pod_with_secret_items(items: serde_json::Value, optional: bool) -> Pod {
        pod(
            json!([{"name": "creds", "secret": {"secretName": "creds", "items": items, "optional": optional}}]),
            json!([]),
        )
    }

    #[tokio::test]
    async fn config_map_binary_data_is_written_raw() {
        let f = fixture();
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "cfg", "namespace": "ns"},
            "data": {"text": "hello"},
            "binaryData": {"blob": "AP8K"},
        }))
        .expect("configmap");
        let objects = StaticObjects::default().with_config_map(cm);
        let pod = pod(
            json!([{"name": "c", "configMap": {"name": "cfg", "defaultMode": 0o755}}]),
            json!([]),
        );
        f.manager
            .prepare(&pod, &objects, &node())
            .await
            .expect("prepare");
        let dir = volume_dir(&f, CONFIG_MAP, "c");
        assert_eq!(fs::read(dir.join("blob")).expect("blob"), [0u8, 0xff, 0x0a]);
        assert_eq!(fs::read_to_string(dir.join("text")).expect("text"), "hello");
        assert_eq!(mode(&dir.join("blob")), 0o755);
    }

    #[tokio::test]
    async fn downward_api_volume_writes_pod_fields() {
        let f = fixture();
        let pod = pod(
            json!([{"name": "info", "downwardAPI": {"items": [
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "ns/namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "mem", "resourceFieldRef": {
                    "containerName": "main", "resource": "limits.memory", "divisor": "1Mi",
                }},
            ]}}]),
            json!([]),
        );
        f.manager
            .prepare(&pod, &StaticObjects::default(), &node())
            .await
            .expect("prepare");
        let dir = volume_dir(&f, DOWNWARD_API, "info");
        assert_eq!(fs::read_to_string(dir.join("name")).expect("name"), "web");
        assert_eq!(
            fs::read_to_string(dir.join("ns/namespace")).expect("ns"),
            "ns"
        );
        assert_eq!(
            fs::read_to_string(dir.join("labels")).expect("labels"),
            "app=\"web\""
        );
        assert_eq!(fs::read_to_string(dir.join("mem")).expect("mem"), "256");

        let bad = self::pod(
            json!([{"name": "info", "downwardAPI": {"items": [
                {"path": "a", "fieldRef": {"fieldPath": "spec.nope"}},
                {"path": "b", "resourceFieldRef": {"containerName": "ghost", "resource": "limits.cpu"}},
            ]}}]),
            json!([]),
        );
        let err = f
            .manager
            .prepare(&bad, &StaticObjects::default(), &node())
            .await
            .expect_err("bad");
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"info\" : \
             [unsupported fieldPath: spec.nope, container ghost not found]"
        );
    }

    #[tokio::test]
    async fn projected_volume_merges_sources() {
        let f = fixture();
        let objects = StaticObjects::default()
            .with_config_map(config_map(json!({"app.conf": "cfg"})))
            .with_secret(secret(json!({"token": "c2VjcmV0"})));
        let pod = pod(
            json!([{"name": "all", "projected": {"defaultMode": 0o440, "sources": [
                {"configMap": {"name": "cfg"}},
                {"secret": {"name": "creds", "items": [{"key": "token", "path": "creds/token"}]}},
                {"downwardAPI": {"items": [{"path": "podname", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"secret": {"name": "absent", "optional": true}},
            ]}}]),
            json!([]),
        );
        f.manager
            .prepare(&pod, &objects, &node())
            .await
            .expect("prepare");
        let dir = volume_dir(&f, PROJECTED, "all");
        assert_eq!(
            fs::read_to_string(dir.join("app.conf")).expect("cfg"),
            "cfg"
        );
        assert_eq!(
            fs::read_to_string(dir.join("creds/token")).expect("token"),
            "secret"
        );
        assert_eq!(
            fs::read_to_string(dir.join("podname")).expect("name"),
            "web"
        );
        assert_eq!(mode(&dir.join("app.conf")), 0o440);
        assert_eq!(f.mounter.mounted(), [dir]);

        let broken =
            pod_projecting(json!([{"configMap": {"name": "gone"}}, {"secret": {"name": "gone"}}]));
        let err = f
            .manager
            .prepare(&broken, &objects, &node())
            .await
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"all\" : [configmap \"gone\" not found, secret \"gone\" not found]"
        );
    }

    fn pod_projecting(sources: serde_json::Value) -> Pod {
        pod(
            json!([{"name": "all", "projected": {"sources": sources}}]),
            json!([]),
        )
    }

    #[tokio::test]
    async fn host_path_types_are_checked() {
        let f = fixture();
        let host = tempfile::tempdir().expect("host");
        let missing = host.path().join("missing");
        let pod_for = |path: &Path, kind: &str| {
            pod(
                json!([{"name": "h", "hostPath": {"path": path, "type": kind}}]),
                json!([{"name": "h", "mountPath": "/host"}]),
            )
        };
        let err = f
            .manager
            .prepare(
                &pod_for(&missing, "Directory"),
                &StaticObjects::default(),
                &node(),
            )
            .await
            .expect_err("missing dir");
        assert_eq!(
            err.to_string(),
            format!(
                "MountVolume.SetUp failed for volume \"h\" : hostPath {} doesn't exist",
                missing.display()
            )
        );

        let pod = pod_for(&missing, "DirectoryOrCreate");
        let volumes = f
            .manager
            .prepare(&pod, &StaticObjects::default(), &node())
            .await
            .expect("create");
        assert!(missing.is_dir());
        let mounts = volumes.mounts_for(container(&pod), &[]).expect("mounts");
        assert_eq!(mounts[0].host_path, missing.to_string_lossy());
    }

    #[tokio::test]
    async fn unsupported_volume_types_are_named() {
        let f = fixture();
        let pod = pod(
            json!([{"name": "data", "nfs": {"server": "nas", "path": "/export"}}]),
            json!([]),
        );
        let err = f
            .manager
            .prepare(&pod, &StaticObjects::default(), &node())
            .await
            .expect_err("nfs");
        assert!(matches!(&err, VolumeError::Unsupported { kind, .. } if kind == "nfs"));
        assert!(
            err.to_string().contains("nfs volumes are not supported"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn sub_paths_are_created_expanded_and_confined() {
        let f = fixture();
        let pod = pod(
            json!([{"name": "data", "emptyDir": {}}]),
            json!([
                {"name": "data", "mountPath": "/logs", "subPathExpr": "logs/$(POD_NAME)"},
                {"name": "data", "mountPath": "/cache", "subPath": "cache", "mountPropagation": "HostToContainer"},
            ]),
        );
        let volumes = f
            .manager
            .prepare(&pod, &StaticObjects::default(), &node())
            .await
            .expect("prepare");
        let env = [KeyValue {
            key: "POD_NAME".into(),
            value: b"web".to_vec(),
        }];
        let mounts = volumes.mounts_for(container(&pod), &env).expect("mounts");
        let root = volume_dir(&f, EMPTY_DIR, "data")
            .canonicalize()
            .expect("canon");
        assert_eq!(mounts[0].host_path, root.join("logs/web").to_string_lossy());
        assert!(root.join("logs/web").is_dir());
        assert_eq!(mode(&root.join("logs/web")), 0o777);
        assert_eq!(
            mounts[1].propagation,
            MountPropagation::PropagationHostToContainer as i32
        );

        let err = volumes
            .mounts_for(container(&pod), &[])
            .expect_err("unset var");
        assert_eq!(err.to_string(), "missing value for POD_NAME");

        let outside = tempfile::tempdir().expect("outside");
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).expect("symlink");
        let cases = [
            (
                json!({"name": "data", "mountPath": "/x", "subPath": "../../etc"}),
                "must not contain '..'",
            ),
            (
                json!({"name": "data", "mountPath": "/x", "subPath": "/etc"}),
                "must not be an absolute path",
            ),
            (
                json!({"name": "data", "mountPath": "/x", "subPath": "escape/new"}),
                "failed to prepare subPath for volumeMount \"data\" of container \"main\"",
            ),
            (
                json!({"name": "nope", "mountPath": "/x"}),
                "cannot find volume \"nope\" to mount into container \"main\"",
            ),
            (
                json!({"name": "data", "mountPath": "/x", "mountPropagation": "Sideways"}),
                "invalid MountPropagation mode: \"Sideways\"",
            ),
        ];
        for (mount, message) in cases {
            let bad = self::pod(json!([{"name": "data", "emptyDir": {}}]), json!([mount]));
            let err = volumes
                .mounts_for(container(&bad), &env)
                .expect_err(message);
            assert!(err.to_string().contains(message), "{err} !~ {message}");
        }
        assert!(!outside.path().join("new").exists());
    }

    #[tokio::test]
    async fn cleanup_unmounts_and_never_follows_symlinks() {
        let f = fixture();
        let pod = pod(
            json!([{"name": "mem", "emptyDir": {"medium": "Memory"}}, {"name": "disk", "emptyDir": {}}]),
            json!([]),
        );
        f.manager
            .prepare(&pod, &StaticObjects::default(), &node())
            .await
            .expect("prepare");
        let outside = tempfile::tempdir().expect("outside");
        fs::write(outside.path().join("precious"), "keep").expect("write");
        let disk = volume_dir(&f, EMPTY_DIR, "disk");
        std::os::unix::fs::symlink(outside.path(), disk.join("link")).expect("symlink");

        assert_eq!(f.manager.pod_dirs().expect("dirs"), [UID]);
        f.manager.cleanup(UID).await.expect("cleanup");
        assert!(!f.root.join(UID).exists());
        assert!(f.mounter.mounted().is_empty());
        assert!(
            f.mounter
                .calls()
                .contains(&MountCall::Unmount(volume_dir(&f, EMPTY_DIR, "mem")))
        );
        assert_eq!(
            fs::read_to_string(outside.path().join("precious")).expect("kept"),
            "keep"
        );
        assert!(f.manager.pod_dirs().expect("dirs").is_empty());

        f.manager
            .cleanup(UID)
            .await
            .expect("cleanup of a gone pod is a no-op");
    }

    #[tokio::test]
    async fn cleanup_removes_a_symlinked_pod_dir_as_a_link() {
        let f = fixture();
        let outside = tempfile::tempdir().expect("outside");
        fs::write(outside.path().join("precious"), "keep").expect("write");
        fs::create_dir_all(&f.root).expect("root");
        std::os::unix::fs::symlink(outside.path(), f.root.join("evil")).expect("symlink");
        f.manager.cleanup("evil").await.expect("cleanup");
        assert!(fs::symlink_metadata(f.root.join("evil")).is_err());
        assert!(outside.path().join("precious").exists());
    }

    #[tokio::test]
    async fn cleanup_refuses_uids_that_are_not_one_component() {
        let f = fixture();
        for uid in ["", ".", "..", "a/b", "../pods", "/etc"] {
            let err = f.manager.cleanup(uid).await.expect_err(uid);
            assert!(matches!(err, VolumeError::InvalidPodUid(_)), "{uid}: {err}");
        }
    }

    /// A mounter whose unmounts fail, as with a busy mount.
    struct StuckMounter(FakeMounter);

    impl Mounter for StuckMounter {
        fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>) -> io::Result<()> {
            self.0.mount_tmpfs(target, size_bytes)
        }
        fn unmount(&self, _target: &Path) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::ResourceBusy))
        }
        fn is_mount_point(&self, path: &Path) -> io::Result<bool> {
            self.0.is_mount_point(path)
        }
        fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
            self.0.mounts_under(dir)
        }
    }

    #[tokio::test]
    async fn cleanup_keeps_the_directory_while_a_mount_is_stuck() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager = VolumeManager::new(
            dir.path().to_path_buf(),
            Arc::new(StuckMounter(FakeMounter::new())),
        );
        let pod = pod(
            json!([{"name": "mem", "emptyDir": {"medium": "Memory"}}]),
            json!([]),
        );
        manager
            .prepare(&pod, &StaticObjects::default(), &node())
            .await
            .expect("prepare");
        let err = manager.cleanup(UID).await.expect_err("busy");
        assert!(
            matches!(err, VolumeError::Io { op: "unmount", .. }),
            "{err}"
        );
        assert!(dir.path().join(UID).is_dir());
    }

    /// The real thing: a tmpfs mounted, written and torn down. Needs root.
    #[tokio::test]
    async fn real_tmpfs_round_trip() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: mounting tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mounter = Arc::new(LinuxMounter);
        let manager = VolumeManager::new(dir.path().to_path_buf(), mounter.clone());
        let pod = pod(
            json!([{"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}]),
            json!([]),
        );
        let volume = dir
            .path()
            .join(UID)
            .join("volumes")
            .join(EMPTY_DIR)
            .join("mem");
        let result = manager
            .prepare(&pod, &StaticObjects::default(), &node())
            .await;
        // Tear down even if an assertion below fails.
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                while LinuxMounter.is_mount_point(self.0).unwrap_or(false) {
                    if LinuxMounter.unmount(self.0).is_err() {
                        break;
                    }
                }
            }
        }
        let _guard = Unmount(&volume);
        result.expect("prepare");

        assert!(mounter.is_mount_point(&volume).expect("stat"));
        assert_eq!(mounter.mounts_under(dir.path()).expect("mounts").len(), 1);
        assert_eq!(mode(&volume), 0o777);
        let stat = rustix::fs::statfs(&volume).expect("statfs");
        assert_eq!(stat.f_type, 0x0102_1994, "TMPFS_MAGIC");
        assert_eq!(stat.f_blocks * stat.f_bsize as u64, 8 << 20);
        fs::write(volume.join("f"), "x").expect("write");

        manager
            .prepare(&pod, &StaticObjects::default(), &node())
            .await
            .expect("idempotent");
        assert_eq!(
            mounter.mounts_under(dir.path()).expect("mounts").len(),
            1,
            "not mounted twice"
        );

        manager.cleanup(UID).await.expect("cleanup");
        assert!(!dir.path().join(UID).exists());
        assert!(mounter.mounts_under(dir.path()).expect("mounts").is_empty());
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let table = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                     37 35 0:5 / /var/lib/pods/x tmpfs rw - tmpfs tmpfs rw\n";
        let paths: Vec<PathBuf> = mount::mount_points(table).collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("/mnt/with space"),
                PathBuf::from("/var/lib/pods/x")
            ]
        );
    }
}
