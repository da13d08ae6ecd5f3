//! DefaultIngressClass: on create, an Ingress that names no class gets the
//! cluster's default IngressClass (annotated
//! `ingressclass.kubernetes.io/is-default-class: "true"`) in
//! `spec.ingressClassName`. An Ingress "names no class" when the field is
//! absent and the legacy `kubernetes.io/ingress.class` annotation is not set.

use serde_json::{Value, json};
use skiff_api::registry::ResourceType;

use super::default_class;
use crate::error::ApiResult;
use crate::object;
use crate::rest::Rest;

/// Marks the default IngressClass.
pub const IS_DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The legacy annotation naming an Ingress's class.
pub const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Runs the plugin on a new object of type `rt`; other types pass through.
pub async fn admit(rest: &Rest, rt: &'static ResourceType, obj: &mut Value) -> ApiResult<()> {
    if (rt.group, rt.kind) != ("networking.k8s.io", "Ingress") || names_class(obj) {
        return Ok(());
    }
    let classes = default_class::list(rest, "networking.k8s.io", "ingressclasses").await?;
    set_default_class(obj, &classes);
    Ok(())
}

fn names_class(ingress: &Value) -> bool {
    default_class::names_class(ingress, INGRESS_CLASS_ANNOTATION, "ingressClassName")
}

fn set_default_class(ingress: &mut Value, classes: &[Value]) -> Option<String> {
    let class = default_class::choose(classes, &[IS_DEFAULT_CLASS_ANNOTATION])?;
    let name = object::name(class).to_string();
    if !ingress["spec"].is_object() {
        ingress["spec"] = json!({});
    }
    ingress["spec"]["ingressClassName"] = json!(name);
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, created: &str, default: bool) -> Value {
        let mut c = json!({"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"controller": "skiff.dev/ingress"}});
        if default {
            c["metadata"]["annotations"] = json!({IS_DEFAULT_CLASS_ANNOTATION: "true"});
        }
        c
    }

    #[test]
    fn an_ingress_without_a_class_gets_the_newest_default() {
        let classes = [
            class("old", "2026-01-01T00:00:00Z", true),
            class("other", "2026-06-01T00:00:00Z", false),
            class("new", "2026-03-01T00:00:00Z", true),
        ];
        let mut ingress = json!({"metadata": {"name": "web"}, "spec": {}});
        assert!(!names_class(&ingress));
        assert_eq!(
            set_default_class(&mut ingress, &classes).as_deref(),
            Some("new")
        );
        assert_eq!(ingress["spec"]["ingressClassName"], "new");
        let mut none = json!({"metadata": {"name": "web"}});
        assert_eq!(set_default_class(&mut none, &classes[1..2]), None);
        assert!(none.get("spec").is_none());
    }

    #[test]
    fn a_named_or_annotated_class_is_kept() {
        assert!(names_class(&json!({"spec": {"ingressClassName": "nginx"}})));
        assert!(names_class(&json!({
            "metadata": {"annotations": {INGRESS_CLASS_ANNOTATION: "nginx"}},
            "spec": {}
        })));
    }
}
