//! The default StorageClass, created when missing and otherwise left as the
//! user has it (changed policy, removed default annotation): this only ever
//! creates, so an existing class is never overwritten. Every agent tries at
//! start; the API server lets exactly one create win.

use std::collections::BTreeMap;

use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;

use super::PROVISIONER;

/// The annotation that makes a class the default for claims naming none.
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// The class k3s installs: this provisioner, volumes made once a pod is
/// scheduled (so they land on its node), deleted with their claim, and the
/// default.
pub fn default_class(name: &str) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(
                ANN_DEFAULT_CLASS.to_string(),
                "true".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        provisioner: PROVISIONER.to_string(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..StorageClass::default()
    }
}

/// Creates [`default_class`] named `name` unless a class of that name
/// exists. Returns whether it was created.
pub async fn ensure_class(client: &kube::Client, name: &str) -> Result<bool, kube::Error> {
    let api: Api<StorageClass> = Api::all(client.clone());
    if api.get_opt(name).await?.is_some() {
        return Ok(false);
    }
    match api
        .create(&PostParams::default(), &default_class(name))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_class_is_k3s_local_path() {
        let class = default_class("local-path");
        assert_eq!(class.metadata.name.as_deref(), Some("local-path"));
        assert_eq!(class.provisioner, "rancher.io/local-path");
        assert_eq!(class.reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(
            class.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer")
        );
        assert_eq!(
            class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANN_DEFAULT_CLASS))
                .map(String::as_str),
            Some("true")
        );
    }
}
