//! End-to-end checks of [`validate`] after [`apply_defaults`]: objects as kubectl,
//! helm and controllers send them must pass, and their defaulted form must still
//! decode into the k8s-openapi types.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::validate;
use crate::defaults::{admission_defaults, apply_defaults, generate_job_selector};

fn defaulted(group: &str, kind: &str, mut obj: Value) -> Value {
    apply_defaults(group, kind, &mut obj);
    admission_defaults(group, kind, &mut obj);
    obj
}

/// Defaults `obj`, checks it decodes as `T` and that it validates cleanly, both on
/// create and as an update of itself.
fn assert_valid<T: DeserializeOwned>(group: &str, kind: &str, obj: Value) -> Value {
    let obj = defaulted(group, kind, obj);
    if let Err(e) = serde_json::from_value::<T>(obj.clone()) {
        panic!("{kind} does not decode after defaulting: {e}\n{obj:#}");
    }
    let errs = validate(group, kind, &obj, None);
    assert!(errs.is_empty(), "{kind} create: {errs:#?}");
    let errs = validate(group, kind, &obj, Some(&obj));
    assert!(errs.is_empty(), "{kind} no-op update: {errs:#?}");
    obj
}

fn pod_spec() -> Value {
    json!({
        "containers": [{
            "name": "web",
            "image": "nginx:1.27",
            "ports": [{"name": "http", "containerPort": 80}],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "LOG_LEVEL", "value": "info"},
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}}
            ],
            "envFrom": [{"configMapRef": {"name": "settings"}}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
            "livenessProbe": {"tcpSocket": {"port": 80}, "initialDelaySeconds": 5},
            "startupProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "failureThreshold": 30},
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/app", "readOnly": true},
                {"name": "cache", "mountPath": "/cache"},
                {"name": "token", "mountPath": "/var/run/secrets/tokens"}
            ],
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true}
        }],
        "initContainers": [
            {"name": "migrate", "image": "migrate:v4", "command": ["migrate", "up"]},
            {"name": "proxy", "image": "envoy:v1.30", "restartPolicy": "Always",
             "readinessProbe": {"grpc": {"port": 9901}}}
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": "settings", "items": [{"key": "app.yaml", "path": "app.yaml"}]}},
            {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "token", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "audience": "vault"}},
                {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
            ]}}
        ],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
        }]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}],
        "serviceAccountName": "web"
    })
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web", "app.kubernetes.io/version": "1.27"}}, "spec": pod_spec()})
}

#[test]
fn valid_pods_pass() {
    use k8s_openapi::api::core::v1::Pod;
    assert_valid::<Pod>(
        "",
        "Pod",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": pod_spec()
        }),
    );
    // kubectl run
    assert_valid::<Pod>(
        "",
        "Pod",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "nginx", "namespace": "default", "labels": {"run": "nginx"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}], "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"}
        }),
    );
    // A controller-made pod with owner references and generateName.
    assert_valid::<Pod>(
        "",
        "Pod",
        json!({
            "metadata": {"generateName": "web-7d4b9c-", "namespace": "prod",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c", "uid": "8f1c", "controller": true, "blockOwnerDeletion": true}]},
            "spec": pod_spec()
        }),
    );
}

#[test]
fn valid_workloads_pass() {
    use k8s_openapi::api::apps::v1::{
        ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
    };
    let selector = json!({"matchLabels": {"app": "web"}});
    assert_valid::<Deployment>(
        "apps",
        "Deployment",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 3, "selector": selector, "template": template()}
        }),
    );
    assert_valid::<Deployment>(
        "apps",
        "Deployment",
        json!({
            "metadata": {"name": "recreate", "namespace": "default"},
            "spec": {"selector": selector, "template": template(), "strategy": {"type": "Recreate"}, "minReadySeconds": 10}
        }),
    );
    assert_valid::<ReplicaSet>(
        "apps",
        "ReplicaSet",
        json!({
            "metadata": {"name": "web-7d4b9c", "namespace": "default",
                "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7d4b9c"}},
                     "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "7d4b9c"}}, "spec": pod_spec()}}
        }),
    );
    assert_valid::<StatefulSet>(
        "apps",
        "StatefulSet",
        json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"serviceName": "db", "replicas": 3, "selector": selector, "template": template(),
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}]}
        }),
    );
    let mut mounting = template();
    mounting["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    assert_valid::<StatefulSet>(
        "apps",
        "StatefulSet",
        json!({
            "metadata": {"name": "mounts-claim", "namespace": "default"},
            "spec": {"serviceName": "db", "selector": selector, "template": mounting,
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
        }),
    );
    assert_valid::<DaemonSet>(
        "apps",
        "DaemonSet",
        json!({
            "metadata": {"name": "agent", "namespace": "kube-system"},
            "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, "template": template()}
        }),
    );
    assert_valid::<ControllerRevision>(
        "apps",
        "ControllerRevision",
        json!({
            "metadata": {"name": "db-5f7d", "namespace": "default"},
            "revision": 1, "data": {"spec": {"template": {}}}
        }),
    );
}

