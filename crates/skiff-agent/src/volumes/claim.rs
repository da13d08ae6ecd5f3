//! `persistentVolumeClaim` volumes: the claim is followed to its bound
//! PersistentVolume, whose node directory the containers bind-mount.
//!
//! This is upstream's desired-state populator and volume plugins reduced to
//! what a node without attachable storage needs:
//!
//! - The claim (in the pod's namespace) must exist, be `Bound` with a
//!   `spec.volumeName`, and not be on its way out: a claim being deleted
//!   without the `kubernetes.io/pvc-protection` finalizer is refused (with
//!   the finalizer, deletion waits for the pods, so pods already using the
//!   claim keep running across an agent restart).
//! - The volume must exist and point back at the claim (`claimRef.uid`).
//! - Only file-system volumes backed by a node directory are served:
//!   `hostPath` (checked against its `type` as a `hostPath` pod volume is)
//!   and `local` (an existing directory). Anything else (`nfs`, `csi`, raw
//!   block) is refused with a message naming the volume's kind.
//!
//! The CRI runtime bind-mounts the directory into each container, so no
//! mount of our own is needed. `readOnly` on the pod's claim volume makes
//! every mount of it read-only, as upstream's mounter attributes do.
//!
//! Ownership follows the plugins: upstream's `hostPath` mounter never
//! changes ownership (the directory belongs to the node, and may be shared
//! by anything on it), while the `local` mounter gives a writable volume to
//! the pod's `fsGroup` when it is first mounted on the node, skipping the
//! walk under `fsGroupChangePolicy: OnRootMismatch` when the root already
//! shows the group, and leaving it alone while another pod on the node uses
//! the volume.
//!
//! Resolution errors are not set-up errors: upstream keeps such a volume
//! out of its desired state and reports it as "failed to process"
//! ([`ClaimsNotReady`]), then retries. A claim that binds later is picked up
//! by the next sync, without the pod being recreated.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaimVolumeSource};

use super::{PreparedVolume, SetUpError, hostpath, ownership};
use crate::objects::{ObjectError, ObjectSource};

/// The finalizer that makes a claim's deletion wait for its pods.
const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

/// The `spec` fields of a PersistentVolume that are not its source.
const NON_SOURCE_FIELDS: &[&str] = &[
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeAttributesClassName",
    "volumeMode",
];

/// Why a claim volume cannot be used yet. Displays as the clear message of
/// its own `FailedMount` event; [`ClaimError::processing_error`] is
/// upstream's wording inside the summary event. All are retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// The claim could not be read from the API server.
    #[error(transparent)]
    Read(ObjectError),
    /// The claim does not exist.
    #[error("persistentvolumeclaim \"{0}\" not found")]
    NotFound(String),
    /// The claim is being deleted and nothing holds its deletion.
    #[error("persistentvolumeclaim \"{0}\" is being deleted")]
    BeingDeleted(String),
    /// The claim is not `Bound` or names no volume.
    #[error("PersistentVolumeClaim is not bound: \"{claim}\"")]
    NotBound {
        /// The claim.
        claim: String,
        /// Its phase (`Pending`, `Lost`, or empty).
        phase: String,
    },
    /// The bound volume could not be read.
    #[error(transparent)]
    ReadVolume(ObjectError),
    /// The bound volume does not exist.
    #[error(
        "persistentvolumeclaim \"{claim}\" bound to non-existent persistentvolume \"{volume}\""
    )]
    VolumeNotFound {
        /// The claim.
        claim: String,
        /// The volume it names.
        volume: String,
    },
    /// The volume does not point back at the claim.
    #[error(
        "persistentvolume \"{volume}\" is not bound to persistentvolumeclaim \"{claim}\" (its claimRef uid is {found:?}, the claim's is {expected:?})"
    )]
    ClaimRefMismatch {
        /// The claim.
        claim: String,
        /// The volume.
        volume: String,
        /// The volume's `claimRef.uid`, if any.
        found: Option<String>,
        /// The claim's uid.
        expected: String,
    },
    /// A raw block volume mounted as a directory.
    #[error("volume \"{volume}\" has volumeMode Block, but is specified in volumeMounts")]
    BlockVolumeMounted {
        /// The pod's volume name.
        volume: String,
    },
    /// The pod asks for the claim as a raw block device.
    #[error(
        "volume \"{volume}\" is specified in volumeDevices; raw block volumes are not supported by this node"
    )]
    RawBlock {
        /// The pod's volume name.
        volume: String,
    },
    /// The volume's source is not a node directory.
    #[error(
        "persistentvolume \"{volume}\" is a {kind} volume; this node mounts only hostPath and local persistent volumes"
    )]
    UnsupportedSource {
        /// The volume.
        volume: String,
        /// Its source, as the API field name (`nfs`, `csi`).
        kind: String,
    },
}

