//! A container's environment, resolved as upstream's kubelet does
//! (`makeEnvironmentVariables`): Service variables first, then `envFrom`
//! sources in order, then `env` entries in order (later wins), with `$(VAR)`
//! references expanded against what was defined before.
//!
//! `envFrom` keys are taken as they are, prefixed: upstream no longer drops
//! keys that are not C identifiers (relaxed env var names).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_cri::v1::KeyValue;

use crate::downward::{self, NodeAllocatable};
use crate::objects::{ObjectError, ObjectSource};

/// Why a container's environment cannot be built; the container then waits
/// with reason `CreateContainerConfigError` and this message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// A referenced, non-optional ConfigMap does not exist.
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    /// A referenced, non-optional Secret does not exist.
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    /// A referenced, non-optional key is missing from a ConfigMap.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyMissing {
        /// The key.
        key: String,
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
    /// A referenced, non-optional key is missing from a Secret.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyMissing {
        /// The key.
        key: String,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// A downward API reference failed.
    #[error(transparent)]
    Downward(#[from] downward::DownwardError),
    /// The API could not be read.
    #[error(transparent)]
    Object(#[from] ObjectError),
}

/// Expands `$(NAME)` references from `lookup`; `$$` is a literal `$`, and a
/// reference to an undefined name is left as written (upstream's
/// `expansion.Expand`).
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Ordered environment with "later wins" semantics.
#[derive(Default)]
struct Env {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl Env {
    fn set(&mut self, name: String, value: String) {
        if !self.values.contains_key(&name) {
            self.order.push(name.clone());
        }
        self.values.insert(name, value);
    }

    fn into_key_values(self) -> Vec<KeyValue> {
        let mut values = self.values;
        self.order
            .into_iter()
            .filter_map(|key| {
                values.remove(&key).map(|value| KeyValue {
                    key,
                    value: value.into_bytes(),
                })
            })
            .collect()
    }
}

/// The container's environment.
///
/// `fieldRef`s read the pod object, so pass a pod whose status carries the
/// sandbox's and the node's IPs ([`crate::downward::with_runtime_ips`]);
/// `resourceFieldRef`s fall back to `node` for limits the container does not
/// set. A missing ConfigMap, Secret or key that is not `optional` fails with
/// upstream's message.
pub async fn resolve_env(
    pod: &Pod,
    container: &Container,
    objects: &dyn ObjectSource,
    node: &NodeAllocatable,
    service_env: &[(String, String)],
) -> Result<Vec<KeyValue>, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = Env::default();
    for (name, value) in service_env {
        env.set(name.clone(), value.clone());
    }
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(reference) = &source.config_map_ref {
            let optional = reference.optional.unwrap_or(false);
            match objects.config_map(namespace, &reference.name).await? {
                Some(cm) => {
                    for (key, value) in cm.data.clone().unwrap_or_default() {
                        env.set(format!("{prefix}{key}"), value);
                    }
                }
                None if optional => {}
                None => return Err(EnvError::ConfigMapNotFound(reference.name.clone())),
            }
        }
        if let Some(reference) = &source.secret_ref {
            let optional = reference.optional.unwrap_or(false);
            match objects.secret(namespace, &reference.name).await? {
                Some(secret) => {
                    for (key, value) in secret.data.clone().unwrap_or_default() {
                        let value = String::from_utf8_lossy(&value.0).into_owned();
                        env.set(format!("{prefix}{key}"), value);
                    }
                }
                None if optional => {}
                None => return Err(EnvError::SecretNotFound(reference.name.clone())),
            }
        }
    }
    for var in container.env.iter().flatten() {
        // A non-empty value wins over a source, as upstream reads them.
        let value = match (
            var.value.as_ref().filter(|v| !v.is_empty()),
            &var.value_from,
        ) {
            (Some(value), _) => {
                let lookup = |name: &str| env.values.get(name).cloned();
                Some(expand(value, &lookup))
            }
            (None, Some(from)) => {
                if let Some(selector) = &from.config_map_key_ref {
                    let optional = selector.optional.unwrap_or(false);
                    match objects.config_map(namespace, &selector.name).await? {
                        Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&selector.key)) {
                            Some(value) => Some(value.clone()),
                            None if optional => None,
                            None => {
                                return Err(EnvError::ConfigMapKeyMissing {
                                    key: selector.key.clone(),
                                    namespace: namespace.to_string(),
                                    name: selector.name.clone(),
                                });
                            }
                        },
                        None if optional => None,
                        None => return Err(EnvError::ConfigMapNotFound(selector.name.clone())),
                    }
                } else if let Some(selector) = &from.secret_key_ref {
                    let optional = selector.optional.unwrap_or(false);
                    match objects.secret(namespace, &selector.name).await? {
                        Some(secret) => {
                            match secret.data.as_ref().and_then(|d| d.get(&selector.key)) {
                                Some(value) => Some(String::from_utf8_lossy(&value.0).into_owned()),
                                None if optional => None,
                                None => {
                                    return Err(EnvError::SecretKeyMissing {
                                        key: selector.key.clone(),
                                        namespace: namespace.to_string(),
                                        name: selector.name.clone(),
                                    });
                                }
                            }
                        }
                        None if optional => None,
                        None => return Err(EnvError::SecretNotFound(selector.name.clone())),
                    }
                } else if let Some(field) = &from.field_ref {
                    Some(downward::field_value(pod, &field.field_path)?)
                } else if let Some(resource) = &from.resource_field_ref {
                    let target = resource
                        .container_name
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(&container.name);
                    Some(downward::resource_value(
                        pod,
                        target,
                        &resource.resource,
                        resource.divisor.as_ref(),
                        node,
                    )?)
                } else {
                    // A source this agent does not know (upstream leaves
                    // such a variable empty too).
                    Some(String::new())
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            env.set(var.name.clone(), value);
        }
    }
    Ok(env.into_key_values())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, ResourceFieldSelector, ResourceRequirements, Secret,
        SecretEnvSource, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::objects::StaticObjects;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            ..ObjectMeta::default()
        }
    }

    fn objects() -> StaticObjects {
        StaticObjects::default()
            .with_config_map(ConfigMap {
                metadata: meta("settings"),
                data: Some(BTreeMap::from([
                    ("MODE".into(), "fast".into()),
                    ("1ST".into(), "kept".into()),
                ])),
                ..ConfigMap::default()
            })
            .with_secret(Secret {
                metadata: meta("creds"),
                data: Some(BTreeMap::from([(
                    "password".into(),
                    ByteString(b"s3cret".to_vec()),
                )])),
                ..Secret::default()
            })
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(source),
        }
    }

    fn pod(container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some("u1".into()),
                ..meta("web")
            },
            spec: Some(PodSpec {
                containers: vec![container],
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    async fn resolve(container: Container) -> Result<Vec<(String, String)>, EnvError> {
        let pod = pod(container.clone());
        let env = resolve_env(
            &pod,
            &container,
            &objects(),
            &NodeAllocatable::default(),
            &[("WEB_SERVICE_HOST".into(), "10.43.0.9".into())],
        )
        .await?;
        Ok(env
            .into_iter()
            .map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned()))
            .collect())
    }

    #[tokio::test]
    async fn sources_in_order_with_expansion() {
        let container = Container {
            name: "main".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "settings".into(),
                    optional: None,
                }),
                prefix: Some("CFG_".into()),
                secret_ref: None,
            }]),
            env: Some(vec![
                var("GREETING", "hello $(CFG_MODE) $$(CFG_MODE) $(UNDEFINED)"),
                from(
                    "PASSWORD",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "creds".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
                from(
                    "POD",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
                var("CFG_MODE", "overridden"),
            ]),
            ..Container::default()
        };
        let env = resolve(container).await.expect("resolve");
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(env[0].0, "WEB_SERVICE_HOST");
        assert_eq!(get("GREETING"), Some("hello fast $(CFG_MODE) $(UNDEFINED)"));
        assert_eq!(get("PASSWORD"), Some("s3cret"));
        assert_eq!(get("POD"), Some("web"));
        assert_eq!(get("CFG_MODE"), Some("overridden"));
        assert_eq!(get("CFG_1ST"), Some("kept"));
    }

    #[tokio::test]
    async fn missing_references_fail_unless_optional() {
        let key_ref = |name: &str, key: &str, optional| EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..EnvVarSource::default()
        };
        let with = |source| Container {
            name: "main".into(),
            env: Some(vec![from("X", source)]),
            ..Container::default()
        };
        let err = resolve(with(key_ref("absent", "k", None)))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "configmap \"absent\" not found");
        let err = resolve(with(key_ref("settings", "nokey", None)))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "couldn't find key nokey in ConfigMap ns/settings"
        );
        let env = resolve(with(key_ref("absent", "k", Some(true))))
            .await
            .expect("optional");
        assert!(env.iter().all(|(k, _)| k != "X"));
    }

    #[test]
    fn expansion_rules() {
        let lookup = |name: &str| (name == "A").then(|| "1".to_string());
        assert_eq!(expand("$(A)-$(B)-$$-$x-$(", &lookup), "1-$(B)-$-$x-$(");
    }

    #[tokio::test]
    async fn later_sources_override_earlier_ones() {
        let container = Container {
            name: "main".into(),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
                ..ResourceRequirements::default()
            }),
            env_from: Some(vec![
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "creds".into(),
                        optional: None,
                    }),
                    ..EnvFromSource::default()
                },
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "absent".into(),
                        optional: Some(true),
                    }),
                    ..EnvFromSource::default()
                },
            ]),
            env: Some(vec![
                var("WEB_SERVICE_HOST", "mine"),
                var("REF", "$(WEB_SERVICE_HOST)/$(password)"),
                // An empty value defers to the source.
                EnvVar {
                    name: "MEM".into(),
                    value: Some(String::new()),
                    value_from: Some(EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "limits.memory".into(),
                            divisor: Some(Quantity("1Mi".into())),
                            container_name: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                },
                var("EMPTY", ""),
            ]),
            ..Container::default()
        };
        let env = resolve(container).await.expect("resolve");
        assert_eq!(
            env,
            [
                ("WEB_SERVICE_HOST".to_string(), "mine".to_string()),
                ("password".into(), "s3cret".into()),
                ("REF".into(), "mine/s3cret".into()),
                ("MEM".into(), "64".into()),
                ("EMPTY".into(), String::new()),
            ]
        );
    }

    #[tokio::test]
    async fn missing_secrets_and_bad_field_paths_fail() {
        let with = |source| Container {
            name: "main".into(),
            env: Some(vec![from("X", source)]),
            ..Container::default()
        };
        let secret_ref = |name: &str, key: &str| EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional: None,
            }),
            ..EnvVarSource::default()
        };
        let err = resolve(with(secret_ref("absent", "k"))).await.unwrap_err();
        assert_eq!(err.to_string(), "secret \"absent\" not found");
        let err = resolve(with(secret_ref("creds", "user")))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "couldn't find key user in Secret ns/creds");
        let field = EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "spec.containers".into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        };
        assert!(matches!(
            resolve(with(field)).await,
            Err(EnvError::Downward(_))
        ));
        let env_from = Container {
            name: "main".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "absent".into(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            }]),
            ..Container::default()
        };
        let err = resolve(env_from).await.unwrap_err();
        assert_eq!(err.to_string(), "configmap \"absent\" not found");
    }
}
