//! Adopting and releasing objects, as upstream's ControllerRefManager: the
//! controller owner reference is patched in or out under the object's
//! resourceVersion, so a concurrent change (another controller adopting it
//! first) fails with a conflict and the reconcile retries on fresh state.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::pods::controller_reference;

/// `owners` with its controller reference replaced by one naming `owner`,
/// or dropped when `owner` is `None`; other references are kept.
pub fn with_controller<O>(owners: &[OwnerReference], owner: Option<&O>) -> Vec<OwnerReference>
where
    O: Resource<DynamicType = ()>,
{
    owners
        .iter()
        .filter(|o| o.controller != Some(true))
        .cloned()
        .chain(owner.map(controller_reference))
        .collect()
}

/// Sets `obj`'s ownerReferences to `owners` with a merge patch guarded by
/// its resourceVersion.
pub async fn patch_owners<K>(api: &Api<K>, obj: &K, owners: &[OwnerReference]) -> kube::Result<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {
        "ownerReferences": owners,
        "resourceVersion": obj.resource_version(),
    }});
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

/// Makes `owner` the controller of `obj` (adopt), or removes its controller
/// reference (`None`, release). An object deleted meanwhile is fine.
pub async fn set_controller<K, O>(api: &Api<K>, obj: &K, owner: Option<&O>) -> kube::Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    O: Resource<DynamicType = ()>,
{
    let owners = with_controller(obj.owner_references(), owner);
    match patch_owners(api, obj, &owners).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use kube::api::ObjectMeta;

    use super::*;

    fn reference(name: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller,
            block_owner_deletion: None,
        }
    }

    fn replica_set() -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                uid: Some("rs-uid".into()),
                ..ObjectMeta::default()
            },
            ..ReplicaSet::default()
        }
    }

    #[test]
    fn adopting_replaces_the_controller_and_keeps_other_owners() {
        let owners = [reference("plain", None), reference("old", Some(true))];
        let rs = replica_set();
        let adopted = with_controller(&owners, Some(&rs));
        assert_eq!(adopted.len(), 2);
        assert_eq!(adopted[0], owners[0]);
        assert_eq!(
            (
                adopted[1].kind.as_str(),
                adopted[1].name.as_str(),
                adopted[1].uid.as_str(),
                adopted[1].controller,
                adopted[1].block_owner_deletion,
            ),
            ("ReplicaSet", "web-1", "rs-uid", Some(true), Some(true))
        );
    }

    #[test]
    fn releasing_drops_only_the_controller() {
        let owners = [
            reference("old", Some(true)),
            reference("plain", Some(false)),
        ];
        let released = with_controller::<ReplicaSet>(&owners, None);
        assert_eq!(released, [owners[1].clone()]);
    }
}