#[test]
fn valid_batch_passes() {
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi", "namespace": "default", "uid": "3e7a-11"},
        "spec": {"backoffLimit": 4, "template": {"spec": {"containers": [{"name": "pi", "image": "perl:5.34", "command": ["perl", "-e", "print 1"]}], "restartPolicy": "Never"}}}
    });
    generate_job_selector(&mut job);
    assert_valid::<Job>("batch", "Job", job);
    let mut indexed = json!({
        "metadata": {"name": "indexed", "namespace": "default", "uid": "u2"},
        "spec": {"completions": 5, "parallelism": 2, "completionMode": "Indexed",
                 "template": {"spec": {"containers": [{"name": "w", "image": "busybox"}], "restartPolicy": "OnFailure"}}}
    });
    generate_job_selector(&mut indexed);
    assert_valid::<Job>("batch", "Job", indexed);
    assert_valid::<CronJob>(
        "batch",
        "CronJob",
        json!({
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"schedule": "*/5 * * * *", "timeZone": "Etc/UTC",
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "hello", "image": "busybox:1.36", "args": ["date"]}], "restartPolicy": "OnFailure"}}}}}
        }),
    );
}

#[test]
fn valid_core_objects_pass() {
    use k8s_openapi::api::core::v1::{
        ConfigMap, Endpoints, Event, LimitRange, Namespace, Node, PersistentVolume,
        PersistentVolumeClaim, ResourceQuota, Secret, Service, ServiceAccount,
    };
    assert_valid::<Namespace>("", "Namespace", json!({"metadata": {"name": "team-a"}}));
    assert_valid::<Service>(
        "",
        "Service",
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "https", "port": 443}]}
        }),
    );
    assert_valid::<Service>(
        "",
        "Service",
        json!({
            "metadata": {"name": "web-np", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.15", "clusterIPs": ["10.43.0.15"], "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080}]}
        }),
    );
    assert_valid::<Service>(
        "",
        "Service",
        json!({
            "metadata": {"name": "db", "namespace": "default"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}}
        }),
    );
    assert_valid::<Service>(
        "",
        "Service",
        json!({
            "metadata": {"name": "ext", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}
        }),
    );
    assert_valid::<Endpoints>(
        "",
        "Endpoints",
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "10.42.0.5", "targetRef": {"kind": "Pod", "name": "web-0"}}], "ports": [{"name": "http", "port": 80}]}]
        }),
    );
    assert_valid::<ConfigMap>(
        "",
        "ConfigMap",
        json!({
            "metadata": {"name": "settings", "namespace": "default"}, "data": {"app.yaml": "a: 1", "LOG_LEVEL": "info"}
        }),
    );
    assert_valid::<Secret>(
        "",
        "Secret",
        json!({
            "metadata": {"name": "sh.helm.release.v1.web.v1", "namespace": "default", "labels": {"owner": "helm", "status": "deployed"}},
            "type": "helm.sh/release.v1", "data": {"release": "SDRzSUFBQUFBQUFDLw=="}
        }),
    );
    assert_valid::<Secret>(
        "",
        "Secret",
        json!({
            "metadata": {"name": "tls", "namespace": "default"}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}
        }),
    );
    assert_valid::<Secret>(
        "",
        "Secret",
        json!({
            "metadata": {"name": "regcred", "namespace": "default"}, "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": "{}"}
        }),
    );
    assert_valid::<ServiceAccount>(
        "",
        "ServiceAccount",
        json!({"metadata": {"name": "default", "namespace": "default"}}),
    );
    assert_valid::<Node>(
        "",
        "Node",
        json!({
            "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1", "node-role.kubernetes.io/control-plane": ""}},
            "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"], "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "2", "memory": "4023456Ki", "pods": "110"}}
        }),
    );
    assert_valid::<Event>(
        "",
        "Event",
        json!({
            "metadata": {"name": "web-0.17c8f3a1b2c3d4e5", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "default"},
            "reason": "Scheduled", "message": "Successfully assigned default/web-0 to node-1", "type": "Normal", "count": 1
        }),
    );
    assert_valid::<PersistentVolume>(
        "",
        "PersistentVolume",
        json!({
            "metadata": {"name": "pv-1"},
            "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data/pv-1"}, "storageClassName": "manual"}
        }),
    );
    assert_valid::<PersistentVolumeClaim>(
        "",
        "PersistentVolumeClaim",
        json!({
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "local-path"}
        }),
    );
    assert_valid::<ResourceQuota>(
        "",
        "ResourceQuota",
        json!({
            "metadata": {"name": "quota", "namespace": "default"},
            "spec": {"hard": {"pods": "10", "requests.cpu": "4", "limits.memory": "8Gi", "count/deployments.apps": "5"}}
        }),
    );
    assert_valid::<LimitRange>(
        "",
        "LimitRange",
        json!({
            "metadata": {"name": "limits", "namespace": "default"},
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "2"}}]}
        }),
    );
}

