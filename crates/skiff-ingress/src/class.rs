//! Which Ingresses are ours: the IngressClass and its default marker.
//!
//! An Ingress names its class in `spec.ingressClassName`, or in the
//! deprecated `kubernetes.io/ingress.class` annotation, or not at all. We
//! serve it when the named IngressClass has our controller
//! ([`CONTROLLER`]), when the annotation names our class, or, without
//! either, when one of our classes carries the
//! `ingressclass.kubernetes.io/is-default-class: "true"` annotation (the API
//! server's DefaultIngressClass admission would have filled the name in; we
//! also accept Ingresses created before the class was marked default). The
//! field wins over the annotation when both are set, as the API defines the
//! annotation as its deprecated predecessor.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressClassSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// `spec.controller` of the classes this controller serves.
pub const CONTROLLER: &str = "skiff.io/ingress";

/// The annotation that marks the cluster's default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// The deprecated per-Ingress class annotation.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The IngressClass ensured at start: ours, and the cluster default.
pub fn ingress_class(name: &str) -> IngressClass {
    IngressClass {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: Some(
                [(DEFAULT_CLASS_ANNOTATION.to_owned(), "true".to_owned())]
                    .into_iter()
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some(CONTROLLER.to_owned()),
            parameters: None,
        }),
    }
}

/// The classes we serve, as the IngressClass cache shows them.
#[derive(Debug, Clone, Default)]
pub struct Classes {
    ours: BTreeSet<String>,
    default_is_ours: bool,
    /// The configured class name, whose legacy annotation we honour even
    /// before (or without) the IngressClass object.
    configured: String,
}

impl Classes {
    /// Reads the IngressClasses; `configured` is our class's name.
    pub fn new(classes: &[Arc<IngressClass>], configured: &str) -> Self {
        let mut ours = BTreeSet::new();
        let mut default_is_ours = false;
        for class in classes {
            let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
            if controller != Some(CONTROLLER) {
                continue;
            }
            let Some(name) = &class.metadata.name else {
                continue;
            };
            ours.insert(name.clone());
            default_is_ours |= class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
        }
        Self {
            ours,
            default_is_ours,
            configured: configured.to_owned(),
        }
    }

    /// Whether this controller serves `ingress`.
    pub fn owns(&self, ingress: &Ingress) -> bool {
        let field = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref());
        let annotation = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
        match (field, annotation) {
            (Some(name), _) => self.ours.contains(name),
            (None, Some(name)) => *name == self.configured || self.ours.contains(name),
            (None, None) => self.default_is_ours,
        }
    }

    /// The Ingresses of `all` this controller serves.
    pub fn owned(&self, all: &[Arc<Ingress>]) -> Vec<Arc<Ingress>> {
        all.iter().filter(|i| self.owns(i)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn class(name: &str, controller: &str, default: Option<&str>) -> Arc<IngressClass> {
        let mut value = json!({"metadata": {"name": name}, "spec": {"controller": controller}});
        if let Some(default) = default {
            value["metadata"]["annotations"] = json!({DEFAULT_CLASS_ANNOTATION: default});
        }
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn ingress(class_name: Option<&str>, annotation: Option<&str>) -> Ingress {
        let mut value = json!({"metadata": {"name": "i", "namespace": "default"}, "spec": {}});
        if let Some(name) = class_name {
            value["spec"]["ingressClassName"] = json!(name);
        }
        if let Some(name) = annotation {
            value["metadata"]["annotations"] = json!({LEGACY_CLASS_ANNOTATION: name});
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn our_class_is_the_default_with_our_controller() {
        let ours = ingress_class("skiff");
        assert_eq!(ours.metadata.name.as_deref(), Some("skiff"));
        let classes = Classes::new(&[Arc::new(ours)], "skiff");
        assert!(classes.owns(&ingress(Some("skiff"), None)));
        assert!(classes.owns(&ingress(None, None)));
    }

    #[test]
    fn class_name_must_name_a_class_with_our_controller() {
        let classes = Classes::new(
            &[
                class("skiff", CONTROLLER, Some("true")),
                class("internal", CONTROLLER, None),
                class("nginx", "k8s.io/ingress-nginx", None),
            ],
            "skiff",
        );
        assert!(classes.owns(&ingress(Some("skiff"), None)));
        assert!(classes.owns(&ingress(Some("internal"), None)));
        assert!(!classes.owns(&ingress(Some("nginx"), None)));
        assert!(!classes.owns(&ingress(Some("missing"), None)));
    }

    #[test]
    fn no_class_is_ours_only_while_our_class_is_default() {
        for (default, owned) in [(Some("true"), true), (Some("false"), false), (None, false)] {
            let classes = Classes::new(&[class("skiff", CONTROLLER, default)], "skiff");
            assert_eq!(classes.owns(&ingress(None, None)), owned, "{default:?}");
        }
        let other_default = Classes::new(
            &[
                class("skiff", CONTROLLER, None),
                class("nginx", "k8s.io/ingress-nginx", Some("true")),
            ],
            "skiff",
        );
        assert!(!other_default.owns(&ingress(None, None)));
    }

    #[test]
    fn legacy_annotation_names_our_class() {
        let classes = Classes::new(
            &[
                class("internal", CONTROLLER, None),
                class("nginx", "k8s.io/ingress-nginx", Some("true")),
            ],
            "skiff",
        );
        // The configured name counts even without its IngressClass object.
        assert!(classes.owns(&ingress(None, Some("skiff"))));
        assert!(classes.owns(&ingress(None, Some("internal"))));
        assert!(!classes.owns(&ingress(None, Some("nginx"))));
        // The field wins over the annotation.
        assert!(!classes.owns(&ingress(Some("nginx"), Some("skiff"))));
        assert!(classes.owns(&ingress(Some("internal"), Some("nginx"))));
    }

    #[test]
    fn owned_filters() {
        let classes = Classes::new(&[class("skiff", CONTROLLER, Some("true"))], "skiff");
        let all = vec![
            Arc::new(ingress(Some("skiff"), None)),
            Arc::new(ingress(Some("nginx"), None)),
            Arc::new(ingress(None, None)),
        ];
        assert_eq!(classes.owned(&all).len(), 2);
    }
}
