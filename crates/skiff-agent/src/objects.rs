//! Where the agent reads the API objects a pod refers to.
//!
//! Env vars and volumes name ConfigMaps and Secrets. The pod manager answers
//! from informer caches fed by watches on the API server; tests answer from a
//! map. Keeping the seam this small lets env resolution and volume setup be
//! tested with no API server.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

/// Why an object could not be read. An absent object is not an error: the
/// lookups return `Ok(None)`, because `optional: true` references are legal.
#[derive(Debug, thiserror::Error)]
#[error("reading {kind} {namespace}/{name}: {message}")]
pub struct ObjectError {
    /// `ConfigMap` or `Secret`.
    pub kind: &'static str,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// What went wrong (the API error, or why the cache is not ready).
    pub message: String,
}

/// Read access to the ConfigMaps and Secrets pods reference.
#[async_trait]
pub trait ObjectSource: Send + Sync {
    /// The ConfigMap `namespace/name`, or `None` if it does not exist.
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<ConfigMap>>, ObjectError>;

    /// The Secret `namespace/name`, or `None` if it does not exist.
    async fn secret(&self, namespace: &str, name: &str)
    -> Result<Option<Arc<Secret>>, ObjectError>;
}

/// An [`ObjectSource`] over fixed maps, for tests.
#[cfg(test)]
#[derive(Default)]
pub struct StaticObjects {
    /// ConfigMaps by `(namespace, name)`.
    pub config_maps: std::collections::HashMap<(String, String), Arc<ConfigMap>>,
    /// Secrets by `(namespace, name)`.
    pub secrets: std::collections::HashMap<(String, String), Arc<Secret>>,
}

#[cfg(test)]
impl StaticObjects {
    /// Adds a ConfigMap; its namespace and name come from its metadata.
    pub fn with_config_map(mut self, cm: ConfigMap) -> Self {
        let key = (
            cm.metadata.namespace.clone().unwrap_or_default(),
            cm.metadata.name.clone().unwrap_or_default(),
        );
        self.config_maps.insert(key, Arc::new(cm));
        self
    }

    /// Adds a Secret; its namespace and name come from its metadata.
    pub fn with_secret(mut self, secret: Secret) -> Self {
        let key = (
            secret.metadata.namespace.clone().unwrap_or_default(),
            secret.metadata.name.clone().unwrap_or_default(),
        );
        self.secrets.insert(key, Arc::new(secret));
        self
    }
}

#[cfg(test)]
#[async_trait]
impl ObjectSource for StaticObjects {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<ConfigMap>>, ObjectError> {
        let key = (namespace.to_string(), name.to_string());
        Ok(self.config_maps.get(&key).cloned())
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Secret>>, ObjectError> {
        let key = (namespace.to_string(), name.to_string());
        Ok(self.secrets.get(&key).cloned())
    }
}