#[test]
fn valid_other_groups_pass() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::events::v1::Event;
    use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    use k8s_openapi::api::storage::v1::StorageClass;

    assert_valid::<Event>(
        "events.k8s.io",
        "Event",
        json!({
            "metadata": {"name": "web.17c8", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "kubernetes.io/kubelet",
            "reportingInstance": "node-1", "action": "Pulling", "reason": "Pulling", "type": "Normal",
            "regarding": {"kind": "Pod", "name": "web-0", "namespace": "default"}, "note": "Pulling image"
        }),
    );
    assert_valid::<Lease>(
        "coordination.k8s.io",
        "Lease",
        json!({
            "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
            "spec": {"holderIdentity": "node-1_abc", "leaseDurationSeconds": 15, "leaseTransitions": 2}
        }),
    );
    assert_valid::<EndpointSlice>(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({
            "metadata": {"name": "web-abc12", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "nodeName": "node-1"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
        }),
    );
    assert_valid::<Ingress>(
        "networking.k8s.io",
        "Ingress",
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ingressClassName": "traefik", "rules": [{"host": "web.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
            ]}}]}
        }),
    );
    assert_valid::<IngressClass>(
        "networking.k8s.io",
        "IngressClass",
        json!({
            "metadata": {"name": "traefik"}, "spec": {"controller": "traefik.io/ingress-controller"}
        }),
    );
    assert_valid::<NetworkPolicy>(
        "networking.k8s.io",
        "NetworkPolicy",
        json!({
            "metadata": {"name": "deny-all", "namespace": "default"}, "spec": {"podSelector": {}}
        }),
    );
    assert_valid::<StorageClass>(
        "storage.k8s.io",
        "StorageClass",
        json!({
            "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"
        }),
    );
    assert_valid::<PodDisruptionBudget>(
        "policy",
        "PodDisruptionBudget",
        json!({
            "metadata": {"name": "web", "namespace": "default"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}
        }),
    );
    assert_valid::<PriorityClass>(
        "scheduling.k8s.io",
        "PriorityClass",
        json!({
            "metadata": {"name": "high"}, "value": 1000000, "globalDefault": false, "description": "important"
        }),
    );
}

#[test]
fn metadata_errors_come_first_with_upstream_paths() {
    let obj = json!({"metadata": {"name": "Web_1", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}});
    let errs = validate("", "Service", &obj, None);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "metadata.name");
    assert!(
        errs[0]
            .message
            .starts_with("Invalid value: \"Web_1\": a DNS-1035 label must consist of")
    );

    let ns = json!({"metadata": {"name": "a.b"}});
    let errs = validate("", "Namespace", &ns, None);
    assert_eq!(errs[0].field, "metadata.name");
    assert!(errs[0].message.contains("RFC 1123 label"));
}

#[test]
fn name_is_immutable_on_update() {
    let old = json!({"metadata": {"name": "a", "namespace": "default"}, "data": {}});
    let new = json!({"metadata": {"name": "b", "namespace": "default"}, "data": {}});
    let errs = validate("", "ConfigMap", &new, Some(&old));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "metadata.name");
    assert_eq!(errs[0].reason, "FieldValueInvalid");
}

