//! Defaults of pod specs, shared by Pods and every pod template.

use serde_json::{Map, Value, json};

use super::{each_mut, obj_mut, set_if_absent, set_if_empty};

/// `SetDefaults_Pod`: the parts that apply to a Pod but not to a template.
pub(crate) fn default_pod(pod: &mut Value) {
    let Some(spec) = obj_mut(pod, "spec") else {
        return;
    };
    for key in ["containers", "initContainers"] {
        each_mut(spec, key, |c| {
            // Requests default to limits, per resource.
            let Some(resources) = c.get_mut("resources").and_then(Value::as_object_mut) else {
                return;
            };
            let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
                return;
            };
            let requests = resources
                .entry("requests")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(requests) = requests.as_object_mut() {
                for (name, value) in limits {
                    requests.entry(name).or_insert(value);
                }
            }
        });
    }
    set_if_absent(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for key in ["containers", "initContainers"] {
            each_mut(spec, key, |c| {
                each_mut(c, "ports", |p| {
                    let container_port = p.get("containerPort").cloned().unwrap_or(Value::Null);
                    if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                        p.insert("hostPort".into(), container_port);
                    }
                });
            });
        }
    }
    default_pod_spec(spec);
}

/// Defaults of a pod template (`spec.template` of workloads).
pub(crate) fn default_pod_template(template: &mut Value) {
    if let Some(spec) = obj_mut(template, "spec") {
        default_pod_spec(spec);
    }
}

/// `SetDefaults_PodSpec` plus the defaults of everything a PodSpec contains.
fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_if_empty(spec, "dnsPolicy", "ClusterFirst");
    set_if_empty(spec, "restartPolicy", "Always");
    set_if_absent(spec, "securityContext", json!({}));
    set_if_absent(spec, "terminationGracePeriodSeconds", json!(30));
    set_if_empty(spec, "schedulerName", "default-scheduler");
    each_mut(spec, "volumes", default_volume);
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        each_mut(spec, key, default_container);
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let policy = if image_tag(image).as_deref() == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_if_empty(c, "imagePullPolicy", policy);
    set_if_empty(c, "terminationMessagePath", "/dev/termination-log");
    set_if_empty(c, "terminationMessagePolicy", "File");
    each_mut(c, "ports", |p| set_if_empty(p, "protocol", "TCP"));
    each_mut(c, "env", |e| {
        if let Some(from) = e.get_mut("valueFrom").and_then(Value::as_object_mut)
            && let Some(field_ref) = from.get_mut("fieldRef").and_then(Value::as_object_mut)
        {
            set_if_empty(field_ref, "apiVersion", "v1");
        }
    });
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = c.get_mut(key).and_then(Value::as_object_mut) {
            default_probe(probe);
        }
    }
    if let Some(lifecycle) = c.get_mut("lifecycle").and_then(Value::as_object_mut) {
        for key in ["postStart", "preStop"] {
            if let Some(handler) = lifecycle.get_mut(key).and_then(Value::as_object_mut) {
                default_handler(handler);
            }
        }
    }
}

fn default_probe(probe: &mut Map<String, Value>) {
    for (key, value) in [
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ] {
        if probe.get(key).and_then(Value::as_i64).unwrap_or(0) == 0 {
            probe.insert(key.into(), json!(value));
        }
    }
    default_handler(probe);
}

fn default_handler(handler: &mut Map<String, Value>) {
    if let Some(http) = handler.get_mut("httpGet").and_then(Value::as_object_mut) {
        set_if_empty(http, "path", "/");
        set_if_empty(http, "scheme", "HTTP");
    }
    if let Some(grpc) = handler.get_mut("grpc").and_then(Value::as_object_mut) {
        set_if_absent(grpc, "service", json!(""));
    }
}

/// Every key a `VolumeSource` may set.
fn has_volume_source(v: &Map<String, Value>) -> bool {
    v.iter().any(|(k, v)| k != "name" && !v.is_null())
}

