//! The Priority admission plugin: a pod naming a PriorityClass gets that
//! class's `priority` and `preemptionPolicy`; a pod naming none gets the
//! class marked `globalDefault`, if there is one. The built-in `system-*`
//! classes are resolved by defaulting (`skiff_api::defaults`) before this.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};

/// What a class gives a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The class name (the global default's, for a pod naming none).
    pub class: String,
    /// `spec.priority`.
    pub priority: i64,
    /// `spec.preemptionPolicy`.
    pub preemption_policy: String,
}

/// Resolves the class of `pod` among `classes`. `Ok(None)` leaves the pod
/// as defaulting made it (a built-in class, or no class and no default).
pub fn resolve(pod: &Value, classes: &[Value]) -> Result<Option<Resolved>, String> {
    let named = pod["spec"]["priorityClassName"].as_str().unwrap_or("");
    if named.starts_with("system-") {
        return Ok(None);
    }
    let class = if named.is_empty() {
        match classes.iter().find(|c| c["globalDefault"] == true) {
            Some(class) => class,
            None => return Ok(None),
        }
    } else {
        classes
            .iter()
            .find(|c| c["metadata"]["name"] == named)
            .ok_or_else(|| format!("no PriorityClass with name {named} was found"))?
    };
    let priority = class["value"].as_i64().unwrap_or(0);
    if !named.is_empty()
        && let Some(given) = pod["spec"]["priority"].as_i64()
        && given != priority
    {
        return Err(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        ));
    }
    Ok(Some(Resolved {
        class: class["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        priority,
        preemption_policy: class["preemptionPolicy"]
            .as_str()
            .unwrap_or("PreemptLowerPriority")
            .to_string(),
    }))
}

/// Applies [`resolve`] to a new pod; an unknown class is 403 Forbidden.
pub fn admit(
    rt: &skiff_api::registry::ResourceType,
    name: &str,
    pod: &mut Value,
    classes: &[Value],
) -> ApiResult<()> {
    match resolve(pod, classes) {
        Ok(None) => Ok(()),
        Ok(Some(resolved)) => {
            if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("priorityClassName".into(), json!(resolved.class));
                spec.insert("priority".into(), json!(resolved.priority));
                spec.insert("preemptionPolicy".into(), json!(resolved.preemption_policy));
            }
            Ok(())
        }
        Err(why) => Err(ApiError::forbidden(rt, name, &why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i64, default: bool) -> Value {
        json!({"metadata": {"name": name}, "value": value, "globalDefault": default})
    }

    #[test]
    fn a_named_class_gives_its_value_and_policy() {
        let classes = [
            class("low", 10, false),
            json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"}),
        ];
        let pod = json!({"spec": {"priorityClassName": "high", "priority": 0}});
        assert!(
            resolve(&pod, &classes).is_err(),
            "a conflicting given priority is refused"
        );
        let pod = json!({"spec": {"priorityClassName": "high"}});
        let resolved = resolve(&pod, &classes).unwrap().unwrap();
        assert_eq!(resolved.priority, 1000);
        assert_eq!(resolved.preemption_policy, "Never");
    }

    #[test]
    fn an_unknown_class_is_refused_and_no_class_takes_the_global_default() {
        let classes = [class("low", 10, false), class("normal", 100, true)];
        let err = resolve(&json!({"spec": {"priorityClassName": "gold"}}), &classes).unwrap_err();
        assert_eq!(err, "no PriorityClass with name gold was found");
        let resolved = resolve(&json!({"spec": {"priority": 0}}), &classes)
            .unwrap()
            .unwrap();
        assert_eq!(
            (resolved.class.as_str(), resolved.priority),
            ("normal", 100)
        );
        assert_eq!(resolve(&json!({"spec": {}}), &classes[..1]).unwrap(), None);
        let system = json!({"spec": {"priorityClassName": "system-node-critical"}});
        assert_eq!(resolve(&system, &classes).unwrap(), None);
    }
}
