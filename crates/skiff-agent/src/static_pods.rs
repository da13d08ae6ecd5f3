//! Static pods: pods from manifest files on the node, mirrored in the API.
//!
//! Every few seconds the agent reads `DATA/agent/pod-manifests/` (one Pod per
//! YAML or JSON file; dotfiles and files that do not parse are skipped with a
//! warning) and keeps one mirror pod per manifest in the API, as upstream's
//! kubelet does: named `<pod>-<node>`, bound to this node, with the
//! annotations `kubernetes.io/config.source: file` and
//! `kubernetes.io/config.hash`/`config.mirror` set to a hash of the file. A
//! changed file replaces the mirror pod; a removed file deletes it; a mirror
//! pod deleted through the API comes back while its file remains.
//!
//! Deviation from upstream, on purpose: the pods run through their mirror
//! pods (the ordinary pod workers run them), so static pods need the API
//! server. Under `skiff server` the two share a process, which is where
//! static pods are used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// How often the manifest directory is read.
const POLL: Duration = Duration::from_secs(3);
/// Annotation naming where a pod came from.
pub const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation with the manifest's hash.
pub const HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation marking a mirror pod (with the same hash).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Keeps mirror pods in the API for the manifests in a directory.
pub struct StaticPods {
    client: kube::Client,
    node_name: String,
    manifest_dir: PathBuf,
}

/// What to do to make the API match the manifests.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Create this mirror pod.
    Create(Box<Pod>),
    /// Delete the mirror pod `namespace/name`.
    Delete {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl StaticPods {
    /// Static pods of `node_name` from `manifest_dir`.
    pub fn new(client: kube::Client, node_name: String, manifest_dir: PathBuf) -> Self {
        Self {
            client,
            node_name,
            manifest_dir,
        }
    }

    /// Reconciles until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Err(e) = tokio::fs::create_dir_all(&self.manifest_dir).await {
            tracing::warn!(dir = %self.manifest_dir.display(), error = %e, "cannot create the static pod directory");
        }
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "static pods: reconcile failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn reconcile(&self) -> Result<(), kube::Error> {
        let desired = read_manifests(&self.manifest_dir, &self.node_name).await;
        let pods: Api<Pod> = Api::all(self.client.clone());
        let selector = format!("spec.nodeName={}", self.node_name);
        let actual: Vec<Pod> = pods
            .list(&ListParams::default().fields(&selector))
            .await?
            .items
            .into_iter()
            .filter(is_mirror)
            .collect();
        for action in plan(&desired, &actual) {
            match action {
                Action::Create(pod) => {
                    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                    let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(_) => {}
                        // Still terminating from a replacement: next round.
                        Err(kube::Error::Api(status)) if status.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
                Action::Delete { namespace, name } => {
                    let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
                    match api.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }
}

fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

fn hash(content: &[u8]) -> String {
    Sha256::digest(content)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The mirror pod for a manifest's content, or why it cannot be one.
pub fn mirror_pod(content: &str, node_name: &str) -> Result<Pod, String> {
    let mut pod: Pod = serde_saphyr::from_str(content).map_err(|e| e.to_string())?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("the manifest has no metadata.name")?;
    let digest = hash(content.as_bytes());
    pod.metadata.name = Some(format!("{name}-{node_name}"));
    if pod.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        pod.metadata.namespace = Some("default".into());
    }
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(SOURCE_ANNOTATION.into(), "file".into());
    annotations.insert(HASH_ANNOTATION.into(), digest.clone());
    annotations.insert(MIRROR_ANNOTATION.into(), digest);
    pod.metadata.uid = None;
    pod.metadata.resource_version = None;
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_string());
    pod.status = None;
    Ok(pod)
}

async fn read_manifests(dir: &Path, node_name: &str) -> Vec<Pod> {
    let mut pods = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return pods;
    };
    let mut paths = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        paths.push(entry.path());
    }
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden || !path.is_file() {
            continue;
        }
        match tokio::fs::read_to_string(&path).await {
            Ok(content) => match mirror_pod(&content, node_name) {
                Ok(pod) => pods.push(pod),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping a static pod manifest")
                }
            },
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read a static pod manifest")
            }
        }
    }
    pods
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn mirror_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MIRROR_ANNOTATION))
        .map(String::as_str)
}

/// The actions that make the mirror pods in the API (`actual`) match the
/// manifests (`desired`). A mirror pod being deleted is left to finish; its
/// replacement is created on a later round.
pub fn plan(desired: &[Pod], actual: &[Pod]) -> Vec<Action> {
    let mut actions = Vec::new();
    for want in desired {
        match actual.iter().find(|have| key(have) == key(want)) {
            None => actions.push(Action::Create(Box::new(want.clone()))),
            Some(have) if have.metadata.deletion_timestamp.is_some() => {}
            Some(have) if mirror_hash(have) != mirror_hash(want) => {
                let (namespace, name) = key(have);
                actions.push(Action::Delete { namespace, name });
            }
            Some(_) => {}
        }
    }
    for have in actual {
        let wanted = desired.iter().any(|want| key(want) == key(have));
        if !wanted && have.metadata.deletion_timestamp.is_none() {
            let (namespace, name) = key(have);
            actions.push(Action::Delete { namespace, name });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: main\n    image: busybox\n";

    #[test]
    fn a_manifest_becomes_a_mirror_pod() {
        let pod = mirror_pod(MANIFEST, "node-1").expect("pod");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        let annotations = pod.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations[SOURCE_ANNOTATION], "file");
        assert_eq!(annotations[HASH_ANNOTATION], annotations[MIRROR_ANNOTATION]);
        assert!(mirror_pod("kind: Pod\nspec: {containers: []}\n", "n").is_err());
        assert!(mirror_pod("{not yaml", "n").is_err());
    }

    #[test]
    fn plan_creates_replaces_and_removes() {
        let v1 = mirror_pod(MANIFEST, "n").expect("pod");
        let v2 = mirror_pod(&MANIFEST.replace("busybox", "busybox:2"), "n").expect("pod");
        let other = mirror_pod(&MANIFEST.replace("name: web", "name: db"), "n").expect("pod");
        assert_eq!(
            plan(std::slice::from_ref(&v1), &[]),
            vec![Action::Create(Box::new(v1.clone()))]
        );
        assert!(plan(std::slice::from_ref(&v1), std::slice::from_ref(&v1)).is_empty());
        let delete_web = Action::Delete {
            namespace: "default".into(),
            name: "web-n".into(),
        };
        assert_eq!(
            plan(std::slice::from_ref(&v2), std::slice::from_ref(&v1)),
            vec![delete_web]
        );
        let mut terminating = v1.clone();
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(
            plan(&[v2], &[terminating]).is_empty(),
            "wait for the old one"
        );
        assert_eq!(
            plan(&[], &[other]),
            vec![Action::Delete {
                namespace: "default".into(),
                name: "db-n".into()
            }]
        );
    }
}
