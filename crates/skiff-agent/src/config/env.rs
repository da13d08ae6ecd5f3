//! A container's environment, resolved as upstream's kubelet does
//! (`makeEnvironmentVariables`): `envFrom` sources in order, then `env`
//! entries in order (later wins), with `$(VAR)` references expanded against
//! what was defined before and, failing that, the Service variables
//! ([`super::service_env`]); then the Service variables the container does
//! not define itself.
//!
//! `envFrom` keys are taken as they are, prefixed: upstream no longer drops
//! keys that are not C identifiers (relaxed env var names).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_cri::v1::KeyValue;

use super::service_env::{self, MASTER_SERVICE_NAMESPACE};
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

/// The Service variables `pod` sees, read through `objects`.
async fn pod_service_env(
    pod: &Pod,
    objects: &dyn ObjectSource,
) -> Result<Vec<(String, String)>, ObjectError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut services = objects.services(MASTER_SERVICE_NAMESPACE).await?;
    if namespace != MASTER_SERVICE_NAMESPACE && service_env::service_links_enabled(pod) {
        services.extend(objects.services(namespace).await?);
    }
    Ok(service_env::service_env(pod, &services))
}

/// The container's environment.
///
/// `fieldRef`s read the pod object, so pass a pod whose status carries the
/// sandbox's and the node's IPs ([`crate::downward::with_runtime_ips`]);
/// `resourceFieldRef`s fall back to `node` for limits the container does not
/// set. A missing ConfigMap, Secret or key that is not `optional` fails with
/// upstream's message, and so does a Service cache that has never been
/// filled.
pub async fn resolve_env(
    pod: &Pod,
    container: &Container,
    objects: &dyn ObjectSource,
    node: &NodeAllocatable,
) -> Result<Vec<KeyValue>, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let service_env = pod_service_env(pod, objects).await?;
    let service_values: HashMap<&str, &str> = service_env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let mut env = Env::default();
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
                let lookup = |name: &str| {
                    env.values
                        .get(name)
                        .cloned()
                        .or_else(|| service_values.get(name).map(|v| v.to_string()))
                };
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
    // Then the Service variables the container does not define itself.
    for (name, value) in service_env {
        if !env.values.contains_key(&name) {
            env.set(name, value);
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
        SecretEnvSource, SecretKeySelector, Service, ServicePort, ServiceSpec,
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

    fn service(namespace: &str, name: &str, ip: &str, port: i32) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                ..meta(name)
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(vec![ServicePort {
                    port,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    /// `WEB_*` for `ns/web` at 10.43.0.9:80, as [`service_env`] makes them.
    fn web_env() -> Vec<(String, String)> {
        [
            ("WEB_SERVICE_HOST", "10.43.0.9"),
            ("WEB_SERVICE_PORT", "80"),
            ("WEB_PORT", "tcp://10.43.0.9:80"),
            ("WEB_PORT_80_TCP", "tcp://10.43.0.9:80"),
            ("WEB_PORT_80_TCP_PROTO", "tcp"),
            ("WEB_PORT_80_TCP_PORT", "80"),
            ("WEB_PORT_80_TCP_ADDR", "10.43.0.9"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn objects() -> StaticObjects {
        StaticObjects::default()
            .with_service(service("ns", "web", "10.43.0.9", 80))
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

    async fn resolve_with(
        pod: &Pod,
        objects: &StaticObjects,
    ) -> Result<Vec<(String, String)>, EnvError> {
        resolve_with_source(pod, objects).await
    }

    async fn resolve_with_source(
        pod: &Pod,
        objects: &dyn ObjectSource,
    ) -> Result<Vec<(String, String)>, EnvError> {
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        let env = resolve_env(pod, container, objects, &NodeAllocatable::default()).await?;
        Ok(env
            .into_iter()
            .map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned()))
            .collect())
    }

    async fn resolve(container: Container) -> Result<Vec<(String, String)>, EnvError> {
        resolve_with(&pod(container), &objects()).await
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
                var(
                    "GREETING",
                    "hello $(CFG_MODE) $$(CFG_MODE) $(UNDEFINED) $(WEB_SERVICE_HOST)",
                ),
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
        assert_eq!(
            get("GREETING"),
            Some("hello fast $(CFG_MODE) $(UNDEFINED) 10.43.0.9")
        );
        // The Service variables come after the container's own.
        assert_eq!(env[env.len() - 7..], web_env());
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
        let mut expected = vec![
            ("password".to_string(), "s3cret".to_string()),
            ("WEB_SERVICE_HOST".into(), "mine".into()),
            ("REF".into(), "mine/s3cret".into()),
            ("MEM".into(), "64".into()),
            ("EMPTY".into(), String::new()),
        ];
        // The container's own WEB_SERVICE_HOST wins over the Service's.
        expected.extend(web_env().into_iter().skip(1));
        assert_eq!(env, expected);
    }

    #[tokio::test]
    async fn the_master_service_is_there_without_service_links() {
        let objects = objects().with_service(service("default", "kubernetes", "10.43.0.1", 443));
        let mut pod = pod(Container {
            name: "main".into(),
            ..Container::default()
        });
        let master_host = (
            "KUBERNETES_SERVICE_HOST".to_string(),
            "10.43.0.1".to_string(),
        );
        let env = resolve_with(&pod, &objects).await.expect("resolve");
        assert_eq!(env.len(), 14);
        assert_eq!(env[0], master_host);
        assert_eq!(env[7..], web_env());

        pod.spec.as_mut().expect("spec").enable_service_links = Some(false);
        let env = resolve_with(&pod, &objects).await.expect("resolve");
        assert_eq!(env.len(), 7);
        assert_eq!(env[0], master_host);
        assert!(env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")));
    }

    /// Services that cannot be read, as before the cache's first list.
    struct Unsynced;

    #[async_trait::async_trait]
    impl ObjectSource for Unsynced {
        async fn config_map(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<std::sync::Arc<ConfigMap>>, ObjectError> {
            Ok(None)
        }

        async fn secret(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<std::sync::Arc<Secret>>, ObjectError> {
            Ok(None)
        }

        async fn services(
            &self,
            namespace: &str,
        ) -> Result<Vec<std::sync::Arc<Service>>, ObjectError> {
            Err(ObjectError {
                kind: "Service",
                namespace: namespace.into(),
                name: "*".into(),
                message: "not synced".into(),
            })
        }

        async fn persistent_volume_claim(
            &self,
            _: &str,
            _: &str,
        ) -> Result<
            Option<std::sync::Arc<k8s_openapi::api::core::v1::PersistentVolumeClaim>>,
            ObjectError,
        > {
            Ok(None)
        }

        async fn persistent_volume(
            &self,
            _: &str,
        ) -> Result<Option<std::sync::Arc<k8s_openapi::api::core::v1::PersistentVolume>>, ObjectError>
        {
            Ok(None)
        }
    }

    #[tokio::test]
    async fn unreadable_services_fail_the_environment() {
        let pod = pod(Container {
            name: "main".into(),
            ..Container::default()
        });
        let err = resolve_with_source(&pod, &Unsynced).await.unwrap_err();
        assert_eq!(err.to_string(), "reading Service default/*: not synced");
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
