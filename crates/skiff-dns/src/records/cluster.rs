//! The inputs of the record model, grouped so that one object's change
//! rebuilds one Service's records.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::service::{self, ServiceRecords};
use super::{Records, Zone};

/// The label naming the Service an EndpointSlice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// A Service's identity: namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
}

impl ServiceKey {
    /// The key of `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn of_service(service: &Service) -> Option<ServiceKey> {
        Some(ServiceKey::new(
            service.metadata.namespace.as_deref()?,
            service.metadata.name.as_deref()?,
        ))
    }

    fn of_slice(slice: &EndpointSlice) -> Option<ServiceKey> {
        let service = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
        Some(ServiceKey::new(
            slice.metadata.namespace.as_deref()?,
            service,
        ))
    }
}

/// A slice's identity: namespace and name.
type SliceKey = (String, String);

fn slice_key(slice: &EndpointSlice) -> Option<SliceKey> {
    Some((
        slice.metadata.namespace.clone()?,
        slice.metadata.name.clone()?,
    ))
}

/// The objects the records are built from. Every `apply_*`/`delete_*`
/// returns the Services whose records changed, to rebuild with
/// [`Cluster::service_records`].
#[derive(Debug)]
pub struct Cluster {
    zone: Arc<Zone>,
    services: HashMap<ServiceKey, Arc<Service>>,
    /// Slices by the Service they name, then by slice name.
    slices: HashMap<ServiceKey, BTreeMap<String, Arc<EndpointSlice>>>,
    /// The Service each known slice was filed under.
    slice_owner: HashMap<SliceKey, ServiceKey>,
    namespaces: HashSet<String>,
}

impl Cluster {
    /// No objects yet.
    pub fn new(zone: Arc<Zone>) -> Cluster {
        Cluster {
            zone,
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_owner: HashMap::new(),
            namespaces: HashSet::new(),
        }
    }

    /// A Service was created or changed.
    pub fn apply_service(&mut self, service: Arc<Service>) -> Option<ServiceKey> {
        let key = ServiceKey::of_service(&service)?;
        self.services.insert(key.clone(), service);
        Some(key)
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, service: &Service) -> Option<ServiceKey> {
        let key = ServiceKey::of_service(service)?;
        self.services.remove(&key);
        Some(key)
    }

    /// An EndpointSlice was created or changed; returns its Service, and the
    /// one it belonged to before if its label changed.
    pub fn apply_slice(&mut self, slice: Arc<EndpointSlice>) -> Vec<ServiceKey> {
        let mut changed = self.forget_slice(&slice);
        if let (Some(key), Some(id)) = (ServiceKey::of_slice(&slice), slice_key(&slice)) {
            self.slice_owner.insert(id.clone(), key.clone());
            self.slices
                .entry(key.clone())
                .or_default()
                .insert(id.1, slice);
            if !changed.contains(&key) {
                changed.push(key);
            }
        }
        changed
    }

    /// An EndpointSlice was deleted.
    pub fn delete_slice(&mut self, slice: &EndpointSlice) -> Vec<ServiceKey> {
        self.forget_slice(slice)
    }

    fn forget_slice(&mut self, slice: &EndpointSlice) -> Vec<ServiceKey> {
        let Some(id) = slice_key(slice) else {
            return Vec::new();
        };
        let Some(owner) = self.slice_owner.remove(&id) else {
            return Vec::new();
        };
        if let Some(slices) = self.slices.get_mut(&owner) {
            slices.remove(&id.1);
            if slices.is_empty() {
                self.slices.remove(&owner);
            }
        }
        vec![owner]
    }

    /// A Namespace was created or changed.
    pub fn apply_namespace(&mut self, namespace: &Namespace) {
        if let Some(name) = &namespace.metadata.name {
            self.namespaces.insert(name.to_ascii_lowercase());
        }
    }

    /// A Namespace was deleted.
    pub fn delete_namespace(&mut self, namespace: &Namespace) {
        if let Some(name) = &namespace.metadata.name {
            self.namespaces.remove(&name.to_ascii_lowercase());
        }
    }

    /// Replace all Services (after a relist).
    pub fn replace_services(&mut self, services: impl IntoIterator<Item = Arc<Service>>) {
        self.services.clear();
        for service in services {
            self.apply_service(service);
        }
    }

    /// Replace all EndpointSlices (after a relist).
    pub fn replace_slices(&mut self, slices: impl IntoIterator<Item = Arc<EndpointSlice>>) {
        self.slices.clear();
        self.slice_owner.clear();
        for slice in slices {
            self.apply_slice(slice);
        }
    }

    /// Replace all Namespaces (after a relist).
    pub fn replace_namespaces<'a>(&mut self, namespaces: impl IntoIterator<Item = &'a Namespace>) {
        self.namespaces.clear();
        for namespace in namespaces {
            self.apply_namespace(namespace);
        }
    }

    /// The namespaces that exist.
    pub fn namespaces(&self) -> &HashSet<String> {
        &self.namespaces
    }

    /// The records of Service `key` as the objects are now; `None` when it
    /// does not exist or has no records.
    pub fn service_records(&self, key: &ServiceKey) -> Option<ServiceRecords> {
        let service = self.services.get(key)?;
        let slices = self
            .slices
            .get(key)
            .into_iter()
            .flat_map(|slices| slices.values().map(|s| s.as_ref()));
        service::build(&self.zone, &key.namespace, &key.name, service, slices)
    }

    /// A whole index built from scratch, with SOA serial `serial`; not
    /// marked synced.
    pub fn records(&self, serial: u32) -> Records {
        let mut records = Records::new(Arc::clone(&self.zone), serial);
        for key in self.services.keys() {
            if let Some(built) = self.service_records(key) {
                records.set_service(key, Some(built));
            }
        }
        records.set_namespaces(self.namespaces.clone());
        records.serial = serial;
        records
    }
}