impl ClaimError {
    /// Upstream's description of the failure, as its volume manager words
    /// it after `error processing PVC <namespace>/<claim>: `.
    pub fn processing_error(&self) -> String {
        match self {
            ClaimError::Read(e) => format!("failed to fetch PVC from API server: {}", e.message),
            ClaimError::NotFound(claim) => format!(
                "failed to fetch PVC from API server: persistentvolumeclaims \"{claim}\" not found"
            ),
            ClaimError::BeingDeleted(_) => "PVC is being deleted".into(),
            ClaimError::NotBound { .. } => "PVC is not bound".into(),
            ClaimError::ReadVolume(e) => format!(
                "failed to fetch PV {} from API server: {}",
                e.name, e.message
            ),
            ClaimError::VolumeNotFound { volume, .. } => format!(
                "failed to fetch PV {volume} from API server: persistentvolumes \"{volume}\" not found"
            ),
            ClaimError::ClaimRefMismatch {
                volume,
                found: None,
                ..
            } => format!(
                "found PV object {volume} but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim"
            ),
            ClaimError::ClaimRefMismatch {
                volume,
                found: Some(found),
                expected,
                ..
            } => format!(
                "found PV object {volume} but its pv.Spec.ClaimRef.UID {found} does not point to claim.UID {expected}"
            ),
            ClaimError::BlockVolumeMounted { .. }
            | ClaimError::RawBlock { .. }
            | ClaimError::UnsupportedSource { .. } => self.to_string(),
        }
    }
}

/// Pod volumes whose claims cannot be used yet: upstream's
/// `WaitForAttachAndMount` failure. The other volumes of the pod were set
/// up; its containers wait.
#[derive(Debug)]
pub struct ClaimsNotReady {
    /// The pod's namespace, for the messages.
    pub(super) namespace: String,
    /// `(pod volume, claim, why)`, in pod spec order.
    pub(super) failed: Vec<(String, String, ClaimError)>,
}

impl ClaimsNotReady {
    /// The clear messages, one per failed claim.
    pub(super) fn messages(&self) -> impl Iterator<Item = String> + '_ {
        self.failed.iter().map(|(_, _, e)| e.to_string())
    }

    /// The pod volumes that failed, as upstream lists them (sorted).
    pub fn volumes(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.failed.iter().map(|(v, _, _)| v.as_str()).collect();
        names.sort_unstable();
        names
    }

    /// The errors, in pod spec order.
    pub fn errors(&self) -> impl Iterator<Item = &ClaimError> {
        self.failed.iter().map(|(_, _, e)| e)
    }
}

impl std::error::Error for ClaimsNotReady {}

impl std::fmt::Display for ClaimsNotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let volumes = self.volumes().join(" ");
        let errors: Vec<String> = self
            .failed
            .iter()
            .map(|(_, claim, e)| {
                format!(
                    "error processing PVC {}/{claim}: {}",
                    self.namespace,
                    e.processing_error()
                )
            })
            .collect();
        write!(
            f,
            "Unable to attach or mount volumes: unmounted volumes=[{volumes}], \
             unattached volumes=[], failed to process volumes=[{volumes}]: {}",
            errors.join("; ")
        )
    }
}

/// What backs a resolved claim on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A `hostPath` volume and its `type`.
    HostPath {
        /// The node path.
        path: String,
        /// The declared type (empty: no check).
        path_type: String,
    },
    /// A `local` volume: an existing directory.
    Local {
        /// The node path.
        path: String,
    },
}

/// A claim followed to its volume, before any disk IO.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The PersistentVolume's name (upstream names the volume by it in
    /// `MountVolume.SetUp` messages).
    pub volume: String,
    /// Its node directory.
    pub backing: Backing,
    /// `readOnly` of the pod's claim volume.
    pub read_only: bool,
}

impl Resolved {
    /// The node path containers mount.
    pub fn path(&self) -> &str {
        match &self.backing {
            Backing::HostPath { path, .. } | Backing::Local { path } => path,
        }
    }
}

