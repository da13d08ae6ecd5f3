//! A StatefulSet pod's identity: its name, ordinal, labels, hostname and the
//! claims it mounts. Everything here is derived from the set and the ordinal,
//! so a pod deleted by anyone comes back as the same member.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume};
use kube::ResourceExt;

use crate::pods::{controller_reference, pod_from_template};

/// The label naming the pod (`statefulset.kubernetes.io/pod-name`), which
/// lets a Service select exactly one member.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label naming the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Splits `{parent}-{ordinal}`; `None` when the name does not end in a dash
/// and a non-negative 32-bit number.
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, digits) = name.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, digits.parse().ok()?))
}

/// The pod's ordinal, if its name has one.
pub fn ordinal(pod: &Pod) -> Option<i32> {
    parent_and_ordinal(pod.metadata.name.as_deref()?).map(|(_, ordinal)| ordinal)
}

/// The pod's name says it belongs to `set`.
pub fn is_member(set: &StatefulSet, pod: &Pod) -> bool {
    pod.metadata
        .name
        .as_deref()
        .and_then(parent_and_ordinal)
        .is_some_and(|(parent, _)| parent == set.name_any())
}

/// `{set}-{ordinal}`.
pub fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

/// `{template}-{set}-{ordinal}`: the claim a member mounts for a template.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The first ordinal (`spec.ordinals.start`, default 0).
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
}

/// `spec.replicas` (default 1, never negative).
pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.replicas.unwrap_or(1).max(0)
}

/// The ControllerRevision the pod was made from (empty if unlabelled).
pub fn revision_of(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map_or("", String::as_str)
}

/// The labels every member carries to name itself.
pub fn identity_labels(set: &StatefulSet, ordinal: i32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            POD_NAME_LABEL.to_string(),
            pod_name(&set.name_any(), ordinal),
        ),
        (POD_INDEX_LABEL.to_string(), ordinal.to_string()),
    ])
}

/// The pod has its member's name, namespace and pod-name label.
pub fn identity_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let Some(ordinal) = ordinal(pod) else {
        return false;
    };
    let name = pod_name(&set.name_any(), ordinal);
    pod.metadata.name.as_deref() == Some(name.as_str())
        && pod.metadata.namespace == set.metadata.namespace
        && pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_NAME_LABEL))
            == Some(&name)
}

/// The pod mounts, under each claim template's name, its own claim.
pub fn storage_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let Some(ordinal) = ordinal(pod) else {
        return false;
    };
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    claim_template_names(set).all(|template| {
        let wanted = claim_name(template, &set.name_any(), ordinal);
        volumes.iter().any(|v| {
            v.name == template
                && v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == wanted)
        })
    })
}

/// The names of the set's volumeClaimTemplates, in order.
pub fn claim_template_names(set: &StatefulSet) -> impl Iterator<Item = &str> {
    set.spec
        .volume_claim_templates
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.metadata.name.as_deref())
}

/// The member `ordinal` of `set`, made from `template` (the pod template of
/// revision `revision`): named `{set}-{ordinal}`, labelled with its identity
/// and revision, with hostname and subdomain for the governing Service, and
/// one volume per claim template mounting its own claim.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let set_name = set.name_any();
    let name = pod_name(&set_name, ordinal);
    let mut pod = pod_from_template(
        template,
        &set.namespace().unwrap_or_default(),
        name.clone(),
        &format!("{set_name}-"),
        controller_reference(set),
    );
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(identity_labels(set, ordinal));
    labels.insert(REVISION_LABEL.to_string(), revision.to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    spec.subdomain = set.spec.service_name.clone().filter(|s| !s.is_empty());
    let claims: Vec<Volume> = claim_template_names(set)
        .map(|template| Volume {
            name: template.to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(template, &set_name, ordinal),
                read_only: None,
            }),
            ..Volume::default()
        })
        .collect();
    if !claims.is_empty() {
        let others: Vec<Volume> = spec
            .volumes
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !claims.iter().any(|c| c.name == v.name))
            .collect();
        spec.volumes = Some(claims.into_iter().chain(others).collect());
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PersistentVolumeClaim, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn set() -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("set-uid".into()),
                ..ObjectMeta::default()
            },
            spec: StatefulSetSpec {
                service_name: Some("nginx".into()),
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("www".into()),
                        ..ObjectMeta::default()
                    },
                    ..PersistentVolumeClaim::default()
                }]),
                ..StatefulSetSpec::default()
            },
            status: None,
        }
    }

    fn template() -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                volumes: Some(vec![
                    Volume {
                        name: "www".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    },
                    Volume {
                        name: "scratch".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    },
                ]),
                ..PodSpec::default()
            }),
        }
    }

    #[test]
    fn names_parse_into_parent_and_ordinal() {
        assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
        assert_eq!(parent_and_ordinal("my-web-12"), Some(("my-web", 12)));
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(parent_and_ordinal("web-"), None);
        assert_eq!(parent_and_ordinal("web-x1"), None);
        assert_eq!(parent_and_ordinal("web-99999999999"), None);
    }

    #[test]
    fn a_new_member_carries_its_identity_revision_and_claims() {
        let pod = new_pod(&set(), &template(), "web-abc", 2);
        assert_eq!(pod.name_any(), "web-2");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], "web-abc");
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("StatefulSet", "set-uid")
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let volumes = spec.volumes.as_ref().unwrap();
        assert_eq!(volumes.len(), 2, "the template's www volume is replaced");
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "www-web-2"
        );
        assert_eq!(volumes[1].name, "scratch");
        assert!(identity_matches(&set(), &pod));
        assert!(storage_matches(&set(), &pod));
    }

    #[test]
    fn a_pod_without_its_label_or_claim_does_not_match() {
        let mut pod = new_pod(&set(), &template(), "r", 0);
        pod.metadata.labels.as_mut().unwrap().remove(POD_NAME_LABEL);
        assert!(!identity_matches(&set(), &pod));
        pod.spec.as_mut().unwrap().volumes = None;
        assert!(!storage_matches(&set(), &pod));
    }
}
