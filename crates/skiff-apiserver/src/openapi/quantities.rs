//! Where each kind holds resource quantities, found in its schema.
//!
//! Upstream decodes a `resource.Quantity` strictly: a malformed one (`cpu:
//! lots`) fails the decoding of the whole object, so the request gets 400
//! "cannot be handled as a Pod", not a 422 from validation. k8s-openapi keeps
//! quantities as plain strings, so the API server checks them itself, on the
//! paths this module derives once per kind from the schema definitions.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use skiff_api::quantity::{Quantity, QuantityError};

use super::schemas::{Definitions, Gvk, QUANTITY, ref_target};

/// The quantity-holding parts of a schema; empty parts are left out.
#[derive(Debug, Default, PartialEq)]
pub struct QuantityShape {
    /// The value itself is a quantity.
    quantity: bool,
    /// Named properties that hold quantities.
    fields: BTreeMap<String, QuantityShape>,
    /// Every list item.
    items: Option<Box<QuantityShape>>,
    /// Every value of a map (`additionalProperties`).
    values: Option<Box<QuantityShape>>,
}

impl QuantityShape {
    fn is_empty(&self) -> bool {
        !self.quantity && self.fields.is_empty() && self.items.is_none() && self.values.is_none()
    }

    fn merge(&mut self, other: QuantityShape) {
        self.quantity |= other.quantity;
        for (name, shape) in other.fields {
            self.fields.entry(name).or_default().merge(shape);
        }
        merge_boxed(&mut self.items, other.items);
        merge_boxed(&mut self.values, other.values);
    }

    /// The first malformed quantity in `value`, as upstream's decoder reports it.
    pub fn check(&self, value: &Value) -> Result<(), QuantityError> {
        if self.quantity {
            return check_quantity(value);
        }
        match value {
            Value::Object(map) => map.iter().try_for_each(|(name, value)| {
                match self.fields.get(name).or(self.values.as_deref()) {
                    Some(shape) => shape.check(value),
                    None => Ok(()),
                }
            }),
            Value::Array(list) => match &self.items {
                Some(items) => list.iter().try_for_each(|item| items.check(item)),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

fn merge_boxed(into: &mut Option<Box<QuantityShape>>, from: Option<Box<QuantityShape>>) {
    match (into.as_mut(), from) {
        (Some(into), Some(from)) => into.merge(*from),
        (None, from) => *into = from,
        (Some(_), None) => {}
    }
}

/// A quantity as upstream's `UnmarshalJSON` takes it: a string or a bare
/// number, surrounding spaces ignored; null is no quantity.
fn check_quantity(value: &Value) -> Result<(), QuantityError> {
    match value {
        Value::Null => Ok(()),
        Value::String(text) => Quantity::parse(text.trim()).map(drop),
        Value::Number(number) => Quantity::parse(&number.to_string()).map(drop),
        _ => Err(QuantityError::Format),
    }
}

/// The quantity shape of every kind with quantities in it.
pub(super) fn shapes(defs: &Definitions) -> HashMap<Gvk, QuantityShape> {
    defs.kinds()
        .filter_map(|(gvk, name)| {
            let shape = definition_shape(defs, name, &mut Vec::new());
            (!shape.is_empty()).then_some((gvk, shape))
        })
        .collect()
}

fn definition_shape(defs: &Definitions, name: &str, visiting: &mut Vec<String>) -> QuantityShape {
    if name == QUANTITY {
        return QuantityShape {
            quantity: true,
            ..QuantityShape::default()
        };
    }
    // A recursive type (JSONSchemaProps) holds no quantities on its cycle.
    if visiting.iter().any(|seen| seen == name) {
        return QuantityShape::default();
    }
    let Some(schema) = defs.defs.get(name) else {
        return QuantityShape::default();
    };
    visiting.push(name.to_string());
    let shape = schema_shape(defs, schema, visiting);
    visiting.pop();
    shape
}

fn schema_shape(defs: &Definitions, schema: &Value, visiting: &mut Vec<String>) -> QuantityShape {
    let mut shape = match ref_target(schema) {
        Some(name) => definition_shape(defs, name, visiting),
        None => QuantityShape::default(),
    };
    for key in ["allOf", "anyOf", "oneOf"] {
        for part in schema[key].as_array().into_iter().flatten() {
            shape.merge(schema_shape(defs, part, visiting));
        }
    }
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        let field = schema_shape(defs, property, visiting);
        if !field.is_empty() {
            shape.fields.entry(name.clone()).or_default().merge(field);
        }
    }
    for (key, slot) in [
        ("items", &mut shape.items),
        ("additionalProperties", &mut shape.values),
    ] {
        if schema[key].is_object() {
            let inner = schema_shape(defs, &schema[key], visiting);
            if !inner.is_empty() {
                merge_boxed(slot, Some(Box::new(inner)));
            }
        }
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_shape() -> &'static QuantityShape {
        crate::openapi::quantity_shape("", "v1", "Pod").expect("pods hold quantities")
    }

    #[test]
    fn pod_quantities_are_found_in_every_place_upstream_keeps_them() {
        let pod = json!({
            "spec": {
                "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
                "initContainers": [{"name": "b", "resources": {"limits": {"memory": "lots"}}}],
            }
        });
        assert_eq!(pod_shape().check(&pod), Err(QuantityError::Format));
        for bad in [
            json!({"spec": {"overhead": {"cpu": "zz"}}}),
            json!({"spec": {"volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1.2.3Gi"}}]}}),
            json!({"spec": {"containers": [{"resources": {"requests": {"cpu": true}}}]}}),
        ] {
            assert!(pod_shape().check(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn well_formed_quantities_and_other_strings_pass() {
        let pod = json!({
            "metadata": {"name": "lots", "labels": {"cpu": "lots"}},
            "spec": {
                "containers": [{
                    "name": "a",
                    "image": "lots",
                    "resources": {"requests": {"cpu": " 250m ", "memory": 1073741824, "x": null}},
                }],
                "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi"}}],
            }
        });
        assert_eq!(pod_shape().check(&pod), Ok(()));
    }

    #[test]
    fn kinds_without_quantities_have_no_shape() {
        assert!(crate::openapi::quantity_shape("", "v1", "ConfigMap").is_none());
        assert!(crate::openapi::quantity_shape("", "v1", "ResourceQuota").is_some());
        assert!(crate::openapi::quantity_shape("apps", "v1", "Deployment").is_some());
    }
}