fn default_volume(v: &mut Map<String, Value>) {
    if !has_volume_source(v) {
        v.insert("emptyDir".into(), json!({}));
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(src) = v.get_mut(key).and_then(Value::as_object_mut) {
            set_if_absent(src, "defaultMode", json!(420));
        }
    }
    if let Some(src) = v.get_mut("downwardAPI").and_then(Value::as_object_mut) {
        default_downward_items(src);
    }
    if let Some(projected) = v.get_mut("projected").and_then(Value::as_object_mut) {
        each_mut(projected, "sources", |s| {
            if let Some(token) = s
                .get_mut("serviceAccountToken")
                .and_then(Value::as_object_mut)
            {
                set_if_absent(token, "expirationSeconds", json!(3600));
            }
            if let Some(d) = s.get_mut("downwardAPI").and_then(Value::as_object_mut) {
                default_downward_items(d);
            }
        });
    }
    if let Some(host_path) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
        set_if_absent(host_path, "type", json!(""));
    }
    if let Some(image) = v.get_mut("image").and_then(Value::as_object_mut) {
        let reference = image.get("reference").and_then(Value::as_str).unwrap_or("");
        let policy = if image_tag(reference).as_deref() == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        set_if_empty(image, "pullPolicy", policy);
    }
    if let Some(ephemeral) = v.get_mut("ephemeral").and_then(Value::as_object_mut)
        && let Some(template) = ephemeral
            .get_mut("volumeClaimTemplate")
            .and_then(Value::as_object_mut)
        && let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut)
    {
        set_if_absent(spec, "volumeMode", json!("Filesystem"));
    }
}

fn default_downward_items(src: &mut Map<String, Value>) {
    each_mut(src, "items", |item| {
        if let Some(field_ref) = item.get_mut("fieldRef").and_then(Value::as_object_mut) {
            set_if_empty(field_ref, "apiVersion", "v1");
        }
    });
}

/// The tag of an image reference as the pull-policy default sees it: the explicit
/// tag, `latest` when there is neither tag nor digest, `None` with only a digest.
fn image_tag(image: &str) -> Option<String> {
    let (name, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => Some(tag.to_string()),
        None if digest => None,
        None => Some("latest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("nginx").as_deref(), Some("latest"));
        assert_eq!(image_tag("nginx:latest").as_deref(), Some("latest"));
        assert_eq!(image_tag("nginx:1.25").as_deref(), Some("1.25"));
        assert_eq!(image_tag("localhost:5000/app").as_deref(), Some("latest"));
        assert_eq!(image_tag("localhost:5000/app:v1").as_deref(), Some("v1"));
        assert_eq!(image_tag("app@sha256:abc"), None);
        assert_eq!(
            image_tag("app:latest@sha256:abc").as_deref(),
            Some("latest")
        );
    }

    #[test]
    fn pod_defaults() {
        let mut pod = json!({"spec": {
            "containers": [{
                "name": "c", "image": "nginx",
                "ports": [{"containerPort": 80}],
                "resources": {"limits": {"cpu": "1"}},
                "livenessProbe": {"httpGet": {"port": 80}},
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
            }, {"name": "d", "image": "busybox:1.36"}],
            "volumes": [{"name": "v"}, {"name": "cm", "configMap": {"name": "x"}}]
        }});
        default_pod(&mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["resources"]["requests"]["cpu"], "1");
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
    }

    #[test]
    fn templates_skip_pod_only_defaults() {
        let mut t = json!({"spec": {"containers": [{"name": "c", "image": "x:1", "resources": {"limits": {"cpu": "1"}}}]}});
        default_pod_template(&mut t);
        assert!(t["spec"].get("enableServiceLinks").is_none());
        assert!(
            t["spec"]["containers"][0]["resources"]
                .get("requests")
                .is_none()
        );
        assert_eq!(t["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn host_network_ports() {
        let mut pod = json!({"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 8080}]}]}});
        default_pod(&mut pod);
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["hostPort"], 8080);
    }

    #[test]
    fn existing_values_are_kept() {
        let mut pod = json!({"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0, "enableServiceLinks": false,
            "containers": [{"name": "c", "image": "x", "imagePullPolicy": "Never", "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 2}}]}});
        default_pod(&mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 0);
        assert_eq!(pod["spec"]["enableServiceLinks"], false);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(
            pod["spec"]["containers"][0]["readinessProbe"]["periodSeconds"],
            2
        );
    }
}
