//! Hand-built deployments, ReplicaSets and pods for the planning tests.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus,
    RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION};

/// Seconds since an arbitrary epoch.
pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

fn app_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "web".to_string())])
}

/// A pod template labelled `app=web` running `image`.
pub fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(app_labels()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "web".into(),
                image: Some(image.into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

/// Deployment `name` (UID `d-uid`, generation 1) of `replicas` pods running
/// `image`, with the API server's defaults.
pub fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some("d-uid".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(app_labels()),
                ..LabelSelector::default()
            },
            template: template(image),
            progress_deadline_seconds: Some(600),
            revision_history_limit: Some(10),
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

/// Sets a RollingUpdate strategy with these budgets.
pub fn rolling(d: &mut Deployment, surge: IntOrString, unavailable: IntOrString) {
    d.spec.strategy = Some(DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(surge),
            max_unavailable: Some(unavailable),
        }),
    });
}

/// Sets the Recreate strategy.
pub fn recreate(d: &mut Deployment) {
    d.spec.strategy = Some(DeploymentStrategy {
        type_: Some("Recreate".into()),
        rolling_update: None,
    });
}

/// ReplicaSet `name` (UID `<name>-uid`) of the deployment `d-uid` running
/// `image` at `replicas`, all of them up and available, at `revision` (none
/// if 0), created at `created`.
pub fn rs(name: &str, replicas: i32, image: &str, revision: i64, created: i64) -> ReplicaSet {
    let hash = name.rsplit('-').next().unwrap_or(name).to_string();
    let mut labels = app_labels();
    labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash);
    let mut template = template(image);
    template.metadata.as_mut().unwrap().labels = Some(labels.clone());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("{name}-uid")),
            generation: Some(1),
            creation_timestamp: Some(Time(at(created))),
            labels: Some(labels.clone()),
            annotations: (revision > 0)
                .then(|| BTreeMap::from([(REVISION_ANNOTATION.to_string(), revision.to_string())])),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                uid: "d-uid".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: None,
            selector: LabelSelector {
                match_labels: Some(labels),
                ..LabelSelector::default()
            },
            template: Some(template),
        },
        status: Some(ReplicaSetStatus {
            replicas,
            ready_replicas: Some(replicas),
            available_replicas: Some(replicas),
            fully_labeled_replicas: Some(replicas),
            terminating_replicas: Some(0),
            observed_generation: Some(1),
            conditions: None,
        }),
    }
}