/// How the pod's containers use a claim volume.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Some container lists it in `volumeMounts`.
    pub mounted: bool,
    /// Some container lists it in `volumeDevices`.
    pub as_device: bool,
}

/// Follows the claim of pod volume `volume` (in `namespace`) to its bound
/// volume and checks that this node can serve it.
pub async fn resolve(
    objects: &dyn ObjectSource,
    namespace: &str,
    volume: &str,
    source: &PersistentVolumeClaimVolumeSource,
    usage: Usage,
) -> Result<Resolved, ClaimError> {
    let claim_name = &source.claim_name;
    let claim = objects
        .persistent_volume_claim(namespace, claim_name)
        .await
        .map_err(ClaimError::Read)?
        .ok_or_else(|| ClaimError::NotFound(claim_name.clone()))?;
    let protected = claim
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == PVC_PROTECTION);
    if claim.metadata.deletion_timestamp.is_some() && !protected {
        return Err(ClaimError::BeingDeleted(claim_name.clone()));
    }
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume_name.is_empty() {
        return Err(ClaimError::NotBound {
            claim: claim_name.clone(),
            phase,
        });
    }
    let pv = objects
        .persistent_volume(&volume_name)
        .await
        .map_err(ClaimError::ReadVolume)?
        .ok_or_else(|| ClaimError::VolumeNotFound {
            claim: claim_name.clone(),
            volume: volume_name.clone(),
        })?;
    let spec = pv.spec.clone().unwrap_or_default();
    let claim_uid = claim.metadata.uid.clone().unwrap_or_default();
    let ref_uid = spec
        .claim_ref
        .as_ref()
        .map(|r| r.uid.clone().unwrap_or_default());
    if ref_uid.as_deref() != Some(claim_uid.as_str()) {
        return Err(ClaimError::ClaimRefMismatch {
            claim: claim_name.clone(),
            volume: volume_name,
            found: ref_uid,
            expected: claim_uid,
        });
    }
    if usage.as_device {
        return Err(ClaimError::RawBlock {
            volume: volume.to_string(),
        });
    }
    if usage.mounted && spec.volume_mode.as_deref() == Some("Block") {
        return Err(ClaimError::BlockVolumeMounted {
            volume: volume.to_string(),
        });
    }
    let backing = if let Some(host) = &spec.host_path {
        Backing::HostPath {
            path: host.path.clone(),
            path_type: host.type_.clone().unwrap_or_default(),
        }
    } else if let Some(local) = &spec.local {
        Backing::Local {
            path: local.path.clone(),
        }
    } else {
        return Err(ClaimError::UnsupportedSource {
            kind: source_kind(&pv),
            volume: volume_name,
        });
    };
    Ok(Resolved {
        volume: volume_name,
        backing,
        read_only: source.read_only.unwrap_or(false),
    })
}

/// The API field name of a volume's source (`nfs`, `csi`).
fn source_kind(pv: &PersistentVolume) -> String {
    serde_json::to_value(&pv.spec)
        .ok()
        .and_then(|spec| {
            spec.as_object()?
                .keys()
                .find(|k| !NON_SOURCE_FIELDS.contains(&k.as_str()))
                .cloned()
        })
        .unwrap_or_else(|| "sourceless".to_string())
}

/// How a claim volume's ownership is to be handled at set-up.
#[derive(Debug, Clone, Copy)]
pub struct Ownership {
    /// The pod's `fsGroup`.
    pub fs_group: Option<u32>,
    /// `fsGroupChangePolicy: OnRootMismatch`.
    pub on_root_mismatch: bool,
    /// Another pod on the node has the volume set up.
    pub in_use_elsewhere: bool,
}

/// Checks the volume's directory on the node (creating it for
/// `DirectoryOrCreate`) and, for a writable `local` volume, gives it to
/// the pod's `fsGroup`. Blocking.
pub fn set_up(resolved: &Resolved, owner: Ownership) -> Result<PreparedVolume, SetUpError> {
    let path = resolved.path();
    match &resolved.backing {
        Backing::HostPath { path_type, .. } => {
            hostpath::check(path, path_type).map_err(SetUpError::HostPath)?;
        }
        Backing::Local { .. } => {
            check_local(path).map_err(SetUpError::Local)?;
            if let Some(gid) = owner.fs_group
                && !resolved.read_only
                && !owner.in_use_elsewhere
            {
                let root = Path::new(path);
                let skip = owner.on_root_mismatch
                    && ownership::root_matches(root, gid, false)
                        .map_err(super::io_err("stat", root))?;
                if !skip {
                    ownership::apply(root, gid, false)
                        .map_err(super::io_err("set ownership of", root))?;
                }
            }
        }
    }
    Ok(PreparedVolume {
        host_path: PathBuf::from(path),
        read_only: resolved.read_only,
    })
}

