//! The compiled descriptor set and the lookup from `apiVersion`/`kind` to a
//! message type.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, MessageDescriptor};

use crate::ProtoError;
use crate::go_types::Special;

/// Descriptors of every vendored `.proto` file, decoded once on first use.
static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/k8s.fds")).as_slice())
        .expect("build.rs embeds a valid descriptor set")
});

/// Package holding the meta kinds (`DeleteOptions`, `Status`, …), which every
/// group version accepts.
const META_PACKAGE: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// Reports whether [`crate::encode_envelope`] and [`crate::decode_envelope`]
/// know the schema of `apiVersion`/`kind`, so a server can pick protobuf or
/// JSON for a response before converting.
pub fn supports(api_version: &str, kind: &str) -> bool {
    message_for(api_version, kind).is_ok()
}

/// Finds the message type for `apiVersion`/`kind`.
///
/// Built-in groups map to packages by their first label:
/// `apps/v1` → `k8s.io.api.apps.v1`, `rbac.authorization.k8s.io/v1` →
/// `k8s.io.api.rbac.v1`, `v1` → `k8s.io.api.core.v1`. Only dotless groups and
/// `*.k8s.io` groups are built in, so a custom group such as
/// `apps.example.com` never resolves to a built-in type. Meta kinds resolve
/// under any group version.
pub(crate) fn message_for(api_version: &str, kind: &str) -> Result<MessageDescriptor, ProtoError> {
    let unknown = || ProtoError::UnknownKind {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    };
    if !is_identifier(kind) {
        return Err(unknown());
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if !is_identifier(version) {
        return Err(unknown());
    }
    let package = match group {
        "" => Some("core"),
        "meta.k8s.io" => None,
        g if !g.contains('.') => Some(g),
        g => g.strip_suffix(".k8s.io").and_then(|g| g.split('.').next()),
    };
    package
        .filter(|p| is_identifier(p))
        .and_then(|p| POOL.get_message_by_name(&format!("k8s.io.api.{p}.{version}.{kind}")))
        .or_else(|| POOL.get_message_by_name(&format!("{META_PACKAGE}.{kind}")))
        // Types with a non-object JSON form (Time, Verbs, …) are never kinds.
        .filter(|m| Special::of(m.full_name()).is_none())
        .ok_or_else(unknown)
}

/// A non-empty ASCII alphanumeric name, so that user input can never form a
/// dotted path into an unrelated package.
fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_built_in_groups() {
        let cases = [
            ("v1", "Pod", "k8s.io.api.core.v1.Pod"),
            ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment"),
            ("batch/v1", "CronJob", "k8s.io.api.batch.v1.CronJob"),
            (
                "coordination.k8s.io/v1",
                "Lease",
                "k8s.io.api.coordination.v1.Lease",
            ),
            (
                "discovery.k8s.io/v1",
                "EndpointSlice",
                "k8s.io.api.discovery.v1.EndpointSlice",
            ),
            ("events.k8s.io/v1", "Event", "k8s.io.api.events.v1.Event"),
            (
                "networking.k8s.io/v1",
                "Ingress",
                "k8s.io.api.networking.v1.Ingress",
            ),
            (
                "storage.k8s.io/v1",
                "StorageClass",
                "k8s.io.api.storage.v1.StorageClass",
            ),
            (
                "policy/v1",
                "PodDisruptionBudget",
                "k8s.io.api.policy.v1.PodDisruptionBudget",
            ),
            (
                "scheduling.k8s.io/v1",
                "PriorityClass",
                "k8s.io.api.scheduling.v1.PriorityClass",
            ),
            ("autoscaling/v1", "Scale", "k8s.io.api.autoscaling.v1.Scale"),
            (
                "rbac.authorization.k8s.io/v1",
                "Role",
                "k8s.io.api.rbac.v1.Role",
            ),
            (
                "authentication.k8s.io/v1",
                "TokenRequest",
                "k8s.io.api.authentication.v1.TokenRequest",
            ),
        ];
        for (api_version, kind, expected) in cases {
            let message = message_for(api_version, kind).expect(expected);
            assert_eq!(message.full_name(), expected);
        }
    }

    #[test]
    fn meta_kinds_resolve_under_any_group_version() {
        for api_version in ["v1", "apps/v1", "meta.k8s.io/v1"] {
            let message = message_for(api_version, "DeleteOptions").expect(api_version);
            assert_eq!(
                message.full_name(),
                "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions"
            );
        }
    }

    #[test]
    fn rejects_unknown_and_foreign_kinds() {
        for (api_version, kind) in [
            ("apps.example.com/v1", "Deployment"),
            ("v1", "Widget"),
            ("apps/v1", "core.v1.Pod"),
            ("apps/v1", ""),
            ("", "Pod"),
            ("apps/v1.core", "Pod"),
            ("v1", "Time"),
            ("authorization.k8s.io/v1", "ExtraValue"),
        ] {
            assert!(
                matches!(
                    message_for(api_version, kind),
                    Err(ProtoError::UnknownKind { .. })
                ),
                "{api_version} {kind}"
            );
        }
        assert!(supports("v1", "Secret"));
        assert!(!supports("example.com/v1", "Secret"));
    }
}
