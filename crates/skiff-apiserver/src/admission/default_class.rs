//! The cluster's default class of a kind (StorageClass, IngressClass), as
//! upstream's DefaultStorageClass and DefaultIngressClass plugins pick it:
//! among the classes annotated default, the newest, and the first by name
//! among equally new ones, so that installing a second default does not
//! refuse objects. Classes are read from the store, not the watch cache, so
//! that an object created right after its default class gets it.

use serde_json::Value;
use skiff_store::RangeRequest;

use crate::cache::object_key;
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::rest::{self, Rest};

/// Every class of the cluster-scoped type `plural` in `group`.
pub async fn list(rest: &Rest, group: &str, plural: &str) -> ApiResult<Vec<Value>> {
    let rt = super::resource(group, plural);
    let page = rest
        .store()
        .range(RangeRequest::prefix(&object_key(rt, None, "")))
        .await
        .map_err(|e| ApiError::internal(format!("listing {plural}: {e}")))?;
    page.kvs
        .iter()
        .map(|kv| rest::decode(rt, kv).map(|cached| cached.object.clone()))
        .collect()
}

/// Whether `obj` names its class, by the legacy `annotation` or by
/// `spec.<field>` (possibly `""`, asking for no class): only an object that
/// does neither gets the default.
pub fn names_class(obj: &Value, annotation: &str, field: &str) -> bool {
    let annotated = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(annotation))
        .is_some();
    annotated || obj["spec"].get(field).is_some_and(|c| !c.is_null())
}

/// Whether `class` has one of `annotations` set to `"true"`.
pub fn is_default(class: &Value, annotations: &[&str]) -> bool {
    let set = &class["metadata"]["annotations"];
    annotations.iter().any(|key| set[*key] == "true")
}

/// The default among `classes`, marked by one of `annotations`.
pub fn choose<'a>(classes: &'a [Value], annotations: &[&str]) -> Option<&'a Value> {
    let created = |class: &Value| -> jiff::Timestamp {
        class["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(jiff::Timestamp::MIN)
    };
    classes
        .iter()
        .filter(|class| is_default(class, annotations))
        .min_by(|a, b| {
            created(b)
                .cmp(&created(a))
                .then_with(|| object::name(a).cmp(object::name(b)))
        })
}
