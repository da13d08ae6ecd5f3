//! Naming a pod template: the `pod-template-hash` that tells a deployment's
//! ReplicaSets apart, and template equality that ignores it.
//!
//! Upstream hashes the Go struct's debug print with FNV-32a and spells the
//! decimal digits of the sum in its "safe" alphabet (no vowels, no
//! look-alikes), so names such as `web-5d4f8b9c6` never spell words. Skiff
//! hashes a canonical JSON form of the template instead (nulls, empty lists
//! and empty maps dropped, as upstream's semantic equality ignores the
//! difference between empty and absent), then encodes it the same way. The
//! hash only names ReplicaSets: which ReplicaSet is the deployment's current
//! one is decided by [`equal_ignore_hash`], so the hash need not match
//! upstream's digits, only be stable.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use super::POD_TEMPLATE_HASH_LABEL;

/// Upstream's alphabet for generated names and hashes.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// The `pod-template-hash` of `template`. A deployment whose hash names a
/// ReplicaSet with another template bumps `status.collisionCount`, which
/// changes the hash.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut sum = fnv32a(FNV_OFFSET, canonical(template).to_string().as_bytes());
    if let Some(count) = collision_count {
        // The bit pattern of the count, as upstream writes it.
        sum = fnv32a(sum, &(count as u32).to_le_bytes());
    }
    safe_encode(&sum.to_string())
}

/// True if the templates are equal apart from their `pod-template-hash`
/// label: how a deployment recognises the ReplicaSet of its template.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
        }
        canonical(&t)
    };
    strip(a) == strip(b)
}

fn fnv32a(mut sum: u32, bytes: &[u8]) -> u32 {
    for byte in bytes {
        sum ^= u32::from(*byte);
        sum = sum.wrapping_mul(FNV_PRIME);
    }
    sum
}

/// Each byte of `s` as a character of the safe alphabet.
fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// The template as JSON without nulls, empty lists and empty maps.
fn canonical(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).expect("pod templates serialize to JSON");
    prune(&mut value);
    value
}

/// Drops empty values recursively; returns true if `value` itself is empty.
fn prune(value: &mut Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => {
            for item in items.iter_mut() {
                prune(item);
            }
            items.is_empty()
        }
        Value::Object(fields) => {
            fields.retain(|_, v| !prune(v));
            fields.is_empty()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
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

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        assert_eq!(fnv32a(FNV_OFFSET, b""), 0x811c_9dc5);
        assert_eq!(fnv32a(FNV_OFFSET, b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(FNV_OFFSET, b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn digits_are_spelled_in_the_safe_alphabet() {
        // '0'..'9' are bytes 48..57, which land on "45678" then "9bcdf".
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn the_hash_is_stable_and_depends_on_the_template_and_collisions() {
        let a = pod_template_hash(&template("nginx:1"), None);
        assert_eq!(a, pod_template_hash(&template("nginx:1"), None));
        assert!(!a.is_empty() && a.len() <= 10);
        assert!(a.bytes().all(|b| b"456789bcdf".contains(&b)));
        assert_ne!(a, pod_template_hash(&template("nginx:2"), None));
        let collided = pod_template_hash(&template("nginx:1"), Some(1));
        assert_ne!(a, collided);
        assert_ne!(collided, pod_template_hash(&template("nginx:1"), Some(2)));
    }

    #[test]
    fn empty_and_absent_fields_hash_alike() {
        let mut with_empty = template("nginx:1");
        let spec = with_empty.spec.as_mut().unwrap();
        spec.volumes = Some(vec![]);
        spec.node_selector = Some(BTreeMap::new());
        assert_eq!(
            pod_template_hash(&with_empty, None),
            pod_template_hash(&template("nginx:1"), None)
        );
        assert!(equal_ignore_hash(&with_empty, &template("nginx:1")));
    }

    #[test]
    fn equality_ignores_only_the_hash_label() {
        let mut labelled = template("nginx:1");
        labelled
            .metadata
            .as_mut()
            .and_then(|m| m.labels.as_mut())
            .unwrap()
            .insert(POD_TEMPLATE_HASH_LABEL.into(), "abc".into());
        assert!(equal_ignore_hash(&labelled, &template("nginx:1")));
        assert!(!equal_ignore_hash(&labelled, &template("nginx:2")));
        let mut annotated = template("nginx:1");
        annotated.metadata.as_mut().unwrap().annotations = Some(BTreeMap::from([(
            "kubectl.kubernetes.io/restartedAt".into(),
            "2025-01-01T00:00:00Z".into(),
        )]));
        assert!(!equal_ignore_hash(&annotated, &template("nginx:1")));
    }
}