#[test]
fn pod_image_update_allowed_but_port_change_forbidden() {
    let old = defaulted(
        "",
        "Pod",
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": pod_spec()}),
    );
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    assert!(validate("", "Pod", &new, Some(&old)).is_empty());
    new["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(8080);
    let errs = validate("", "Pod", &new, Some(&old));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec");
    assert_eq!(errs[0].reason, "FieldValueForbidden");
    assert!(
        errs[0]
            .message
            .starts_with("Forbidden: pod updates may not change fields other than")
    );
}

#[test]
fn unknown_kinds_have_no_rules() {
    assert!(validate("example.com", "Widget", &json!({}), None).is_empty());
    assert!(!super::has_rules("example.com", "Widget"));
    assert!(super::has_rules("apps", "Deployment"));
}

#[test]
fn garbage_input_never_panics() {
    let kinds = [
        ("", "Pod"),
        ("", "Service"),
        ("", "Namespace"),
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "Node"),
        ("", "Event"),
        ("", "PersistentVolume"),
        ("", "PersistentVolumeClaim"),
        ("", "LimitRange"),
        ("", "ResourceQuota"),
        ("", "Endpoints"),
        ("", "ServiceAccount"),
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ReplicaSet"),
        ("apps", "ControllerRevision"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "ServiceCIDR"),
        ("networking.k8s.io", "IPAddress"),
        ("storage.k8s.io", "StorageClass"),
        ("policy", "PodDisruptionBudget"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("coordination.k8s.io", "Lease"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("events.k8s.io", "Event"),
    ];
    let samples = [
        json!(null),
        json!(1),
        json!("x"),
        json!([]),
        json!({}),
        json!({"metadata": 5, "spec": "x", "status": []}),
        json!({"spec": {"containers": [1, "a", null], "template": {"spec": {"volumes": [{"name": 3}]}}, "ports": {"a": 1}}}),
    ];
    for (group, kind) in kinds {
        for sample in &samples {
            let mut obj = sample.clone();
            apply_defaults(group, kind, &mut obj);
            admission_defaults(group, kind, &mut obj);
            let _ = validate(group, kind, &obj, Some(sample));
        }
    }
}

/// A defaulted, stored pod with one Burstable container `c` (and, when
/// `init` is set, a regular init container `i` and a sidecar `s`).
fn resizable_pod(init: bool) -> Value {
    let resources = json!({"requests": {"cpu": "100m", "memory": "64Mi"},
                           "limits": {"cpu": "200m", "memory": "128Mi"}});
    let mut spec =
        json!({"containers": [{"name": "c", "image": "busybox", "resources": resources}]});
    if init {
        spec["initContainers"] = json!([
            {"name": "i", "image": "busybox", "resources": resources},
            {"name": "s", "image": "busybox", "restartPolicy": "Always", "resources": resources}
        ]);
    }
    let mut pod = defaulted(
        "",
        "Pod",
        json!({"metadata": {"name": "p", "namespace": "default", "uid": "u"}, "spec": spec}),
    );
    pod["status"] = json!({"qosClass": "Burstable"});
    pod
}

fn resize_lines(new: &Value, old: &Value) -> Vec<String> {
    super::field::testing::lines(&super::validate_update("", "Pod", Some("resize"), new, old))
}

#[test]
fn pod_updates_may_not_change_resources() {
    let old = resizable_pod(false);
    let mut new = old.clone();
    // The same amounts in other notations are no change.
    new["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!("0.2");
    new["spec"]["containers"][0]["resources"]["requests"]["memory"] = json!("67108864");
    assert!(validate("", "Pod", &new, Some(&old)).is_empty());
    new["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!("300m");
    let errs = validate("", "Pod", &new, Some(&old));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "spec");
    assert_eq!(
        errs[0].message,
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,\
         `spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` \
         (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` \
         (allow it to be set to 1 if it was previously negative)"
    );
    // Through `resize` the same change is fine.
    assert!(resize_lines(&new, &old).is_empty());
}

#[test]
fn pod_updates_may_not_add_containers() {
    let old = resizable_pod(false);
    let mut added = old.clone();
    let extra = added["spec"]["containers"][0].clone();
    added["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "d", "image": extra["image"]}));
    let lines = super::field::testing::lines(&validate("", "Pod", &added, Some(&old)));
    assert!(
        lines.contains(
            &"spec.containers: Forbidden: pod updates may not add or remove containers".to_string()
        ),
        "{lines:?}"
    );
}

#[test]
fn resize_allows_cpu_and_memory_within_the_qos_class() {
    let old = resizable_pod(true);
    let mut new = old.clone();
    new["spec"]["containers"][0]["resources"] = json!({
        "requests": {"cpu": "300m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}});
    new["spec"]["initContainers"][1]["resources"]["requests"]["cpu"] = json!("150m");
    assert!(
        resize_lines(&new, &old).is_empty(),
        "{:?}",
        resize_lines(&new, &old)
    );

    // Requests above limits are refused as on create.
    let mut over = old.clone();
    over["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("500m");
    assert_eq!(
        resize_lines(&over, &old),
        [
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"500m\": must be less than or equal to cpu limit of 200m"
        ]
    );

    // Burstable to Guaranteed changes the QoS class.
    let mut guaranteed = old.clone();
    guaranteed["spec"]["containers"][0]["resources"] = json!({
        "requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}});
    guaranteed["spec"]["initContainers"] = json!(null);
    let mut old_single = resizable_pod(false);
    old_single["status"]["qosClass"] = json!("Burstable");
    assert_eq!(
        resize_lines(&guaranteed, &old_single),
        [
            "spec: Invalid value: \"Burstable\": Pod QOS Class may not change as a result of resizing"
        ]
    );
}

#[test]
fn resize_refuses_what_only_a_restart_could_do() {
    let old = resizable_pod(true);
    let memory_limit = "spec.containers[0].resources.limits[memory]";

    let mut lower = old.clone();
    lower["spec"]["containers"][0]["resources"]["limits"]["memory"] = json!("100Mi");
    assert_eq!(
        resize_lines(&lower, &old),
        [format!(
            "{memory_limit}: Forbidden: memory limits cannot be decreased unless resizePolicy is RestartContainer"
        )]
    );
    // Allowed once memory changes restart the container.
    let restart = json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}]);
    let mut old_restart = old.clone();
    old_restart["spec"]["containers"][0]["resizePolicy"] = restart.clone();
    lower["spec"]["containers"][0]["resizePolicy"] = restart;
    assert!(resize_lines(&lower, &old_restart).is_empty());

    let mut removed = old.clone();
    removed["spec"]["containers"][0]["resources"]["requests"]
        .as_object_mut()
        .expect("requests")
        .remove("memory");
    assert!(
        resize_lines(&removed, &old)
            .contains(&"spec.containers[0].resources.requests: Forbidden: resource requests cannot be removed".to_string())
    );

    let mut storage = old.clone();
    storage["spec"]["containers"][0]["resources"]["limits"]["ephemeral-storage"] = json!("1Gi");
    assert_eq!(
        resize_lines(&storage, &old),
        ["spec: Forbidden: only cpu and memory resources are mutable"]
    );

    let mut init = old.clone();
    init["spec"]["initContainers"][0]["resources"]["requests"]["cpu"] = json!("150m");
    assert_eq!(
        resize_lines(&init, &old),
        ["spec: Forbidden: resources for non-sidecar init containers are immutable"]
    );

    let mut image = old.clone();
    image["spec"]["containers"][0]["image"] = json!("nginx");
    assert_eq!(
        resize_lines(&image, &old),
        ["spec: Forbidden: only cpu and memory resources are mutable"]
    );
}

#[test]
fn resize_refuses_static_pods_and_nodes_without_support() {
    let old = resizable_pod(false);
    let mut new = old.clone();
    new["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("150m");

    let mut running = old.clone();
    running["status"]["containerStatuses"] = json!([{"name": "c", "state": {"running": {}}, "image": "busybox", "imageID": "",
                "ready": true, "restartCount": 0}]);
    let mut new_running = new.clone();
    new_running["status"] = running["status"].clone();
    assert_eq!(
        resize_lines(&new_running, &running),
        ["spec: Forbidden: Pod running on node without support for resize"]
    );
    running["status"]["containerStatuses"][0]["resources"] =
        old["spec"]["containers"][0]["resources"].clone();
    new_running["status"] = running["status"].clone();
    assert!(resize_lines(&new_running, &running).is_empty());

    let mut mirror = old.clone();
    mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "x"});
    let mut new_mirror = new.clone();
    new_mirror["metadata"]["annotations"] = mirror["metadata"]["annotations"].clone();
    assert_eq!(
        resize_lines(&new_mirror, &mirror),
        [": Forbidden: static pods cannot be resized"]
    );
}