/// A `local` volume's path must be an absolute path, without backsteps,
/// to an existing directory (block devices would need formatting and
/// mounting, which this node does not do).
fn check_local(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("local volume path is empty".into());
    }
    if !path.starts_with('/') || path.split('/').any(|part| part == "..") {
        return Err(format!(
            "invalid local volume path {path}: must be an absolute path without '..'"
        ));
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "local volume path {path} is not a directory; only file-system directories are supported"
        )),
        Err(e) => Err(format!("local volume path {path}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
    use serde_json::json;
    use skiff_cri::v1::Mount;

    use super::*;
    use crate::downward::NodeAllocatable;
    use crate::objects::StaticObjects;
    use crate::volumes::{FakeMounter, PodVolumes, VolumeError, VolumeManager};

    const CLAIM: &str = "data-claim";
    const CLAIM_UID: &str = "c1a1m-uid";
    const PV: &str = "pv-data";

    struct Fixture {
        dir: tempfile::TempDir,
        manager: VolumeManager,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let manager = VolumeManager::new(dir.path().join("pods"), Arc::new(FakeMounter::new()));
            Self { dir, manager }
        }

        /// A directory standing for the volume's node directory.
        fn volume_dir(&self) -> PathBuf {
            let path = self.dir.path().join("storage").join(PV);
            fs::create_dir_all(&path).expect("mkdir");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
            path
        }

        async fn prepare(
            &self,
            pod: &Pod,
            objects: &StaticObjects,
        ) -> Result<PodVolumes, VolumeError> {
            self.manager
                .prepare(pod, objects, &NodeAllocatable::default())
                .await
        }
    }

    fn claim(phase: &str, volume: Option<&str>) -> serde_json::Value {
        json!({
            "metadata": {"name": CLAIM, "namespace": "ns", "uid": CLAIM_UID},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": volume,
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": phase},
        })
    }

    fn bound_claim() -> PersistentVolumeClaim {
        serde_json::from_value(claim("Bound", Some(PV))).expect("claim")
    }

    /// A volume bound to the claim, with `source` merged into its spec.
    fn volume(source: serde_json::Value) -> PersistentVolume {
        let mut spec = json!({
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "ns", "name": CLAIM, "uid": CLAIM_UID},
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "local-path",
        });
        for (key, value) in source.as_object().expect("object") {
            spec[key] = value.clone();
        }
        serde_json::from_value(json!({"metadata": {"name": PV}, "spec": spec})).expect("pv")
    }

    fn host_path_volume(path: &Path, kind: &str) -> PersistentVolume {
        volume(json!({"hostPath": {"path": path, "type": kind}}))
    }

    fn local_volume(path: &Path) -> PersistentVolume {
        volume(json!({"local": {"path": path}}))
    }

    fn bound(pv: PersistentVolume) -> StaticObjects {
        StaticObjects::default()
            .with_persistent_volume_claim(bound_claim())
            .with_persistent_volume(pv)
    }

    /// Pod `uid` in `ns` whose container mounts the claim as `mounts` say.
    fn pod_with(
        uid: &str,
        claim_source: serde_json::Value,
        mounts: serde_json::Value,
        security: serde_json::Value,
    ) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "db-0", "namespace": "ns", "uid": uid},
            "spec": {
                "securityContext": security,
                "containers": [{"name": "main", "image": "busybox", "volumeMounts": mounts}],
                "volumes": [{"name": "data", "persistentVolumeClaim": claim_source}],
            },
        }))
        .expect("pod")
    }

    fn pod(mounts: serde_json::Value) -> Pod {
        pod_with("pod-uid", json!({"claimName": CLAIM}), mounts, json!({}))
    }

    fn data_mount() -> serde_json::Value {
        json!([{"name": "data", "mountPath": "/data"}])
    }

    fn mounts(volumes: &PodVolumes, pod: &Pod) -> Vec<Mount> {
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        volumes.mounts_for(container, &[]).expect("mounts")
    }

    fn claims_error(err: VolumeError) -> ClaimsNotReady {
        match err {
            VolumeError::Claims(claims) => claims,
            other => panic!("expected unusable claims, got {other}"),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").mode() & 0o7777
    }

    #[tokio::test]
    async fn a_bound_host_path_claim_mounts_its_directory_read_write() {
        let f = Fixture::new();
        let dir = f.volume_dir();
        let pod = pod(data_mount());
        let volumes = f
            .prepare(&pod, &bound(host_path_volume(&dir, "DirectoryOrCreate")))
            .await
            .expect("prepare");
        let mounts = mounts(&volumes, &pod);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].container_path, "/data");
        assert_eq!(mounts[0].host_path, dir.to_string_lossy());
        assert!(!mounts[0].readonly);
    }

    #[tokio::test]
    async fn read_only_comes_from_the_claim_volume_or_the_mount() {
        let f = Fixture::new();
        let dir = f.volume_dir();
        let objects = bound(host_path_volume(&dir, ""));

        let read_only_claim = pod_with(
            "ro-claim",
            json!({"claimName": CLAIM, "readOnly": true}),
            data_mount(),
            json!({}),
        );
        let volumes = f
            .prepare(&read_only_claim, &objects)
            .await
            .expect("prepare");
        assert!(mounts(&volumes, &read_only_claim)[0].readonly);

        let read_only_mount = pod_with(
            "ro-mount",
            json!({"claimName": CLAIM}),
            json!([{"name": "data", "mountPath": "/ro", "readOnly": true},
                   {"name": "data", "mountPath": "/rw"}]),
            json!({}),
        );
        let volumes = f
            .prepare(&read_only_mount, &objects)
            .await
            .expect("prepare");
        let mounts = mounts(&volumes, &read_only_mount);
        assert!(mounts[0].readonly);
        assert!(!mounts[1].readonly);
        assert_eq!(mounts[0].host_path, dir.to_string_lossy());
    }

    #[tokio::test]
    async fn sub_paths_are_created_inside_the_volume() {
        let f = Fixture::new();
        let dir = f.volume_dir();
        let pod = pod(json!([
            {"name": "data", "mountPath": "/var/lib/db", "subPath": "db"},
            {"name": "data", "mountPath": "/logs", "subPath": "../escape"},
        ]));
        let volumes = f
            .prepare(&pod, &bound(host_path_volume(&dir, "Directory")))
            .await
            .expect("prepare");
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        let err = volumes.mounts_for(container, &[]).expect_err("backstep");
        assert!(err.to_string().contains("must not contain '..'"), "{err}");

        let mut first_only = container.clone();
        first_only
            .volume_mounts
            .as_mut()
            .expect("mounts")
            .truncate(1);
        let mounts = volumes.mounts_for(&first_only, &[]).expect("mounts");
        let expected = dir.canonicalize().expect("canon").join("db");
        assert_eq!(mounts[0].host_path, expected.to_string_lossy());
        assert!(expected.is_dir());
        assert!(!f.dir.path().join("storage/escape").exists());
    }

    #[tokio::test]
    async fn a_missing_claim_is_reported_and_retried() {
        let f = Fixture::new();
        let pod = pod(data_mount());
        let err = f
            .prepare(&pod, &StaticObjects::default())
            .await
            .expect_err("missing");
        assert_eq!(
            err.event_messages(),
            [
                "persistentvolumeclaim \"data-claim\" not found".to_string(),
                "Unable to attach or mount volumes: unmounted volumes=[data], \
                 unattached volumes=[], failed to process volumes=[data]: error processing \
                 PVC ns/data-claim: failed to fetch PVC from API server: \
                 persistentvolumeclaims \"data-claim\" not found"
                    .to_string(),
            ]
        );
        let claims = claims_error(err);
        assert!(matches!(
            claims.errors().collect::<Vec<_>>()[..],
            [ClaimError::NotFound(name)] if name == CLAIM
        ));
    }

    #[tokio::test]
    async fn an_unbound_claim_waits_and_the_pod_starts_once_it_binds() {
        let f = Fixture::new();
        let dir = f.volume_dir();
        let pod = pod(data_mount());
        let pending: PersistentVolumeClaim =
            serde_json::from_value(claim("Pending", None)).expect("claim");
        let objects = StaticObjects::default().with_persistent_volume_claim(pending);
        let err = f.prepare(&pod, &objects).await.expect_err("unbound");
        assert_eq!(
            err.event_messages(),
            [
                "PersistentVolumeClaim is not bound: \"data-claim\"".to_string(),
                "Unable to attach or mount volumes: unmounted volumes=[data], \
                 unattached volumes=[], failed to process volumes=[data]: error processing \
                 PVC ns/data-claim: PVC is not bound"
                    .to_string(),
            ]
        );
        assert!(matches!(
            claims_error(err).errors().collect::<Vec<_>>()[..],
            [ClaimError::NotBound { phase, .. }] if phase == "Pending"
        ));

        // A lost claim (its volume gone) is not bound either.
        let lost: PersistentVolumeClaim =
            serde_json::from_value(claim("Lost", Some(PV))).expect("claim");
        let objects = StaticObjects::default().with_persistent_volume_claim(lost);
        let err = f.prepare(&pod, &objects).await.expect_err("lost");
        assert!(matches!(
            claims_error(err).errors().collect::<Vec<_>>()[..],
            [ClaimError::NotBound { phase, .. }] if phase == "Lost"
        ));

        // The same pod, synced again once the claim is bound.
        let volumes = f
            .prepare(&pod, &bound(host_path_volume(&dir, "")))
            .await
            .expect("bound now");
        assert_eq!(mounts(&volumes, &pod)[0].host_path, dir.to_string_lossy());
    }

    #[tokio::test]
    async fn volumes_this_node_cannot_serve_are_refused() {
        let f = Fixture::new();
        let pod = pod(data_mount());
        let nfs = volume(json!({"nfs": {"server": "nas", "path": "/export"}}));
        let err = f.prepare(&pod, &bound(nfs)).await.expect_err("nfs");
        assert_eq!(
            err.event_messages()[0],
            "persistentvolume \"pv-data\" is a nfs volume; this node mounts only hostPath \
             and local persistent volumes"
        );
        assert!(matches!(
            claims_error(err).errors().collect::<Vec<_>>()[..],
            [ClaimError::UnsupportedSource { kind, .. }] if kind == "nfs"
        ));

        let dir = f.volume_dir();
        let mut block = host_path_volume(&dir, "");
        block.spec.as_mut().expect("spec").volume_mode = Some("Block".into());
        let err = f.prepare(&pod, &bound(block)).await.expect_err("block");
        assert!(matches!(
            claims_error(err).errors().collect::<Vec<_>>()[..],
            [ClaimError::BlockVolumeMounted { .. }]
        ));

        let mut as_device = pod.clone();
        let container = &mut as_device.spec.as_mut().expect("spec").containers[0];
        container.volume_mounts = None;
        container.volume_devices = Some(vec![
            serde_json::from_value(json!({"name": "data", "devicePath": "/dev/xvda"}))
                .expect("device"),
        ]);
        let err = f
            .prepare(&as_device, &bound(host_path_volume(&dir, "")))
            .await
            .expect_err("device");
        assert!(matches!(
            claims_error(err).errors().collect::<Vec<_>>()[..],
            [ClaimError::RawBlock { .. }]
        ));
    }

    #[tokio::test]
    async fn the_volume_must_point_back_at_the_claim() {
        let f = Fixture::new();
        let dir = f.volume_dir();
        let pod = pod(data_mount());
        let objects = StaticObjects::default().with_persistent_volume_claim(bound_claim());
        let err = f.prepare(&pod, &objects).await.expect_err("no pv");
        assert_eq!(
            err.event_messages()[0],
            "persistentvolumeclaim \"data-claim\" bound to non-existent persistentvolume \"pv-data\""
        );

        let mut stolen = host_path_volume(&dir, "");
        stolen
            .spec
            .as_mut()
            .expect("spec")
            .claim_ref
            .as_mut()
            .expect("ref")
            .uid = Some("someone-else".into());
        let err = f
            .prepare(&pod, &bound(stolen))
            .await
            .expect_err("other claim");
        assert!(
            err.to_string().ends_with(
                "error processing PVC ns/data-claim: found PV object pv-data but its \
                 pv.Spec.ClaimRef.UID someone-else does not point to claim.UID c1a1m-uid"
            ),
            "{err}"
        );

        let mut unclaimed = host_path_volume(&dir, "");
        unclaimed.spec.as_mut().expect("spec").claim_ref = None;
        let err = f
            .prepare(&pod, &bound(unclaimed))
            .await
            .expect_err("no claimRef");
        assert!(matches!(
            claims_error(err).errors().collect::<Vec<_>>()[..],
            [ClaimError::ClaimRefMismatch { found: None, .. }]
        ));
    }

    #[tokio::test]
    async fn a_claim_being_deleted_is_refused_unless_protected() {
        let f = Fixture::new();
        let dir = f.volume_dir();
        let pod = pod(data_mount());
        let mut deleting = bound_claim();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let objects = StaticObjects::default()
            .with_persistent_volume_claim(deleting.clone())
            .with_persistent_volume(host_path_volume(&dir, ""));
        let err = f.prepare(&pod, &objects).await.expect_err("deleting");
        assert_eq!(
            err.event_messages(),
            [
                "persistentvolumeclaim \"data-claim\" is being deleted".to_string(),
                "Unable to attach or mount volumes: unmounted volumes=[data], \
                 unattached volumes=[], failed to process volumes=[data]: error processing \
                 PVC ns/data-claim: PVC is being deleted"
                    .to_string(),
            ]
        );

        deleting.metadata.finalizers = Some(vec![PVC_PROTECTION.into()]);
        let objects = StaticObjects::default()
            .with_persistent_volume_claim(deleting)
            .with_persistent_volume(host_path_volume(&dir, ""));
        f.prepare(&pod, &objects).await.expect("protected");
    }

    #[tokio::test]
    async fn a_set_up_claim_is_kept_for_the_pod_and_its_data_outlives_it() {
        let f = Fixture::new();
        let dir = f.volume_dir();
        let pod = pod(data_mount());
        f.prepare(&pod, &bound(host_path_volume(&dir, "")))
            .await
            .expect("prepare");
        fs::write(dir.join("counter"), "1").expect("write");

        // The claim is gone from the API: the running pod keeps its volume.
        let volumes = f
            .prepare(&pod, &StaticObjects::default())
            .await
            .expect("reused");
        assert_eq!(mounts(&volumes, &pod)[0].host_path, dir.to_string_lossy());

        f.manager.cleanup("pod-uid").await.expect("cleanup");
        assert_eq!(fs::read_to_string(dir.join("counter")).expect("kept"), "1");
        // A new pod resolves the claim again.
        let err = f
            .prepare(&pod, &StaticObjects::default())
            .await
            .expect_err("gone");
        assert!(matches!(err, VolumeError::Claims(_)));
    }

    #[tokio::test]
    async fn other_volumes_are_set_up_while_a_claim_waits_and_unused_claims_are_skipped() {
        let f = Fixture::new();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "db-0", "namespace": "ns", "uid": "pod-uid"},
            "spec": {
                "containers": [{"name": "main", "image": "busybox", "volumeMounts": [
                    {"name": "scratch", "mountPath": "/tmp"},
                    {"name": "data", "mountPath": "/data"},
                    {"name": "logs", "mountPath": "/logs"},
                ]}],
                "volumes": [
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": CLAIM}},
                    {"name": "logs", "persistentVolumeClaim": {"claimName": "logs"}},
                    {"name": "unused", "persistentVolumeClaim": {"claimName": "nowhere"}},
                ],
            },
        }))
        .expect("pod");
        let err = f
            .prepare(&pod, &StaticObjects::default())
            .await
            .expect_err("missing");
        assert_eq!(
            err.event_messages(),
            [
                "persistentvolumeclaim \"data-claim\" not found".to_string(),
                "persistentvolumeclaim \"logs\" not found".to_string(),
                "Unable to attach or mount volumes: unmounted volumes=[data logs], \
                 unattached volumes=[], failed to process volumes=[data logs]: \
                 error processing PVC ns/data-claim: failed to fetch PVC from API server: \
                 persistentvolumeclaims \"data-claim\" not found; error processing PVC ns/logs: \
                 failed to fetch PVC from API server: persistentvolumeclaims \"logs\" not found"
                    .to_string(),
            ]
        );
        assert!(
            f.dir
                .path()
                .join("pods/pod-uid/volumes/kubernetes.io~empty-dir/scratch")
                .is_dir()
        );
    }

    #[tokio::test]
    async fn set_up_failures_name_the_persistent_volume() {
        let f = Fixture::new();
        let missing = f.dir.path().join("missing");
        let pod = pod(data_mount());
        let err = f
            .prepare(&pod, &bound(host_path_volume(&missing, "Directory")))
            .await
            .expect_err("missing dir");
        assert_eq!(
            err.to_string(),
            format!(
                "MountVolume.SetUp failed for volume \"pv-data\" : hostPath {} doesn't exist",
                missing.display()
            )
        );
        let err = f
            .prepare(&pod, &bound(local_volume(&missing)))
            .await
            .expect_err("missing local dir");
        assert!(
            err.to_string()
                .starts_with("MountVolume.SetUp failed for volume \"pv-data\" : local volume path"),
            "{err}"
        );

        f.prepare(
            &pod,
            &bound(host_path_volume(&missing, "DirectoryOrCreate")),
        )
        .await
        .expect("created");
        assert!(missing.is_dir());
    }

    fn fs_group_pod(uid: &str, read_only: bool, policy: Option<&str>) -> Pod {
        let gid = ownership::test_gid();
        pod_with(
            uid,
            json!({"claimName": CLAIM, "readOnly": read_only}),
            data_mount(),
            json!({"fsGroup": gid, "fsGroupChangePolicy": policy}),
        )
    }

    #[tokio::test]
    async fn fs_group_owns_local_volumes_but_not_host_path_ones() {
        let f = Fixture::new();
        let dir = f.volume_dir();
        fs::write(dir.join("old"), "x").expect("write");
        fs::set_permissions(dir.join("old"), fs::Permissions::from_mode(0o600)).expect("chmod");
        let gid = ownership::test_gid();

        f.prepare(
            &fs_group_pod("host", false, None),
            &bound(host_path_volume(&dir, "")),
        )
        .await
        .expect("host path");
        assert_eq!(mode(&dir), 0o755, "hostPath volumes keep their ownership");
        assert_eq!(mode(&dir.join("old")), 0o600);

        f.prepare(
            &fs_group_pod("read-only", true, None),
            &bound(local_volume(&dir)),
        )
        .await
        .expect("read-only local");
        assert_eq!(mode(&dir), 0o755, "read-only volumes are not changed");
        // Those pods are gone: nothing else uses the volume on the node.
        f.manager.cleanup("host").await.expect("cleanup");
        f.manager.cleanup("read-only").await.expect("cleanup");

        f.prepare(
            &fs_group_pod("local", false, None),
            &bound(local_volume(&dir)),
        )
        .await
        .expect("local");
        assert_eq!(mode(&dir), 0o2775);
        assert_eq!(fs::metadata(&dir).expect("stat").gid(), gid);
        assert_eq!(mode(&dir.join("old")), 0o660);
    }

    #[tokio::test]
    async fn fs_group_change_policy_and_other_users_of_the_volume_are_honoured() {
        let f = Fixture::new();
        let dir = f.volume_dir();
        let objects = bound(local_volume(&dir));
        let late = dir.join("late");

        f.prepare(&fs_group_pod("first", false, None), &objects)
            .await
            .expect("first");
        assert_eq!(mode(&dir), 0o2775);
        fs::write(&late, "x").expect("write");
        fs::set_permissions(&late, fs::Permissions::from_mode(0o600)).expect("chmod");

        // Another pod while the first still uses the volume: no walk.
        f.prepare(&fs_group_pod("second", false, None), &objects)
            .await
            .expect("second");
        assert_eq!(mode(&late), 0o600);
        f.manager.cleanup("first").await.expect("cleanup");
        f.manager.cleanup("second").await.expect("cleanup");

        // The root already shows the group: OnRootMismatch skips the walk...
        f.prepare(
            &fs_group_pod("lazy", false, Some("OnRootMismatch")),
            &objects,
        )
        .await
        .expect("on root mismatch");
        assert_eq!(mode(&late), 0o600);
        f.manager.cleanup("lazy").await.expect("cleanup");

        // ...and Always (the default) walks on every new pod.
        f.prepare(&fs_group_pod("always", false, Some("Always")), &objects)
            .await
            .expect("always");
        assert_eq!(mode(&late), 0o660);

        // A root that lost its group bits is walked under OnRootMismatch too.
        f.manager.cleanup("always").await.expect("cleanup");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::set_permissions(&late, fs::Permissions::from_mode(0o600)).expect("chmod");
        f.prepare(
            &fs_group_pod("mismatch", false, Some("OnRootMismatch")),
            &objects,
        )
        .await
        .expect("mismatch");
        assert_eq!(mode(&dir), 0o2775);
        assert_eq!(mode(&late), 0o660);
    }
}
