//! Realistic pod objects for the workloads.
//!
//! A benchmark with tiny objects flatters every serializer and store. These pods
//! look like what a Deployment stamps out: two containers (an app and a
//! sidecar) with env, resources, ports, probes and mounts, plus labels and an
//! owner-like set of annotations, about 1.5 KiB of JSON before the server adds
//! its own metadata and defaults.

use bytes::Bytes;
use serde_json::json;

/// The JSON body of a pod named `name` in `namespace`. `seed` varies a few
/// values so that objects are not byte-identical.
pub fn pod(namespace: &str, name: &str, seed: usize) -> Bytes {
    let shard = seed % 16;
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "checkout",
                "app.kubernetes.io/component": "api",
                "app.kubernetes.io/part-of": "shop",
                "pod-template-hash": "7d9f8c6b5d",
                "shard": format!("s{shard}"),
            },
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9090",
            },
        },
        "spec": {
            "serviceAccountName": "checkout",
            "terminationGracePeriodSeconds": 30,
            "restartPolicy": "Always",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/shop/checkout:1.42.7",
                    "args": ["--listen=:8080", "--metrics=:9090", format!("--shard={shard}")],
                    "ports": [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                    ],
                    "env": [
                        {"name": "LOG_LEVEL", "value": "info"},
                        {"name": "DATABASE_URL", "value": "postgres://checkout@db.shop.svc:5432/checkout"},
                        {"name": "CACHE_TTL_SECONDS", "value": "300"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    ],
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "256Mi"},
                        "limits": {"cpu": "1", "memory": "512Mi"},
                    },
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz", "port": 8080},
                        "periodSeconds": 5,
                    },
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/checkout", "readOnly": true}],
                },
                {
                    "name": "proxy",
                    "image": "registry.example.com/mesh/proxy:2.3.1",
                    "args": ["--upstream=127.0.0.1:8080"],
                    "env": [{"name": "PROXY_MODE", "value": "sidecar"}],
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "200m", "memory": "128Mi"},
                    },
                },
            ],
            "volumes": [{"name": "config", "configMap": {"name": "checkout-config"}}],
        },
    });
    Bytes::from(pod.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_realistic_and_distinct() {
        let body = pod("bench", "web-0", 3);
        assert!(
            (1300..=1800).contains(&body.len()),
            "a pod body is {} bytes",
            body.len()
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["metadata"]["name"], "web-0");
        assert_eq!(value["metadata"]["namespace"], "bench");
        assert_eq!(value["spec"]["containers"].as_array().unwrap().len(), 2);
        assert_ne!(pod("bench", "web-0", 4), body);
    }
}
